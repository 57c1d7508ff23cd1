"""Token tables as s3tok writes them: ``tokens.scp`` (a Kaldi int32-vector table) or ``key t1 t2 ...`` text
lines, read into ``{utt: int64 ids}``; the one reader of the parity check and the statistics."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Union

import numpy as np

from s3tok.data.lines import split_text_lines

PathLike = Union[str, os.PathLike]


def _read_tokens_txt(path: Path) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            key = fields[0]
            if key in out:
                raise ValueError(f"{path}:{lineno}: duplicate key {key!r}")
            try:
                out[key] = np.array([int(t) for t in fields[1:]], dtype=np.int64)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: token ids must be integers, got {line.strip()[:80]!r}") from None
    return out


def _read_tokens_scp(path: Path) -> Dict[str, np.ndarray]:
    from s3tok.data.ark import read_int32_vectors

    for lineno, line in enumerate(split_text_lines(path.read_text(encoding="utf-8")), 1):
        if line.strip():
            key, _, loc = line.strip().partition(" ")
            ark = loc.strip().rsplit(":", 1)[0]
            if not loc.strip() or not os.path.isfile(ark):
                raise ValueError(f"{path}:{lineno}: {key!r} points at {loc.strip()!r}, and there is no such ark "
                                 "file (relative paths are read from the current directory)")
    out: Dict[str, np.ndarray] = {}
    for key, value in read_int32_vectors(f"scp:{path}"):
        if key in out:
            raise ValueError(f"{path}: duplicate key {key!r}")
        out[key] = value.astype(np.int64)
    return out


def read_token_table(path: PathLike) -> Dict[str, np.ndarray]:
    """``{utt: int64 ids}`` from a ``tokens.scp`` (Kaldi int32-vector table, ``.scp``) or a text file of
    ``key t1 t2 ...`` lines, in file order. Raises ``ValueError`` naming the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such token file")
    return _read_tokens_scp(p) if p.suffix == ".scp" else _read_tokens_txt(p)
