"""Length-sorted packing: group items of similar length so that little padding is computed."""
from __future__ import annotations

from typing import Callable, List, Sequence, TypeVar

T = TypeVar("T")


def pack_by_length(items: Sequence[T], length: Callable[[T], int], max_frames: int,
                   max_items: int = 0) -> List[List[T]]:
    """Sort ``items`` longest first and fill groups while ``group size * longest length <= max_frames``
    (and at most ``max_items`` items when it is > 0). An item longer than ``max_frames`` goes alone.
    Every item lands in exactly one group; ties keep their input order."""
    order = sorted(range(len(items)), key=lambda i: (-length(items[i]), i))
    groups: List[List[T]] = []
    current: List[T] = []
    longest = 0
    for i in order:
        it = items[i]
        if not current:
            longest = length(it)
        elif (len(current) + 1) * longest > max_frames or (max_items and len(current) >= max_items):
            groups.append(current)
            current, longest = [], length(it)
        current.append(it)
    if current:
        groups.append(current)
    return groups
