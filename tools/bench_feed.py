#!/usr/bin/env python3
"""The decode workers alone: how long N threads take to decode (and resample, and log-mel) a folder of clips,
with each worker's torch ops on one thread (s3tok's :func:`s3tok.util.worker_threads.worker_pool`) against a
plain thread pool, whose workers each start a team of ``--threads`` intra-op threads. Interleaved rounds in
one process; the wall of each pass, and the thread-seconds its workers spent per part.

  python tools/bench_feed.py --wav_dir /tmp/clips --threads 16 --workers 16 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import torch

from bench import run_info  # tools/, beside this file

logger = logging.getLogger("bench_feed")

POOLS = ("plain", "one thread each")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wav_dir", required=True, help="a folder of audio clips")
    p.add_argument("--threads", type=int, default=2, help="the process's intra-op threads (the model's)")
    p.add_argument("--workers", type=int, default=2, help="decode threads")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the two pools")
    p.add_argument("--waveform", action="store_true", help="decode and resample only, no log-mel (as on a GPU)")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def one_pass(pool_kind: str, entries: Sequence, workers: int, waveform: bool) -> Dict[str, float]:
    """Featurize every entry in a fresh pool of ``pool_kind``; the wall and the workers' seconds per part."""
    from s3tok.stages.features import featurize
    from s3tok.util.worker_threads import worker_pool

    start = time.perf_counter()
    pool = worker_pool(workers) if pool_kind == POOLS[1] else ThreadPoolExecutor(workers)
    with pool:
        feats = list(pool.map(lambda e: featurize(e, waveform=waveform), entries))
    out = {"wall_s": time.perf_counter() - start}
    for f in feats:
        for part, seconds in f.times.items():
            out[part] = out.get(part, 0.0) + seconds
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from s3tok.data import scan_audio_dir

    entries = scan_audio_dir(args.wav_dir)
    if not entries:
        logger.error("no audio files in %s", args.wav_dir)
        return 1
    torch.set_num_threads(args.threads)
    one_pass(POOLS[0], entries[:2], 1, args.waveform)  # imports, first-call costs
    passes: Dict[str, List[Dict[str, float]]] = {k: [] for k in POOLS}
    for r in range(args.rounds):
        for kind in POOLS:
            passes[kind].append(one_pass(kind, entries, args.workers, args.waveform))
            logger.info("round %d, %s: %s", r + 1, kind,
                        ", ".join(f"{k} {v:.2f}" for k, v in passes[kind][-1].items()))
    print(f"{len(entries)} clips, {args.workers} workers, {args.threads} intra-op threads; seconds, best of "
          f"{args.rounds} (wall) and the workers' thread-seconds of that pass:")
    parts = sorted({k for ps in passes.values() for p in ps for k in p} - {"wall_s"})
    print("| pool | wall s | " + " | ".join(parts) + " |")
    print("|---|---|" + "---|" * len(parts))
    for kind in POOLS:
        best = min(passes[kind], key=lambda p: p["wall_s"])
        print(f"| {kind} | {best['wall_s']:.2f} | " + " | ".join(f"{best.get(k, 0.0):.2f}" for k in parts) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": run_info("bench_feed.py", argv, threads=args.threads, workers=args.workers),
                       "clips": len(entries), "passes": passes}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
