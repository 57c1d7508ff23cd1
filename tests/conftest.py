"""Shared fixtures: the suite's own reference set (made at test time), the independent one beside the checkout
(``../shared/reference``, optional), and models loaded once."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

MODEL_NAMES = ("speech_tokenizer_v1", "speech_tokenizer_v1_25hz", "speech_tokenizer_v2_25hz",
               "speech_tokenizer_v3_25hz")


def pytest_configure(config):
    """Tests never touch the user's model cache: ``$S3TOK_HOME`` points at a fresh folder, removed at the end."""
    config._s3tok_home = tempfile.mkdtemp(prefix="s3tok-test-home-")
    os.environ["S3TOK_HOME"] = config._s3tok_home


def pytest_unconfigure(config):
    home = getattr(config, "_s3tok_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]


def shared_reference_dir() -> Path:
    """The independent reference set: ``$S3TOK_REFERENCE``, else ``../shared/reference`` beside the clone."""
    return Path(os.environ.get("S3TOK_REFERENCE", ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def own_ref(tmp_path_factory) -> Path:
    """The suite's own reference set, made once per session by ``tools/make_test_set.py`` (random-weight
    models of the four official layouts, 17 clips, onnxruntime's batch-1 tokens and near-ties)."""
    out = tmp_path_factory.mktemp("test_set")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_test_set.py"), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"tools/make_test_set.py failed:\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="session")
def shared_ref() -> Path:
    """``../shared/reference`` (tokens made by an independent implementation) when it is there; its tests
    are skipped otherwise."""
    d = shared_reference_dir()
    if not (d / "wav.scp").is_file():
        pytest.skip(f"independent reference set not found at {d} (an extra check; set S3TOK_REFERENCE)")
    return d


@pytest.fixture(scope="session")
def ref(own_ref) -> Path:
    """The reference set most tests use: the suite's own, so that a clone with nothing beside it tests
    everything. Tests that compare with the independent set ask for ``shared_ref``."""
    return own_ref


def set_utts(d: Path):
    """``[(utt, absolute path)]`` from a reference set's ``wav.scp``, in its order."""
    out = []
    for line in (d / "wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        out.append((utt, d / path))
    return out


_LOADED: dict = {}


def set_mels(d: Path) -> dict:
    """Log-mel of every clip of a reference set, computed with s3tok's front end (once per session)."""
    import s3tok

    if ("mels", d) not in _LOADED:
        _LOADED["mels", d] = {u: s3tok.log_mel_spectrogram(s3tok.load_audio(str(p))) for u, p in set_utts(d)}
    return _LOADED["mels", d]


def set_models(d: Path) -> dict:
    """The four models of a reference set, loaded once per session."""
    import s3tok

    if ("models", d) not in _LOADED:
        _LOADED["models", d] = {n: s3tok.load_model(d / "models" / f"{n}.onnx") for n in MODEL_NAMES}
    return _LOADED["models", d]


@pytest.fixture(scope="session")
def ref_utts(ref):
    return set_utts(ref)


@pytest.fixture(scope="session")
def ref_mels(ref):
    return set_mels(ref)


@pytest.fixture(scope="session")
def ref_models(ref):
    return set_models(ref)


def load_expected(ref: Path, name: str):
    tokens = json.loads((ref / "expected" / f"tokens_{name}.json").read_text())
    ties = json.loads((ref / "expected" / f"near_ties_{name}.json").read_text())
    return tokens, {utt: {pos for pos, _ in v} for utt, v in ties.items()}
