"""List the official S3 tokenizers s3tok knows: name, token rate, quantizer, codebook size."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from s3tok.model.config import MODEL_NAMES, official_config


def get_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="s3tok models", description=__doc__)


def main(argv: Optional[Sequence[str]] = None) -> int:
    get_parser().parse_args(argv)
    for name in MODEL_NAMES:
        c = official_config(name)
        sys.stdout.write(f"{name}\t{c.token_rate} Hz\t{c.quantizer.upper()}\t{c.codebook_size} codes\t"
                         f"{c.depth} blocks\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
