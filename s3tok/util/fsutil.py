"""Atomic file writes: a temporary file beside the target, then a rename."""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, List, Sequence, Tuple, Union

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


def publish(outputs: Sequence[Tuple[PathLike, Union[bytes, Callable[[Path], None]]]]) -> None:
    """Write several files so that they appear together: each is written in full to a temporary name
    beside its target (``bytes``, or a function that writes the given path), and only when all are
    written are they renamed into place, with SIGINT and SIGTERM held back during the renames. An
    interruption before that leaves the old files and temporaries that :func:`remove_leftovers` clears."""
    staged: List[Tuple[str, Path]] = []
    try:
        for target, content in outputs:
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_beside(target)
            staged.append((tmp, target))
            try:
                if isinstance(content, bytes):
                    with os.fdopen(fd, "wb") as f:
                        f.write(content)
                        f.flush()
                        os.fsync(f.fileno())
                else:
                    os.close(fd)
                    content(Path(tmp))
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(target)) from None
        with _signals_held():
            for tmp, target in staged:
                os.replace(tmp, target)
        staged = []
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


@contextlib.contextmanager
def _signals_held():
    """Defer SIGINT/SIGTERM to the end of the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: List[int] = []
    old = {s: signal.signal(s, lambda n, f: got.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in got:
            os.kill(os.getpid(), s)


def torch_saved(obj) -> bytes:
    """``torch.save(obj)`` as bytes, made in memory: the archive's inner folder is then always ``archive``,
    where saving to a temporary file would name it after that file and make every run's bytes differ."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
