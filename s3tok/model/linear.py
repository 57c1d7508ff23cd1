"""The encoder's linear layers, and which CPU kernel runs them: chosen by timing, never by CPU name.

Three ways can run a linear layer on a CPU: ``fused``, oneDNN's linear with the GELU or the residual
addition fused into the product (``mkldnn._linear_pointwise``); ``onednn``, the same product with the GELU
or the addition as a separate ATen step; ``aten``, ATen's ``F.linear`` (the BLAS the torch build carries:
MKL's sgemm in the PyPI builds; for dtypes no BLAS covers, ATen's own loops). Which is fastest depends on
the CPU (AMX, AVX-512, AVX2 only), the library versions and the shapes: on an AVX2-only CPU oneDNN's fused
exact GELU costs more than it saves. So each process times them once per dtype and model width, at
the shapes of a transformer block's feed-forward pair, and keeps the fastest (:func:`cpu_kernel`).
``S3TOK_CPU_LINEAR=fused``, ``onednn`` or ``aten`` skips the timing. The oneDNN kernels read each weight
reordered once into oneDNN's blocked layout (:func:`onednn_weight`), not reordered on every call; the
plain weight's pages, mapped from the converted-weights file, are then given back to the page cache
(:mod:`s3tok.util.file_pages`), so the two copies do not both stay resident.

In fp32, ``fused`` and ``onednn`` give the same bits (same product, same GELU, same single addition). In
bf16 a separate GELU or addition would round the product once more, so narrower dtypes choose between
``fused`` and ``aten`` only (timing noise must not flip their bits). ``aten`` sums the products in another
order, so a token that sits on an fp32 near-tie may come out differently (the reference tests pass on all
three).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from s3tok.util.file_pages import release_file_pages

logger = logging.getLogger(__name__)

KERNEL_ENV = "S3TOK_CPU_LINEAR"
KERNELS = ("fused", "onednn", "aten")
ONEDNN_KERNELS = ("fused", "onednn")  # the kernels that need oneDNN's linear; the same bits in fp32
PROBE_ROWS = 128  # frames per timed product: about 5 s of 25 Hz audio, enough to fill the kernels
PROBE_REPS = 2  # timed calls per kernel after one warm-up, interleaved; the best is kept
MARGIN = 0.05  # ATen must be this much faster than oneDNN to be chosen: its other sums change bits, and the
# timing is noisy; between the two oneDNN kernels (the same bits in fp32) the faster wins


def _probe_onednn_linear() -> frozenset:
    """The dtypes for which this torch build and CPU run oneDNN's fused linear (dense in, dense out).

    Each is tried once on a tiny input: oneDNN refuses to build a bf16 primitive on a CPU without AVX-512
    (an AVX2-only EPYC, say), where plain ``F.linear`` still runs bf16 through its reference kernels."""
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise") or not torch.backends.mkldnn.is_available():
        return frozenset()
    works = set()
    for dtype in (torch.float32, torch.bfloat16):
        try:
            with torch.no_grad():
                x, w, b = torch.ones(2, 4, dtype=dtype), torch.ones(3, 4, dtype=dtype), torch.zeros(3, dtype=dtype)
                if torch.equal(torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""), F.linear(x, w, b)):
                    works.add(dtype)
        except (AttributeError, RuntimeError):
            pass
    logger.debug("oneDNN fused linear on this CPU (%s): %s", torch.backends.cpu.get_cpu_capability(),
                 ", ".join(str(d).replace("torch.", "") for d in sorted(works, key=str)) or "none")
    return frozenset(works)


ONEDNN_LINEAR = _probe_onednn_linear()  # dtypes the fused path can take at all

_chosen: Dict[Tuple[torch.dtype, int], str] = {}
_lock = threading.Lock()
_packed = WeakIdKeyDictionary()  # weight -> (its version when reordered, the reordered weight)
_packed_lock = threading.Lock()  # not _lock: the kernel timing, under _lock, reorders its weights


def onednn_weight(weight: Tensor) -> Tensor:
    """``weight`` reordered once into the blocked layout oneDNN's products read (kept beside it while it
    lives, made again when it is changed in place), so that no call reorders it again; the plain weight
    where this torch build cannot reorder. The products give the same bits either way; it costs a second
    copy of the linear layers' weights in memory, unless the plain one is file-backed (a model loaded from
    the cache): its clean pages are then released (:func:`release_file_pages`). A weight made under ``torch.inference_mode`` has no
    version counter: a change in place to it is not seen (replace it instead)."""
    version = None if weight.is_inference() else weight._version
    with _packed_lock:
        got = _packed.get(weight)
    if got is not None and got[0] == version:
        return got[1]
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
    except (AttributeError, RuntimeError):
        packed = weight
    else:  # inference reads the reordered copy: the plain one's file pages need not stay resident
        release_file_pages(weight.detach())
    with _packed_lock:
        _packed[weight] = (version, packed)
    return packed


def forget_reordered(weights: Iterable[Tensor]) -> None:
    """Drop the reordered copies of ``weights`` (:func:`onednn_weight`): a cast or a move replaces a
    parameter's data without changing its version counter, so the old copy would otherwise be read."""
    with _packed_lock:
        for w in weights:
            _packed.pop(w, None)


def forced_kernel() -> Optional[str]:
    """The kernel ``$S3TOK_CPU_LINEAR`` asks for, or None (unset, empty or ``auto``: time them)."""
    value = os.environ.get(KERNEL_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in KERNELS:
        raise ValueError(f"{KERNEL_ENV}={value!r}: expected one of auto, {', '.join(KERNELS)}")
    return value


def _run(kernel: str, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """One feed-forward pair (``x -> GELU(x W1) W2 + x``) with ``kernel``, as :func:`linear` would run it."""
    return _apply(kernel, _apply(kernel, x, w1, b1, gelu=True), w2, b2, add=x)


def candidates(dtype: torch.dtype) -> Tuple[str, ...]:
    """The kernels timed for ``dtype``: all of :data:`KERNELS` for fp32; for narrower dtypes, where a
    separate GELU or addition changes the bits, ``fused`` and ``aten``."""
    return KERNELS if dtype == torch.float32 else ("fused", "aten")


def time_kernels(dtype: torch.dtype, width: int, rows: int = PROBE_ROWS, reps: int = PROBE_REPS) -> Dict[str, float]:
    """Best seconds of each of :func:`candidates` on one feed-forward pair ``rows x width -> 4 width -> width``
    in ``dtype``, calls interleaved so that a machine whose speed drifts affects both alike. The input is
    random (a private generator: the caller's random state is not touched); the weights are constant, as
    cheap to make as memory is to fill (a product's speed does not depend on its values)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=gen).to(dtype)
    w1 = torch.full((4 * width, width), width ** -0.5, dtype=dtype)
    w2 = torch.full((width, 4 * width), (4 * width) ** -0.5, dtype=dtype)
    b1, b2 = torch.zeros(4 * width, dtype=dtype), torch.zeros(width, dtype=dtype)
    kernels = candidates(dtype)
    best = {k: float("inf") for k in kernels}
    with torch.no_grad():
        for rep in range(reps + 1):
            for kernel in (kernels if rep % 2 == 0 else kernels[::-1]):
                t0 = time.perf_counter()
                _run(kernel, x, w1, b1, w2, b2)
                if rep:  # the first call of each builds its primitives and warms the caches
                    best[kernel] = min(best[kernel], time.perf_counter() - t0)
    return best


def cpu_kernel(dtype: torch.dtype, width: int) -> str:
    """One of :data:`KERNELS`: the kernel for this process's CPU linear layers of ``dtype`` in a model
    of ``width``; decided on the first call (timed unless forced) and logged once at debug level."""
    key = (dtype, width)
    got = _chosen.get(key)
    if got is not None:
        return got
    with _lock:
        if key not in _chosen:
            _chosen[key] = _choose(dtype, width)
        return _chosen[key]


def _choose(dtype: torch.dtype, width: int) -> str:
    name = str(dtype).replace("torch.", "")
    if dtype not in ONEDNN_LINEAR:
        logger.debug("CPU linear, %s, width %d: aten (oneDNN's fused linear does not run %s here)", name, width, name)
        return "aten"
    forced = forced_kernel()
    if forced:
        logger.debug("CPU linear, %s, width %d: %s (%s)", name, width, forced, KERNEL_ENV)
        return forced
    t0 = time.perf_counter()
    times = time_kernels(dtype, width)
    choice = pick(times)
    logger.debug("CPU linear, %s, width %d, %s, %d threads: %s per feed-forward pair of %d rows -> %s (timed in "
                 "%.2f s)", name, width, torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(),
                 ", ".join(f"{k} {1e3 * t:.1f} ms" for k, t in times.items()), PROBE_ROWS, choice,
                 time.perf_counter() - t0)
    return choice


def pick(times: Dict[str, float]) -> str:
    """The kernel to keep, given each timed one's seconds: the faster oneDNN kernel, unless ATen beats it by
    :data:`MARGIN`."""
    onednn = min((k for k in ONEDNN_KERNELS if k in times), key=lambda k: times[k])
    return "aten" if times["aten"] < (1 - MARGIN) * times[onednn] else onednn


def chosen_kernels() -> Dict[str, str]:
    """What this process chose so far, as ``{"float32 width 1280": "onednn", ...}`` (for reports)."""
    return {f"{str(d).replace('torch.', '')} width {w}": k for (d, w), k in sorted(_chosen.items(), key=str)}


def kernel_for(layer: nn.Linear, x: Tensor) -> str:
    """The kernel that runs ``layer`` on ``x``: ATen off the CPU, with autograd or under compilation."""
    if (x.dtype not in ONEDNN_LINEAR or x.device.type != "cpu"
            or torch.is_grad_enabled() or torch.compiler.is_compiling()):
        return "aten"
    return cpu_kernel(x.dtype, min(layer.in_features, layer.out_features))


def _apply(kernel: str, x: Tensor, weight: Tensor, bias: Optional[Tensor], gelu: bool = False,
           add: Optional[Tensor] = None) -> Tensor:
    """``x W^T + b``, then exact GELU when ``gelu``, or ``+ add`` when given, with ``kernel``."""
    if kernel in ONEDNN_KERNELS:
        weight = onednn_weight(weight)
    if kernel == "fused":
        if add is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, weight, bias, "add")
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    if kernel == "onednn":
        y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        if gelu:  # in place, as the addition: the product's own new tensor, and no autograd on this path
            return torch.ops.aten.gelu_(y)
        return y if add is None else y.add_(add)
    y = F.linear(x, weight, bias)
    if gelu:
        return F.gelu(y)
    return y if add is None else y + add


def linear(layer: nn.Linear, x: Tensor, gelu: bool = False, add: Optional[Tensor] = None) -> Tensor:
    """``layer(x)``, then exact GELU when ``gelu``, or ``+ add`` when given, with the kernel
    :func:`kernel_for` names; the addition is the same single add with every kernel.

    Mixed precision (weights in a narrower dtype than ``x`` or ``add``): the product runs in the weights'
    dtype and its result comes back in the wider one before the addition; after GELU it stays narrow, as
    it only feeds the next product."""
    wdt = layer.weight.dtype
    if x.dtype != wdt or (add is not None and add.dtype != wdt):
        y = linear(layer, x.to(wdt), gelu=gelu)
        if gelu:
            return y
        y = y.to(add.dtype if add is not None else x.dtype)
        return y if add is None else y + add
    return _apply(kernel_for(layer, x), x, layer.weight, layer.bias, gelu=gelu, add=add)
