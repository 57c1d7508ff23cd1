"""Turn a recipe's ``--model`` into a local file and print its path: an official name (downloaded into the
cache), a path (printed as is), or ``demo`` (a small random-weight v2 model written once into
``--demo_dir``; its tokens are meaningless, for trying a recipe offline).

``--check_only`` downloads and writes nothing: it checks that ``--model`` can be resolved and that the
Python packages named by ``--require`` import, so that a recipe fails in its first second, with the fix,
instead of at the stage that needs them."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from s3tok.modelfiles.fetch import DownloadError
from s3tok.modelfiles.resolve import check, check_speaker, resolve, resolve_speaker
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.resolve_model")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok resolve-model", description=__doc__)
    p.add_argument("--model", required=True, help="official name, path, or 'demo'")
    p.add_argument("--demo_dir", default="exp/models", help="where the demo model is written")
    p.add_argument("--check_only", action="store_true", help="check, print nothing, download nothing")
    p.add_argument("--require", default="", help="comma-separated Python packages that must import")
    p.add_argument("--speaker", action="store_true",
                   help="--model names a CAM++ speaker model (campplus, a file, or demo), not a tokenizer")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        if args.check_only and args.speaker:
            check_speaker(args.model)
            if args.model == "demo":
                logger.warning("--spk_model demo: a CAM++ with RANDOM weights; its embeddings are MEANINGLESS")
            return 0
        if args.speaker:
            path = resolve_speaker(args.model, Path(args.demo_dir))
            sys.stdout.write(f"{path}\n")
            return 0
        if args.check_only:
            check(args.model, [m for m in args.require.split(",") if m])
            if args.model == "demo":
                logger.warning("--model demo: a small model with RANDOM weights; its tokens are MEANINGLESS "
                               "(a smoke test of the recipe; use --model speech_tokenizer_v2_25hz for real tokens)")
            return 0
        path = resolve(args.model, Path(args.demo_dir))
    except (ValueError, DownloadError, OSError) as e:
        logger.error("%s", e)
        return 1
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
