"""Contiguous splits of a (sorted) list: the pieces concatenate back to the input, in order.

Both functions clamp the number of pieces to the number of items, so no piece is ever empty and no item
is ever repeated (a padding sampler's duplicates are exactly what this avoids). Piece ``j`` of
:func:`split_contiguous` is ``items[j * n // k:(j + 1) * n // k]``: the same rule as the tokenize
stage's ``--num_jobs/--job`` shard, so a split file and a job's shard hold the same keys.
"""
from __future__ import annotations

import math
from typing import List, Sequence, TypeVar

T = TypeVar("T")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of pieces must be an integer >= 1, got {n!r}")


def split_contiguous(lines: Sequence[T], n: int) -> List[List[T]]:
    """Split ``lines`` into ``min(n, len(lines))`` contiguous pieces whose sizes differ by at most one.

    An empty input gives ``[]``.
    """
    _check_n(n)
    total = len(lines)
    k = min(n, total)
    return [list(lines[j * total // k:(j + 1) * total // k]) for j in range(k)]


def split_by_weight(keys: Sequence[T], weights: Sequence[float], n: int) -> List[List[T]]:
    """Split ``keys`` into ``min(n, len(keys))`` contiguous, non-empty pieces of about equal total weight.

    Boundary ``i`` is put where the running weight is nearest ``i / k`` of the total, while leaving at
    least one item for each later piece. Weights (e.g. durations) must be finite and non-negative;
    all-zero weights fall back to :func:`split_contiguous`.
    """
    _check_n(n)
    if len(keys) != len(weights):
        raise ValueError(f"{len(keys)} keys but {len(weights)} weights")
    prefix = [0.0]
    for i, w in enumerate(weights):
        w = float(w)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of item {i} ({keys[i]!r}) must be finite and >= 0, got {w!r}")
        prefix.append(prefix[-1] + w)
    total, count = prefix[-1], len(keys)
    k = min(n, count)
    if k == 0:
        return []
    if total <= 0:
        return split_contiguous(keys, k)
    bounds = [0]
    for i in range(1, k):
        lo, hi = bounds[-1] + 1, count - (k - i)  # every piece keeps at least one item
        target = total * i / k
        # first index in [lo, hi] whose prefix reaches the target, then the nearer of it and the one before
        b = lo
        while b < hi and prefix[b] < target:
            b += 1
        if b > lo and abs(prefix[b - 1] - target) <= abs(prefix[b] - target):
            b -= 1
        bounds.append(b)
    bounds.append(count)
    return [list(keys[bounds[j]:bounds[j + 1]]) for j in range(k)]
