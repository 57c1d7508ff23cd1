"""What a ``--model`` names: an official name (downloaded into the cache), an ``.onnx`` file, a folder from
``s3tok convert``, or ``demo`` (a small random-weight v2 model, for trying a recipe offline); and its
configuration without building the model (:func:`model_config`)."""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Sequence

from s3tok.model.config import S3Config, official_config
from s3tok.modelfiles.hub import REGISTRY, onnx_path

logger = logging.getLogger(__name__)

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
    """The local path of ``--model``: ``demo`` (written once into ``demo_dir``), a converted folder, or
    what :func:`s3tok.modelfiles.hub.onnx_path` makes of a file or an official name (downloaded)."""
    if model == "demo":
        return demo_model(demo_dir)
    if Path(model).is_dir():
        return Path(model)
    try:
        return onnx_path(model)
    except FileNotFoundError:
        raise ValueError(f"--model {model}: no such file, and not 'demo' or one of {', '.join(REGISTRY)}") from None


# ------------------------------------------------------------------------------------------ speaker model

DEMO_CAMPPLUS_SEED = 0


def demo_campplus(demo_dir: Path) -> Path:
    """A random-weight CAM++ of the official size (seed 0), written once (atomically) into ``demo_dir``."""
    path = Path(demo_dir) / f"demo_campplus_seed{DEMO_CAMPPLUS_SEED}.onnx"
    if not path.is_file():
        from s3tok.model.campplus import random_campplus
        from s3tok.modelfiles.campplus_onnx import export_campplus

        export_campplus(random_campplus(DEMO_CAMPPLUS_SEED), path, random_init=True)
    logger.warning("--model demo: %s has random weights; its speaker embeddings are meaningless", path)
    return path


def resolve_speaker(model: str, demo_dir: Path) -> Path:
    """The CAM++ file ``model`` names: ``demo``, the official name (downloaded) or an ONNX file."""
    from s3tok.modelfiles.hub import SPEAKER_MODELS, download_speaker_model

    if model == "demo":
        return demo_campplus(demo_dir)
    if model in SPEAKER_MODELS:
        return download_speaker_model(model)
    if Path(model).is_file():
        return Path(model)
    raise ValueError(f"speaker model {model}: no such file, and not 'demo' or one of {', '.join(SPEAKER_MODELS)}")


def check_speaker(model: str) -> None:
    """Raise ValueError when ``model`` cannot name a CAM++ file (``demo``, an official name, a file)."""
    from s3tok.modelfiles.hub import SPEAKER_MODELS

    if model != "demo" and model not in SPEAKER_MODELS and not Path(model).is_file():
        raise ValueError(f"--spk_model {model}: no such file; use a campplus .onnx file, 'demo' (random weights, "
                         f"offline) or one of {', '.join(SPEAKER_MODELS)}")


# What to install for each optional package a recipe stage may need.
INSTALL_HINTS = {"onnxruntime": "pip install 's3tok[recipes]' (or: pip install onnxruntime)",
                 "matplotlib": "pip install 's3tok[recipes]' (or: pip install matplotlib)",
                 "pyarrow": "pip install 's3tok[recipes]' (or: pip install pyarrow)"}


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
    missing = [m for m in require if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError("the stages asked for need " + ", ".join(missing) + ", not installed: "
                         + "; ".join(INSTALL_HINTS.get(m, f"pip install {m}") for m in missing))



def model_config(model: str) -> S3Config:
    """The configuration of ``model``: an official name, an ``.onnx`` file (its graph read) or a converted
    folder (its ``config.json``)."""
    path = Path(model)
    if model in REGISTRY:
        return official_config(model)
    if path.is_file() and path.suffix == ".onnx":
        from s3tok.modelfiles.onnx_import import read_onnx

        return read_onnx(path).config
    if (path / "config.json").is_file():
        return S3Config.from_dict(json.loads((path / "config.json").read_text(encoding="utf-8"))["config"])
    raise ValueError(f"--model {model}: not an official name ({', '.join(REGISTRY)}), an .onnx file or a "
                     "converted folder")
