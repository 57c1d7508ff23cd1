"""The parity stage: s3tok's tokens against the ONNX file run by onnxruntime at batch 1."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from s3tok.bin import score_parity
from s3tok.parity import compare, sample_keys, summarize


@pytest.fixture()
def scp(ref, tmp_path):
    path = tmp_path / "wav.scp"
    path.write_text("".join(f"{u} {ref / p}\n" for u, p in
                            (line.split(maxsplit=1) for line in (ref / "wav.scp").read_text().splitlines())))
    return path


def tokenize(ref, scp, out, name):
    subprocess.run([sys.executable, "-m", "s3tok.bin.tokenize", "--wav_scp", str(scp), "--model",
                    str(ref / "models" / f"{name}.onnx"), "--output_dir", str(out), "--no_progress"],
                   check=True, capture_output=True)


def test_parity_passes_for_the_right_model(ref, scp, tmp_path):
    tokenize(ref, scp, tmp_path / "tok", "speech_tokenizer_v3_25hz")
    report = tmp_path / "parity.json"
    rc = score_parity.main(["--wav_scp", str(scp), "--tokens", str(tmp_path / "tok" / "tokens.scp"), "--model",
                            str(ref / "models" / "speech_tokenizer_v3_25hz.onnx"), "--num_utts", "0",
                            "--output", str(report)])
    assert rc == 0
    r = json.loads(report.read_text())
    assert r["utterances"] == 17 and r["long_utterances"] == 2 and r["tokens"] == 4470
    assert r["miss_rate"] <= 0.0001 and r["length_mismatches"] == 0


def test_parity_fails_for_tokens_of_another_model(ref, scp, tmp_path, caplog):
    tokenize(ref, scp, tmp_path / "tok", "speech_tokenizer_v2_25hz")
    report = tmp_path / "parity.json"
    rc = score_parity.main(["--wav_scp", str(scp), "--tokens", str(tmp_path / "tok" / "tokens.txt"), "--model",
                            str(ref / "models" / "speech_tokenizer_v3_25hz.onnx"), "--num_utts", "5",
                            "--output", str(report)])
    assert rc == 1
    r = json.loads(report.read_text())
    assert r["utterances"] == 5 and r["miss_rate"] > 0.5 and r["worst"]
    assert "not the official model's" in caplog.text and r["worst"][0]["key"] in caplog.text


def test_sample_is_deterministic_and_exact():
    keys = [f"utt{i:03d}" for i in range(50)]
    a = sample_keys(keys, 10)
    assert a == sample_keys(list(keys), 10) and len(a) == 10 and a == [k for k in keys if k in a]
    assert sample_keys(keys, 0) == keys and sample_keys(keys, 80) == keys


def test_compare_counts_length_differences():
    r = compare([1, 2, 3, 4], [1, 9, 3], "u", False)
    assert (r.mismatches, r.length_diff, r.tokens) == (2, 1, 3)
    rep = summarize([r, compare([5], [5], "v", False)], missing=["w"])
    assert rep.mismatches == 2 and rep.tokens == 4 and rep.length_mismatches == 1 and rep.missing == ["w"]
    assert rep.worst[0]["key"] == "u"
