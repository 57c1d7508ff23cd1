"""s3tok.data.kaldi_fbank against torchaudio's ``compliance.kaldi.fbank``: values made by
``tools/make_fbank_reference.py`` on the ``ref`` set's clips, committed in ``tests/data``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import set_utts
from s3tok.data.audio import AudioError, read_audio, resample
from s3tok.data.kaldi_fbank import embedding_features, fbank, fbank_batch, num_frames

REFERENCE = Path(__file__).parent / "data" / "kaldi_fbank_reference.npz"
# Allowed |difference| of a log-mel value: 2e-4 at -10 and above (audible bins: energies over 4.5e-5), and
# 2e-4 more per unit of log below -10, down to the floor at -15.94 (log of fp32 eps). The reference was made
# on one machine; torch's kernels (the FFT, the mel product) round differently by CPU, and in a nearly
# silent bin that rounding of the frame is a large share of the bin's energy. Measured on a Xeon with
# AVX-512 (torch 2.13.0): at most 8.3e-5 above -10, 1.5e-4 above -12, 5.2e-4 near the floor; on the machine
# that made the reference, 0.
TOLERANCE = 2e-4
QUIET_BELOW = -10.0


def allowed(want: np.ndarray) -> np.ndarray:
    """The tolerance of each reference value (see :data:`TOLERANCE`)."""
    return TOLERANCE * (1.0 + np.maximum(0.0, QUIET_BELOW - want))


def clip_digest(path: Path) -> str:
    """As ``tools/make_fbank_reference.py``: SHA-256 of the decoded samples and rate, not of the file."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    head = f"{rate} {data.shape[0]} {data.shape[1]}\n".encode()
    return hashlib.sha256(head + np.ascontiguousarray(data, dtype="<f4").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def expected():
    with np.load(REFERENCE) as z:
        return json.loads(str(z["meta"])), {k: z[k] for k in z.files if k != "meta"}


@pytest.fixture(scope="module")
def clips(ref, expected):
    """``{utt: path}`` of the ``ref`` set, once its clips are checked to be those the values were made from."""
    meta, _ = expected
    paths = dict(set_utts(ref))
    changed = sorted(u for u, c in meta["clips"].items() if u not in paths or clip_digest(paths[u]) != c["sha256"])
    assert not changed, (f"tools/make_test_set.py no longer makes the clips {REFERENCE.name} was computed on "
                         f"({', '.join(changed)}): rerun tools/make_fbank_reference.py")
    return {u: paths[u] for u in meta["clips"]}


def reference_input(path: Path) -> torch.Tensor:
    """What the reference fed torchaudio: soundfile float32, channel 0, s3tok's resampler to 16 kHz."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return resample(torch.from_numpy(np.ascontiguousarray(data[:, 0])), rate, 16000)


def test_fbank_matches_torchaudio(clips, expected):
    meta, arrays = expected
    waves = {u: reference_input(p) for u, p in clips.items()}
    batched = dict(zip(waves, fbank_batch(list(waves.values()))))
    bad = []
    for utt, wave in waves.items():
        want, rows = arrays[f"feat_{utt}"], arrays[f"rows_{utt}"]
        for how, got in (("fbank", fbank(wave)), ("fbank_batch", batched[utt])):
            assert got.shape == (meta["clips"][utt]["frames"], 80), f"{utt} ({how}): shape {tuple(got.shape)}"
            kept = got.numpy()[rows]
            diff = np.abs(kept - want)
            over = ~(diff <= allowed(want))  # NaN counts as over
            if over.any():
                i = np.unravel_index(np.argmax(np.where(over, diff, -1.0)), diff.shape)
                bad.append(f"{utt} ({how}): {int(over.sum())} values over, e.g. frame {i[0]} bin {i[1]}: "
                           f"{kept[i]:.6f} against {want[i]:.6f}")
    assert not bad, "fbank differs from torchaudio's beyond the tolerance: " + "; ".join(bad)


def test_embedding_features_match_reference(clips, expected):
    """Whole clips through ``read_audio`` and ``embedding_features`` (channel 0, resampling, mean removal)
    against torchaudio's fbank minus its mean, on the clips stored whole (stereo, 8/44.1/48 kHz among them)."""
    meta, arrays = expected
    whole = [u for u, c in meta["clips"].items() if c["rows_stored"] == c["frames"]]
    assert {"stereo_mix", "cmn_thanks_48k", "en_boats_8k"} <= set(whole)
    for utt in whole:
        raw = arrays[f"feat_{utt}"]
        want = raw - raw.mean(0, keepdims=True)
        diff = np.abs(embedding_features(*read_audio(clips[utt])).numpy() - want)
        tol = allowed(raw)
        bound = tol + tol.mean(0, keepdims=True)  # a value's own error and its bin mean's
        assert (diff <= bound).all(), f"{utt}: embedding_features max |diff| {diff.max():.3g} over the tolerance"


def test_embedding_features_channel_zero(clips):
    audio, rate = read_audio(clips["stereo_mix"])
    assert audio.shape[0] == 2 and rate == 16000
    feat = embedding_features(audio, rate)
    assert torch.equal(feat, embedding_features(audio[0], rate))
    assert not torch.allclose(feat, embedding_features(audio[1], rate), atol=1e-2)
    assert not torch.allclose(feat, embedding_features(audio.mean(0), rate), atol=1e-2)


def test_embedding_features_resample_and_mean(clips):
    audio, rate = read_audio(clips["cmn_thanks_48k"])
    assert rate == 48000
    feat = embedding_features(audio, rate)
    wave = resample(audio[0], rate, 16000)
    assert feat.shape == (num_frames(wave.shape[0]), 80) and feat.shape[0] != num_frames(audio.shape[1])
    plain = fbank(wave)
    assert torch.allclose(feat, plain - plain.mean(0, keepdim=True))
    assert float(feat.mean(0).abs().max()) < 1e-4


def test_too_short():
    with pytest.raises(AudioError, match="too short"):
        embedding_features(torch.zeros(1, 399), 16000)
    with pytest.raises(AudioError, match="too short"):
        embedding_features(torch.zeros(2, 1197), 48000)  # 399 samples at 16 kHz
    with pytest.raises(AudioError, match="too short"):
        fbank(torch.zeros(399))
    assert fbank_batch([]) == []
    one = embedding_features(torch.randn(400, generator=torch.Generator().manual_seed(0)), 16000)
    assert one.shape == (1, 80) and torch.equal(one, torch.zeros(1, 80))
