"""Audio front end: decode, mono, resample to 16 kHz, Whisper log-mel, padding.

Everything here reproduces what CosyVoice feeds its tokenizers: ``torchaudio.load`` float scaling,
the channel mean before resampling, ``torchaudio.transforms.Resample`` (windowed sinc, Hann,
``lowpass_filter_width=6``, ``rolloff=0.99``) and Whisper's 128-bin log-mel. Nothing needs
torchaudio or librosa; the resampler and the mel run on any torch device.
"""
from __future__ import annotations

import contextlib
import io
import functools
import logging
import math
import os
import re
import stat
import threading
from collections import OrderedDict
from typing import BinaryIO, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
import torch

from s3tok.model.tokenizer import exact_fp32, to_device_nowait

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99

AudioSource = Union[str, os.PathLike, BinaryIO]


class AudioError(ValueError):
    """Audio that cannot be used: missing, undecodable or empty. The message names the source."""


# Bounds that keep memory finite on hostile input: a header claiming a tiny or a huge sample rate, an odd rate
# that would need a huge resampling filter, hours of audio, or many channels at a high rate.
# ``s3tok tokenize --max_duration`` / ``compute_mel --max_duration`` set the duration for the process.
MAX_DURATION = 2 * 3600.0  # seconds of audio per utterance (default); 16 kHz mono: 460 MB waveform, 370 MB log-mel
MIN_SAMPLE_RATE = 1000  # Hz; below this a header does not describe audio
#: Hz; the highest rate audio is recorded at (768 kHz DACs, 705.6 kHz DXD). FLAC's former maximum is 655350 Hz;
#: a WAV header can say 4.29 GHz, for which even the resampler's filter would not fit in memory.
MAX_SAMPLE_RATE = 768000
#: decoded samples (frames x channels) per second of ``--max_duration``: 48 kHz stereo, as for pipes below.
#: At the default 7200 s: 691 M samples (2.8 GB of float32); 5.1 audio at 48 kHz up to 40 min, mono at 96 kHz
#: up to 2 h. A 1 MB FLAC of silence at 655 kHz x 8 channels would otherwise decode to gigabytes.
SAMPLES_PER_SECOND = 48000 * 2
#: elements of one resampling filter (float32, 48 MB; about 32 bytes per element while it is built, once).
#: Every usual rate needs far less (44.1 kHz: 76 000, 11.025 kHz: 291 200, 44.056 kHz: 11 M); a rate with a
#: small common divisor with 16 kHz (22051 Hz: 353 M, 1.4 GB) is refused.
MAX_RESAMPLE_KERNEL = 12_000_000
MAX_CACHED_KERNELS = 2 * MAX_RESAMPLE_KERNEL  # elements of all the filters kept between calls (96 MB)
PIPE_BYTES_PER_SECOND = 48000 * 2 * 2  # a pipe may write at most this per allowed second (48 kHz stereo int16)
#: libsndfile's frame count when the header does not say it (a FLAC written to a pipe: total samples 0)
SF_COUNT_MAX = 2 ** 63 - 1
READ_BLOCK_SAMPLES = 1 << 22  # samples (frames x channels) read at a time when the length is unknown


@contextlib.contextmanager
def duration_limit(seconds: float):
    """Within the block, the longest utterance (seconds) that decoding accepts; longer ones fail cleanly,
    before their samples are allocated. The previous limit comes back afterwards."""
    global MAX_DURATION
    if not seconds > 0:
        raise ValueError(f"--max_duration must be positive, got {seconds}")
    previous, MAX_DURATION = MAX_DURATION, float(seconds)
    try:
        yield
    finally:
        MAX_DURATION = previous


def max_samples() -> int:
    """Most decoded samples (frames x channels) one utterance may have: :data:`SAMPLES_PER_SECOND` per
    second of :data:`MAX_DURATION`."""
    return int(MAX_DURATION * SAMPLES_PER_SECOND)


def _kernel_width(orig: int, new: int) -> int:
    """Input samples each side of the resampling filter, for gcd-reduced rates (torchaudio's formula)."""
    return math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF))


def resample_kernel_elements(orig_sr: int, new_sr: int = SAMPLE_RATE) -> int:
    """Elements of the filter that resampling ``orig_sr`` to ``new_sr`` builds (0 when they are equal)."""
    if orig_sr == new_sr:
        return 0
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    return new * (2 * _kernel_width(orig, new) + orig)


def check_resample_rates(orig_sr: int, new_sr: int = SAMPLE_RATE) -> None:
    """Refuse a rate pair whose resampling filter would be over :data:`MAX_RESAMPLE_KERNEL` elements."""
    n = resample_kernel_elements(orig_sr, new_sr)
    if n > MAX_RESAMPLE_KERNEL:
        raise AudioError(f"sample rate {orig_sr} Hz cannot be resampled to {new_sr} Hz: its filter would have "
                         f"{n} elements, over the {MAX_RESAMPLE_KERNEL} limit (a rate with a small common "
                         f"divisor with {new_sr} Hz)")


def check_span(rate: int, frames: int, channels: int = 1) -> None:
    """Refuse, before reading, a header rate that is not audio (below :data:`MIN_SAMPLE_RATE`, above
    :data:`MAX_SAMPLE_RATE`, or needing a resampling filter over :data:`MAX_RESAMPLE_KERNEL`), a span over
    :data:`MAX_DURATION`, or more samples (``frames x channels``) than :func:`max_samples`."""
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(f"sample rate {rate} Hz in the header is not audio (at least {MIN_SAMPLE_RATE} Hz)")
    if rate > MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {rate} Hz in the header is over the {MAX_SAMPLE_RATE} Hz limit")
    check_resample_rates(rate, SAMPLE_RATE)
    if frames / rate > MAX_DURATION:
        raise AudioError(f"{frames / rate:.0f} s of audio, over the {MAX_DURATION:.0f} s limit (--max_duration)")
    check_samples(frames, channels, rate)


def check_samples(frames: int, channels: int, rate: int) -> None:
    """Refuse ``frames x channels`` over :func:`max_samples`, saying the sizes and the option to raise."""
    limit = max_samples()
    if frames * channels > limit:
        raise AudioError(f"{channels} channel(s) x {frames} frames at {rate} Hz is {frames * channels} samples, "
                         f"over the {limit} limit (48 kHz stereo for the {MAX_DURATION:.0f} s of --max_duration; "
                         f"raise --max_duration to allow more)")


def max_pipe_bytes() -> int:
    """How many bytes a ``wav.scp`` pipe may write before it is killed (tied to :data:`MAX_DURATION`)."""
    return int(MAX_DURATION * PIPE_BYTES_PER_SECOND) + (1 << 20)


def audio_source_name(source: AudioSource) -> str:
    """A path as given, else the file object's name: how messages name a source."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<file object>"))


def _not_a_file(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``path`` cannot be opened as an audio file (missing, a folder, a FIFO, a broken link), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "no such audio file"
    except OSError as e:
        return f"cannot open ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not an audio file"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({kind}), not read"


def decode_error(name: str, e: BaseException, what: str = "cannot decode audio") -> AudioError:
    """An :class:`AudioError` for a decoder exception: ``name: what (its first line)``, no object addresses."""
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    reason = re.sub(r"<_io\.\w+ object at 0x[0-9a-fA-F]+>", "the stream", reason)  # same text every run
    return AudioError(f"{name}: {what} ({reason})")


def read_frames(f: sf.SoundFile, name: str) -> np.ndarray:
    """All frames of an open ``f`` as float32 ``[frames, channels]``, checked against the limits first.

    The frame count is passed to ``read`` (telephony codecs such as GSM 6.10, which libsndfile cannot seek,
    need it). A length the header does not state (:data:`SF_COUNT_MAX`) is read block by block and refused
    as soon as it is over :data:`MAX_DURATION` or :func:`max_samples`.
    """
    rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
    try:
        check_span(rate, 0 if frames >= SF_COUNT_MAX else frames, channels)
    except AudioError as e:
        raise AudioError(f"{name}: {e}") from None
    if frames < SF_COUNT_MAX:
        return f.read(frames, dtype="float32", always_2d=True)
    return _read_unknown_length(f, name, rate, channels)


def _read_unknown_length(f: sf.SoundFile, name: str, rate: int, channels: int) -> np.ndarray:
    """Frames of ``f`` whose header does not state its length, read block by block up to the limits.

    libsndfile's own read is called (``sf_readf_float``): soundfile's ``read`` seeks to its new position after
    each block, and libsndfile's FLAC reader fails that seek at the end of such a stream.
    """
    limit = min(int(MAX_DURATION * rate), max_samples() // max(channels, 1))
    block_frames = max(1, READ_BLOCK_SAMPLES // max(channels, 1))
    logger.debug("%s: length not in the header; reading at most %d frames", name, limit)
    snd, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    if snd is None or ffi is None or not hasattr(snd, "sf_readf_float"):
        raise AudioError(f"{name}: the header does not state the length (a stream such as a FLAC written to a "
                         f"pipe), which this soundfile cannot read")
    blocks, total = [], 0
    while True:
        block = np.empty((block_frames, channels), np.float32)
        got = int(snd.sf_readf_float(f._file, ffi.cast("float *", block.ctypes.data), block_frames))
        if got <= 0:
            break
        total += got
        if total > limit:
            if total / rate > MAX_DURATION:
                why = f"over the {MAX_DURATION:.0f} s limit (--max_duration)"
            else:
                why = f"over the {max_samples()} samples limit (48 kHz stereo for the {MAX_DURATION:.0f} s of " \
                      f"--max_duration; raise --max_duration to allow more)"
            raise AudioError(f"{name}: length not in the header, and the audio goes on past the limit: stopped at "
                             f"{total} frames x {channels} channel(s) at {rate} Hz, {why}")
        blocks.append(block[:got])
    err = int(snd.sf_error(f._file))
    if err:
        reason = ffi.string(snd.sf_error_number(err)).decode("utf-8", "replace")
        raise AudioError(f"{name}: cannot decode audio ({reason}; length not in the header, read {total} frames)")
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)


def read_audio(source: AudioSource) -> Tuple[torch.Tensor, int]:
    """Decode ``source`` with soundfile as ``torchaudio.load`` would: float32 ``[channels, samples]``
    (int16 / 2^15, int24 / 2^23, int32 / 2^31, float as stored) and the sample rate."""
    name = audio_source_name(source)
    if isinstance(source, (str, os.PathLike)):
        why = _not_a_file(source)
        if why is not None:
            raise AudioError(f"{name}: {why}")
    elif not _seekable(source):
        source = _read_stream(source, name)
    try:
        with sf.SoundFile(source) as f:
            rate = int(f.samplerate)
            data = read_frames(f, name)
    except AudioError:
        raise
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise decode_error(name, e) from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _read_stream(f: BinaryIO, name: str) -> BinaryIO:
    """A file object that cannot seek (a subprocess's stdout, a socket), read into memory up to
    :func:`max_pipe_bytes`: soundfile seeks in every format's header, and on a stream those seeks fail."""
    limit = max_pipe_bytes()
    data = f.read(limit + 1)
    if len(data) > limit:
        raise AudioError(f"{name}: a stream of more than {limit} bytes (the --max_duration bound for streams)")
    out = io.BytesIO(data)
    out.name = name
    return out


def load_audio(source: AudioSource, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Decode ``source`` (path or binary file object), average the channels, resample to ``sr``.

    Returns a float32 1-D tensor. Raises :class:`AudioError` naming the source and the problem.
    """
    audio, rate = read_audio(source)
    return to_mono(audio, rate, sr, audio_source_name(source))


def to_mono(audio: torch.Tensor, rate: int, sr: int = SAMPLE_RATE, name: str = "audio") -> torch.Tensor:
    """Channel mean of ``[channels, samples]`` (before resampling, as CosyVoice), checked finite, at ``sr``."""
    audio = audio[0] if audio.shape[0] == 1 else audio.mean(dim=0)  # one channel: the same values, no copy
    if not torch.isfinite(audio).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    if rate != sr:
        try:
            audio = resample(audio, rate, sr)
        except AudioError as e:
            raise AudioError(f"{name}: {e}") from None
    return audio


_kernels: "OrderedDict[Tuple[int, int], Tuple[torch.Tensor, int]]" = OrderedDict()
_kernels_lock = threading.Lock()


def _cached_kernel(orig: int, new: int) -> Tuple[torch.Tensor, int]:
    """:func:`_sinc_kernel_cpu`, kept for later calls: least recently used filters are dropped once all
    together are over :data:`MAX_CACHED_KERNELS` elements. One filter is built at a time (the lock), so
    decoding threads never hold two builds' temporaries at once."""
    with _kernels_lock:
        hit = _kernels.get((orig, new))
        if hit is not None:
            _kernels.move_to_end((orig, new))
            return hit
        built = _kernels[(orig, new)] = _sinc_kernel_cpu(orig, new)
        total = sum(k.numel() for k, _ in _kernels.values())
        while total > MAX_CACHED_KERNELS and len(_kernels) > 1:
            _, (dropped, _) = _kernels.popitem(last=False)
            total -= dropped.numel()
        return built


def _sinc_kernel_cpu(orig: int, new: int) -> Tuple[torch.Tensor, int]:
    """torchaudio's windowed-sinc kernel for gcd-reduced rates: built in float64, rounded to float32 once.

    Shape ``[new, 1, 2 * width + orig]``; output phase ``j`` reads input offsets ``-width .. width + orig``.
    Built with numpy, not torch: torch runs large elementwise ops in several threads, and where the
    threads split the tensor moves which elements take the vectorised and which the scalar sin/cos, so
    the kernel's last bits could differ from one process to the next. Not cached (see :func:`_cached_kernel`).
    """
    base = min(orig, new) * ROLLOFF
    width = _kernel_width(orig, new)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, None] / orig
    # torchaudio divides the integer phase index in the default (float32) dtype before adding idx
    phase = (np.arange(0, -new, -1, dtype=np.float32) / np.float32(new))[:, None, None]
    t = (phase.astype(np.float64) + idx) * base
    t = np.clip(t, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = np.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel = kernel * (window * (base / orig))
    return torch.from_numpy(kernel.astype(np.float32)), width


def resample(audio: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Resample ``audio [..., samples]`` like ``torchaudio.transforms.Resample(orig_sr, new_sr)``.

    Runs on the device of ``audio``; output length ``ceil(new * samples / orig)`` (gcd-reduced rates).
    Raises :class:`AudioError` for rates whose filter would be over :data:`MAX_RESAMPLE_KERNEL` elements.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return audio
    if not audio.is_floating_point():
        raise TypeError(f"resample needs a floating-point waveform, got {audio.dtype}")
    check_resample_rates(orig_sr, new_sr)
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    kernel, width = _cached_kernel(orig, new)
    kernel = kernel.to(device=audio.device, dtype=audio.dtype)
    shape = audio.shape
    x = audio.reshape(-1, shape[-1])
    length = x.shape[-1]
    x = torch.nn.functional.pad(x, (width, width + orig))
    y = torch.nn.functional.conv1d(x[:, None], kernel, stride=orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    target = int(math.ceil(new * length / orig))
    return y[..., :target].reshape(shape[:-1] + (-1,))


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa, ``htk=False``)."""
    f = np.asanyarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mel = f / f_sp
    above = f >= min_log_hz
    mel = np.where(above, min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, mel)
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asanyarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def mel_filters_np(n_mels: int = 128, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters ``[n_mels, n_fft // 2 + 1]`` float32,
    as ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)`` (the table Whisper ships)."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    lo, hi = _hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sr / 2.0))
    mel_f = _mel_to_hz(np.linspace(lo, hi, n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, None]
    return weights


@functools.lru_cache(maxsize=16)
def _mel_filters(device: torch.device, n_mels: int) -> torch.Tensor:
    return torch.from_numpy(mel_filters_np(n_mels)).to(device)


@functools.lru_cache(maxsize=16)
def _hann(device: torch.device) -> torch.Tensor:
    """Periodic Hann window of ``N_FFT``, in float64 rounded once to float32 (numpy: the same bits in every
    thread; torch.hann_window, made in float32, once came out 7.5e-5 off in a decoding thread)."""
    n = np.arange(N_FFT, dtype=np.float64)
    return torch.from_numpy((0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)).to(device)


MEL_CHUNK_FRAMES = 3000  # log-mel frames computed at a time (30 s)


def mel_frames(num_samples: int) -> int:
    """Log-mel frames of ``num_samples`` 16 kHz samples (the last STFT frame is dropped)."""
    return num_samples // HOP_LENGTH


def _check_length(n: int, what: str = "audio") -> None:
    if n <= N_FFT // 2:
        raise ValueError(f"{what} too short for a log-mel: {n} samples at 16 kHz (need > {N_FFT // 2})")


def _power_spectrum(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """``|STFT|^2`` of ``x [..., N]`` (frames of ``N_FFT`` every ``HOP_LENGTH``, no centring): ``[..., 201, T]``.

    On CPU the FFT is numpy's pocketfft, not ``torch.stft``: MKL's FFT, behind ``torch.stft`` on CPU, picks
    its algorithm per transform size at run time, so the same audio could give log-mels that differ in the
    last bits from one process to the next (seen in about 1 run in 12 with 2 threads, and when the decoding
    threads overlap the model), enough to flip a near-tied token between an interrupted and a resumed job.
    pocketfft, and the power as re^2 + im^2 in numpy, are single-threaded and give the same bits every time,
    within 2.5e-5 of the reference log-mels (log-mel of 300 s: 0.10 s, torch.stft 0.08 s, one thread).
    """
    if x.device.type != "cpu":
        stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        return stft.abs() ** 2
    frames = (x.unfold(-1, N_FFT, HOP_LENGTH) * window).numpy()
    spec = np.fft.rfft(frames, axis=-1)
    return torch.from_numpy(np.square(spec.real) + np.square(spec.imag)).transpose(-1, -2)


def _log_compress_(mel: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """In place: ``log10(max(mel, 1e-10))``, floor at the utterance max - 8, then ``(x + 4) / 4``.

    ``mel`` is ``[n_mels, T]`` or ``[B, n_mels, T]`` with ``valid [B, T]`` marking real frames.
    """
    log_spec = mel.clamp_(min=1e-10).log10_()
    if valid is None:
        peak = log_spec.max()
    else:
        peak = log_spec.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
    torch.maximum(log_spec, peak - 8.0, out=log_spec)
    return log_spec.add_(4.0).div_(4.0)


def log_mel_spectrogram(audio: Union[str, os.PathLike, np.ndarray, torch.Tensor], n_mels: int = 128,
                        padding: int = 0, device: Union[None, str, torch.device] = None) -> torch.Tensor:
    """Whisper log-mel ``[n_mels, samples // 160]`` of a 16 kHz waveform (or of an audio file's path).

    STFT n_fft 400, hop 160, periodic Hann, centred with reflect padding, last frame dropped; power
    spectrum; Slaney mel filters; log10 with the whole-utterance ``max - 8`` floor; ``(x + 4) / 4``.
    ``padding`` appends that many zero samples first. Computed on ``device`` (default: the input's).
    """
    if isinstance(audio, (str, os.PathLike)):
        audio = load_audio(audio)
    elif not torch.is_tensor(audio):
        array = np.asarray(audio)
        if array.dtype.kind != "f":
            raise TypeError(f"log_mel_spectrogram expects floating-point samples in [-1, 1], got {array.dtype}"
                            + ("; scale PCM integers first (int16: / 32768)" if array.dtype.kind in "iu" else ""))
        audio = torch.from_numpy(array.astype(np.float32))
    _check_waveform(audio, "log_mel_spectrogram: the waveform")
    if audio.dim() != 1:
        raise ValueError(f"log_mel_spectrogram expects a 1-D waveform, got shape {tuple(audio.shape)}")
    audio = audio.detach()
    check_finite_on_host(audio, "log_mel_spectrogram: the waveform")
    if device is not None:
        audio = audio.to(device)
    audio = audio.to(torch.float32)
    if padding > 0:
        audio = torch.nn.functional.pad(audio, (0, padding))
    _check_length(audio.shape[-1])
    frames = mel_frames(audio.shape[-1])
    half = N_FFT // 2
    padded = torch.nn.functional.pad(audio[None, None], (half, half), mode="reflect")[0, 0]
    filters, window = _mel_filters(audio.device, n_mels), _hann(audio.device)
    out = torch.empty((n_mels, frames), dtype=torch.float32, device=audio.device)
    # Chunk by chunk, so that an hour of audio needs no 600 MB complex spectrum; every frame's FFT and
    # mel product is the same arithmetic as in one whole-utterance STFT (bit for bit, checked in the tests).
    with exact_fp32(audio.device):  # the mel product in fp32, not TF32 on a GPU nor bf16 under autocast
        for start in range(0, frames, MEL_CHUNK_FRAMES):
            end = min(frames, start + MEL_CHUNK_FRAMES)
            piece = padded[start * HOP_LENGTH:(end - 1) * HOP_LENGTH + N_FFT]
            out[:, start:end] = filters @ _power_spectrum(piece, window)
        return _log_compress_(out)


def log_mel_batch(wavs: Sequence[torch.Tensor], n_mels: int = 128,
                  device: Union[None, str, torch.device] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Log-mels of many 16 kHz waveforms in one STFT on one device: ``(mels [B, n_mels, T], lens [B])``.

    Each item is reflect-padded on its own and floored at its own max, so item ``i`` equals
    ``log_mel_spectrogram(wavs[i])`` on its ``lens[i]`` frames; frames past an item's length are 0.
    """
    if len(wavs) == 0:
        raise ValueError("log_mel_batch needs at least one waveform")
    for i, w in enumerate(wavs):
        _check_waveform(w, f"waveform {i}")
        check_finite_on_host(w, f"waveform {i}")
    dev = torch.device(device) if device is not None else wavs[0].device
    half = N_FFT // 2
    padded = []
    with exact_fp32(dev):
        for i, w in enumerate(wavs):
            if w.dim() != 1:
                raise ValueError(f"waveform {i} must be 1-D, got shape {tuple(w.shape)}")
            _check_length(w.shape[-1], f"waveform {i}")
            w = w.detach().to(dev, torch.float32)
            padded.append(torch.nn.functional.pad(w[None, None], (half, half), mode="reflect")[0, 0])
        lens = torch.tensor([mel_frames(w.shape[-1]) for w in wavs], dtype=torch.int32)
        longest = max(p.shape[-1] for p in padded)
        x = torch.stack([torch.nn.functional.pad(p, (0, longest - p.shape[-1])) for p in padded])
        del padded
        t_max = int(lens.max())
        filters, window = _mel_filters(dev, n_mels), _hann(dev)
        mel = torch.empty((len(wavs), n_mels, t_max), dtype=torch.float32, device=dev)
        # Chunk by chunk, as log_mel_spectrogram: no whole-batch float64 spectrum (one 20-minute waveform
        # took 1 GB more); every frame's FFT and mel product is the arithmetic of one whole STFT, bit for bit
        # (tested). The last chunk is as wide as the others, overlapping the one before: a product of a few
        # columns may add in another order (a 1-frame tail differed in the last bit).
        for end in range(min(t_max, MEL_CHUNK_FRAMES), t_max + MEL_CHUNK_FRAMES, MEL_CHUNK_FRAMES):
            end = min(end, t_max)
            start = max(0, end - MEL_CHUNK_FRAMES)
            piece = x[..., start * HOP_LENGTH:(end - 1) * HOP_LENGTH + N_FFT]
            mel[..., start:end] = filters @ _power_spectrum(piece, window)
        del x, piece
        valid = torch.arange(t_max, device=dev)[None, :] < to_device_nowait(lens, dev)[:, None]
        out = _log_compress_(mel, valid)
        return out.masked_fill_(~valid[:, None, :], 0.0), lens


def check_finite_on_host(w: torch.Tensor, what: str) -> None:
    """ValueError if ``w``, on the host, holds NaN or infinity (which would give NaN log-mels and meaningless
    tokens). A waveform already on a GPU is not checked here: that would make the host wait for the device
    (``s3tok tokenize`` flags a non-finite log-mel per item; ``tokenize_waveform`` checks the log-mels)."""
    if w.device.type == "cpu" and not bool(torch.isfinite(w).all()):
        raise ValueError(f"{what} has non-finite samples (NaN or inf)")


def _check_waveform(w, what: str) -> None:
    """TypeError unless ``w`` is a floating-point tensor (integer PCM would go in unscaled)."""
    if not torch.is_tensor(w):
        raise TypeError(f"{what} must be a tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{what} must hold floating-point samples in [-1, 1], got {w.dtype}"
                        + ("; scale PCM integers first (int16: / 32768)"
                           if w.dtype != torch.bool and not w.is_complex() else ""))


def padding(data: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack log-mels ``[n_mels, T_i]`` into zero-padded ``[B, n_mels, max T]`` and lengths int32 ``[B]``."""
    if not isinstance(data, (list, tuple)) or len(data) == 0:
        raise ValueError("padding expects a non-empty list of [n_mels, T] tensors")
    n_mels = data[0].shape[0]
    for i, m in enumerate(data):
        if m.dim() != 2 or m.shape[0] != n_mels:
            raise ValueError(f"padding: item {i} has shape {tuple(m.shape)}, expected [{n_mels}, T]")
    lens = torch.tensor([m.shape[1] for m in data], dtype=torch.int32)
    out = data[0].new_zeros((len(data), n_mels, int(lens.max())))
    for i, m in enumerate(data):
        out[i, :, :m.shape[1]] = m
    return out, lens
