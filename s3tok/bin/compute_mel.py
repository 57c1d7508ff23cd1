"""Compute the log-mels of a data dir (or wav.scp) and store them as ``feats[.J].ark/.scp`` (float32,
frames x 128), ``utt2num_frames[.J]`` and ``utt2fail[.J]`` in ``--output_dir``; ``--job J`` of
``--num_jobs N`` (or a torchrun rank) does one contiguous shard. A bad utterance is recorded and the job goes
on; a rerun skips a finished job (``--overwrite``: redo it). Exit 1 when more than ``--max_fail_ratio``
failed (default 1: the merge decides), 2 for bad arguments or input, 3 when the disk fails (full,
read-only)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok import exit_codes
from s3tok.bin import add_job_arguments, add_max_duration, job_main, job_utterances
from s3tok.stages.mel_job import run_mel_job

logger = logging.getLogger("s3tok.compute_mel")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok compute-mel", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_dir", help="Kaldi data dir: wav.scp (+ segments)")
    src.add_argument("--wav_scp")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_workers", type=int, default=2, help="decoding threads")
    p.add_argument("--base_dir", default=None, help="resolve relative wav.scp paths against this directory")
    add_max_duration(p)
    add_job_arguments(p)
    p.set_defaults(max_fail_ratio=1.0)  # a job's failures are judged by merge-mel, over all jobs
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    return job_main(logger, args, argv, "s3tok compute-mel", lambda: _main(args))


def _main(args) -> int:
    try:
        utts = job_utterances(args)
    except (ValueError, OSError) as e:
        logger.error("%s", e)
        return exit_codes.BAD_INPUT
    try:
        stored, failed = run_mel_job(utts, args.output_dir, args.job or None, args.num_workers, args.base_dir,
                                     progress=not args.no_progress, resume=not args.overwrite)
    except OSError as e:
        return exit_codes.report(logger, e)
    logger.info("%d / %d log-mels stored, %d failed", stored, len(utts), failed)
    if utts and failed / len(utts) > args.max_fail_ratio:
        logger.error("%d / %d failed, above --max_fail_ratio %.3f", failed, len(utts), args.max_fail_ratio)
        return exit_codes.FAILED
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
