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
from s3tok.modelfiles.hub import REGISTRY, download_model
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.resolve_model")

DEMO = {"version": "speech_tokenizer_v2_25hz", "width": 256, "heads": 4, "depth": 2, "seed": 0}


def demo_model(demo_dir: Path) -> Path:
    """The demo model's path, writing it first if needed (atomic, so concurrent jobs are safe)."""
    path = demo_dir / f"demo_{DEMO['version']}_w{DEMO['width']}_d{DEMO['depth']}.onnx"
    if not path.is_file():
        from s3tok.modelfiles.onnx_export import export_onnx, random_model

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


# What to install for each optional package a recipe stage may need.
INSTALL_HINTS = {"onnxruntime": "pip install 's3tok[recipes]' (or: pip install onnxruntime)",
                 "matplotlib": "pip install 's3tok[recipes]' (or: pip install matplotlib)"}


def check(model: str, require: Sequence[str]) -> None:
    """Raise ValueError naming the problem and the fix when ``model`` cannot be resolved or a package of
    ``require`` does not import."""
    if model != "demo" and model not in REGISTRY:
        p = Path(model)
        if not p.exists():
            raise ValueError(f"--model {model}: no such file; use an .onnx file, a folder from 's3tok convert', "
                             f"'demo' (random weights, offline) or one of {', '.join(REGISTRY)}")
        if p.is_dir() and not (p / "config.json").is_file():
            raise ValueError(f"--model {model}: a folder without config.json (not made by 's3tok convert')")
    import importlib.util

    missing = [m for m in require if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError("the stages asked for need " + ", ".join(missing) + ", not installed: "
                         + "; ".join(INSTALL_HINTS.get(m, f"pip install {m}") for m in missing))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok resolve-model", description=__doc__)
    p.add_argument("--model", required=True, help="official name, path, or 'demo'")
    p.add_argument("--demo_dir", default="exp/models", help="where the demo model is written")
    p.add_argument("--check_only", action="store_true", help="check, print nothing, download nothing")
    p.add_argument("--require", default="", help="comma-separated Python packages that must import")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
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
