"""Merge compute_mel jobs into the data dir: ``feats.scp``, ``utt2num_frames`` and ``mel_fail`` (keys whose
audio could not be decoded, with the reason), after checking each input key appears exactly once."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok.data.sources import keys_of, select_source
from s3tok import exit_codes
from s3tok.util.logging_setup import setup_logging
from s3tok.stages.mel_job import merge_mel_jobs

logger = logging.getLogger("s3tok.merge_mel")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok merge-mel", description=__doc__)
    p.add_argument("--data_dir", required=True, help="the data dir that was processed; merged files go here")
    p.add_argument("--output_dir", required=True, help="the compute_mel jobs' --output_dir")
    p.add_argument("--num_jobs", type=int, required=True)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
