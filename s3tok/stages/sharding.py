"""Contiguous shards of an utterance list, balanced by audio duration: one per job or torchrun rank.

Contiguous pieces of a sorted list concatenate back in order, so merging needs no re-sort; each key lands
in exactly one shard; no padding sampler, no repeats.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from s3tok.data.lines import split_text_lines
from s3tok.data.sources import Utterance
from s3tok.data.split import split_by_weight


def shard_by_weight(items: Sequence, weights: Sequence[float], num_jobs: int, job: int) -> List:
    """Job ``job`` (1-based) of ``num_jobs`` duration-balanced contiguous pieces; jobs beyond the number
    of items get an empty shard."""
    if num_jobs < 1 or not 1 <= job <= num_jobs:
        raise ValueError(f"job {job} is not in 1..{num_jobs}")
    pieces = split_by_weight(list(items), list(weights), num_jobs)
    return pieces[job - 1] if job <= len(pieces) else []


def _read_num_frames(path: Path) -> Dict[str, float]:
    out = {}
    for line in split_text_lines(path.read_text(encoding="utf-8")):
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = float(parts[1])
    return out


def estimate_weights(utts: Sequence[Utterance], num_frames_file: Optional[Path] = None) -> List[float]:
    """A cost per utterance, proportional to its duration: ``utt2num_frames`` when given, the segment
    length for segments, the file size for files; 1 when nothing is known (pipes)."""
    frames = _read_num_frames(num_frames_file) if num_frames_file and num_frames_file.is_file() else {}
    sizes: Dict[str, float] = {}
    weights = []
    for u in utts:
        if u.key in frames:
            weights.append(frames[u.key] * 320.0)  # ~bytes of 16-bit 16 kHz audio per 10 ms frame
        elif u.segment and u.end is not None:
            weights.append(max(0.0, u.end - u.start) * 32000.0)
        elif u.recording is not None and not u.recording.is_pipe:
            loc = u.recording.location
            if loc not in sizes:
                try:
                    sizes[loc] = float(os.path.getsize(loc))
                except OSError:
                    sizes[loc] = 32000.0
            weights.append(sizes[loc])
        else:
            weights.append(32000.0)
    return weights


def distributed_job() -> Optional[tuple]:
    """``(num_jobs, job)`` from torchrun's ``WORLD_SIZE``/``RANK`` (or Slurm's array/task variables), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return world, int(os.environ.get("RANK", "0")) + 1
    return None


def job_shard(utts: Sequence[Utterance], num_jobs: int, job: int, num_frames_file: Optional[Path] = None) -> List:
    """This job's duration-balanced contiguous shard of ``utts``. Members of containers (tar shards, parquet
    files) are split by container, balanced by bytes, so that each container is read by one job only."""
    if utts and all(u.member is not None for u in utts):
        tars: Dict[str, List[Utterance]] = {}
        for u in utts:
            tars.setdefault(u.member.container, []).append(u)
        groups = list(tars.values())
        mine = shard_by_weight(groups, [float(sum(u.member.size for u in g)) for g in groups], num_jobs, job)
        return [u for g in mine for u in g]
    return shard_by_weight(utts, estimate_weights(utts, num_frames_file), num_jobs, job)


def num_frames_file_for(data_dir: Optional[str] = None, feats_scp: Optional[str] = None) -> Optional[Path]:
    """``utt2num_frames`` beside a data dir or a feats.scp, if there is one."""
    base = Path(data_dir) if data_dir else (Path(feats_scp).parent if feats_scp else None)
    return base / "utt2num_frames" if base is not None else None
