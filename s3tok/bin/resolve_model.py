"""Turn a recipe's ``--model`` into a local file and print its path: an official name (downloaded into the
cache), a path (printed as is), or ``demo`` (a small random-weight v2 model written once into
``--demo_dir``; its tokens are meaningless, for trying a recipe offline)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..fetch import DownloadError
from ..hub import REGISTRY, download_model
from ..logging_setup import setup_logging

logger = logging.getLogger("s3tok.resolve_model")

DEMO = {"version": "speech_tokenizer_v2_25hz", "width": 256, "heads": 4, "depth": 2, "seed": 0}


def demo_model(demo_dir: Path) -> Path:
    """The demo model's path, writing it first if needed (atomic, so concurrent jobs are safe)."""
    path = demo_dir / f"demo_{DEMO['version']}_w{DEMO['width']}_d{DEMO['depth']}.onnx"
    if not path.is_file():
        from ..onnx_export import export_onnx, random_model

        model = random_model(DEMO["version"], width=DEMO["width"], heads=DEMO["heads"], depth=DEMO["depth"],
                             seed=DEMO["seed"])
        export_onnx(model, path, random_init=True)
    logger.warning("--model demo: %s has random weights; its tokens are meaningless", path)
    return path


def resolve(model: str, demo_dir: Path) -> Path:
    if model == "demo":
        return demo_model(demo_dir)
    if model in REGISTRY:
        return download_model(model)
    if Path(model).exists():
        return Path(model)
    raise ValueError(f"--model {model}: no such file, and not 'demo' or one of {', '.join(REGISTRY)}")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m s3tok.bin.resolve_model", description=__doc__)
    p.add_argument("--model", required=True, help="official name, path, or 'demo'")
    p.add_argument("--demo_dir", default="exp/models", help="where the demo model is written")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        path = resolve(args.model, Path(args.demo_dir))
    except (ValueError, DownloadError, OSError) as e:
        logger.error("%s", e)
        return 1
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
