"""Atomic file writes: a temporary file beside the target, then a rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: PathLike) -> tuple:
    """``(fd, name)`` of a new temporary file next to ``path``, with the permissions a plain ``open`` would
    give (``mkstemp`` makes files private, which hides outputs from the rest of a cluster group)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, fsync, rename into place."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # name the target: a bare write error says only "No space left on device"
            raise OSError(e.errno, e.strerror, str(path)) from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_lines(path: PathLike, lines: Iterable[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def remove_leftovers(output_dir: PathLike, targets: Iterable[PathLike]) -> int:
    """Delete the temporary files that a killed writer of ``targets`` left beside them (``.NAME.*.tmp``, as
    :func:`temp_beside` names them); returns how many. Call it when a job starts over on its outputs."""
    n = 0
    for target in targets:
        target = Path(target)
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            try:
                tmp.unlink()
                n += 1
            except FileNotFoundError:
                pass
    if n:
        import logging

        logging.getLogger(__name__).info("%s: removed %d temporary file(s) left by an interrupted run", output_dir, n)
    return n
