"""Download official S3 tokenizers (and the CAM++ speaker model, ``campplus``) into the cache (``$S3TOK_HOME``, default ``~/.cache/s3tok``).

Each file is fetched from ModelScope (then the Hugging Face mirror), resumed if interrupted, verified by
SHA-256 and renamed into place; a file already cached with the right hash is not fetched again.
Prints the local path of each model. Exit 1 if any download failed (network, wrong checksum everywhere);
3 if the cache cannot be written (read-only, permission denied, disk full: the path named); 2 for an unknown
name.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok import exit_codes
from s3tok.modelfiles import hub
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.download")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok download", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", metavar="NAME",
                   help=f"one of: {', '.join([*hub.REGISTRY, *hub.SPEAKER_MODELS])}, or 'all'")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a mirror is given up")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    known = {**{n: hub.download_model for n in hub.REGISTRY},
             **{n: hub.download_speaker_model for n in hub.SPEAKER_MODELS}}
    names = list(known) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in known]
    if unknown:
        logger.error("unknown model(s) %s; known: %s", ", ".join(unknown), ", ".join(known))
        return 2
    failed = fault = 0
    for name in names:
        try:
            path = known[name](name, progress=not args.no_progress, timeout=args.timeout)
        except hub.DownloadError as e:
            logger.error("%s", e)
            failed += 1
            continue
        except OSError as e:  # the cache cannot be written (read-only, permission, full): one line, exit 3
            exit_codes.report(logger, e)
            fault += 1
            continue
        sys.stdout.write(f"{name}\t{path}\n")
    if failed or fault:
        logger.error("%d / %d downloads failed", failed + fault, len(names))
    return exit_codes.FAULT if fault else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
