"""What the stages read: an utterance's audio (whole recording, segment, tar member or parquet row), its
16 kHz waveform, its log-mel (decoded, or stored by compute-mel), and a decode-ahead loop that computes them
in worker threads one chunk ahead of the model (:func:`featurized_chunks`)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from s3tok.data import WavEntry, open_wav_entry
from s3tok.data.ark import read_float_matrix
from s3tok.data.audio import audio_source_name, log_mel_spectrogram, mel_frames, read_audio, to_mono
from s3tok.data.sources import Utterance
from s3tok.util.worker_threads import worker_pool

if TYPE_CHECKING:
    from s3tok.stages.pipeline import RunStats

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_SAMPLES = 200  # the centred STFT reflects 200 samples at each edge
NOT_FINITE = ("log-mel not finite (NaN or infinity: damaged features, or audio samples far "
              "outside [-1, 1])")
NOT_FINITE_FAILURE = f"ValueError: {NOT_FINITE}"  # the reason recorded, as for the check in a decode thread


@dataclass
class Features:
    """One decoded utterance: its key, log-mel ``[128, T]`` and duration in seconds; or, when its log-mel
    is to be computed with its batch (:func:`batch_mels`), no log-mel yet and its 16 kHz waveform (host)."""

    key: str
    mel: Optional[torch.Tensor]
    seconds: float
    wav: Optional[torch.Tensor] = None
    times: Dict[str, float] = field(default_factory=dict)  # seconds spent on it per part (decode, resample, log-mel)

    @property
    def frames(self) -> int:
        """Log-mel frames (computed or to be computed)."""
        return int(self.mel.shape[-1]) if self.mel is not None else mel_frames(self.wav.numel())


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def read_utterance(utt: Utterance, base_dir=None) -> Tuple[torch.Tensor, int, str]:
    """An utterance's audio as decoded, ``([channels, samples], rate, name for messages)``: a whole
    recording, a segment of one, or a tar member or parquet row (its bytes, read in place)."""
    if utt.member is not None:
        with utt.member.open() as src:
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


def featurize(utt: Union[Utterance, WavEntry], base_dir=None, device: Optional[torch.device] = None,
              waveform: bool = False) -> Features:
    """Log-mel of one utterance (decoded and computed on ``device``, or read from ``feats``); raises on bad
    input. ``waveform``: decode only, the waveform kept on the host for :func:`batch_mels` (``device`` unused)."""
    if isinstance(utt, WavEntry):
        utt = Utterance(utt.key, recording=utt)
    t0 = time.perf_counter()
    if utt.feats is not None:
        mel = read_mel(utt.feats)
        check_finite(mel)
        on = device if device is not None and not waveform else None
        return Features(utt.key, mel.to(on) if on is not None else mel, mel.shape[-1] / 100.0,
                        times={"decode": time.perf_counter() - t0})
    audio, rate, name = read_utterance(utt, base_dir)
    t1 = time.perf_counter()
    wav = to_mono(audio, rate, SAMPLE_RATE, name)
    t2 = time.perf_counter()
    times = {"decode": t1 - t0, "resample": t2 - t1}
    if wav.numel() <= MIN_SAMPLES:
        raise ValueError(f"audio too short: {wav.numel()} samples at 16 kHz (need > {MIN_SAMPLES})")
    if not torch.isfinite(wav).all():
        raise ValueError("audio contains NaN or infinite samples")
    if waveform:
        return Features(utt.key, None, wav.numel() / SAMPLE_RATE, wav=wav, times=times)
    mel = log_mel_spectrogram(wav, device=device)
    check_finite(mel)
    times["log-mel"] = time.perf_counter() - t2
    return Features(utt.key, mel, wav.numel() / SAMPLE_RATE, times=times)


def check_finite(mel: torch.Tensor) -> None:
    """A NaN or infinity in a log-mel (a damaged feats file, float audio scaled past float32's range) would
    give one repeated token for the whole utterance: such an utterance fails instead."""
    if not torch.isfinite(mel).all():
        raise ValueError(NOT_FINITE)


def read_mel(rxfilename: str) -> torch.Tensor:
    """A stored log-mel (Kaldi matrix, frames x bins) as ``[bins, frames]`` float32."""
    m = read_float_matrix(rxfilename)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"log-mel {rxfilename} has shape {m.shape}, expected [frames, bins] with frames > 0")
    return torch.from_numpy(np.ascontiguousarray(m.T))


def bind_device(device: Optional[torch.device]) -> None:
    """Make ``device`` this thread's current CUDA device, so that calls naming no device (pinned memory,
    events, synchronize) go to it and not to GPU 0 (torchrun: one GPU per rank). A no-op elsewhere."""
    if device is not None and torch.device(device).type == "cuda" and torch.device(device).index is not None:
        torch.cuda.set_device(device)


def featurized_chunks(chunks: Sequence[Sequence], featurize_one: Callable, num_workers: int,
                      fail: Callable[[str, str], None], stats: "RunStats",
                      device: Optional[torch.device] = None) -> Iterator[Tuple[Sequence, list]]:
    """``(chunk, features)`` for each chunk of items (with a ``key``), their features computed by
    ``featurize_one`` in ``num_workers`` threads (one intra-op thread each) one chunk ahead, so the model is
    busy while the next decodes.
    An item that fails goes to ``fail(key, one-line reason)``; time spent waiting adds to
    ``stats.input_wait_seconds``. ``device``: made each thread's current CUDA device (:func:`bind_device`)."""
    with worker_pool(num_workers, initializer=bind_device, initargs=(device,)) as pool:
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
                    for part, seconds in getattr(feats[-1], "times", {}).items():
                        stats.add(part, seconds)
                except Exception as e:  # noqa: BLE001 - any decode problem is this item's failure
                    fail(item.key, one_line(e))
                stats.input_wait_seconds += time.perf_counter() - waited
            yield chunk, feats
