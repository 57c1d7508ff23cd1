"""Every --dtype runs on the CPU at hand or is refused at load; a model fault stops the job (exit 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import s3tok
from s3tok.api import PrecisionUnsupported
from s3tok.bin import tokenize as tokenize_cli
from s3tok.model.tokenizer import S3Tokenizer
from s3tok.stages.pipeline import ModelFault, run_tokenize

# oneDNN and ATen limited to AVX2, as on an AMD EPYC without AVX-512: oneDNN then has no bf16 inner product.
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

CHILD = r"""
import json, sys, torch
import s3tok, s3tok.model.linear as lin
from s3tok.data.audio import padding
model_path, wavs = sys.argv[1], sys.argv[2:]
mels = [s3tok.log_mel_spectrogram(s3tok.load_audio(w)) for w in wavs]
out = {"fused": sorted(str(d) for d in lin.ONEDNN_LINEAR)}
for dtype in ("float32", "bfloat16", "bfloat16-mixed", "float16", "float16-mixed"):
    try:
        model = s3tok.load_model(model_path, dtype=dtype)
        m, lens = padding(mels)
        codes, n = model.quantize(m, lens)
        out[dtype] = [codes[i, :k].tolist() for i, k in enumerate(n.tolist())]
    except Exception as e:
        out[dtype] = "error: " + str(e).splitlines()[0]
print(json.dumps(out))
"""


def _run_child(env_extra, model, wavs):
    env = {**os.environ, **env_extra}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), *map(str, wavs)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_dtype_runs_on_an_avx2_only_cpu(ref):
    """With oneDNN held to AVX2 the fused bf16 linear is not offered, and every dtype still gives tokens
    (the plain path); float32 gives onnxruntime's tokens there too."""
    from conftest import load_expected

    model = ref / "models" / "speech_tokenizer_v2_25hz.onnx"
    wavs = [ref / "audio" / "en_yes.wav", ref / "audio" / "cmn_boats.wav"]
    avx2 = _run_child(AVX2_ONLY, model, wavs)
    assert avx2["fused"] == ["torch.float32"]
    for dtype in ("float32", "bfloat16", "bfloat16-mixed", "float16", "float16-mixed"):
        assert isinstance(avx2[dtype], list), f"{dtype}: {avx2[dtype]}"
        assert [len(t) for t in avx2[dtype]] == [36, 209]
    expected, ties = load_expected(ref, "speech_tokenizer_v2_25hz")
    for utt, got in zip(("en_yes", "cmn_boats"), avx2["float32"]):
        assert len(got) == len(expected[utt])
        assert {i for i, (a, b) in enumerate(zip(got, expected[utt])) if a != b} <= ties.get(utt, set()), utt


@pytest.fixture
def broken_bf16(monkeypatch):
    """A model whose bf16 forward raises, as a missing oneDNN primitive does."""
    real = S3Tokenizer.forward_segments

    def forward(self, mels, lengths):
        if self.precision != "float32":
            raise RuntimeError("could not create a primitive descriptor for the inner product forward "
                               "propagation primitive")
        return real(self, mels, lengths)

    monkeypatch.setattr(S3Tokenizer, "forward_segments", forward)


def test_unsupported_dtype_refused_at_load(ref, broken_bf16):
    with pytest.raises(PrecisionUnsupported, match=r"--dtype bfloat16-mixed does not run on this cpu "
                                                   r"\(torch CPU capability .*primitive descriptor.*use float32"):
        s3tok.load_model(ref / "models" / "speech_tokenizer_v2_25hz.onnx", dtype="bfloat16-mixed")
    s3tok.load_model(ref / "models" / "speech_tokenizer_v2_25hz.onnx", dtype="float32")


def test_tokenize_exits_2_on_unsupported_dtype(ref, tmp_path, broken_bf16, caplog):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a {ref / 'audio' / 'en_yes.wav'}\n")
    rc = tokenize_cli.main(["--wav_scp", str(scp), "--model", str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"),
                            "--output_dir", str(tmp_path / "out"), "--dtype", "bfloat16", "--no_progress"])
    assert rc == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "--dtype bfloat16 does not run" in errors[0]
    assert not (tmp_path / "out" / "utt2fail").exists()


def test_model_fault_stops_the_job_instead_of_failing_every_utterance(ref, tmp_path, monkeypatch, caplog):
    """A model that fails on every batch and every item alone with one error: exit 3 (a fault, not bad
    data), one error line, no utterance written to utt2fail as bad audio."""
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {ref / 'audio' / f}\n" for u, f in
                           (("a", "en_yes.wav"), ("b", "cmn_boats.wav"), ("c", "en_morning.wav"))))
    model_path = str(ref / "models" / "speech_tokenizer_v2_25hz.onnx")

    def boom(self, mels, lengths):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(S3Tokenizer, "forward_segments", boom)
    monkeypatch.setattr(s3tok.api, "check_precision_runs", lambda m: None)  # the fault comes after the load
    rc = tokenize_cli.main(["--wav_scp", str(scp), "--model", model_path, "--output_dir", str(tmp_path / "out"),
                            "--no_progress"])
    assert rc == 3
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "illegal memory access" in errors[0] and "not of the audio" in errors[0]
    assert not (tmp_path / "out" / "utt2fail").exists() or not (tmp_path / "out" / "utt2fail").read_text()


def test_one_bad_item_is_still_the_items_failure(ref, ref_models, monkeypatch):
    """When only one item of a batch fails alone, it goes to utt2fail and the others get their tokens."""
    from s3tok.data import read_wav_scp

    model = ref_models["speech_tokenizer_v2_25hz"]
    entries = [e for e in read_wav_scp(ref / "wav.scp") if e.key in ("en_yes", "cmn_boats", "en_morning")]
    real = S3Tokenizer.forward_segments

    def forward(self, mels, lengths):
        if int(lengths.max()) == 833:  # cmn_boats, alone or in the batch
            raise RuntimeError("item-specific failure")
        return real(self, mels, lengths)

    monkeypatch.setattr(S3Tokenizer, "forward_segments", forward)
    got, failed = {}, []
    run_tokenize(model, entries, got.__setitem__, lambda k, r: failed.append((k, r)), base_dir=ref, progress=False)
    assert [k for k, _ in failed] == ["cmn_boats"] and set(got) == {"en_yes", "en_morning"}
    monkeypatch.setattr(S3Tokenizer, "forward_segments", lambda *a: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(ModelFault, match="same error"):
        run_tokenize(model, entries, got.__setitem__, lambda k, r: None, base_dir=ref, progress=False)
