"""Write an :class:`~s3tok.S3Tokenizer` as an ONNX graph in the official layout of its version.

The graph is built node by node with ``onnx.helper`` (no ``torch.onnx``) and spells the model the way the
official files do, so that :func:`s3tok.modelfiles.onnx_import.read_onnx` (and any converter keyed on the official
names) reads it back: block weights named after the nodes that consume them and stored ``[in, out]``,
decomposed LayerNorm (v1, v1_25hz, v3) or fused ``LayerNormalization`` (v2), the per-version names of the
conv, positional-table, codebook and FSQ initializers, v3's biases as ``Constant`` nodes, and the opset of
each official file (13, 13, 17, 14).

The graph computes the real model for a padded batch: inputs ``feats`` float32 ``[B, n_mels, T]`` and
``feats_length`` int32 ``[B]``, output ``indices`` int64 ``[B, T']`` (positions past an item's length
are padding). Utterances over 30 s must be cut into windows outside the graph, as for the official files.

:func:`random_model` makes a model with random weights of an official configuration, e.g. to benchmark
official-size graphs without the official files::

    s3tok export-onnx --random-init --version speech_tokenizer_v2_25hz out.onnx
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from s3tok.model.config import MODEL_NAMES, S3Config, official_config
from s3tok.model.versions import VERSIONS
from s3tok.model.encoder import rotary_table
from s3tok.model.tokenizer import S3Tokenizer
from s3tok.version import __version__
from s3tok.util.fsutil import publish

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# The ONNX opset of each official file.
OPSETS: Dict[str, int] = {v.name: v.opset for v in VERSIONS.values()}
IR_VERSION = 8
ROTARY_TABLE_ROWS = 2048  # positions of the stored rotary tables (30 s at 25 Hz is 750)
MAX_BYTES = 2**31 - 2**26  # a single-file ONNX model is one protobuf (< 2 GiB), leave room for the rest
META_VERSION = "s3tok_version"
META_RANDOM_INIT = "s3tok_random_init"

# Fields of the configuration that fix the graph layout of a version (they must equal the official ones).
_LAYOUT_FIELDS = ("conv1_stride", "conv2_stride", "positional", "fsmn", "quantizer", "layernorm")


class OnnxExportError(ValueError):
    """A model that cannot be written in the official layout of its version."""


# ---------------------------------------------------------------------------------------------- graph


class _Graph:
    """Nodes named like a ``torch.onnx`` export (``/scope/Op``, ``/scope/Op_1``), plus the initializers."""

    def __init__(self) -> None:
        from onnx import TensorProto

        self.tp = TensorProto
        self.nodes: List = []
        self.initializers: List = []
        self._counts: Dict[str, int] = defaultdict(int)
        self._tensor_names: set = set()

    def _name(self, scope: str, op_type: str) -> str:
        base = f"{scope}/{op_type}"
        k = self._counts[base]
        self._counts[base] += 1
        return base if k == 0 else f"{base}_{k}"

    def op(self, scope: str, op_type: str, inputs: Sequence[str], output: Optional[str] = None, **attrs) -> str:
        """Append one node under ``scope`` and return the name of its (single) output."""
        from onnx import helper

        name = self._name(scope, op_type)
        out = output or f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def const(self, scope: str, value: np.ndarray) -> str:
        """A ``Constant`` node holding ``value`` (dtype and shape kept, 0-d included)."""
        from onnx import helper, numpy_helper

        name = self._name(scope, "Constant")
        out = f"{name}_output_0"
        tensor = numpy_helper.from_array(np.array(value, order="C", copy=True), out)
        self.nodes.append(helper.make_node("Constant", [], [out], name=name, value=tensor))
        return out

    def f32(self, scope: str, x: float) -> str:
        return self.const(scope, np.array(x, dtype=np.float32))

    def i64(self, scope: str, x: Union[int, Sequence[int]]) -> str:
        return self.const(scope, np.array(x, dtype=np.int64))

    def init(self, name: str, value: np.ndarray) -> str:
        """An initializer ``name`` (float32)."""
        from onnx import numpy_helper

        if name in self._tensor_names:
            raise OnnxExportError(f"initializer name {name!r} used twice")
        self._tensor_names.add(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32, order="C"), name))
        return name


class _Names:
    """Initializer names of one version: named ones, and ``onnx::<Op>_<n>`` numbered in consumption order."""

    _START = {"speech_tokenizer_v1": 1519, "speech_tokenizer_v1_25hz": 1519,
              "speech_tokenizer_v2_25hz": 2216, "speech_tokenizer_v3_25hz": 3100}
    _PREFIX = {"speech_tokenizer_v1": "encoders.", "speech_tokenizer_v1_25hz": "encoders.",
               "speech_tokenizer_v2_25hz": "", "speech_tokenizer_v3_25hz": ""}
    _RESERVED = {"speech_tokenizer_v2_25hz": {2536}}  # the v2 FSQ projection keeps its official number

    def __init__(self, version: str):
        self.version = version
        self.prefix = self._PREFIX[version]
        self._next = self._START[version]
        self._reserved = self._RESERVED.get(version, set())

    def numbered(self, op_type: str) -> str:
        while self._next in self._reserved:
            self._next += 1
        name = f"onnx::{op_type}_{self._next}"
        self._next += 1
        return name

    def param(self, torch_name: str) -> str:
        """A named initializer: the official module path (``encoders.`` prefix in v1)."""
        return self.prefix + torch_name

    def conv(self, which: str, part: str) -> str:
        """Front-end conv initializers: numbered (v1, v2) or named (v1_25hz, v3)."""
        if self.version in ("speech_tokenizer_v1", "speech_tokenizer_v2_25hz"):
            return self.numbered("Conv")
        return self.param(f"{which}.{part}")


class _Exporter:
    """Builds the graph of one model from its float32 weights."""

    def __init__(self, model: S3Tokenizer):
        self.cfg: S3Config = model.config
        self.w: Dict[str, np.ndarray] = {
            k: v.detach().to("cpu", torch.float32).contiguous().numpy() for k, v in model.state_dict().items()}
        self.g = _Graph()
        self.names = _Names(self.cfg.version)
        self.v3 = self.cfg.version == "speech_tokenizer_v3_25hz"

    # ------------------------------------------------------------------ pieces
    def weight(self, key: str) -> np.ndarray:
        try:
            return self.w[key]
        except KeyError:
            raise OnnxExportError(f"model has no parameter {key!r}") from None

    def gelu(self, scope: str, x: str) -> str:
        """Exact GELU as ``x * (erf(x / sqrt(2)) + 1) * 0.5``."""
        g = self.g
        d = g.op(scope, "Div", [x, g.f32(scope, np.sqrt(np.float32(2.0)))])
        e = g.op(scope, "Erf", [d])
        a = g.op(scope, "Add", [e, g.f32(scope, 1.0)])
        m = g.op(scope, "Mul", [x, a])
        return g.op(scope, "Mul", [m, g.f32(scope, 0.5)])

    def length_mask(self, x: str, lengths: str) -> Tuple[str, str]:
        """``(T, mask)``: the time size of ``x [B, C, T]`` (int64 scalar) and float ``[B, T]`` 1/0."""
        g = self.g
        t = g.op("", "Gather", [g.op("", "Shape", [x]), g.i64("", 2)], axis=0)
        r = g.op("", "Range", [g.i64("", 0), t, g.i64("", 1)])
        r = g.op("", "Unsqueeze", [r, g.i64("", [0])])
        n = g.op("", "Unsqueeze", [lengths, g.i64("", [1])])
        less = g.op("", "Less", [r, n])
        return t, g.op("", "Cast", [less], to=self.g.tp.FLOAT)

    def out_lengths(self, lengths: str, stride: int) -> str:
        """``(L - 1) // stride + 1`` in int64."""
        g = self.g
        s = g.op("", "Sub", [lengths, g.i64("", 1)])
        d = g.op("", "Div", [s, g.i64("", stride)])
        return g.op("", "Add", [d, g.i64("", 1)])

    def conv(self, which: str, x: str, stride: int) -> str:
        g = self.g
        w_name = g.init(self.names.conv(which, "weight"), self.weight(f"encoder.{which}.weight"))
        b_name = g.init(self.names.conv(which, "bias"), self.weight(f"encoder.{which}.bias"))
        return g.op(f"/{which}", "Conv", [x, w_name, b_name], dilations=[1], group=1, kernel_shape=[3],
                    pads=[1, 1], strides=[stride])

    def bias_input(self, scope: str, key: str, as_constant: bool) -> str:
        """A bias as an initializer named after its module, or (v3) as a ``Constant`` node in ``scope``."""
        value = self.weight(key)
        if as_constant:
            return self.g.const(scope, value.astype(np.float32))
        return self.g.init(self.names.param(key[len("encoder."):]), value)

    def linear(self, scope: str, x: str, key: str, bias: bool = True, bias_constant: bool = False) -> str:
        """``MatMul`` with the weight stored ``[in, out]`` (numbered), then ``Add(bias, .)``."""
        g = self.g
        w = g.init(self.names.numbered("MatMul"), self.weight(f"{key}.weight").T)
        y = g.op(scope, "MatMul", [x, w])
        if not bias:
            return y
        b = self.bias_input(scope, f"{key}.bias", bias_constant)
        return g.op(scope, "Add", [b, y])

    def layernorm(self, i: int, which: str, x: str) -> str:
        g = self.g
        scope = f"/blocks.{i}/{which}"
        key = f"encoder.blocks.{i}.{which}"
        eps = float(np.float32(self.cfg.ln_eps))
        w = g.init(self.names.param(f"blocks.{i}.{which}.weight"), self.weight(f"{key}.weight"))
        if self.cfg.layernorm == "fused":
            b = g.init(self.names.param(f"blocks.{i}.{which}.bias"), self.weight(f"{key}.bias"))
            return g.op(scope, "LayerNormalization", [x, w, b], axis=-1, epsilon=eps)
        mean = g.op(scope, "ReduceMean", [x], axes=[-1], keepdims=1)
        c = g.op(scope, "Sub", [x, mean])
        sq = g.op(scope, "Pow", [c, g.f32(scope, 2.0)])
        var = g.op(scope, "ReduceMean", [sq], axes=[-1], keepdims=1)
        std = g.op(scope, "Sqrt", [g.op(scope, "Add", [var, g.f32(scope, eps)])])
        y = g.op(scope, "Mul", [g.op(scope, "Div", [c, std]), w])
        b = self.bias_input(scope, f"{key}.bias", self.v3 and i % 2 == 0)
        return g.op(scope, "Add", [y, b])

    def rotate(self, scope: str, x: str, cos: str, sin: str) -> str:
        """``x * cos + rotate_half(x) * sin`` on ``x [B, T, H, Dh]``."""
        g = self.g
        dh = self.cfg.head_dim
        half = dh // 2
        lo = g.op(scope, "Slice", [x, g.i64(scope, [0]), g.i64(scope, [half]), g.i64(scope, [3])])
        hi = g.op(scope, "Slice", [x, g.i64(scope, [half]), g.i64(scope, [dh]), g.i64(scope, [3])])
        rot = g.op(scope, "Concat", [g.op(scope, "Neg", [hi]), lo], axis=3)
        return g.op(scope, "Add", [g.op(scope, "Mul", [x, cos]), g.op(scope, "Mul", [rot, sin])])

    def attention(self, i: int, x: str, key_bias: str, pad_mask: Optional[str],
                  rope: Optional[Tuple[str, str]]) -> str:
        g = self.g
        cfg = self.cfg
        scope = f"/blocks.{i}/attn"
        key = f"encoder.blocks.{i}.attn"
        q = self.linear(f"{scope}/query", x, f"{key}.query")
        k = self.linear(f"{scope}/key", x, f"{key}.key", bias=False)
        v = self.linear(f"{scope}/value", x, f"{key}.value")
        heads = [0, 0, cfg.heads, cfg.head_dim]
        q = g.op(scope, "Reshape", [q, g.i64(scope, heads)])
        k = g.op(scope, "Reshape", [k, g.i64(scope, heads)])
        v = g.op(scope, "Reshape", [v, g.i64(scope, heads)])
        memory = None
        if rope is not None:
            q = self.rotate(scope, q, *rope)
            k = self.rotate(scope, k, *rope)
        if cfg.fsmn:
            if pad_mask is None:
                raise OnnxExportError("FSMN needs the padding mask")
            pad = (cfg.fsmn_kernel - 1) // 2
            vm = g.op(scope, "Mul", [g.op(scope, "Reshape", [v, g.i64(scope, [0, 0, cfg.width])]), pad_mask])
            m = g.op(scope, "Transpose", [vm], perm=[0, 2, 1])
            m = g.op(f"{scope}/pad_fn", "Pad", [m, g.i64(f"{scope}/pad_fn", [0, 0, pad, 0, 0, pad])],
                     mode="constant")
            w = self.weight(f"{key}.fsmn_block.weight")
            w_name = g.init(self.names.param(f"blocks.{i}.attn.fsmn_block.weight") if self.v3
                            else self.names.numbered("Conv"), w)
            m = g.op(f"{scope}/fsmn_block", "Conv", [m, w_name], dilations=[1], group=cfg.width,
                     kernel_shape=[cfg.fsmn_kernel], pads=[0, 0], strides=[1])
            m = g.op(scope, "Transpose", [m], perm=[0, 2, 1])
            memory = g.op(scope, "Mul", [g.op(scope, "Add", [m, vm]), pad_mask])
        scale = float(np.float32(cfg.head_dim ** -0.25))
        q = g.op(scope, "Mul", [g.op(scope, "Transpose", [q], perm=[0, 2, 1, 3]), g.f32(scope, scale)])
        k = g.op(scope, "Mul", [g.op(scope, "Transpose", [k], perm=[0, 2, 3, 1]), g.f32(scope, scale)])
        v = g.op(scope, "Transpose", [v], perm=[0, 2, 1, 3])
        w = g.op(scope, "Add", [g.op(scope, "MatMul", [q, k]), key_bias])
        o = g.op(scope, "MatMul", [g.op(scope, "Softmax", [w], axis=-1), v])
        o = g.op(scope, "Transpose", [o], perm=[0, 2, 1, 3])
        o = g.op(scope, "Reshape", [o, g.i64(scope, [0, 0, cfg.width])])
        o = self.linear(f"{scope}/out", o, f"{key}.out")
        return o if memory is None else g.op(scope, "Add", [o, memory])

    def block(self, i: int, x: str, key_bias: str, pad_mask: Optional[str],
              rope: Optional[Tuple[str, str]]) -> str:
        g = self.g
        scope = f"/blocks.{i}"
        x = g.op(scope, "Add", [x, self.attention(i, self.layernorm(i, "attn_ln", x), key_bias, pad_mask, rope)])
        h = self.layernorm(i, "mlp_ln", x)
        key = f"encoder.blocks.{i}.mlp"
        h = self.linear(f"{scope}/mlp/mlp.0", h, f"{key}.0", bias_constant=self.v3)
        h = self.gelu(f"{scope}/mlp/mlp.1", h)
        h = self.linear(f"{scope}/mlp/mlp.2", h, f"{key}.2", bias_constant=self.v3)
        return g.op(scope, "Add", [x, h])

    def vq(self, x: str) -> str:
        """L2-normalise, then ``argmax(-(|x|^2 - 2 x.c + |c|^2))`` over the codebook ``[D, K]``."""
        g = self.g
        norm = g.op("/quantizer", "ReduceL2", [x], axes=[-1], keepdims=1)
        norm = g.op("/quantizer", "Clip", [norm, g.f32("/quantizer", 1e-12)])
        x = g.op("/quantizer", "Div", [x, norm])
        s = "/quantizer/rq/model/layers.0/_codebook"
        cb = g.init(self.names.numbered("Pow"), self.weight("quantizer.codebook"))
        xx = g.op(s, "ReduceSum", [g.op(s, "Pow", [x, g.f32(s, 2.0)]), g.i64(s, [-1])], keepdims=1)
        xc = g.op(s, "MatMul", [g.op(s, "Mul", [x, g.f32(s, 2.0)]), cb])
        cc = g.op(s, "ReduceSum", [g.op(s, "Pow", [cb, g.f32(s, 2.0)]), g.i64(s, [0])], keepdims=1)
        dist = g.op(s, "Add", [g.op(s, "Sub", [xx, xc]), cc])
        return g.op(s, "ArgMax", [g.op(s, "Neg", [dist])], output="indices", axis=-1, keepdims=0)

    def fsq(self, x: str) -> str:
        """``round(tanh(x W + b) * 0.999) + 1`` digits, read in base 3 (int64)."""
        g = self.g
        cfg = self.cfg
        w_name = "onnx::MatMul_2536" if cfg.version == "speech_tokenizer_v2_25hz" else self.names.numbered("MatMul")
        s = "/quantizer/_codebook/project_down"
        w = g.init(w_name, self.weight("quantizer.project_down.weight").T)
        h = g.op(s, "MatMul", [x, w])
        b = g.init("quantizer.project_in.bias", self.weight("quantizer.project_down.bias"))
        h = g.op(s, "Add", [b, h])
        s = "/quantizer/_codebook"
        h = g.op(s, "Mul", [g.op(s, "Tanh", [h]), g.f32(s, 0.999)])
        d = g.op(s, "Add", [g.op(s, "Round", [h]), g.f32(s, 1.0)])
        d = g.op(s, "Cast", [d], to=g.tp.INT64)
        d = g.op(s, "Mul", [d, g.i64(s, [3 ** k for k in range(cfg.fsq_dim)])])
        return g.op(s, "ReduceSum", [d, g.i64(s, [-1])], output="indices", keepdims=0)

    # ------------------------------------------------------------------ whole graph
    def build(self):
        g = self.g
        cfg = self.cfg
        lengths = g.op("", "Cast", ["feats_length"], to=g.tp.INT64)
        _, mask = self.length_mask("feats", lengths)
        x = g.op("", "Mul", ["feats", g.op("", "Unsqueeze", [mask, g.i64("", [1])])])
        x = self.gelu("", self.conv("conv1", x, cfg.conv1_stride))
        lengths = self.out_lengths(lengths, cfg.conv1_stride)
        _, mask = self.length_mask(x, lengths)
        x = g.op("", "Mul", [x, g.op("", "Unsqueeze", [mask, g.i64("", [1])])])
        x = self.gelu("", self.conv("conv2", x, cfg.conv2_stride))
        lengths = self.out_lengths(lengths, cfg.conv2_stride)
        t, valid = self.length_mask(x, lengths)
        x = g.op("", "Transpose", [x], perm=[0, 2, 1])
        t1 = g.op("", "Unsqueeze", [t, g.i64("", [0])])
        if cfg.positional == "table":
            table = g.init(self.names.param("positional_embedding"), self.weight("encoder.positional_embedding"))
            pos = g.op("", "Slice", [table, g.i64("", [0]), t1, g.i64("", [0])])
            x = g.op("", "Add", [x, pos])
        key_bias = g.op("", "Mul", [g.op("", "Sub", [g.f32("", 1.0), valid]), g.f32("", -1e10)])
        key_bias = g.op("", "Unsqueeze", [key_bias, g.i64("", [1, 2])])
        pad_mask = g.op("", "Unsqueeze", [valid, g.i64("", [2])]) if cfg.fsmn else None
        rope = None
        if cfg.positional == "rotary":
            cos, sin = rotary_table(ROTARY_TABLE_ROWS, cfg.head_dim, cfg.rope_theta)
            half = cfg.head_dim // 2
            tables = []
            for table in (cos[:, :half], sin[:, :half]):
                c = g.const("", table.numpy().astype(np.float32))
                c = g.op("", "Slice", [c, g.i64("", [0]), t1, g.i64("", [0])])
                c = g.op("", "Concat", [c, c], axis=-1)
                tables.append(g.op("", "Unsqueeze", [c, g.i64("", [0, 2])]))
            rope = (tables[0], tables[1])
        for i in range(cfg.depth):
            x = self.block(i, x, key_bias, pad_mask, rope)
        self.vq(x) if cfg.quantizer == "vq" else self.fsq(x)
        return self.model()

    def model(self):
        from onnx import TensorProto, helper

        cfg = self.cfg
        inputs = [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", cfg.n_mels, "frames"]),
                  helper.make_tensor_value_info("feats_length", TensorProto.INT32, ["batch"])]
        outputs = [helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "tokens"])]
        graph = helper.make_graph(self.g.nodes, "main_graph", inputs, outputs, self.g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSETS[cfg.version])],
                                  producer_name="s3tok", producer_version=__version__)
        model.ir_version = IR_VERSION
        return model


def _check_layout(cfg: S3Config) -> None:
    """Refuse a configuration whose graph would not be read back as its own version."""
    if cfg.version not in MODEL_NAMES:
        raise OnnxExportError(f"unknown model version {cfg.version!r}; known: {', '.join(MODEL_NAMES)}")
    ref = official_config(cfg.version, cfg.width, cfg.heads, cfg.depth)
    diffs = [f"{f}={getattr(cfg, f)!r} (official {getattr(ref, f)!r})"
             for f in _LAYOUT_FIELDS if getattr(cfg, f) != getattr(ref, f)]
    if cfg.quantizer == "fsq" and (cfg.fsq_dim != 8 or cfg.codebook_size != 3 ** 8):
        diffs.append(f"fsq_dim={cfg.fsq_dim}, codebook_size={cfg.codebook_size} (official 8, 6561)")
    if cfg.positional == "rotary" and (cfg.rope_theta != 10000.0 or cfg.head_dim % 2):
        diffs.append(f"rope_theta={cfg.rope_theta}, head_dim={cfg.head_dim} (official 10000, even)")
    if cfg.depth < 1:
        diffs.append(f"depth={cfg.depth}")
    if diffs:
        raise OnnxExportError(f"{cfg.version}: configuration has no official ONNX layout: {'; '.join(diffs)}")


def build_onnx(model: S3Tokenizer, *, random_init: bool = False, dynamic_batch: bool = True):
    """The ``onnx.ModelProto`` of ``model`` in the official layout of its version (see :func:`export_onnx`)."""
    from onnx import helper

    if not isinstance(model, S3Tokenizer):
        raise TypeError(f"expected an S3Tokenizer, got {type(model).__name__}")
    _check_layout(model.config)
    n_bytes = sum(4 * p.numel() for p in model.state_dict().values())
    if n_bytes > MAX_BYTES:
        raise OnnxExportError(f"{model.config.version}: {n_bytes / 2**30:.2f} GiB of weights do not fit in a "
                              "single-file ONNX model (2 GiB protobuf limit)")
    proto = _Exporter(model).build()
    if not dynamic_batch:  # batch fixed to 1, like the official files are used
        for value in list(proto.graph.input) + list(proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = 1
    helper.set_model_props(proto, {META_VERSION: __version__, META_RANDOM_INIT: "1" if random_init else "0"})
    return proto


def export_onnx(model: S3Tokenizer, path: PathLike, *, random_init: bool = False,
                dynamic_batch: bool = True) -> None:
    """Write ``model`` to ``path`` as an ONNX graph in the official layout of its version.

    ``random_init`` marks the file as made from random weights (metadata ``s3tok_random_init``), so that
    loading it warns that its tokens are meaningless. ``dynamic_batch=False`` fixes the batch axis to 1
    (time stays dynamic). Weights are written in float32 whatever the
    model's compute dtype. The file is written to a temporary name first and then moved into place.
    """
    import onnx

    proto = build_onnx(model, random_init=random_init, dynamic_batch=dynamic_batch)
    onnx.checker.check_model(proto)
    p = Path(path)
    publish([(p, lambda tmp: onnx.save(proto, str(tmp)))])
    logger.info("wrote %s: %s, width %d, heads %d, depth %d, opset %d, %d nodes%s", p, model.config.version,
                model.config.width, model.config.heads, model.config.depth, OPSETS[model.config.version],
                len(proto.graph.node), " (random weights)" if random_init else "")


# ---------------------------------------------------------------------------------------------- random


@torch.no_grad()
def random_model(name: str, *, width: Optional[int] = None, heads: Optional[int] = None,
                 depth: Optional[int] = None, seed: int = 0) -> S3Tokenizer:
    """A model of the official configuration ``name`` with random weights, deterministic for ``seed``.

    Defaults are the official sizes (width 1280, 20 heads, 6 blocks; 12 for v3); for another width the
    heads default to ``width // 64``. Linear and conv weights are normal with std ``1/sqrt(fan_in)``
    (unit-scale activations, non-trivial attention), biases std 0.1, LayerNorm weights ``1 + N(0, 0.1)``.
    The quantizer is fitted to the encoder on a fixed pseudo log-mel so that many codes are used: the FSQ
    projection scaled to unit-std outputs, the VQ codebook random unit vectors orthogonal to the states'
    mean direction.
    """
    width = width or 1280
    cfg = official_config(name, width, heads or max(1, width // 64), depth or 0)
    gen = torch.Generator().manual_seed(int(seed))
    model = S3Tokenizer(cfg)

    def normal(shape, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean

    for key, p in model.state_dict(keep_vars=True).items():
        shape = tuple(p.shape)
        if key.endswith(("attn_ln.weight", "mlp_ln.weight")):
            value = normal(shape, 0.1, 1.0)
        elif key == "encoder.positional_embedding":
            value = normal(shape, 0.5)
        elif key == "quantizer.codebook":
            continue  # set below, from the calibration pass
        elif key.endswith("fsmn_block.weight"):
            value = normal(shape, 0.5 * shape[-1] ** -0.5)
        elif key.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            value = normal(shape, fan_in ** -0.5)
        elif key.endswith(".bias"):
            value = normal(shape, 0.1)
        else:
            raise OnnxExportError(f"random_model: no initialisation rule for {key}")
        p.copy_(value)
    model.eval()
    # Calibration on a fixed pseudo log-mel. Its results are rounded (3 digits, float16) so that last-bit
    # differences of the forward pass between machines do not change the weights.
    h = model.encoder(normal((1, cfg.n_mels, 400), 0.4, -0.3), torch.tensor([400]))[0][0]
    if cfg.quantizer == "fsq":
        proj = model.quantizer.project_down
        std = float(torch.nn.functional.linear(h, proj.weight).std())
        proj.weight.mul_(float(f"{1.0 / max(std, 1e-6):.3g}"))
    else:
        # Random encoder states share one dominant direction ``mu``; random unit codes orthogonal to it leave
        # the choice to the rest of the state, so many codes are used and the decision gaps stay wide.
        mu = torch.nn.functional.normalize(h, dim=-1).mean(0).half().float()
        mu = torch.nn.functional.normalize(mu, dim=0)
        codes = normal(tuple(model.quantizer.codebook.shape), 1.0)
        model.quantizer.codebook.copy_(
            torch.nn.functional.normalize(codes - mu[:, None] * (mu @ codes)[None, :], dim=0))
    model.source = f"random:{name}:seed={seed}"
    return model
