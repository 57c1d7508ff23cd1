"""``wav.scp``: one ``key location`` per line; the location is the rest of the line.

A location ending in ``|`` is a shell pipe whose standard output is the audio file (Kaldi's
convention); anything else is a path, spaces allowed.
"""
from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, List, Union

from s3tok.util.fsutil import atomic_write_lines

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au", ".sph")


@dataclass(frozen=True)
class WavEntry:
    """One ``wav.scp`` line."""

    key: str
    location: str

    @property
    def is_pipe(self) -> bool:
        return self.location.endswith("|")


def read_wav_scp(path: Union[str, os.PathLike]) -> List[WavEntry]:
    """Parse a ``wav.scp`` (blank lines skipped); raise ``ValueError`` naming the file and line for invalid
    UTF-8, a line without a location, or a duplicate key."""
    from s3tok.data.lines import read_lines

    return [WavEntry(ln.key, ln.value) for ln in read_lines(path, skip_blank=True, value_name="location")]


def open_wav_entry(entry: WavEntry, base_dir: Union[str, os.PathLike, None] = None,
                   timeout: float = 600.0) -> Union[str, BinaryIO]:
    """A path (relative ones resolved against ``base_dir``) or, for a pipe, its output as a file object."""
    if entry.is_pipe:
        return run_pipe(entry.location[:-1].strip(), timeout)
    p = Path(entry.location)
    if base_dir is not None and not p.is_absolute():
        p = Path(base_dir) / p
    return str(p)


#: bytes of a pipe command's stderr kept for the message (the tail; the rest is read and dropped)
STDERR_TAIL_BYTES = 65536


def run_pipe(cmd: str, timeout: float = 600.0) -> BinaryIO:
    """The standard output of a ``wav.scp`` pipe, read up to :func:`~s3tok.data.audio.max_pipe_bytes`: a pipe
    that writes more (``yes |``) or runs past ``timeout`` (writing, or after closing its output) is killed
    and reported, naming the command. Its stdin is ``/dev/null`` (never s3tok's own), and only the last
    :data:`STDERR_TAIL_BYTES` of its stderr are kept, for the message."""
    from s3tok.data.audio import max_pipe_bytes

    limit = max_pipe_bytes()
    deadline = time.monotonic() + timeout
    timed_out = threading.Event()
    out = io.BytesIO()
    with subprocess.Popen(cmd, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True) as proc:
        tail = bytearray()
        drain = threading.Thread(target=_keep_tail, args=(proc.stderr, tail), daemon=True)
        drain.start()
        timer = threading.Timer(timeout, lambda: (timed_out.set(), _kill_group(proc)))
        timer.start()
        try:
            while out.tell() <= limit:
                block = proc.stdout.read(1 << 20)
                if not block:
                    break
                out.write(block)
        finally:
            timer.cancel()
        too_much = out.tell() > limit
        if too_much:
            _kill_group(proc)
        try:  # the output is closed; the runaway limit still holds for the rest of the command
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out.set()
            _kill_group(proc)
            code = proc.wait()
        drain.join(timeout=5.0)  # stderr closes with the command (a straggler holding it: give up on it)
        lines = bytes(tail).decode("utf-8", "replace").strip().splitlines()
    if too_much:
        raise OSError(f"pipe command wrote over {limit} bytes (the --max_duration limit) and was killed: {cmd!r}")
    if timed_out.is_set():
        raise OSError(f"pipe command ran past {timeout:.0f} s and was killed: {cmd!r}")
    if code != 0:
        raise OSError(f"pipe command failed with code {code}: {cmd!r}" + (f": {lines[-1][-300:]}" if lines else ""))
    if not out.tell():
        raise OSError(f"pipe command wrote no audio: {cmd!r}")
    out.seek(0)
    out.name = f"pipe {cmd!r}"
    return out


def _keep_tail(stream: BinaryIO, tail: bytearray) -> None:
    """Read ``stream`` to its end, keeping only its last :data:`STDERR_TAIL_BYTES` in ``tail``."""
    try:
        while True:
            block = stream.read1(1 << 16) if hasattr(stream, "read1") else stream.read(1 << 16)
            if not block:
                return
            tail += block
            if len(tail) > STDERR_TAIL_BYTES:
                del tail[:len(tail) - STDERR_TAIL_BYTES]
    except (OSError, ValueError):  # closed under us when the command is abandoned
        return


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the pipe's shell and everything it started (it runs in its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def scan_audio_dir(audio_dir: Union[str, os.PathLike]) -> List[WavEntry]:
    """Audio files under ``audio_dir`` (recursive), sorted by key; key = relative path without suffix,
    ``/`` between folders and ``_`` for spaces. Two files giving one key are an error."""
    root = Path(audio_dir)
    if not root.is_dir():
        raise ValueError(f"{audio_dir}: not a directory")
    files = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in AUDIO_SUFFIXES or p.is_dir():
            continue
        if not p.is_file():  # a broken link, a FIFO: kept, so that it fails as an utterance with its reason
            what = "broken symbolic link" if p.is_symlink() and not p.exists() else "not a regular file"
            logger.warning("%s: %s; it will fail (utt2fail)", p, what)
        files.append(p)
    seen = {}
    for f in files:
        key = str(f.relative_to(root).with_suffix("")).replace(os.sep, "/").replace(" ", "_")
        if key in seen:
            raise ValueError(f"{audio_dir}: {f} and {seen[key]} give the same key {key!r}")
        seen[key] = f
    if not seen:
        raise ValueError(f"{audio_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return [WavEntry(k, str(seen[k].resolve() if seen[k].exists() else seen[k].absolute())) for k in sorted(seen)]


def write_wav_scp(entries: Iterable[WavEntry], path: Union[str, os.PathLike]) -> int:
    """Write ``key location`` lines sorted by key (``LC_ALL=C`` order) to a temporary name, then rename."""
    rows = sorted(entries, key=lambda e: e.key.encode("utf-8"))
    atomic_write_lines(path, (f"{e.key} {e.location}" for e in rows))
    return len(rows)
