"""Contiguous splits of a (sorted) list: the pieces concatenate back to the input, in order.

Both functions clamp the number of pieces to the number of items, so no piece is ever empty and no item
is ever repeated (a padding sampler's duplicates are exactly what this avoids). Piece ``j`` of
:func:`split_contiguous` is ``items[j * n // k:(j + 1) * n // k]``. :func:`split_file` (``split-scp``,
``utils/split_scp``) splits a file's non-blank lines this way, or by ``utt2dur`` with :func:`split_by_weight`.

The stage jobs' ``--num_jobs/--job`` shards are not these pieces: they balance estimated durations
(:mod:`s3tok.stages.sharding`: ``utt2num_frames``, segment lengths or file sizes), so a split file and a job's
shard generally hold different keys. A job's keys are in its own outputs (``tokens.J.scp`` and
``utt2fail.J``), never to be inferred from a split file.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, TypeVar

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


def _weights(lines: Sequence[Tuple[int, bytes]], utt2dur: str, input_name: str) -> List[float]:
    """The ``utt2dur`` duration of the key of each ``(line number, line)``."""
    durs = {}
    with open(utt2dur, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            parts = raw.split()
            if not parts:
                continue
            try:
                if len(parts) != 2:
                    raise ValueError
                durs[parts[0]] = float(parts[1])
            except ValueError:
                raise ValueError(f"{utt2dur}:{lineno}: expected 'key seconds', got {raw!r}") from None
    out = []
    for lineno, line in lines:
        parts = line.split(maxsplit=1)
        key = parts[0] if parts else b""
        if key not in durs:
            raise ValueError(f"{input_name}:{lineno}: key {key.decode('utf-8', 'replace')!r} is not in {utt2dur}")
        out.append(durs[key])
    return out


def read_split_lines(input_path: str) -> List[Tuple[int, bytes]]:
    """``(1-based line number, line)`` of each non-blank line of ``input_path``, as bytes ending in a newline
    (one is added to a last line without it). Blank lines (nothing but spaces, tabs, CR) hold no key and are
    left out, as every table reader skips them. Raises ``ValueError`` when no line is left."""
    with open(input_path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [(lineno, line + b"\n") for lineno, line in enumerate(lines, 1) if line.strip(b" \t\r")]
    if not out:
        raise ValueError(f"{input_path}: " + ("only blank lines" if lines else "empty") + ", nothing to split")
    return out


def split_file(input_path: str, n: int, utt2dur: Optional[str] = None) -> List[List[bytes]]:
    """The pieces of the non-blank lines of ``input_path`` (each line as bytes ending in a newline, copied byte
    for byte): ``min(n, lines)`` contiguous pieces, none empty. Raises ``ValueError`` for a file without a
    non-blank line."""
    numbered = read_split_lines(input_path)
    lines = [line for _, line in numbered]
    if utt2dur:
        return split_by_weight(lines, _weights(numbered, utt2dur, input_path), n)
    return split_contiguous(lines, n)
