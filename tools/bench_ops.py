#!/usr/bin/env python3
"""Where the time of one forward pass goes, by kind of operation, against this machine's matmul peak.

For each model: full 30 s windows in one batch (``--windows``, as s3tok tokenize batches them on a CPU),
``--reps`` timed forward passes (the best is kept), then one pass under ``torch.profiler`` whose op times are
grouped into matrix products (``linear``: query/key/value/out, MLP, quantizer), ``attention`` (the SDPA
kernel), ``conv`` (input convolutions, FSMN) and ``other`` (LayerNorm, GELU outside products, rotary, masks,
copies). Each group gets its useful FLOPs, its share of the time and its rate in GFLOP/s and % of the matmul
peak of the products' dtype (fp32, or bf16 for ``--dtype bfloat16`` and ``bfloat16-mixed``) measured in the
same run (``tools/bench.py``'s measurement). Two ceilings close the table:

  forward    useful FLOPs / forward time: what the end-to-end rate of tools/bench.py cannot beat;
  attention  the best the forward could reach if every other product ran at the peak and nothing else
             took time, with attention at the rate measured here.

  python tools/bench_ops.py --model /tmp/v1.onnx /tmp/v2_25hz.onnx --threads 2 --json ops.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from bench import measure_peak, run_info  # tools/, beside this file

logger = logging.getLogger("bench_ops")

GROUPS = ("linear", "attention", "conv", "other")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, nargs="+", help="official-layout .onnx files")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--windows", type=int, default=2, help="30 s windows per forward pass")
    p.add_argument("--frames", type=int, default=3000, help="mel frames per window (3000 = 30 s)")
    p.add_argument("--dtype", default="float32", help="as s3tok tokenize --dtype")
    p.add_argument("--reps", type=int, default=3, help="timed forward passes; the best is kept")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def op_group(name: str) -> str:
    """The group of a profiler event name (``aten::addmm``, ``mkldnn::_linear_pointwise``, ...)."""
    n = name.lower()
    if "scaled_dot_product" in n or "attention" in n or n in ("aten::bmm", "aten::baddbmm", "aten::_softmax"):
        return "attention"
    if "linear" in n or n in ("aten::addmm", "aten::mm", "aten::matmul"):
        return "linear"
    if "conv" in n:
        return "conv"
    return "other"


def profile_model(path: str, args) -> Dict[str, object]:
    """Time and profile one model; rates per group."""
    import s3tok
    from s3tok.model.flops import window_flops_by_op

    s3tok.keep_freed_memory()  # as s3tok tokenize does on CPU
    model = s3tok.load_model(path, dtype=args.dtype)
    config = model.config
    mels = torch.randn(args.windows, config.n_mels, args.frames)
    lens = torch.full((args.windows,), args.frames)
    with torch.no_grad():
        model.quantize(mels, lens)  # warm-up: weight reorders, kernel choice
        walls = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            model.quantize(mels, lens)
            walls.append(time.perf_counter() - t0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model.quantize(mels, lens)
    self_us = {g: 0.0 for g in GROUPS}
    for event in prof.key_averages():
        self_us[op_group(event.key)] += event.self_cpu_time_total
    total_us = sum(self_us.values())
    flops = {g: args.windows * f for g, f in window_flops_by_op(config, args.frames).items()}
    flops["other"] = 0.0
    wall = min(walls)
    groups = {}
    for g in GROUPS:
        seconds = wall * self_us[g] / total_us  # the profiler's shares applied to the unprofiled wall time
        groups[g] = {"gflop": flops[g] / 1e9, "share": self_us[g] / total_us, "seconds": seconds,
                     "gflops": flops[g] / seconds / 1e9 if flops[g] and seconds > 0 else None}
    return {"model": path, "version": config.version, "depth": config.depth, "dtype": args.dtype,
            "wall_s": wall, "walls": walls, "total_gflop": sum(flops.values()) / 1e9, "groups": groups}


def ceilings(result: Dict[str, object], peak: float) -> Dict[str, float]:
    """Percent of ``peak``: the forward as measured, and the bound its attention rate sets."""
    g = result["groups"]
    total = result["total_gflop"] * 1e9
    out = {"forward": 100 * total / result["wall_s"] / 1e9 / peak}
    attn = g["attention"]
    if attn["gflops"]:
        rest = total - attn["gflop"] * 1e9
        out["attention"] = 100 * total / (rest + attn["gflop"] * 1e9 * peak / attn["gflops"])
    return out


def product_peak(peak: Dict[str, float], dtype: str) -> Tuple[str, float]:
    """The name and value of the matmul peak that applies to the products of ``dtype`` (a --dtype value)."""
    from s3tok.api import parse_precision

    if parse_precision(dtype)[0] == torch.bfloat16:
        return "bf16", peak["torch_bf16"]
    return "fp32", peak["fp32_peak"]


def table(results: List[Dict[str, object]], peak: float, name: str) -> List[str]:
    lines = [f"| model | op | GFLOP per pass | share of time | GFLOP/s | % of {name} peak |", "|---|---|---|---|---|---|"]
    for r in results:
        for g in GROUPS:
            x = r["groups"][g]
            rate = f"{x['gflops']:.0f}" if x["gflops"] else "-"
            pct = f"{100 * x['gflops'] / peak:.0f} %" if x["gflops"] else "-"
            lines.append(f"| {r['version']} | {g} | {x['gflop']:.1f} | {100 * x['share']:.1f} % | {rate} | {pct} |")
        c = r["ceilings"]
        bound = f"{c['attention']:.0f} %" if "attention" in c else "-"
        lines.append(f"| {r['version']} | **forward** | {r['total_gflop']:.1f} | 100 % ({r['wall_s']:.3f} s) | "
                     f"{r['total_gflop'] / r['wall_s']:.0f} | {c['forward']:.0f} % (attention bound {bound}) |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    torch.set_num_threads(args.threads)
    peak = measure_peak(args.threads)
    peak_name, ref_peak = product_peak(peak, args.dtype)
    results = []
    for path in args.model:
        r = profile_model(path, args)
        r["ceilings"] = ceilings(r, ref_peak)
        logger.info("%s: forward %.3f s, %.0f %% of the %s peak", r["version"], r["wall_s"],
                    r["ceilings"]["forward"], peak_name)
        results.append(r)
    info = run_info("bench_ops.py", argv, threads=args.threads, windows=args.windows, frames=args.frames,
                    dtype=args.dtype, peak=peak, peak_used=peak_name)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1)
    head = (f"Measured {info['date']} with s3tok {info['source']} on {info['machine']}, {args.threads} threads, "
            f"{args.dtype}, {args.windows} x {args.frames} mel frames per pass; fp32 matmul peak "
            f"{peak['fp32_peak']:.0f} GFLOP/s (bf16 {peak['torch_bf16']:.0f})")
    sys.stdout.write("\n".join([head, "", *table(results, ref_peak, peak_name)]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
