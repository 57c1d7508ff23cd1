"""CAM++ speaker embedding as ONNX: write one like CosyVoice's ``campplus.onnx`` and read one back.

:func:`export_campplus` writes a model with ``torch.onnx.export`` (the TorchScript exporter, as the 2023-2024
exports were made): input ``input`` float32 [1, T, 80], output ``output`` [1, 192], the unmasked batch-1
forward. Opset, constant folding and static/dynamic axes are options, so each variant of those exports can
be made for tests.

:func:`read_campplus` identifies the weights by the graph's structure, never by names: from the input it
follows the data flow through the head, the TDNN, the dense blocks and the statistics pooling, checks each
operator and its attributes, accepts a BatchNorm either as a node or folded into the preceding Conv, infers
the configuration from the shapes and places every weight. A file it cannot map completely is refused with
:class:`CampPlusImportError`, naming where the structure departed or what was left unused.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from s3tok.model.campplus import CampPlus, CampPlusConfig
from s3tok.modelfiles.onnx_export import META_RANDOM_INIT, META_VERSION

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
MAX_FILE_BYTES = 1 << 30  # a CAM++ file is ~28 MB; anything near this is not one
EXPORT_FRAMES = 360  # example length traced by the exporter (the static length with dynamic_axes=False)


class CampPlusImportError(ValueError):
    """An ONNX file that is unreadable or cannot be mapped completely onto CAM++."""


# ------------------------------------------------------------------------------------------------ export


def export_campplus(model: CampPlus, path: PathLike, *, opset: int = 13, constant_folding: bool = True,
                    dynamic_axes: bool = True, batch_one: bool = True, frames: int = EXPORT_FRAMES,
                    random_init: Optional[bool] = None) -> None:
    """Write ``model`` as ONNX with ``torch.onnx.export`` (TorchScript exporter), input ``input`` [1, T, 80],
    output ``output`` [1, 192].

    ``dynamic_axes`` makes T symbolic (else fixed to ``frames``); ``batch_one=False`` makes the batch axis
    symbolic too. ``random_init`` (default: the model's own flag) marks the file in its metadata
    (``s3tok_random_init``), so every loader warns that its embeddings are meaningless. Written to a temporary
    name first, then moved into place.
    """
    import onnx

    from s3tok.version import __version__

    if random_init is None:
        random_init = bool(getattr(model, "random_init", False))
    model = model.eval()
    example = torch.zeros(1, int(frames), model.config.feat_dim)
    axes = None
    if dynamic_axes or not batch_one:
        axes = {"input": {}, "output": {}}
        if dynamic_axes:
            axes["input"][1] = "T"
        if not batch_one:
            axes["input"][0] = "B"
            axes["output"][0] = "B"
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is the point here
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["output"],
                              opset_version=int(opset), do_constant_folding=constant_folding, dynamic_axes=axes,
                              dynamo=False)
        proto = onnx.load(str(tmp))
        if batch_one:  # the exporter names the output's batch axis; it is 1, as in the official file
            proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
        onnx.helper.set_model_props(proto, {META_VERSION: __version__, META_RANDOM_INIT: "1" if random_init else "0"})
        onnx.save(proto, str(tmp))
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("wrote %s: CAM++ opset %d, %s T, %d nodes%s", p, opset, "dynamic" if dynamic_axes else "static",
                len(proto.graph.node), " (random weights)" if random_init else "")


# ------------------------------------------------------------------------------------------------ import

# Operators that only move data around (no arithmetic), allowed in the segment pooling's expansion.
_SHAPE_OPS = {"Unsqueeze", "Expand", "Reshape", "Slice", "Tile", "Identity", "Squeeze"}
# Operators of the unbiased standard deviation as the exporter writes it.
_STD_OPS = {"ReduceMean", "ReduceSum", "Sub", "Mul", "Pow", "Div", "Sqrt", "Identity", "Cast"}
# Operators that turn data into shape information (their outputs are not data).
_META_OPS = {"Shape", "Size"}


@dataclass
class _Graph:
    """The graph's data flow: tensors computed from the input (``data``), their consumers, the weights."""

    t: object  # s3tok.modelfiles.onnx_import._GraphTensors
    data: set
    consumers: Dict[str, list]
    producer: Dict[str, object]
    seen: set = field(default_factory=set)
    used: set = field(default_factory=set)
    state: Dict[str, torch.Tensor] = field(default_factory=dict)
    eps: set = field(default_factory=set)
    folded: List[str] = field(default_factory=list)  # BatchNorms folded into their conv: identity statistics
    bn_nodes: int = 0

    def visit(self, node, where: str) -> None:
        if id(node) in self.seen:
            raise CampPlusImportError(f"{where}: node {node.name or node.op_type} reached twice (a cycle or a "
                                      "shared branch CAM++ does not have)")
        self.seen.add(id(node))

    def users(self, tensor: str) -> list:
        return self.consumers.get(tensor, [])

    def weight(self, node, index: int, where: str, required: bool = True) -> Optional[np.ndarray]:
        if index >= len(node.input) or not node.input[index]:
            if required:
                raise CampPlusImportError(f"{where}: {node.op_type} has no input {index}")
            return None
        name = node.input[index]
        if name not in self.t.values:
            raise CampPlusImportError(f"{where}: {node.op_type} input {index} ({name}) is computed, not a weight")
        self.used.add(name)
        arr = self.t.values[name]
        if arr.dtype.kind != "f":
            raise CampPlusImportError(f"{where}: {node.op_type} weight {name} is {arr.dtype}, not float")
        return arr

    def put(self, key: str, arr: np.ndarray) -> None:
        self.state[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _data_flow(model) -> _Graph:
    """Which tensors carry data from the graph input (the rest is shape arithmetic and constants)."""
    from s3tok.modelfiles.onnx_import import _GraphTensors

    g = model.graph
    t = _GraphTensors(g)
    inputs = [i.name for i in g.input if i.name not in t.values]
    if len(inputs) != 1 or len(g.output) != 1:
        raise CampPlusImportError(f"expected one input and one output, found inputs {inputs} and "
                                  f"{len(g.output)} outputs")
    data = {inputs[0]}
    producer: Dict[str, object] = {}
    consumers: Dict[str, list] = {}
    for n in t.nodes:  # exported graphs are in topological order (ONNX requires it)
        for o in n.output:
            producer[o] = n
        if n.op_type in _META_OPS:
            continue
        if any(i in data for i in n.input):
            data.update(o for o in n.output if o)
            for i in n.input:
                if i in data:
                    consumers.setdefault(i, []).append(n)
    return _Graph(t, data, consumers, producer)


def _one(G: _Graph, tensor: str, op: str, where: str):
    """The single data consumer of ``tensor``, which must be ``op`` (Identity nodes are stepped over)."""
    users = G.users(tensor)
    while len(users) == 1 and users[0].op_type == "Identity":
        G.visit(users[0], where)
        users = G.users(users[0].output[0])
    if len(users) != 1 or users[0].op_type != op:
        found = ", ".join(u.op_type for u in users) or "nothing"
        raise CampPlusImportError(f"{where}: expected {op}, found {found}")
    G.visit(users[0], where)
    return users[0]


def _by_op(G: _Graph, tensor: str, ops: Sequence[str], where: str) -> Dict[str, list]:
    """The data consumers of ``tensor`` grouped by operator; exactly the multiset ``ops`` is accepted."""
    users = G.users(tensor)
    found = sorted(u.op_type for u in users)
    if found != sorted(ops):
        raise CampPlusImportError(f"{where}: expected {' + '.join(sorted(ops))}, found "
                                  f"{' + '.join(found) or 'nothing'}")
    out: Dict[str, list] = {}
    for u in users:
        out.setdefault(u.op_type, []).append(u)
    return out


def _check_conv(G: _Graph, node, where: str, *, kernel: Tuple[int, ...], stride: Tuple[int, ...],
                dilation: int = 1, cin: Optional[int] = None) -> np.ndarray:
    """A Conv node's weight after checking its attributes (pads 'same' for odd kernels, one group)."""
    w = G.weight(node, 1, where)
    nd = len(kernel)
    if w.ndim != nd + 2 or tuple(w.shape[2:]) != tuple(kernel):
        raise CampPlusImportError(f"{where}: expected a {'x'.join(map(str, kernel))} convolution, found weight "
                                  f"{list(w.shape)}")
    if cin is not None and w.shape[1] != cin:
        raise CampPlusImportError(f"{where}: expected {cin} input channels, found {w.shape[1]}")
    pads = [(k - 1) // 2 * dilation for k in kernel]
    checks = {"group": (int(_attr(node, "group", 1)), 1),
              "strides": (list(_attr(node, "strides", [1] * nd)), list(stride)),
              "dilations": (list(_attr(node, "dilations", [1] * nd)), [dilation] * nd),
              "pads": (list(_attr(node, "pads", [0] * 2 * nd)), pads + pads)}
    for name, (got, want) in checks.items():
        if got != want:
            raise CampPlusImportError(f"{where}: Conv {name} {got}, expected {want}")
    if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise CampPlusImportError(f"{where}: Conv auto_pad is not supported")
    return w


def _bn_params(G: _Graph, node, where: str) -> List[np.ndarray]:
    if len(node.output) != 1 or int(_attr(node, "training_mode", 0)):
        raise CampPlusImportError(f"{where}: BatchNormalization in training mode")
    G.eps.add(round(float(_attr(node, "epsilon", 1e-5)), 12))
    G.bn_nodes += 1
    return [G.weight(node, i, where) for i in range(1, 5)]


def _put_bn(G: _Graph, key: str, params: Sequence[np.ndarray], where: str, affine: bool = True) -> None:
    scale, bias, mean, var = params
    if len({p.shape for p in params}) != 1 or scale.ndim != 1:
        raise CampPlusImportError(f"{where}: BatchNormalization parameters of different shapes")
    if affine:
        G.put(f"{key}.weight", scale)
        G.put(f"{key}.bias", bias)
    elif not (np.all(scale == 1) and np.all(bias == 0)):
        raise CampPlusImportError(f"{where}: the embedding BatchNorm has affine parameters (CAM++'s has none)")
    G.put(f"{key}.running_mean", mean)
    G.put(f"{key}.running_var", var)


def _conv_bn(G: _Graph, x: str, conv_key: str, bn_key: str, where: str, conv=None, **conv_args) -> str:
    """``Conv -> BatchNormalization`` from ``x`` or the Conv alone with the BatchNorm folded into its bias;
    placed as conv weight + BatchNorm (identity statistics then, the folded shift as its bias)."""
    conv = conv if conv is not None else _one(G, x, "Conv", where)
    w = _check_conv(G, conv, where, **conv_args)
    bias = G.weight(conv, 2, where, required=False)
    G.put(f"{conv_key}.weight", w)
    out = conv.output[0]
    users = G.users(out)
    if len(users) == 1 and users[0].op_type == "BatchNormalization":
        bn = users[0]
        G.visit(bn, where)
        scale, shift, mean, var = _bn_params(G, bn, where)
        if bias is not None:  # a bias before the BatchNorm moves into its mean
            mean = mean - bias
        _put_bn(G, bn_key, (scale, shift, mean, var), where)
        return bn.output[0]
    if bias is None:
        raise CampPlusImportError(f"{where}: Conv without BatchNormalization and without a folded bias")
    G.folded.append(bn_key)
    ones = np.ones_like(bias)
    _put_bn(G, bn_key, (ones, bias, np.zeros_like(bias), ones), where)  # variance set to 1 - eps at the end
    return out


def _bn_relu(G: _Graph, x: str, key: str, where: str, bn=None) -> str:
    bn = bn if bn is not None else _one(G, x, "BatchNormalization", where)
    if bn.op_type != "BatchNormalization":
        raise CampPlusImportError(f"{where}: expected BatchNormalization, found {bn.op_type}")
    _put_bn(G, key, _bn_params(G, bn, where), where)
    return _one(G, bn.output[0], "Relu", where).output[0]


def _head(G: _Graph, x: str) -> Tuple[str, Dict[str, object]]:
    """Transpose, Unsqueeze, the FCM head; returns the TDNN input and the head's shape."""
    tr = _one(G, x, "Transpose", "input")
    if list(_attr(tr, "perm", [])) != [0, 2, 1]:
        raise CampPlusImportError(f"input: Transpose perm {_attr(tr, 'perm')}, expected [0, 2, 1]")
    un = _one(G, tr.output[0], "Unsqueeze", "head")
    axes = _attr(un, "axes") or (G.t.values.get(un.input[1]).tolist() if len(un.input) > 1 else None)
    if list(np.atleast_1d(axes)) != [1]:
        raise CampPlusImportError(f"head: Unsqueeze axes {axes}, expected [1]")
    out = _conv_bn(G, un.output[0], "head.conv1", "head.bn1", "head conv1", kernel=(3, 3), stride=(1, 1), cin=1)
    x = _one(G, out, "Relu", "head conv1").output[0]
    channels = int(G.state["head.conv1.weight"].shape[0])
    layers: List[int] = []
    while len(G.users(x)) == 2:  # a residual block: conv1 and the shortcut (a conv or the Add itself)
        x = _res_block(G, x, layers, channels)
    out = _conv_bn(G, x, "head.conv2", "head.bn2", "head conv2", kernel=(3, 3), stride=(2, 1), cin=channels)
    x = _one(G, out, "Relu", "head conv2").output[0]
    rs = _one(G, x, "Reshape", "head output")
    return rs.output[0], {"channels": channels, "layers": tuple(layers)}


def _res_block(G: _Graph, x: str, layers: List[int], channels: int) -> str:
    """One BasicResBlock from ``x``; a stride-2 block with a projection shortcut starts a new head layer
    (``layers`` counts the blocks of each layer)."""
    where = f"head layer {len(layers)} block {layers[-1] if layers else 0}"
    users = G.users(x)
    convs = [u for u in users if u.op_type == "Conv"]
    shortcut = [u for u in convs if G.t.values.get(u.input[1]) is not None and G.t.values[u.input[1]].ndim == 4
                and G.t.values[u.input[1]].shape[2:] == (1, 1)]
    main = [u for u in convs if u not in shortcut]
    adds = [u for u in users if u.op_type == "Add"]
    projected = len(shortcut) == 1 and len(main) == 1 and not adds
    if not projected and not (len(main) == 1 and len(adds) == 1):
        raise CampPlusImportError(f"{where}: expected a residual block (Conv + shortcut), found "
                                  f"{', '.join(u.op_type for u in users)}")
    if projected:
        layers.append(0)
    elif not layers:
        raise CampPlusImportError(f"{where}: the first residual block has no strided projection shortcut")
    layers[-1] += 1
    i, j = len(layers), layers[-1] - 1
    where = f"head layer {i} block {j}"
    key = f"head.layer{i}.{j}"
    stride = 2 if projected else 1
    G.visit(main[0], where)
    h = _conv_bn(G, x, f"{key}.conv1", f"{key}.bn1", where, conv=main[0], kernel=(3, 3), stride=(stride, 1),
                 cin=channels)
    h = _one(G, h, "Relu", where).output[0]
    a = _conv_bn(G, h, f"{key}.conv2", f"{key}.bn2", where, kernel=(3, 3), stride=(1, 1), cin=channels)
    if projected:
        G.visit(shortcut[0], where)
        s = _conv_bn(G, x, f"{key}.shortcut.0", f"{key}.shortcut.1", where + " shortcut", conv=shortcut[0],
                     kernel=(1, 1), stride=(2, 1), cin=channels)
    else:
        s = x
    add = _one(G, a, "Add", where)
    if sorted(add.input) != sorted([a, s]):
        raise CampPlusImportError(f"{where}: the residual Add does not add the shortcut")
    if projected and add not in G.users(s):
        raise CampPlusImportError(f"{where}: the shortcut does not reach the residual Add")
    return _one(G, add.output[0], "Relu", where).output[0]


def _seg_chain(G: _Graph, pool, where: str) -> str:
    """The segment pooling's expansion back to frames: only data-moving ops up to the Add."""
    x, ops = pool.output[0], []
    while True:
        users = G.users(x)
        if len(users) != 1:
            raise CampPlusImportError(f"{where}: segment pooling branches ({len(users)} users)")
        u = users[0]
        if u.op_type == "Add":
            break
        if u.op_type not in _SHAPE_OPS:
            raise CampPlusImportError(f"{where}: unexpected {u.op_type} in the segment pooling")
        G.visit(u, where)
        ops.append(u.op_type)
        x = u.output[0]
        if len(ops) > 16:
            raise CampPlusImportError(f"{where}: segment pooling too long")
    if not ({"Expand", "Tile"} & set(ops)) or "Slice" not in ops:
        raise CampPlusImportError(f"{where}: the segment pooling is not expanded back and cut to the frames "
                                  f"(found {', '.join(ops) or 'nothing'})")
    return x


def _reduce_axes(G: _Graph, node) -> List[int]:
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1] in G.t.values:
        axes = G.t.values[node.input[1]].tolist()
    return list(np.atleast_1d(axes)) if axes is not None else []


def _cam(G: _Graph, h: str, key: str, where: str, bn_channels: int) -> Tuple[str, Dict[str, int]]:
    """The CAM layer from ``h``: local conv, context (mean + segment pooling), gate; returns its output."""
    parts = _by_op(G, h, ["Conv", "ReduceMean", "AveragePool"], where)
    local, mean, pool = parts["Conv"][0], parts["ReduceMean"][0], parts["AveragePool"][0]
    for n in (local, mean, pool):
        G.visit(n, where)
    w = G.weight(local, 1, where)
    if w.ndim != 3:
        raise CampPlusImportError(f"{where}: the local convolution is not 1-D")
    k = int(w.shape[2])
    d = int((_attr(local, "dilations", [1]) or [1])[0])
    _check_conv(G, local, where + " local conv", kernel=(k,), stride=(1,), dilation=d, cin=bn_channels)
    if k % 2 == 0 or G.weight(local, 2, where, required=False) is not None:
        raise CampPlusImportError(f"{where}: the local convolution has an even kernel or a bias")
    G.put(f"{key}.cam_layer.linear_local.weight", w)
    if _reduce_axes(G, mean) not in ([-1], [2]) or int(_attr(mean, "keepdims", 1)) != 1:
        raise CampPlusImportError(f"{where}: context mean is not over time with kept dims")
    seg = list(_attr(pool, "kernel_shape", []))
    if len(seg) != 1 or list(_attr(pool, "strides", [])) != seg or int(_attr(pool, "ceil_mode", 0)) != 1 \
            or any(_attr(pool, "pads", [0, 0])):
        raise CampPlusImportError(f"{where}: segment pooling is not kernel = stride, ceil mode, no padding")
    expanded = _seg_chain(G, pool, where)
    add = _one(G, expanded, "Add", where)
    if sorted(add.input) != sorted([expanded, mean.output[0]]) or len(G.users(mean.output[0])) != 1:
        raise CampPlusImportError(f"{where}: context is not mean + segment pooling")
    c1 = _one(G, add.output[0], "Conv", where)
    w1 = _check_conv(G, c1, where + " linear1", kernel=(1,), stride=(1,), cin=bn_channels)
    G.put(f"{key}.cam_layer.linear1.weight", w1)
    G.put(f"{key}.cam_layer.linear1.bias", G.weight(c1, 2, where + " linear1"))
    r = _one(G, c1.output[0], "Relu", where)
    c2 = _one(G, r.output[0], "Conv", where)
    w2 = _check_conv(G, c2, where + " linear2", kernel=(1,), stride=(1,), cin=int(w1.shape[0]))
    if w2.shape[0] != w.shape[0]:
        raise CampPlusImportError(f"{where}: the gate has {w2.shape[0]} channels, the local conv {w.shape[0]}")
    G.put(f"{key}.cam_layer.linear2.weight", w2)
    G.put(f"{key}.cam_layer.linear2.bias", G.weight(c2, 2, where + " linear2"))
    sig = _one(G, c2.output[0], "Sigmoid", where)
    mul = _one(G, sig.output[0], "Mul", where)
    if sorted(mul.input) != sorted([sig.output[0], local.output[0]]) or len(G.users(local.output[0])) != 1:
        raise CampPlusImportError(f"{where}: the gate does not multiply the local convolution")
    return mul.output[0], {"kernel": k, "dilation": d, "growth": int(w.shape[0]), "seg_len": int(seg[0]),
                           "reduction": bn_channels // max(1, int(w1.shape[0]))}


def _dense_layer(G: _Graph, x: str, key: str, where: str, cin: int) -> Tuple[str, Dict[str, int]]:
    parts = _by_op(G, x, ["BatchNormalization", "Concat"], where)
    concat = parts["Concat"][0]
    G.visit(parts["BatchNormalization"][0], where)
    a = _bn_relu(G, x, f"{key}.nonlinear1.batchnorm", where, bn=parts["BatchNormalization"][0])
    conv = _one(G, a, "Conv", where)
    bn_channels = int(G.weight(conv, 1, where).shape[0])
    h = _conv_bn(G, a, f"{key}.linear1", f"{key}.nonlinear2.batchnorm", where + " linear1", conv=conv,
                 kernel=(1,), stride=(1,), cin=cin)
    h = _one(G, h, "Relu", where).output[0]
    out, shape = _cam(G, h, key, where, bn_channels)
    G.visit(concat, where)
    if list(concat.input) != [x, out] or int(_attr(concat, "axis", 0)) not in (1, -2):
        raise CampPlusImportError(f"{where}: Concat is not [input, new features] over channels")
    if not _one_user_is(G, out, concat):
        raise CampPlusImportError(f"{where}: the layer's output has other users")
    shape["bn_channels"] = bn_channels
    return concat.output[0], shape


def _one_user_is(G: _Graph, tensor: str, node) -> bool:
    users = G.users(tensor)
    return len(users) == 1 and users[0] is node


def _stats(G: _Graph, x: str, where: str) -> str:
    """Mean and unbiased std over time, concatenated; returns the Concat's output."""
    users = G.users(x)
    means = [u for u in users if u.op_type == "ReduceMean" and int(_attr(u, "keepdims", 1)) == 0]
    if len(means) != 1 or _reduce_axes(G, means[0]) not in ([-1], [2]):
        raise CampPlusImportError(f"{where}: no mean over time (found {', '.join(u.op_type for u in users)})")
    mean = means[0]
    G.visit(mean, where)
    concat = _one(G, mean.output[0], "Concat", where)
    if len(concat.input) != 2 or concat.input[0] != mean.output[0] or int(_attr(concat, "axis", 0)) not in (1, -1):
        raise CampPlusImportError(f"{where}: statistics are not [mean, std] concatenated over channels")
    sqrt = G.producer.get(concat.input[1])
    if sqrt is None or sqrt.op_type != "Sqrt":
        raise CampPlusImportError(f"{where}: the second statistic is not a square root")
    _check_std(G, x, sqrt, mean, where)
    return concat.output[0]


def _check_std(G: _Graph, x: str, sqrt, mean, where: str) -> None:
    """The data nodes between ``x`` and ``sqrt`` form an unbiased std: centering, squares, mean, ``N / (N - 1)``."""
    region, stack = [], [sqrt]
    while stack:
        n = stack.pop()
        if id(n) in {id(r) for r in region}:
            continue
        region.append(n)
        for i in n.input:
            if i in G.data and i != x:
                p = G.producer.get(i)
                if p is None:
                    raise CampPlusImportError(f"{where}: std reads a tensor with no producer ({i})")
                stack.append(p)
    ops = [n.op_type for n in region]
    bad = sorted({o for o in ops if o not in _STD_OPS})
    if bad or "Sub" not in ops or len(region) > 12:
        raise CampPlusImportError(f"{where}: not a standard deviation (ops {', '.join(ops)})")
    for n in region:
        G.visit(n, where)
    users_x = {id(u) for u in G.users(x)}
    if users_x != {id(mean)} | {id(n) for n in region if x in n.input}:
        raise CampPlusImportError(f"{where}: the pooled features have other users")
    if not _unbiased(G, region):
        raise CampPlusImportError(f"{where}: the std is not unbiased (no division by N - 1)")


def _unbiased(G: _Graph, region: list) -> bool:
    """A Div by ``N - 1``: a constant one less than the Mul's ``N``, or a Sub of 1 from a shape-derived N."""
    divs = [n for n in region if n.op_type == "Div" and n.input[1] not in G.data]
    if len(divs) != 1:
        return False
    den = divs[0].input[1]
    if den in G.t.values:
        muls = [G.t.values.get(i) for n in region if n.op_type == "Mul" for i in n.input if i in G.t.values]
        return any(m is not None and m.size == 1 and float(m) - float(G.t.values[den]) == 1.0 for m in muls)
    p = G.producer.get(den)
    while p is not None and p.op_type in ("Cast", "Identity"):
        p = G.producer.get(p.input[0])
    if p is None or p.op_type != "Sub":
        return False
    one = G.t.values.get(p.input[1])
    return one is not None and one.size == 1 and float(one) == 1.0


def _dense(G: _Graph, x: str, where: str) -> Tuple[str, int]:
    un = _one(G, x, "Unsqueeze", where)
    conv = _one(G, un.output[0], "Conv", where)
    w = _check_conv(G, conv, where, kernel=(1,), stride=(1,))
    if G.weight(conv, 2, where, required=False) is not None:
        raise CampPlusImportError(f"{where}: the embedding convolution has a bias")
    G.put("xvector.dense.linear.weight", w)
    sq = _one(G, conv.output[0], "Squeeze", where)
    bn = _one(G, sq.output[0], "BatchNormalization", where)
    _put_bn(G, "xvector.dense.nonlinear.batchnorm", _bn_params(G, bn, where), where, affine=False)
    return bn.output[0], int(w.shape[0])


def _load(path: PathLike):
    """The ONNX model, its size bounded before parsing and its external data checked before reading."""
    import onnx

    from s3tok.modelfiles.onnx_import import OnnxImportError, _load_external_data

    p = Path(path)
    if not p.is_file():
        raise CampPlusImportError(f"{p}: no such ONNX file")
    size = p.stat().st_size
    if size == 0 or size > MAX_FILE_BYTES:
        raise CampPlusImportError(f"{p}: {size} bytes, not a CAM++ ONNX file (limit {MAX_FILE_BYTES})")
    try:  # always binary protobuf: onnx.load would parse a *.json / *.txt path as JSON / text protobuf
        model = onnx.load(str(p), format="protobuf", load_external_data=False)
    except Exception as e:  # noqa: BLE001 - DecodeError, RuntimeError, ValueError, ... all mean "not ONNX"
        raise CampPlusImportError(f"{p}: not a readable ONNX model: {type(e).__name__}") from None
    external = sum(int(np.prod([int(d) for d in t.dims], dtype=np.float64)) * 4 for t in model.graph.initializer
                   if t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL)
    if external > MAX_FILE_BYTES:
        raise CampPlusImportError(f"{p}: declares {external} bytes of external weights (limit {MAX_FILE_BYTES})")
    try:
        _load_external_data(model, p)
    except OnnxImportError as e:
        raise CampPlusImportError(str(e)) from None
    if not model.graph.node:
        raise CampPlusImportError(f"{p}: empty graph")
    return model


def read_campplus(path: PathLike) -> Tuple[CampPlusConfig, Dict[str, torch.Tensor], Dict[str, object]]:
    """``(config, state_dict for CampPlus, info)`` of a CAM++ ONNX file, found by the graph's structure.

    Raises :class:`CampPlusImportError` naming the place where the graph departs from CAM++, or the weights
    left unused."""
    from s3tok.modelfiles.onnx_import import OnnxImportError

    where = str(path)
    model = _load(path)
    try:
        return _read(model, where)
    except OnnxImportError as e:  # a damaged tensor (named by _GraphTensors)
        raise CampPlusImportError(f"{where}: {e}") from None
    except CampPlusImportError as e:
        raise CampPlusImportError(f"{where}: cannot map onto CAM++: {e}") from None


def _read(model, where: str):
    G = _data_flow(model)
    g = model.graph
    inp = next(i for i in g.input if i.name not in G.t.values)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 3:
        raise CampPlusImportError(f"input {inp.name} has rank {len(dims)}, expected [B, T, F]")
    x, head = _head(G, inp.name)
    tdnn = _one(G, x, "Conv", "tdnn")
    tw = G.weight(tdnn, 1, "tdnn")
    if tw.ndim != 3:
        raise CampPlusImportError("tdnn: not a 1-D convolution")
    out = _conv_bn(G, x, "xvector.tdnn.linear", "xvector.tdnn.nonlinear.batchnorm", "tdnn", conv=tdnn,
                   kernel=(int(tw.shape[2]),), stride=(2,))
    x = _one(G, out, "Relu", "tdnn").output[0]
    channels = int(tw.shape[0])
    blocks, shapes = [], []
    while True:
        b = len(blocks) + 1
        n = 0
        while sorted(u.op_type for u in G.users(x)) == ["BatchNormalization", "Concat"]:
            n += 1
            x, shape = _dense_layer(G, x, f"xvector.block{b}.tdnnd{n}", f"block {b} layer {n}", channels)
            channels += shape["growth"]
            shapes.append(shape)
        if n == 0:
            break
        kd = {(s["kernel"], s["dilation"]) for s in shapes[-n:]}
        if len(kd) != 1:
            raise CampPlusImportError(f"block {b}: layers with different kernels or dilations {sorted(kd)}")
        blocks.append((n,) + kd.pop())
        a = _bn_relu(G, x, f"xvector.transit{b}.nonlinear.batchnorm", f"transit {b}")
        conv = _one(G, a, "Conv", f"transit {b}")
        w = _check_conv(G, conv, f"transit {b}", kernel=(1,), stride=(1,), cin=channels)
        channels = int(w.shape[0])
        G.put(f"xvector.transit{b}.linear.weight", w)
        x = conv.output[0]
        if G.weight(conv, 2, f"transit {b}", required=False) is not None:  # out_nonlinear folded into it
            G.state.pop(f"xvector.transit{b}.linear.weight")
            x = _conv_bn(G, a, f"xvector.transit{b}.linear", "xvector.out_nonlinear.batchnorm",
                         f"transit {b}", conv=conv, kernel=(1,), stride=(1,), cin=int(w.shape[1]))
            x = _one(G, x, "Relu", "output BatchNorm-ReLU").output[0]
            break
    if not blocks:
        raise CampPlusImportError("no dense TDNN block after the TDNN layer")
    if "xvector.out_nonlinear.batchnorm.running_mean" not in G.state:
        x = _bn_relu(G, x, "xvector.out_nonlinear.batchnorm", "output BatchNorm-ReLU")
    x = _stats(G, x, "statistics pooling")
    y, embedding = _dense(G, x, "embedding layer")
    if y != g.output[0].name:
        raise CampPlusImportError("the embedding is not the graph's output")
    config = _config(G, head, blocks, shapes, dims[2], embedding)
    _check_complete(G, config)
    props = {p.key: p.value for p in model.metadata_props}
    info = {"path": where, "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                                        default=0),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "batchnorm_nodes": G.bn_nodes, "batchnorm_folded": len(G.folded),
            "dynamic_time": dims[1] is None, "random_init": props.get(META_RANDOM_INIT) == "1",
            "config": config.to_dict()}
    logger.info("%s: CAM++ %s blocks, head %s, %d BatchNorms (%d folded into convs), opset %s", where,
                list(config.blocks), list(config.head_blocks), G.bn_nodes + len(G.folded), len(G.folded),
                info["opset"])
    return config, G.state, info


def _config(G: _Graph, head: Dict[str, object], blocks, shapes, feat_dim: Optional[int], embedding: int):
    eps = {1e-5 if np.float32(e) == np.float32(1e-5) else e for e in G.eps} or {1e-5}
    if len(eps) != 1:
        raise CampPlusImportError(f"BatchNorms with different epsilons {sorted(eps)}")
    growth = {s["growth"] for s in shapes}
    bn = {s["bn_channels"] for s in shapes}
    seg = {s["seg_len"] for s in shapes}
    red = {s["reduction"] for s in shapes}
    if len(growth) != 1 or len(bn) != 1 or len(seg) != 1 or len(red) != 1:
        raise CampPlusImportError(f"layers differ in growth {growth}, bottleneck {bn}, segment {seg} or "
                                  f"reduction {red}")
    g, b = growth.pop(), bn.pop()
    tw = G.state["xvector.tdnn.linear.weight"]
    c = int(head["channels"])
    if feat_dim is None:  # the frequency axis is halved len(layers) + 1 times, rounding up
        feat_dim = int(tw.shape[1]) // c * 2 ** (len(head["layers"]) + 1)
    if b % g:
        raise CampPlusImportError(f"bottleneck {b} is not a multiple of the growth {g}")
    try:
        cfg = CampPlusConfig(feat_dim=int(feat_dim), embedding_size=embedding, growth_rate=g, bn_size=b // g,
                             init_channels=int(tw.shape[0]), head_channels=c, head_blocks=head["layers"],
                             blocks=tuple(blocks), seg_len=seg.pop(), tdnn_kernel=int(tw.shape[2]),
                             cam_reduction=red.pop(), bn_eps=eps.pop())
    except ValueError as e:
        raise CampPlusImportError(str(e)) from None
    if cfg.head_channels * cfg.head_freq != tw.shape[1]:
        raise CampPlusImportError(f"the TDNN reads {tw.shape[1]} channels, the head gives "
                                  f"{cfg.head_channels} x {cfg.head_freq}")
    return cfg


def _check_complete(G: _Graph, config: CampPlusConfig) -> None:
    """Every data node visited, every weight used, every parameter of the model placed with its shape."""
    unvisited = [n for n in G.t.nodes if id(n) not in G.seen and any(o in G.data for o in n.output)]
    if unvisited:
        names = ", ".join(f"{n.op_type} {n.name}".strip() for n in unvisited[:8])
        raise CampPlusImportError(f"{len(unvisited)} operators outside CAM++'s structure: {names}")
    leftover = sorted(n for n, v in G.t.values.items() if n not in G.used and v.dtype.kind == "f"
                      and (G.t.from_initializer[n] or v.size > 8))
    if leftover:
        raise CampPlusImportError(f"weights left unused: {', '.join(leftover[:10])}"
                                  + (f" (+{len(leftover) - 10} more)" if len(leftover) > 10 else ""))
    for key in G.folded:  # (x - 0) / sqrt((1 - eps) + eps) * 1 + shift: the folded conv's bias, exactly
        G.state[f"{key}.running_var"] = torch.full_like(G.state[f"{key}.running_var"], 1.0 - config.bn_eps)
    expected = CampPlus(config).state_dict()
    missing = [k for k in expected if k not in G.state and not k.endswith("num_batches_tracked")]
    extra = [k for k in G.state if k not in expected]
    wrong = [f"{k} {list(G.state[k].shape)} != {list(expected[k].shape)}" for k in expected
             if k in G.state and G.state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        raise CampPlusImportError("; ".join(x for x in (
            f"parameters not found: {', '.join(missing[:8])}" if missing else "",
            f"unexpected parameters: {', '.join(extra[:8])}" if extra else "",
            f"wrong shapes: {', '.join(wrong[:8])}" if wrong else "") if x))
    for k, v in expected.items():
        if k.endswith("num_batches_tracked"):
            G.state[k] = torch.zeros_like(v)
    G.state = {k: G.state[k] for k in expected}


def load_campplus(path: PathLike) -> CampPlus:
    """A :class:`CampPlus` (eval mode) with the weights of the ONNX file at ``path``."""
    config, state, info = read_campplus(path)
    model = CampPlus(config)
    model.load_state_dict(state)
    model.eval()
    model.random_init = bool(info["random_init"])
    model.source = str(path)
    if model.random_init:
        logger.warning("%s: random-weight CAM++ made by s3tok: its embeddings are meaningless", path)
    return model
