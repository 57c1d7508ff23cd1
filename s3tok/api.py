"""``load_model`` and ``available_models``: the entry points of the Python API."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Union

import torch

from .model import MODEL_NAMES, S3Tokenizer
from .onnx_import import read_onnx

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def available_models() -> List[str]:
    """Names of the official tokenizers that :func:`load_model` knows."""
    return list(MODEL_NAMES)


def parse_dtype(dtype: Union[None, str, torch.dtype]) -> torch.dtype:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16`` and so on to a torch dtype (None: float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16") from None


def load_model(path_or_name: Union[str, os.PathLike], device: Union[None, str, torch.device] = None,
               dtype: Union[None, str, torch.dtype] = None) -> S3Tokenizer:
    """Load an S3 tokenizer from an official-layout ``.onnx`` file.

    The version is identified from the graph, never from the file name. ``device`` defaults to CPU,
    ``dtype`` to float32 (bfloat16/float16 run the encoder in that type; decisions stay fp32).
    """
    p = Path(path_or_name)
    if not p.exists():
        if str(path_or_name) in MODEL_NAMES:
            raise FileNotFoundError(
                f"official model {path_or_name!r} is not available locally in this version; "
                "pass the path of its .onnx file")
        raise FileNotFoundError(f"{path_or_name}: no such model file, and not one of {', '.join(MODEL_NAMES)}")
    imported = read_onnx(p)
    model = S3Tokenizer(imported.config)
    model.load_state_dict(imported.state_dict, strict=True)
    model.source = str(p)
    model.set_dtype(parse_dtype(dtype))
    model.eval()
    if device is not None:
        model.to(device)
    return model
