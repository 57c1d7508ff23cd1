#!/usr/bin/env python3
"""Side-by-side speed of onnxruntime at batch 1 (the official way) and s3tok on the same clips, one run.

Each engine runs in its own process (no shared thread pools) and is timed over ``--runs`` passes (best
reported). The engine rows time the tokenizer only on precomputed log-mels (long clips: 30 s windows for
both engines); the loop row times s3tok's end-to-end ``tokenize`` loop (decode + mel + model). Token
agreement of each s3tok row is measured against the onnxruntime row.

  python tools/bench_tokenize.py --model M.onnx --wav_dir ../shared/reference/audio --threads 2
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch

import s3tok
from s3tok.data import read_wav_scp, scan_audio_dir
from s3tok.logging_setup import setup_logging
from s3tok.parity import onnx_tokens, ort_session
from s3tok.pipeline import featurize, run_tokenize

logger = logging.getLogger("bench_tokenize")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav_scp")
    src.add_argument("--wav_dir")
    p.add_argument("--model", required=True, help="official-layout .onnx file")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for both engines")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--dtypes", default="float32,bfloat16", help="s3tok dtypes to time, comma separated")
    p.add_argument("--repeat", type=int, default=1, help="copies of the clip list (longer, steadier timing)")
    p.add_argument("--skip_ort", action="store_true", help="no onnxruntime row")
    p.add_argument("--skip_loop", action="store_true", help="no end-to-end tokenize-loop row")
    p.add_argument("--runs", type=int, default=3, help="timed passes per engine (the best is reported)")
    p.add_argument("--engine", default=None, help=argparse.SUPPRESS)  # internal: run one engine
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p


def ort_tokens(path: str, mels: List[torch.Tensor], model: s3tok.S3Tokenizer, threads: int) -> List[List[int]]:
    """onnxruntime at batch 1; utterances over 30 s in the same windows s3tok uses, merged the same way."""
    sess = ort_session(path, threads)
    return [onnx_tokens(sess, mel, model.config) for mel in mels]


def s3tok_tokens(model: s3tok.S3Tokenizer, mels: List[torch.Tensor], batch_size: int) -> List[List[int]]:
    """s3tok batched: longest first, ``batch_size`` utterances per call."""
    order = sorted(range(len(mels)), key=lambda i: -mels[i].shape[-1])
    out: Dict[int, List[int]] = {}
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            x, lens = s3tok.padding([mels[i] for i in idx])
            codes, clens = model.quantize(x, lens)
            for j, i in enumerate(idx):
                out[i] = codes[j, :clens[j]].tolist()
    return [out[i] for i in range(len(mels))]


def agreement(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> str:
    total = sum(len(x) for x in b)
    diff = sum(sum(p != q for p, q in zip(x, y)) + abs(len(x) - len(y)) for x, y in zip(a, b))
    return f"{diff}/{total}"


def engines(args: argparse.Namespace) -> List[str]:
    names = [] if args.skip_ort else ["ort"]
    names += [f"s3tok:{d}" for d in args.dtypes.split(",") if d]
    return names + (["loop"] if not args.skip_loop else [])


def run_engine(args: argparse.Namespace) -> Dict[str, object]:
    """One engine in this process: the best of ``--runs`` timed passes, and its tokens."""
    torch.set_num_threads(args.threads)
    entries = read_wav_scp(args.wav_scp) if args.wav_scp else scan_audio_dir(args.wav_dir)
    entries = entries * args.repeat
    feats = [featurize(e) for e in entries]
    mels = [f.mel for f in feats]
    model = s3tok.load_model(args.model)
    if args.engine == "ort":
        fn = lambda: ort_tokens(args.model, mels, model, args.threads)  # noqa: E731
    elif args.engine.startswith("s3tok:"):
        model.set_dtype(s3tok.api.parse_dtype(args.engine.split(":", 1)[1]))
        s3tok_tokens(model, mels[:2], args.batch_size)  # warm-up
        fn = lambda: s3tok_tokens(model, mels, args.batch_size)  # noqa: E731
    else:  # the whole tokenize loop: decode + mel + model + batching
        def fn():
            got = {}
            run_tokenize(model, entries, lambda k, t: got.__setitem__(k, t), lambda k, r: None,
                         batch_size=args.batch_size, progress=False)
            return [got[e.key] for e in entries]
    walls, tokens = [], None
    for _ in range(args.runs):
        t0 = time.perf_counter()
        tokens = fn()
        walls.append(time.perf_counter() - t0)
    return {"wall": min(walls), "walls": walls, "tokens": tokens, "seconds": sum(f.seconds for f in feats),
            "config": model.config.to_dict()}


LABELS = {"ort": "onnxruntime fp32 batch 1", "loop": "s3tok tokenize loop fp32 (decode+mel+model)"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.engine:
        result = run_engine(args)
        with open(args.result, "w") as f:
            json.dump(result, f)
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in engines(args):  # each engine in a fresh process: no shared thread pools
            out = os.path.join(tmp, name.replace(":", "_") + ".json")
            cmd = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:]),
                   "--engine", name, "--result", out]
            subprocess.run(cmd, check=True)
            with open(out) as f:
                results[name] = json.load(f)
    first = next(iter(results.values()))
    cfg, seconds = first["config"], first["seconds"]
    ref = results["ort"]["tokens"] if "ort" in results else None
    logger.info("%s: %s width %d depth %d; %.1f s of audio; %d threads; best of %d runs", args.model,
                cfg["version"], cfg["width"], cfg["depth"], seconds, args.threads, args.runs)
    base = first["wall"]
    lines = ["| engine | wall s (best) | audio s/s | speed-up vs first row | tokens differing |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        label = LABELS.get(name, f"s3tok {name.split(':')[-1]} batch {args.batch_size}")
        agree = "reference" if name == "ort" else (agreement(r["tokens"], ref) if ref else "-")
        lines.append(f"| {label} | {r['wall']:.2f} | {seconds / r['wall']:.1f} | {base / r['wall']:.2f}x | {agree} |")
    sys.stdout.write("\n".join(lines) + "\n")  # the table is the tool's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
