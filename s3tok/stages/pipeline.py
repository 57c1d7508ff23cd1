"""The tokenize loop: decode, log-mel, length-sorted batches, model, writer; bad utterances recorded."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from s3tok.data.audio import audio_source_name, log_mel_spectrogram, padding, read_audio, to_mono
from s3tok.data import WavEntry, open_wav_entry
from s3tok.data.ark import read_float_matrix
from s3tok.data.sources import Utterance
from s3tok.model import S3Tokenizer
from s3tok.model.tokenizer import default_max_frames
from s3tok.model.packing import pack_by_length

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_SAMPLES = 200  # the centred STFT reflects 200 samples at each edge


@dataclass
class Features:
    """One decoded utterance: its key, log-mel ``[128, T]`` and duration in seconds."""

    key: str
    mel: torch.Tensor
    seconds: float


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

    @property
    def speed(self) -> float:
        """Seconds of audio per second of wall time (inverse real-time factor)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def read_utterance(utt: Utterance, base_dir=None) -> Tuple[torch.Tensor, int, str]:
    """An utterance's audio as decoded, ``([channels, samples], rate, name for messages)``: a whole
    recording, a segment of one, or a tar member or parquet row (its bytes, read in place)."""
    if utt.member is not None:
        src = utt.member.open()
        return (*read_audio(src), audio_source_name(src))
    if utt.segment:
        from s3tok.data.segments import read_utterance_audio

        return read_utterance_audio(utt.recording, utt.start, utt.end, base_dir=base_dir, key=utt.key)
    src = open_wav_entry(utt.recording, base_dir)
    return (*read_audio(src), audio_source_name(src))


def load_waveform(utt: Utterance, base_dir=None) -> torch.Tensor:
    """16 kHz mono waveform of an utterance (channel mean, as the tokenizers take it)."""
    audio, rate, name = read_utterance(utt, base_dir)
    return to_mono(audio, rate, SAMPLE_RATE, name)


def featurize(utt: Union[Utterance, WavEntry], base_dir=None, device: Optional[torch.device] = None) -> Features:
    """Log-mel of one utterance (decoded and computed, or read from ``feats``); raises on bad input."""
    if isinstance(utt, WavEntry):
        utt = Utterance(utt.key, recording=utt)
    if utt.feats is not None:
        mel = read_mel(utt.feats)
        check_finite(mel)
        return Features(utt.key, mel.to(device) if device is not None else mel, mel.shape[-1] / 100.0)
    wav = load_waveform(utt, base_dir)
    if wav.numel() <= MIN_SAMPLES:
        raise ValueError(f"audio too short: {wav.numel()} samples at 16 kHz (need > {MIN_SAMPLES})")
    if not torch.isfinite(wav).all():
        raise ValueError("audio contains NaN or infinite samples")
    mel = log_mel_spectrogram(wav, device=device)
    check_finite(mel)
    return Features(utt.key, mel, wav.numel() / SAMPLE_RATE)


def check_finite(mel: torch.Tensor) -> None:
    """A NaN or infinity in a log-mel (a damaged feats file, float audio scaled past float32's range) would
    give one repeated token for the whole utterance: such an utterance fails instead."""
    if not torch.isfinite(mel).all():
        raise ValueError("log-mel not finite (NaN or infinity: damaged features, or audio samples far "
                         "outside [-1, 1])")


def read_mel(rxfilename: str) -> torch.Tensor:
    """A stored log-mel (Kaldi matrix, frames x bins) as ``[bins, frames]`` float32."""
    m = read_float_matrix(rxfilename)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"log-mel {rxfilename} has shape {m.shape}, expected [frames, bins] with frames > 0")
    return torch.from_numpy(np.ascontiguousarray(m.T))


def make_batches(items: Sequence[Features], batch_size: int, max_frames_per_batch: int) -> List[List[Features]]:
    """Longest first, up to ``batch_size`` items and ``max_frames_per_batch`` padded frames per batch
    (a longer item goes alone). Each item lands once."""
    return pack_by_length(items, lambda f: f.mel.shape[-1], max_frames_per_batch, batch_size)


def tokenize_batch(model: S3Tokenizer, batch: Sequence[Features],
                   max_frames: Optional[int] = None) -> List[List[int]]:
    """Tokens of each item of one batch; windows of long items go at most ``max_frames`` padded frames
    per forward pass (default: what suits the model's device)."""
    mels, lens = padding([f.mel for f in batch])
    codes, code_lens = model.quantize(mels, lens, max_frames_per_forward=max_frames)
    codes = codes.cpu()
    return [codes[i, :int(n)].tolist() for i, n in enumerate(code_lens.tolist())]


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


def featurized_chunks(chunks: Sequence[Sequence], featurize_one: Callable, num_workers: int,
                      fail: Callable[[str, str], None], stats: "RunStats") -> Iterator[Tuple[Sequence, list]]:
    """``(chunk, features)`` for each chunk of items (with a ``key``), their features computed by
    ``featurize_one`` in ``num_workers`` threads one chunk ahead, so the model is busy while the next decodes.
    An item that fails goes to ``fail(key, one-line reason)``; time spent waiting adds to
    ``stats.input_wait_seconds``."""
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        def submit(chunk: Sequence) -> list:
            return [(item, pool.submit(featurize_one, item)) for item in chunk]

        pending = submit(chunks[0]) if chunks else []
        for ci, chunk in enumerate(chunks):
            current, pending = pending, (submit(chunks[ci + 1]) if ci + 1 < len(chunks) else [])
            feats = []
            for item, fut in current:
                waited = time.perf_counter()
                try:
                    feats.append(fut.result())
                except Exception as e:  # noqa: BLE001 - any decode problem is this item's failure
                    fail(item.key, one_line(e))
                stats.input_wait_seconds += time.perf_counter() - waited
            yield chunk, feats


def run_tokenize(model: S3Tokenizer, entries: Sequence[WavEntry],
                 write_tokens: Callable[[str, List[int]], None],
                 write_failure: Callable[[str, str], None],
                 batch_size: int = 16, max_frames_per_batch: Optional[int] = None, chunk_size: int = 0,
                 num_workers: int = 2, base_dir=None, device: Optional[torch.device] = None,
                 progress: bool = True, skip: Collection[str] = ()) -> RunStats:
    """Tokenize ``entries``: decode/mel in ``num_workers`` threads a chunk ahead, batch by length, write.

    Every entry not in ``skip`` ends in exactly one of ``write_tokens`` or ``write_failure`` (key, one-line
    reason); tokens are written in the order of ``entries``. ``max_frames_per_batch`` bounds the padded mel
    frames of one forward pass, short items and windows of long ones alike (default: ``default_max_frames``
    of the model's device).

    ``skip``: keys already done (a resumed job). Chunks and batches are still cut from all of ``entries``,
    as in an uninterrupted run, so every other key meets the same batch neighbours and padding and gets
    the same bits; chunks and batches made only of skipped keys are not decoded or run.
    """
    max_frames_per_batch = max_frames_per_batch or default_max_frames(model.device)
    stats = RunStats()
    chunk_size = chunk_size or max(batch_size * 8, 64)
    skip = frozenset(skip)
    chunks = [entries[i:i + chunk_size] for i in range(0, len(entries), chunk_size)]
    chunks = [c for c in chunks if any(e.key not in skip for e in c)]
    watch = FaultWatch()
    start = time.perf_counter()
    bar = tqdm(total=sum(e.key not in skip for e in entries), unit="utt", disable=not progress,
               dynamic_ncols=True)

    def fail(key: str, reason: str) -> None:
        if key in skip:  # done before a resume: only rerun to keep the batches as they were
            return
        stats.failed += 1
        stats.failures.append(Failure(key, reason))
        logger.warning("%s: failed: %s", key, reason)
        write_failure(key, reason)
        bar.update(1)

    for chunk, feats in featurized_chunks(chunks, lambda e: featurize(e, base_dir, device), num_workers, fail,
                                          stats):
        done: dict = {}
        for batch in make_batches(feats, batch_size, max_frames_per_batch):
            if all(f.key in skip for f in batch):
                continue
            try:
                results = list(zip(batch, tokenize_batch(model, batch, max_frames_per_batch)))
                watch.succeeded()
            except Exception as e:  # noqa: BLE001 - retry one by one to isolate the bad item
                results = retry_alone(lambda b: tokenize_batch(model, b, max_frames_per_batch),
                                      batch, e, fail, watch)
            for f, toks in results:
                if f.key in skip:
                    continue
                if not toks:
                    fail(f.key, "model returned no tokens")
                    continue
                done[f.key] = toks
                stats.done += 1
                stats.audio_seconds += f.seconds
                bar.update(1)
            stats.wall_seconds = time.perf_counter() - start
            bar.set_postfix_str(f"{stats.speed:.1f} audio s/s, {stats.failed} failed")
        for entry in chunk:  # the chunk's tokens in input order
            if entry.key in done:
                write_tokens(entry.key, done.pop(entry.key))
    bar.close()
    stats.wall_seconds = time.perf_counter() - start
    return stats
