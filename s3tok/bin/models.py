"""List the official models s3tok knows: the S3 tokenizers (name, token rate, quantizer, codebook size,
blocks) and the CAM++ speaker model (name, embedding size, file)."""
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
    from s3tok.model.campplus import CampPlusConfig
    from s3tok.modelfiles.hub import SPEAKER_MODELS

    for name, entry in SPEAKER_MODELS.items():
        sys.stdout.write(f"{name}\tspeaker\tCAM++\t{CampPlusConfig().embedding_size}-d\t{entry.filename}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
