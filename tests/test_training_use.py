"""On-the-fly tokens inside a training step: frozen submodule, ordinary tensors, DDP (gloo, 2 processes)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import s3tok

ROOT = Path(__file__).resolve().parents[1]
MODEL = "speech_tokenizer_v2_25hz"


def load_example():
    spec = importlib.util.spec_from_file_location("train_speech_lm", ROOT / "examples" / "train_speech_lm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def example():
    return load_example()


@pytest.fixture()
def model_path(ref):
    return ref / "models" / f"{MODEL}.onnx"


def test_loss_goes_down_and_tokenizer_stays_frozen(example, model_path, ref):
    torch.manual_seed(0)
    lm = example.SpeechLM(s3tok.load_model(model_path))
    before = {k: v.clone() for k, v in lm.tokenizer.state_dict().items()}
    wavs = example.load_clips(str(ref / "audio"), seconds=3.0, limit=4)
    losses = example.train(lm, wavs, steps=12)
    assert losses[-1] < losses[0] - 0.5, losses
    for k, v in lm.tokenizer.state_dict().items():
        assert torch.equal(v, before[k]), f"tokenizer weight {k} changed"
    assert all(not p.requires_grad for p in lm.tokenizer.parameters())
    assert all(p.grad is None for p in lm.tokenizer.parameters())
    tok_ids = {id(p) for p in lm.tokenizer.parameters()}
    assert not any(id(p) in tok_ids for p in example.trainable(lm))
    assert lm.training and not lm.tokenizer.training  # the parent's train() leaves it in eval mode


def test_on_the_fly_tokens_equal_offline_and_are_ordinary(model_path, ref):
    tok = s3tok.load_model(model_path).freeze()
    paths = [ref / "audio" / f for f in ("en_yes.wav", "cmn_boats.wav", "long_35s.wav")]
    wavs = [s3tok.load_audio(str(p)) for p in paths]
    padded = torch.zeros(len(wavs), max(w.numel() for w in wavs))
    for i, w in enumerate(wavs):
        padded[i, :w.numel()] = w
    lens = torch.tensor([w.numel() for w in wavs])
    with torch.enable_grad():
        codes, code_lens = tok.tokenize_waveform(padded, lens)
        assert not codes.is_inference() and not codes.requires_grad
        emb = torch.nn.Embedding(tok.config.codebook_size, 4)
        emb(codes).sum().backward()  # usable in autograd without .clone()
        assert emb.weight.grad is not None
    for i, w in enumerate(wavs):
        mel = s3tok.log_mel_spectrogram(w)
        ref_codes, ref_len = tok.quantize(mel[None], torch.tensor([mel.shape[1]]))
        assert int(code_lens[i]) == int(ref_len[0])
        assert torch.equal(codes[i, :code_lens[i]], ref_codes[0, :ref_len[0]])
        assert (codes[i, code_lens[i]:] == 0).all()
    codes_list, _ = tok.tokenize_waveform(wavs)  # a list of 1-D tensors works too
    assert torch.equal(codes_list, codes)


def test_tokens_identical_in_train_and_eval_mode(model_path, ref_mels):
    tok = s3tok.load_model(model_path)
    mels, lens = s3tok.padding([ref_mels["en_yes"], ref_mels["en_folder"]])
    eval_codes = tok.quantize(mels, lens)[0]
    tok.train()
    assert torch.equal(tok.quantize(mels, lens)[0], eval_codes)


@pytest.mark.slow
def test_ddp_step_with_two_gloo_processes(model_path, ref, tmp_path):
    cmd = [sys.executable, str(ROOT / "examples" / "train_speech_lm.py"), "--model", str(model_path),
           "--wav_dir", str(ref / "audio"), "--steps", "2", "--batch_size", "2", "--clips", "4",
           "--seconds", "2", "--ddp", "2", "--out_dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["synced"] == r1["synced"] and not any(n.startswith("tokenizer.") for n in r0["synced"])
    assert set(r0["lm"]) == set(r1["lm"])
    for k in r0["lm"]:
        assert torch.equal(r0["lm"][k], r1["lm"][k]), f"{k} differs between ranks: gradients not synced"
    assert r0["losses"] != r1["losses"]  # each rank saw its own clips
