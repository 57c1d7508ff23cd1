"""Parquet files holding audio bytes (CosyVoice's shards, Hugging Face datasets), read in place.

Indexing reads only the key column, row group by row group, and checks the columns' types and every key.
An utterance is a :class:`ParquetRow`; its audio is read from its row group's audio column in record
batches of about :data:`AUDIO_BATCH_BYTES`, the last few kept (for two row groups per process), so that the
rows, asked for in about file order, are read once and memory stays bounded however large a row group is (a
file written with pyarrow's defaults is one row group).

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
from typing import Any, BinaryIO, Iterator, List, Optional, Tuple, Union

from s3tok.data.lines import BAD_KEY_CHARS

PathLike = Union[str, os.PathLike]
_CACHE_GROUPS = 2  # row groups being read at a time (a job reads its files one after the other)
AUDIO_BATCH_BYTES = 16 << 20  # audio bytes per record batch read from a row group (about; at least one row)
_WINDOW_BYTES = 4 * AUDIO_BATCH_BYTES  # batches kept per row group up to this size (the last two always)
_READ_BUFFER = 1 << 20  # read the file through a buffer of this size, not a row group's column chunk at once


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading parquet needs pyarrow: pip install 's3tok[parquet]' (or: pip install pyarrow)") from None
    return pq


def _stamp(path: str) -> Tuple[int, int]:
    """``(size, mtime_ns)`` of ``path``: a file that changes after it was indexed has another."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class ParquetRow:
    """One row of a parquet file: where its audio bytes are (see :class:`s3tok.data.shards.TarMember`)."""

    path: str
    row_group: int
    index: int  # within the row group
    audio_column: str
    audio_field: Optional[str]
    size: int  # the row group's compressed bytes / its rows: a weight for balancing jobs
    stamp: Optional[Tuple[int, int]] = None  # the file's (size, mtime_ns) when indexed; None: not checked

    @property
    def container(self) -> str:
        return self.path

    @property
    def location(self) -> str:
        return f"{self.path}#{self.row_group}/{self.index}"

    def open(self) -> BinaryIO:
        """The row's audio bytes as a file object named ``file#group/row``; ``ValueError`` for a null cell or a
        file that changed since it was indexed (its rows may be others now)."""
        if self.stamp is not None and _stamp(self.path) != self.stamp:
            raise ValueError(f"{self.location}: the file changed after it was indexed; rerun to index it again")
        data = _audio_value(self)
        if data is None:
            raise ValueError(f"{self.location}: no audio bytes (null)")
        out = io.BytesIO(data)
        out.name = self.location
        return out


class _GroupReader:
    """The audio column of one row group, read forward in record batches; the last two batches are kept, and
    older ones up to :data:`_WINDOW_BYTES` (decode threads ask for rows a little out of order). A row before
    those is read alone, the forward reading staying where it is; an error while reading forward is kept and
    given to every later row of the group without reading it again."""

    def __init__(self, row: ParquetRow):
        self.row = row
        self._stream = self._batches()
        self._window: List[Tuple[int, Any]] = []  # (first row, audio array) of the batches kept
        self._next = 0  # the first row of the next batch
        self._error: Optional[str] = None

    def _batches(self) -> Iterator[Any]:
        pf = _pyarrow_parquet().ParquetFile(self.row.path, pre_buffer=False, buffer_size=_READ_BUFFER)
        meta = pf.metadata.row_group(self.row.row_group)
        rows = max(1, AUDIO_BATCH_BYTES // max(1, meta.total_byte_size // max(1, meta.num_rows)))
        return pf.iter_batches(batch_size=rows, row_groups=[self.row.row_group], columns=[self.row.audio_column])

    def _read_error(self, first: int, e: Exception) -> str:
        return (f"{self.row.path}#{self.row.row_group}: cannot read the audio of rows {first} on "
                f"({type(e).__name__}: {' '.join(str(e).split())})")

    def value(self, index: int) -> Optional[bytes]:
        if self._window and index < self._window[0][0]:
            return self._read_alone(index)
        while True:
            for first, arr in self._window:
                if first <= index < first + len(arr):
                    return _cell(arr[index - first], self.row.audio_field)
            if self._error is not None:
                raise ValueError(self._error)
            try:
                batch = next(self._stream)
            except StopIteration:
                raise ValueError(f"{self.row.path}#{self.row.row_group}: no row {index} (the group has "
                                 f"{self._next})") from None
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
                self._error = self._read_error(self._next, e)
                raise ValueError(self._error) from None
            self._window.append((self._next, batch.column(0)))
            self._next += batch.num_rows
            while len(self._window) > 2 and sum(a.nbytes for _, a in self._window) > _WINDOW_BYTES:
                self._window.pop(0)

    def _read_alone(self, index: int) -> Optional[bytes]:
        """A row before the batches kept (rare: a thread far behind the others), from a reading of its own."""
        first = 0
        try:
            for batch in self._batches():
                if index < first + batch.num_rows:
                    return _cell(batch.column(0)[index - first], self.row.audio_field)
                first += batch.num_rows
        except Exception as e:  # noqa: BLE001 - as in value()
            raise ValueError(self._read_error(first, e)) from None
        raise ValueError(f"{self.row.path}#{self.row.row_group}: no row {index} (the group has {first})")


def _cell(value: Any, field: Optional[str]) -> Optional[bytes]:
    """The bytes of one Arrow cell (of the struct's ``field`` when given); None for a null."""
    if field is not None:
        if not value.is_valid:
            return None
        value = value[field]
    return value.as_py()


_readers: "OrderedDict[Tuple[str, Optional[Tuple[int, int]], int, str, Optional[str]], _GroupReader]" = OrderedDict()
_lock = threading.Lock()


def _audio_value(row: ParquetRow) -> Optional[bytes]:
    key = (row.path, row.stamp, row.row_group, row.audio_column, row.audio_field)
    with _lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = _GroupReader(row)
            while len(_readers) > _CACHE_GROUPS:
                _readers.popitem(last=False)
        _readers.move_to_end(key)
        return reader.value(row.index)


def _is_bytes(t) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or getattr(pa.types, "is_binary_view", bool)(t)


def check_audio_type(path: str, schema, column: str, field: Optional[str]) -> None:
    """``ValueError`` in one line, naming the file and column, unless ``column`` holds audio bytes: binary,
    or (with ``field``) a struct whose ``field`` is binary."""
    import pyarrow as pa

    t = schema.field(column).type
    struct = pa.types.is_struct(t)
    fields = [t.field(i).name for i in range(t.num_fields)] if struct else []
    if field is None:
        if _is_bytes(t):
            return
        hint = (f"; it is a struct: name its bytes field with --parquet_audio_field (fields: {', '.join(fields)})"
                if struct else "")
        raise ValueError(f"{path}: column {column!r} is {t}, expected binary (the audio files' bytes){hint}")
    if not struct:
        hint = "; drop --parquet_audio_field for a binary column" if _is_bytes(t) else ""
        raise ValueError(f"{path}: column {column!r} is {t}, expected a struct with a binary field {field!r} "
                         f"(--parquet_audio_field {field}){hint}")
    if field not in fields:
        raise ValueError(f"{path}: column {column!r} has no field {field!r} (fields: {', '.join(fields)}); "
                         "name the bytes field with --parquet_audio_field")
    ft = t.field(field).type
    if not _is_bytes(ft):
        raise ValueError(f"{path}: field {field!r} of column {column!r} is {ft}, expected binary (the audio "
                         "files' bytes)")


def _key_problem(value: Any) -> Optional[str]:
    """Why a key column's value cannot name an utterance (Kaldi: a non-empty string without whitespace or
    control characters), or None. Integers are keys (as their decimal string)."""
    if value is None:
        return "the key is null"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"the key {value!r} is a {type(value).__name__}, not a string"
    if isinstance(value, str):
        if not value:
            return "the key is empty"
        if BAD_KEY_CHARS.search(value):
            return f"the key {value!r} contains whitespace or a control character"
    return None


def index_parquet(path: PathLike, key_column: str = "utt", audio_column: str = "audio_data",
                  audio_field: Optional[str] = None) -> List[Tuple[str, ParquetRow]]:
    """``[(key, row)]`` of one parquet file, reading only its key column. ``ValueError`` in one line, naming
    the file (and the row), for a file that is not parquet, a missing column, an audio column that does not
    hold bytes, or a key that is null, empty or has whitespace."""
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
    check_audio_type(path, pf.schema_arrow, audio_column, audio_field)
    stamp = _stamp(path)
    out = []
    for rg in range(pf.num_row_groups):
        meta = pf.metadata.row_group(rg)
        keys = pf.read_row_group(rg, columns=[key_column]).column(key_column).to_pylist()
        weight = max(1, meta.total_byte_size // max(1, meta.num_rows))
        for i, k in enumerate(keys):
            problem = _key_problem(k)
            if problem is not None:
                raise ValueError(f"{path}#{rg}/{i}: {problem} (column {key_column!r}); keys name the utterances: "
                                 "one word of printable characters")
            out.append((str(k), ParquetRow(path, rg, i, audio_column, audio_field, weight, stamp)))
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
