"""Check a Kaldi data dir: sorted unique keys, line formats, consistent utterance, recording and speaker
sets, well-formed segments (Kaldi's ``utils/validate_data_dir.sh``). Prints each problem, naming the file and
line, on stdout; exit 0 when valid, 1 when not, 2 for bad arguments."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok.data.validate import validate_data_dir
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.validate_data_dir")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="utils/validate_data_dir.sh", description=__doc__)
    p.add_argument("--no-text", "--no_text", dest="no_text", action="store_true",
                   help="the data dir need not have a text file")
    p.add_argument("--no-feats", "--no_feats", dest="no_feats", action="store_true",
                   help="do not check feats.scp (it is never required)")
    p.add_argument("--no-wav", "--no_wav", dest="no_wav", action="store_true",
                   help="the data dir need not have a wav.scp")
    p.add_argument("--no-spk-sort", "--no_spk_sort", dest="no_spk_sort", action="store_true",
                   help="do not require utt2spk to be sorted by speaker too (speaker-prefixed utterance ids)")
    p.add_argument("data_dir")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    problems = validate_data_dir(args.data_dir, no_text=args.no_text, no_feats=args.no_feats,
                                 no_wav=args.no_wav, no_spk_sort=args.no_spk_sort)
    for problem in problems:
        sys.stdout.write(problem + "\n")
    sys.stdout.flush()
    if problems:
        logger.error("%s is not a valid data dir (%d problems listed above); utils/fix_data_dir.sh may fix it",
                     args.data_dir, len(problems))
        return 1
    logger.info("%s: data dir ok", args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
