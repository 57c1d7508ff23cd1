"""Parquet files holding audio bytes (CosyVoice's shards, Hugging Face datasets), read in place.

Indexing reads only the key column, row group by row group. An utterance is a :class:`ParquetRow`; its
audio is read with the rest of its row group's audio column, which stays cached (two row groups per
process) while the neighbouring rows are decoded, so a file is read about once and never whole.

Columns: the key (default ``utt``, CosyVoice's) and the audio (default ``audio_data``: bytes); for a
struct column such as Hugging Face's ``audio`` (``{"bytes": ..., "path": ...}``) give ``audio_field``.
Needs ``pyarrow`` (``pip install 's3tok[parquet]'``).
"""
from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Tuple, Union

PathLike = Union[str, os.PathLike]
_CACHE_GROUPS = 2


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading parquet needs pyarrow: pip install 's3tok[parquet]' (or: pip install pyarrow)") from None
    return pq


@dataclass(frozen=True)
class ParquetRow:
    """One row of a parquet file: where its audio bytes are (see :class:`s3tok.data.shards.TarMember`)."""

    path: str
    row_group: int
    index: int  # within the row group
    audio_column: str
    audio_field: Optional[str]
    size: int  # the row group's compressed bytes / its rows: a weight for balancing jobs

    @property
    def container(self) -> str:
        return self.path

    @property
    def location(self) -> str:
        return f"{self.path}#{self.row_group}/{self.index}"

    def open(self) -> BinaryIO:
        data = _row_group_audio(self.path, self.row_group, self.audio_column, self.audio_field)[self.index]
        if data is None:
            raise ValueError(f"{self.location}: no audio bytes (null)")
        out = io.BytesIO(data)
        out.name = self.location
        return out


_cache: "OrderedDict[Tuple[str, int, str, Optional[str]], List[Optional[bytes]]]" = OrderedDict()
_lock = threading.Lock()


def _row_group_audio(path: str, rg: int, column: str, field: Optional[str]) -> List[Optional[bytes]]:
    key = (path, rg, column, field)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        pq = _pyarrow_parquet()
        col = pq.ParquetFile(path).read_row_group(rg, columns=[column]).column(column)
        if field is not None:
            col = col.combine_chunks().field(field)
        values = col.to_pylist()
        _cache[key] = values
        while len(_cache) > _CACHE_GROUPS:
            _cache.popitem(last=False)
        return values


def index_parquet(path: PathLike, key_column: str = "utt", audio_column: str = "audio_data",
                  audio_field: Optional[str] = None) -> List[Tuple[str, ParquetRow]]:
    """``[(key, row)]`` of one parquet file, reading only its key column."""
    pq = _pyarrow_parquet()
    path = os.fspath(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not parquet
        raise ValueError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    names = pf.schema_arrow.names
    for col in (key_column, audio_column):
        if col not in names:
            raise ValueError(f"{path}: no column {col!r} (columns: {', '.join(names)}); name it with "
                             "--parquet_key_column / --parquet_audio_column")
    out = []
    for rg in range(pf.num_row_groups):
        meta = pf.metadata.row_group(rg)
        keys = pf.read_row_group(rg, columns=[key_column]).column(key_column).to_pylist()
        weight = max(1, meta.total_byte_size // max(1, meta.num_rows))
        out += [(str(k), ParquetRow(path, rg, i, audio_column, audio_field, weight)) for i, k in enumerate(keys)]
    return out


def index_parquet_list(list_file: PathLike, key_column: str = "utt", audio_column: str = "audio_data",
                       audio_field: Optional[str] = None) -> List[Tuple[str, ParquetRow]]:
    """All rows of the parquet files listed in ``list_file`` (one path per line, relative ones against the
    list's folder; CosyVoice's ``data.list`` is such a list); keys must be unique."""
    from s3tok.data.shards import read_path_list

    out, first = [], {}
    for path in read_path_list(list_file):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such parquet file")
        for key, row in index_parquet(path, key_column, audio_column, audio_field):
            if key in first:
                raise ValueError(f"key {key!r} is in {first[key]} and in {path}: keys must be unique")
            first[key] = path
            out.append((key, row))
    return out
