"""Compute the log-mels of a data dir (or wav.scp) and store them as ``feats[.J].ark/.scp`` (float32,
frames x 128), ``utt2num_frames[.J]`` and ``utt2fail[.J]`` in ``--output_dir``; ``--job J`` of
``--num_jobs N`` does one contiguous shard. A bad utterance is recorded and the job goes on.
Exit 1 when more than ``--max_fail_ratio`` failed, 2 for bad arguments or input, 3 when the disk fails (full,
read-only)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok.data.sources import select_source
from s3tok import exit_codes
from s3tok.bin import add_max_duration, within_duration_limit
from s3tok.util.logging_setup import setup_logging
from s3tok.stages.mel_job import run_mel_job
from s3tok.stages.sharding import job_shard

logger = logging.getLogger("s3tok.compute_mel")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok compute-mel", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_dir", help="Kaldi data dir: wav.scp (+ segments)")
    src.add_argument("--wav_scp")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_jobs", type=int, default=0)
    p.add_argument("--job", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=2, help="decoding threads")
    p.add_argument("--base_dir", default=None, help="resolve relative wav.scp paths against this directory")
    add_max_duration(p)
    p.add_argument("--max_fail_ratio", type=float, default=1.0,
                   help="exit 1 above this share of failures (default 1: leave the decision to the merge)")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    return within_duration_limit(logger, args, lambda: _main(args, argv))


def _main(args, argv: Optional[Sequence[str]]) -> int:
    if bool(args.num_jobs) != bool(args.job):
        logger.error("--num_jobs and --job go together")
        return 2
    try:
        utts = select_source(data_dir=args.data_dir, wav_scp=args.wav_scp)
        if args.num_jobs:
            utts = job_shard(utts, args.num_jobs, args.job)
    except (ValueError, OSError) as e:
        logger.error("%s", e)
        return 2
    try:
        stored, failed = run_mel_job(utts, args.output_dir, args.job or None, args.num_workers, args.base_dir,
                                     progress=not args.no_progress)
    except OSError as e:
        return exit_codes.report(logger, e)
    logger.info("%d / %d log-mels stored, %d failed", stored, len(utts), failed)
    if utts and failed / len(utts) > args.max_fail_ratio:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
