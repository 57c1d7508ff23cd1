"""Make a Kaldi ``wav.scp`` from a directory of audio files (searched recursively).

Keys are the relative paths without suffix (``/`` between folders, ``_`` for spaces), sorted in
``LC_ALL=C`` order; locations are absolute paths. The file is written to a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok.data import scan_audio_dir, write_wav_scp
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.make_wav_scp")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok make-wav-scp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio_dir", required=True, help="directory of audio files")
    p.add_argument("--output", required=True, help="wav.scp to write")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        n = write_wav_scp(scan_audio_dir(args.audio_dir), args.output)
    except (ValueError, OSError) as e:
        logger.error("%s", e)
        return 2
    logger.info("%s: %d utterances from %s", args.output, n, args.audio_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
