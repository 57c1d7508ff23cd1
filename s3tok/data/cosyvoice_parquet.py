"""CosyVoice's training shards: parquet files named ``parquet_%09d.tar`` (the name says tar, the content is
parquet), each with ``utt2parquet_%09d.json`` / ``spk2parquet_%09d.json`` (``{key: shard path}``), listed in
``data.list``, ``utt2data.list`` and ``spk2data.list`` (one path a line), as CosyVoice's
``tools/make_parquet_list.py`` writes them and ``cosyvoice/dataset/processor.py`` (``parquet_opener``) reads
them: ``pq.ParquetFile(path).iter_batches(batch_size=64)``, ``.to_pandas()``, one ``dict(df.loc[i])`` a row.

Columns, in this order: ``utt``, ``audio_data`` (the audio file's bytes, decoded by ``torchaudio.load``),
``wav`` (where it came from), ``text``, ``spk``, then those given: ``utt_embedding`` and ``spk_embedding``
(list<double>), ``speech_token`` (list<int64>; ``to_pandas`` makes it a numpy array, whose ``.shape``
CosyVoice's ``compute_fbank`` uses) and ``instruct`` (string, CosyVoice3).

Row groups hold :data:`ROW_GROUP_ROWS` rows, the reader's batch (fewer when their audio passes
:data:`ROW_GROUP_BYTES`), so that reading a shard holds one small row group of audio at a time, not the
whole file. Needs ``pyarrow`` (``pip install 's3tok[parquet]'``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from s3tok.util.fsutil import temp_beside

PathLike = Union[str, os.PathLike]

REQUIRED = ("utt", "audio_data", "wav", "text", "spk")
OPTIONAL = ("utt_embedding", "spk_embedding", "speech_token", "instruct")
COLUMNS = REQUIRED + OPTIONAL
ROW_GROUP_ROWS = 64
#: A row group also ends before its audio passes this many bytes (one longer row is a row group alone).
ROW_GROUP_BYTES = 256 << 20
#: The most bytes one ``audio_data`` value can hold (Arrow's binary arrays have 32-bit offsets).
MAX_AUDIO_BYTES = (1 << 31) - 2
LISTS = ("data.list", "utt2data.list", "spk2data.list")

CHECK_PYARROW = "make-parquet needs pyarrow: pip install 's3tok[parquet]' (or: pip install pyarrow)"


def shard_name(i: int) -> str:
    return f"parquet_{i:09d}.tar"


def utt2parquet_name(i: int) -> str:
    return f"utt2parquet_{i:09d}.json"


def spk2parquet_name(i: int) -> str:
    return f"spk2parquet_{i:09d}.json"


def pyarrow_modules():
    """``(pyarrow, pyarrow.parquet)``; a ``ValueError`` saying how to install them when missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(CHECK_PYARROW) from None
    return pa, pq


def columns_for(optional: Iterable[str]) -> List[str]:
    """The required columns and the given optional ones, in CosyVoice's order."""
    wanted = set(optional)
    unknown = wanted - set(OPTIONAL)
    if unknown:
        raise ValueError(f"unknown column(s) {sorted(unknown)}; optional ones are {', '.join(OPTIONAL)}")
    return [c for c in COLUMNS if c in REQUIRED or c in wanted]


def schema(columns: Sequence[str]):
    """The pyarrow schema of ``columns`` (from :func:`columns_for`)."""
    pa, _ = pyarrow_modules()
    types = {"utt": pa.string(), "audio_data": pa.binary(), "wav": pa.string(), "text": pa.string(),
             "spk": pa.string(), "utt_embedding": pa.list_(pa.float64()), "spk_embedding": pa.list_(pa.float64()),
             "speech_token": pa.list_(pa.int64()), "instruct": pa.string()}
    return pa.schema([pa.field(c, types[c]) for c in columns])


def _batches(rows: Iterable[Mapping[str, object]], size: int,
             max_bytes: int) -> Iterator[List[Mapping[str, object]]]:
    """``size`` rows at a time, fewer when their ``audio_data`` would pass ``max_bytes``."""
    batch: List[Mapping[str, object]] = []
    held = 0
    for row in rows:
        n = len(row.get("audio_data") or b"")
        if batch and held + n > max_bytes:
            yield batch
            batch, held = [], 0
        batch.append(row)
        held += n
        if len(batch) == size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def _storable(batch: List[Mapping[str, object]], columns: Sequence[str], sch,
              reject: Optional[Callable[[Mapping[str, object], str], None]]) -> Optional[Any]:
    """The pyarrow table of ``batch``; when a value cannot be stored (too large, out of its type's range), the
    table of the rows that can, each other row given to ``reject(row, reason)`` (raised without ``reject``)."""
    pa, _ = pyarrow_modules()

    def table(rows):
        return pa.table({c: pa.array([r[c] for r in rows], type=sch.field(c).type) for c in columns}, schema=sch)

    try:
        return table(batch)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        if reject is None:
            raise
    good = []
    for row in batch:
        try:
            table([row])
            good.append(row)
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as e:
            reject(row, f"cannot be stored ({type(e).__name__}: {' '.join(str(e).split())})")
    return table(good) if good else None


def write_shard(path: PathLike, rows: Iterable[Mapping[str, object]], columns: Sequence[str],
                reject: Optional[Callable[[Mapping[str, object], str], None]] = None) -> int:
    """Write ``rows`` (dicts holding every column) to the parquet file ``path``: to a temporary name beside
    it, fsynced, then renamed. Rows are consumed as they come, :data:`ROW_GROUP_ROWS` at a time (fewer past
    :data:`ROW_GROUP_BYTES` of audio). A row with a value that cannot be stored goes to ``reject(row, reason)``
    and the others are written. Returns the number of rows written; with none, nothing is written (``path``
    is left as it was) and 0 is returned."""
    _, pq = pyarrow_modules()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sch = schema(columns)
    fd, tmp = temp_beside(path)
    os.close(fd)
    n = 0
    try:
        writer = None
        try:
            for batch in _batches(rows, ROW_GROUP_ROWS, ROW_GROUP_BYTES):
                table = _storable(batch, columns, sch, reject)
                if table is None:
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(tmp, sch)
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                n += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if n:
            _fsync(tmp)
            os.replace(tmp, path)
    except OSError as e:  # name the shard: pyarrow's message alone may not say which file
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


def _fsync(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(path: PathLike) -> List[dict]:
    """Every row of a shard as a dict of Python values (for checks; CosyVoice itself reads with pandas)."""
    _, pq = pyarrow_modules()
    return [row for batch in pq.ParquetFile(os.fspath(path)).iter_batches(batch_size=ROW_GROUP_ROWS)
            for row in batch.to_pylist()]


def shard_files(output_dir: PathLike, i: int) -> Tuple[Path, Path, Path]:
    """``(parquet, utt2parquet, spk2parquet)`` paths of shard ``i`` in ``output_dir``."""
    d = Path(output_dir)
    return d / shard_name(i), d / utt2parquet_name(i), d / spk2parquet_name(i)
