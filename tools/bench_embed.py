#!/usr/bin/env python3
"""Speaker embeddings: CosyVoice's way (onnxruntime at batch 1) against ``s3tok embed``, and what the embedding
stage costs beside the tokenize stage, whole processes on the same clips, interleaved rounds in one run.

  python tools/make_test_set.py /tmp/ref && python tools/make_clip_set.py --minutes 10 --out /tmp/short /tmp/ref/audio
  python tools/bench_embed.py --wav_dir /tmp/short --threads 2 --rounds 2 [--tokenizer v2.onnx] [--json out.json]

Engines (each a fresh process, start-up and model load included, as a user runs it):

- ``cosyvoice``: CosyVoice's ``tools/extract_embedding.py`` as written (one onnxruntime session with one intra-op
  thread, ``--threads`` worker threads sharing it, batch 1), on s3tok's front end, which equals its
  torchaudio one (tests/test_kaldi_fbank.py);
- ``s3tok-torch`` / ``s3tok-onnxruntime``: ``s3tok embed`` with that engine and ``--num_threads``;
- ``tokenize``: ``s3tok tokenize`` fp32 with ``--tokenizer`` (an official-size random v2 made here when not
  given), the stage the embedding stage is compared with.

The CAM++ is official-size with random weights (``s3tok export-onnx --random-init --version campplus``). The
report gives audio seconds per second (best and median over rounds), the speed over ``cosyvoice``, the cost
of each embedding engine as a share of tokenize's wall time, and how far s3tok's embeddings are from
CosyVoice's way (worst cosine, largest absolute difference).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

logger = logging.getLogger("bench_embed")

ENGINES = ("cosyvoice", "s3tok-torch", "s3tok-onnxruntime", "tokenize")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wav_dir", required=True, help="folder of clips (all are used)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every engine")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--campplus", default=None, help="CAM++ ONNX file (default: official-size random, made here)")
    p.add_argument("--tokenizer", default=None, help="tokenizer ONNX (default: official-size random v2, made here)")
    p.add_argument("--work_dir", default=None, help="where models and outputs go (default: a temporary folder)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--cosyvoice_way", nargs=3, metavar=("WAV_SCP", "ONNX", "OUT"), help=argparse.SUPPRESS)
    return p


def cosyvoice_way(wav_scp: str, onnx_path: str, out: str, threads: int) -> None:
    """extract_embedding.py's loop: a thread pool over one batch-1 session; the embeddings saved as it saves them."""
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime
    import torch

    from s3tok.data.audio import read_audio
    from s3tok.data.kaldi_fbank import embedding_features

    option = onnxruntime.SessionOptions()
    option.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    option.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(onnx_path, sess_options=option, providers=["CPUExecutionProvider"])
    utt2wav = dict(line.split(maxsplit=1) for line in Path(wav_scp).read_text().splitlines() if line.strip())

    def one(utt: str):
        feat = embedding_features(*read_audio(utt2wav[utt]))
        return utt, session.run(None, {session.get_inputs()[0].name: feat[None].numpy()})[0].flatten().tolist()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(one, u) for u in utt2wav]
        torch.save(dict(f.result() for f in futures), out)


def _timed(cmd: List[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _command(engine: str, args, scp: Path, work: Path, campplus: str, tokenizer: str) -> List[str]:
    out = work / engine
    if engine == "cosyvoice":
        return [sys.executable, __file__, "--wav_dir", args.wav_dir, "--threads", str(args.threads),
                "--cosyvoice_way", str(scp), campplus, str(work / "cosyvoice.pt")]
    if engine == "tokenize":
        return ["s3tok", "tokenize", "--wav_scp", str(scp), "--model", tokenizer, "--output_dir", str(out),
                "--num_threads", str(args.threads), "--overwrite", "--no_progress"]
    return ["s3tok", "embed", "--wav_scp", str(scp), "--model", campplus, "--engine", engine.split("-", 1)[1],
            "--output_dir", str(out), "--num_threads", str(args.threads), "--overwrite", "--no_progress"]


def _compare(work: Path, engine: str) -> Dict[str, float]:
    import torch

    from s3tok.data.ark import read_float_vectors

    ref = torch.load(work / "cosyvoice.pt")
    got = dict(read_float_vectors(work / engine / "embedding.scp"))
    cos, diff = [], []
    for k, v in ref.items():
        a, b = np.asarray(v, np.float64), got[k].astype(np.float64)
        cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        diff.append(np.abs(a - b).max())
    return {"worst_cosine": float(min(cos)), "max_abs_diff": float(max(diff))}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cosyvoice_way:
        cosyvoice_way(*args.cosyvoice_way, args.threads)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import machine_name, source_version

    import soundfile as sf

    engines = [e for e in args.engines.split(",") if e]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_embed."))
    work.mkdir(parents=True, exist_ok=True)
    clips = sorted(p for p in Path(args.wav_dir).rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    scp = work / "wav.scp"
    scp.write_text("".join(f"{p.stem} {p.resolve()}\n" for p in clips))
    seconds = sum(sf.info(str(p)).duration for p in clips)
    campplus = args.campplus or str(work / "campplus.onnx")
    if not args.campplus and not Path(campplus).is_file():
        subprocess.run(["s3tok", "export-onnx", "--random-init", "--version", "campplus", campplus], check=True)
    tokenizer = args.tokenizer or str(work / "v2.onnx")
    if "tokenize" in engines and not args.tokenizer and not Path(tokenizer).is_file():
        subprocess.run(["s3tok", "export-onnx", "--random-init", "--version", "speech_tokenizer_v2_25hz",
                        tokenizer], check=True)
    walls: Dict[str, List[float]] = {e: [] for e in engines}
    for r in range(args.rounds):
        for e in engines:
            walls[e].append(_timed(_command(e, args, scp, work, campplus, tokenizer)))
            logger.info("round %d: %s %.2f s (%.1f audio s/s)", r + 1, e, walls[e][-1], seconds / walls[e][-1])
    rows = []
    base = min(walls["cosyvoice"]) if "cosyvoice" in walls else None
    tok = min(walls["tokenize"]) if "tokenize" in walls else None
    for e in engines:
        best = min(walls[e])
        row = {"engine": e, "best_s": best, "median_s": statistics.median(walls[e]), "rtf": seconds / best,
               "rtf_median": seconds / statistics.median(walls[e]),
               "speed_vs_cosyvoice": base / best if base else None,
               "share_of_tokenize": best / tok if tok and e != "tokenize" else None}
        if e.startswith("s3tok-") and "cosyvoice" in walls:
            row.update(_compare(work, e))
        rows.append(row)
    info = {"machine": machine_name(), "source": source_version(), "date": time.strftime("%Y-%m-%d"),
            "threads": args.threads, "clips": len(clips), "audio_seconds": seconds, "rounds": args.rounds,
            "command": "python tools/bench_embed.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    lines = [f"Measured {info['date']} with s3tok {info['source']} on {info['machine']}, {args.threads} threads; "
             f"{len(clips)} clips = {seconds:.1f} s; whole processes, best of {args.rounds} interleaved rounds:", "",
             "| engine | audio s/s (best) | audio s/s (median) | speed vs CosyVoice's way | share of tokenize's time "
             "| worst cosine vs CosyVoice's way | max abs diff |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(key: str, fmt: str, scale: float = 1.0, unit: str = "") -> str:
            return "-" if r.get(key) is None else format(scale * r[key], fmt) + unit

        lines.append(f"| {r['engine']} | {r['rtf']:.1f} | {r['rtf_median']:.1f} | {cell('speed_vs_cosyvoice', '.2f')} | "
                     f"{cell('share_of_tokenize', '.0f', 100, ' %')} | {cell('worst_cosine', '.7f')} | "
                     f"{cell('max_abs_diff', '.1e')} |")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
