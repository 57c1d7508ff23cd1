"""ONNX export: the official layout of each version, a lossless round trip through ``read_onnx``, and the same
tokens as the PyTorch model (batched, padded) and as the reference graphs."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import onnx
import pytest
import torch

import s3tok
from conftest import MODEL_NAMES
from s3tok.model import S3Config, S3Tokenizer
from s3tok.bin.export_onnx import get_parser, main
from s3tok.modelfiles.onnx_export import OPSETS, OnnxExportError, build_onnx, export_onnx, random_model
from s3tok.modelfiles.onnx_import import read_onnx

ort = pytest.importorskip("onnxruntime")

SMALL = dict(width=128, heads=2)
DEPTH = {name: 3 if name == "speech_tokenizer_v3_25hz" else 2 for name in MODEL_NAMES}  # as the reference files
# Seeds whose tokens on the inputs below all have decision margins >= 1e-4 (no near-ties, see NEAR_TIE).
SEED = dict(zip(MODEL_NAMES, (11, 15, 12, 14)))
# Very different lengths; 57 and 302 leave a real frame under the first padded position of conv1's output
# (50 Hz and 25 Hz), so a missing mask between the convs changes the last real position.
LENGTHS = (57, 302, 801)
# Torch and onnxruntime compute the same fp32 function with different rounding (decision values differ by
# ~1e-6), so a token whose decision margin is below this may flip; at most one such flip is accepted.
NEAR_TIE = 1e-5
REF_CLIPS = ("en_yes", "stereo_mix", "BAC009S0764W0121")


def session(path: Path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_ort(sess, mels: torch.Tensor, lengths) -> np.ndarray:
    return sess.run(["indices"], {"feats": mels.numpy().astype(np.float32),
                                  "feats_length": np.asarray(lengths, dtype=np.int32)})[0]


def fake_mels(lengths, n_mels: int = 128, seed: int = 0) -> torch.Tensor:
    """A zero-padded batch of log-mel-like inputs (spectral tilt, slow modulation, noise; about -1.5..1.5)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(lengths), n_mels, max(lengths))
    for i, n in enumerate(lengths):
        tilt = torch.linspace(0.8, -1.0, n_mels)[:, None]
        mod = 0.4 * torch.sin(torch.arange(n) / (5.0 + 3 * i) + torch.rand(n_mels, 1, generator=g) * 6.28)
        x = tilt + mod + 0.3 * torch.randn(n_mels, n, generator=g)
        out[i, :, :n] = torch.maximum(x, x.max() - 2.0)
    return out


@torch.no_grad()
def decision_margins(model: S3Tokenizer, mels: torch.Tensor, lengths) -> List[np.ndarray]:
    """Per item, each token's decision margin (VQ: gap between the two nearest codes; FSQ: the smallest
    distance of ``|tanh(h) * 0.999|`` to the rounding boundary 0.5)."""
    h, out_lens = model.encoder(mels, torch.as_tensor(lengths))
    if model.config.quantizer == "fsq":
        q = model.quantizer.project_down
        z = torch.tanh(torch.nn.functional.linear(h, q.weight, q.bias)) * 0.999
        margin = (z.abs() - 0.5).abs().min(-1).values
    else:
        x = h / h.norm(dim=-1, keepdim=True)
        c = model.quantizer.codebook
        d = x.pow(2).sum(-1, keepdim=True) - 2 * x @ c + c.pow(2).sum(0)
        top = d.topk(2, dim=-1, largest=False).values
        margin = top[..., 1] - top[..., 0]
    return [margin[i, :int(n)].numpy() for i, n in enumerate(out_lens)]


def assert_same_tokens(got: np.ndarray, want: np.ndarray, margins: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: {got.shape} tokens vs {want.shape}"
    bad = np.flatnonzero(got != want)
    far = [int(p) for p in bad if margins[p] >= NEAR_TIE]
    assert not far and len(bad) <= 1, (f"{what}: {len(bad)} tokens differ, at {bad[:10].tolist()} "
                                       f"(margins {margins[bad[:10]].tolist()})")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Dict[str, Tuple[S3Tokenizer, Path]]:
    """A small random model of each version and its exported file."""
    d = tmp_path_factory.mktemp("onnx_export")
    out = {}
    for name in MODEL_NAMES:
        model = random_model(name, depth=DEPTH[name], seed=SEED[name], **SMALL)
        path = d / f"{name}.onnx"
        export_onnx(model, path, random_init=True)
        out[name] = (model, path)
    return out


def layout(proto) -> List[Tuple[str, str, Tuple[str, ...], Tuple[str, ...]]]:
    return [(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in proto.graph.node]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_round_trip(name, exported, ref):
    model, path = exported[name]
    im = read_onnx(path)
    assert im.config == model.config
    assert im.config.version == name
    want = model.state_dict()
    assert sorted(im.state_dict) == sorted(want)
    for k, v in want.items():
        assert im.state_dict[k].dtype == torch.float32 and torch.equal(im.state_dict[k], v), k
    assert im.random_init

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props == {"s3tok_version": s3tok.__version__, "s3tok_random_init": "1"}
    onnx.checker.check_model(proto)
    reference = onnx.load(str(ref / "models" / f"{name}.onnx"))
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSETS[name])] \
        == [(o.domain, o.version) for o in reference.opset_import]
    # Same sizes as the reference file: the very same nodes, wiring and initializer names.
    assert layout(proto) == layout(reference)
    assert [i.name for i in proto.graph.initializer] == [i.name for i in reference.graph.initializer]


def test_official_names(exported):
    """The names the README lists, spelled out."""
    inits = {n: {i.name for i in onnx.load(str(p)).graph.initializer} for n, (_, p) in exported.items()}
    nodes = {n: {x.name: x for x in onnx.load(str(p)).graph.node} for n, (_, p) in exported.items()}
    v1, v1_25, v2, v3 = MODEL_NAMES
    assert {f"onnx::Conv_{k}" for k in range(1519, 1523)} <= inits[v1]
    assert {"encoders.conv1.weight", "encoders.conv1.bias", "encoders.conv2.weight", "encoders.conv2.bias"} \
        <= inits[v1_25]
    assert {f"onnx::Conv_{k}" for k in range(2216, 2220)} | {"onnx::MatMul_2536", "quantizer.project_in.bias"} \
        <= inits[v2]
    for n in (v1, v1_25):
        assert "encoders.positional_embedding" in inits[n]
        pow1 = nodes[n]["/quantizer/rq/model/layers.0/_codebook/Pow_1"]
        assert pow1.input[0] in inits[n]
        assert nodes[n]["/blocks.0/attn_ln/Mul"].input[1] == "encoders.blocks.0.attn_ln.weight"
        assert nodes[n]["/blocks.1/mlp_ln/Add_1"].input[1] == "encoders.blocks.1.mlp_ln.bias"
    assert nodes[v2]["/blocks.1/mlp_ln/LayerNormalization"].op_type == "LayerNormalization"
    assert nodes[v2]["/blocks.0/attn/fsmn_block/Conv"].input[1] in inits[v2]
    assert nodes[v2]["/blocks.0/attn/query/MatMul"].input[1].startswith("onnx::MatMul_")
    assert "/blocks.0/attn/key/Add" not in nodes[v2]
    assert nodes[v3]["/conv1/Conv"].input[1] == "conv1.weight" and nodes[v3]["/conv2/Conv"].input[1] == "conv2.weight"
    assert nodes[v3]["/quantizer/_codebook/project_down/MatMul"].input[1] in inits[v3]
    for i in range(DEPTH[v3]):
        assert f"blocks.{i}.attn.fsmn_block.weight" in inits[v3]
        for sub in ("mlp.0", "mlp.2"):  # all MLP biases are Constant nodes
            assert nodes[v3][f"/blocks.{i}/mlp/{sub}/Add"].input[0] == f"/blocks.{i}/mlp/{sub}/Constant_output_0"
        for ln in ("attn_ln", "mlp_ln"):  # LayerNorm biases: Constant in even blocks, initializers in odd ones
            bias = nodes[v3][f"/blocks.{i}/{ln}/Add_1"].input[1]
            assert (bias in inits[v3]) == (i % 2 == 1), (i, ln, bias)


def hidden_session(path: Path, depth: int):
    """The exported graph with the last block's output as a second output (continuous values to compare)."""
    proto = onnx.load(str(path))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(f"/blocks.{depth - 1}/Add_1_output_0",
                                                                 onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_ort_matches_torch(name, exported):
    """Padded batch of very different lengths: ORT batched == ORT batch 1 == torch ``quantize``, and the
    encoder output of the batched graph equals torch's on every real position."""
    model, path = exported[name]
    mels = fake_mels(LENGTHS, seed=SEED[name])
    codes, code_lens = model.quantize(mels, torch.tensor(LENGTHS))
    assert code_lens.tolist() == [model.config.num_tokens(n) for n in LENGTHS]
    margins = decision_margins(model, mels, LENGTHS)

    with torch.no_grad():
        want_h, _ = model.encoder(mels, torch.tensor(LENGTHS))
    _, got_h = hidden_session(path, model.config.depth).run(
        None, {"feats": mels.numpy(), "feats_length": np.asarray(LENGTHS, np.int32)})
    for i, k in enumerate(code_lens.tolist()):
        np.testing.assert_allclose(got_h[i, :k], want_h[i, :k].numpy(), rtol=1e-5, atol=1e-4,
                                   err_msg=f"{name} item {i} (T={LENGTHS[i]}): encoder output")

    sess = session(path)
    batched = run_ort(sess, mels, LENGTHS)
    assert batched.dtype == np.int64 and batched.shape == (len(LENGTHS), int(code_lens.max()))
    distinct = set()
    for i, n in enumerate(LENGTHS):
        k = int(code_lens[i])
        want = codes[i, :k].numpy()
        distinct |= set(want.tolist())
        single = run_ort(sess, mels[i:i + 1, :, :n], [n])[0]
        assert_same_tokens(single, want, margins[i], f"{name} item {i} (T={n}) ORT batch 1 vs torch")
        assert np.array_equal(batched[i, :k], single), f"{name} item {i}: ORT batched vs batch 1"
    assert len(distinct) > 20, f"{name}: degenerate random model ({len(distinct)} distinct tokens)"

    # Padding is masked: whatever fills the padded frames, the real tokens stay the same.
    noisy = mels.clone()
    gen = torch.Generator().manual_seed(1)
    for i, n in enumerate(LENGTHS):
        noisy[i, :, n:] = 3.0 * torch.randn(mels.shape[1], mels.shape[2] - n, generator=gen)
    assert np.array_equal(run_ort(sess, noisy, LENGTHS), batched)
    assert max(distinct) < model.config.codebook_size


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reexport_reproduces_reference(name, ref, ref_models, ref_mels, tmp_path):
    """Exporting a loaded reference model gives back its graph, and ORT gives the same tokens."""
    path = tmp_path / "reexported.onnx"
    export_onnx(ref_models[name], path)
    ours, reference = onnx.load(str(path)), onnx.load(str(ref / "models" / f"{name}.onnx"))
    for a, b in zip(ours.graph.node, reference.graph.node):
        assert a.SerializeToString() == b.SerializeToString(), f"first differing node: {a.name} vs {b.name}"
    assert ours.graph.SerializeToString() == reference.graph.SerializeToString()
    assert {p.key: p.value for p in ours.metadata_props}["s3tok_random_init"] == "0"
    s_ours, s_ref = session(path), session(ref / "models" / f"{name}.onnx")
    for utt in REF_CLIPS:
        mel = ref_mels[utt][None]
        got, want = run_ort(s_ours, mel, [mel.shape[-1]]), run_ort(s_ref, mel, [mel.shape[-1]])
        assert np.array_equal(got, want), utt


def test_load_model_warns(exported, caplog, tmp_path):
    _, path = exported["speech_tokenizer_v2_25hz"]
    with caplog.at_level(logging.WARNING):
        model = s3tok.load_model(path)
    assert model.config.version == "speech_tokenizer_v2_25hz"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("random-weight model made by s3tok" in m and "meaningless" in m for m in warnings), warnings

    # A re-export of real (here: non-random-init) weights carries the flag "0" and loads without the warning.
    plain = tmp_path / "plain.onnx"
    export_onnx(model, plain)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        im = read_onnx(plain)
    assert not im.random_init
    assert not [r for r in caplog.records if "random-weight" in r.getMessage()]


def test_random_model_deterministic():
    a = random_model("speech_tokenizer_v1_25hz", width=64, heads=1, depth=1, seed=7)
    b = random_model("speech_tokenizer_v1_25hz", width=64, heads=1, depth=1, seed=7)
    c = random_model("speech_tokenizer_v1_25hz", width=64, heads=1, depth=1, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.conv1.weight"], sc["encoder.conv1.weight"])
    assert a.config.depth == 1 and a.config.width == 64
    # Default heads follow the official head size of 64.
    assert random_model("speech_tokenizer_v2_25hz", width=128, depth=1).config.heads == 2


def test_cli(tmp_path, caplog):
    out = tmp_path / "sub" / "v2.onnx"
    argv = ["--random-init", "--version", "speech_tokenizer_v2_25hz", "--width", "128", "--heads", "2",
            "--depth", "1", "--seed", "3", str(out)]
    assert main(argv) == 0
    im = read_onnx(out)
    assert (im.config.version, im.config.width, im.config.heads, im.config.depth) == \
        ("speech_tokenizer_v2_25hz", 128, 2, 1)
    assert im.random_init
    ref_sd = random_model("speech_tokenizer_v2_25hz", width=128, heads=2, depth=1, seed=3).state_dict()
    assert all(torch.equal(im.state_dict[k], v) for k, v in ref_sd.items())
    # --model re-exports an existing file.
    again = tmp_path / "again.onnx"
    assert main([str(out), str(again)]) == 0
    assert read_onnx(again).config == im.config
    # Usage errors.
    for bad in (["--random-init", str(out)], [str(out), "--width", "64", str(out)], [str(out)],
                ["--random-init", "--version", "speech_tokenizer_v9", str(out)]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2
    assert get_parser().parse_args(["--random-init", "--version", "speech_tokenizer_v1", "x.onnx"]).seed == 0
    # A failing export is reported and returns 1 (the width is not a multiple of the heads).
    with caplog.at_level(logging.ERROR):
        assert main(["--random-init", "--version", "speech_tokenizer_v1", "--width", "100", "--heads", "3",
                     "--depth", "1", str(tmp_path / "bad.onnx")]) == 1
    assert "not a multiple of heads" in caplog.text


def test_refuses_unofficial_layout():
    cfg = S3Config("speech_tokenizer_v2_25hz", 128, 2, 1, conv1_stride=2, positional="rotary", fsmn=True,
                   quantizer="fsq", codebook_size=6561, layernorm="decomposed")
    with pytest.raises(OnnxExportError, match="layernorm='decomposed'"):
        build_onnx(S3Tokenizer(cfg))
    with pytest.raises(TypeError, match="expected an S3Tokenizer"):
        build_onnx(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_cli_dynamic_batch_export_of_reference_models(name, ref, ref_mels, tmp_path):
    """``s3tok export-onnx M out.onnx --dynamic-batch``: onnxruntime on a batch of 4 clips of different
    lengths gives PyTorch's tokens, and the file loads back with the same tokens; without the flag the
    batch axis is 1."""
    import onnx
    import onnxruntime as ort

    src = ref / "models" / f"{name}.onnx"
    dyn, static = tmp_path / "dyn.onnx", tmp_path / "static.onnx"
    assert main([str(src), str(dyn), "--dynamic-batch"]) == 0
    assert main([str(src), str(static)]) == 0
    assert onnx.load(str(static)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert onnx.load(str(dyn)).graph.input[0].type.tensor_type.shape.dim[0].dim_param
    utts = ["en_yes", "cmn_boats", "en_paragraph", "stereo_mix"]
    mels, lens = s3tok.padding([ref_mels[u] for u in utts])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(dyn), so, providers=["CPUExecutionProvider"])
    got = sess.run(["indices"], {"feats": mels.numpy(), "feats_length": lens.numpy().astype(np.int32)})[0]
    torch_codes, torch_lens = s3tok.load_model(src).quantize(mels, lens)
    back_codes, _ = s3tok.load_model(dyn).quantize(mels, lens)
    for i, n in enumerate(torch_lens.tolist()):
        assert got.reshape(len(utts), -1)[i, :n].tolist() == torch_codes[i, :n].tolist(), utts[i]
    assert torch.equal(back_codes, torch_codes)
