"""One tokenize job: a contiguous shard of the utterances, resumable, with per-job outputs.

Outputs in ``output_dir`` (``.J`` only when the job is one of several)::

    tokens.J.ark / tokens.J.scp   int32 token vectors (Kaldi table)
    tokens.J.txt                  the same as text: ``key t1 t2 ...``
    utt2fail.J                    ``key reason`` for each utterance that could not be tokenized
    tokenizer.J.json              what made the tokens (model, ONNX SHA-256, rate, codebook, dtype, version)
    .done/tokenize.J              completion marker, written last

While running, tokens go to ``tokens.J.part`` (one flushed line each); a rerun after a crash keeps those
keys and redoes the rest (failed keys are retried) in the batches an uninterrupted run would have made
(same neighbours, same padding, so the same bits). Final files are written in input order, so a resumed
job's outputs are byte-identical to an uninterrupted one's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch

from s3tok.data.sources import Utterance
from s3tok.data.ark import write_int32_vectors
from s3tok.util.fsutil import atomic_write_lines, atomic_write_text, remove_leftovers
from s3tok.stages.journal import LineJournal, clear_done, done_info, mark_done
from s3tok.model import S3Tokenizer
from s3tok.stages.pipeline import RunStats, run_tokenize

logger = logging.getLogger(__name__)

STAGE = "tokenize"


@dataclass(frozen=True)
class JobFiles:
    """The file names of job ``job`` (None: a single unsplit run) in ``output_dir``."""

    output_dir: Path
    job: Optional[int] = None

    def _name(self, base: str, ext: str = "") -> Path:
        j = f".{self.job}" if self.job is not None else ""
        return self.output_dir / f"{base}{j}{ext}"

    @property
    def tokens_txt(self) -> Path:
        return self._name("tokens", ".txt")

    @property
    def tokens_ark(self) -> Path:
        return self._name("tokens", ".ark")

    @property
    def tokens_scp(self) -> Path:
        return self._name("tokens", ".scp")

    @property
    def utt2fail(self) -> Path:
        return self._name("utt2fail")

    @property
    def provenance(self) -> Path:
        return self._name("tokenizer", ".json")

    @property
    def journal(self) -> Path:
        return self._name("tokens", ".part")



def provenance(model: S3Tokenizer) -> Dict[str, object]:
    """What made the tokens: enough to tell whether two token files are comparable."""
    from s3tok.version import __version__

    cfg = model.config
    return {"model": cfg.version, "source": getattr(model, "source", ""),
            "onnx_sha256": getattr(model, "onnx_sha256", None),
            "random_init": bool(getattr(model, "random_init", False)), "token_rate": cfg.token_rate,
            "codebook_size": cfg.codebook_size, "dtype": model.precision,
            "s3tok_version": __version__}


MAKER_FIELDS = ("model", "onnx_sha256", "dtype", "codebook_size", "token_rate")


def input_fingerprint(u: Utterance, base_dir: Union[None, str, os.PathLike] = None) -> str:
    """16 hex digits that change when what ``u`` points to changes: its ``wav.scp`` location or feats
    specifier, its segment, and the size and mtime of the file behind it (a pipe: its command only)."""
    loc = u.recording.location if u.recording else ""
    path = u.feats.rsplit(":", 1)[0] if u.feats else (loc if u.recording and not u.recording.is_pipe else "")
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
    return _digest(input_fingerprint(u, base_dir) for u in utts)


def _digest(prints: Iterable[str]) -> str:
    return hashlib.sha256("".join(f"{p}\n" for p in prints).encode("ascii")).hexdigest()


def _token_record_ok(key: str, rest: str) -> bool:
    """A journal line ``key fingerprint t1 t2 ...``: a fingerprint and at least one integer token."""
    fields = rest.split(" ")
    return len(fields) >= 2 and len(fields[0]) == 16 and all(t.isdigit() for t in fields[1:])


def _same_maker(files: JobFiles, made_by: Dict[str, object]) -> bool:
    try:
        old = json.loads(files.provenance.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(old.get(k) == made_by.get(k) for k in MAKER_FIELDS)


def run_job(model: S3Tokenizer, utts: Sequence[Utterance], files: JobFiles, *,
            batch_size: int = 16, max_frames_per_batch: Optional[int] = None, num_workers: int = 2,
            base_dir: Union[None, str, os.PathLike] = None, device: Optional[torch.device] = None,
            progress: bool = True, resume: bool = True) -> RunStats:
    """Tokenize ``utts`` into ``files``; skip the whole job when its marker says it is done."""
    out = files.output_dir
    made_by = provenance(model)
    prints = {u.key: input_fingerprint(u, base_dir) for u in utts}
    inputs = _digest(prints[u.key] for u in utts)
    info = done_info(out, STAGE, files.job) if resume else None
    if info is not None:
        if info.get("inputs") == inputs and _same_maker(files, made_by):
            logger.info("%s: job %s already done (%s); skipping", out, files.job, files.tokens_scp)
            stats = RunStats()
            stats.failed = len(files.utt2fail.read_text(encoding="utf-8").splitlines())
            stats.done = len(utts) - stats.failed
            return stats
        logger.info("%s: job %s was done with other inputs or another model; redoing it", out, files.job)
        resume = False
    if resume and files.journal.exists() and not _same_maker(files, made_by):
        raise ValueError(f"{files.journal} was started with another model or dtype ({files.provenance}); "
                         "rerun with --overwrite or use another output dir")
    clear_done(out, STAGE, files.job)
    remove_leftovers(out, [files.tokens_txt, files.tokens_ark, files.tokens_scp, files.utt2fail, files.provenance])
    journal = LineJournal(files.journal).open(fresh=not resume, valid=_token_record_ok)
    atomic_write_text(files.provenance, json.dumps(made_by, indent=1, sort_keys=True) + "\n")
    kept = {k: v.split(" ", 1)[1] for k, v in journal.entries.items()
            if k in prints and v.split(" ", 1)[0] == prints[k]}
    changed = sum(1 for k, v in journal.entries.items() if k in prints and k not in kept)
    if kept or changed:
        logger.info("resuming: %d of %d utterances already in %s%s", len(kept), len(utts), files.journal,
                    f"; {changed} done again because their input changed (wav.scp line, segment, or the "
                    f"file's size or mtime)" if changed else "")
    failures: Dict[str, str] = {}

    def write_tokens(key: str, toks: List[int]) -> None:
        journal.add(key, f"{prints[key]} {' '.join(map(str, toks))}")
        kept[key] = " ".join(map(str, toks))

    def write_failure(key: str, reason: str) -> None:
        failures[key] = " ".join(reason.split())

    try:
        stats = run_tokenize(model, utts, write_tokens, write_failure, batch_size=batch_size,
                             max_frames_per_batch=max_frames_per_batch, num_workers=num_workers,
                             base_dir=base_dir, device=device, progress=progress, skip=kept)
    finally:
        journal.close()
    token_rows = [(u.key, kept[u.key]) for u in utts if u.key in kept]
    stats.done = len(token_rows)
    atomic_write_lines(files.tokens_txt, [f"{k} {v}" if v else k for k, v in token_rows])
    write_int32_vectors((files.tokens_ark, files.tokens_scp), [(k, [int(t) for t in v.split()]) for k, v in token_rows])
    atomic_write_lines(files.utt2fail, [f"{u.key} {failures[u.key]}" for u in utts if u.key in failures])
    journal.remove()
    mark_done(out, STAGE, files.job, {"utterances": len(utts), "tokenized": len(token_rows),
                                      "failed": len(failures), "inputs": inputs},
              outputs=[files.tokens_txt, files.tokens_ark, files.tokens_scp, files.utt2fail, files.provenance])
    return stats
