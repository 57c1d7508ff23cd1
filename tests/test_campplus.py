"""CAM++ speaker embedding: exact masks, ONNX export variants read back by structure, engine parity with
onnxruntime, refusals, the auto fallback, the registry download, the demo model and the CLI export."""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import torch

from s3tok.model.campplus import CampPlus, CampPlusConfig, random_campplus
from s3tok.modelfiles import hub
from s3tok.modelfiles.campplus_engines import OnnxEmbedder, TorchEmbedder, frame_batches, load_embedder
from s3tok.modelfiles.campplus_onnx import CampPlusImportError, export_campplus, load_campplus, read_campplus
from httpserver import LocalServer

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SMALL = CampPlusConfig(blocks=((2, 3, 1), (3, 3, 2)))
# 463 frames: odd, 232 after the stride (a partial last segment of 32); 37: a single short segment.
LENGTHS = (463, 37, 250, 521, 118)


def _feats(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 80, generator=g) * 2.0 for n in lengths]


def _compare(a: np.ndarray, b: np.ndarray):
    """``(worst cosine, max abs difference)`` over rows."""
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(cos.min()), float(np.abs(a - b).max())


@pytest.fixture(scope="module")
def small_model():
    return random_campplus(1, SMALL)


@pytest.fixture(scope="module")
def small_onnx(small_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("campplus") / "small.onnx"
    export_campplus(small_model, path)
    return path


def _padded(feats):
    lengths = torch.tensor([f.shape[0] for f in feats])
    x = torch.full((len(feats), int(lengths.max()), 80), 7.0)  # non-zero padding must not matter
    for i, f in enumerate(feats):
        x[i, :f.shape[0]] = f
    return x, lengths


def test_masked_batch_equals_batch_one(small_model):
    feats = _feats(LENGTHS)
    x, lengths = _padded(feats)
    with torch.no_grad():
        alone = torch.cat([small_model(f[None]) for f in feats])
        batched = small_model(x, lengths)
        folded = small_model.inference_form()(x, lengths)
        folded_alone = torch.cat([small_model.inference_form()(f[None]) for f in feats])
    assert alone.abs().max() > 0.1 and torch.isfinite(alone).all()
    assert (batched - alone).abs().max() <= 1e-5
    # the folded form rounds differently (BatchNorm in the weights), still far inside the engines' tolerance
    assert (folded - alone).abs().max() <= 1e-4
    assert (folded - folded_alone).abs().max() <= 1e-4


def test_official_size_and_parameter_names():
    model = CampPlus()
    n = sum(p.numel() for p in model.parameters())
    assert 6.8e6 < n < 7.3e6
    keys = model.state_dict().keys()
    assert "xvector.block2.tdnnd24.cam_layer.linear_local.weight" in keys
    assert "head.layer2.0.shortcut.1.running_var" in keys and "xvector.dense.nonlinear.batchnorm.weight" not in keys


def test_frame_batches_sorted_and_bounded():
    lengths = [5, 300, 120, 900, 300, 60]
    batches = frame_batches(lengths, 700)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [3]  # longer than the budget: alone
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 700


VARIANTS = [dict(opset=o, constant_folding=cf, dynamic_axes=dy) for o in (11, 13, 17) for cf in (True, False)
            for dy in (True, False)]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"opset{v['opset']}-fold{int(v['constant_folding'])}-"
                                                             f"{'dyn' if v['dynamic_axes'] else 'static'}")
def test_export_variants_read_back(small_model, tmp_path, variant):
    path = tmp_path / "cp.onnx"
    export_campplus(small_model, path, frames=463, **variant)
    config, state, info = read_campplus(path)
    assert config == SMALL and info["random_init"] and info["opset"] == variant["opset"]
    assert info["dynamic_time"] == variant["dynamic_axes"]
    assert (info["batchnorm_folded"] > 0) == variant["constant_folding"]
    model = CampPlus(config)
    model.load_state_dict(state)
    model.eval()
    lengths = LENGTHS if variant["dynamic_axes"] else (463,)
    feats = _feats(lengths, seed=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = np.concatenate([session.run(None, {"input": f[None].numpy()})[0] for f in feats])
    with torch.no_grad():
        one = torch.cat([model(f[None]) for f in feats]).numpy()
        batch = model(*_padded(feats)).numpy()
    for ours in (one, batch):
        cos, diff = _compare(ref, ours)
        assert cos >= 0.99999 and diff <= 1e-4, (cos, diff)


def test_dynamic_batch_export(small_model, tmp_path):
    path = tmp_path / "cp.onnx"
    export_campplus(small_model, path, batch_one=False)
    config, _, _ = read_campplus(path)
    assert config == SMALL


def test_official_size_engines_agree(tmp_path):
    path = tmp_path / "campplus.onnx"
    export_campplus(random_campplus(0), path, opset=13)
    config, _, info = read_campplus(path)
    assert config == CampPlusConfig() and info["batchnorm_folded"] > 0
    feats = _feats((463, 801, 37, 250, 118, 260), seed=3)
    ref = OnnxEmbedder(path, sessions=2).embed(feats)
    ours = load_embedder(path, engine="torch", threads=2)
    assert ours.engine == "torch"
    for embedder in (ours, TorchEmbedder(load_campplus(path), max_frames_per_batch=100_000)):  # mixed batches
        cos, diff = _compare(ref, embedder.embed(feats))
        assert cos >= 0.99999 and diff <= 1e-4, (cos, diff)


def test_engines_agree_and_keep_order(small_onnx):
    feats = _feats(LENGTHS, seed=4)
    ref = OnnxEmbedder(small_onnx, sessions=2).embed(feats)
    assert ref.shape == (len(feats), 192) and ref.dtype == np.float32
    for budget in (1, 600, 100_000):  # alone, mixed, all in one batch
        embedder = TorchEmbedder(load_campplus(small_onnx), max_frames_per_batch=budget, threads=2,
                                 path=small_onnx)
        cos, diff = _compare(ref, embedder.embed(feats))
        assert cos >= 0.99999 and diff <= 1e-4, (budget, cos, diff)
    assert embedder.provenance["sha256"] == hashlib.sha256(small_onnx.read_bytes()).hexdigest()
    assert embedder.provenance["random_init"] and embedder.provenance["engine"] == "torch"
    assert TorchEmbedder(load_campplus(small_onnx)).embed([]).shape == (0, 192)


def _edited(src, dst, edit):
    model = onnx.load(str(src))
    edit(model.graph)
    onnx.save(model, str(dst))
    return dst


def test_refuses_unused_initializer(small_onnx, tmp_path):
    def add(graph):
        graph.initializer.append(onnx.numpy_helper.from_array(np.ones((64, 32), np.float32), "stray_weight"))

    with pytest.raises(CampPlusImportError, match="left unused: stray_weight"):
        read_campplus(_edited(small_onnx, tmp_path / "bad.onnx", add))


def _retype(op, new, nth=0):
    def edit(graph):
        [n for n in graph.node if n.op_type == op][nth].op_type = new
    return edit


def test_refuses_unexpected_op_and_auto_falls_back(small_onnx, tmp_path, caplog):
    # the 4th Sigmoid is block 2's second layer (block 1 has two)
    bad = _edited(small_onnx, tmp_path / "tanh.onnx", _retype("Sigmoid", "Tanh", 3))
    with pytest.raises(CampPlusImportError, match="block 2 layer 2: expected Sigmoid, found Tanh"):
        read_campplus(bad)
    with pytest.raises(CampPlusImportError):
        load_embedder(bad, engine="torch")
    with caplog.at_level(logging.WARNING):
        embedder = load_embedder(bad, engine="auto", threads=1)
    assert embedder.engine == "onnxruntime"
    assert any("expected Sigmoid, found Tanh" in r.getMessage() and "onnxruntime" in r.getMessage()
               for r in caplog.records)
    assert embedder.embed(_feats((120,))).shape == (1, 192)


def test_refuses_missing_layer(small_onnx, tmp_path):
    def drop_gate(graph):  # the first layer's gate removed: its local conv output goes straight to the concat
        sig = next(n for n in graph.node if n.op_type == "Sigmoid")
        mul = next(n for n in graph.node if n.op_type == "Mul" and sig.output[0] in n.input)
        local = next(i for i in mul.input if i != sig.output[0])
        for n in graph.node:
            for k, i in enumerate(n.input):
                if i == mul.output[0]:
                    n.input[k] = local
        graph.node.remove(mul)

    with pytest.raises(CampPlusImportError, match="block 1 layer 1"):
        read_campplus(_edited(small_onnx, tmp_path / "bad.onnx", drop_gate))


def test_refuses_non_onnx(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"not a model at all" * 10)
    with pytest.raises(CampPlusImportError):
        read_campplus(p)
    with pytest.raises(CampPlusImportError, match="no such"):
        read_campplus(tmp_path / "missing.onnx")


def test_speaker_registry_download(tmp_path, monkeypatch, small_onnx):
    data = small_onnx.read_bytes()
    assert hub.SPEAKER_MODELS["campplus"].sha256.startswith("a6ac6a63")
    assert "campplus" not in hub.REGISTRY
    server = LocalServer({"/campplus.onnx": data})
    try:
        entry = hub.OfficialModel("campplus", "campplus.onnx", hashlib.sha256(data).hexdigest(),
                                  (server.url + "/campplus.onnx",))
        monkeypatch.setitem(hub.SPEAKER_MODELS, "campplus", entry)
        path = hub.download_speaker_model("campplus", home=tmp_path / "home", progress=False)
        assert path == tmp_path / "home" / "onnx" / "campplus" / "campplus.onnx" and path.read_bytes() == data
    finally:
        server.close()
    assert hub.download_speaker_model("campplus", home=tmp_path / "home", progress=False) == path  # cached


def test_resolve_speaker(tmp_path, small_onnx, caplog):
    from s3tok.modelfiles.resolve import resolve_speaker

    assert resolve_speaker(str(small_onnx), tmp_path) == small_onnx
    with pytest.raises(ValueError, match="not 'demo' or one of campplus"):
        resolve_speaker("nonexistent.onnx", tmp_path)


@pytest.mark.slow
def test_demo_and_cli_export(tmp_path, caplog):
    from s3tok.bin.export_onnx import main
    from s3tok.modelfiles.resolve import demo_campplus

    with caplog.at_level(logging.WARNING):
        demo = demo_campplus(tmp_path)
    assert any("meaningless" in r.getMessage() for r in caplog.records)
    assert demo_campplus(tmp_path) == demo
    out = tmp_path / "cli.onnx"
    assert main(["--random-init", "--version", "campplus", str(out)]) == 0
    config, _, info = read_campplus(out)
    assert config == CampPlusConfig() and info["random_init"] and info["opset"] == 13 and info["dynamic_time"]
    assert out.read_bytes() == demo.read_bytes() or read_campplus(demo)[0] == config
