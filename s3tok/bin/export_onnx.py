"""Write an S3 tokenizer as ONNX in the official layout of its version (inputs ``feats`` [B,128,T] float32 and
``feats_length`` [B] int32, output ``indices`` [B,T'] int64).

  s3tok export-onnx MODEL out.onnx [--dynamic-batch]          MODEL: official name, .onnx file or converted folder
  s3tok export-onnx --random-init --version V [--width W --heads H --depth N --seed S] out.onnx
  s3tok export-onnx --random-init --version campplus [--seed S] out.onnx   CAM++ speaker model (official size,
                                                                            opset 13, input [1, T, 80])

Without ``--dynamic-batch`` the batch axis is fixed to 1, as the official files are used; with it,
onnxruntime runs batches of any size and lengths (zero padding + real lengths). ``--random-init`` writes
random weights of an official configuration, for demos and tests; such a file is marked, and every tool
that loads it logs that its tokens are meaningless.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from s3tok.util.logging_setup import setup_logging
from s3tok.model.config import MODEL_NAMES

logger = logging.getLogger("s3tok.export_onnx")
CAMPPLUS = "campplus"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok export-onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="s3tok export-onnx MODEL OUT [--dynamic-batch]\n"
                                      "       s3tok export-onnx --random-init --version V [--width W] [--heads H] "
                                      "[--depth N] [--seed S] [--dynamic-batch] OUT")
    p.add_argument("args", nargs="+", metavar="FILE", help="MODEL (omitted with --random-init), then the "
                                                          ".onnx file to write")
    p.add_argument("--dynamic-batch", "--dynamic_batch", dest="dynamic_batch", action="store_true",
                   help="symbolic batch axis (default: batch 1, like the official files)")
    p.add_argument("--random-init", "--random_init", dest="random_init", action="store_true",
                   help="random weights of an official configuration (needs --version)")
    p.add_argument("--version", choices=list(MODEL_NAMES) + [CAMPPLUS],
                   help="model version (with --random-init); campplus: the CAM++ speaker model")
    p.add_argument("--width", type=int, help="model width (default: official, 1280)")
    p.add_argument("--heads", type=int, help="attention heads (default: official, 20)")
    p.add_argument("--depth", type=int, help="blocks (default: official, 6; 12 for v3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    sizes = {k: getattr(args, k) for k in ("width", "heads", "depth")}
    if args.random_init:
        if len(args.args) != 1:
            parser.error("with --random-init give only the output file")
        if not args.version:
            parser.error("--random-init needs --version")
        for k, v in sizes.items():
            if v is not None and v < 1:
                parser.error(f"--{k} must be positive, got {v}")
        source, output = None, args.args[0]
    else:
        if len(args.args) != 2:
            parser.error("give MODEL and the output file (or --random-init --version V OUT)")
        if args.version or any(v is not None for v in sizes.values()):
            parser.error("--version/--width/--heads/--depth only go with --random-init")
        source, output = args.args
    from s3tok.modelfiles.onnx_export import export_onnx, random_model

    start = time.perf_counter()
    if args.version == CAMPPLUS:
        if any(v is not None for v in sizes.values()):
            parser.error("--width/--heads/--depth do not apply to campplus")
        return _export_campplus(args.seed, output, args.dynamic_batch, start)
    try:
        if source is None:
            model = random_model(args.version, seed=args.seed, **sizes)
        else:
            from s3tok.api import load_model

            model = load_model(source)
        export_onnx(model, output, random_init=args.random_init or bool(getattr(model, "random_init", False)),
                    dynamic_batch=args.dynamic_batch)
    except (ValueError, OSError, RuntimeError) as e:
        logger.error("%s", e)
        return 1
    size = Path(output).stat().st_size
    logger.info("%s: %.1f MB in %.1f s", output, size / 1e6, time.perf_counter() - start)
    return 0


def _export_campplus(seed: int, output: str, dynamic_batch: bool, start: float) -> int:
    """A random-weight CAM++ of the official size: opset 13, dynamic T (and batch with --dynamic-batch)."""
    from s3tok.model.campplus import random_campplus
    from s3tok.modelfiles.campplus_onnx import export_campplus

    try:
        export_campplus(random_campplus(seed), output, opset=13, dynamic_axes=True, batch_one=not dynamic_batch,
                        random_init=True)
    except (ValueError, OSError, RuntimeError) as e:
        logger.error("%s", e)
        return 1
    logger.info("%s: %.1f MB in %.1f s", output, Path(output).stat().st_size / 1e6, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
