"""One logging format for every entry point: time, level, place, message."""
from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s (%(module)s:%(lineno)d) %(message)s"


def setup_logging(verbose: int = 0) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``, or ``S3TOK_LOG_LEVEL``); other handlers are kept."""
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("S3TOK_LOG_LEVEL", "INFO").upper(),
                                                  logging.INFO)
    root = logging.getLogger()
    if not any(getattr(h, "_s3tok", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._s3tok = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
