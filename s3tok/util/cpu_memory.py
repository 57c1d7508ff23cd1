"""Page faults on CPU: let glibc's malloc keep freed activation memory for the next forward pass.

By default glibc maps every block over its adaptive mmap threshold (at most 32 MB) afresh and unmaps it
on free, and trims the heap soon after, so each forward pass touches hundreds of megabytes of new,
kernel-zeroed pages: 200,000-290,000 page faults per pass of two 30 s windows for v1 in fp32 on the
benchmark machine. :func:`keep_freed_memory` serves every block from the heap (no mmap), grows it in
larger steps and trims it only past a threshold, which brings that near zero for 40-400 MB more
resident memory. It is process-wide, so ``s3tok tokenize`` calls it on CPU and the Python API leaves it
to the caller.

:func:`bound_onednn_caches` keeps oneDNN's caches of ready-made primitives small: with their default 1024
entries, every new input shape (the encoder's row count changes with every batch) keeps its primitive and
its buffers, and a CPU run's memory grows for hours (v2, 2 h of 2-8 s clips: 1.07 GB after the first batches,
2.19 GB at the end, still rising; with 8 entries 1.05 GB flat).
"""
from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # mallopt parameters, <malloc.h>
ONEDNN_CACHE_ENV = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")  # oneDNN's own; ideep's (torch's glue)
ONEDNN_CACHE_ENTRIES = 8  # a batch's products need 3 shapes; long audio's repeated windows stay cached
ENV = "S3TOK_KEEP_FREED_MEMORY"

_done = False


def keep_freed_memory(trim_mb: int = 256, top_pad_mb: int = 128) -> bool:
    """Tune glibc's malloc for repeated large forward passes (see the module docstring).

    Returns True when the settings took effect, False on a C library other than glibc, when the
    environment sets ``S3TOK_KEEP_FREED_MEMORY=0``, or when glibc refuses a value. Calling it again
    does nothing more.
    """
    global _done
    if _done:
        return True
    if os.environ.get(ENV, "1") == "0":
        logger.debug("%s=0: malloc left as it is", ENV)
        return False
    import ctypes  # here, not at the top: ``import s3tok`` loads this module (bound_onednn_caches) for every tool
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = [(M_MMAP_MAX, 0), (M_TOP_PAD, top_pad_mb << 20), (M_TRIM_THRESHOLD, trim_mb << 20)]
    ok = all(mallopt(param, value) == 1 for param, value in settings)
    if ok:
        _done = True
        logger.debug("malloc: every block from the heap, top pad %d MB, trim above %d MB", top_pad_mb, trim_mb)
    else:
        logger.warning("glibc refused the malloc settings; page faults per forward pass stay as they are")
    return ok


def bound_onednn_caches(entries: int = ONEDNN_CACHE_ENTRIES) -> dict:
    """Cap oneDNN's primitive cache and ideep's at ``entries`` each, unless the environment sets them already.

    Each library reads its variable once, at the process's first oneDNN operation, so this must run before
    that: ``import s3tok`` calls it (every command, ``python -m s3tok.bin...`` and the Python API); a program
    that ran oneDNN operations before importing s3tok keeps the sizes it had. Process-wide: a program whose
    own oneDNN operations come in more than ``entries`` fixed shapes may set the variables larger. Returns
    the values in effect."""
    for name in ONEDNN_CACHE_ENV:
        os.environ.setdefault(name, str(entries))
    values = {name: os.environ[name] for name in ONEDNN_CACHE_ENV}
    logger.debug("oneDNN caches: %s", ", ".join(f"{k}={v}" for k, v in values.items()))
    return values
