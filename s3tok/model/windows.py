"""Long audio: cut the whole utterance's log-mel into 30 s windows and merge their tokens back.

Windows of ``WINDOW`` frames start every ``STEP`` frames and stop once one reaches the end, so no
window is redundant; each inner edge drops ``k`` tokens (2 s) and the merged length equals the
token count of the whole utterance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

WINDOW = 3000  # mel frames (30 s)
STEP = 2600  # mel frames (26 s): 4 s overlap
OVERLAP_SECONDS = 2  # tokens dropped on each side of an inner edge, in seconds


@dataclass(frozen=True)
class Segment:
    """One forward-pass item: frames ``[start, start + length)`` of utterance ``item``.

    Of its tokens, ``[keep_from, keep_to)`` are kept when merging.
    """

    item: int
    start: int
    length: int
    keep_from: int
    keep_to: int


def plan_segments(item: int, frames: int, num_tokens, token_rate: int,
                  window: int = WINDOW, step: int = STEP) -> List[Segment]:
    """The segments of one utterance: itself when ``frames <= window``, else its windows.

    ``num_tokens(frames)`` gives a window's token count; ``token_rate`` is tokens per second.
    """
    if frames <= 0:
        raise ValueError(f"utterance {item} has {frames} mel frames")
    if frames <= window:
        return [Segment(item, 0, frames, 0, num_tokens(frames))]
    k = OVERLAP_SECONDS * token_rate
    starts = []
    start = 0
    while True:
        starts.append(start)
        if start + window >= frames:
            break
        start += step
    segments = []
    for i, s in enumerate(starts):
        length = min(window, frames - s)
        n = num_tokens(length)
        keep_from = 0 if i == 0 else k
        keep_to = n if i == len(starts) - 1 else n - k
        segments.append(Segment(item, s, length, keep_from, keep_to))
    return segments


def merge_segments(segments: Sequence[Segment], tokens: Sequence[Sequence[int]]) -> List[int]:
    """Concatenate the kept tokens of one utterance's segments, in order."""
    out: List[int] = []
    for seg, toks in zip(segments, tokens):
        out.extend(toks[seg.keep_from:seg.keep_to])
    return out
