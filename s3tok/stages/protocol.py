"""The job protocol every stage follows, written once.

A stage declares a :class:`Stage`: its name (the completion marker ``.done/<name>[.J]``) and the files one
job writes (``base[.J]ext``). Then:

- :func:`begin` skips a job whose marker says it is done for these inputs and whose outputs still have the
  sizes they were written with, and otherwise clears the marker and the temporaries an interrupted run left;
- the stage does its work and writes its outputs (atomically, each under a temporary name);
- :func:`finish` writes the marker last, with the inputs digest and every output's size;
- a merge asks :func:`unfinished` which jobs lack a valid marker, reads the jobs' tables with
  :func:`read_tables`, checks :func:`check_coverage` (every input key exactly once) and publishes its own
  outputs together (``util.fsutil.publish``).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from s3tok.data.sources import Utterance
from s3tok.stages.journal import LineJournal, clear_done, done_info, mark_done
from s3tok.util.fsutil import remove_leftovers

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class MergeError(ValueError):
    """Job outputs that cannot be merged: unfinished jobs, duplicate or missing keys, other models."""


@dataclass(frozen=True)
class Stage:
    """A stage's name and the files each of its jobs writes, as ``{role: (base, ext)}``."""

    name: str
    outputs: Dict[str, Tuple[str, str]]

    def files(self, output_dir: PathLike, job: Optional[int] = None) -> "JobPaths":
        return JobPaths(self, Path(output_dir), job)

    def jobs(self, output_dir: PathLike, num_jobs: int) -> List["JobPaths"]:
        """Jobs 1..N, or the single unsplit run when ``num_jobs`` is 0."""
        return [self.files(output_dir)] if num_jobs == 0 else [self.files(output_dir, j) for j in
                                                               range(1, num_jobs + 1)]


@dataclass(frozen=True)
class JobPaths:
    """The files of one job of a stage: ``output_dir/base[.J]ext`` (no ``.J`` for an unsplit run)."""

    stage: Stage
    output_dir: Path
    job: Optional[int] = None

    def path(self, base: str, ext: str = "") -> Path:
        j = f".{self.job}" if self.job is not None else ""
        return self.output_dir / f"{base}{j}{ext}"

    def __getitem__(self, role: str) -> Path:
        return self.path(*self.stage.outputs[role])

    @property
    def outputs(self) -> List[Path]:
        return [self[r] for r in self.stage.outputs]


def digest(fingerprints: Iterable[str]) -> str:
    """SHA-256 over the inputs' fingerprints, in order: what a marker's ``inputs`` holds."""
    return hashlib.sha256("".join(f"{p}\n" for p in fingerprints).encode("ascii")).hexdigest()


def input_fingerprint(u: Utterance, base_dir: Union[None, str, os.PathLike] = None) -> str:
    """16 hex digits that change when what ``u`` points to changes: its ``wav.scp`` location or feats
    specifier, its segment, and the size and mtime of the file behind it (a pipe: its command only)."""
    loc = u.recording.location if u.recording else ""
    path = u.feats.rsplit(":", 1)[0] if u.feats else (loc if u.recording and not u.recording.is_pipe else "")
    if u.member is not None:
        loc, path = u.member.location, u.member.container
    stat = "-"
    if path:
        p = Path(path)
        if base_dir is not None and not p.is_absolute():
            p = Path(base_dir) / p
        try:
            st = p.stat()
            stat = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stat = "missing"
    text = f"{u.key}\t{loc}\t{u.start}\t{u.end}\t{u.feats}\t{stat}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def keys_digest(utts: Sequence[Utterance], base_dir: Union[None, str, os.PathLike] = None) -> str:
    """SHA-256 over the job's keys and inputs (see :func:`input_fingerprint`): a finished job is reused
    only for the same inputs."""
    return digest(input_fingerprint(u, base_dir) for u in utts)


def begin(files: JobPaths, inputs: str, same_maker: Callable[[], bool] = lambda: True,
          resume: bool = True) -> Optional[dict]:
    """The marker's info when the job is done for ``inputs`` (and ``same_maker()``), its outputs intact;
    None otherwise, after clearing the marker and the temporaries of an interrupted run."""
    info = done_info(files.output_dir, files.stage.name, files.job) if resume else None
    if info is not None:
        if info.get("inputs") == inputs and same_maker():
            logger.info("%s: %s job %s already done; skipping", files.output_dir, files.stage.name, files.job)
            return info
        logger.info("%s: %s job %s was done with other inputs or another model; redoing it", files.output_dir,
                    files.stage.name, files.job)
    clear_done(files.output_dir, files.stage.name, files.job)
    remove_leftovers(files.output_dir, files.outputs)
    return None


def finish(files: JobPaths, inputs: str, info: dict) -> None:
    """The marker, written last: ``info``, the inputs digest and the size of every output."""
    mark_done(files.output_dir, files.stage.name, files.job, {**info, "inputs": inputs}, outputs=files.outputs)


def unfinished(stage: Stage, output_dir: PathLike, num_jobs: int) -> List[int]:
    """Jobs (1-based; 1 for an unsplit run) without a valid marker."""
    return [f.job or 1 for f in stage.jobs(output_dir, num_jobs)
            if done_info(f.output_dir, stage.name, f.job) is None]


def require_finished(stage: Stage, output_dir: PathLike, num_jobs: int) -> None:
    missing = unfinished(stage, output_dir, num_jobs)
    if missing:
        raise MergeError(f"{output_dir}: {stage.name} job(s) {missing} not finished (no valid completion marker); "
                         "rerun them first")


def read_pairs(path: Path) -> List[Tuple[str, str]]:
    """``key rest`` lines of a table a job wrote (cut at newlines only; blank lines skipped; duplicates are for
    :func:`check_coverage` to report)."""
    from s3tok.data.lines import split_line, split_text_lines

    rows = []
    for line in split_text_lines(path.read_text(encoding="utf-8")):
        if line.strip():
            rows.append(split_line(line))
    return rows


def read_tables(stage: Stage, output_dir: PathLike, num_jobs: int, role: str) -> List[Tuple[str, str]]:
    """The ``role`` table of every job, concatenated in job order."""
    return [row for f in stage.jobs(output_dir, num_jobs) for row in read_pairs(f[role])]


def check_coverage(where: PathLike, input_keys: Sequence[str], parts: Sequence[Tuple[str, Sequence[tuple]]]) -> None:
    """Every input key exactly once across ``parts`` (``(name, rows)``), nothing else; else MergeError."""
    seen: Dict[str, str] = {}
    for name, rows in parts:
        for row in rows:
            key = row[0]
            if key in seen:
                raise MergeError(f"{where}: key {key!r} appears twice ({seen[key]} and {name})")
            seen[key] = name
    wanted = set(input_keys)
    missing = [k for k in input_keys if k not in seen]
    extra = [k for k in seen if k not in wanted]
    if missing or extra:
        raise MergeError(f"{where}: outputs do not cover the input exactly: {len(missing)} key(s) missing "
                         f"{missing[:5]}, {len(extra)} unexpected {extra[:5]}")


def same_maker(provenance: Path, made_by: Dict[str, object], fields: Sequence[str]) -> bool:
    """Whether the job's recorded maker (``provenance``, JSON) agrees with ``made_by`` on ``fields``."""
    import json

    try:
        old = json.loads(provenance.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(old.get(k) == made_by.get(k) for k in fields)


def done_stats(files: JobPaths, total: int):
    """The ``RunStats`` of a job found done: its failures counted from ``files["fail"]``."""
    from s3tok.stages.pipeline import RunStats

    stats = RunStats()
    stats.failed = len(read_pairs(files["fail"]))
    stats.done = total - stats.failed
    return stats


@dataclass
class JournaledJob:
    """A journaled job as :func:`start_journaled` opened it: the inputs digest, each key's fingerprint, the
    journal (None when the job was already done) and the entries it keeps (``key -> value`` without the
    fingerprint)."""

    inputs: str
    prints: Dict[str, str]
    journal: Optional[LineJournal]
    kept: Dict[str, str]


def start_journaled(files: JobPaths, utts: Sequence[Utterance], made_by: Dict[str, object],
                    fields: Sequence[str], journal_file: Path, valid: Callable[[str, str], bool],
                    resume: bool = True, base_dir: Union[None, str, os.PathLike] = None) -> JournaledJob:
    """Begin a job whose results go one line each into ``journal_file`` (``key fingerprint value``): when it is
    done for these inputs and this maker, ``journal`` is None; else the journal is opened (refusing one that
    another maker started), the maker written to ``files["provenance"]``, and the lines whose fingerprint
    still matches the key's input are kept."""
    import json

    from s3tok.util.fsutil import atomic_write_text

    prints = {u.key: input_fingerprint(u, base_dir) for u in utts}
    inputs = digest(prints[u.key] for u in utts)
    maker_ok = (lambda: same_maker(files["provenance"], made_by, fields))
    if begin(files, inputs, maker_ok, resume) is not None:
        return JournaledJob(inputs, prints, None, {})
    if resume and journal_file.exists() and not maker_ok():
        raise ValueError(f"{journal_file} was started with another model or settings ({files['provenance']}); "
                         "rerun with --overwrite or use another output dir")
    journal = LineJournal(journal_file).open(fresh=not resume, valid=valid)
    atomic_write_text(files["provenance"], json.dumps(made_by, indent=1, sort_keys=True) + "\n")
    kept = {k: v.split(" ", 1)[1] for k, v in journal.entries.items()
            if k in prints and v.split(" ", 1)[0] == prints[k]}
    changed = sum(1 for k in journal.entries if k in prints and k not in kept)
    if kept or changed:
        logger.info("resuming: %d of %d utterances already in %s%s", len(kept), len(utts), journal_file,
                    f"; {changed} done again because their input changed (wav.scp line, segment, or the "
                    f"file's size or mtime)" if changed else "")
    return JournaledJob(inputs, prints, journal, kept)
