"""Kaldi log-mel filterbank features for CosyVoice's CAM++ speaker embedding, without torchaudio.

Reproduces ``torchaudio.compliance.kaldi.fbank(wave[None], num_mel_bins=80, dither=0,
sample_frequency=16000)`` with its other defaults: 25 ms frames every 10 ms that fit whole in the
signal (snip_edges), each frame's mean removed, pre-emphasis 0.97, Povey window (Hann ** 0.85),
zero-padded to a 512-point FFT, power spectrum, 80 triangular bins on Kaldi's mel scale from 20 Hz to
Nyquist, log floored at float32 epsilon. :func:`embedding_features` adds what CosyVoice's
``tools/extract_embedding.py`` does around it: channel 0, resampling to 16 kHz, mean over time removed.
"""
from __future__ import annotations

import functools
import math
from typing import List, Sequence

import torch

from s3tok.data.audio import SAMPLE_RATE, AudioError, resample

FRAME_LENGTH = 400  # samples: 25 ms at 16 kHz
FRAME_SHIFT = 160  # samples: 10 ms
N_FFT = 512  # frame length rounded up to a power of two
PREEMPHASIS = 0.97
LOW_FREQ = 20.0  # Hz; the high edge is Nyquist
EPSILON = torch.finfo(torch.float32).eps


def _kaldi_mel(hz: float) -> float:
    return 1127.0 * math.log(1.0 + hz / 700.0)


@functools.lru_cache(maxsize=4)
def _mel_banks(num_mel_bins: int) -> torch.Tensor:
    """Kaldi's triangular filters ``[num_mel_bins, N_FFT // 2 + 1]``: equally spaced on the mel scale between
    ``LOW_FREQ`` and Nyquist, linear in mel, zero at the Nyquist bin. Evaluated in float32 as torchaudio
    does: the filters reach into bins whose power is float32 noise (near-silent frames), where a float64
    table moves the log by a few 1e-4."""
    lo, hi = _kaldi_mel(LOW_FREQ), _kaldi_mel(SAMPLE_RATE / 2)
    edges = lo + torch.arange(num_mel_bins + 2, dtype=torch.float32)[:, None] * ((hi - lo) / (num_mel_bins + 1))
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    hz = torch.arange(N_FFT // 2, dtype=torch.float32) * (SAMPLE_RATE / N_FFT)
    mel = 1127.0 * (1.0 + hz / 700.0).log()
    banks = torch.min((mel - left) / (center - left), (right - mel) / (right - center)).clamp_min(0.0)
    return torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin takes no part


@functools.lru_cache(maxsize=1)
def _povey_window() -> torch.Tensor:
    """Kaldi's Povey window: symmetric Hann to the power 0.85 (float32, as torchaudio builds it)."""
    return torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float32).pow(0.85)


def num_frames(num_samples: int) -> int:
    """Frames Kaldi makes of ``num_samples`` with snip_edges: only those that fit whole."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def _frames(wave: torch.Tensor) -> torch.Tensor:
    if wave.dim() != 1:
        raise ValueError(f"fbank needs a 1-D waveform, got shape {tuple(wave.shape)}")
    if wave.shape[0] < FRAME_LENGTH:
        raise AudioError(f"{wave.shape[0]} samples at 16 kHz is too short for one {FRAME_LENGTH}-sample "
                         "(25 ms) fbank frame")
    return wave.unfold(0, FRAME_LENGTH, FRAME_SHIFT)


def _fbank_frames(frames: torch.Tensor, num_mel_bins: int) -> torch.Tensor:
    """Log-mel of ``frames [T, FRAME_LENGTH]`` (any float dtype promoted to float32)."""
    x = frames.float()
    x = x - x.mean(dim=1, keepdim=True)
    x = x - PREEMPHASIS * torch.cat([x[:, :1], x[:, :-1]], dim=1)  # the first sample is its own previous
    x = x * _povey_window().to(x.device)
    power = torch.fft.rfft(x, n=N_FFT).abs().pow(2)
    mel = power @ _mel_banks(num_mel_bins).to(x.device).T
    return mel.clamp_min(EPSILON).log()


def fbank(wave: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """Kaldi fbank ``[T, num_mel_bins]`` of a 1-D 16 kHz waveform, as torchaudio's
    ``compliance.kaldi.fbank(wave[None], num_mel_bins=num_mel_bins, dither=0)``.

    Raises :class:`AudioError` when the waveform is shorter than one frame (400 samples).
    """
    return _fbank_frames(_frames(wave), num_mel_bins)


def fbank_batch(waves: Sequence[torch.Tensor], num_mel_bins: int = 80) -> List[torch.Tensor]:
    """:func:`fbank` of several waveforms, their frames computed together in one pass."""
    frames = [_frames(w) for w in waves]
    if not frames:
        return []
    feats = _fbank_frames(torch.cat(frames), num_mel_bins)
    return list(feats.split([f.shape[0] for f in frames]))


def embedding_features(audio: torch.Tensor, rate: int, num_mel_bins: int = 80) -> torch.Tensor:
    """CAM++ input ``[T, num_mel_bins]`` as CosyVoice's ``tools/extract_embedding.py`` makes it from
    ``torchaudio.load``'s ``[C, N]`` (or ``[N]``) float audio: channel 0 (what ``kaldi.fbank`` reads with
    its default ``channel=-1``), resampled to 16 kHz, fbank, the mean over time subtracted."""
    wave = audio if audio.dim() == 1 else audio[0]
    if not torch.isfinite(wave).all():
        raise AudioError("audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        wave = resample(wave, rate, SAMPLE_RATE)
    if wave.shape[-1] < FRAME_LENGTH:
        raise AudioError(f"audio too short for a speaker embedding: {wave.shape[-1]} samples at 16 kHz, "
                         f"at least {FRAME_LENGTH} (25 ms) needed for one fbank frame")
    feat = fbank(wave, num_mel_bins)
    return feat - feat.mean(dim=0, keepdim=True)
