"""Kaldi tables (ark + scp) written through kaldi-native-io, renamed into place only when complete."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Tuple

from ..fsutil import atomic_write_lines

WRITERS = {"int32_vector": "Int32VectorWriter", "float_matrix": "FloatMatrixWriter"}


def write_table(kind: str, ark: Path, scp: Path, rows: Iterable[Tuple[str, object]]) -> int:
    """Write ``(key, value)`` rows as ``ark`` + ``scp``; the scp points at the final ark path.

    ``kind``: ``int32_vector`` (lists of ints) or ``float_matrix`` (2-D float32 arrays). Both files are
    written under temporary names first. Returns the number of rows.
    """
    import kaldi_native_io

    if kind not in WRITERS:
        raise ValueError(f"unknown table kind {kind!r}; one of {sorted(WRITERS)}")
    ark, scp = Path(ark), Path(scp)
    ark.parent.mkdir(parents=True, exist_ok=True)
    tmp_ark = ark.with_name(f".{ark.name}.tmp")
    tmp_scp = scp.with_name(f".{scp.name}.tmp")
    writer = getattr(kaldi_native_io, WRITERS[kind])(f"ark,scp:{tmp_ark},{tmp_scp}")
    n = 0
    try:
        for key, value in rows:
            writer.write(key, value)
            n += 1
    finally:
        writer.close()
    lines = []
    for line in tmp_scp.read_text(encoding="utf-8").splitlines():
        key, loc = line.split(" ", 1)
        lines.append(f"{key} {ark}:{loc.rsplit(':', 1)[1]}")
    os.replace(tmp_ark, ark)
    atomic_write_lines(scp, lines)
    tmp_scp.unlink()
    return n
