"""Read an official S3 tokenizer ONNX file: identify the model from the graph and place every weight.

Weights are found by the node that consumes them (the official files name most initializers
``onnx::MatMul_NNNN``), from initializers and ``Constant`` nodes alike. The version and the
configuration come from the graph's content: conv1 stride, quantizer kind, LayerNorm form, shapes.
A file that cannot be fully mapped is refused with the list of what is missing or left over.
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from s3tok.model.versions import identify

from s3tok.model.config import LIMITS, S3Config
from s3tok.model.encoder import rotary_table

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class OnnxImportError(ValueError):
    """An ONNX file that is unreadable, not an S3 tokenizer, or not fully mappable."""


@dataclass
class ImportedModel:
    """What :func:`read_onnx` found: the config, the weights under s3tok's parameter names, notes."""

    config: S3Config
    state_dict: Dict[str, torch.Tensor]
    path: str
    notes: List[str] = field(default_factory=list)
    random_init: bool = False  # metadata ``s3tok_random_init`` = "1": random weights written by s3tok


#: The most external-data bytes one tokenizer may declare (the official files hold under 1 GiB of weights).
MAX_EXTERNAL_BYTES = 2 << 30

_BLOCK_LINEAR = re.compile(r"^/blocks\.(\d+)/(attn/(?:query|key|value|out)|mlp/mlp\.[02])/(MatMul|Add)$")
_BLOCK_LN = re.compile(r"^/blocks\.(\d+)/(attn_ln|mlp_ln)/(Mul|Add_1|LayerNormalization)$")
_BLOCK_FSMN = re.compile(r"^/blocks\.(\d+)/attn/fsmn_block/Conv$")
_BLOCK_ANY = re.compile(r"^/blocks\.(\d+)/")


def _load_graph(path: PathLike):
    import onnx

    p = Path(path)
    if not p.is_file():
        raise OnnxImportError(f"{p}: no such ONNX file")
    if p.stat().st_size == 0:
        raise OnnxImportError(f"{p}: file is empty, not an ONNX model")
    try:  # always binary protobuf: onnx.load would parse a *.json / *.txt path as JSON / text protobuf
        model = onnx.load(str(p), format="protobuf", load_external_data=False)
    except Exception as e:  # noqa: BLE001 - DecodeError, RuntimeError, ValueError, ... all mean "not ONNX"
        raise OnnxImportError(f"{p}: not a readable ONNX model (truncated or another format?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not model.graph.node:
        raise OnnxImportError(f"{p}: ONNX file has an empty graph (truncated or not an ONNX model)")
    arrays: Dict[str, np.ndarray] = {}
    _load_external_data(model, p, arrays)
    return model, arrays


def _load_external_data(model, path: Path, arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Read the tensors stored outside the ONNX file, after checking each reference: a relative path that
    stays inside the model's folder (symbolic links resolved), and a byte range inside the file that holds
    exactly the tensor the graph declares. So a crafted file can neither read elsewhere nor make s3tok read
    more than its declared weights (onnx itself blocks traversal only in recent releases)."""
    from onnx import TensorProto, external_data_helper, helper

    folder = path.resolve().parent
    external = [t for t in external_data_helper._get_all_tensors(model)
                if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL]
    ranges: Dict[Path, List[Tuple[int, int, str]]] = defaultdict(list)  # file -> (offset, end, tensor)
    total = 0
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (folder / loc).resolve()
        if not loc or os.path.isabs(loc) or ".." in Path(loc).parts or folder not in target.parents:
            raise OnnxImportError(f"{path}: tensor {t.name!r} points outside the model's folder ({loc!r}); refused")
        if not target.is_file():
            raise OnnxImportError(f"{path}: tensor {t.name!r}: external data file {target} is missing")
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            raise OnnxImportError(f"{path}: tensor {t.name!r} has an unsupported data type {t.data_type}") from None
        if any(int(d) < 0 for d in t.dims):
            raise OnnxImportError(f"{path}: tensor {t.name!r} has a negative dimension {list(t.dims)}")
        expected = int(np.prod([int(d) for d in t.dims], dtype=np.float64)) * itemsize
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info.get("length", expected) or expected)
        except ValueError:
            raise OnnxImportError(f"{path}: tensor {t.name!r}: external data offset/length are not integers "
                                  f"({info.get('offset')!r}, {info.get('length')!r})") from None
        if length != expected or offset < 0 or offset + expected > target.stat().st_size:
            raise OnnxImportError(f"{path}: tensor {t.name!r} declares {expected} bytes ({list(t.dims)}) but its "
                                  f"external data is {length} bytes at offset {offset} of {target} "
                                  f"({target.stat().st_size} bytes)")
        total += expected
        if total > MAX_EXTERNAL_BYTES:
            raise OnnxImportError(f"{path}: its tensors declare more than {MAX_EXTERNAL_BYTES} bytes of external "
                                  f"data (the limit s3tok reads); refused before reading")
        ranges[target].append((offset, offset + expected, t.name))
        for e in t.external_data:  # onnx then reads exactly the declared bytes, never to the end of the file
            if e.key == "length":
                e.value = str(expected)
        if "length" not in info:
            t.external_data.add(key="length", value=str(expected))
    for target, spans in ranges.items():  # each byte read once: the total is bounded by the files' sizes
        spans.sort()
        for (_, end_a, name_a), (start_b, _, name_b) in zip(spans, spans[1:]):
            if start_b < end_a:
                raise OnnxImportError(f"{path}: tensors {name_a!r} and {name_b!r} share bytes of {target.name} "
                                      f"(overlapping external data ranges); refused before reading")
    if arrays is not None:  # plain numeric initializers: read straight into numpy, one copy of the bytes
        plain = {getattr(TensorProto, n): np.dtype(d).newbyteorder("<") for n, d in (
            ("FLOAT", "f4"), ("DOUBLE", "f8"), ("FLOAT16", "f2"), ("INT8", "i1"), ("UINT8", "u1"), ("INT16", "i2"),
            ("UINT16", "u2"), ("INT32", "i4"), ("UINT32", "u4"), ("INT64", "i8"), ("UINT64", "u8"))}
        names = Counter(t.name for t in model.graph.initializer)
        for t in model.graph.initializer:
            if not (t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL) \
                    or t.data_type not in plain or not t.name or names[t.name] != 1:
                continue
            info = {e.key: e.value for e in t.external_data}
            dims = [int(d) for d in t.dims]
            try:
                arr = np.fromfile(folder / info["location"], dtype=plain[t.data_type],
                                  count=int(np.prod(dims, dtype=np.int64)), offset=int(info.get("offset", 0) or 0))
            except (OSError, ValueError) as e:
                raise OnnxImportError(f"{path}: cannot read the external data of tensor {t.name!r}: {e}") from None
            arrays[t.name] = arr.astype(arr.dtype.newbyteorder("="), copy=False).reshape(dims)
            t.data_location = TensorProto.DEFAULT  # read: onnx's loader below skips it
            del t.external_data[:]
        external = [t for t in external if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL]
    if external:
        try:
            external_data_helper.load_external_data_for_model(model, str(folder))
        except (OSError, ValueError, RuntimeError) as e:
            raise OnnxImportError(f"{path}: cannot read its external data: {e}") from None


def _tensor(t, where: str = "") -> np.ndarray:
    """The values of tensor ``t``; a damaged one (unknown or UNDEFINED data type, raw data of the wrong size,
    a negative dimension) raises :class:`OnnxImportError` naming ``where`` and the tensor."""
    from onnx import TensorProto, helper, numpy_helper

    def bad(why: str) -> OnnxImportError:
        return OnnxImportError(f"{where + ': ' if where else ''}tensor {t.name!r}: {why}; a damaged or crafted "
                               "model file")

    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise bad(f"negative dimension in {dims}")
    if t.data_type == TensorProto.UNDEFINED or t.data_type == TensorProto.STRING:
        raise bad(f"data type {t.data_type} ({'UNDEFINED' if t.data_type == 0 else 'STRING'}) is not numeric")
    try:
        np_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    except (KeyError, TypeError, ValueError):
        raise bad(f"unknown data type {t.data_type}") from None
    count = int(np.prod(dims, dtype=np.float64)) if dims else 1
    sub_byte = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
                if hasattr(TensorProto, n)}  # packed: several values a byte
    if t.HasField("raw_data") and t.data_type not in sub_byte and len(t.raw_data) != count * np_dtype.itemsize:
        raise bad(f"{len(t.raw_data)} bytes of raw data for shape {dims} of {np_dtype} "
                  f"({count * np_dtype.itemsize} expected)")
    try:
        return np.array(numpy_helper.to_array(t))
    except Exception as e:  # noqa: BLE001 - onnx raises ValueError/TypeError/KeyError on damaged tensors
        raise bad(f"cannot be decoded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


class _GraphTensors:
    """Initializers and Constant-node outputs of a graph, with who consumes them."""

    def __init__(self, graph, where: str = "", release: bool = False,
                 arrays: Optional[Dict[str, np.ndarray]] = None):
        """``release``: drop each initializer's bytes from the graph once decoded (one copy of the weights in
        memory, not two; the graph's initializers are then empty). ``arrays``: initializers already read from
        external data (by name)."""
        self.values: Dict[str, np.ndarray] = {}
        self.from_initializer: Dict[str, bool] = {}
        arrays = arrays or {}
        for init in graph.initializer:
            self.values[init.name] = arrays[init.name] if init.name in arrays else _tensor(init, where)
            if release:
                for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                    init.ClearField(f)
            self.from_initializer[init.name] = True
        self.nodes = [n for n in graph.node if n.op_type != "Constant"]
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.values[n.output[0]] = _tensor(n.attribute[0].t, where)
                self.from_initializer[n.output[0]] = False
        self.consumers: Dict[str, List[Tuple[object, int]]] = defaultdict(list)
        for n in self.nodes:
            for i, name in enumerate(n.input):
                if name in self.values:
                    self.consumers[name].append((n, i))

    def input_value(self, node, index: int) -> Optional[np.ndarray]:
        if index < len(node.input):
            return self.values.get(node.input[index])
        return None

    def is_weight(self, name: str) -> bool:
        """Initializers are weights; float Constants with more than a few values may be weights too."""
        v = self.values[name]
        if self.from_initializer[name]:
            return True
        return v.dtype.kind == "f" and v.size > 8


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


class _Placer:
    """Collects ``param name -> tensor`` and remembers which graph tensors were placed."""

    def __init__(self, tensors: _GraphTensors):
        self.t = tensors
        self.params: Dict[str, torch.Tensor] = {}
        self.used: set = set()
        self.conflicts: List[str] = []

    def place(self, param: str, source: str, transpose: bool = False) -> None:
        arr = self.t.values[source]
        if transpose:
            arr = arr.T
        ten = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if param in self.params and not torch.equal(self.params[param], ten):
            self.conflicts.append(f"{param} (from {source})")
        self.params[param] = ten
        self.used.add(source)


def _weight_input(t: _GraphTensors, node) -> Optional[str]:
    """The single weight-like input of a MatMul/Add/Mul node (the other input is activations)."""
    names = [x for x in node.input if x in t.values and t.values[x].dtype.kind == "f"]
    return names[0] if len(names) == 1 else None


def _front_convs(t: _GraphTensors, pl: _Placer, where: str) -> Tuple[list, List[int]]:
    """The two front-end convolutions (kernel 3, one group, in graph order) and their strides; FSMN
    convolutions are placed by name on the way."""
    front_convs = []
    for n in t.nodes:
        if n.op_type != "Conv":
            continue
        w = t.input_value(n, 1)
        m = _BLOCK_FSMN.match(n.name)
        if m:
            pl.place(f"encoder.blocks.{m.group(1)}.attn.fsmn_block.weight", n.input[1])
        elif w is not None and w.ndim == 3 and w.shape[2] == 3 and int(_attr(n, "group", 1)) == 1:
            front_convs.append(n)
    if len(front_convs) != 2:
        raise OnnxImportError(f"{where}: not an S3 tokenizer graph: expected 2 front-end Conv nodes "
                              f"(kernel 3), found {len(front_convs)}")
    strides = []
    for name, n in zip(("conv1", "conv2"), front_convs):
        pl.place(f"encoder.{name}.weight", n.input[1])
        if len(n.input) > 2 and n.input[2] in t.values:
            pl.place(f"encoder.{name}.bias", n.input[2])
        strides.append(int((_attr(n, "strides", [1]) or [1])[0]))

    return front_convs, strides


def _blocks(t: _GraphTensors, pl: _Placer, where: str) -> Tuple[int, set, set]:
    """The transformer blocks' weights, by the names of the nodes that consume them: ``(depth, LayerNorm
    forms seen, LayerNorm epsilons seen)``."""
    depth = 0
    layernorm_forms = set()
    ln_eps_values = set()
    for n in t.nodes:
        m = _BLOCK_ANY.match(n.name)
        if m:
            digits = m.group(1)
            if len(digits) > 6 or int(digits) >= LIMITS["depth"]:
                raise OnnxImportError(f"{where}: node {n.name[:80]!r} names block {digits[:20]}"
                                      f"{'...' if len(digits) > 20 else ''}; s3tok accepts at most "
                                      f"{LIMITS['depth']} blocks (a damaged or crafted model)")
            depth = max(depth, int(digits) + 1)
        m = _BLOCK_LINEAR.match(n.name)
        if m:
            i, sub, op = m.groups()
            sub = sub.replace("mlp/mlp.", "mlp.").replace("/", ".")
            src = _weight_input(t, n)
            if src is None:
                continue
            if op == "MatMul":
                pl.place(f"encoder.blocks.{i}.{sub}.weight", src, transpose=True)
            else:
                pl.place(f"encoder.blocks.{i}.{sub}.bias", src)
            continue
        m = _BLOCK_LN.match(n.name)
        if m:
            i, ln, op = m.groups()
            if op == "LayerNormalization":
                layernorm_forms.add("fused")
                pl.place(f"encoder.blocks.{i}.{ln}.weight", n.input[1])
                if len(n.input) > 2 and n.input[2] in t.values:
                    pl.place(f"encoder.blocks.{i}.{ln}.bias", n.input[2])
                ln_eps_values.add(float(_attr(n, "epsilon", 1e-5)))
            else:
                layernorm_forms.add("decomposed")
                src = _weight_input(t, n)
                if src is not None:
                    pl.place(f"encoder.blocks.{i}.{ln}.{'weight' if op == 'Mul' else 'bias'}", src)
            continue
        if re.match(r"^/blocks\.\d+/(attn_ln|mlp_ln)/Add$", n.name):
            eps = [t.values[x] for x in n.input if x in t.values]
            if eps and eps[0].size == 1:
                ln_eps_values.add(float(eps[0].reshape(())))
    return depth, layernorm_forms, ln_eps_values


def _positional_table(t: _GraphTensors, pl: _Placer, width: int) -> Tuple[str, int]:
    """v1's learned positions: a ``[P, width]`` initializer that is sliced. ``("table", P)`` or
    ``("rotary", 1500)`` when there is none."""
    positional, max_positions = "rotary", 1500
    for name, arr in t.values.items():
        if arr.ndim == 2 and arr.shape[1] == width and any(c.op_type == "Slice" for c, _ in t.consumers[name]) \
                and t.from_initializer[name]:
            pl.place("encoder.positional_embedding", name)
            positional = "table"
            max_positions = int(arr.shape[0])
    return positional, max_positions


def _quantizer(t: _GraphTensors, pl: _Placer, where: str) -> Tuple[str, int]:
    """The VQ codebook ``[D, K]`` (consumed by ``.../_codebook/Pow_1``) or the FSQ projection under
    ``/quantizer/``: ``(kind, codebook size)``."""
    quantizer = None
    codebook_size = 0
    for n in t.nodes:
        if not n.name.startswith("/quantizer/"):
            continue
        if n.name.endswith("_codebook/Pow_1") and n.input[0] in t.values:
            pl.place("quantizer.codebook", n.input[0])
            codebook_size = int(t.values[n.input[0]].shape[1])
            quantizer = "vq"
        elif n.op_type == "MatMul":
            src = _weight_input(t, n)
            if src is None:
                continue
            if t.values[src].shape[-1] == 8 and t.values[src].ndim == 2:
                pl.place("quantizer.project_down.weight", src, transpose=True)
                quantizer = "fsq"
            else:
                pl.used.add(src)  # the VQ distance MatMul reads the codebook a second time
        elif n.op_type == "Add":
            src = _weight_input(t, n)
            if src is not None and t.values[src].shape == (8,):
                pl.place("quantizer.project_down.bias", src)
    if quantizer is None:
        raise OnnxImportError(f"{where}: not an S3 tokenizer graph: no VQ codebook or FSQ projection "
                              "under '/quantizer/'")
    return quantizer, codebook_size


def _check_rotary_tables(t: _GraphTensors, pl: _Placer, where: str, notes: List[str]) -> bool:
    """v2/v3's stored rotary tables, checked against s3tok's own (theta 1e4) rather than trusted."""
    rotary_tables = [name for name, arr in t.values.items()
                     if not t.from_initializer[name] and arr.ndim == 2 and arr.dtype.kind == "f"
                     and any(c.op_type == "Slice" for c, _ in t.consumers[name])]
    if rotary_tables:
        half = t.values[rotary_tables[0]].shape[1]
        cos, sin = rotary_table(t.values[rotary_tables[0]].shape[0], 2 * half, 10000.0)
        for name in rotary_tables:
            arr = torch.from_numpy(t.values[name].astype(np.float32))
            if not (torch.allclose(arr, cos[:, :half], atol=1e-5) or torch.allclose(arr, sin[:, :half], atol=1e-5)):
                raise OnnxImportError(f"{where}: rotary table {name} does not match theta=10000, dim={2 * half}")
            pl.used.add(name)
        notes.append(f"rotary tables checked ({len(rotary_tables)} x {list(t.values[rotary_tables[0]].shape)})")
    return bool(rotary_tables)


def read_onnx(path: PathLike) -> ImportedModel:
    """Identify and read an official-layout S3 tokenizer ONNX file: the graph is loaded (external data
    checked), its weights placed step by step, the version identified from its structure, and everything
    checked against the model before anything is built."""
    model, arrays = _load_graph(path)
    t = _GraphTensors(model.graph, str(path), release=True, arrays=arrays)
    del arrays
    pl = _Placer(t)
    notes: List[str] = []
    where = str(path)
    front_convs, strides = _front_convs(t, pl, where)
    depth, layernorm_forms, ln_eps_values = _blocks(t, pl, where)
    if depth == 0:
        raise OnnxImportError(f"{where}: not an S3 tokenizer graph: no '/blocks.N/' nodes found")
    width = int(t.values[front_convs[0].input[1]].shape[0])
    positional, max_positions = _positional_table(t, pl, width)
    quantizer, codebook_size = _quantizer(t, pl, where)
    if _check_rotary_tables(t, pl, where, notes):
        positional = "rotary"

    # --- everything weight-like must have been placed.
    leftover = sorted(n for n in t.values if t.is_weight(n) and n not in pl.used
                      and (t.from_initializer[n] or t.values[n].size >= width))
    heads = _infer_heads(t, width)
    fsmn = any(k.endswith("fsmn_block.weight") for k in pl.params)
    fused = layernorm_forms == {"fused"}
    version = identify(quantizer, strides[0], "fused" if fused else "decomposed")
    if version is None:
        raise OnnxImportError(f"{where}: no official tokenizer has a {quantizer} quantizer with conv1 stride "
                              f"{strides[0]}")
    eps = 1e-5
    if ln_eps_values:
        eps = float(np.float32(min(ln_eps_values)))
        eps = 1e-5 if abs(eps - 1e-5) < 1e-9 else (1e-6 if abs(eps - 1e-6) < 1e-10 else eps)
    n_mels = int(t.values[front_convs[0].input[1]].shape[1])
    try:
        config = S3Config(
            version=version, width=width, heads=heads, depth=depth, n_mels=n_mels,
            conv1_stride=strides[0], conv2_stride=strides[1], positional=positional,
            max_positions=max_positions if positional == "table" else 1500,
            fsmn=fsmn, quantizer=quantizer,
            codebook_size=codebook_size if quantizer == "vq" else 3 ** 8,
            ln_eps=eps, layernorm="fused" if fused else "decomposed",
            fsmn_kernel=int(pl.params[next(k for k in pl.params if k.endswith("fsmn_block.weight"))].shape[-1])
            if fsmn else 31,
        )
    except ValueError as e:
        raise OnnxImportError(f"{where}: inconsistent S3 tokenizer graph: {e}") from None

    from s3tok.model.tokenizer import weight_problems

    problems = []
    if leftover:
        problems.append(f"tensors left over (not placed): {', '.join(leftover)}")
    problems += weight_problems(config, pl.params)
    if pl.conflicts:
        problems.append(f"parameters given twice with different values: {', '.join(pl.conflicts)}")
    if problems:
        raise OnnxImportError(f"{where}: cannot map this ONNX file onto {version} "
                              f"(width {width}, depth {depth}): " + " | ".join(problems))
    logger.info("%s: identified %s (width %d, heads %d, depth %d, conv1 stride %d, %s LayerNorm, %d tensors)",
                where, version, width, heads, depth, strides[0], config.layernorm, len(pl.params))
    props = {p.key: p.value for p in model.metadata_props}
    random_init = props.get("s3tok_random_init") == "1"
    if random_init:
        logger.warning("%s: random-weight model made by s3tok %s: tokens are meaningless", where,
                       props.get("s3tok_version", "(unknown version)"))
    return ImportedModel(config, pl.params, where, notes, random_init=random_init)


def _infer_heads(t: _GraphTensors, width: int) -> int:
    """Heads from the attention's Reshape target ``[0, 0, H, Dh]``; else ``width // 64``."""
    for n in t.nodes:
        if n.op_type == "Reshape" and n.name.startswith("/blocks.0/attn/") and len(n.input) > 1:
            shape = t.values.get(n.input[1])
            if shape is not None and shape.size == 4 and int(shape[2]) * int(shape[3]) == width:
                return int(shape[2])
    return max(1, width // 64)
