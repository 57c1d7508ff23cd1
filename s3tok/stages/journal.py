"""Crash-safe per-job outputs: an append-only journal that a rerun resumes, and completion markers.

A job appends one flushed line per utterance (``key t1 t2 ...`` or ``key reason``) to ``<name>.part``.
After a ``kill -9`` the last line may be cut: :meth:`LineJournal.open` drops it and the rerun redoes that
key. The final files are written from the journal, in input order, under temporary names then renamed,
so an interrupted-and-resumed job ends byte-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, TextIO, Union

from s3tok.util.fsutil import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class LineJournal:
    """``key rest`` lines appended to ``path`` (one flush per line); reopening keeps the complete lines."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.entries: Dict[str, str] = {}
        self._f: Optional[TextIO] = None

    def open(self, fresh: bool = False, valid: Optional[Callable[[str, str], bool]] = None) -> "LineJournal":
        """Load the complete lines already there and open for appending. A cut last line is dropped; so is
        any line that is not UTF-8 ``key rest`` or that ``valid(key, rest)`` rejects (garbage written by a
        dying machine): one warning names the file and the count, the file keeps the good lines, and the
        caller redoes the keys it no longer finds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries = {}
        if fresh and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            data = self.path.read_bytes()
            end = data.rfind(b"\n") + 1  # bytes after the last newline are a cut record
            good, dropped = [], 0
            for raw in data[:end].split(b"\n")[:-1]:
                if not raw:
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    dropped += 1
                    continue
                key, _, rest = line.partition(" ")
                if not key or "\x00" in line or (valid is not None and not valid(key, rest)):
                    dropped += 1
                    continue
                self.entries[key] = rest
                good.append(raw)
            if dropped:
                logger.warning("%s: dropped %d unreadable line(s); their utterances are done again", self.path,
                               dropped)
                atomic_write_bytes(self.path, b"".join(r + b"\n" for r in good))
            elif end < len(data):
                with open(self.path, "r+b") as f:
                    f.truncate(end)
        self._f = open(self.path, "a", encoding="utf-8")
        return self

    def add(self, key: str, rest: str) -> None:
        if self._f is None:
            raise RuntimeError(f"{self.path}: journal not open")
        if "\n" in rest or "\n" in key or " " in key:
            raise ValueError(f"{self.path}: bad journal record for key {key!r}")
        try:
            self._f.write(f"{key} {rest}\n")
            self._f.flush()
        except OSError as e:  # name the journal: a bare write error says only "No space left on device"
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        self.entries[key] = rest

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def remove(self) -> None:
        self.close()
        if self.path.exists():
            self.path.unlink()

    def __enter__(self) -> "LineJournal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def done_marker(output_dir: PathLike, stage: str, job: Optional[int] = None) -> Path:
    """Path of the completion marker of ``stage`` (job ``job``) in ``output_dir``; never typed by hand."""
    name = stage if job is None else f"{stage}.{job}"
    return Path(output_dir) / ".done" / name


def mark_done(output_dir: PathLike, stage: str, job: Optional[int] = None, info: Optional[dict] = None,
              outputs: Sequence[PathLike] = ()) -> Path:
    """Write the completion marker last, after every output of the step is in place; it records each
    output's size, so that a damaged or replaced output is noticed before the step is skipped."""
    path = done_marker(output_dir, stage, job)
    sizes = {os.path.relpath(p, output_dir): Path(p).stat().st_size for p in outputs}  # relative: the dir may move
    atomic_write_text(path, json.dumps({**(info or {}), "outputs": sizes}, sort_keys=True) + "\n")
    return path


def done_info(output_dir: PathLike, stage: str, job: Optional[int] = None) -> Optional[dict]:
    """The marker's info when the step is done and its outputs are intact; None otherwise (logged when an
    output went missing or changed size)."""
    marker = done_marker(output_dir, stage, job)
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    for name, size in (info.get("outputs") or {}).items():
        try:
            now = (Path(output_dir) / name).stat().st_size
        except OSError:
            now = None
        if now != size:
            logger.warning("%s: %s is %s, not the %d bytes it was written with; the step is done again", marker,
                           name, "missing" if now is None else f"{now} bytes", size)
            return None
    return info


def clear_done(output_dir: PathLike, stage: str, job: Optional[int] = None) -> None:
    path = done_marker(output_dir, stage, job)
    if path.exists():
        path.unlink()
