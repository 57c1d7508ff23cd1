"""Shared fixtures: the reference set beside the checkout (``../shared/reference``) and models loaded once."""
from __future__ import annotations

import json
import os
from pathlib import Path

import tempfile

import pytest

MODEL_NAMES = ("speech_tokenizer_v1", "speech_tokenizer_v1_25hz", "speech_tokenizer_v2_25hz",
               "speech_tokenizer_v3_25hz")


def pytest_configure(config):
    """Tests never touch the user's model cache: ``$S3TOK_HOME`` points at a fresh folder."""
    os.environ["S3TOK_HOME"] = tempfile.mkdtemp(prefix="s3tok-test-home-")


def reference_dir() -> Path:
    return Path(os.environ.get("S3TOK_REFERENCE", Path(__file__).resolve().parents[1].parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def ref() -> Path:
    d = reference_dir()
    if not (d / "wav.scp").is_file():
        pytest.fail(f"reference set not found at {d}: put ../shared beside the checkout or set S3TOK_REFERENCE")
    return d


@pytest.fixture(scope="session")
def ref_utts(ref):
    """``[(utt, absolute path)]`` from the reference ``wav.scp``, in its order."""
    out = []
    for line in (ref / "wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        out.append((utt, ref / path))
    return out


@pytest.fixture(scope="session")
def ref_mels(ref_utts):
    """Log-mel of every reference clip, computed with s3tok's front end."""
    import s3tok

    return {utt: s3tok.log_mel_spectrogram(s3tok.load_audio(str(path))) for utt, path in ref_utts}


@pytest.fixture(scope="session")
def ref_models(ref):
    import s3tok

    return {name: s3tok.load_model(ref / "models" / f"{name}.onnx") for name in MODEL_NAMES}


def load_expected(ref: Path, name: str):
    tokens = json.loads((ref / "expected" / f"tokens_{name}.json").read_text())
    ties = json.loads((ref / "expected" / f"near_ties_{name}.json").read_text())
    return tokens, {utt: {pos for pos, _ in v} for utt, v in ties.items()}
