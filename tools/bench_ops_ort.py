#!/usr/bin/env python3
"""Op by op against onnxruntime: one group of items as s3tok runs it (one padded forward pass) and as
CosyVoice's way runs it (onnxruntime, batch 1, each item alone), on the same CPU threads.

Both are profiled (``torch.profiler``; onnxruntime's own node profile) over ``--reps`` interleaved repetitions,
with a pause before each so that onnxruntime's spinning threads do not run into s3tok's pass. Times are sorted
into the products of a transformer block (query/key/value/out, the MLP's two), attention, convolutions, the
quantizer and the rest; each class keeps its least time over the repetitions. Tells which product or kernel a
gap between the two engines comes from (tools/bench.py measures the gap itself, end to end).

  python tools/bench_ops_ort.py --model /tmp/v1.onnx --lengths 1470,1446,1156 --threads 2
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch

from bench import run_info  # tools/, beside this file
from bench_ops import op_group

logger = logging.getLogger("bench_ops_ort")

CLASSES = ("query/key/value/out", "mlp up (D -> 4D)", "mlp down (4D -> D)", "attention", "convolutions",
           "quantizer", "other")
PRODUCT_OPS = ("MatMul", "FusedMatMul", "Gemm", "MatMulScaleFusion")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an official-layout .onnx file")
    p.add_argument("--lengths", default="1470,1446,1156",
                   help="mel frames of the group's items, comma separated (at most 3000 each)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions; each class keeps its least time")
    p.add_argument("--pause", type=float, default=0.3, help="seconds of rest before each engine's pass")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def ort_class(node: str, op: str) -> str:
    """The class of an onnxruntime node, from its name (``/blocks.3/mlp/mlp.0/MatMul``) and op type."""
    product = op in PRODUCT_OPS
    if "/quantizer/" in node or node.startswith("quantizer"):
        return "quantizer"
    if product and re.search(r"/mlp/mlp\.0/", node):
        return "mlp up (D -> 4D)"
    if product and re.search(r"/mlp/mlp\.2/", node):
        return "mlp down (4D -> D)"
    if product and re.search(r"/attn/(query|key|value|out)/", node):
        return "query/key/value/out"
    if op == "Conv":
        return "convolutions"
    if (product or op == "Softmax") and "/attn/" in node:
        return "attention"
    return "other"


def torch_class(name: str, shapes: Sequence[Sequence[int]], width: int) -> str:
    """The class of a profiler event of s3tok's forward: its :func:`bench_ops.op_group`, the products told
    apart by their weight's shape."""
    group = op_group(name)
    if group != "linear":
        return {"attention": "attention", "conv": "convolutions"}.get(group, "other")
    n = name.lower()
    # the weight as [out, in]: linear(x, weight, bias), oneDNN's fused addition (x, other, weight, bias),
    # addmm(bias, x, weight^T), mm(x, weight^T)
    at, transposed = {"aten::addmm": (2, True), "aten::mm": (1, True)}.get(n, (1, False))
    if "linear" in n and len(shapes) > 2 and len(shapes[2]) == 2:
        at = 2
    weight = list(shapes[at]) if len(shapes) > at else []
    weight = weight[::-1] if transposed else weight
    if weight == [4 * width, width]:
        return "mlp up (D -> 4D)"
    if weight == [width, 4 * width]:
        return "mlp down (4D -> D)"
    if weight == [width, width]:
        return "query/key/value/out"
    return "quantizer"  # v1's codebook distances, v2/v3's projection to 8 values


def _least(runs: List[Dict[str, float]]) -> Dict[str, float]:
    return {c: min(r.get(c, 0.0) for r in runs) for c in CLASSES}


def compare(path: str, lengths: Sequence[int], threads: int, reps: int, pause: float) -> Dict[str, object]:
    """Profile both engines on ``lengths``; milliseconds per class (least over ``reps``) and pass walls."""
    import numpy as np
    import onnxruntime as ort

    import s3tok

    s3tok.keep_freed_memory()  # as s3tok tokenize does on CPU
    torch.set_num_threads(threads)
    model = s3tok.load_model(path)
    width = model.config.width
    gen = torch.Generator().manual_seed(0)
    mels = [torch.randn(model.config.n_mels, n, generator=gen) for n in lengths]
    batch = torch.zeros(len(mels), model.config.n_mels, max(lengths))
    for i, m in enumerate(mels):
        batch[i, :, :m.shape[-1]] = m
    lens = torch.tensor(list(lengths))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feeds = [{"feats": m[None].numpy(), "feats_length": np.array([m.shape[-1]], np.int32)} for m in mels]

        def ort_pass() -> None:
            for feed in feeds:
                sess.run(None, feed)

        ort_pass()
        model.forward_segments(batch, lens)  # warm-up: weight reorders, kernel choice
        walls: Dict[str, List[float]] = {"onnxruntime": [], "s3tok": []}
        ours: List[Dict[str, float]] = []
        for _ in range(reps):
            time.sleep(pause)
            t0 = time.perf_counter()
            ort_pass()
            walls["onnxruntime"].append(time.perf_counter() - t0)
            time.sleep(pause)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
                t0 = time.perf_counter()
                model.forward_segments(batch, lens)
                walls["s3tok"].append(time.perf_counter() - t0)
            ms: Dict[str, float] = collections.Counter()
            for e in prof.key_averages(group_by_input_shape=True):
                ms[torch_class(e.key, e.input_shapes or [], width)] += e.self_cpu_time_total / 1e3
            ours.append(ms)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-reps * len(feeds):]
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    theirs = []
    for r in range(reps):
        ms = collections.Counter()
        for run in runs[r * len(feeds):(r + 1) * len(feeds)]:
            t0, t1 = run["ts"], run["ts"] + run["dur"]
            for e in nodes:
                if t0 <= e["ts"] <= t1:
                    ms[ort_class(e["name"][:-len("_kernel_time")], e["args"].get("op_name", ""))] += e["dur"] / 1e3
        theirs.append(ms)
    return {"model": path, "version": model.config.version, "lengths": list(lengths),
            "onnxruntime_ms": _least(theirs), "s3tok_ms": _least(ours),
            "walls_s": walls}


def table(result: Dict[str, object]) -> List[str]:
    ort_ms, our_ms = result["onnxruntime_ms"], result["s3tok_ms"]
    lines = ["| class | onnxruntime batch 1, ms | s3tok one pass, ms | s3tok / onnxruntime |", "|---|---|---|---|"]
    for c in CLASSES:
        ratio = f"{our_ms[c] / ort_ms[c]:.2f}" if ort_ms[c] > 0.5 else "-"
        lines.append(f"| {c} | {ort_ms[c]:.1f} | {our_ms[c]:.1f} | {ratio} |")
    a, b = sum(ort_ms.values()), sum(our_ms.values())
    walls = result["walls_s"]
    lines.append(f"| **sum** (pass walls: {1e3 * min(walls['onnxruntime']):.0f} / {1e3 * min(walls['s3tok']):.0f}) "
                 f"| {a:.1f} | {b:.1f} | {b / a:.2f} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    lengths = [int(v) for v in args.lengths.split(",") if v.strip()]
    if not lengths or min(lengths) < 1 or max(lengths) > 3000:
        raise SystemExit(f"--lengths {args.lengths!r}: give 1 to 3000 mel frames per item")
    result = compare(args.model, lengths, args.threads, args.reps, args.pause)
    info = run_info("bench_ops_ort.py", argv, threads=args.threads, reps=args.reps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "result": result}, f, indent=1)
    head = (f"Measured {info['date']} with s3tok {info['source']} on {info['machine']}, {args.threads} threads; "
            f"{result['version']}, items of {', '.join(map(str, lengths))} mel frames; least of {args.reps} "
            "interleaved repetitions per class")
    sys.stdout.write("\n".join([head, "", *table(result)]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
