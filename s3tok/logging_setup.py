"""One logging format for every entry point: time, level, place, message."""
from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s (%(module)s:%(lineno)d) %(message)s"


def setup_logging(verbose: int = 0) -> None:
    """INFO by default, DEBUG with ``verbose`` (or ``S3TOK_LOG_LEVEL``)."""
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("S3TOK_LOG_LEVEL", "INFO").upper(),
                                                  logging.INFO)
    logging.basicConfig(level=level, format=FORMAT, force=True)
