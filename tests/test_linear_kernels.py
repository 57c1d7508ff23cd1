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


def test_timing_measures_every_kernel_and_leaves_the_random_state_alone(fresh_choices):
    state = torch.get_rng_state()
    times = lin.time_kernels(torch.float32, 64, rows=16, reps=2)
    assert set(times) == set(lin.KERNELS) and all(0 < t < 10 for t in times.values())
    assert torch.equal(state, torch.get_rng_state())


def test_every_kernel_computes_the_same_feed_forward(fresh_choices):
    """The two oneDNN kernels give the same bits (fused or separate GELU and addition); ATen's sums differ
    in order only."""
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    gen = torch.Generator().manual_seed(1)
    x, w1, w2 = (torch.randn(s, generator=gen) for s in ((40, 32), (128, 32), (32, 128)))
    b1, b2 = torch.randn(128, generator=gen), torch.randn(32, generator=gen)
    with torch.no_grad():
        out = {k: lin._run(k, x, w1, b1, w2, b2) for k in lin.KERNELS}
    assert torch.equal(out["fused"], out["onednn"])
    torch.testing.assert_close(out["fused"], out["aten"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused_s,onednn_s,aten_s,expected", [
    (1.0, 1.1, 0.90, "aten"), (1.0, 1.1, 0.97, "fused"), (0.8, 0.9, 1.0, "fused"),
    (1.0, 0.9, 1.0, "onednn"),  # an AVX2-only CPU: oneDNN's fused GELU costs more than a separate one
    (1.0, 0.8, 0.78, "onednn"), (1.0, 0.8, 0.75, "aten")])
def test_the_faster_kernel_is_chosen_once(fresh_choices, monkeypatch, fused_s, onednn_s, aten_s, expected):
    """The faster oneDNN kernel, unless ATen beats it by the margin; the timing runs once per dtype and width,
    then is remembered."""
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    calls = []
    times = {"fused": fused_s, "onednn": onednn_s, "aten": aten_s}
    monkeypatch.setattr(lin, "time_kernels", lambda d, w: calls.append((d, w)) or times)
    assert lin.cpu_kernel(torch.float32, 32) == expected
    assert lin.cpu_kernel(torch.float32, 32) == expected
    assert calls == [(torch.float32, 32)]
    lin.cpu_kernel(torch.float32, 48)  # another width: timed on its own
    assert calls == [(torch.float32, 32), (torch.float32, 48)]
    assert lin.chosen_kernels()["float32 width 32"] == expected


def test_narrow_dtypes_never_time_the_separate_onednn_steps(fresh_choices, monkeypatch):
    """In bf16 a separate GELU or addition rounds once more than the fused one: not the same bits, so it is
    not a candidate there, and the choice is between fused and ATen as before."""
    assert lin.candidates(torch.float32) == lin.KERNELS
    assert lin.candidates(torch.bfloat16) == ("fused", "aten")
    assert lin.pick({"fused": 1.0, "aten": 0.97}) == "fused"
    if torch.bfloat16 in lin.ONEDNN_LINEAR:
        assert set(lin.time_kernels(torch.bfloat16, 32, rows=8, reps=1)) == {"fused", "aten"}


@pytest.mark.parametrize("value,expected", [("aten", "aten"), ("ONEDNN", "onednn"), ("fused", "fused"), ("auto", None), ("", None)])
def test_the_environment_forces_a_kernel(fresh_choices, monkeypatch, value, expected):
    monkeypatch.setenv(lin.KERNEL_ENV, value)
    assert lin.forced_kernel() == expected
    if expected and torch.float32 in lin.ONEDNN_LINEAR:
        monkeypatch.setattr(lin, "time_kernels", lambda d, w: pytest.fail("timed although forced"))
        assert lin.cpu_kernel(torch.float32, 16) == expected


def test_a_bad_environment_value_names_the_variable(fresh_choices, monkeypatch):
    monkeypatch.setenv(lin.KERNEL_ENV, "mkl")
    with pytest.raises(ValueError, match="S3TOK_CPU_LINEAR='mkl': expected one of auto, fused, onednn, aten"):
        lin.forced_kernel()


def test_a_dtype_onednn_cannot_run_takes_aten_without_timing(fresh_choices, monkeypatch):
    monkeypatch.setattr(lin, "ONEDNN_LINEAR", frozenset())
    monkeypatch.setattr(lin, "time_kernels", lambda d, w: pytest.fail("timed a kernel that cannot run"))
    assert lin.cpu_kernel(torch.float32, 16) == "aten"


def test_the_layers_follow_the_choice(fresh_choices, monkeypatch):
    """A layer computed with any choice gives the same numbers (the same bits from both oneDNN kernels),
    and the choice is what runs."""
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    layer = torch.nn.Linear(16, 64)
    x, res = torch.randn(4, 16), torch.randn(4, 64)
    outs = {}
    for kernel in lin.KERNELS:
        monkeypatch.setattr(lin, "_chosen", {(torch.float32, 16): kernel})
        with torch.no_grad():
            outs[kernel] = (lin.linear(layer, x, gelu=True), lin.linear(layer, x, add=res), lin.linear(layer, x))
            assert lin.kernel_for(layer, x) == kernel
    for a, b in zip(outs["fused"], outs["onednn"]):
        assert torch.equal(a, b)
    for a, b in zip(outs["fused"], outs["aten"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(lin, "_chosen", {(torch.float32, 16): "fused"})
    assert lin.kernel_for(layer, x) == "aten"  # with autograd: always ATen


def test_onednn_reorders_each_weight_once(fresh_choices, monkeypatch):
    """The oneDNN kernels reorder a layer's weight on its first product only (not on every call), give the
    bits of the plain weight, and reorder again after the weight changes in place or is replaced."""
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    calls = []
    reorder = torch.ops.mkldnn._reorder_linear_weight
    monkeypatch.setattr(lin.torch.ops.mkldnn, "_reorder_linear_weight",
                        lambda w, *a: calls.append(w.shape) or reorder(w, *a), raising=False)
    layer = torch.nn.Linear(16, 64)
    x, res = torch.randn(40, 16), torch.randn(40, 64)
    monkeypatch.setattr(lin, "_chosen", {(torch.float32, 16): "onednn"})
    with torch.no_grad():
        plain = torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")
        outs = [lin.linear(layer, x), lin.linear(layer, x, gelu=True), lin.linear(layer, x, add=res)]
        assert len(calls) == 1
        assert torch.equal(outs[0], plain)
        assert torch.equal(outs[1], torch.nn.functional.gelu(plain)) and torch.equal(outs[2], plain + res)
        layer.weight.mul_(2.0)  # changed in place: the old reordering must not be used
        assert torch.equal(lin.linear(layer, x), torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias,
                                                                                      "none", [], ""))
        assert len(calls) == 2
        layer.weight = torch.nn.Parameter(torch.zeros(64, 16))  # replaced
        assert torch.equal(lin.linear(layer, x), layer.bias.expand(40, 64))
        assert len(calls) == 3


def test_onednn_kernels_run_under_inference_mode(fresh_choices, monkeypatch):
    """Weights and inputs made under ``torch.inference_mode`` (which carry no version counter), the kernel
    timing included: the products run and give the plain weight's bits."""
    if torch.float32 not in lin.ONEDNN_LINEAR:
        pytest.skip("this torch build has no oneDNN fused linear")
    with torch.inference_mode():
        layer = torch.nn.Linear(32, 128)
        x = torch.randn(20, 32)
        times = lin.time_kernels(torch.float32, 32, rows=16, reps=1)
        assert set(times) == set(lin.KERNELS)
        for kernel in lin.ONEDNN_KERNELS:
            monkeypatch.setattr(lin, "_chosen", {(torch.float32, 32): kernel})
            assert torch.equal(lin.linear(layer, x), torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias,
                                                                                        "none", [], ""))


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

