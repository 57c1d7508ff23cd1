"""Crash-safe per-job outputs: an append-only journal that a rerun resumes, and completion markers.

A job appends one flushed line per utterance (``key t1 t2 ...`` or ``key reason``) to ``<name>.part``.
After a ``kill -9`` the last line may be cut: :meth:`LineJournal.open` drops it and the rerun redoes that
key. The final files are written from the journal, in input order, under temporary names then renamed,
so an interrupted-and-resumed job ends byte-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, TextIO, Union

from .fsutil import atomic_write_text

PathLike = Union[str, os.PathLike]


class LineJournal:
    """``key rest`` lines appended to ``path`` (one flush per line); reopening keeps the complete lines."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.entries: Dict[str, str] = {}
        self._f: Optional[TextIO] = None

    def open(self, fresh: bool = False) -> "LineJournal":
        """Load the complete lines already there (dropping a cut last line) and open for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries = {}
        if fresh and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            data = self.path.read_bytes()
            end = data.rfind(b"\n") + 1  # bytes after the last newline are a cut record
            if end < len(data):
                with open(self.path, "r+b") as f:
                    f.truncate(end)
            for line in data[:end].decode("utf-8").splitlines():
                key, _, rest = line.partition(" ")
                if key:
                    self.entries[key] = rest
        self._f = open(self.path, "a", encoding="utf-8")
        return self

    def add(self, key: str, rest: str) -> None:
        if self._f is None:
            raise RuntimeError(f"{self.path}: journal not open")
        if "\n" in rest or "\n" in key or " " in key:
            raise ValueError(f"{self.path}: bad journal record for key {key!r}")
        self._f.write(f"{key} {rest}\n")
        self._f.flush()
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


def mark_done(output_dir: PathLike, stage: str, job: Optional[int] = None, info: Optional[dict] = None) -> Path:
    """Write the completion marker last, after every output of the step is in place."""
    path = done_marker(output_dir, stage, job)
    atomic_write_text(path, json.dumps(info or {}, sort_keys=True) + "\n")
    return path


def is_done(output_dir: PathLike, stage: str, job: Optional[int] = None) -> bool:
    return done_marker(output_dir, stage, job).is_file()


def read_done(output_dir: PathLike, stage: str, job: Optional[int] = None) -> dict:
    """The info stored in a completion marker ({} when absent or unreadable)."""
    try:
        return json.loads(done_marker(output_dir, stage, job).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def clear_done(output_dir: PathLike, stage: str, job: Optional[int] = None) -> None:
    path = done_marker(output_dir, stage, job)
    if path.exists():
        path.unlink()
