"""``wav.scp``: one ``key location`` per line; the location is the rest of the line.

A location ending in ``|`` is a shell pipe whose standard output is the audio file (Kaldi's
convention); anything else is a path, spaces allowed.
"""
from __future__ import annotations

import io
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, List, Union

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
    """Parse a ``wav.scp``; raise ``ValueError`` naming the file and line for malformed or duplicate keys."""
    entries: List[WavEntry] = []
    seen = {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'key location', got {line!r}")
            key, location = parts[0], parts[1].strip()
            if key in seen:
                raise ValueError(f"{path}:{lineno}: duplicate key {key!r} (first at line {seen[key]})")
            seen[key] = lineno
            entries.append(WavEntry(key, location))
    return entries


def open_wav_entry(entry: WavEntry, base_dir: Union[str, os.PathLike, None] = None,
                   timeout: float = 600.0) -> Union[str, BinaryIO]:
    """A path (relative ones resolved against ``base_dir``) or, for a pipe, its output as a file object."""
    if entry.is_pipe:
        cmd = entry.location[:-1].strip()
        proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OSError(f"pipe command failed with code {proc.returncode}: {cmd!r}"
                          + (f": {err[-1]}" if err else ""))
        if not proc.stdout:
            raise OSError(f"pipe command wrote no audio: {cmd!r}")
        return io.BytesIO(proc.stdout)
    p = Path(entry.location)
    if base_dir is not None and not p.is_absolute():
        p = Path(base_dir) / p
    return str(p)


def scan_audio_dir(audio_dir: Union[str, os.PathLike]) -> List[WavEntry]:
    """Audio files under ``audio_dir`` (recursive), sorted by key; key = relative path without suffix,
    ``/`` between folders and ``_`` for spaces. Two files giving one key are an error."""
    root = Path(audio_dir)
    if not root.is_dir():
        raise ValueError(f"{audio_dir}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    seen = {}
    for f in files:
        key = str(f.relative_to(root).with_suffix("")).replace(os.sep, "/").replace(" ", "_")
        if key in seen:
            raise ValueError(f"{audio_dir}: {f} and {seen[key]} give the same key {key!r}")
        seen[key] = f
    if not seen:
        raise ValueError(f"{audio_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return [WavEntry(k, str(seen[k].resolve())) for k in sorted(seen)]


def write_wav_scp(entries: Iterable[WavEntry], path: Union[str, os.PathLike]) -> int:
    """Write ``key location`` lines sorted by key (``LC_ALL=C`` order) to a temporary name, then rename."""
    rows = sorted(entries, key=lambda e: e.key.encode("utf-8"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in rows:
            f.write(f"{e.key} {e.location}\n")
    os.replace(tmp, path)
    return len(rows)
