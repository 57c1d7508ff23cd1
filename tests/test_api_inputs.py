"""The Python API's tensor inputs: autocast, dtypes, non-finite values, lengths, empty batches, casts, and the
batch log-mel's bounded memory. Small random-weight models of the suite's own reference set (seconds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import s3tok
from s3tok.data import audio as audio_module
from s3tok.data.audio import log_mel_batch, log_mel_spectrogram

MODEL = "speech_tokenizer_v2_25hz"
CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.fixture(scope="module")
def model_path(ref):
    return ref / "models" / f"{MODEL}.onnx"


@pytest.fixture(scope="module")
def tok(model_path):
    return s3tok.load_model(model_path).freeze()


@pytest.fixture(scope="module")
def wav(ref):
    return s3tok.load_audio(str(ref / "audio" / "cmn_boats.wav"))


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


# ------------------------------------------------------------------ finding 3: autocast
@pytest.mark.parametrize("device", ["cpu", *CUDA])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_leaves_tokens_and_log_mels_unchanged(model_path, wav, device, dtype):
    """A mixed-precision training step runs under autocast: the tokens and log-mels are those outside it."""
    tok = s3tok.load_model(model_path, device=device).freeze()
    w = wav.to(device)
    ref_codes, ref_lens = tok.tokenize_waveform(w[None])
    ref_mel = log_mel_spectrogram(w)
    ref_batch = log_mel_batch([w, w[:20000]])[0]
    mels, lens = s3tok.padding([ref_mel])
    ref_q = tok.quantize(mels, lens)[0]
    with torch.autocast(device, dtype=dtype):
        codes, code_lens = tok.tokenize_waveform(w[None])
        mel = log_mel_spectrogram(w)
        batch = log_mel_batch([w, w[:20000]])[0]
        q = tok.quantize(mels, lens)[0]
    assert mel.dtype == batch.dtype == torch.float32
    assert torch.equal(bits(mel), bits(ref_mel)) and torch.equal(bits(batch), bits(ref_batch))
    assert torch.equal(code_lens, ref_lens)
    assert torch.equal(codes, ref_codes), f"{int((codes != ref_codes).sum())} tokens changed under autocast"
    assert torch.equal(q, ref_q)


def test_own_low_precision_still_works_under_autocast(model_path, wav):
    """The model's own dtype (load_model(dtype=...)) is unaffected: the same tokens inside and outside."""
    tok = s3tok.load_model(model_path, dtype=torch.bfloat16).freeze()
    assert tok.precision == "bfloat16"
    ref, _ = tok.tokenize_waveform(wav[None])
    with torch.autocast("cpu", dtype=torch.float16):
        got, _ = tok.tokenize_waveform(wav[None])
    assert torch.equal(got, ref)
    fp32, _ = s3tok.load_model(model_path).tokenize_waveform(wav[None])
    print(f"bf16 model: {(ref != fp32).float().mean():.1%} of tokens differ from fp32")


# ------------------------------------------------------------------ finding 7: dtypes and non-finite values
def test_integer_waveforms_are_refused(tok, wav):
    pcm = (wav[:32000] * 32768).round().clamp(-32768, 32767).to(torch.int16)
    with pytest.raises(TypeError, match=r"wavs must be floating point, got torch.int16.*32768"):
        tok.tokenize_waveform(pcm[None])
    with pytest.raises(TypeError, match=r"wavs item 1 must be floating point, got torch.int16"):
        tok.tokenize_waveform([wav[:32000], pcm])
    with pytest.raises(TypeError, match=r"floating-point samples.*torch.int16.*32768"):
        log_mel_spectrogram(pcm)
    with pytest.raises(TypeError, match=r"floating-point samples.*int16"):
        log_mel_spectrogram(pcm.numpy())
    with pytest.raises(TypeError, match=r"waveform 0 must hold floating-point samples"):
        log_mel_batch([pcm])
    with pytest.raises(TypeError, match=r"mels must be floating point, got torch.int64"):
        tok.quantize(torch.zeros(1, 128, 100, dtype=torch.int64), torch.tensor([100]))
    log_mel_spectrogram(wav[:32000].double().numpy())  # float64 arrays still work


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused_naming_the_item(tok, wav, bad):
    w = wav[:32000].clone()
    broken = w.clone()
    broken[1000] = bad
    with pytest.raises(ValueError, match=r"waveform 1 has non-finite samples"):
        tok.tokenize_waveform(torch.stack([w, broken]))
    with pytest.raises(ValueError, match=r"waveform 1 has non-finite samples"):
        tok.tokenize_waveform([w, broken])
    with pytest.raises(ValueError, match=r"non-finite samples"):
        log_mel_spectrogram(broken)
    with pytest.raises(ValueError, match=r"non-finite samples"):
        log_mel_spectrogram(broken.numpy())
    mel = log_mel_spectrogram(w)
    mels = torch.stack([mel, mel])
    mels[1, 5, 7] = bad
    with pytest.raises(ValueError, match=r"mels item 1 has non-finite values"):
        tok.quantize(mels, torch.tensor([mel.shape[1]] * 2))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow itself
def test_samples_far_out_of_range_are_refused(tok, wav):
    """Finite samples whose power overflows give a non-finite log-mel: refused, not tokenized."""
    with pytest.raises(ValueError, match=r"log-mel of wavs item 0 has non-finite values"):
        tok.tokenize_waveform(torch.full((1, 16000), 3e38))


# ------------------------------------------------------------------ finding 8: lengths
@pytest.mark.parametrize("n", [10 ** 9, 32001, -16000, 0])
def test_out_of_range_wav_lens_are_refused(tok, wav, n):
    wavs = torch.stack([wav[:32000], wav[:32000]])
    with pytest.raises(ValueError, match=rf"wav_lens item 1: length {n} outside 1\.\.32000"):
        tok.tokenize_waveform(wavs, torch.tensor([32000, n]))


@pytest.mark.parametrize("n", [201, -5, 0])
def test_out_of_range_mels_lens_are_refused(tok, n):
    with pytest.raises(ValueError, match=rf"mels_lens item 1: length {n} outside 1\.\.200"):
        tok.quantize(torch.zeros(2, 128, 200), torch.tensor([200, n]))


def test_length_types(tok, wav):
    wavs = torch.stack([wav[:32000], wav[:32000]])
    ref_codes, ref_lens = tok.tokenize_waveform(wavs, torch.tensor([32000, 20000]))
    for lens in ([32000, 20000], (32000, 20000), np.array([32000, 20000]), torch.tensor([32000., 20000.])):
        codes, code_lens = tok.tokenize_waveform(wavs, lens)
        assert torch.equal(codes, ref_codes) and torch.equal(code_lens, ref_lens)
    with pytest.raises(ValueError, match=r"wav_lens item 1: length 20000.5 is not a whole number"):
        tok.tokenize_waveform(wavs, torch.tensor([32000, 20000.5]))
    with pytest.raises(ValueError, match=r"wav_lens must be \[B=2\], got \[1\]"):
        tok.tokenize_waveform(wavs, [32000])
    with pytest.raises(TypeError, match=r"wav_lens must be a 1-D integer tensor or a list of ints"):
        tok.tokenize_waveform(wavs, 32000)
    with pytest.raises(ValueError, match=r"wav_lens goes with a padded"):
        tok.tokenize_waveform([wav[:32000]], [32000])
    mel = log_mel_spectrogram(wav[:32000])
    mels = torch.stack([mel, mel])
    ref_q = tok.quantize(mels, torch.tensor([200, 150], dtype=torch.int32))
    got = tok.quantize(mels, [200, 150])
    assert torch.equal(got[0], ref_q[0]) and torch.equal(got[1], ref_q[1])


# ------------------------------------------------------------------ finding 12: empty batches, gradients
def test_empty_batches_give_empty_outputs(tok):
    for codes, lens in (tok.quantize(torch.zeros(0, 128, 100), torch.zeros(0, dtype=torch.int32)),
                        tok.quantize(torch.zeros(0, 128, 100), []),
                        tok.tokenize_waveform(torch.zeros(0, 16000)),
                        tok.tokenize_waveform([])):
        assert codes.shape == (0, 0) and lens.shape == (0,)
        assert codes.dtype == lens.dtype == torch.int64


def test_inputs_that_require_grad(tok, wav):
    w = wav[:32000].clone().requires_grad_()
    ref = log_mel_spectrogram(wav[:32000])
    assert torch.equal(log_mel_spectrogram(w), ref)
    assert torch.equal(log_mel_batch([w])[0][0], ref)
    assert torch.equal(tok.tokenize_waveform(w[None])[0], tok.tokenize_waveform(wav[None, :32000])[0])
    mel = ref[None].clone().requires_grad_()
    assert torch.equal(tok.quantize(mel, [200])[0], tok.quantize(ref[None], [200])[0])


# ------------------------------------------------------------------ finding 11: a long waveform in chunks
def whole_log_mel_batch(wavs, n_mels=128):
    """The batch log-mel as it was before it was chunked: one power spectrum of the whole batch."""
    from s3tok.data.audio import HOP_LENGTH, N_FFT, _hann, _log_compress_, _mel_filters, _power_spectrum, mel_frames

    padded = [torch.nn.functional.pad(w[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0] for w in wavs]
    lens = torch.tensor([mel_frames(w.shape[-1]) for w in wavs], dtype=torch.int32)
    longest = max(p.shape[-1] for p in padded)
    x = torch.stack([torch.nn.functional.pad(p, (0, longest - p.shape[-1])) for p in padded])
    t_max = int(lens.max())
    mel = _mel_filters(x.device, n_mels) @ _power_spectrum(x[..., :(t_max - 1) * HOP_LENGTH + N_FFT], _hann(x.device))
    valid = torch.arange(t_max)[None, :] < lens[:, None]
    return _log_compress_(mel, valid).masked_fill(~valid[:, None, :], 0.0), lens


def test_batch_log_mel_is_chunked_and_bit_identical(monkeypatch):
    chunk = audio_module.MEL_CHUNK_FRAMES
    torch.manual_seed(3)
    frames = [2, chunk - 1, chunk, chunk + 1, chunk + 2, 2 * chunk, 2 * chunk + 1, 3 * chunk - 7]
    wavs = [torch.randn(n * 160 + extra) * 0.1 for n, extra in zip(frames, [401 - 320, 0, 159, 0, 3, 0, 17, 5])]
    for group in [[w] for w in wavs] + [wavs[:4], wavs[3:], wavs]:
        want, want_lens = whole_log_mel_batch(group)
        got, got_lens = log_mel_batch(group)
        assert torch.equal(got_lens, want_lens)
        assert torch.equal(bits(got), bits(want)), [w.numel() for w in group]
    seen = []
    real = audio_module._power_spectrum
    monkeypatch.setattr(audio_module, "_power_spectrum", lambda x, win: seen.append(x.shape[-1]) or real(x, win))
    log_mel_batch([torch.randn(160 * 4 * chunk) * 0.1, torch.randn(16000) * 0.1])
    assert max(seen) <= (chunk - 1) * 160 + 400, seen  # never more than one chunk's spectrum at a time


# ------------------------------------------------------------------ finding 10: casts
class SpeechLM(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        self.tokenizer = s3tok.load_model(path).freeze()
        self.embed = torch.nn.Embedding(6561, 8)


@pytest.mark.parametrize("cast,dtype", [("bfloat16", torch.bfloat16), ("half", torch.float16)])
def test_casting_the_parent_is_set_dtype(model_path, wav, cast, dtype):
    lm = SpeechLM(model_path)
    fp32, _ = lm.tokenizer.tokenize_waveform(wav[None])  # used before the cast: no stale CPU kernel weights
    getattr(lm, cast)()
    assert lm.embed.weight.dtype == dtype
    tok = lm.tokenizer
    assert tok.precision == str(dtype).replace("torch.", "") and tok.compute_dtype == dtype
    assert tok.quantizer_dtype() == torch.float32  # decisions stay fp32
    want, _ = s3tok.load_model(model_path, dtype=dtype).tokenize_waveform(wav[None])
    assert torch.equal(tok.tokenize_waveform(wav[None])[0], want)
    lm.float()
    assert tok.precision == "float32"
    tok.tokenize_waveform(wav[None])


def test_float64_cast_is_refused_and_changes_nothing(model_path, wav):
    lm = SpeechLM(model_path)
    ref, _ = lm.tokenizer.tokenize_waveform(wav[None])
    with pytest.raises(TypeError, match=r"float32, bfloat16 or float16, not torch.float64.*load_model"):
        lm.double()
    assert lm.tokenizer.precision == "float32"
    assert torch.equal(lm.tokenizer.tokenize_waveform(wav[None])[0], ref)
    mixed = s3tok.load_model(model_path, dtype="bfloat16-mixed")
    with pytest.raises(TypeError, match=r"left in bfloat16-mixed"):
        mixed.double()
    assert mixed.precision == "bfloat16-mixed"


def test_set_dtype_after_use(model_path, wav):
    tok = s3tok.load_model(model_path)
    tok.tokenize_waveform(wav[None])
    tok.set_dtype(torch.bfloat16)
    want, _ = s3tok.load_model(model_path, dtype=torch.bfloat16).tokenize_waveform(wav[None])
    assert torch.equal(tok.tokenize_waveform(wav[None])[0], want)
