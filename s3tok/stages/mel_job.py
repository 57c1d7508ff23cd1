"""compute_mel jobs: log-mels of a data dir stored as a Kaldi table, and their merge into the data dir.

Per job in ``output_dir``: ``feats.J.ark/.scp`` (float32 matrices, frames x 128, Kaldi's row-per-frame
convention), ``utt2num_frames.J``, ``utt2fail.J`` and the marker ``.done/compute_mel.J``. A finished job
with the same inputs is skipped on rerun. The merge writes ``feats.scp``, ``utt2num_frames`` and
``mel_fail`` (keys that could not be decoded, with the reason) into the data dir.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from s3tok.data.sources import Utterance
from s3tok.data.ark import write_float_matrices
from s3tok.util.fsutil import atomic_write_lines, remove_leftovers
from s3tok.stages.journal import clear_done, done_info, is_done, mark_done
from s3tok.stages.merge import MergeError, check_coverage, read_pairs
from s3tok.stages.pipeline import one_line, featurize
from s3tok.stages.tokenize_job import keys_digest

logger = logging.getLogger(__name__)

STAGE = "compute_mel"
PathLike = Union[str, os.PathLike]


def _name(output_dir: Path, base: str, job: Optional[int], ext: str = "") -> Path:
    return output_dir / (f"{base}.{job}{ext}" if job is not None else f"{base}{ext}")


def run_mel_job(utts: Sequence[Utterance], output_dir: PathLike, job: Optional[int] = None, num_workers: int = 2,
                base_dir: Optional[PathLike] = None, progress: bool = True) -> Tuple[int, int]:
    """Compute and store the log-mels of ``utts``; returns ``(stored, failed)``."""
    out = Path(output_dir)
    inputs = keys_digest(utts, base_dir)
    info = done_info(out, STAGE, job)
    if info is not None and info.get("inputs") == inputs:
        logger.info("%s: compute_mel job %s already done; skipping", out, job)
        return info["stored"], info["failed"]
    clear_done(out, STAGE, job)
    remove_leftovers(out, [_name(out, "feats", job, ".ark"), _name(out, "feats", job, ".scp")])
    failures: Dict[str, str] = {}
    frames: List[Tuple[str, int]] = []

    def rows() -> Iterator[Tuple[str, object]]:
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool, \
                tqdm(total=len(utts), unit="utt", disable=not progress) as bar:
            futures = [(u, pool.submit(featurize, u, base_dir)) for u in utts]
            for u, fut in futures:
                bar.update(1)
                try:
                    mel = fut.result().mel
                except Exception as e:  # noqa: BLE001 - a bad utterance is recorded, the job goes on
                    failures[u.key] = " ".join(one_line(e).split())
                    logger.warning("%s: failed: %s", u.key, failures[u.key])
                    continue
                frames.append((u.key, mel.shape[-1]))
                yield u.key, mel.T.contiguous().numpy()

    outputs = [_name(out, "feats", job, ".ark"), _name(out, "feats", job, ".scp"), _name(out, "utt2num_frames", job),
               _name(out, "utt2fail", job)]
    stored = write_float_matrices((outputs[0], outputs[1]), rows())
    atomic_write_lines(outputs[2], [f"{k} {n}" for k, n in frames])
    atomic_write_lines(outputs[3], [f"{u.key} {failures[u.key]}" for u in utts if u.key in failures])
    mark_done(out, STAGE, job, {"inputs": inputs, "stored": stored, "failed": len(failures)}, outputs=outputs)
    return stored, len(failures)


def merge_mel_jobs(output_dir: PathLike, num_jobs: int, input_keys: Sequence[str], dest: PathLike) -> Tuple[int, int]:
    """Concatenate the jobs into ``dest/feats.scp``, ``utt2num_frames``, ``mel_fail``; check coverage."""
    out = Path(output_dir)
    jobs = [None] if num_jobs == 0 else list(range(1, num_jobs + 1))
    unfinished = [j or 1 for j in jobs if not is_done(out, STAGE, j)]
    if unfinished:
        raise MergeError(f"{out}: compute_mel job(s) {unfinished} not finished; rerun them first")
    scp = [r for j in jobs for r in read_pairs(_name(out, "feats", j, ".scp"))]
    nframes = [r for j in jobs for r in read_pairs(_name(out, "utt2num_frames", j))]
    fails = [r for j in jobs for r in read_pairs(_name(out, "utt2fail", j))]
    check_coverage(out, input_keys, [("feats", scp), ("utt2fail", fails)])
    dest = Path(dest)
    atomic_write_lines(dest / "feats.scp", [f"{k} {v}" for k, v in scp])
    atomic_write_lines(dest / "utt2num_frames", [f"{k} {v}" for k, v in nframes])
    atomic_write_lines(dest / "mel_fail", [f"{k} {v}" for k, v in fails])
    return len(scp), len(fails)
