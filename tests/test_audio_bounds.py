"""Audio input bounds and odd-but-valid input: sample rates, samples x channels, the resampler's filters,
segments of damaged files, FLAC streams of unknown length, telephony codecs, ``cmd |`` pipes, paths that
are not files. Tiny data, seconds each."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from s3tok.data import audio as A
from s3tok.data.audio import AudioError, check_span, duration_limit, load_audio, read_audio, resample
from s3tok.data.segments import load_utterance_audio, read_segment
from s3tok.data.wav_scp import WavEntry, run_pipe, scan_audio_dir

USUAL_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 37800, 44056, 44100, 47952, 48000, 88200, 96000,
               176400, 192000, 352800, 384000, 705600, 768000, 12345)


def pcm16_wav(path: Path, rate: int, samples: int = 16000, seed: int = 0) -> Path:
    """A 16-bit mono WAV whose header says ``rate`` (any 32-bit value), with ``samples`` of noise."""
    sig = (np.random.default_rng(seed).uniform(-.3, .3, samples) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, (rate * 2) & 0xFFFFFFFF, 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(sig)) + sig
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


# F1: sample rates and the resampler's filters

def test_header_rate_over_the_maximum_is_refused(tmp_path):
    p = pcm16_wav(tmp_path / "rate_2g.wav", 2 ** 31 - 1)
    with pytest.raises(AudioError, match=r"rate_2g\.wav: sample rate 2147483647 Hz in the header is over the "
                                         r"768000 Hz limit"):
        read_audio(str(p))


def test_rate_needing_a_huge_filter_is_refused_before_decoding(tmp_path):
    p = pcm16_wav(tmp_path / "rate_22051.wav", 22051)  # coprime with 16 kHz: a 353 M-element (1.4 GB) filter
    t0 = time.time()
    with pytest.raises(AudioError, match=r"rate_22051\.wav: sample rate 22051 Hz cannot be resampled to 16000 Hz: "
                                         r"its filter would have 353104000 elements, over the 12000000 limit"):
        read_audio(str(p))
    with pytest.raises(AudioError, match=r"22051 Hz cannot be resampled"):
        resample(torch.zeros(1000), 22051, 16000)  # callers passing arrays are bounded too
    assert time.time() - t0 < 5


@pytest.mark.parametrize("rate", USUAL_RATES)
def test_usual_rates_pass_the_bounds(rate):
    check_span(rate, rate * 60, 2)  # a minute of stereo
    assert A.resample_kernel_elements(rate) <= A.MAX_RESAMPLE_KERNEL


def test_resampled_output_unchanged_by_the_kernel_cache():
    """The cached filter is the one built directly; resampling gives the same bits as with it."""
    x = torch.from_numpy(np.random.default_rng(1).uniform(-.5, .5, 44100).astype(np.float32))
    kernel, width = A._sinc_kernel_cpu(441, 160)
    cached, cached_width = A._cached_kernel(441, 160)
    assert torch.equal(kernel, cached) and width == cached_width
    xp = torch.nn.functional.pad(x[None], (width, width + 441))
    direct = torch.nn.functional.conv1d(xp[:, None], kernel, stride=441).transpose(1, 2).reshape(-1)[:16000]
    assert torch.equal(resample(x, 44100, 16000), direct)


def test_kernel_cache_is_bounded_in_elements(monkeypatch):
    monkeypatch.setattr(A, "_kernels", type(A._kernels)())
    monkeypatch.setattr(A, "MAX_CACHED_KERNELS", 400_000)
    for rate in (11025, 22050, 44100, 88200, 11025):  # 291 200, 146 880, 76 000, 40 720 elements
        resample(torch.zeros(2000), rate, 16000)
        assert sum(k.numel() for k, _ in A._kernels.values()) <= 400_000
    assert list(A._kernels)[-1] == (441, 640)  # 11025 Hz: built again, most recently used


# F2: samples x channels

def test_many_channels_at_a_high_rate_are_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.flac"  # 0.2 s of silence at FLAC's maximum rate, 8 channels: 1 M samples
    sf.write(p, np.zeros((131070, 8), np.int16), 655350, format="FLAC", subtype="PCM_16")
    with duration_limit(1.0):  # allows 96 000 samples (48 kHz stereo for 1 s)
        with pytest.raises(AudioError, match=r"bomb\.flac: 8 channel\(s\) x 131070 frames at 655350 Hz is 1048560 "
                                             r"samples, over the 96000 limit .*raise --max_duration"):
            read_audio(str(p))
        ok = tmp_path / "stereo48k.wav"
        sf.write(ok, np.zeros((48000, 2), np.float32), 48000)
        assert read_audio(str(ok))[0].shape == (2, 48000)  # 48 kHz stereo for the whole duration: accepted


def test_segment_of_many_channels_is_bounded(tmp_path):
    p = tmp_path / "multi.wav"
    sf.write(p, np.zeros((48000, 6), np.int16), 48000)
    with duration_limit(1.0):
        with pytest.raises(AudioError, match=r"6 channel\(s\) x 24000 frames"):
            read_segment(str(p), 0.0, 0.5)
        assert read_segment(str(p), 0.0, 0.25)[0].shape == (6, 12000)


# F5: the segments path's decoder errors

def test_segment_of_damaged_flac_is_an_audio_error_naming_the_file(tmp_path):
    x = np.random.default_rng(0).uniform(-.5, .5, 16000 * 8).astype(np.float32)
    whole = tmp_path / "whole.flac"
    sf.write(whole, x, 16000, format="FLAC")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    entry = WavEntry("rec", str(cut))
    for start, end in ((6.0, 7.0), (3.5, 4.5)):  # past the damage (seek fails), across it (lost sync)
        with pytest.raises(AudioError, match=r"utterance 'u' \(recording 'rec'\): .*cut\.flac: cannot decode "
                                             r"samples \[\d+, \d+\) \("):
            load_utterance_audio(entry, start, end, key="u")


# F6: FLAC whose header does not state its length

def _unknown_length_flac(tmp_path: Path, x: np.ndarray) -> Path:
    p = tmp_path / "known.flac"
    sf.write(p, x, 16000, format="FLAC")
    b = bytearray(p.read_bytes())
    v = int.from_bytes(b[18:26], "big") & ~((1 << 36) - 1)  # STREAMINFO total samples = 0: unknown
    b[18:26] = v.to_bytes(8, "big")
    out = tmp_path / "stream.flac"
    out.write_bytes(bytes(b))
    assert sf.info(str(out)).frames == A.SF_COUNT_MAX
    return out


def test_flac_of_unknown_length_decodes_within_the_limits(tmp_path, monkeypatch):
    x = np.random.default_rng(0).uniform(-.5, .5, 48000).astype(np.float32)
    p = _unknown_length_flac(tmp_path, x)
    expected, _ = sf.read(tmp_path / "known.flac", dtype="float32")
    audio, rate = read_audio(str(p))
    assert rate == 16000 and np.array_equal(audio[0].numpy(), expected)
    assert np.array_equal(read_audio(io.BytesIO(p.read_bytes()))[0][0].numpy(), expected)  # as a pipe gives it
    seg = load_utterance_audio(WavEntry("r", str(p)), 1.0, -1, key="s")
    assert torch.equal(seg, torch.from_numpy(expected[16000:]))
    monkeypatch.setattr(A, "READ_BLOCK_SAMPLES", 7000)  # many blocks: the same samples
    assert np.array_equal(read_audio(str(p))[0][0].numpy(), expected)
    with duration_limit(2.0):
        with pytest.raises(AudioError, match=r"stream\.flac: length not in the header, and the audio goes on past "
                                             r"the limit: stopped at \d+ frames .*over the 2 s limit"):
            read_audio(str(p))


# F7: codecs libsndfile cannot seek; the frame count passed to read leaves other formats unchanged

@pytest.mark.parametrize("subtype", ["GSM610", "G721_32", "NMS_ADPCM_16"])
def test_telephony_codecs_decode(tmp_path, subtype):
    p = tmp_path / f"tel_{subtype}.wav"
    sf.write(p, np.random.default_rng(0).uniform(-.5, .5, 16000).astype(np.float32), 8000, subtype=subtype)
    audio, rate = read_audio(str(p))
    assert rate == 8000 and audio.shape == (1, sf.info(str(p)).frames)
    assert load_audio(str(p)).numel() == 2 * audio.shape[1]  # codec blocks may pad a little


@pytest.mark.parametrize("fmt,subtype,ext", [("WAV", "PCM_16", "wav"), ("WAV", "FLOAT", "wav"),
                                             ("FLAC", "PCM_24", "flac"), ("MP3", "MPEG_LAYER_III", "mp3"),
                                             ("OGG", "VORBIS", "ogg")])
def test_decoded_samples_equal_soundfile_read(tmp_path, fmt, subtype, ext):
    p = tmp_path / f"a.{ext}"
    x = np.random.default_rng(2).uniform(-.5, .5, (44100, 2)).astype(np.float32)
    sf.write(p, x, 44100, format=fmt, subtype=subtype)
    audio, rate = read_audio(str(p))
    expected, _ = sf.read(p, dtype="float32", always_2d=True)
    assert rate == 44100 and np.array_equal(audio.numpy(), expected.T)


# F4: pipe guards

def test_pipe_timeout_holds_after_the_command_closes_its_output():
    t0 = time.time()
    with pytest.raises(OSError, match=r"ran past 1 s and was killed: 'printf RIFF; exec 1>&-; sleep 8'"):
        run_pipe("printf RIFF; exec 1>&-; sleep 8", timeout=1)
    assert time.time() - t0 < 6


def test_pipe_stderr_keeps_its_last_line():
    """Megabytes of stderr: only a bounded tail is kept, and the message gives the last line."""
    cmd = "head -c 3000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'decoder: bad header' >&2; exit 3"
    with pytest.raises(OSError) as e:
        run_pipe(cmd)
    assert str(e.value).endswith(": decoder: bad header") and len(str(e.value)) < 500


def test_pipe_does_not_read_our_stdin(tmp_path):
    wav = tmp_path / "other.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    code = "from s3tok.data.wav_scp import run_pipe\nprint(len(run_pipe('cat').getvalue()))"
    with open(wav, "rb") as stdin:
        proc = subprocess.run([sys.executable, "-c", code], stdin=stdin, capture_output=True, text=True,
                              timeout=60)
    assert proc.returncode != 0 and "pipe command wrote no audio: 'cat'" in proc.stderr, proc.stdout


# F9: paths that exist but are not audio files

def test_directory_fifo_and_broken_link_are_named(tmp_path):
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioError, match=r"dir\.wav: is a directory, not an audio file"):
        read_audio(str(tmp_path / "dir.wav"))
    os.mkfifo(tmp_path / "fifo.wav")
    with pytest.raises(AudioError, match=r"fifo\.wav: not a regular file \(a FIFO\)"):
        read_audio(str(tmp_path / "fifo.wav"))
    (tmp_path / "link.wav").symlink_to(tmp_path / "gone.wav")
    with pytest.raises(AudioError, match=r"link\.wav: broken symbolic link"):
        read_audio(str(tmp_path / "link.wav"))
    with pytest.raises(AudioError, match=r"nope\.wav: no such audio file"):
        read_audio(str(tmp_path / "nope.wav"))


def test_wav_dir_keeps_a_broken_link_and_warns(tmp_path, caplog):
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "b.wav").symlink_to("/nonexistent/b.wav")
    entries = scan_audio_dir(tmp_path)
    assert [e.key for e in entries] == ["a", "b"] and entries[1].location == str(tmp_path / "b.wav")
    assert any("b.wav: broken symbolic link" in r.getMessage() for r in caplog.records)
    with pytest.raises(AudioError, match=r"b\.wav: broken symbolic link"):
        read_audio(entries[1].location)


def test_a_stream_that_cannot_seek_is_read_up_to_the_pipe_bound(tmp_path):
    """A WAV read from a subprocess's stdout failed with "No 'data' chunk marker" (soundfile seeks)."""
    wav = tmp_path / "a.wav"
    sf.write(wav, np.linspace(-0.5, 0.5, 16000, dtype=np.float32), 16000, subtype="PCM_16")
    code = f"import sys; sys.stdout.buffer.write(open({str(wav)!r}, 'rb').read())"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        got = load_audio(proc.stdout)
    finally:
        proc.stdout.close()
        proc.wait()
    assert torch.equal(got, load_audio(wav))
