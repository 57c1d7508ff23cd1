"""Checking and repairing Kaldi data directories (read and written with :mod:`s3tok.data.kaldi_dir`).

* :func:`validate_data_dir` lists problems, each naming the file and line;
* :func:`fix_data_dir` keeps the utterances present in every per-utterance file, sorts everything,
  regenerates ``spk2utt``, backs up each changed file to ``.backup/`` and writes atomically.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from s3tok.data.kaldi_dir import (MAX_PROBLEMS_PER_KIND, RECO_FILES, SPK_FILES, UTT_FILES, PathLike, Segment,
                                  _render, _segment, sort_key, utt2spk_to_spk2utt)
from s3tok.data.lines import BOM, SPLIT as _SPLIT, Line, key_problem, raw_lines as _raw_lines, split_line
from s3tok.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- validation
class _Problems:
    """Problem messages, at most :data:`MAX_PROBLEMS_PER_KIND` per (file, kind)."""

    def __init__(self) -> None:
        self.items: List[str] = []
        self._counts: Dict[Tuple[str, str], int] = {}

    def add(self, path: PathLike, lineno: Optional[int], kind: str, message: str) -> None:
        k = (str(path), kind)
        n = self._counts[k] = self._counts.get(k, 0) + 1
        if n <= MAX_PROBLEMS_PER_KIND:
            where = f"{path}:{lineno}" if lineno else f"{path}"
            self.items.append(f"{where}: {message}")

    def finish(self) -> List[str]:
        for (path, kind), n in self._counts.items():
            if n > MAX_PROBLEMS_PER_KIND:
                self.items.append(f"{path}: ... and {n - MAX_PROBLEMS_PER_KIND} more problems of this kind "
                                  f"({kind})")
        return self.items


def _check_value(name: str, ln: Line) -> Optional[str]:
    """The format problem of one line of file ``name``, or None."""
    fields = _SPLIT.split(ln.value) if ln.value else []
    if name == "text":
        return None
    if not fields:
        return f"expected 'key value', got only the key {ln.key!r}"
    if name in ("utt2spk", "utt2lang", "utt2uniq", "spk2gender") and len(fields) != 1:
        return f"expected 'key value' with a one-word value, got {ln.key} {ln.value!r}"
    if name in ("utt2dur", "reco2dur"):
        if len(fields) != 1:
            return f"expected 'key seconds', got {ln.key} {ln.value!r}"
        try:
            v = float(fields[0])
        except ValueError:
            return f"duration must be a number, got {fields[0]!r}"
        if not math.isfinite(v) or v < 0:
            return f"duration must be finite and >= 0, got {fields[0]!r}"
    if name in ("utt2num_frames", "utt2num_tokens"):
        if len(fields) != 1 or not fields[0].isdigit():
            return f"expected 'key count' with a count >= 0, got {ln.key} {ln.value!r}"
    return None


def _scan(path: Path, problems: _Problems, name: str) -> List[Line]:
    """Lines of one file; format, order and uniqueness problems recorded. Bad lines are left out."""
    out: List[Line] = []
    seen: Dict[str, int] = {}
    prev: Optional[Tuple[bytes, int]] = None
    for lineno, raw in _raw_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.add(path, lineno, "utf8", "not valid UTF-8")
            continue
        if lineno == 1 and text.startswith(BOM):  # as every reader of the file does (data/lines.py)
            logger.warning("%s: starts with a byte-order mark (U+FEFF); ignored", path)
            text = text[1:]
        if text.endswith("\r"):
            problems.add(path, lineno, "crlf", "line ends with a carriage return (CRLF line ending)")
        if not text.strip(" \t\r"):
            problems.add(path, lineno, "empty", "empty line")
            continue
        if text[0] in " \t":
            problems.add(path, lineno, "indent", "line starts with whitespace")
        key, value = split_line(text)
        ln = Line(lineno, key, value)
        bad_key = key_problem(key)
        if bad_key:
            problems.add(path, lineno, "key", bad_key)
            continue
        bad = _check_value(name, ln)
        if bad:
            problems.add(path, lineno, "format", bad)
        if key in seen:
            problems.add(path, lineno, "dup", f"duplicate key {key!r} (first at line {seen[key]})")
            continue
        sk = sort_key(key)
        if prev is not None and sk < prev[0]:
            problems.add(path, lineno, "order", f"not sorted: key {key!r} sorts before the key at line "
                                                f"{prev[1]} (LC_ALL=C order)")
        prev = (sk, lineno)
        seen[key] = lineno
        if not bad:
            out.append(ln)
    return out


def _first_lines(lines: Sequence[Line]) -> Dict[str, int]:
    return {ln.key: ln.lineno for ln in lines}


_NAMES = ("wav.scp", "segments", "text", "utt2spk", "spk2utt", "utt2dur", "reco2dur", "utt2num_frames", "utt2lang",
          "utt2uniq", "feats.scp", "tokens.scp", "utt2num_tokens", "spk2gender")
# files keyed by utterance, and whether they must cover every utterance
_UTT_FILES = (("text", True), ("utt2dur", True), ("feats.scp", False), ("utt2num_frames", False),
              ("tokens.scp", False), ("utt2num_tokens", False), ("utt2lang", False), ("utt2uniq", False))


def validate_data_dir(data_dir: PathLike, no_text: bool = False, no_feats: bool = False,
                      no_wav: bool = False, no_spk_sort: bool = False) -> List[str]:
    """Problems of a Kaldi data dir, each naming the file and line; an empty list means valid.

    Required: ``utt2spk``, ``spk2utt``, ``wav.scp`` (unless ``no_wav``), ``text`` (unless ``no_text``).
    Checked: UTF-8, no empty lines, sorted unique keys (``LC_ALL=C``), line formats; ``utt2spk`` keys equal
    the utterances (``segments`` keys, else ``wav.scp`` keys); ``segments`` recordings are ``wav.scp`` keys
    and every recording is used; ``start >= 0`` and ``start < end`` (``end`` -1 allowed); ``text`` keys are
    the utterances, every one (as Kaldi's ``validate_data_dir.sh``; with ``no_text`` a ``text`` need only hold
    utterances); at least one utterance, no required file empty; keys without control characters or line
    separators (:func:`s3tok.data.lines.key_problem`); a byte-order mark at the start of a file is ignored, as
    every reader ignores it; ``spk2utt`` is the inverse of ``utt2spk``; ``utt2dur`` covers exactly the utterances;
    ``feats.scp`` (unless ``no_feats``), ``utt2num_frames``, ``tokens.scp``, ``utt2num_tokens`` hold only
    utterances; ``utt2spk`` sorted by speaker equals it sorted by utterance (speaker-prefixed utterance
    ids; unless ``no_spk_sort``).
    """
    d = Path(data_dir)
    if not d.is_dir():
        return [f"{d}: not a directory"]
    p = _Problems()
    required = {"utt2spk", "spk2utt"} | (set() if no_wav else {"wav.scp"}) | (set() if no_text else {"text"})
    files = _read_files(d, p, required, skip={"feats.scp"} if no_feats else set())
    found = _utterances(d, files, p)
    if found is None:
        return p.finish()
    src_name, utts = found
    for name in sorted(required & set(files)):
        if not files[name] and not (d / name).stat().st_size:
            p.add(d / name, None, "empty", "empty file (required)")
    if not utts:
        p.add(d / src_name, None, "no-utts", "no utterances: the data dir is empty")
        return p.finish()
    for name, exact in ((("utt2spk", True),) if src_name != "utt2spk" else ()) + _UTT_FILES:
        if name in files:
            _check_keys(d, name, files[name], utts, src_name, exact and not (name == "text" and no_text), p)
    if "reco2dur" in files and "wav.scp" in files:
        recos = _first_lines(files["wav.scp"])
        for ln in files["reco2dur"]:
            if ln.key not in recos:
                p.add(d / "reco2dur", ln.lineno, "extra", f"recording {ln.key!r} is not in wav.scp")
    if "utt2spk" in files:
        _check_speakers(d, files, p, no_spk_sort)
    return p.finish()


def _read_files(d: Path, p: _Problems, required: Set[str], skip: Set[str]) -> Dict[str, List[Line]]:
    """The lines of every known file present (scanned for format problems); a missing required one is a
    problem."""
    files: Dict[str, List[Line]] = {}
    for name in _NAMES:
        path = d / name
        if name in skip:
            continue
        if not path.is_file():
            if name in required:
                p.add(path, None, "missing", "missing (required" + (
                    "; use --no-text if the data has no transcripts)" if name == "text" else ")"))
            continue
        files[name] = _scan(path, p, name)
    return files


def _utterances(d: Path, files: Dict[str, List[Line]], p: _Problems) -> Optional[Tuple[str, Dict[str, int]]]:
    """``(the file that defines the utterances, {utterance: line})``: ``segments`` (its recordings checked
    against ``wav.scp``), else ``wav.scp``, else ``utt2spk``; None when there is none of them."""
    if "segments" in files:
        seg_path = d / "segments"
        segs: Dict[str, Tuple[int, Segment]] = {}
        for ln in files["segments"]:
            seg, problem = _segment(ln)
            if seg is None:
                p.add(seg_path, ln.lineno, "segment", str(problem))
            else:
                segs[ln.key] = (ln.lineno, seg)
        if "wav.scp" in files:
            recos = _first_lines(files["wav.scp"])
            used: Set[str] = set()
            for utt, (lineno, seg) in segs.items():
                used.add(seg.recording)
                if seg.recording not in recos:
                    p.add(seg_path, lineno, "reco", f"recording {seg.recording!r} of {utt!r} is not in wav.scp")
            for reco, lineno in recos.items():
                if reco not in used:
                    p.add(d / "wav.scp", lineno, "unused", f"recording {reco!r} is used by no segment")
        return "segments", _first_lines(files["segments"])
    for name in ("wav.scp", "utt2spk"):
        if name in files:
            return name, _first_lines(files[name])
    return None


def _check_keys(d: Path, name: str, lines: Sequence[Line], utts: Dict[str, int], src_name: str, exact: bool,
                p: _Problems) -> None:
    """Keys of ``name`` are utterances of ``src_name``; with ``exact`` every utterance has one."""
    have = _first_lines(lines)
    for key, lineno in have.items():
        if key not in utts:
            p.add(d / name, lineno, "extra", f"utterance {key!r} is not in {src_name}")
    if exact:
        for key, lineno in utts.items():
            if key not in have:
                p.add(d / src_name, lineno, f"missing-{name}", f"utterance {key!r} has no line in {name}")


def _check_speakers(d: Path, files: Dict[str, List[Line]], p: _Problems, no_spk_sort: bool) -> None:
    """``spk2utt`` is the inverse of ``utt2spk``; speaker order agrees with utterance order."""
    utt2spk = {ln.key: ln.value for ln in files["utt2spk"]}
    utt2spk_line = _first_lines(files["utt2spk"])
    if "spk2utt" in files:
        _check_spk2utt(d, files["spk2utt"], utt2spk_to_spk2utt(utt2spk), utt2spk, utt2spk_line, p)
    if no_spk_sort:
        return
    by_utt = sorted(utt2spk, key=sort_key)
    by_spk = sorted(utt2spk, key=lambda u: (sort_key(utt2spk[u]), sort_key(u)))
    for a, b in zip(by_utt, by_spk):
        if a != b:
            p.add(d / "utt2spk", utt2spk_line[a], "spk-sort",
                  f"utt2spk is not in the same order when sorted by speaker (at {a!r}, speaker "
                  f"{utt2spk[a]!r}); make speaker ids prefixes of utterance ids, or pass --no-spk-sort")
            break


def _check_spk2utt(d: Path, lines: Sequence[Line], expected: Dict[str, List[str]], utt2spk: Mapping[str, str],
                   utt2spk_line: Mapping[str, int], p: _Problems) -> None:
    path = d / "spk2utt"
    seen: Set[str] = set()
    for ln in lines:
        spk, got = ln.key, _SPLIT.split(ln.value)
        seen.add(spk)
        want = expected.get(spk)
        if want is None:
            p.add(path, ln.lineno, "spk", f"speaker {spk!r} has no utterance in utt2spk")
            continue
        if got == want:
            continue
        got_set, want_set = set(got), set(want)
        missing = [u for u in want if u not in got_set]
        extra = [u for u in got if u not in want_set]
        if missing or extra:
            detail = ", ".join(x for x in (f"missing {missing[:5]}" if missing else "",
                                           f"not in utt2spk as this speaker's {extra[:5]}" if extra else "") if x)
            p.add(path, ln.lineno, "inverse", f"utterances of speaker {spk!r} differ from utt2spk ({detail})")
        else:
            p.add(path, ln.lineno, "inverse", f"utterances of speaker {spk!r} are not in sorted order")
    for spk, utts in expected.items():
        if spk not in seen:
            p.add(d / "utt2spk", utt2spk_line[utts[0]], "spk-missing",
                  f"speaker {spk!r} (of {utts[0]!r}) has no line in spk2utt")


# ----------------------------------------------------------------------------------------------- fixing

@dataclass
class FixReport:
    """What :func:`fix_data_dir` did."""

    data_dir: str
    utterances_before: int = 0
    utterances_after: int = 0
    removed: List[str] = field(default_factory=list)
    changed: List[str] = field(default_factory=list)
    dropped_lines: List[str] = field(default_factory=list)
    backup_dir: Optional[str] = None

    def __str__(self) -> str:
        s = (f"{self.data_dir}: kept {self.utterances_after} of {self.utterances_before} utterances"
             f" ({len(self.removed)} removed)")
        if self.changed:
            s += f"; rewrote {', '.join(self.changed)} (originals in {self.backup_dir})"
        else:
            s += "; nothing to change"
        return s


def _lenient(path: Path, name: str, dropped: List[str],
             check: Optional[Callable[[Line], Optional[str]]] = None) -> Dict[str, str]:
    """``{key: value}`` keeping the first of duplicate keys and leaving out malformed lines and keys that cannot
    name anything (noted); a byte-order mark at the start is ignored (the rewritten file has none)."""
    out: Dict[str, str] = {}
    for lineno, raw in _raw_lines(path):
        text = raw.decode("utf-8", "surrogateescape")
        if lineno == 1 and text.startswith(BOM):  # ignored, as every reader of the file does
            text = text[1:]
        if not text.strip(" \t\r"):
            continue
        key, value = split_line(text)
        ln = Line(lineno, key, value)
        bad_key = key_problem(key)
        if bad_key:
            dropped.append(f"{path}:{lineno}: {bad_key}")
            continue
        if key in out:
            dropped.append(f"{path}:{lineno}: duplicate key {key!r} (the first is kept)")
            continue
        bad = _check_value(name, ln) or (check(ln) if check else None)
        if bad:
            dropped.append(f"{path}:{lineno}: {bad}")
        else:
            out[key] = value
    return out


def fix_data_dir(data_dir: PathLike, utt_extra_files: Sequence[str] = (),
                 spk_extra_files: Sequence[str] = ()) -> FixReport:
    """Make a data dir consistent, as Kaldi's ``fix_data_dir.sh`` does.

    Keeps the utterances present in every per-utterance file (``segments`` or ``wav.scp``, and each of
    :data:`UTT_FILES` and ``utt_extra_files`` that exists), whose segment is well formed and whose recording
    is in ``wav.scp``; drops malformed and duplicate lines (the first of a key is kept); keeps the
    recordings still used; sorts every file (``LC_ALL=C``); regenerates ``spk2utt`` from ``utt2spk``.
    Each file that changes is first copied to ``<dir>/.backup/<name>``; files are written atomically.
    Raises ``ValueError`` (changing nothing) without ``wav.scp`` or when no utterance would be left.
    """
    d = Path(data_dir)
    wav_path = d / "wav.scp"
    if not wav_path.is_file():
        raise ValueError(f"{d}: no wav.scp")
    rep = FixReport(str(d), backup_dir=str(d / ".backup"))
    dropped = rep.dropped_lines
    recordings = _lenient(wav_path, "wav.scp", dropped)
    tables: Dict[str, Dict[str, str]] = {}
    seg_path = d / "segments"
    segments: Optional[Dict[str, str]] = None
    seg_reco: Dict[str, str] = {}
    if seg_path.is_file():
        def seg_check(ln: Line) -> Optional[str]:
            seg, problem = _segment(ln)
            if seg is None:
                return problem
            if seg.recording not in recordings:
                return f"recording {seg.recording!r} of {ln.key!r} is not in wav.scp"
            seg_reco[ln.key] = seg.recording
            return None

        all_segments = _lenient(seg_path, "segments", [])  # every key, for the "before" count
        segments = _lenient(seg_path, "segments", dropped, seg_check)
        before_keys = set(all_segments)
        utts = set(segments)
    else:
        before_keys = set(recordings)
        utts = set(recordings)
    all_keys = set(before_keys)
    for name in list(UTT_FILES) + list(utt_extra_files):
        if (d / name).is_file() and name not in tables:
            tables[name] = _lenient(d / name, name, dropped)
            all_keys |= set(tables[name])
            utts &= set(tables[name])
    rep.utterances_before = len(before_keys)
    rep.utterances_after = len(utts)
    rep.removed = sorted(all_keys - utts, key=sort_key)
    if not utts:
        raise ValueError(f"{d}: no utterance is in every per-utterance file "
                         f"({', '.join(['segments' if segments is not None else 'wav.scp'] + list(tables))}); "
                         "nothing changed")

    kept_recos = {seg_reco[u] for u in utts} if segments is not None else utts
    outputs = _fixed_files(d, utts, kept_recos, recordings, segments, tables, spk_extra_files, dropped)
    for line in dropped:
        logger.warning("dropped %s", line)
    rep.changed = _write_changed(d, outputs)
    logger.info("%s", rep)
    return rep


def _fixed_files(d: Path, utts: Set[str], kept_recos: Set[str], recordings: Dict[str, str],
                 segments: Optional[Dict[str, str]], tables: Dict[str, Dict[str, str]],
                 spk_extra_files: Sequence[str], dropped: List[str]) -> Dict[str, bytes]:
    """Every file of the fixed data dir, rendered sorted: the kept utterances, their recordings and speakers
    (``spk2utt`` regenerated from ``utt2spk``)."""
    outputs: Dict[str, bytes] = {}
    if segments is not None:
        outputs["segments"] = _render((u, v) for u, v in segments.items() if u in utts)
    outputs["wav.scp"] = _render((r, v) for r, v in recordings.items() if r in kept_recos)
    for name, table in tables.items():
        outputs[name] = _render((u, v) for u, v in table.items() if u in utts)
    for name in RECO_FILES:
        if (d / name).is_file():
            outputs[name] = _render((r, v) for r, v in _lenient(d / name, name, dropped).items()
                                    if r in kept_recos)
    if "utt2spk" in tables:
        utt2spk = {u: v for u, v in tables["utt2spk"].items() if u in utts}
        spk2utt = utt2spk_to_spk2utt(utt2spk)
        outputs["spk2utt"] = _render((s, " ".join(us)) for s, us in spk2utt.items())
        for name in list(SPK_FILES) + list(spk_extra_files):
            if (d / name).is_file():
                outputs[name] = _render((s, v) for s, v in _lenient(d / name, name, dropped).items()
                                        if s in spk2utt)
    elif (d / "spk2utt").is_file():
        logger.warning("%s: spk2utt without utt2spk; left as it is", d)
    return outputs


def _write_changed(d: Path, outputs: Dict[str, bytes]) -> List[str]:
    """Write the files whose content changes (each old one first copied to ``.backup/``); their names."""
    changed = []
    for name, data in outputs.items():
        path = d / name
        old = path.read_bytes() if path.is_file() else None
        if old == data:
            continue
        if old is not None:
            atomic_write_bytes(d / ".backup" / name, old)
        atomic_write_bytes(path, data)
        changed.append(name)
    return changed

