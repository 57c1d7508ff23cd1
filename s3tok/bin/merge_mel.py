"""Merge compute_mel jobs into the data dir: ``feats.scp``, ``utt2num_frames`` and ``mel_fail`` (keys whose
audio could not be decoded, with the reason), after checking each input key appears exactly once. Exit 1 when
more than ``--max_fail_ratio`` of the utterances failed (the files are written all the same), 2 when the jobs
cannot be merged, 3 for a fault of the disk."""
from __future__ import annotations

import argparse
import logging
import sys
from types import SimpleNamespace
from typing import Optional, Sequence

from s3tok.data.sources import keys_of, select_source
from s3tok import exit_codes
from s3tok.bin import merged_fail_exit
from s3tok.util.logging_setup import setup_logging
from s3tok.stages.mel_job import merge_mel_jobs

logger = logging.getLogger("s3tok.merge_mel")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok merge-mel", description=__doc__)
    p.add_argument("--data_dir", required=True, help="the data dir that was processed; merged files go here")
    p.add_argument("--output_dir", required=True, help="the compute_mel jobs' --output_dir")
    p.add_argument("--num_jobs", type=int, required=True, help="how many jobs (0: a single unsplit run)")
    p.add_argument("--max_fail_ratio", type=float, default=0.05,
                   help="exit 1 when a larger share of utterances failed (see mel_fail)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        keys = keys_of(select_source(data_dir=args.data_dir))
        stored, failed = merge_mel_jobs(args.output_dir, args.num_jobs, keys, args.data_dir)
    except (ValueError, OSError) as e:  # MergeError is a ValueError
        return exit_codes.report(logger, e)
    logger.info("%s: feats.scp with %d utterances, %d in mel_fail", args.data_dir, stored, failed)
    total = stored + failed
    result = SimpleNamespace(failed=failed, total=total, fail_ratio=failed / total if total else 0.0)
    return merged_fail_exit(logger, result, args.max_fail_ratio, f"{args.data_dir}/mel_fail")


if __name__ == "__main__":
    sys.exit(main())
