#!/usr/bin/env python3
"""Turn ``tools/bench.py --json`` results (one file per model) into the markdown of README's Speed section.

  python tools/bench_report.py bench/v1.json bench/v1_25hz.json bench/v2_25hz.json bench/v3_25hz.json
  python tools/bench_report.py --update docs/benchmarks.md --section four-models bench/*.json

Prints one summary table (audio seconds per second of every engine, one row per model version), then each
version's full table as ``tools/bench.py`` printed it, headed by the machine, date and command of the run.
"""
import argparse
import json
import logging
import statistics
import sys
from typing import Dict, List, Optional, Sequence

logger = logging.getLogger("bench_report")

LABELS = {"ort-1": "ORT bs1 1 thr", "ort-N": "ORT bs1 {threads} thr", "s3tok-fp32": "s3tok fp32",
          "s3tok-fp32-cpumel": "s3tok fp32 CPU mel",
          "s3tok-bf16": "s3tok bf16", "s3tok-bf16-mixed": "s3tok bf16-mixed", "s3tokenizer-1": "s3tokenizer bs1", "s3tokenizer-32": "s3tokenizer bs32"}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="JSON files written by tools/bench.py --json")
    p.add_argument("--out", default=None, help="write the markdown here (default: standard output)")
    p.add_argument("--update", default=None, metavar="MD",
                   help="replace the --section block of this markdown file (between its <!-- bench_report "
                        "NAME --> markers; appended at the end when absent)")
    p.add_argument("--section", default=None, help="the block's name (with --update)")
    return p


def _miss(row: Dict[str, object], reference: str = "ort-1") -> str:
    if row["engine"] == reference:
        return "reference"
    return "-" if row.get("miss_rate") is None else f"{100 * float(row['miss_rate']):.3f} %"


def _overhead(row: Dict[str, object]) -> str:
    return "-" if row.get("padding_overhead") is None else f"{float(row['padding_overhead']):.2f}"


def _wait(row: Dict[str, object]) -> str:
    return "-" if row.get("input_wait_share") is None else f"{100 * float(row['input_wait_share']):.1f} %"


def summary(runs: List[Dict[str, object]]) -> List[str]:
    """One line per model: RTF of each engine, s3tok's share of the fp32 peak and the miss rates."""
    engines = [e for e in LABELS if any(r["engine"] == e for run in runs for r in run["rows"])]
    threads = runs[0]["info"]["threads"]
    head = [LABELS[e].format(threads=threads) for e in engines]
    lows = ["s3tok-fp32", "s3tok-bf16"] + [e for e in ("s3tok-bf16-mixed",) if e in engines]
    miss_head = "s3tok " + " / ".join(LABELS[e].replace("s3tok ", "") for e in lows) + " miss"
    rounds = any(len(r.get("speed_vs_reference_by_round") or []) > 1 for run in runs for r in run["rows"]
                 if r["engine"] == "s3tok-fp32")
    ratio_head = " s3tok fp32 / ORT, median of rounds: best pass / one process |" if rounds else ""
    lines = ["| model | GFLOP per audio s | " + " | ".join(head) + f" | s3tok fp32 % of peak | {miss_head} |"
             + ratio_head, "|---|---|" + "---|" * len(engines) + "---|---|" + ("---|" if rounds else "")]
    for run in runs:
        info, rows = run["info"], {r["engine"]: r for r in run["rows"]}
        cells = [f"{rows[e]['rtf']:.1f}" if e in rows else "-" for e in engines]
        fp32 = rows.get("s3tok-fp32")
        pct = f"{fp32['pct_of_peak']:.0f} %" if fp32 else "-"
        miss = " / ".join(_miss(rows[e], info.get("reference", "ort-1")) if e in rows else "-" for e in lows)
        line = f"| {info['version']} | {info['gflop_per_audio_second']:.1f} | " + " | ".join(cells) + f" | {pct} | {miss} |"
        if rounds:
            line += " " + " / ".join(_median(fp32, k) for k in ("speed_vs_reference_by_round",
                                                                 "speed_vs_reference_by_round_process")) + " |"
        lines.append(line)
    return lines


def _median(row: Optional[Dict[str, object]], key: str) -> str:
    ratios = (row or {}).get(key) or []
    return f"{statistics.median(ratios):.2f}" if ratios else "-"


def table(run: Dict[str, object], labels: Dict[str, str] = LABELS) -> List[str]:
    """Every engine of one run, a row each (``labels`` may hold ``{threads}``); tools/bench.py prints this.
    Runs with s3tok on a GPU get two more columns: its utilisation and peak memory."""
    info = run["info"]
    reference = info.get("reference", "ort-1")
    gpu = any(r.get("gpu_peak_mb") is not None for r in run["rows"])
    head = ("| engine | audio s/s | audio s/s, one process | tokens/s | GFLOP/s | % of fp32 peak | peak RSS MB "
            "| computed / useful frames | model waits for input | miss rate vs ORT bs1 |")
    lines = [head + (" GPU util | peak GPU MB |" if gpu else ""), "|---|---|---|---|---|---|---|---|---|---|"
             + ("---|---|" if gpu else "")]
    for r in run["rows"]:
        label = labels.get(r["engine"], r["engine"]).format(threads=info["threads"])
        process = "-" if r.get("process_rtf") is None else f"{float(r['process_rtf']):.1f}"
        line = (f"| {label} | {r['rtf']:.1f} | {process} | {r['tokens_per_s']:.0f} | {r['gflops']:.0f} | "
                f"{r['pct_of_peak']:.0f} % | {r['peak_rss_mb']:.0f} | {_overhead(r)} | {_wait(r)} | "
                f"{_miss(r, reference)} |")
        if gpu:
            util, mem = r.get("gpu_util_pct"), r.get("gpu_peak_mb")
            line += f" {'-' if util is None else f'{util:.0f} %'} | {'-' if mem is None else f'{mem:.0f}'} |"
        lines.append(line)
    return lines


def peak_text(info: Dict[str, object]) -> str:
    """``fp32 matmul peak 298 GFLOP/s (bf16 1944)``, with the spread when it was measured more than once."""
    peak, peaks = info["peak"], info.get("peaks_fp32") or []
    spread = f"; best of {len(peaks)} measurements, lowest {min(peaks):.0f}" if len(peaks) > 1 else ""
    text = f"fp32 matmul peak {peak['fp32_peak']:.0f} GFLOP/s (bf16 {peak['torch_bf16']:.0f}{spread})"
    if "gpu_float32" in peak:
        text += (f"; {info.get('device', 'GPU')}: fp32 {peak['gpu_float32'] / 1000:.1f} TFLOP/s, bf16 "
                 f"{peak['gpu_bfloat16'] / 1000:.0f} TFLOP/s (% of fp32 peak of the s3tok rows: of the GPU's fp32)")
    return text


def rounds_note(run: Dict[str, object], labels: Dict[str, str] = LABELS) -> List[str]:
    """With ``--rounds`` > 1: each engine's speed over the fastest onnxruntime row, round by round."""
    info = run["info"]
    reference = info.get("speed_reference")
    if reference is None:  # no onnxruntime row: nothing to compare with
        return []
    ref_label = labels.get(reference, reference).format(threads=info["threads"])
    lines = []
    for key, what in (("speed_vs_reference_by_round", "best pass"),
                      ("speed_vs_reference_by_round_process", "one process: start-up, warm-up clip and first pass")):
        parts = []
        for r in run["rows"]:
            ratios = r.get(key) or []
            if len(ratios) > 1:
                label = labels.get(r["engine"], r["engine"]).format(threads=info["threads"])
                parts.append(f"{label} {', '.join(f'{x:.2f}' for x in ratios)} (median {_median(r, key)})")
        if parts:
            lines += ["", f"Speed over {ref_label} ({what}), round by round ({info['rounds']} interleaved rounds): "
                      + "; ".join(parts) + "."]
    return lines


PARTS = ("decode", "resample", "log-mel", "waiting for input", "batching", "model", "writing")


def time_table(run: Dict[str, object], labels: Dict[str, str] = LABELS) -> List[str]:
    """Where the s3tok rows' time goes, in seconds: start-up (imports and model load, once per process), the
    best pass's wall time, then its parts: decode, resample and log-mel in the decode threads (summed over
    them, overlapping the model), the main thread waiting for them, batching, the model (queueing batches and
    reading their tokens, padding included) and writing; "other" is the pass's wall time the main-thread parts
    do not cover."""
    rows = [r for r in run["rows"] if r.get("parts") or r.get("startup_s") is not None]
    if not any(r.get("parts") for r in rows):
        return []
    info = run["info"]
    lines = ["", "Where the time goes (seconds; decode, resample and log-mel run in the decode threads, beside "
             "the model):", "", "| engine | start-up | pass wall | " + " | ".join(PARTS) + " | other |",
             "|---|---|---|" + "---|" * len(PARTS) + "---|"]
    for r in rows:
        parts, wall = r.get("parts"), float(r["wall_s"])
        label = labels.get(r["engine"], r["engine"]).format(threads=info["threads"])
        start = "-" if r.get("startup_s") is None else f"{float(r['startup_s']):.2f}"
        if not parts:  # another engine: its start-up and pass only
            lines.append(f"| {label} | {start} | {wall:.2f} | " + " | ".join("-" for _ in PARTS) + " | - |")
            continue
        main = sum(float(parts.get(p, 0.0)) for p in ("waiting for input", "batching", "model", "writing"))
        lines.append(f"| {label} | {start} | {wall:.2f} | " + " | ".join(f"{float(parts.get(p, 0.0)):.2f}" for p in PARTS)
                     + f" | {max(0.0, wall - main):.2f} |")
    kernels = sorted({f"{k}: {v}" for r in rows for k, v in (r.get("linear_kernels") or {}).items()})
    if kernels:
        lines += ["", f"CPU linear kernels chosen by timing (s3tok.model.linear): {'; '.join(kernels)}."]
    return lines


def detail(run: Dict[str, object]) -> List[str]:
    """The full table of one model, headed by its size, clips and measured peak."""
    info = run["info"]
    return ([f"**{info['version']}** (width {info['width']}, {info['depth']} blocks): {info['clips']} clips = "
             f"{info['audio_seconds']:.1f} s; {peak_text(info)}", ""] + table(run) + rounds_note(run)
            + time_table(run))


def update_section(text: str, name: str, block: str) -> str:
    """``text`` with the block between ``<!-- bench_report NAME -->`` and ``<!-- /bench_report NAME -->``
    replaced by ``block`` (a new marked block at the end when there is none)."""
    begin, end = f"<!-- bench_report {name} -->", f"<!-- /bench_report {name} -->"
    marked = f"{begin}\n{block.rstrip()}\n{end}"
    if begin not in text:
        return text.rstrip("\n") + "\n\n" + marked + "\n"
    head, rest = text.split(begin, 1)
    if end not in rest:
        raise ValueError(f"{begin} has no closing {end}")
    return head + marked + rest.split(end, 1)[1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if bool(args.update) != bool(args.section):
        parser.error("--update and --section go together")
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    runs = []
    for path in args.results:
        with open(path) as f:
            run = json.load(f)
        if not isinstance(run, dict) or "info" not in run or "rows" not in run:
            logger.error("%s: not a tools/bench.py --json result", path)
            return 1
        runs.append(run)
    first = runs[0]["info"]
    source = f" with s3tok {first['source']}" if first.get("source") else ""
    where = "no GPU" if first.get("device", "cpu").startswith("cpu") else f"s3tok rows on {first['device']}"
    out = [f"Measured {first['date']}{source} on {first['machine']}, {first['threads']} threads, {where}; "
           f"{first['clips']} clips = {first['audio_seconds']:.1f} s of audio; audio seconds per second, "
           "end to end (decode + log-mel + model), best of the timed passes:", ""]
    out += summary(runs)
    for run in runs:
        out += ["", f"`{run['info']['command']}`", ""] + detail(run)
    text = "\n".join(out) + "\n"
    if args.update:
        from pathlib import Path
        from s3tok.util.fsutil import atomic_write_text

        md = Path(args.update)
        atomic_write_text(md, update_section(md.read_text(encoding="utf-8") if md.exists() else "", args.section,
                                             text))
        logger.info("%s: section %s updated", md, args.section)
    if args.out:
        from s3tok.util.fsutil import atomic_write_text

        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
