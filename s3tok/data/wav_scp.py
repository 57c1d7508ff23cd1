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
from typing import BinaryIO, List, Union

logger = logging.getLogger(__name__)


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
