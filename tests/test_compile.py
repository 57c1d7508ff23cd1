"""``torch.compile`` on the encoder gives the same tokens (CPU; skipped where no compiler is available)."""
from __future__ import annotations

import importlib
import shutil

import pytest
import torch

import s3tok


def compiler_available() -> bool:
    if not hasattr(torch, "compile") or (shutil.which("cc") is None and shutil.which("gcc") is None):
        return False
    try:
        importlib.import_module("torch._inductor")
    except Exception:  # noqa: BLE001 - any import failure means no compiler backend here
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not compiler_available(), reason="no torch.compile backend or C compiler on this machine")
def test_compiled_encoder_same_tokens(ref, ref_mels):
    model = s3tok.load_model(ref / "models" / "speech_tokenizer_v3_25hz.onnx")
    mels, lens = s3tok.padding([ref_mels[u] for u in ("en_yes", "cmn_boats", "long_35s")])
    eager, eager_lens = model.quantize(mels, lens)
    names = sorted(model.state_dict())
    model.compile_encoder()
    compiled, compiled_lens = model.quantize(mels, lens)
    assert torch.equal(compiled_lens, eager_lens) and torch.equal(compiled, eager)
    assert sorted(model.state_dict()) == names  # checkpoints keep their keys
