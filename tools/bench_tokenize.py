#!/usr/bin/env python3
"""Side-by-side speed of onnxruntime at batch 1 (the official way) and s3tok on the same clips, one run.

The front end is computed once and shared; the table times the tokenizer only (long clips: 30 s windows
for both engines), plus s3tok's end-to-end ``tokenize`` loop (decode + mel + model). Token agreement of
each s3tok row is measured against the onnxruntime row.

  python tools/bench_tokenize.py --model M.onnx --wav_dir ../shared/reference/audio --threads 2
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

import s3tok
from s3tok.data import read_wav_scp, scan_audio_dir
from s3tok.logging_setup import setup_logging
from s3tok.model.windows import merge_segments, plan_segments
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
    return p


def ort_tokens(path: str, mels: List[torch.Tensor], model: s3tok.S3Tokenizer, threads: int) -> List[List[int]]:
    """onnxruntime at batch 1; utterances over 30 s in the same windows s3tok uses, merged the same way."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    cfg = model.config
    out = []
    for i, mel in enumerate(mels):
        segs = plan_segments(i, mel.shape[-1], cfg.num_tokens, cfg.token_rate)
        toks = []
        for s in segs:
            feats = mel[None, :, s.start:s.start + s.length].numpy()
            res = sess.run(["indices"], {"feats": feats, "feats_length": np.array([s.length], np.int32)})[0]
            toks.append(np.asarray(res).reshape(-1).tolist())
        out.append(merge_segments(segs, toks))
    return out


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    entries = read_wav_scp(args.wav_scp) if args.wav_scp else scan_audio_dir(args.wav_dir)
    entries = entries * args.repeat
    t0 = time.perf_counter()
    feats = [featurize(e) for e in entries]
    front = time.perf_counter() - t0
    mels = [f.mel for f in feats]
    seconds = sum(f.seconds for f in feats)
    model = s3tok.load_model(args.model)
    cfg = model.config
    logger.info("%s: %s width %d depth %d; %d clips, %.1f s of audio; %d threads; front end %.2f s",
                args.model, cfg.version, cfg.width, cfg.depth, len(mels), seconds, args.threads, front)
    rows = []
    ref = None
    if not args.skip_ort:
        t0 = time.perf_counter()
        ref = ort_tokens(args.model, mels, model, args.threads)
        rows.append(("onnxruntime fp32 batch 1", time.perf_counter() - t0, "reference"))
    for name in args.dtypes.split(","):
        model.set_dtype(s3tok.api.parse_dtype(name))
        s3tok_tokens(model, mels[:2], args.batch_size)  # warm-up
        t0 = time.perf_counter()
        got = s3tok_tokens(model, mels, args.batch_size)
        rows.append((f"s3tok {name} batch {args.batch_size}", time.perf_counter() - t0,
                     agreement(got, ref) if ref else "-"))
    model.set_dtype(torch.float32)
    t0 = time.perf_counter()
    run_tokenize(model, entries, lambda k, t: None, lambda k, r: None, batch_size=args.batch_size,
                 progress=False)
    rows.append(("s3tok tokenize loop fp32 (decode+mel+model)", time.perf_counter() - t0, "-"))
    base = rows[0][1]
    lines = ["| engine | wall s | audio s/s | speed-up vs first row | tokens differing |", "|---|---|---|---|---|"]
    for name, wall, agree in rows:
        lines.append(f"| {name} | {wall:.2f} | {seconds / wall:.1f} | {base / wall:.2f}x | {agree} |")
    print("\n".join(lines))  # the table is the tool's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
