"""``load_model`` and ``available_models``: the entry points of the Python API."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import List, Tuple, Union

import torch

from s3tok.modelfiles import hub
from s3tok.model import MODEL_NAMES, S3Config, S3Tokenizer
from s3tok.modelfiles.onnx_import import read_onnx

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
PRECISIONS = ("float32", "bfloat16", "bfloat16-mixed", "float16", "float16-mixed")


def available_models() -> List[str]:
    """Names of the official tokenizers that :func:`load_model` knows."""
    return list(MODEL_NAMES)


def parse_precision(dtype: Union[None, str, torch.dtype]) -> Tuple[torch.dtype, bool]:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16``/``"bfloat16-mixed"`` and so on to ``(torch dtype, mixed)``
    (None: float32). ``-mixed``: only the matrix products and attention in that dtype (see ``set_dtype``)."""
    if dtype is None:
        return torch.float32, False
    if isinstance(dtype, torch.dtype):
        return dtype, False
    name = str(dtype).lower()
    mixed = name.endswith("-mixed")
    try:
        return _DTYPES[name[:-len("-mixed")] if mixed else name], mixed
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(PRECISIONS)}") from None


def load_model(path_or_name: Union[str, os.PathLike], device: Union[None, str, torch.device] = None,
               dtype: Union[None, str, torch.dtype] = None, cache: bool = True,
               progress: bool = True) -> S3Tokenizer:
    """Load an S3 tokenizer by official name, ``.onnx`` path, or converted folder (``s3tok convert``).

    A name is downloaded into ``$S3TOK_HOME`` (default ``~/.cache/s3tok``) and verified by SHA-256. The
    first load of an ONNX file converts it once to safetensors keyed by the file's SHA-256
    (``cache=False`` skips that); later loads read the converted weights. The version is identified
    from the graph, never from the file name. ``device`` defaults to CPU, ``dtype`` to float32
    (bfloat16/float16 run the encoder in that type, ``bfloat16-mixed`` only its matrix products and
    attention; the quantizer decisions stay fp32).
    """
    t0 = time.perf_counter()
    src = Path(path_or_name)
    parsed = False  # read_onnx logs the random-weight warning itself
    if hub.is_converted_dir(src):
        meta, state_dict = _read_converted_or_fail(src)
        origin = f"converted folder {src}"
    else:
        onnx_path, sha = hub.resolve_onnx(path_or_name, progress=progress)
        cached = _read_cache(hub.converted_dir(sha)) if cache else None
        if cached is not None:
            meta, state_dict = cached
            origin = str(onnx_path)
            logger.info("%s: converted weights from the cache %s", onnx_path, hub.converted_dir(sha))
        else:
            imported = read_onnx(onnx_path)
            parsed = True
            state_dict = imported.state_dict
            meta = {"config": imported.config.to_dict(), **_provenance(imported, sha)}
            origin = str(onnx_path)
            if cache:
                try:
                    hub.save_converted(hub.converted_dir(sha), meta["config"], state_dict, _provenance(imported, sha))
                except OSError as e:
                    logger.warning("cannot write the converted-weights cache (%s); continuing without it", e)
    config = S3Config.from_dict(meta["config"])
    model = S3Tokenizer.from_weights(config, state_dict)
    model.source = origin
    model.onnx_sha256 = meta.get("onnx_sha256")
    model.random_init = bool(meta.get("random_init", False))
    if model.random_init and not parsed:
        logger.warning("%s: random-weight model made by s3tok: its tokens are meaningless", path_or_name)
    model.set_dtype(*parse_precision(dtype))
    model.eval()
    if device is not None:
        model.to(device)
    check_precision_runs(model)
    logger.debug("loaded %s in %.2f s", origin, time.perf_counter() - t0)
    return model


class PrecisionUnsupported(ValueError):
    """The chosen dtype does not run on this device (a CPU without the instructions oneDNN needs, say)."""


def cpu_flags() -> set:
    """The CPU's feature flags as the kernel lists them in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_features() -> str:
    """What this CPU offers for the narrow dtypes, as torch and ``/proc/cpuinfo`` report it."""
    flags = cpu_flags()
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16") if f in flags]
    return f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}" + (
        f", flags {' '.join(have)}" if have else "")


def check_precision_runs(model: S3Tokenizer) -> None:
    """Run the model once on two tiny padded items in its precision; raise :class:`PrecisionUnsupported`
    naming the precision, the device and the fix when a kernel is missing (caught here, at load, instead of
    failing every batch later)."""
    n_mels = model.config.n_mels
    mels = torch.zeros((2, n_mels, 24))
    try:
        model.forward_segments(mels, torch.tensor([24, 17]))
    except RuntimeError as e:
        precision = model.precision
        where = cpu_features() if model.device.type == "cpu" else str(model.device)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PrecisionUnsupported(
            f"--dtype {precision} does not run on this {model.device.type} ({where}): {detail}; "
            f"use float32 (the official tokens){'' if precision == 'float32' else ', or another --dtype'}") from e
    if model.device.type == "cpu" and model.precision.startswith("bfloat16") \
            and not cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        logger.warning("--dtype %s: this CPU has no bf16 instructions (%s); it runs, but likely slower than "
                       "float32, which also gives the official tokens", model.precision, cpu_features())


def _provenance(imported, sha: str) -> dict:
    from s3tok.version import __version__

    return {"onnx_sha256": sha, "source": str(imported.path), "version": imported.config.version,
            "random_init": bool(getattr(imported, "random_init", False)), "converted_by": f"s3tok {__version__}"}


def _read_cache(path: Path):
    """The converted-weights cache entry, or None; a damaged one is moved aside (rebuilt by the caller)."""
    try:
        return hub.read_converted(path)
    except hub.BadConverted as e:
        bad = hub.move_aside(path)
        logger.warning("damaged converted-weights cache entry (%s); moved aside to %s and converting the ONNX "
                       "file again", e, bad)
        return None


def _read_converted_or_fail(path: Path):
    got = hub.read_converted(path)  # BadConverted (a ValueError) names the damage
    if got is None:
        raise ValueError(f"{path}: converted folder in an older or unknown format; convert the ONNX file again")
    return got


def convert(onnx_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> Path:
    """Convert an official-layout ONNX file (or official name) to ``out_dir/{model.safetensors,config.json}``."""
    path, sha = hub.resolve_onnx(onnx_path)
    imported = read_onnx(path)
    return hub.save_converted(out_dir, imported.config.to_dict(), imported.state_dict, _provenance(imported, sha))
