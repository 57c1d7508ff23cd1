"""``key value`` lines as Kaldi reads them, one parser for every table s3tok reads (``wav.scp``,
``feats.scp``, ``text``, ``utt2spk``, ...): UTF-8, the key ends at the first ASCII space or tab (a no-break
space belongs to the key, as in Kaldi), the value is the rest of the line with its ends trimmed."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple, Union

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

SPLIT = re.compile(r"[ \t]+")  # Kaldi's field separators: ASCII space and tab only
BOM = "\ufeff"


@dataclass(frozen=True)
class Line:
    """One non-empty line: its 1-based number, key and value (the rest of the line, ends trimmed)."""

    lineno: int
    key: str
    value: str


def split_line(line: str) -> Tuple[str, str]:
    """``key value`` at the first run of spaces/tabs; trailing spaces, tabs and CR are dropped."""
    line = line.rstrip(" \t\r\n").lstrip(" \t")
    parts = SPLIT.split(line, maxsplit=1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def raw_lines(path: PathLike) -> Iterator[Tuple[int, bytes]]:
    """``(1-based number, bytes without the newline)`` of each line of ``path``."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            yield lineno, raw.rstrip(b"\n")


def read_lines(path: PathLike, *, allow_empty_value: bool = False, skip_blank: bool = False,
               value_name: str = "value") -> List[Line]:
    """All lines of a ``key value`` file in file order. Raises ``ValueError`` naming the file and line for
    invalid UTF-8, a blank line (unless ``skip_blank``), a line without a value (unless
    ``allow_empty_value``) or a duplicate key. A byte-order mark at the start is dropped with a warning."""
    out: List[Line] = []
    seen: Dict[str, int] = {}
    for lineno, raw in raw_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                             f"{e.start + 1})") from None
        if lineno == 1 and text.startswith(BOM):
            logger.warning("%s: starts with a byte-order mark (U+FEFF); ignored", path)
            text = text[1:]
        if not text.strip(" \t\r"):
            if skip_blank:
                continue
            raise ValueError(f"{path}:{lineno}: empty line")
        key, value = split_line(text)
        if not value and not allow_empty_value:
            raise ValueError(f"{path}:{lineno}: expected 'key {value_name}', got {text!r}")
        if key in seen:
            raise ValueError(f"{path}:{lineno}: duplicate key {key!r} (first at line {seen[key]})")
        seen[key] = lineno
        out.append(Line(lineno, key, value))
    return out
