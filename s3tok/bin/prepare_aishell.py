"""Make Kaldi data dirs ``<data_dir>/{train,dev,test}`` (wav.scp, text, utt2spk, spk2utt) from a corpus in
AISHELL-1's layout (``data_aishell/wav/<set>/<spk>/*.wav`` + ``data_aishell/transcript/...``)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok.corpora import aishell
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.prepare_aishell")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok prepare-aishell", description=__doc__)
    p.add_argument("--corpus_dir", required=True, help="the folder holding data_aishell/")
    p.add_argument("--data_dir", required=True, help="root of the data dirs to write (e.g. data)")
    p.add_argument("--sets", default=",".join(aishell.SETS), help="comma-separated subsets")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        counts = aishell.prepare(args.corpus_dir, args.data_dir, [s for s in args.sets.split(",") if s])
    except (ValueError, OSError) as e:
        logger.error("%s", e)
        return 2
    logger.info("prepared %s", ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
