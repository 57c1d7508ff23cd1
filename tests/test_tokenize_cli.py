"""``s3tok tokenize``: tokens per utterance, bad utterances recorded with key and reason, the rest go on."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import load_expected
from s3tok.bin import tokenize as tokenize_bin
from s3tok.data import read_wav_scp

MODEL = "speech_tokenizer_v1_25hz"


def read_tokens(path):
    out = {}
    for line in path.read_text().splitlines():
        key, *toks = line.split()
        assert key not in out, f"{key} written twice"
        out[key] = [int(t) for t in toks]
    return out


def read_failures(path):
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


@pytest.fixture()
def mixed_scp(ref, tmp_path):
    """A wav.scp with good clips (one path with spaces, one pipe) and four bad ones."""
    good_dir = tmp_path / "dir with spaces"
    good_dir.mkdir()
    shutil.copy(ref / "audio" / "en_yes.wav", good_dir / "en yes.wav")
    (tmp_path / "garbage.wav").write_text("not audio")
    corrupt = bytearray((ref / "audio" / "en_yes.wav").read_bytes())
    corrupt[12:36] = b"\xff" * 24  # the fmt chunk destroyed, the rest intact
    (tmp_path / "corrupt.wav").write_bytes(bytes(corrupt))
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    sf.write(tmp_path / "short.wav", np.zeros(100, np.float32), 16000, subtype="PCM_16")
    lines = [
        f"cmn_boats {ref / 'audio' / 'cmn_boats.wav'}",
        f"en_music_44k cat {ref / 'audio' / 'en_music_44k.wav'} |",
        f"en_yes {good_dir / 'en yes.wav'}",
        f"long_35s {ref / 'audio' / 'long_35s.wav'}",
        f"bad_missing {tmp_path / 'missing.wav'}",
        f"bad_garbage {tmp_path / 'garbage.wav'}",
        f"bad_corrupt {tmp_path / 'corrupt.wav'}",
        f"bad_empty {tmp_path / 'empty.wav'}",
        f"bad_short {tmp_path / 'short.wav'}",
        "bad_pipe false |",
    ]
    scp = tmp_path / "wav.scp"
    scp.write_text("\n".join(lines) + "\n")
    return scp


def test_bad_utterances_recorded_rest_tokenized(ref, mixed_scp, tmp_path):
    out = tmp_path / "out"
    rc = tokenize_bin.main(["--wav_scp", str(mixed_scp), "--model", str(ref / "models" / f"{MODEL}.onnx"),
                            "--output_dir", str(out), "--batch_size", "3", "--no_progress",
                            "--max_fail_ratio", "1.0"])
    assert rc == 0
    expected, _ = load_expected(ref, MODEL)
    tokens = read_tokens(out / "tokens.txt")
    assert list(tokens) == ["cmn_boats", "en_music_44k", "en_yes", "long_35s"]  # input order
    for key, toks in tokens.items():
        assert toks == expected[key], key
    failures = read_failures(out / "utt2fail")
    assert set(failures) == {"bad_missing", "bad_garbage", "bad_corrupt", "bad_empty", "bad_short", "bad_pipe"}
    assert "cannot decode audio" in failures["bad_corrupt"]
    assert "no such audio file" in failures["bad_missing"]
    assert "cannot decode audio" in failures["bad_garbage"]
    assert "empty" in failures["bad_empty"]
    assert "too short" in failures["bad_short"]
    assert "pipe command failed" in failures["bad_pipe"]
    assert not list(out.glob("*.tmp"))


def test_exit_code_when_too_many_failures(ref, mixed_scp, tmp_path):
    rc = tokenize_bin.main(["--wav_scp", str(mixed_scp), "--model", str(ref / "models" / f"{MODEL}.onnx"),
                            "--output_dir", str(tmp_path / "o"), "--no_progress"])
    assert rc == 1  # 6 / 10 failed > 5 %
    assert len(read_tokens(tmp_path / "o" / "tokens.txt")) == 4


def tokenize_reference_audio(ref, model: str, out, *extra: str) -> int:
    """``tokenize --wav_dir`` over the reference clips with one of the reference models."""
    return tokenize_bin.main(["--wav_dir", str(ref / "audio"), "--model", str(ref / "models" / f"{model}.onnx"),
                              "--output_dir", str(out), "--no_progress", *extra])


def test_wav_dir_mode_matches_expected(ref, tmp_path):
    out = tmp_path / "o"
    assert tokenize_reference_audio(ref, "speech_tokenizer_v3_25hz", out, "--batch_size", "5") == 0
    expected, ties = load_expected(ref, "speech_tokenizer_v3_25hz")
    tokens = read_tokens(out / "tokens.txt")
    assert set(tokens) == set(expected)
    for key in expected:
        diff = [i for i, (a, b) in enumerate(zip(tokens[key], expected[key])) if a != b]
        assert len(tokens[key]) == len(expected[key]) and set(diff) <= ties.get(key, set()), key
    assert (out / "utt2fail").read_text() == ""


def test_mixed_precision_dtype_end_to_end(ref, tmp_path):
    """--dtype bfloat16-mixed tokenizes every clip with the right lengths and says so in tokenizer.json."""
    import json

    out = tmp_path / "o"
    assert tokenize_reference_audio(ref, "speech_tokenizer_v2_25hz", out, "--dtype", "bfloat16-mixed") == 0
    expected, _ = load_expected(ref, "speech_tokenizer_v2_25hz")
    tokens = read_tokens(out / "tokens.txt")
    assert {k: len(v) for k, v in tokens.items()} == {k: len(v) for k, v in expected.items()}
    assert json.loads((out / "tokenizer.json").read_text())["dtype"] == "bfloat16-mixed"


def test_bad_arguments_exit_2(ref, tmp_path, caplog):
    scp = tmp_path / "wav.scp"
    scp.write_text("a x.wav\na y.wav\n")
    model = str(ref / "models" / f"{MODEL}.onnx")
    assert tokenize_bin.main(["--wav_scp", str(scp), "--model", model, "--output_dir", str(tmp_path / "o")]) == 2
    assert "duplicate key 'a'" in caplog.text and "wav.scp:2" in caplog.text
    scp.write_text("a x.wav\n")
    assert tokenize_bin.main(["--wav_scp", str(scp), "--model", str(tmp_path / "none.onnx"),
                              "--output_dir", str(tmp_path / "o")]) == 2
    assert "none.onnx" in caplog.text


def test_wav_scp_parsing(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text("k1 /a b/c d.wav\nk2   sox x.wav -t wav - |\n\nk3 rel.flac\n")
    entries = read_wav_scp(scp)
    assert [(e.key, e.location, e.is_pipe) for e in entries] == [
        ("k1", "/a b/c d.wav", False), ("k2", "sox x.wav -t wav - |", True), ("k3", "rel.flac", False)]
    scp.write_text("lonely\n")
    with pytest.raises(ValueError, match=r"wav\.scp:1: expected 'key location'"):
        read_wav_scp(scp)


def test_console_script_entry():
    out = subprocess.run([sys.executable, "-m", "s3tok.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("s3tok ")
    out = subprocess.run([sys.executable, "-m", "s3tok.cli", "models"], capture_output=True, text=True)
    assert out.returncode == 0 and "speech_tokenizer_v3_25hz" in out.stdout


def test_data_dir_with_segments(ref, tmp_path):
    """Utterances cut from a recording by ``segments`` get the tokens of the cut audio."""
    import torch

    import s3tok

    d = tmp_path / "data"
    d.mkdir()
    rec = ref / "audio" / "long_35s.wav"
    (d / "wav.scp").write_text(f"rec1 {rec}\nrec2 cat {ref / 'audio' / 'en_paragraph.wav'} |\n")
    (d / "segments").write_text("rec1-a rec1 0.00 3.25\nrec1-b rec1 10.5 21.0\nrec2-a rec2 1.0 -1\n")
    out = tmp_path / "out"
    model_path = ref / "models" / f"{MODEL}.onnx"
    assert tokenize_bin.main(["--data_dir", str(d), "--model", str(model_path), "--output_dir", str(out),
                              "--no_progress"]) == 0
    got = read_tokens(out / "tokens.txt")
    model = s3tok.load_model(model_path)
    full = {"rec1": s3tok.load_audio(str(rec)), "rec2": s3tok.load_audio(str(ref / "audio" / "en_paragraph.wav"))}
    for utt, reco, start, end in (("rec1-a", "rec1", 0.0, 3.25), ("rec1-b", "rec1", 10.5, 21.0),
                                  ("rec2-a", "rec2", 1.0, None)):
        wav = full[reco][round(start * 16000): None if end is None else round(end * 16000)]
        mel = s3tok.log_mel_spectrogram(wav)
        codes, lens = model.quantize(mel[None], torch.tensor([mel.shape[1]]))
        assert got[utt] == codes[0, :lens[0]].tolist(), utt


def test_every_entry_point_is_an_s3tok_subcommand():
    """One way in: each ``s3tok.bin`` module is an ``s3tok`` subcommand whose --help names it so."""
    import pkgutil

    import s3tok.bin
    from s3tok.cli import SUBCOMMANDS

    modules = {f"s3tok.bin.{m.name}" for m in pkgutil.iter_modules(s3tok.bin.__path__)}
    assert modules == {m for m, _ in SUBCOMMANDS.values()}
    for name, (module, _) in SUBCOMMANDS.items():
        import importlib

        prog = importlib.import_module(module).get_parser().prog
        assert prog in (f"s3tok {name}", "utils/run.pl", "utils/validate_data_dir.sh", "utils/fix_data_dir.sh"), (name, prog)
