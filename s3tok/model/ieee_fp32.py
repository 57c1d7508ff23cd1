"""fp32 that stays fp32 on NVIDIA GPUs: no TF32 in s3tok's matrix products and cuDNN convolutions.

PyTorch runs fp32 cuDNN convolutions in TF32 by default (10-bit mantissa inputs), and many training
scripts switch fp32 matrix products to TF32 too (``torch.set_float32_matmul_precision("high")``). Either
moves the log-mel and the encoder far enough from the official fp32 graph to change tokens. While s3tok
computes a log-mel or runs the model on a CUDA device, :func:`ieee_fp32` sets both to IEEE fp32 and
afterwards puts back what the caller had. Nested and concurrent uses (decoding threads computing
log-mels while the model runs) share one setting: the first to enter saves, the last to leave restores.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, List, Tuple, Union

import torch

_lock = threading.Lock()
_depth = 0
_saved: List[Tuple[object, str, object]] = []


def _switches() -> List[Tuple[object, str, object]]:
    """(object, attribute, IEEE value) of each TF32 switch this torch has: the per-backend precision API
    of torch >= 2.9 where present (mixing it with the older flags is an error there), else the flags."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(cudnn_conv, "fp32_precision"):
        return [(torch.backends.cuda.matmul, "fp32_precision", "ieee"), (cudnn_conv, "fp32_precision", "ieee")]
    return [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def ieee_fp32(device: Union[str, torch.device]) -> Iterator[None]:
    """Within the block, fp32 products and convolutions on CUDA are IEEE fp32; a no-op on other devices."""
    global _depth
    if torch.device(device).type != "cuda":
        yield
        return
    with _lock:
        if _depth == 0:
            for obj, name, value in _switches():
                _saved.append((obj, name, getattr(obj, name)))
                setattr(obj, name, value)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for obj, name, value in _saved:
                    setattr(obj, name, value)
                _saved.clear()
