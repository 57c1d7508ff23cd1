"""Length-sorted packing: group items of similar length so that little padding is computed."""
from __future__ import annotations

from typing import Callable, List, Sequence, TypeVar

T = TypeVar("T")


MIN_FILL = 0.75  # an item shorter than this fraction of its group's longest starts a new group


def pack_by_length(items: Sequence[T], length: Callable[[T], int], max_frames: int,
                   max_items: int = 0, min_fill: float = MIN_FILL) -> List[List[T]]:
    """Sort ``items`` longest first and fill groups while ``group size * longest length <= max_frames``
    (and at most ``max_items`` items when it is > 0), starting a new group when an item is shorter than
    ``min_fill`` times the group's longest, so that at most ``1 - min_fill`` of any item is padding.
    An item longer than ``max_frames`` goes alone. Every item lands in exactly one group; ties keep
    their input order."""
    order = sorted(range(len(items)), key=lambda i: (-length(items[i]), i))
    groups: List[List[T]] = []
    current: List[T] = []
    longest = 0
    for i in order:
        it = items[i]
        if not current:
            longest = length(it)
        elif ((len(current) + 1) * longest > max_frames or (max_items and len(current) >= max_items)
              or length(it) < min_fill * longest):
            groups.append(current)
            current, longest = [], length(it)
        current.append(it)
    if current:
        groups.append(current)
    return groups
