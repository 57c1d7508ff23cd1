"""Fix a Kaldi data dir (Kaldi's ``utils/fix_data_dir.sh``): keep the utterances present in every
per-utterance file, drop malformed and duplicate lines, sort every file (``LC_ALL=C``) and regenerate
spk2utt. Changed files are copied to DATA_DIR/.backup/ first and rewritten atomically. Exit 0 when done,
1 when nothing could be kept or the dir has no wav.scp, 2 for bad arguments."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok.data.validate import fix_data_dir
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.fix_data_dir")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="utils/fix_data_dir.sh", description=__doc__)
    p.add_argument("--utt-extra-files", "--utt_extra_files", dest="utt_extra_files", default="",
                   help="more per-utterance files to filter, space-separated")
    p.add_argument("--spk-extra-files", "--spk_extra_files", dest="spk_extra_files", default="",
                   help="more per-speaker files to filter, space-separated")
    p.add_argument("data_dir")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        fix_data_dir(args.data_dir, utt_extra_files=args.utt_extra_files.split(),
                     spk_extra_files=args.spk_extra_files.split())
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
