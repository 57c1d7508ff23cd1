"""One tokenize job: a contiguous shard of the utterances, resumable, with per-job outputs; a stage on
:mod:`s3tok.stages.protocol`.

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

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch

from s3tok.data.sources import Utterance
from s3tok.data.ark import write_int32_vectors
from s3tok.stages import protocol
from s3tok.stages.protocol import JobPaths, Stage
from s3tok.util.fsutil import atomic_write_lines
from s3tok.model import S3Tokenizer
from s3tok.stages.pipeline import RunStats, run_tokenize

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

TOKENIZE = Stage("tokenize", {"txt": ("tokens", ".txt"), "ark": ("tokens", ".ark"), "scp": ("tokens", ".scp"),
                               "fail": ("utt2fail", ""), "provenance": ("tokenizer", ".json")})


def job_files(output_dir: PathLike, job: Optional[int] = None) -> JobPaths:
    """The files of tokenize job ``job`` (None: a single unsplit run); the journal is ``tokens[.J].part``."""
    return TOKENIZE.files(output_dir, job)


def journal_path(files: JobPaths) -> Path:
    return files.path("tokens", ".part")


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


def _token_record_ok(key: str, rest: str) -> bool:
    """A journal line ``key fingerprint t1 t2 ...``: a fingerprint and at least one integer token."""
    fields = rest.split(" ")
    return len(fields) >= 2 and len(fields[0]) == 16 and all(t.isdigit() for t in fields[1:])


def run_job(model: S3Tokenizer, utts: Sequence[Utterance], files: JobPaths, *,
            batch_size: Optional[int] = None, max_frames_per_batch: Optional[int] = None,
            num_workers: Optional[int] = None,
            base_dir: Union[None, str, os.PathLike] = None, device: Optional[torch.device] = None,
            progress: bool = True, resume: bool = True) -> RunStats:
    """Tokenize ``utts`` into ``files``; skip the whole job when its marker says it is done. ``batch_size``,
    ``num_workers``: None for what suits the model's device (:func:`s3tok.stages.pipeline.defaults_for`)."""
    journal_file = journal_path(files)
    job = protocol.start_journaled(files, utts, provenance(model), MAKER_FIELDS, journal_file, _token_record_ok,
                                   resume, base_dir)
    if job.journal is None:
        return protocol.done_stats(files, len(utts))
    inputs, prints, journal, kept = job.inputs, job.prints, job.journal, job.kept
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
    # the ark first: its writer refuses a key that is not a Kaldi key, before tokens.txt names it
    write_int32_vectors((files["ark"], files["scp"]), [(k, [int(t) for t in v.split()]) for k, v in token_rows])
    atomic_write_lines(files["txt"], [f"{k} {v}" if v else k for k, v in token_rows])
    atomic_write_lines(files["fail"], [f"{u.key} {failures[u.key]}" for u in utts if u.key in failures])
    journal.remove()
    protocol.finish(files, inputs, {"utterances": len(utts), "tokenized": len(token_rows), "failed": len(failures)})
    return stats
