"""Kaldi ark/scp tables of int32 vectors (tokens) and float32 matrices (log-mels), via kaldi-native-io.

kaldi-native-io (Apache-2.0) does the binary format; kaldiio is never imported (its licence is for
evaluation only), but its specifier grammar is kept and files written here read back identically with
``kaldiio.load_scp`` (see ``tests/test_ark.py``):

* ``ark,scp:a.ark,a.scp`` (also ``scp,ark:a.scp,a.ark``), ``ark:a.ark``, ``scp:a.scp``, with Kaldi's
  options before the colon (``ark,t:`` text, ``ark,s,cs:`` sorted reads, ...); a plain path ending in
  ``.ark`` or ``.scp`` is taken as ``ark:`` or ``scp:``.

Writes to files are atomic: the ark and scp are written under temporary names beside their targets,
the scp lines are rewritten to point at the FINAL ark path (as given: a relative path stays relative
to the reader's working directory, as in Kaldi), then the ark and the scp are renamed into place.
Matrices are stored as Kaldi stores features: rows = frames, so a log-mel is ``[frames, 128]``.
"""
from __future__ import annotations

import logging
import errno
import os
import shutil
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from s3tok.data.lines import key_problem, split_text_lines
from s3tok.util.fsutil import temp_beside

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
#: A wspecifier/rspecifier string, or an ``(ark_path, scp_path)`` pair.
Target = Union[str, os.PathLike, Tuple[PathLike, PathLike]]

#: Kaldi's table options (``ClassifyRspecifier`` / ``ClassifyWspecifier``).
OPTIONS = frozenset({"t", "b", "f", "nf", "p", "o", "no", "s", "ns", "cs", "ncs", "bg"})


@dataclass(frozen=True)
class Specifier:
    """A parsed table specifier: the ark and/or scp path and the options, in their written order."""

    ark: Optional[str] = None
    scp: Optional[str] = None
    options: Tuple[str, ...] = ()
    scp_first: bool = False

    def rspecifier(self) -> str:
        """What a reader opens: the scp when there is one (random order of the arks), else the ark."""
        opts = "".join("," + o for o in self.options)
        return f"scp{opts}:{self.scp}" if self.scp is not None else f"ark{opts}:{self.ark}"

    def wspecifier(self, ark: Optional[PathLike] = None, scp: Optional[PathLike] = None) -> str:
        """The Kaldi wspecifier, with ``ark``/``scp`` replacing the paths when given."""
        a = os.fspath(ark) if ark is not None else self.ark
        s = os.fspath(scp) if scp is not None else self.scp
        opts = "".join("," + o for o in self.options)
        if a is None:
            raise ValueError(f"cannot write a table without an ark: {self}")
        if s is None:
            return f"ark{opts}:{a}"
        return f"scp,ark{opts}:{s},{a}" if self.scp_first else f"ark,scp{opts}:{a},{s}"


def parse_specifier(spec: str) -> Specifier:
    """Parse ``ark,scp:a.ark,a.scp``, ``scp:a.scp``, ``ark:a.ark`` (kaldiio's grammar) or a plain
    ``*.ark`` / ``*.scp`` path. Raises ``ValueError`` for anything else."""
    spec = os.fspath(spec)
    head, sep, files = spec.partition(":")
    if not sep or not re.fullmatch(r"[a-z]+(,[a-z]+)*", head):
        if spec.endswith(".ark"):
            return Specifier(ark=spec)
        if spec.endswith(".scp"):
            return Specifier(scp=spec)
        raise ValueError(f"not a table specifier: {spec!r} (expected e.g. 'ark,scp:a.ark,a.scp', "
                         "'scp:a.scp' or 'ark:a.ark')")
    types = head.split(",")
    kinds = [t for t in types if t in ("ark", "scp")]
    options = tuple(t for t in types if t not in ("ark", "scp"))
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise ValueError(f"{spec!r}: unknown option(s) {unknown}; known: {sorted(OPTIONS)}")
    if not kinds or len(kinds) != len(set(kinds)):
        raise ValueError(f"{spec!r}: expected 'ark', 'scp' or both before the ':'")
    if not files:
        raise ValueError(f"{spec!r}: no file after the ':'")
    if len(kinds) == 1:
        return Specifier(**{kinds[0]: files}, options=options)
    parts = files.split(",")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{spec!r}: 'ark,scp:' needs two paths separated by one ',' (no ',' in the paths)")
    paths = dict(zip(kinds, parts))
    return Specifier(ark=paths["ark"], scp=paths["scp"], options=options, scp_first=kinds[0] == "scp")


def _as_spec(target: Target) -> Specifier:
    if isinstance(target, tuple):
        if len(target) != 2:
            raise ValueError(f"expected (ark_path, scp_path), got {target!r}")
        return Specifier(ark=os.fspath(target[0]), scp=os.fspath(target[1]))
    return parse_specifier(os.fspath(target))


def _tmp_beside(path: Path) -> Path:
    fd, tmp = temp_beside(path)
    os.close(fd)
    return Path(tmp)


def _is_stream(path: str) -> bool:
    return path == "-" or path.endswith("|") or path.lstrip().startswith("|")


def _write_table(writer_name: str, target: Target, items: Iterable[Tuple[str, Any]],
                 convert: Callable[[str, Any], Any]) -> int:
    import kaldi_native_io

    spec = _as_spec(target)
    if spec.ark is None:
        raise ValueError(f"cannot write to {spec.rspecifier()!r}: give an ark ('ark:x.ark' or 'ark,scp:x.ark,x.scp')")
    cls = getattr(kaldi_native_io, writer_name)
    if _is_stream(spec.ark):
        with cls(spec.wspecifier()) as w:
            return _write_items(w, items, convert, spec.ark)
    ark = Path(spec.ark)
    scp = Path(spec.scp) if spec.scp is not None else None
    ark.parent.mkdir(parents=True, exist_ok=True)
    if scp is not None:
        scp.parent.mkdir(parents=True, exist_ok=True)
    tmp_ark: Optional[Path] = None
    tmp_scp: Optional[Path] = None
    try:
        tmp_ark = _tmp_beside(ark)
        tmp_scp = _tmp_beside(scp) if scp is not None else None
        writer = cls(spec.wspecifier(tmp_ark, tmp_scp))
        try:
            n = _write_items(writer, items, convert, spec.ark)
        finally:
            try:
                writer.close()
            except RuntimeError as e:
                raise write_error(ark, e) from None
        scp_text = _repoint_scp(tmp_scp, tmp_ark, spec.ark) if tmp_scp is not None else None
        os.replace(tmp_ark, ark)
        if scp is not None and tmp_scp is not None:
            with open(tmp_scp, "w", encoding="utf-8") as f:
                f.write(scp_text or "")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_scp, scp)
        return n
    finally:
        for tmp in (tmp_ark, tmp_scp):
            if tmp is not None and tmp.exists():
                tmp.unlink()


def _write_items(writer: Any, items: Iterable[Tuple[str, Any]], convert: Callable[[str, Any], Any],
                 where: str) -> int:
    n = 0
    for key, value in items:
        bad = key_problem(key) if isinstance(key, str) else f"key {key!r} is not a string"
        if bad:  # checked here, not left to kaldi-native-io, whose refusal reads like a write failure
            raise ValueError(f"{where}: invalid {bad}")
        try:
            writer.write(key, convert(key, value))
        except RuntimeError as e:  # kaldi-native-io says only "Write failure": find out why
            if "invalid key" in str(e).lower():  # Kaldi's own key check: the caller's input, not the disk
                raise ValueError(f"{where}: kaldi-native-io refuses the key {key!r}: {_first_line(e)}") from None
            raise write_error(Path(where), e) from None
        n += 1
    return n


def write_error(path: Path, e: Exception) -> OSError:
    """An ``OSError`` naming ``path`` and the likely cause of a failed table write (the C++ writer only
    reports that writing failed): no space left, or another I/O error."""
    try:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, "no space left on the device (disk full)", str(path))
    first = next((line for line in str(e).splitlines() if line.startswith("[")), str(e).splitlines()[0] if str(e) else "")
    return OSError(errno.EIO, f"write failed: {first}", str(path))


def _repoint_scp(tmp_scp: Path, tmp_ark: Path, final_ark: str) -> str:
    """The scp text with each ``key tmp_ark:offset`` turned into ``key final_ark:offset`` (lines cut at
    newlines only, as Kaldi wrote them)."""
    prefix = f"{tmp_ark}:"
    lines: List[str] = []
    for lineno, line in enumerate(split_text_lines(tmp_scp.read_text(encoding="utf-8")), 1):
        key, _, loc = line.partition(" ")
        if not loc.startswith(prefix):
            raise RuntimeError(f"{tmp_scp}:{lineno}: unexpected location {loc!r} (expected {prefix}OFFSET)")
        lines.append(f"{key} {final_ark}:{loc[len(prefix):]}")
    return "".join(line + "\n" for line in lines)


def _int32_vector(key: str, value: Any) -> List[int]:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{key}: an int32 vector must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{key}: an int32 vector needs integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{key}: values out of the int32 range")
    return arr.astype(np.int32).tolist()


def _float_matrix(key: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"{key}: a float matrix must be 2-D [frames, bins], got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _float_vector(key: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{key}: a float vector must be 1-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def write_int32_vectors(target: Target, items: Iterable[Tuple[str, Any]]) -> int:
    """Write ``(key, ints)`` items (lists, 1-D integer arrays or tensors) to ``target``:
    ``'ark,scp:a.ark,a.scp'``, ``'ark:a.ark'`` or ``(ark_path, scp_path)``. Returns the number written."""
    return _write_table("Int32VectorWriter", target, items, _int32_vector)


def write_float_matrices(target: Target, items: Iterable[Tuple[str, Any]]) -> int:
    """Write ``(key, matrix)`` items, 2-D ``[frames, bins]`` arrays or tensors stored as float32."""
    return _write_table("FloatMatrixWriter", target, items, _float_matrix)


def write_float_vectors(target: Target, items: Iterable[Tuple[str, Any]]) -> int:
    """Write ``(key, vector)`` items, 1-D arrays or tensors stored as float32 (Kaldi's x-vector tables)."""
    return _write_table("FloatVectorWriter", target, items, _float_vector)


def _read_table(reader_name: str, source: Union[str, os.PathLike], convert: Callable[[Any], np.ndarray]
                ) -> Iterator[Tuple[str, np.ndarray]]:
    import kaldi_native_io

    spec = parse_specifier(os.fspath(source))
    path = spec.scp if spec.scp is not None else spec.ark
    if path is not None and not _is_stream(path) and not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    rs = spec.rspecifier()
    try:
        reader = getattr(kaldi_native_io, reader_name)(rs)
    except Exception as e:  # noqa: BLE001 - kaldi-native-io raises RuntimeError with Kaldi's message
        raise ValueError(f"cannot open {rs!r}: {_first_line(e)}") from None
    with reader:
        while True:
            try:
                if reader.done:
                    return
                key, value = reader.key, convert(reader.value)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"cannot read {rs!r}: {_first_line(e)}") from None
            yield key, value
            try:
                reader.next()
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"cannot read {rs!r} after key {key!r}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def read_int32_vectors(source: Union[str, os.PathLike]) -> Iterator[Tuple[str, np.ndarray]]:
    """``(key, int32 1-D array)`` in table order from ``scp:x.scp``, ``ark:x.ark``, ``ark,scp:..`` (its scp)
    or a plain ``*.scp`` / ``*.ark`` path."""
    return _read_table("SequentialInt32VectorReader", source, lambda v: np.asarray(v, dtype=np.int32))


def read_float_matrices(source: Union[str, os.PathLike]) -> Iterator[Tuple[str, np.ndarray]]:
    """``(key, float32 [frames, bins] array)`` in table order. Each array is a copy: kaldi-native-io's
    sequential reader reuses the memory of the previous value."""
    return _read_table("SequentialFloatMatrixReader", source, lambda v: np.array(v, dtype=np.float32, copy=True))


def read_float_vectors(source: Union[str, os.PathLike]) -> Iterator[Tuple[str, np.ndarray]]:
    """``(key, float32 1-D array)`` in table order (copies, as :func:`read_float_matrices`)."""
    return _read_table("SequentialFloatVectorReader", source, lambda v: np.array(v, dtype=np.float32, copy=True))


def read_int32_vector(rxfilename: str) -> np.ndarray:
    """One vector from a Kaldi rxfilename such as ``tokens.1.ark:123`` (an scp value)."""
    import kaldi_native_io

    try:
        return np.asarray(kaldi_native_io.read_int32_vector(rxfilename), dtype=np.int32)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read int32 vector {rxfilename!r}: {_first_line(e)}") from None


def read_float_matrix(rxfilename: str) -> np.ndarray:
    """One matrix ``[frames, bins]`` float32 from a Kaldi rxfilename such as ``feats.1.ark:123``."""
    import kaldi_native_io

    try:
        return np.array(kaldi_native_io.FloatMatrix.read(rxfilename).numpy(), dtype=np.float32, copy=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read float matrix {rxfilename!r}: {_first_line(e)}") from None
