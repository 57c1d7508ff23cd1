"""``key value`` lines as Kaldi reads them, one parser for every table s3tok reads (``wav.scp``,
``feats.scp``, ``text``, ``utt2spk``, ...): UTF-8, the key ends at the first ASCII space or tab (a no-break
space belongs to the key, as in Kaldi), the value is the rest of the line with its ends trimmed. Lines end
at a newline only (a trailing carriage return is dropped), never at the other characters Python's ``str.splitlines``
breaks on. A key holding an ASCII control character (Kaldi refuses those too) or U+0085, U+2028, U+2029
(line breaks to many tools) is refused with the file, line and key: see :func:`key_problem`."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple, Union

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

SPLIT = re.compile(r"[ \t]+")  # Kaldi's field separators: ASCII space and tab only
BOM = "\ufeff"
#: What no key may hold: ASCII space and control characters, DEL (Kaldi's ``IsToken`` refuses them all), and
#: U+0085, U+2028, U+2029, which ``str.splitlines`` and many tools take for line ends.
BAD_KEY_CHARS = re.compile("[\x00-\x20\x7f\x85\u2028\u2029]")


def key_problem(key: str) -> Optional[str]:
    """Why ``key`` cannot name an utterance or recording, or None: it is empty, or it holds whitespace, an
    ASCII control character or a Unicode line separator (the character named)."""
    if not key:
        return "empty key"
    m = BAD_KEY_CHARS.search(key)
    if m is None:
        return None
    c = m.group()
    what = "whitespace" if c in " \t" else ("a line separator" if c in "\x85\u2028\u2029"
                                           else "a control character")
    return (f"key {key!r} holds {what} (U+{ord(c):04X}); keys are one word of printable characters "
            "(rename it)")


def split_text_lines(text: str) -> List[str]:
    """``text`` cut at newlines only, a trailing carriage return of each line dropped, no empty last piece: how Kaldi
    cuts a table into lines (``str.splitlines`` also cuts at U+2028, U+0085, 0x1c, ...)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


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
    """``(1-based number, bytes without the newline)`` of each line of ``path`` (cut at newlines only)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            yield lineno, raw.rstrip(b"\n")


def decode_line(raw: bytes, lineno: int) -> str:
    """A line's bytes as text, the byte-order mark of line 1 dropped (:func:`read_lines` warns about it).
    Raises ``UnicodeDecodeError``."""
    text = raw.decode("utf-8")
    return text[1:] if lineno == 1 and text.startswith(BOM) else text


def read_lines(path: PathLike, *, allow_empty_value: bool = False, skip_blank: bool = False,
               value_name: str = "value") -> List[Line]:
    """All lines of a ``key value`` file in file order. Raises ``ValueError`` naming the file and line for
    invalid UTF-8, a blank line (unless ``skip_blank``), a line without a value (unless
    ``allow_empty_value``), a key :func:`key_problem` refuses, or a duplicate key. A byte-order mark at the
    start is dropped with a warning."""
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
        bad = key_problem(key)
        if bad:
            raise ValueError(f"{path}:{lineno}: {bad}")
        if not value and not allow_empty_value:
            raise ValueError(f"{path}:{lineno}: expected 'key {value_name}', got {text!r}")
        if key in seen:
            raise ValueError(f"{path}:{lineno}: duplicate key {key!r} (first at line {seen[key]})")
        seen[key] = lineno
        out.append(Line(lineno, key, value))
    return out
