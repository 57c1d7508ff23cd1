#!/usr/bin/env python3
"""Reading from tar shards against reading the same audio from files, end to end through ``s3tok tokenize``.

    python tools/bench_shards.py --clips 3000 --shards 30 [--model M.onnx] [--rounds 3] [--json out.json]

Makes ``--clips`` short clips (2-8 s, cut from the audio of ``tools/make_test_set.py``'s set, or
``--wav_dir``), writes them once as files with a ``wav.scp`` and once as ``--shards`` tar shards, then runs
``s3tok tokenize`` on each, in alternating rounds (files, tars, tars, files, ...), each in its own process:
wall seconds (best and median of the rounds) and peak RSS. A small model by default (the test set's v2),
so that the reading is a large share of the time; the tokens of both inputs must be equal. Memory flat in
the number of shards is checked by a second tar run with 4x the shards (``--shards`` x 4) of the same clips.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_shards")


def make_clips(src_dir: Path, out: Path, n: int, seed: int = 0) -> List[Path]:
    """``n`` 16 kHz 16-bit WAV clips of 2-8 s cut from the audio under ``src_dir``."""
    from s3tok.data.audio import load_audio
    from s3tok.data.wav_scp import scan_audio_dir

    stream = np.concatenate([load_audio(e.location).numpy() for e in scan_audio_dir(src_dir)])
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        length = int(rng.uniform(2.0, 8.0) * 16000)
        start = int(rng.integers(0, max(1, len(stream) - length)))
        p = out / f"clip{i:06d}.wav"
        sf.write(p, np.resize(stream[start:], length), 16000, subtype="PCM_16")
        paths.append(p)
    return paths


def write_shards(paths: Sequence[Path], out: Path, shards: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(paths) // shards)
    tars = []
    for s in range(shards):
        part = paths[s * per:(s + 1) * per]
        if not part:
            break
        t = out / f"shard-{s:05d}.tar"
        with tarfile.open(t, "w") as tf:
            for p in part:
                tf.add(p, arcname=p.name)
        tars.append(t)
    lst = out / "shards.list"
    lst.write_text("".join(f"{t}\n" for t in tars))
    return lst


# Runs s3tok in a child that reports its own peak RSS when it exits.
CHILD = ("import atexit, sys\n"  # VmHWM: ru_maxrss would carry over this benchmark's own peak
         "atexit.register(lambda: sys.stderr.write('MAXRSS_KB %s\\n' % [l for l in open('/proc/self/status') "
         "if l.startswith('VmHWM')][0].split()[1]))\n"
         "from s3tok.cli import main\n"
         "sys.exit(main(sys.argv[1:]))\n")


def run(source: List[str], model: str, out: Path, threads: int) -> Dict[str, float]:
    """One ``s3tok tokenize`` process: wall seconds and its peak RSS in MB."""
    cmd = [sys.executable, "-c", CHILD, "tokenize", *source, "--model", model, "--output_dir", str(out),
           "--overwrite", "--no_progress", "--num_threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"s3tok {' '.join(cmd[3:])} failed:\n{proc.stderr[-2000:]}")
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS_KB ")]
    return {"wall_s": wall, "peak_rss_mb": rss[-1] / 1024 if rss else float("nan")}


def tokens(out: Path) -> Dict[str, str]:
    return dict(line.split(" ", 1) for line in (out / "tokens.txt").read_text().splitlines())


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--shards", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=None, help="default: the test set's small v2 model")
    p.add_argument("--wav_dir", default=None, help="audio to cut clips from (default: the test set's)")
    p.add_argument("--work_dir", default=None, help="default: a temporary folder")
    p.add_argument("--json", default=None)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_shards."))
    model, wav_dir = args.model, args.wav_dir
    if model is None or wav_dir is None:
        ts = work / "test_set"
        if not (ts / "wav.scp").is_file():
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_test_set.py"), str(ts)], check=True,
                           capture_output=True)
        model = model or str(ts / "models" / "speech_tokenizer_v2_25hz.onnx")
        wav_dir = wav_dir or str(ts / "audio")
    paths = make_clips(Path(wav_dir), work / "clips", args.clips)
    scp = work / "wav.scp"
    scp.write_text("".join(f"{p.stem} {p}\n" for p in paths))
    few = write_shards(paths, work / "tars", args.shards)
    many = write_shards(paths, work / "tars_many", args.shards * 4)
    audio_s = sum(sf.info(p).duration for p in paths)
    logger.info("%d clips, %.0f s of audio; %d and %d shards; model %s", len(paths), audio_s, args.shards,
                args.shards * 4, model)
    results: Dict[str, List[Dict[str, float]]] = {"files": [], "tars": []}
    for r in range(args.rounds):
        order = ["files", "tars"] if r % 2 == 0 else ["tars", "files"]
        for name in order:
            src = ["--wav_scp", str(scp)] if name == "files" else ["--tar_list", str(few)]
            results[name].append(run(src, model, work / f"out_{name}", args.threads))
            logger.info("round %d %s: %.2f s", r + 1, name, results[name][-1]["wall_s"])
    many_run = run(["--tar_list", str(many)], model, work / "out_many", args.threads)
    same = tokens(work / "out_files") == tokens(work / "out_tars") == tokens(work / "out_many")
    rows = {}
    for name, runs in results.items():
        walls = [x["wall_s"] for x in runs]
        rows[name] = {"best_s": min(walls), "median_s": statistics.median(walls),
                      "audio_s_per_s": audio_s / min(walls), "peak_rss_mb": max(x["peak_rss_mb"] for x in runs)}
    print(f"{len(paths)} clips ({audio_s:.0f} s), {args.threads} threads, model {Path(model).name}; tokens equal: {same}\n")
    print("| input | best wall s | median wall s | audio s/s | peak RSS MB |\n|---|---|---|---|---|")
    for name, label in (("files", "files (wav.scp)"), ("tars", f"{args.shards} tar shards")):
        x = rows[name]
        print(f"| {label} | {x['best_s']:.2f} | {x['median_s']:.2f} | {x['audio_s_per_s']:.1f} | {x['peak_rss_mb']:.0f} |")
    print(f"| {args.shards * 4} tar shards (one run) | {many_run['wall_s']:.2f} | - | "
          f"{audio_s / many_run['wall_s']:.1f} | {many_run['peak_rss_mb']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"clips": len(paths), "audio_s": audio_s, "tokens_equal": same,
                                               "rows": rows, "many_shards": many_run}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
