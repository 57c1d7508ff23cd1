"""Unit tests of the model: exact masking, window plans, grouping, dtypes, freeze."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import MODEL_NAMES
from s3tok.model import S3Config, S3Tokenizer, official_config
from s3tok.model.tokenizer import group_segments
from s3tok.model.windows import merge_segments, plan_segments


def random_model(version: str, seed: int = 0) -> S3Tokenizer:
    torch.manual_seed(seed)
    m = S3Tokenizer(official_config(version, width=128, heads=2, depth=2))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, p.shape[-1] ** -0.5)
            elif name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0, 0.1)
    return m.eval()


@pytest.mark.parametrize("version", MODEL_NAMES)
def test_padding_does_not_leak(version):
    """Items of very different lengths padded into one forward give their batch-1 tokens.

    This fails if any of the masks (before conv1/conv2, attention keys, FSMN) is wrong.
    """
    model = random_model(version)
    torch.manual_seed(1)
    lens = [2999, 57, 1200, 8]
    mels = torch.rand(len(lens), 128, max(lens)) * 2.5 - 1.0
    for i, n in enumerate(lens):
        mels[i, :, n:] = 5.0  # garbage in the padding: masking must hide it
    codes, code_lens = model.forward_segments(mels, torch.tensor(lens))
    for i, n in enumerate(lens):
        alone, alone_len = model.forward_segments(mels[i:i + 1, :, :n], torch.tensor([n]))
        assert int(code_lens[i]) == int(alone_len[0]) == model.num_tokens(n)
        assert codes[i, :code_lens[i]].tolist() == alone[0, :alone_len[0]].tolist(), f"item {i} (len {n})"


@pytest.mark.parametrize("version", MODEL_NAMES)
def test_products_skip_padded_frames(version, monkeypatch):
    """On a CPU the frame-by-frame products see the real frames only (the residual stream is packed),
    and the hidden states of the real frames are those of the padded computation."""
    import s3tok.model.encoder as encoder_module

    model = random_model(version)
    enc = model.encoder
    torch.manual_seed(2)
    lens = [1200, 700, 57]
    mels = torch.rand(len(lens), 128, max(lens)) * 2.5 - 1.0
    rows = []
    real_linear = encoder_module.linear
    monkeypatch.setattr(encoder_module, "linear", lambda layer, x, **kw: rows.append(x.shape[:-1]) or
                        real_linear(layer, x, **kw))
    with torch.no_grad():
        packed, out_lens = enc(mels, torch.tensor(lens))
        real = int(out_lens.sum())
        assert rows and all(tuple(r) == (real,) for r in rows), rows[:3]
        rows.clear()
        enc.pack_rows = False
        padded, _ = enc(mels, torch.tensor(lens))
        assert all(tuple(r) == (len(lens), padded.shape[1]) for r in rows), rows[:3]
    for i, n in enumerate(out_lens.tolist()):
        assert torch.allclose(packed[i, :n], padded[i, :n], rtol=1e-5, atol=1e-5), f"item {i}"
        assert not packed[i, n:].any()  # zeros after each item
    enc.pack_rows = True
    quantized = []
    real_quantizer = model.quantizer.forward
    monkeypatch.setattr(model.quantizer, "forward", lambda h: quantized.append(h.shape[:-1]) or real_quantizer(h))
    codes, code_lens = model.forward_segments(mels, torch.tensor(lens))
    assert [tuple(q) for q in quantized] == [(real,)]  # the quantizer too sees the real frames only
    for i, n in enumerate(code_lens.tolist()):
        assert not codes[i, n:].any()


@pytest.mark.parametrize("version", MODEL_NAMES)
def test_attention_runs_item_by_item(version, monkeypatch):
    """On a CPU attention (and the FSMN memory) of a padded batch run on each item's own frames, as at batch 1:
    no key mask, no scores of padded frames; the tokens are each item's batch-1 tokens."""
    import s3tok.model.encoder as encoder_module

    model = random_model(version)
    torch.manual_seed(3)
    lens = [1200, 700, 57]
    mels = torch.rand(len(lens), 128, max(lens)) * 2.5 - 1.0
    calls = []
    real_sdpa = encoder_module.F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, **kw):
        calls.append((q.shape[0], q.shape[2], k.shape[2], attn_mask is None))
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(encoder_module.F, "scaled_dot_product_attention", sdpa)
    codes, code_lens = model.forward_segments(mels, torch.tensor(lens))
    per_layer = [(1, n, n, True) for n in code_lens.tolist()]
    assert calls == per_layer * model.config.depth
    monkeypatch.undo()
    for i, n in enumerate(lens):
        alone, alone_len = model.forward_segments(mels[i:i + 1, :, :n], torch.tensor([n]))
        assert codes[i, :code_lens[i]].tolist() == alone[0, :alone_len[0]].tolist(), f"item {i}"


def test_padding_leak_is_detected():
    """Sanity check of the test above: without the key mask the batch changes the short item's tokens."""
    model = random_model("speech_tokenizer_v2_25hz")
    enc = model.encoder
    torch.manual_seed(1)
    mels = torch.rand(2, 128, 2000) * 2.5 - 1.0
    with torch.no_grad():
        h_full, _ = enc(mels, torch.tensor([2000, 2000]))  # padding treated as real frames
        h_alone, _ = enc(mels[1:, :, :300], torch.tensor([300]))
    n = model.num_tokens(300)
    assert not torch.equal(model.quantizer(h_full[1, :n]), model.quantizer(h_alone[0, :n]))


def _v1_25(v1, hz25):
    return {name: (v1 if name == "speech_tokenizer_v1" else hz25) for name in MODEL_NAMES}


# The long-audio rule written out by hand: windows of 3000 frames at 0, 2600, 5200, ... until one reaches the
# end; keep all but the last k tokens of the first, drop k at both ends of inner ones and the first k of the
# last (k = 2 s: 100 tokens at 50 Hz, 50 at 25 Hz). Per model [keep from, keep to, tokens of the window].
RULE_WINDOWS = {
    "long_35s": [{"start": 0, "end": 3000, "kept_tokens": _v1_25([0, 1400, 1500], [0, 700, 750])},
                 {"start": 2600, "end": 3501, "kept_tokens": _v1_25([100, 451, 451], [50, 226, 226])}],
    "long_65s": [{"start": 0, "end": 3000, "kept_tokens": _v1_25([0, 1400, 1500], [0, 700, 750])},
                 {"start": 2600, "end": 5600, "kept_tokens": _v1_25([100, 1400, 1500], [50, 700, 750])},
                 {"start": 5200, "end": 6502, "kept_tokens": _v1_25([100, 651, 651], [50, 326, 326])}],
}


def _check_window_plan(windows: dict) -> None:
    frames = {"long_35s": 3501, "long_65s": 6502}
    for utt, wins in windows.items():
        for version in MODEL_NAMES:
            cfg = official_config(version)
            segs = plan_segments(0, frames[utt], cfg.num_tokens, cfg.token_rate)
            assert [(s.start, s.start + s.length) for s in segs] == [(w["start"], w["end"]) for w in wins]
            kept = [[s.keep_from, s.keep_to, cfg.num_tokens(s.length)] for s in segs]
            assert kept == [w["kept_tokens"][version] for w in wins]
            merged = merge_segments(segs, [list(range(cfg.num_tokens(s.length))) for s in segs])
            assert len(merged) == cfg.num_tokens(frames[utt])


def test_window_plan_follows_the_rule():
    _check_window_plan(RULE_WINDOWS)


def test_window_plan_matches_shared_reference(shared_ref):
    _check_window_plan(json.loads((shared_ref / "expected" / "windows.json").read_text()))


@pytest.mark.parametrize("frames", [3001, 5600, 5601, 8200, 52 * 100 + 40, 360000])
def test_window_lengths_exact(frames):
    """No redundant window, and merged length = whole-utterance token count (52.4 s: 1310 at 25 Hz)."""
    for version in ("speech_tokenizer_v1", "speech_tokenizer_v2_25hz"):
        cfg = official_config(version)
        segs = plan_segments(0, frames, cfg.num_tokens, cfg.token_rate)
        assert segs[-1].start + segs[-1].length == frames
        assert len(segs) == 1 or segs[-2].start + 3000 < frames  # the previous window did not reach the end
        assert sum(s.keep_to - s.keep_from for s in segs) == cfg.num_tokens(frames)
    assert official_config("speech_tokenizer_v2_25hz").num_tokens(5240) == 1310


def test_group_segments_bounded_and_exact():
    cfg = official_config("speech_tokenizer_v1")
    segs = [s for i, n in enumerate([360000, 100, 200, 2999, 3000, 50]) for s in
            plan_segments(i, n, cfg.num_tokens, cfg.token_rate)]
    groups = group_segments(segs, max_frames=4 * 3000)
    assert sorted((s.item, s.start) for g in groups for s in g) == sorted((s.item, s.start) for s in segs)
    for g in groups:
        assert len(g) * g[0].length <= 4 * 3000
        assert all(s.length <= g[0].length for s in g)
    # short items are not padded to a 30 s window: they go with the similar-length last window
    for g in groups:
        if any(s.length <= 200 for s in g):
            assert g[0].length < 3000


def test_long_item_mixed_with_short_items_and_forward_bound():
    model = random_model("speech_tokenizer_v1_25hz")
    torch.manual_seed(2)
    lens = [7000, 120, 2500]
    mels = torch.rand(3, 128, max(lens)) * 2 - 1
    calls = []
    orig = model.forward_segments

    def spy(m, l):
        calls.append(tuple(m.shape))
        return orig(m, l)

    model.forward_segments = spy
    codes, code_lens = model.quantize(mels, torch.tensor(lens), max_frames_per_forward=6000)
    assert all(b * t <= 6000 for b, _, t in calls)
    assert min(t for _, _, t in calls) == 120  # the short item was not padded to a 30 s window
    for i, n in enumerate(lens):
        alone, alen = model.quantize(mels[i:i + 1, :, :n], torch.tensor([n]))
        assert codes[i, :code_lens[i]].tolist() == alone[0, :alen[0]].tolist()


def test_default_forward_bound_follows_the_device():
    """Without a bound, a CPU model runs at most 2 windows (6000 padded frames) per forward pass."""
    from s3tok.model.tokenizer import default_max_frames

    assert default_max_frames("cpu") == 6000 and default_max_frames(torch.device("cuda", 1)) == 48000
    model = random_model("speech_tokenizer_v2_25hz")
    mels = torch.rand(1, 128, 20000) * 2 - 1
    calls = []
    orig = model.forward_segments
    model.forward_segments = lambda m, n: calls.append(tuple(m.shape)) or orig(m, n)
    model.quantize(mels, torch.tensor([20000]))
    assert max(b * t for b, _, t in calls) == 6000 and sum(b for b, _, _ in calls) == 8  # 8 windows


def test_bad_inputs_are_named():
    model = random_model("speech_tokenizer_v1")
    with pytest.raises(ValueError, match=r"mels must be \[B, 128, T\]"):
        model.quantize(torch.zeros(1, 80, 100), torch.tensor([100]))
    with pytest.raises(ValueError, match="length 0"):
        model.quantize(torch.zeros(2, 128, 100), torch.tensor([100, 0]))
    with pytest.raises(ValueError, match="mels_lens"):
        model.quantize(torch.zeros(2, 128, 100), torch.tensor([100]))


def test_freeze_and_ordinary_tensors():
    model = random_model("speech_tokenizer_v3_25hz").freeze()
    assert not any(p.requires_grad for p in model.parameters())
    mels = torch.rand(2, 128, 400)
    model.train()
    c_train, _ = model.quantize(mels, torch.tensor([400, 300]))
    model.eval()
    c_eval, _ = model.quantize(mels, torch.tensor([400, 300]))
    assert torch.equal(c_train, c_eval)
    assert not c_eval.is_inference()
    assert c_eval.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_keeps_decisions_fp32(dtype):
    model = random_model("speech_tokenizer_v2_25hz").set_dtype(dtype)
    assert model.encoder.conv1.weight.dtype == dtype
    assert model.quantizer.project_down.weight.dtype == torch.float32
    mels = torch.rand(2, 128, 500) * 2 - 1
    codes, lens = model.quantize(mels, torch.tensor([500, 321]))
    assert lens.tolist() == [125, 81]
    assert int(codes.max()) < 3 ** 8 and int(codes.min()) >= 0
    fp32 = random_model("speech_tokenizer_v2_25hz")
    ref, _ = fp32.quantize(mels, torch.tensor([500, 321]))
    agree = (codes[0] == ref[0]).float().mean().item()
    print(f"{dtype}: {agree:.1%} of tokens agree with fp32 on a random model")


@pytest.mark.parametrize("version", ["speech_tokenizer_v1", "speech_tokenizer_v2_25hz", "speech_tokenizer_v3_25hz"])
def test_mixed_precision_runs_only_products_in_bf16(version):
    """bfloat16-mixed: block linears in bf16, everything else fp32; tokens closer to fp32 than all-bf16."""
    from s3tok.api import parse_precision

    assert parse_precision("bf16-mixed") == (torch.bfloat16, True) and parse_precision(None) == (torch.float32, False)
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_precision("int8-mixed")
    mixed = random_model(version).set_dtype(*parse_precision("bfloat16-mixed"))
    assert mixed.precision == "bfloat16-mixed" and mixed.compute_dtype == torch.float32
    block = mixed.encoder.blocks[0]
    assert block.attn.query.weight.dtype == block.mlp[2].weight.dtype == torch.bfloat16
    assert block.attn_ln.weight.dtype == mixed.encoder.conv2.weight.dtype == torch.float32
    torch.manual_seed(0)
    mels = torch.rand(2, 128, 1500) * 2 - 1
    lens = torch.tensor([1500, 1100])
    fp32, _ = random_model(version).quantize(mels, lens)
    low, low_lens = mixed.quantize(mels, lens)
    full, _ = random_model(version).set_dtype(torch.bfloat16).quantize(mels, lens)
    assert low.dtype == torch.int64 and low.shape == fp32.shape
    miss_mixed = (low != fp32).float().mean().item()
    miss_full = (full != fp32).float().mean().item()
    print(f"{version}: tokens differing from fp32: mixed {miss_mixed:.2%}, bf16 {miss_full:.2%}")
    assert miss_mixed <= miss_full


def test_config_validation():
    with pytest.raises(ValueError, match="not a multiple"):
        S3Config("speech_tokenizer_v1", width=100, heads=3)
    with pytest.raises(ValueError, match="unknown model version"):
        official_config("speech_tokenizer_v9")


def test_pack_by_length_bounds_padding():
    """A short item never rides in a group of long ones: at most 25 % of any item is padding."""
    from s3tok.model.packing import pack_by_length

    lengths = [3000, 142, 3000, 901, 1470, 150, 2999, 600]
    groups = pack_by_length(lengths, lambda n: n, max_frames=48000)
    assert sorted(n for g in groups for n in g) == sorted(lengths)  # each item exactly once
    for g in groups:
        assert all(n >= 0.75 * g[0] for n in g), g
    assert [3000, 3000, 2999] in groups
