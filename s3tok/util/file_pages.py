"""Resident memory of weights read from a file: give back the pages of a copy the process no longer reads.

The converted weights are memory-mapped from the cache's safetensors file (``load_file`` copies nothing),
so a weight's pages become resident (and count in the process's RSS) once something reads them. On a CPU
the linear layers' products read a reordered copy (:func:`s3tok.model.linear.onednn_weight`); after the
reorder the plain weight is not read again by inference, yet its pages stay resident: a second copy of
the linear weights in RSS (450-950 MB for the four models). :func:`release_file_pages` unmaps those pages
from this process (``madvise(MADV_DONTNEED)``); they stay in the page cache, shared with other processes,
and a later read (moving the model to a GPU, saving it, an autograd call) faults them back in unchanged.

Only clean pages of the file are released, as ``/proc/self/pagemap`` marks them: a page written to in
place (a private copy of the file's page) or any anonymous memory would lose its contents under
``MADV_DONTNEED``, so such pages are left alone; so is every page where the pagemap cannot be read.
The kernel may evict clean file pages on its own under memory pressure; this does the same, earlier.
Linux only; elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
from torch import Tensor

logger = logging.getLogger(__name__)

ENV = "S3TOK_RELEASE_FILE_PAGES"  # 0: keep every page resident
MADV_DONTNEED = 4
PRESENT, SWAPPED, FILE_OR_SHARED = 1 << 63, 1 << 62, 1 << 61  # pagemap entry bits (Documentation/admin-guide/mm/pagemap)
MIN_BYTES = 1 << 20  # smaller tensors are not worth two system calls
PAGEMAP_CHUNK = 1 << 18  # pages per read of the page map (2 MB of entries, 1 GB of memory with 4 KB pages)


@functools.lru_cache(maxsize=None)
def _libc_madvise() -> Tuple[Optional[Callable[..., int]], str]:
    """The C library's ``madvise`` (once per process), or None and why it is not there."""
    if platform.system() != "Linux":
        return None, f"not Linux ({platform.system()})"
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError) as e:
        return None, f"no madvise in the C library ({e})"
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn, ""


def file_page_runs(start: int, npages: int, page: int) -> Iterator[Tuple[int, int]]:
    """``(address, pages)`` runs of present, clean file pages among ``npages`` pages from ``start``
    (page-aligned), read from ``/proc/self/pagemap``. Raises OSError where it cannot be read."""
    with open("/proc/self/pagemap", "rb", buffering=0) as f:
        for first in range(0, npages, PAGEMAP_CHUNK):  # a bounded read at a time (8 bytes a page)
            n = min(PAGEMAP_CHUNK, npages - first)
            f.seek((start // page + first) * 8)
            raw = f.read(n * 8)
            if len(raw) != n * 8:
                raise OSError(f"/proc/self/pagemap: short read ({len(raw)} of {n * 8} bytes)")
            entries = np.frombuffer(raw, dtype=np.uint64)
            clean = (entries & np.uint64(PRESENT | FILE_OR_SHARED | SWAPPED)) == np.uint64(PRESENT | FILE_OR_SHARED)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], clean.view(np.int8), [0]))))  # run starts, ends
            for lo, hi in zip(edges[::2].tolist(), edges[1::2].tolist()):
                yield start + (first + lo) * page, hi - lo


def release_file_pages(t: Tensor) -> int:
    """Unmap from this process the resident, clean file-backed pages wholly inside ``t``'s memory; returns
    the bytes released (0 where none are file-backed, off Linux, for small or non-CPU tensors, or with
    ``$S3TOK_RELEASE_FILE_PAGES=0``). The values of ``t`` do not change."""
    if os.environ.get(ENV, "1") == "0" or t.device.type != "cpu" or t.is_mkldnn or not t.is_contiguous():
        return 0
    nbytes = t.numel() * t.element_size()
    if nbytes < MIN_BYTES:
        return 0
    madvise, why_not = _libc_madvise()
    if madvise is None:
        logger.debug("file pages kept resident: %s", why_not)
        return 0
    page = os.sysconf("SC_PAGE_SIZE")
    ptr = t.data_ptr()
    start, end = -(-ptr // page) * page, (ptr + nbytes) // page * page  # whole pages inside the tensor
    if end <= start:
        return 0
    released = 0
    try:  # the whole map first: unmapping part of a huge page unmaps all of it, later entries would miss it
        for addr, n in list(file_page_runs(start, (end - start) // page, page)):
            if madvise(addr, n * page, MADV_DONTNEED) != 0:
                err = ctypes.get_errno()
                logger.debug("madvise(%#x, %d pages): %s; pages kept", addr, n, os.strerror(err))
                return released
            released += n * page
    except OSError as e:
        logger.debug("file pages kept resident: %s", e)
    return released
