"""Convert an official-layout ONNX file (or an official name) to ``OUT_DIR/model.safetensors`` and
``OUT_DIR/config.json``; ``s3tok.load_model(OUT_DIR)`` and ``--model OUT_DIR`` then load it without onnx.
Exit 0 done; 2 bad input (a file that is not an official-layout model, an output that exists and is not an
earlier conversion); 3 the disk failed (full, read-only, I/O error), the path named."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok import exit_codes
from s3tok.api import convert
from s3tok.util.logging_setup import setup_logging
from s3tok.modelfiles.onnx_import import OnnxImportError

logger = logging.getLogger("s3tok.convert")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok convert", description=__doc__)
    p.add_argument("onnx", help="official-layout .onnx file or official model name")
    p.add_argument("out_dir", help="folder to write (replaced atomically if it exists)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        out = convert(args.onnx, args.out_dir)
    except (OnnxImportError, ValueError, OSError, RuntimeError) as e:
        if isinstance(e, OSError) and e.errno in exit_codes.DISK_FAULTS:  # the disk, not the command: exit 3
            return exit_codes.report(logger, e)
        logger.error("%s", e)
        return exit_codes.BAD_INPUT
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
