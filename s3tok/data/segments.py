"""The audio of one utterance that is a ``[start, end)`` seconds segment of a ``wav.scp`` recording.

The cut is made at the recording's own sample rate, before the channel mean and the resampling, as
Kaldi's ``extract-segments`` does: samples ``[round(start * sr), round(end * sr))`` (rounding half
away from zero, where Kaldi truncates; ``0.7 * 44100`` is ``30869.999...``, which truncation would make
30869). So a segment of a 16 kHz file is exactly that slice of the decoded file, and a segment of a
44.1 kHz file is the 16 kHz resampling of exactly that slice (not a slice of the resampled file, which
would differ near the edges by the filter's reach into the neighbouring audio).

Like ``extract-segments``, an ``end`` past the end of the file by at most ``max_overshoot`` seconds
(0.5) is cut at the end of the file; further out, or a start at or past the end, is an error. An ``end``
of None or -1 means the end of the file.

Seekable PCM/FLAC files are read from ``start`` to ``end`` only (a long recording with many segments
is not decoded once per segment); other formats, and pipes, are decoded whole and sliced. Nothing is
cached.
"""
from __future__ import annotations

import logging
import math
import os
import subprocess
from typing import BinaryIO, Optional, Tuple, Union

import soundfile as sf
import torch

from s3tok.data.audio import (SAMPLE_RATE, SF_COUNT_MAX, AudioError, audio_source_name, check_span, decode_error,
                              read_audio, to_mono)
from s3tok.data.wav_scp import WavEntry, open_wav_entry

logger = logging.getLogger(__name__)

#: Formats whose libsndfile seek is sample-exact; others are decoded whole and sliced.
EXACT_SEEK_FORMATS = frozenset({"WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF", "AU", "CAF", "NIST"})
MAX_OVERSHOOT = 0.5


def _round(x: float) -> int:
    """Round half away from zero (C's ``round``)."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def segment_samples(start: float, end: Optional[float], rate: int, num_samples: int,
                    max_overshoot: float = MAX_OVERSHOOT) -> Tuple[int, int]:
    """Sample range ``[s, e)`` of ``[start, end)`` seconds in a recording of ``num_samples`` at ``rate``.

    Raises :class:`AudioError` for a negative start, an empty segment, a start at or past the end of the
    recording, or an end more than ``max_overshoot`` seconds past it (less is cut at the end).
    """
    dur = num_samples / rate
    if not math.isfinite(start) or start < 0:
        raise AudioError(f"segment start must be >= 0, got {start}")
    if end is not None and end != -1:
        if not math.isfinite(end) or end < 0:
            raise AudioError(f"segment end must be > start or -1 (end of file), got {end}")
        if end <= start:
            raise AudioError(f"empty segment: start {start} s >= end {end} s")
    s = _round(start * rate)
    e = num_samples if end is None or end == -1 else _round(end * rate)
    if s >= num_samples:
        raise AudioError(f"segment starts at {start} s (sample {s}) but the recording has {num_samples} samples "
                         f"({dur:.3f} s)")
    if e > num_samples:
        if e - num_samples > _round(max_overshoot * rate):
            raise AudioError(f"segment ends at {end} s (sample {e}), past the end of the recording "
                             f"({num_samples} samples, {dur:.3f} s) by more than {max_overshoot} s")
        logger.debug("segment end %s s is past the end (%.3f s) by %d samples; cut there", end, dur,
                     e - num_samples)
        e = num_samples
    if e <= s:
        raise AudioError(f"empty segment: [{start}, {end}) s is [{s}, {e}) in samples at {rate} Hz")
    return s, e


def _read_span_seeking(src: Union[str, BinaryIO], start: float, end: Optional[float],
                       max_overshoot: float) -> Optional[Tuple[torch.Tensor, int]]:
    """``([channels, samples], rate)`` read from ``start`` to ``end`` only, or None when the source is not
    a seekable file of an exact-seek format (the caller then decodes it whole)."""
    if isinstance(src, str) and not os.path.isfile(src):
        return None
    try:
        f = sf.SoundFile(src)
    except Exception:  # noqa: BLE001 - read_audio will decode again and raise a proper AudioError
        if hasattr(src, "seek"):
            src.seek(0)
        return None
    with f:
        # a length the header does not state (SF_COUNT_MAX) cannot place the segment: decode whole, bounded
        if not f.seekable() or f.format not in EXACT_SEEK_FORMATS or not 0 < f.frames < SF_COUNT_MAX:
            usable = False
        else:
            usable = True
            rate = int(f.samplerate)
            s, e = segment_samples(start, end, rate, int(f.frames), max_overshoot)
            check_span(rate, e - s, int(f.channels))
            try:
                f.seek(s)
                data = f.read(e - s, dtype="float32", always_2d=True)
            except Exception as ex:  # noqa: BLE001 - soundfile raises several types (LibsndfileError, RuntimeError)
                raise decode_error(audio_source_name(src), ex, f"cannot decode samples [{s}, {e})") from None
    if not usable:
        if hasattr(src, "seek"):
            src.seek(0)
        return None
    if data.shape[0] != e - s:
        raise AudioError(f"recording is truncated: read {data.shape[0]} of samples [{s}, {e})")
    return torch.from_numpy(data.T.copy()), rate


def read_segment(src: Union[str, BinaryIO], start: float = 0.0, end: Optional[float] = None,
                 max_overshoot: float = MAX_OVERSHOOT) -> Tuple[torch.Tensor, int]:
    """Samples ``[round(start * sr), round(end * sr))`` of ``src`` at its own rate: ``([channels, n], sr)``,
    float32 scaled as :func:`s3tok.data.audio.read_audio` scales."""
    span = _read_span_seeking(src, start, end, max_overshoot)
    if span is not None:
        return span
    audio, rate = read_audio(src)
    s, e = segment_samples(start, end, rate, audio.shape[-1], max_overshoot)
    return audio[:, s:e].contiguous(), rate


def read_utterance_audio(entry: WavEntry, start: float = 0.0, end: Optional[float] = None,
                         base_dir: Union[str, os.PathLike, None] = None, key: Optional[str] = None, *,
                         max_overshoot: float = MAX_OVERSHOOT) -> Tuple[torch.Tensor, int, str]:
    """``[start, end)`` seconds of recording ``entry`` as read: ``([channels, n], rate, name)``, ``name``
    saying the utterance and the recording for messages.

    The recording is opened with :func:`~s3tok.data.wav_scp.open_wav_entry` (a path, relative ones
    against ``base_dir``, or a ``cmd |`` pipe) and cut at its own rate. ``key`` is the utterance id for
    messages. Raises :class:`AudioError` naming the utterance, the recording and the problem.
    """
    utt = key if key is not None else entry.key
    name = f"utterance {utt!r}" + (f" (recording {entry.key!r})" if utt != entry.key else "")
    try:
        src = open_wav_entry(entry, base_dir)
    except (OSError, subprocess.SubprocessError) as e:
        raise AudioError(f"{name}: {e}") from None
    where = src if isinstance(src, str) else entry.location
    try:
        audio, rate = read_segment(src, start, end, max_overshoot)
    except AudioError as e:
        msg = str(e)
        raise AudioError(f"{name}: {msg}" if msg.startswith(str(where)) else f"{name}: {where}: {msg}") from None
    return audio, rate, f"{name}: {where}"


def load_utterance_audio(entry: WavEntry, start: float = 0.0, end: Optional[float] = None,
                         base_dir: Union[str, os.PathLike, None] = None, key: Optional[str] = None, *,
                         sr: int = SAMPLE_RATE, max_overshoot: float = MAX_OVERSHOOT) -> torch.Tensor:
    """16 kHz (``sr``) mono float32 1-D waveform of ``[start, end)`` seconds of recording ``entry``
    (:func:`read_utterance_audio`, then channel-averaged and resampled)."""
    audio, rate, name = read_utterance_audio(entry, start, end, base_dir, key, max_overshoot=max_overshoot)
    return to_mono(audio, rate, sr, name)
