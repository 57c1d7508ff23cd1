"""Download AISHELL-1 (OpenSLR 33) into ``--target_dir`` and unpack it: resumable, MD5-checked, idempotent."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok.corpora import aishell
from s3tok.modelfiles.fetch import DownloadError
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.download_aishell")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok download-aishell", description=__doc__)
    p.add_argument("--target_dir", required=True, help="where data_aishell/ goes")
    p.add_argument("--url", action="append", default=[],
                   help=f"archive URL to try (repeatable; default: the OpenSLR mirrors of {aishell.ARCHIVE})")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        corpus = aishell.download(args.target_dir, args.url, progress=not args.no_progress)
    except (DownloadError, ValueError, OSError) as e:
        logger.error("%s", e)
        return 1
    logger.info("AISHELL-1 is in %s", corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
