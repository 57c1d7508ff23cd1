"""compute_mel jobs: log-mels of a data dir stored as a Kaldi table, and their merge into the data dir.

A stage on :mod:`s3tok.stages.protocol`. Per job in ``output_dir``: ``feats.J.ark/.scp`` (float32 matrices,
frames x 128, Kaldi's row-per-frame convention), ``utt2num_frames.J``, ``utt2fail.J`` and the marker
``.done/compute_mel.J``. The merge writes ``feats.scp``, ``utt2num_frames`` and ``mel_fail`` (keys that
could not be decoded, with the reason) into the data dir, together.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from s3tok.data.ark import write_float_matrices
from s3tok.data.sources import Utterance
from s3tok.stages import protocol
from s3tok.stages.features import featurize, one_line
from s3tok.stages.protocol import Stage
from s3tok.util.fsutil import atomic_write_lines, publish
from s3tok.util.worker_threads import worker_pool

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

COMPUTE_MEL = Stage("compute_mel", {"ark": ("feats", ".ark"), "scp": ("feats", ".scp"),
                                    "frames": ("utt2num_frames", ""), "fail": ("utt2fail", "")})


def run_mel_job(utts: Sequence[Utterance], output_dir: PathLike, job: Optional[int] = None, num_workers: int = 2,
                base_dir: Optional[PathLike] = None, progress: bool = True, resume: bool = True) -> Tuple[int, int]:
    """Compute and store the log-mels of ``utts``; returns ``(stored, failed)``. A job already done for the same
    inputs is skipped, unless ``resume`` is False."""
    files = COMPUTE_MEL.files(output_dir, job)
    inputs = protocol.keys_digest(utts, base_dir)
    info = protocol.begin(files, inputs, resume=resume)
    if info is not None:
        return info["stored"], info["failed"]
    failures: Dict[str, str] = {}
    frames: List[Tuple[str, int]] = []

    def rows() -> Iterator[Tuple[str, object]]:
        with worker_pool(num_workers) as pool, \
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

    stored = write_float_matrices((files["ark"], files["scp"]), rows())
    atomic_write_lines(files["frames"], [f"{k} {n}" for k, n in frames])
    atomic_write_lines(files["fail"], [f"{u.key} {failures[u.key]}" for u in utts if u.key in failures])
    protocol.finish(files, inputs, {"stored": stored, "failed": len(failures)})
    return stored, len(failures)


def merge_mel_jobs(output_dir: PathLike, num_jobs: int, input_keys: Sequence[str], dest: PathLike) -> Tuple[int, int]:
    """Concatenate the jobs into ``dest/feats.scp``, ``utt2num_frames``, ``mel_fail``; check coverage."""
    protocol.require_finished(COMPUTE_MEL, output_dir, num_jobs)
    scp, nframes, fails = (protocol.read_tables(COMPUTE_MEL, output_dir, num_jobs, role)
                           for role in ("scp", "frames", "fail"))
    protocol.check_coverage(output_dir, input_keys, [("feats", scp), ("utt2fail", fails)])
    dest = Path(dest)
    publish([(dest / name, "".join(f"{k} {v}\n" for k, v in rows).encode("utf-8"))
             for name, rows in (("feats.scp", scp), ("utt2num_frames", nframes), ("mel_fail", fails))])
    return len(scp), len(fails)
