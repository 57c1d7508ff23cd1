"""The CPU kernel of the linear layers is chosen by timing, once per dtype and width, or forced; model loading
builds no random weights to overwrite."""
from __future__ import annotations

import pytest
import torch

import s3tok
from s3tok.model import linear as lin


@pytest.fixture
def fresh_choices(monkeypatch):
    """An empty choice table for the test (the process's own choices are restored afterwards)."""
    monkeypatch.setattr(lin, "_chosen", {})
    monkeypatch.delenv(lin.KERNEL_ENV, raising=False)


def test_timing_measures_both_kernels_and_leaves_the_random_state_alone(fresh_choices):
    state = torch.get_rng_state()
    times = lin.time_kernels(torch.float32, 64, rows=16, reps=2)
    assert set(times) == set(lin.KERNELS) and all(0 < t < 10 for t in times.values())
    assert torch.equal(state, torch.get_rng_state())


def test_both_kernels_compute_the_same_feed_forward(fresh_choices):
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    gen = torch.Generator().manual_seed(1)
    x, w1, w2 = (torch.randn(s, generator=gen) for s in ((8, 16), (64, 16), (16, 64)))
    b1, b2 = torch.randn(64, generator=gen), torch.randn(16, generator=gen)
    with torch.no_grad():
        a, b = (lin._run(k, x, w1, b1, w2, b2) for k in lin.KERNELS)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("onednn_s,aten_s,expected", [(1.0, 0.90, "aten"), (1.0, 0.97, "onednn"), (0.8, 1.0, "onednn")])
def test_the_faster_kernel_is_chosen_once(fresh_choices, monkeypatch, onednn_s, aten_s, expected):
    """ATen must beat oneDNN by the margin; the timing runs once per dtype and width, then is remembered."""
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    calls = []
    monkeypatch.setattr(lin, "time_kernels", lambda d, w: calls.append((d, w)) or {"onednn": onednn_s, "aten": aten_s})
    assert lin.cpu_kernel(torch.float32, 32) == expected
    assert lin.cpu_kernel(torch.float32, 32) == expected
    assert calls == [(torch.float32, 32)]
    lin.cpu_kernel(torch.float32, 48)  # another width: timed on its own
    assert calls == [(torch.float32, 32), (torch.float32, 48)]
    assert lin.chosen_kernels()["float32 width 32"] == expected


@pytest.mark.parametrize("value,expected", [("aten", "aten"), ("ONEDNN", "onednn"), ("auto", None), ("", None)])
def test_the_environment_forces_a_kernel(fresh_choices, monkeypatch, value, expected):
    monkeypatch.setenv(lin.KERNEL_ENV, value)
    assert lin.forced_kernel() == expected
    if expected and torch.float32 in lin.ONEDNN_LINEAR:
        monkeypatch.setattr(lin, "time_kernels", lambda d, w: pytest.fail("timed although forced"))
        assert lin.cpu_kernel(torch.float32, 16) == expected


def test_a_bad_environment_value_names_the_variable(fresh_choices, monkeypatch):
    monkeypatch.setenv(lin.KERNEL_ENV, "mkl")
    with pytest.raises(ValueError, match="S3TOK_CPU_LINEAR='mkl': expected one of auto, onednn, aten"):
        lin.forced_kernel()


def test_a_dtype_onednn_cannot_run_takes_aten_without_timing(fresh_choices, monkeypatch):
    monkeypatch.setattr(lin, "ONEDNN_LINEAR", frozenset())
    monkeypatch.setattr(lin, "time_kernels", lambda d, w: pytest.fail("timed a kernel that cannot run"))
    assert lin.cpu_kernel(torch.float32, 16) == "aten"


def test_the_layers_follow_the_choice(fresh_choices, monkeypatch):
    """A layer computed with either choice gives the same numbers, and the choice is what ran."""
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    layer = torch.nn.Linear(16, 64)
    x = torch.randn(4, 16)
    outs = {}
    for kernel in lin.KERNELS:
        monkeypatch.setattr(lin, "_chosen", {(torch.float32, 16): kernel})
        with torch.no_grad():
            outs[kernel] = lin.linear(layer, x, gelu=True)
    torch.testing.assert_close(outs["onednn"], outs["aten"], rtol=1e-5, atol=1e-5)


def test_loading_computes_no_random_weights(ref, monkeypatch):
    """The model is built on the meta device and given the file's weights: no random initialisation of
    hundreds of MB to throw away (it was most of the load time of an official-size model)."""
    real_uniform = torch.Tensor.uniform_
    filled = []

    def uniform_(self, *a, **k):
        if not self.is_meta:
            filled.append(tuple(self.shape))
        return real_uniform(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "uniform_", uniform_)
    model = s3tok.load_model(ref / "models" / "speech_tokenizer_v2_25hz.onnx", cache=False)
    assert filled == []
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])

