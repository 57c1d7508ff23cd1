"""The tokenize loop: decode, log-mel, length-sorted batches, model, writer; bad utterances recorded.

On CPU the decode threads compute each utterance's log-mel. On a GPU they only decode: the main thread copies
each batch's waveforms to the device at once (pinned, non-blocking), computes their log-mels there, queues
the forward passes and the copy of the tokens back, and reads a batch's tokens only after queueing the next,
so the device never waits for the host nor the host for the device (see :func:`defaults_for`)."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple, Union

import torch
from tqdm import tqdm

from s3tok.data.audio import log_mel_batch, log_mel_spectrogram, padding
from s3tok.data import WavEntry
from s3tok.data.sources import Utterance
from s3tok.model import S3Tokenizer
from s3tok.model.tokenizer import default_max_frames, to_device_nowait
from s3tok.model.packing import pack_by_length
from s3tok.stages.features import NOT_FINITE_FAILURE, Features, featurize, featurized_chunks, one_line

logger = logging.getLogger(__name__)


class ModelFault(RuntimeError):
    """A batch failed and then each of its utterances failed alone with the same error: the model or the
    machine is at fault, not the data, so the job stops instead of writing every key to ``utt2fail``."""


@dataclass
class Failure:
    key: str
    reason: str


@dataclass
class RunStats:
    """Counts of a tokenize run, for the log line at its end."""

    done: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    input_wait_seconds: float = 0.0  # the model idle, waiting for decoded audio and log-mels
    failures: List[Failure] = field(default_factory=list)
    # seconds per part: in the decode threads (decode, resample, log-mel; summed over threads) and in the main
    # thread (batching, model: queueing batches and reading their tokens, writing)
    parts: Dict[str, float] = field(default_factory=dict)

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, part: str):
        """Add the block's wall time to ``part``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - start)

    @property
    def speed(self) -> float:
        """Seconds of audio per second of wall time (inverse real-time factor)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0




def make_batches(items: Sequence[Features], batch_size: int, max_frames_per_batch: int) -> List[List[Features]]:
    """Longest first, up to ``batch_size`` items (0: no bound) and ``max_frames_per_batch`` padded frames per
    batch (a longer item goes alone). Each item lands once."""
    return pack_by_length(items, lambda f: f.frames, max_frames_per_batch, batch_size)


def host_buffer(pieces: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """``pieces`` flattened into one float32 host tensor, pinned when bound for CUDA."""
    total = sum(p.numel() for p in pieces)
    buf = torch.empty(total, dtype=torch.float32, pin_memory=torch.device(device).type == "cuda")
    return torch.cat([p.reshape(-1) for p in pieces], out=buf)


def batch_mels(batch: Sequence[Features], device: torch.device,
               n_mels: int = 128) -> Tuple[torch.Tensor, List[int], Optional[torch.Tensor]]:
    """Zero-padded log-mels ``[B, n_mels, T]`` of a batch on ``device``, their lengths (host ints), and
    whether each is finite (``[B]`` bool on the device; None when all were read from feats, checked there).

    The host data of every item (waveforms, stored log-mels) goes over in one non-blocking copy; the
    waveforms' log-mels are computed on ``device`` (one lone item chunk by chunk: bounded memory)."""
    flat = to_device_nowait(host_buffer([f.wav if f.mel is None else f.mel for f in batch], device), device)
    views, at = [], 0
    for f in batch:
        n = f.wav.numel() if f.mel is None else f.mel.numel()
        views.append(flat[at:at + n] if f.mel is None else flat[at:at + n].view(f.mel.shape))
        at += n
    frames = [f.frames for f in batch]
    waves = [i for i, f in enumerate(batch) if f.mel is None]
    if not waves:
        return padding(views)[0], frames, None
    if len(batch) == 1:
        mels = log_mel_spectrogram(views[0], n_mels)[None]
    else:
        mels = log_mel_batch([views[i] for i in waves], n_mels, device)[0]
        if len(waves) < len(batch):  # stored log-mels too (a mixed source): place both
            computed = {i: mels[j, :, :frames[i]] for j, i in enumerate(waves)}
            mels = padding([computed.get(i, v) for i, v in enumerate(views)])[0]
    return mels, frames, torch.isfinite(mels).flatten(1).all(dim=1)


@dataclass
class InFlight:
    """One batch's tokens on their way back: ``packed [B, 1 + T']`` (column 0: 1 where the log-mel was
    finite) on the host once ``ready`` (a CUDA event, None elsewhere) has passed, and each item's count."""

    packed: torch.Tensor
    lens: List[int]
    ready: Any = None

    def tokens(self) -> List[Union[List[int], str]]:
        """Each item's tokens, or the reason it failed; waits for the device (only here)."""
        if self.ready is not None:
            self.ready.synchronize()
        return [row[1:1 + n] if row[0] else NOT_FINITE_FAILURE for row, n in zip(self.packed.tolist(), self.lens)]


def copy_back(packed: torch.Tensor, lens: List[int]) -> InFlight:
    """Queue the copy of ``packed`` to pinned host memory (CUDA; elsewhere it stays as it is)."""
    if packed.device.type != "cuda":
        return InFlight(packed, lens)
    host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
    host.copy_(packed, non_blocking=True)
    ready = torch.cuda.Event(blocking=True)  # the waiting thread sleeps: its core stays free for decoding
    ready.record(torch.cuda.current_stream(packed.device))
    return InFlight(host, lens, ready)


def launch_batch(model: S3Tokenizer, batch: Sequence[Features], max_frames: Optional[int] = None,
                 batch_mel: bool = False) -> InFlight:
    """Queue the forward passes of one batch and the copy of its tokens back, waiting for nothing on CUDA.
    ``batch_mel``: the items carry waveforms, their log-mels are computed here (:func:`batch_mels`)."""
    if batch_mel:
        mels, frames, finite = batch_mels(batch, model.device, model.config.n_mels)
    else:
        mels, lens = padding([f.mel for f in batch])
        frames, finite = lens.tolist(), None
    codes, counts = model.quantize_frames(mels, frames, max_frames)
    if finite is None:
        finite = torch.ones(len(frames), dtype=torch.bool, device=codes.device)
    return copy_back(torch.cat([finite.to(codes.device, codes.dtype)[:, None], codes], dim=1), counts)


def tokenize_batch(model: S3Tokenizer, batch: Sequence[Features], max_frames: Optional[int] = None,
                   batch_mel: bool = False) -> List[Union[List[int], str]]:
    """Tokens of each item of one batch (or the reason it failed); windows of long items go at most
    ``max_frames`` padded frames per forward pass (default: what suits the model's device)."""
    return launch_batch(model, batch, max_frames, batch_mel).tokens()


class FaultWatch:
    """Tells a fault of the model or the machine from bad utterances. The model is at fault when a batch of
    several fails and each of its items then fails alone with the batch's error, or when lone items fail
    one after another with one error (no utterance tokenized in between): the job stops with
    :class:`ModelFault` instead of writing every key to ``utt2fail``."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self.keys: List[str] = []

    def succeeded(self) -> None:
        self.reason, self.keys = None, []

    def failed_alone(self, key: str, reason: str) -> None:
        if reason != self.reason:
            self.reason, self.keys = reason, []
        self.keys.append(key)
        if len(self.keys) >= 2:
            raise ModelFault(f"the model fails on every utterance it is given ({', '.join(self.keys[:3])}"
                             f"{', ...' if len(self.keys) > 3 else ''}), each with the same error: a fault of "
                             f"the model or the machine, not of the audio: {reason}")


def retry_alone(run: Callable[[Sequence], list], batch: Sequence, error: Exception,
                fail: Callable[[str, str], None], watch: FaultWatch) -> list:
    """After ``run(batch)`` failed with ``error``: each item (with a ``key``) alone; ``[(item, result)]`` of
    those that pass, the others passed to ``fail``. Raises :class:`ModelFault` when ``watch`` sees a fault
    (see there)."""
    reason = one_line(error)
    if len(batch) > 1:
        logger.warning("batch of %d failed (%s); retrying its items one by one", len(batch), reason)
    results, errors = [], []
    for f in batch if len(batch) > 1 else ():  # a lone item has had its try
        try:
            results.append((f, run([f])[0]))
        except Exception as e:  # noqa: BLE001 - the item's own problem, unless all share one error
            errors.append((f, one_line(e)))
    if len(batch) == 1:
        errors.append((batch[0], reason))
    if results:
        watch.succeeded()
    else:
        for f, r in errors:
            watch.failed_alone(f.key, r)
    for f, r in errors:
        fail(f.key, r)
    return results


CPU_BATCH_SIZE = 16
CPU_WORKERS = 2
GPU_MAX_WORKERS = 8
CHUNK_FORWARDS = 4  # on a GPU a chunk holds about this many full forward passes of audio
# on a CPU a chunk also ends at about this much audio (estimated before decoding): its log-mels (51 KB per
# second) and the next chunk's, decoded meanwhile, stay near 200 MB each even when every file is an hour long;
# short clips (128 of 2-30 s) never reach it, so their chunks, batches and bits are as before
CPU_CHUNK_SECONDS = 3600.0
BYTES_PER_SECOND = 32000.0  # 16-bit 16 kHz audio: how sharding's size estimates turn into seconds


@dataclass(frozen=True)
class FeedPlan:
    """How the model is fed: batches, decode threads, chunks, and where the log-mels are computed."""

    batch_size: int  # most utterances per batch; 0: the frame budget alone decides
    num_workers: int  # decode threads
    chunk_size: int  # most utterances per chunk; 0: no bound
    chunk_seconds: float  # about the most audio per chunk (estimated before decoding); 0: no bound
    batch_mel: bool  # decode threads hand over waveforms; each batch's log-mels are computed on the device


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def defaults_for(device: Union[str, torch.device], max_frames: int, batch_size: Optional[int] = None,
                 num_workers: Optional[int] = None, chunk_size: int = 0, batch_mel: Optional[bool] = None,
                 cores: Optional[int] = None) -> FeedPlan:
    """The feeding that suits ``device``; what the caller set (not None, not 0) stays.

    CPU: batches of at most 16 utterances, 2 decode threads that compute the log-mels, chunks of
    ``8 * batch_size`` (at least 64) utterances, as always (the same batches, hence the same bits, as
    earlier versions), ending sooner at about :data:`CPU_CHUNK_SECONDS` of audio (long files). GPU: the frame budget alone decides a batch, ``min(8, cores - 1)`` threads that only
    decode, log-mels per batch on the device, chunks of about ``CHUNK_FORWARDS`` forward passes of audio."""
    if torch.device(device).type == "cpu":
        size = CPU_BATCH_SIZE if batch_size is None else batch_size
        return FeedPlan(size, CPU_WORKERS if num_workers is None else num_workers,
                        chunk_size or max(size * 8, 64), CPU_CHUNK_SECONDS, bool(batch_mel))
    cores = usable_cores() if cores is None else cores
    return FeedPlan(batch_size or 0, max(1, min(GPU_MAX_WORKERS, cores - 1)) if num_workers is None else num_workers,
                    chunk_size, CHUNK_FORWARDS * max_frames / 100.0, True if batch_mel is None else batch_mel)


def estimated_seconds(entry: Union[Utterance, WavEntry], base_dir=None) -> float:
    """An entry's duration as far as it is known before decoding: a segment's length, a file's or a
    container member's size as 16-bit 16 kHz audio; 1 s when nothing is known (a pipe, stored log-mels)."""
    utt = Utterance(entry.key, recording=entry) if isinstance(entry, WavEntry) else entry
    if utt.member is not None:
        return utt.member.size / BYTES_PER_SECOND
    if utt.segment and utt.end is not None:
        return max(0.0, utt.end - utt.start)
    if utt.recording is not None and not utt.recording.is_pipe:
        try:  # an absolute location stays as it is
            return os.path.getsize(Path(base_dir or ".") / utt.recording.location) / BYTES_PER_SECOND
        except OSError:
            pass
    return 1.0


def cut_chunks(entries: Sequence, plan: FeedPlan, base_dir=None) -> List[Sequence]:
    """Consecutive chunks of ``entries``, each ending at ``plan.chunk_size`` utterances or at about
    ``plan.chunk_seconds`` of audio, whichever comes first (either bound 0: not used); the audio is
    estimated before decoding (:func:`estimated_seconds`), so a resumed job cuts the same chunks."""
    chunks, begin, total = [], 0, 0.0
    for i, entry in enumerate(entries):
        if plan.chunk_seconds:
            total += estimated_seconds(entry, base_dir)
        full = plan.chunk_size and i + 1 - begin >= plan.chunk_size
        if full or (plan.chunk_seconds and total >= plan.chunk_seconds):
            chunks.append(entries[begin:i + 1])
            begin, total = i + 1, 0.0
    if begin < len(entries):
        chunks.append(entries[begin:])
    return chunks


def feeder(plan: FeedPlan, base_dir=None, device: Optional[torch.device] = None,
           cpu_mel: bool = False) -> Callable[[Any], Features]:
    """What a decode thread does with one entry: decode only (``plan.batch_mel``), else also the log-mel.
    ``cpu_mel`` with ``plan.batch_mel``: the thread computes the log-mel on the CPU and the batch carries it to
    the device in its one copy (the parity check's "CPU log-mel into the device's model")."""
    if plan.batch_mel:
        if cpu_mel:
            return lambda e: featurize(e, base_dir)
        return lambda e: featurize(e, base_dir, waveform=True)
    return lambda e: featurize(e, base_dir, device)


Results = List[Tuple[Features, Union[List[int], str]]]


class OneAhead:
    """Keeps one batch in flight: :meth:`push` queues a batch, then reads the one before, so that the device
    works on batch k+1 while the host reads batch k's tokens. A batch that fails (when queued or when read)
    is retried item by item (:func:`retry_alone`), in batch order; ``handle`` gets each batch's results."""

    def __init__(self, launch: Callable[[Sequence[Features]], InFlight], handle: Callable[[Results], None],
                 fail: Callable[[str, str], None], watch: FaultWatch) -> None:
        self.launch, self.handle, self.fail, self.watch = launch, handle, fail, watch
        self.pending: Optional[Tuple[Sequence[Features], Union[InFlight, Exception], Any]] = None

    @property
    def busy(self) -> Any:
        """The tag of the batch in flight (None: none)."""
        return self.pending[2] if self.pending is not None else None

    def push(self, batch: Sequence[Features], tag: Any = None) -> None:
        try:
            queued: Union[InFlight, Exception] = self.launch(batch)
        except Exception as e:  # noqa: BLE001 - handled in order, when this batch is read
            queued = e
        self.flush()
        self.pending = (batch, queued, tag)

    def flush(self) -> None:
        """Read the batch in flight, if any."""
        if self.pending is None:
            return
        batch, queued, _ = self.pending
        self.pending = None
        try:
            if isinstance(queued, Exception):
                raise queued
            results = list(zip(batch, queued.tokens()))
            self.watch.succeeded()
        except Exception as e:  # noqa: BLE001 - retry one by one to isolate the bad item
            results = retry_alone(lambda b: self.launch(b).tokens(), batch, e, self.fail, self.watch)
        self.handle(results)


class InOrder:
    """Writes each chunk's tokens in input order, once none of its batches is still in flight."""

    def __init__(self, write_tokens: Callable[[str, List[int]], None]) -> None:
        self.write_tokens = write_tokens
        self.done: Dict[str, List[int]] = {}
        self.closed: List[Tuple[int, Sequence]] = []

    def close(self, index: int, chunk: Sequence) -> None:
        """All batches of chunk ``index`` have been queued."""
        self.closed.append((index, chunk))

    def write_ready(self, busy: Optional[int]) -> None:
        """Write the closed chunks before chunk ``busy`` (the one with a batch in flight; None: all)."""
        while self.closed and self.closed[0][0] != busy:
            _, chunk = self.closed.pop(0)
            for entry in chunk:
                if entry.key in self.done:
                    self.write_tokens(entry.key, self.done.pop(entry.key))


def run_tokenize(model: S3Tokenizer, entries: Sequence[WavEntry],
                 write_tokens: Callable[[str, List[int]], None],
                 write_failure: Callable[[str, str], None],
                 batch_size: Optional[int] = None, max_frames_per_batch: Optional[int] = None, chunk_size: int = 0,
                 num_workers: Optional[int] = None, base_dir=None, device: Optional[torch.device] = None,
                 progress: bool = True, skip: Collection[str] = (), batch_mel: Optional[bool] = None,
                 cpu_mel: bool = False) -> RunStats:
    """Tokenize ``entries``: decode in threads a chunk ahead, batch by length, run the model, write.

    Every entry not in ``skip`` ends in exactly one of ``write_tokens`` or ``write_failure`` (key, one-line
    reason); tokens are written in the order of ``entries``. ``max_frames_per_batch`` bounds the padded mel
    frames of one forward pass, short items and windows of long ones alike (default: ``default_max_frames``
    of the model's device). ``batch_size``, ``num_workers``, ``chunk_size`` (utterances) and ``batch_mel``
    (log-mels per batch in the main thread, not in the decode threads): None or 0 for what suits the model's
    device (:func:`defaults_for`); ``device``: where decode threads compute log-mels when they do; ``cpu_mel``
    (with ``batch_mel``): log-mels on the CPU, carried to the model's device with the batch (see :func:`feeder`).

    ``skip``: keys already done (a resumed job). Chunks and batches are still cut from all of ``entries``,
    as in an uninterrupted run, so every other key meets the same batch neighbours and padding and gets
    the same bits; chunks and batches made only of skipped keys are not decoded or run.
    """
    max_frames_per_batch = max_frames_per_batch or default_max_frames(model.device)
    plan = defaults_for(model.device, max_frames_per_batch, batch_size, num_workers, chunk_size, batch_mel)
    logger.info("feeding %s: batches of %s, %d padded frames per forward pass; %d decode threads; chunks of %s; "
                "log-mels %s", model.device, plan.batch_size or "any size", max_frames_per_batch, plan.num_workers,
                " or ".join(([f"{plan.chunk_size} utterances"] if plan.chunk_size else [])
                            + ([f"~{plan.chunk_seconds:.0f} s of audio"] if plan.chunk_seconds else [])) or "all",
                "per batch on the model's device" if plan.batch_mel else "in the decode threads")
    stats = RunStats()
    skip = frozenset(skip)
    chunks = [c for c in cut_chunks(entries, plan, base_dir) if any(e.key not in skip for e in c)]
    watch = FaultWatch()
    start = time.perf_counter()
    bar = tqdm(total=sum(e.key not in skip for e in entries), unit="utt", disable=not progress,
               dynamic_ncols=True)
    order = InOrder(write_tokens)

    def fail(key: str, reason: str) -> None:
        if key in skip:  # done before a resume: only rerun to keep the batches as they were
            return
        stats.failed += 1
        stats.failures.append(Failure(key, reason))
        logger.warning("%s: failed: %s", key, reason)
        write_failure(key, reason)
        bar.update(1)

    def handle(results: Results) -> None:
        for f, toks in results:
            if f.key in skip:
                continue
            if isinstance(toks, str) or not toks:
                fail(f.key, toks or "model returned no tokens")
                continue
            order.done[f.key] = toks
            stats.done += 1
            stats.audio_seconds += f.seconds
            bar.update(1)
        stats.wall_seconds = time.perf_counter() - start
        bar.set_postfix_str(f"{stats.speed:.1f} audio s/s, {stats.failed} failed")

    runner = OneAhead(lambda b: launch_batch(model, b, max_frames_per_batch, plan.batch_mel), handle, fail, watch)
    decoded = featurized_chunks(chunks, feeder(plan, base_dir, device, cpu_mel), plan.num_workers, fail, stats, model.device)
    for ci, (chunk, feats) in enumerate(decoded):
        with stats.timed("batching"):
            batches = make_batches(feats, plan.batch_size, max_frames_per_batch)
        for batch in (b for b in batches if not all(f.key in skip for f in b)):
            with stats.timed("model"):
                runner.push(batch, ci)
            with stats.timed("writing"):
                order.write_ready(runner.busy)
        order.close(ci, chunk)
        with stats.timed("writing"):
            order.write_ready(runner.busy)
    with stats.timed("model"):
        runner.flush()
    with stats.timed("writing"):
        order.write_ready(None)
    bar.close()
    stats.wall_seconds = time.perf_counter() - start
    return stats
