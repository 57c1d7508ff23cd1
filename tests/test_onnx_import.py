"""ONNX import: identification by content, and one clear error per bad file."""
from __future__ import annotations

import shutil

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

import s3tok
from conftest import MODEL_NAMES
from s3tok.modelfiles.onnx_import import OnnxImportError, read_onnx

EXPECTED = {
    "speech_tokenizer_v1": dict(conv1_stride=1, quantizer="vq", positional="table", fsmn=False, depth=2),
    "speech_tokenizer_v1_25hz": dict(conv1_stride=2, quantizer="vq", positional="table", fsmn=False, depth=2),
    "speech_tokenizer_v2_25hz": dict(conv1_stride=2, quantizer="fsq", positional="rotary", fsmn=True, depth=2,
                                     layernorm="fused"),
    "speech_tokenizer_v3_25hz": dict(conv1_stride=2, quantizer="fsq", positional="rotary", fsmn=True, depth=3,
                                     layernorm="decomposed"),
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_identifies_reference_models(ref, name):
    im = read_onnx(ref / "models" / f"{name}.onnx")
    cfg = im.config
    assert cfg.version == name
    assert (cfg.width, cfg.heads, cfg.n_mels, cfg.ln_eps) == (128, 2, 128, 1e-5)
    for k, v in EXPECTED[name].items():
        assert getattr(cfg, k) == v, k


def test_identified_by_content_not_file_name(ref, tmp_path):
    """The official v1 and v1_25hz files share a name; the 25 Hz one must load as 25 Hz."""
    p = tmp_path / "speech_tokenizer_v1.onnx"
    shutil.copy(ref / "models" / "speech_tokenizer_v1_25hz.onnx", p)
    model = s3tok.load_model(p)
    assert model.config.version == "speech_tokenizer_v1_25hz" and model.config.token_rate == 25


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx: no such model file"):
        s3tok.load_model(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_text("this is not a protobuf at all\n" * 10)
    with pytest.raises(OnnxImportError, match=r"model.onnx: not a readable ONNX model") as e:
        s3tok.load_model(p)
    assert "\n" not in str(e.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(OnnxImportError, match="empty.onnx: file is empty"):
        read_onnx(p)


def test_truncated(ref, tmp_path):
    data = (ref / "models" / "speech_tokenizer_v2_25hz.onnx").read_bytes()
    p = tmp_path / "truncated.onnx"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(OnnxImportError, match="truncated.onnx: not a readable ONNX model") as e:
        read_onnx(p)
    assert "\n" not in str(e.value)


def test_foreign_onnx(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc/MatMul")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    p = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(p))
    with pytest.raises(OnnxImportError, match="foreign.onnx: not an S3 tokenizer graph"):
        read_onnx(p)


def test_unmappable_lists_missing_and_leftover(ref, tmp_path):
    """A renamed consumer leaves its weight unplaced and its parameter unset: both are listed."""
    m = onnx.load(str(ref / "models" / "speech_tokenizer_v3_25hz.onnx"))
    for n in m.graph.node:
        if n.name == "/blocks.1/attn/query/MatMul":
            n.name = "/blocks.1/attn/q_proj/MatMul"
            weight = n.input[1]
    p = tmp_path / "renamed.onnx"
    onnx.save(m, str(p))
    with pytest.raises(OnnxImportError) as e:
        read_onnx(p)
    msg = str(e.value)
    assert "renamed.onnx: cannot map" in msg
    assert f"tensors left over (not placed): {weight}" in msg
    assert "parameters missing: encoder.blocks.1.attn.query.weight" in msg


def test_extra_weight_is_refused(ref, tmp_path):
    m = onnx.load(str(ref / "models" / "speech_tokenizer_v1.onnx"))
    m.graph.initializer.append(numpy_helper.from_array(np.zeros((128, 128), np.float32), "mystery.weight"))
    p = tmp_path / "extra.onnx"
    onnx.save(m, str(p))
    with pytest.raises(OnnxImportError, match=r"tensors left over \(not placed\): mystery.weight"):
        read_onnx(p)
