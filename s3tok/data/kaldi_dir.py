"""Kaldi data directories: reading and writing the per-utterance ``key rest-of-line`` files.

Files: ``wav.scp`` (recording -> path or ``cmd |``), optional ``segments`` (``utt reco start end``,
seconds, ``end`` -1 = end of file), ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur`` and a few more.
Keys are split from the value at the first space or tab, as Kaldi does (never at other Unicode
spaces, which transcripts may hold). All files are sorted by key in ``LC_ALL=C`` (byte) order.

* :func:`iter_utterances` gives ``(key, recording, start, end)`` for the tokenizer;
* :mod:`s3tok.data.validate` checks (``validate_data_dir``) and repairs (``fix_data_dir``) a data dir.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from s3tok.util.fsutil import atomic_write_bytes
from s3tok.data.lines import SPLIT as _SPLIT, Line, key_problem, read_lines  # noqa: F401 - read_lines re-exported
from s3tok.data.wav_scp import WavEntry, read_wav_scp

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Per-utterance files besides ``segments``/``wav.scp`` that :func:`fix_data_dir` filters and intersects.
UTT_FILES = ("text", "utt2spk", "utt2dur", "utt2num_frames", "utt2lang", "utt2uniq", "feats.scp",
             "tokens.scp", "utt2num_tokens")
#: Per-speaker files filtered to the speakers left (``spk2utt`` itself is regenerated).
SPK_FILES = ("spk2gender", "cmvn.scp")
#: Per-recording files filtered to the recordings left.
RECO_FILES = ("reco2dur", "reco2file_and_channel")
#: At most this many problems of one kind are listed per file, then a count of the rest.
MAX_PROBLEMS_PER_KIND = 20



def sort_key(key: str) -> bytes:
    """``LC_ALL=C`` order: the key's UTF-8 bytes (undecodable bytes kept through ``surrogateescape``)."""
    return key.encode("utf-8", "surrogateescape")


class Segment(NamedTuple):
    """One ``segments`` line: ``[start, end)`` seconds of ``recording``; ``end`` None = to the end."""

    recording: str
    start: float
    end: Optional[float]


class DataDirUtterance(NamedTuple):
    """What the tokenizer reads for one utterance: a whole recording (``start`` 0, ``end`` None) or a
    ``[start, end)`` seconds segment of it. (A light view; :class:`s3tok.data.sources.Utterance` is the
    tokenize stage's richer record.)"""

    key: str
    recording: WavEntry
    start: float
    end: Optional[float]


# ----------------------------------------------------------------------------------------------- parsing
# One line parser for every table (data/lines.py); these names stay importable from here.
def read_kv(path: PathLike, *, allow_empty_value: bool = False) -> Dict[str, str]:
    """``{key: rest of line}`` in file order (strict: see :func:`read_lines`)."""
    return {ln.key: ln.value for ln in read_lines(path, allow_empty_value=allow_empty_value)}


def read_text(path: PathLike) -> Dict[str, str]:
    """``text``: ``{utt: transcript}``; an utterance with an empty transcript is allowed."""
    return read_kv(path, allow_empty_value=True)


def _one_field(path: PathLike, ln: Line, what: str) -> str:
    if not ln.value or _SPLIT.search(ln.value):
        raise ValueError(f"{path}:{ln.lineno}: expected 'key {what}', got {ln.key} {ln.value!r}")
    return ln.value


def read_utt2spk(path: PathLike) -> Dict[str, str]:
    """``utt2spk``: ``{utt: speaker}``."""
    return {ln.key: _one_field(path, ln, "speaker") for ln in read_lines(path)}


def read_spk2utt(path: PathLike) -> Dict[str, List[str]]:
    """``spk2utt``: ``{speaker: [utt, ...]}`` in line order."""
    return {ln.key: _SPLIT.split(ln.value) for ln in read_lines(path)}


def _parse_float(path: PathLike, lineno: int, text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{path}:{lineno}: {what} must be finite, got {text!r}")
    return v


def read_utt2dur(path: PathLike) -> Dict[str, float]:
    """``utt2dur`` (or ``reco2dur``): ``{key: seconds}``, seconds >= 0."""
    out = {}
    for ln in read_lines(path):
        v = _parse_float(path, ln.lineno, _one_field(path, ln, "seconds"), "duration")
        if v < 0:
            raise ValueError(f"{path}:{ln.lineno}: negative duration {v}")
        out[ln.key] = v
    return out


def _segment(ln: Line) -> Tuple[Optional[Segment], Optional[str]]:
    """A ``segments`` line parsed, or the reason it is malformed."""
    fields = _SPLIT.split(ln.value) if ln.value else []
    if len(fields) != 3:
        return None, f"expected 'utt recording start end', got {(ln.key + ' ' + ln.value).strip()!r}"
    reco, s, e = fields
    try:
        start, end = float(s), float(e)
    except ValueError:
        return None, f"start and end must be seconds, got {s!r} {e!r}"
    if not (math.isfinite(start) and math.isfinite(end)):
        return None, f"start and end must be finite, got {s!r} {e!r}"
    if start < 0:
        return None, f"segment {ln.key!r} has a negative start ({s})"
    if end == -1:
        return Segment(reco, start, None), None
    if end < 0:
        return None, f"segment {ln.key!r} has a negative end ({e}); only -1 (end of file) is allowed"
    if start >= end:
        return None, f"segment {ln.key!r} has start >= end ({s} >= {e})"
    return Segment(reco, start, end), None


def parse_segment(path: PathLike, ln: Line) -> Segment:
    """One ``segments`` line ``utt reco start end``: ``start >= 0``; ``end`` > start, or -1 (end of file).
    Raises ``ValueError`` naming the file and line."""
    seg, problem = _segment(ln)
    if seg is None:
        raise ValueError(f"{path}:{ln.lineno}: {problem}")
    return seg


def read_segments(path: PathLike) -> Dict[str, Segment]:
    """``segments``: ``{utt: Segment}`` in file order (strict)."""
    return {ln.key: parse_segment(path, ln) for ln in read_lines(path)}


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> Dict[str, List[str]]:
    """Invert ``utt2spk``: speakers and each speaker's utterances in ``LC_ALL=C`` order."""
    out: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk, key=sort_key):
        out.setdefault(utt2spk[utt], []).append(utt)
    return {spk: out[spk] for spk in sorted(out, key=sort_key)}


# ----------------------------------------------------------------------------------------------- writing

def _render(rows: Iterable[Tuple[str, str]]) -> bytes:
    ordered = sorted(rows, key=lambda kv: sort_key(kv[0]))
    text = "".join((f"{k} {v}" if v != "" else k) + "\n" for k, v in ordered)
    return text.encode("utf-8", "surrogateescape")


def write_kv(path: PathLike, rows: Union[Mapping[str, object], Iterable[Tuple[str, object]]]) -> int:
    """Write ``key value`` lines sorted by key (``LC_ALL=C``), atomically. Returns the number of lines."""
    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    pairs = []
    for k, v in items:
        bad = key_problem(k)
        if bad:  # what every reader refuses is never written
            raise ValueError(f"{path}: invalid {bad}")
        pairs.append((k, str(v)))
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError(f"{path}: duplicate keys")
    atomic_write_bytes(Path(path), _render(pairs))
    return len(pairs)


def write_text(path: PathLike, text: Mapping[str, str]) -> int:
    return write_kv(path, text)


def write_utt2spk(path: PathLike, utt2spk: Mapping[str, str]) -> int:
    return write_kv(path, utt2spk)


def write_spk2utt(path: PathLike, spk2utt: Mapping[str, Sequence[str]]) -> int:
    return write_kv(path, {s: " ".join(us) for s, us in spk2utt.items()})


def write_utt2dur(path: PathLike, utt2dur: Mapping[str, float]) -> int:
    """Durations in the shortest form that reads back to the same float."""
    return write_kv(path, {k: repr(float(v)) for k, v in utt2dur.items()})


def write_segments(path: PathLike, segments: Mapping[str, Segment]) -> int:
    """``utt reco start end`` lines; an ``end`` of None is written as -1."""
    return write_kv(path, {u: f"{s.recording} {s.start!r} {-1 if s.end is None else repr(s.end)}"
                           for u, s in segments.items()})


# ----------------------------------------------------------------------------------------------- reading a dir

def iter_utterances(data_dir: PathLike) -> Iterator[DataDirUtterance]:
    """The utterances of a data dir in file order: the ``segments`` lines (cut from ``wav.scp``
    recordings) when there is one, else each ``wav.scp`` recording whole. Raises ``ValueError`` naming the
    file and line for malformed input or a segment whose recording is not in ``wav.scp``."""
    d = Path(data_dir)
    wav_scp = d / "wav.scp"
    if not wav_scp.is_file():
        raise ValueError(f"{d}: no wav.scp")
    recordings = read_wav_scp(wav_scp)
    seg_path = d / "segments"
    if not seg_path.is_file():
        for e in recordings:
            yield DataDirUtterance(e.key, e, 0.0, None)
        return
    by_key = {e.key: e for e in recordings}
    for ln in read_lines(seg_path):
        seg = parse_segment(seg_path, ln)
        if seg.recording not in by_key:
            raise ValueError(f"{seg_path}:{ln.lineno}: recording {seg.recording!r} of {ln.key!r} is not in "
                             f"{wav_scp}")
        yield DataDirUtterance(ln.key, by_key[seg.recording], seg.start, seg.end)


