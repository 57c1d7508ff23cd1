"""Hostile and odd input: bounded memory, one precise reason per bad utterance, the job goes on."""
from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from s3tok.bin import tokenize as tokenize_cli
from s3tok.data import read_wav_scp
from s3tok.data.ark import write_float_matrices


def tokenize(tmp_path: Path, ref: Path, scp_text: str, *extra: str, source: str = "--wav_scp"):
    """Run ``s3tok tokenize`` on ``scp_text``; ``(exit code, {key: tokens}, {key: reason})``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    scp = tmp_path / "in.scp"
    scp.write_bytes(scp_text.encode("utf-8") if isinstance(scp_text, str) else scp_text)
    out = tmp_path / "out"
    rc = tokenize_cli.main([source, str(scp), "--model", str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"),
                            "--output_dir", str(out), "--no_progress", "--max_fail_ratio", "1", *extra])
    tokens, fails = {}, {}
    if (out / "tokens.txt").exists():
        for line in (out / "tokens.txt").read_text(encoding="utf-8").splitlines():
            key, _, rest = line.partition(" ")
            tokens[key] = rest.split()
        for line in (out / "utt2fail").read_text(encoding="utf-8").splitlines():
            key, _, rest = line.partition(" ")
            fails[key] = rest
    return rc, tokens, fails


def wav_header(rate: int, data_bytes: int) -> bytes:
    """A 16-bit mono PCM WAV header."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
            rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))


def test_tiny_sample_rate_and_overlong_audio_fail_before_allocating(ref, tmp_path):
    one_hz = tmp_path / "one_hz.wav"  # 40 KB that would resample to 3.8 GB
    one_hz.write_bytes(wav_header(1, 40000) + bytes(40000))
    long_8k = tmp_path / "long.wav"
    sf.write(long_8k, np.zeros(8000 * 5, np.float32), 8000)
    good = ref / "audio" / "en_yes.wav"
    rc, tokens, fails = tokenize(tmp_path, ref, f"a {one_hz}\nb {long_8k}\nc {good}\n", "--max_duration", "3")
    assert rc == 0 and list(tokens) == ["c"]
    assert "sample rate 1 Hz in the header is not audio" in fails["a"]
    assert "5 s of audio, over the 3 s limit (--max_duration)" in fails["b"]
    from s3tok.data import audio

    assert audio.MAX_DURATION == 7200  # the command's limit does not outlive it (callers in the same process)


def test_endless_pipe_is_killed_at_the_limit(ref, tmp_path):
    t0 = time.time()
    rc, tokens, fails = tokenize(tmp_path, ref, f"endless yes |\nc {ref / 'audio' / 'en_yes.wav'}\n",
                                 "--max_duration", "5")
    assert rc == 0 and list(tokens) == ["c"]
    assert "wrote over" in fails["endless"] and "was killed: 'yes'" in fails["endless"]
    assert time.time() - t0 < 60


def test_pipe_printing_garbage_names_the_command(ref, tmp_path):
    rc, _, fails = tokenize(tmp_path, ref, f"junk printf 'RIFF not audio' |\nc {ref / 'audio' / 'en_yes.wav'}\n")
    assert rc == 0
    assert "pipe \"printf 'RIFF not audio'\": cannot decode audio" in fails["junk"] and "0x" not in fails["junk"]


def test_non_finite_log_mels_fail_the_utterance(ref, tmp_path):
    loud = tmp_path / "loud.wav"
    audio, rate = sf.read(ref / "audio" / "cmn_rain_f32.wav", dtype="float32")
    sf.write(loud, audio * np.float32(1e30), rate, subtype="FLOAT")
    rc, tokens, fails = tokenize(tmp_path, ref, f"loud {loud}\nc {ref / 'audio' / 'en_yes.wav'}\n")
    assert rc == 0 and list(tokens) == ["c"] and "log-mel not finite" in fails["loud"]
    mel = np.random.default_rng(0).normal(size=(300, 128)).astype(np.float32)
    nan = mel.copy()
    nan[10, 5] = np.nan
    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    write_float_matrices((ark, scp), [("ok", mel), ("nan", nan)])
    rc, tokens, fails = tokenize(tmp_path / "feats", ref, scp.read_text(), source="--feats_scp")
    assert rc == 0 and list(tokens) == ["ok"] and "log-mel not finite" in fails["nan"]


def test_wav_scp_edge_cases(ref, tmp_path, caplog):
    good = ref / "audio" / "en_yes.wav"
    # not UTF-8: one error naming the file and the line, exit 2
    rc, _, _ = tokenize(tmp_path / "a", ref, f"a {good}\n".encode() + b"b \xff\xfe.wav\n")
    assert rc == 2 and any("in.scp:2: not valid UTF-8 (byte 0xff" in r.getMessage() for r in caplog.records)
    # empty: exit 2 with a word
    caplog.clear()
    rc, _, _ = tokenize(tmp_path / "b", ref, "")
    assert rc == 2 and any("no utterances (empty input)" in r.getMessage() for r in caplog.records)
    # a byte-order mark is not part of the first key; a no-break space is part of a key (Kaldi: ASCII only)
    rc, tokens, fails = tokenize(tmp_path / "c", ref, f"\ufeffa {good}\nx\u00a0y {good}\n")
    assert rc == 0 and sorted(tokens) == ["a", "x\u00a0y"] and not fails
    (tmp_path / "d.scp").write_text(f"x\u00a0y {good}\n", encoding="utf-8")
    assert [e.key for e in read_wav_scp(tmp_path / "d.scp")] == ["x\u00a0y"]


@pytest.mark.parametrize("bad", [b"\xff\xfe garbage", b"\x00\x00\x00"])
def test_damaged_journal_keeps_valid_lines_and_redoes_the_rest(ref, tmp_path, bad, caplog):
    """Garbage appended to ``tokens.part`` by a dying machine: the rerun keeps the valid lines, warns with
    the file and the count, and redoes the keys it could not read."""
    scp = "".join(f"{u} {ref / 'audio' / f}\n" for u, f in (("a", "en_yes.wav"), ("b", "cmn_rain_f32.wav"),
                                                             ("c", "en_morning.wav")))
    rc, first, _ = tokenize(tmp_path, ref, scp)
    assert rc == 0
    out = tmp_path / "out"
    journal = out / "tokens.part"
    lines = (out / "tokens.txt").read_text().splitlines()
    (out / ".done" / "tokenize").unlink()
    fp = _fingerprint_of(ref, "a")
    journal.write_bytes((f"a {fp} " + lines[0].partition(" ")[2] + "\nb\n").encode() + bad + b"\n")
    caplog.clear()
    rc, again, _ = tokenize(tmp_path, ref, scp)
    assert rc == 0 and again == first
    warns = [r.getMessage() for r in caplog.records if "tokens.part" in r.getMessage() and "dropped" in r.getMessage()]
    assert len(warns) == 1 and "2 unreadable line(s)" in warns[0], warns


def _fingerprint_of(ref: Path, key: str) -> str:
    from s3tok.data.sources import Utterance
    from s3tok.data.wav_scp import WavEntry
    from s3tok.stages.protocol import input_fingerprint

    return input_fingerprint(Utterance(key, recording=WavEntry(key, str(ref / "audio" / "en_yes.wav"))))


@pytest.fixture()
def small_disk(tmp_path):
    """A 100 KB tmpfs (needs root and mount; skipped elsewhere)."""
    import os
    import subprocess

    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(d)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_disk_full_is_one_line_and_exit_3(ref, tmp_path, small_disk, caplog):
    scp = "".join(f"u{i} {ref / 'audio' / 'long_65s.wav'}\n" for i in range(6))
    (tmp_path / "in.scp").write_text(scp)
    rc = tokenize_cli.main(["--wav_scp", str(tmp_path / "in.scp"), "--model",
                            str(ref / "models" / "speech_tokenizer_v1.onnx"), "--output_dir", str(small_disk / "out"),
                            "--no_progress"])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert rc == 3 and len(errors) == 1, errors
    assert "the disk is full" in errors[0] and f"cannot write {small_disk / 'out'}" in errors[0]


def test_read_only_output_folder_is_one_line_and_exit_3(ref, tmp_path, caplog):
    import os

    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        import subprocess

        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
    try:
        (tmp_path / "in.scp").write_text(f"a {ref / 'audio' / 'en_yes.wav'}\n")
        rc = tokenize_cli.main(["--wav_scp", str(tmp_path / "in.scp"), "--model",
                                str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"), "--output_dir", str(ro),
                                "--no_progress"])
    finally:
        if os.geteuid() == 0:
            import subprocess

            subprocess.run(["umount", "-l", str(ro)], capture_output=True)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert rc == 3 and len(errors) == 1 and str(ro) in errors[0], errors
    assert "read-only" in errors[0] or "permission denied" in errors[0]


def test_cuda_device_without_cuda_is_one_line(ref, tmp_path, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "in.scp").write_text(f"a {ref / 'audio' / 'en_yes.wav'}\n")
    rc = tokenize_cli.main(["--wav_scp", str(tmp_path / "in.scp"), "--model",
                            str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"), "--output_dir",
                            str(tmp_path / "out"), "--device", "cuda", "--no_progress"])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("--device cuda: no CUDA here"), errors


def test_crafted_rates_and_channel_bombs_fail_cleanly_and_the_job_goes_on(ref, tmp_path):
    """A header rate over 768 kHz, a rate whose resampling filter is over the limit (1001 Hz: 16 M elements;
    22051 Hz would be 353 M, 1.4 GB), and 8 channels at 655 kHz each go to utt2fail with the file and the
    limit, before anything large is allocated; a GSM 6.10 WAV decodes. (Sizes kept small enough that the
    code before the fix fails this test without exhausting memory.)"""
    import resource

    big_rate = tmp_path / "rate_800k.wav"
    big_rate.write_bytes(wav_header(800000, 1600000) + bytes(1600000))
    odd_rate = tmp_path / "rate_1001.wav"
    odd_rate.write_bytes(wav_header(1001, 4000) + bytes(4000))
    bomb = tmp_path / "bomb.flac"
    sf.write(bomb, np.zeros((655350, 8), np.int16), 655350, format="FLAC", subtype="PCM_16")
    gsm = tmp_path / "gsm.wav"
    sf.write(gsm, np.random.default_rng(0).uniform(-.5, .5, 16000).astype(np.float32), 8000, subtype="GSM610")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc, tokens, fails = tokenize(tmp_path, ref, f"a {big_rate}\nb {odd_rate}\nc {bomb}\nd {gsm}\n",
                                 "--max_duration", "5")
    assert rc == 0 and list(tokens) == ["d"]
    assert f"{big_rate}: sample rate 800000 Hz in the header is over the 768000 Hz limit" in fails["a"]
    assert f"{odd_rate}: sample rate 1001 Hz cannot be resampled to 16000 Hz" in fails["b"]
    assert f"{bomb}: 8 channel(s) x 655350 frames at 655350 Hz" in fails["c"] and "--max_duration" in fails["c"]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KB: nothing huge allocated
