"""One embed job: CAM++ speaker embeddings of a contiguous shard, resumable; a stage on
:mod:`s3tok.stages.protocol`, and its merge into CosyVoice's ``utt2embedding.pt`` / ``spk2embedding.pt``.

Outputs in ``output_dir`` (``.J`` only when the job is one of several)::

    embedding.J.ark / embedding.J.scp   float32 vectors of 192 (a Kaldi table, as x-vectors are stored)
    utt2fail.J                          ``key reason`` for each utterance without an embedding
    embedder.J.json                     what made them (model file and SHA-256, engine)
    .done/embed.J                       completion marker, written last

While running, embeddings go to ``embedding.J.part`` (one flushed line each, 9 significant digits, which
give a float32 back exactly); a rerun after a crash keeps those whose input is unchanged and redoes the rest
in the chunks an uninterrupted run would have made (same batch neighbours, so the same bits: a batched
convolution's rounding depends on its batch), so a resumed job's outputs are byte-identical.

The features are CosyVoice's (``tools/extract_embedding.py``): channel 0, resampled to 16 kHz, Kaldi fbank
of 80 bins, the mean over time subtracted (:func:`s3tok.data.kaldi_fbank.embedding_features`).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from s3tok.data.ark import read_float_vectors, write_float_vectors
from s3tok.data.kaldi_fbank import embedding_features
from s3tok.data.sources import Utterance
from s3tok.stages import protocol
from s3tok.stages.journal import clear_done, mark_done
from s3tok.stages.features import featurized_chunks, read_utterance
from s3tok.stages.pipeline import FaultWatch, RunStats, retry_alone
from s3tok.stages.protocol import JobPaths, MergeError, Stage, check_coverage, read_pairs
from s3tok.util.fsutil import atomic_write_lines, publish, remove_leftovers, torch_saved

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

EMBED = Stage("embed", {"ark": ("embedding", ".ark"), "scp": ("embedding", ".scp"), "fail": ("utt2fail", ""),
                        "provenance": ("embedder", ".json")})
MERGE_STAGE = "merge_embeddings"
MAKER_FIELDS = ("model_sha256", "engine")  # jobs of one set must agree on these
CHUNK = 64  # utterances decoded ahead of the model, and handed to it at once


@dataclass
class SpeakerFeatures:
    key: str
    feats: torch.Tensor  # [T, 80]
    seconds: float


def speaker_features(utt: Utterance, base_dir: Optional[PathLike] = None) -> SpeakerFeatures:
    """CAM++ input of one utterance; raises on bad input, naming it."""
    audio, rate, name = read_utterance(utt, base_dir)
    try:
        feats = embedding_features(audio, rate)
    except ValueError as e:  # AudioError included
        raise type(e)(f"{name}: {e}") from None
    return SpeakerFeatures(utt.key, feats, audio.shape[-1] / rate)


def _record_ok(key: str, rest: str) -> bool:
    fields = rest.split(" ")
    return len(fields) >= 2 and len(fields[0]) == 16


def _embed_checked(embedder, batch: Sequence[SpeakerFeatures]) -> List[np.ndarray]:
    out = np.asarray(embedder.embed([f.feats for f in batch]), dtype=np.float32)
    if out.shape[0] != len(batch):
        raise RuntimeError(f"the embedder returned {out.shape[0]} embeddings for {len(batch)} inputs")
    return list(out)


def run_embed_job(embedder, utts: Sequence[Utterance], files: JobPaths, *, num_workers: int = 2,
                  base_dir: Optional[PathLike] = None, progress: bool = True, resume: bool = True) -> RunStats:
    """Embed ``utts`` into ``files``; skip the whole job when its marker says it is done."""
    journal_file = files.path("embedding", ".part")
    job = protocol.start_journaled(files, utts, dict(embedder.provenance), MAKER_FIELDS, journal_file, _record_ok,
                                   resume, base_dir)
    if job.journal is None:
        return protocol.done_stats(files, len(utts))
    inputs, prints, journal, kept = job.inputs, job.prints, job.journal, job.kept
    stats = RunStats()
    failures: Dict[str, str] = {}
    bar = tqdm(total=sum(u.key not in kept for u in utts), unit="utt", disable=not progress, dynamic_ncols=True)
    watch = FaultWatch()
    start = time.perf_counter()

    def fail(key: str, reason: str) -> None:
        if key in kept:  # done before a resume: only rerun to keep its chunk as it was
            return
        failures[key] = " ".join(reason.split())
        logger.warning("%s: failed: %s", key, failures[key])
        bar.update(1)

    chunks = [utts[i:i + CHUNK] for i in range(0, len(utts), CHUNK)]
    chunks = [c for c in chunks if any(u.key not in kept for u in c)]
    try:
        for _, feats in featurized_chunks(chunks, lambda u: speaker_features(u, base_dir), num_workers, fail, stats):
            if not feats:
                continue
            try:
                results = list(zip(feats, _embed_checked(embedder, feats)))
                watch.succeeded()
            except Exception as e:  # noqa: BLE001 - isolate the bad item, or find the model at fault
                results = retry_alone(lambda b: _embed_checked(embedder, b), feats, e, fail, watch)
            for f, vec in results:
                if f.key in kept:
                    continue
                if not np.isfinite(vec).all():
                    fail(f.key, "embedding not finite (NaN or infinity)")
                    continue
                kept[f.key] = " ".join(f"{x:.9g}" for x in vec.tolist())
                journal.add(f.key, f"{prints[f.key]} {kept[f.key]}")
                stats.done += 1
                stats.audio_seconds += f.seconds
                bar.update(1)
            stats.wall_seconds = time.perf_counter() - start
            bar.set_postfix_str(f"{stats.speed:.1f} audio s/s, {len(failures)} failed")
    finally:
        journal.close()
        bar.close()
    stats.failed = len(failures)
    rows = [(u.key, np.array(kept[u.key].split(), dtype=np.float32)) for u in utts if u.key in kept]
    write_float_vectors((files["ark"], files["scp"]), rows)
    atomic_write_lines(files["fail"], [f"{u.key} {failures[u.key]}" for u in utts if u.key in failures])
    journal.remove()
    protocol.finish(files, inputs, {"utterances": len(utts), "embedded": len(rows), "failed": len(failures)})
    stats.done = len(rows)
    return stats


NO_SPEAKER_FILE = "embed_no_speaker"


@dataclass
class EmbedMergeResult:
    embedded: int
    failed: int
    speakers: int
    total: int
    no_speaker: int = 0  # embedded, but not in utt2spk: in utt2embedding.pt, not in any speaker's mean

    @property
    def fail_ratio(self) -> float:
        return self.failed / self.total if self.total else 0.0


def speaker_means(utt2emb: Dict[str, List[float]], utt2spk: Dict[str, str]) -> Dict[str, List[float]]:
    """Each speaker's mean embedding over its utterances, in float32 as CosyVoice's tool computes it
    (``torch.tensor(list).mean(dim=0)``), utterances in input order."""
    by_spk: Dict[str, List[List[float]]] = {}
    for key, emb in utt2emb.items():
        by_spk.setdefault(utt2spk[key], []).append(emb)
    return {spk: torch.tensor(embs).mean(dim=0).tolist() for spk, embs in by_spk.items()}


def merge_embed_jobs(output_dir: PathLike, num_jobs: int, input_keys: Sequence[str], dest: PathLike,
                     utt2spk: Optional[Dict[str, str]] = None,
                     prior_fail: Sequence[PathLike] = ()) -> EmbedMergeResult:
    """Check the jobs (finished, one maker, every key once) and publish into ``dest`` together:
    ``utt2embedding.pt`` (``dict[str, list[float]]``), ``spk2embedding.pt`` (each speaker's mean; with
    ``utt2spk``), ``embedding.scp`` (the jobs' arks), ``embed_fail`` and ``embedder.json``. With ``utt2spk``,
    an embedded utterance it lacks stays in ``utt2embedding.pt``, is in no speaker's mean, and is listed in
    ``embed_no_speaker`` (``key reason``; logged); a ``utt2spk`` with none of the embedded utterances is an
    error."""
    protocol.require_finished(EMBED, output_dir, num_jobs)
    jobs = EMBED.jobs(output_dir, num_jobs)
    makers = [json.loads(j["provenance"].read_text(encoding="utf-8")) for j in jobs]
    for j, m in zip(jobs, makers):
        diff = [k for k in MAKER_FIELDS if m.get(k) != makers[0].get(k)]
        if diff:
            raise MergeError(f"{j['provenance']} differs from {jobs[0]['provenance']} in {diff}: embeddings of "
                             "different models or engines cannot be merged")
    scp_rows, fail_rows = (protocol.read_tables(EMBED, output_dir, num_jobs, r) for r in ("scp", "fail"))
    prior = [row for path in prior_fail for row in read_pairs(Path(path))]
    check_coverage(output_dir, input_keys, [("embeddings", scp_rows), ("utt2fail", fail_rows),
                                            ("an earlier stage's failures", prior)])
    order = {k: i for i, k in enumerate(input_keys)}
    fail_rows = sorted(prior + fail_rows, key=lambda r: order[r[0]])
    utt2emb: Dict[str, List[float]] = {}
    for j in jobs:
        for key, vec in read_float_vectors(j["scp"]):
            utt2emb[key] = vec.tolist()
    utt2emb = {k: utt2emb[k] for k in sorted(utt2emb, key=order.__getitem__)}
    dest = Path(dest)
    outputs: List[Tuple[Path, object]] = [
        (dest / "embedding.scp", _lines(f"{k} {v}" for k, v in scp_rows)),
        (dest / "embed_fail", _lines(f"{k} {v}" for k, v in fail_rows)),
        (dest / "embedder.json", (json.dumps(makers[0], indent=1, sort_keys=True) + "\n").encode("utf-8")),
        (dest / "utt2embedding.pt", torch_saved(utt2emb)),
    ]
    speakers = 0
    lacking: List[str] = []
    if utt2spk is not None:
        lacking = [k for k in utt2emb if k not in utt2spk]
        if utt2emb and len(lacking) == len(utt2emb):
            raise MergeError(f"none of the {len(utt2emb)} embedded utterances is in utt2spk (e.g. {lacking[:3]}): "
                             "the utt2spk of another set?")
        if lacking:
            logger.warning("%d embedded utterance(s) have no speaker in utt2spk, e.g. %s: kept in utt2embedding.pt, "
                           "left out of spk2embedding.pt; listed in %s", len(lacking), lacking[:3],
                           dest / NO_SPEAKER_FILE)
        spk2emb = speaker_means({k: v for k, v in utt2emb.items() if k in utt2spk}, utt2spk)
        speakers = len(spk2emb)
        outputs += [(dest / "spk2embedding.pt", torch_saved(spk2emb)),
                    (dest / NO_SPEAKER_FILE, _lines(f"{k} no speaker in utt2spk" for k in lacking))]
    clear_done(dest, MERGE_STAGE)
    remove_leftovers(dest, [p for p, _ in outputs])
    publish(outputs)
    result = EmbedMergeResult(len(utt2emb), len(fail_rows), speakers, len(input_keys), len(lacking))
    mark_done(dest, MERGE_STAGE, None, {"embedded": result.embedded, "failed": result.failed,
                                        "output_dir": str(output_dir)}, outputs=[p for p, _ in outputs])
    return result


def _lines(rows) -> bytes:
    return "".join(r + "\n" for r in rows).encode("utf-8")
