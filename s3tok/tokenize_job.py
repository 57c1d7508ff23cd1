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
from typing import Dict, List, Optional, Sequence, Union

import torch

from .data.sources import Utterance
from .data.ark import write_int32_vectors
from .fsutil import atomic_write_lines, atomic_write_text
from .journal import LineJournal, clear_done, is_done, mark_done, read_done
from .model import S3Tokenizer
from .pipeline import RunStats, run_tokenize

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
    from .version import __version__

    cfg = model.config
    return {"model": cfg.version, "source": getattr(model, "source", ""),
            "onnx_sha256": getattr(model, "onnx_sha256", None),
            "random_init": bool(getattr(model, "random_init", False)), "token_rate": cfg.token_rate,
            "codebook_size": cfg.codebook_size, "dtype": model.precision,
            "s3tok_version": __version__}


MAKER_FIELDS = ("model", "onnx_sha256", "dtype", "codebook_size", "token_rate")


def keys_digest(utts: Sequence[Utterance]) -> str:
    """SHA-256 over the job's keys and inputs: a finished job is reused only for the same inputs."""
    h = hashlib.sha256()
    for u in utts:
        h.update(f"{u.key}\t{u.recording.location if u.recording else ''}\t{u.start}\t{u.end}\t{u.feats}\n"
                 .encode("utf-8"))
    return h.hexdigest()


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
    inputs = keys_digest(utts)
    if resume and is_done(out, STAGE, files.job):
        info = read_done(out, STAGE, files.job)
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
    journal = LineJournal(files.journal).open(fresh=not resume)
    atomic_write_text(files.provenance, json.dumps(made_by, indent=1, sort_keys=True) + "\n")
    keys = {u.key for u in utts}
    kept = {k: v for k, v in journal.entries.items() if k in keys}
    if kept:
        logger.info("resuming: %d of %d utterances already in %s", len(kept), len(utts), files.journal)
    failures: Dict[str, str] = {}

    def write_tokens(key: str, toks: List[int]) -> None:
        journal.add(key, " ".join(map(str, toks)))

    def write_failure(key: str, reason: str) -> None:
        failures[key] = " ".join(reason.split())

    try:
        stats = run_tokenize(model, utts, write_tokens, write_failure, batch_size=batch_size,
                             max_frames_per_batch=max_frames_per_batch, num_workers=num_workers,
                             base_dir=base_dir, device=device, progress=progress, skip=kept)
    finally:
        journal.close()
    stats.done += len(kept)
    token_rows = [(u.key, journal.entries[u.key]) for u in utts if u.key in journal.entries]
    atomic_write_lines(files.tokens_txt, [f"{k} {v}" if v else k for k, v in token_rows])
    write_int32_vectors((files.tokens_ark, files.tokens_scp), [(k, [int(t) for t in v.split()]) for k, v in token_rows])
    atomic_write_lines(files.utt2fail, [f"{u.key} {failures[u.key]}" for u in utts if u.key in failures])
    journal.remove()
    mark_done(out, STAGE, files.job, {"utterances": len(utts), "tokenized": len(token_rows),
                                      "failed": len(failures), "inputs": inputs})
    return stats
