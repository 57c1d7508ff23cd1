"""Decode threads that run torch's CPU ops on one thread each.

A Python thread that calls a parallel torch op (a resampling convolution, a log-mel, a dtype conversion)
starts its own team of intra-op threads, as many as the process's ``torch.get_num_threads()``: N decode
workers beside the model are N teams of N threads. The workers already work on different items in
parallel, so each runs its ops on one thread (:func:`worker_pool`). ``tools/bench_feed.py`` on a 2-core EPYC,
232 clips: 2 threads and 2 workers, 0.41 s of wall against 0.49 s; 16 and 16 (a GPU host's setting), 0.75 s
against 1.30 s, and 0.12 s against 0.39 s where the workers only decode (docs/benchmarks.md).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # the workers start in microseconds; this only bounds a pathological start


def worker_pool(num_workers: int, initializer: Optional[Callable[..., None]] = None,
                initargs: Sequence = ()) -> ThreadPoolExecutor:
    """A started pool of ``num_workers`` threads whose torch CPU ops run on one thread each;
    ``initializer(*initargs)`` runs in each after that. The process's own intra-op thread count (the
    model's) is unchanged when this returns: ``torch.set_num_threads`` sets the calling thread's count and
    the process default, so every worker sets 1 for itself and the default is restored once all have."""
    num_workers = max(1, num_workers)
    threads = torch.get_num_threads()
    started = threading.Barrier(num_workers + 1, timeout=START_TIMEOUT_S)

    def init(*args) -> None:
        try:  # torch sets a thread's count from the default at its first parallel op (get_num_threads is
            torch.get_num_threads()  # one); after that, only set_num_threads changes it
            torch.set_num_threads(1)
            if initializer is not None:
                initializer(*args)
        finally:  # an initializer that raises breaks the pool (its tasks fail), never this start
            try:
                started.wait()
            except threading.BrokenBarrierError:
                pass

    pool = ThreadPoolExecutor(max_workers=num_workers, initializer=init, initargs=tuple(initargs))
    try:
        for _ in range(num_workers):  # a worker blocked in init is not idle: each submit starts a new one
            pool.submit(int)
        started.wait()
    except threading.BrokenBarrierError:
        logger.warning("decode workers did not all start within %.0f s", START_TIMEOUT_S)
    finally:
        torch.set_num_threads(threads)
    return pool
