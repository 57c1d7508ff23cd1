#!/usr/bin/env python3
"""Benchmark harness: s3tok against the official way (onnxruntime, batch 1) on the same clips, one run.

Every row is end to end (decode + log-mel + model) over a wav.scp or folder, in its own process (no shared
thread pools), best of ``--runs`` passes:

  onnxruntime fp32, batch 1, 1 and ``--threads`` intra-op threads   (CosyVoice's extract_speech_token.py)
  s3tok fp32, bf16 and bf16-mixed with the batching policy of ``s3tok tokenize``
  the public ``s3tokenizer`` package at batch 1 and 32, when it is importable

Reports audio seconds per second (RTF), tokens/s, peak memory (max RSS of the engine's process while it
tokenizes, after loading and a warm-up clip), useful model GFLOP/s against this machine's fp32 matmul peak
measured in the same run, the mel frames the model computed over those it needed (padding overhead; long
files are counted window by window), the share of time the model sat idle waiting for input, and each row's
miss rate against onnxruntime batch 1. Writes ``--json`` and prints a markdown table.

  s3tok export-onnx --random-init --version speech_tokenizer_v2_25hz /tmp/v2.onnx   # official size
  python tools/bench.py --model /tmp/v2.onnx --wav_dir ../shared/reference/audio --threads 2 --json bench.json
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()  # as near the process start as this script gets: imports count as start-up

import argparse  # noqa: E402
import datetime
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import torch

from bench_report import peak_text, rounds_note, table, time_table  # tools/, beside this file

logger = logging.getLogger("bench")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav_scp")
    src.add_argument("--wav_dir")
    p.add_argument("--model", required=True, help="official-layout .onnx file")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (onnxruntime also runs at 1)")
    p.add_argument("--batch_size", type=int, default=None, help="s3tok tokenize --batch_size (default: as tokenize)")
    p.add_argument("--device", default="cpu", help="where the s3tok rows run: cpu, cuda, cuda:1 (onnxruntime and "
                                                   "s3tokenizer rows always run on the CPU)")
    p.add_argument("--num_workers", type=int, default=None,
                   help="s3tok tokenize --num_workers (decoding threads; default: as tokenize)")
    p.add_argument("--max_frames_per_batch", type=int, default=None, help="default: as s3tok tokenize")
    p.add_argument("--runs", type=int, default=3, help="timed passes per engine and round; the best is reported")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every engine this many times, interleaved (A B C, C B A, ...), so that a machine "
                        "whose speed drifts affects all engines alike; the best pass over all rounds is reported")
    p.add_argument("--limit", type=int, default=0, help="only the first N clips (0: all)")
    p.add_argument("--engines", default="", help="comma-separated subset of: " + ", ".join(ENGINES))
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--engine", default=None, help=argparse.SUPPRESS)  # internal: run one engine
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p


LABELS = {"ort-1": "onnxruntime fp32 batch 1, 1 thread", "ort-N": "onnxruntime fp32 batch 1, {threads} threads",
          "s3tok-fp32": "s3tok fp32 (tokenize batching)", "s3tok-bf16": "s3tok bf16 (tokenize batching)",
          "s3tok-bf16-mixed": "s3tok bf16-mixed (tokenize batching)",
          "s3tok-fp32-cpumel": "s3tok fp32, CPU log-mel into the model on --device",
          "s3tokenizer-1": "s3tokenizer 0.x batch 1", "s3tokenizer-32": "s3tokenizer 0.x batch 32"}

ENGINES = ["ort-1", "ort-N", "s3tok-fp32", "s3tok-fp32-cpumel", "s3tok-bf16", "s3tok-bf16-mixed", "s3tokenizer-1",
           "s3tokenizer-32"]


def _entries(args):
    from s3tok.data import read_wav_scp, scan_audio_dir

    entries = read_wav_scp(args.wav_scp) if args.wav_scp else scan_audio_dir(args.wav_dir)
    return entries[: args.limit] if args.limit else entries


def _ort_engine(args, threads):
    from s3tok.checks.parity import onnx_tokens, ort_session
    from s3tok.stages.features import featurize
    from s3tok.modelfiles.onnx_import import read_onnx

    t0 = time.perf_counter()
    config = read_onnx(args.model).config  # the bench's need (the window rule), not a cost of CosyVoice's way
    bench_only = time.perf_counter() - t0
    sess = ort_session(args.model, threads)

    def run(entries):
        tokens = {e.key: onnx_tokens(sess, featurize(e).mel, config) for e in entries}
        return tokens, {"padding_overhead": 1.0}  # batch 1: every window alone
    return run, bench_only


def _s3tok_engine(args, dtype, cpu_mel=False):
    """s3tok's tokenize loop; ``cpu_mel``: log-mels computed on the CPU and carried to the model with each
    batch, which separates front-end from model differences on a GPU (beside the all-GPU row). Also says
    which CPU kernels the process chose for the linear layers (timed at its first forward pass)."""
    import s3tok
    from s3tok.model.linear import chosen_kernels
    from s3tok.model.tokenizer import FrameCount
    from s3tok.stages.pipeline import run_tokenize

    device = torch.device(args.device)
    if device.type == "cpu":
        s3tok.keep_freed_memory()  # as s3tok tokenize does
    model = s3tok.load_model(args.model, dtype=dtype, device=device)

    def run(entries):
        got: Dict[str, List[int]] = {}
        model.frame_count = FrameCount()
        stats = run_tokenize(model, entries, lambda k, t: got.__setitem__(k, t), lambda k, r: None,
                             batch_size=args.batch_size, max_frames_per_batch=args.max_frames_per_batch,
                             num_workers=args.num_workers, device=device, progress=False,
                             **({"batch_mel": True, "cpu_mel": True} if cpu_mel else {}))
        return got, {"padding_overhead": model.frame_count.overhead,
                     "input_wait_share": stats.input_wait_seconds / max(stats.wall_seconds, 1e-9),
                     "parts": {**stats.parts, "waiting for input": stats.input_wait_seconds},
                     "linear_kernels": chosen_kernels()}
    return run, 0.0


def _s3tokenizer_engine(args, batch):
    """The public package, loaded through its own converter from the same ONNX file."""
    import s3tokenizer  # noqa: F401 - optional; ImportError means the row is skipped
    from s3tok.stages.features import featurize

    model = s3tokenizer.load_model(args.model)

    def run(entries):
        out = {}
        frames = [0, 0]  # mel frames given to the model: the items' own, and with padding
        for i in range(0, len(entries), batch):
            chunk = entries[i:i + batch]
            mels = [featurize(e).mel for e in chunk]
            x, lens = s3tokenizer.padding(mels)
            frames[0] += int(lens.sum())
            frames[1] += x.shape[0] * x.shape[-1]
            codes, clens = model.quantize(x, lens)
            for j, e in enumerate(chunk):
                out[e.key] = codes[j, :clens[j]].tolist()
        return out, {"padding_overhead": frames[1] / max(1, frames[0])}
    return run, 0.0


def run_engine(args) -> Dict[str, object]:
    """One engine in this process: warm-up, ``--runs`` timed passes, tokens and peak memory. ``process_s``
    is what a process that tokenizes the set once pays: start-up, the one-clip warm-up and the first pass
    (first-pass costs included, one clip twice), the bench's own reading of the model's configuration not."""
    torch.set_num_threads(args.threads)
    entries = _entries(args)
    name = args.engine
    if name in ("ort-1", "ort-N"):
        run, bench_only = _ort_engine(args, 1 if name == "ort-1" else args.threads)
    elif name.startswith("s3tok-"):
        run, bench_only = _s3tok_engine(args, {"s3tok-fp32": "float32", "s3tok-fp32-cpumel": "float32",
                                               "s3tok-bf16": "bfloat16", "s3tok-bf16-mixed": "bfloat16-mixed"}[name],
                                        cpu_mel=name.endswith("-cpumel"))
    else:
        run, bench_only = _s3tokenizer_engine(args, int(name.split("-")[1]))
    startup = time.perf_counter() - STARTED - bench_only  # imports and model load, as a process pays them
    t0 = time.perf_counter()
    run(entries[:1])  # warm-up on one clip
    warmup = time.perf_counter() - t0
    reset_peak_rss()
    gpu = GpuMonitor(torch.device(args.device)) if name.startswith("s3tok-") else None
    walls, passes, util = [], [], []
    for _ in range(args.runs):
        if gpu:
            gpu.start()
        t0 = time.perf_counter()
        passes.append(run(entries))  # (tokens, what the engine measured in this pass)
        walls.append(time.perf_counter() - t0)
        util.append(gpu.stop() if gpu else None)
    best = walls.index(min(walls))
    tokens, measured = passes[best]
    return {"wall": walls[best], "walls": walls, "tokens": tokens, "peak_rss_mb": peak_rss_mb(), "startup_s": startup,
            "process_s": startup + warmup + walls[0],
            "input_wait_share": None, "gpu_util_pct": util[best],
            "gpu_peak_mb": gpu.peak_mb() if gpu else None, **measured}


class GpuMonitor:
    """Samples the GPU's utilisation (NVML, the share of time a kernel was running, as nvidia-smi shows it)
    every 50 ms during a pass, and reads torch's peak GPU memory. Does nothing on a CPU device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.handle = None
        self.samples: List[int] = []
        self._stop = None
        if device.type != "cuda":
            return
        torch.cuda.reset_peak_memory_stats(device)
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception as e:  # noqa: BLE001 - no NVML: the utilisation column stays empty
            logger.warning("GPU utilisation not sampled (%s)", e)

    def start(self) -> None:
        import threading

        self.samples = []
        if self.handle is None:
            return
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.05):
                self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> Optional[float]:
        """Mean utilisation (%) over the pass, or None without NVML or samples."""
        if self._stop is None:
            return None
        self._stop.set()
        self._thread.join()
        self._stop = None
        return sum(self.samples) / len(self.samples) if self.samples else None

    def peak_mb(self) -> Optional[float]:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2 ** 20


def machine_name() -> str:
    """CPU model, core count and the matmul extensions that matter here, e.g. ``Intel Xeon ... (2 CPUs, AVX-512
    BF16, AMX)``."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    ext = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"),
                                   ("amx_bf16", "AMX")) if flag in flags]
    limits = [f"{k}={os.environ[k]}" for k in ISA_LIMITS if os.environ.get(k)]
    held = f"; libraries held back by {' '.join(limits)}" if limits else ""
    hidden = os.environ.get("S3TOK_HIDDEN_CPU_FEATURES")  # set by tools/as_avx2.sh
    held += f"; {hidden} hidden from every library by tools/as_avx2.sh" if hidden else ""
    held += f"; torch kernels: {torch.backends.cpu.get_cpu_capability()}"
    return f"{model} ({', '.join([f'{os.cpu_count()} CPUs', *ext])}{held})"


# environment variables that keep oneDNN, ATen and MKL from instructions the CPU has (kernels only; caches and
# clocks stay this machine's; onnxruntime has no such knob: tools/as_avx2.sh holds back every library at once)
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def device_name(device: torch.device) -> str:
    """``cpu``, or the GPU's name, e.g. ``NVIDIA H200 (cuda:0)``."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"{torch.cuda.get_device_name(index)} (cuda:{index})"


def run_info(tool: str, argv: Optional[Sequence[str]], **fields) -> Dict[str, object]:
    """What a benchmark's JSON says of its run: date, machine, source, ``fields``, and the command line of
    ``tools/<tool>`` (``argv``, or this process's arguments when None)."""
    return {"date": datetime.date.today().isoformat(), "machine": machine_name(), "source": source_version(),
            **fields, "command": " ".join([f"python tools/{tool}", *(argv if argv is not None else sys.argv[1:])])}


def source_version() -> str:
    """The checkout's commit (``-dirty`` with uncommitted changes), or the package version outside git."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode == 0 and rev.stdout.strip():
            return rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from s3tok.version import __version__
    return __version__


def reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux >= 4.0), so that the peak covers tokenizing, not loading or converting."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited from the parent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_peak(threads: int) -> Dict[str, float]:
    """This machine's fp32 (and bf16) matmul peak in GFLOP/s with ``threads`` threads: the best of torch's
    GEMM, oneDNN's linear and onnxruntime's MatMul on a large square-ish product."""
    torch.set_num_threads(threads)
    m, k, n = 2048, 1280, 5120
    flops = 2.0 * m * k * n

    def best(fn, reps=5):
        fn()
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return flops / min(t) / 1e9

    a, w = torch.randn(m, k), torch.randn(n, k)
    out = {"torch_fp32": best(lambda: a @ w.T)}
    try:
        out["onednn_fp32"] = best(lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""))
    except (AttributeError, RuntimeError):
        pass
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(w.T.contiguous().numpy(), "w")])
        proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        proto.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = a.numpy()
        out["onnxruntime_fp32"] = best(lambda: sess.run(None, {"x": x}))
        del np, onnx
    except ImportError:
        pass
    ab, wb = a.bfloat16(), w.bfloat16()
    out["torch_bf16"] = best(lambda: ab @ wb.T)
    out["fp32_peak"] = max(v for key, v in out.items() if key.endswith("fp32"))
    return out


def measure_peaks(threads: int, device: torch.device) -> Dict[str, float]:
    """The CPU's matmul peaks, and the GPU's when ``device`` is one."""
    out = measure_peak(threads)
    if device.type == "cuda":
        out.update(measure_gpu_peak(device))
    return out


def measure_gpu_peak(device: torch.device) -> Dict[str, float]:
    """The GPU's matmul rate in GFLOP/s on an 8192^3 product: fp32 (TF32 off, as s3tok runs it) and bf16."""
    n = 8192
    out = {}
    for name, dtype in (("gpu_float32", torch.float32), ("gpu_bfloat16", torch.bfloat16)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        torch.cuda.synchronize(device)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        out[name] = 2.0 * n ** 3 / min(times) / 1e9
        del a, b
    torch.cuda.empty_cache()
    return out


def miss_rate(got: Dict[str, List[int]], ref: Dict[str, List[int]]) -> float:
    from s3tok.checks.parity import compare

    total = sum(len(v) for v in ref.values())
    bad = sum(compare(got.get(k, []), v, k, False).mismatches for k, v in ref.items())
    return bad / max(1, total)


def _engine_available(name: str) -> bool:
    if name.startswith("s3tokenizer") and subprocess.run(
            [sys.executable, "-c", "import s3tokenizer"], capture_output=True).returncode != 0:
        logger.info("%s: the s3tokenizer package is not importable here; row skipped", name)
        return False
    return True


def _run_engine_process(argv: Optional[Sequence[str]], name: str, out: str) -> Optional[Dict[str, object]]:
    """Run one engine in a fresh process (no thread pool or allocator state shared with another engine)."""
    cmd = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:]),
           "--engine", name, "--result", out]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        logger.error("%s failed (exit %d); its pass in this round is left out", name, proc.returncode)
        return None
    with open(out) as f:
        return json.load(f)


def merge_rounds(name: str, runs: List[Dict[str, object]]) -> Dict[str, object]:
    """One engine's rounds as one result: the best pass (its tokens and measurements), the highest memory."""
    best = min(runs, key=lambda r: float(r["wall"]))
    differ = [r["round"] for r in runs if r["tokens"] != runs[0]["tokens"]]
    if differ:
        logger.warning("%s: tokens of round(s) %s differ from round 0 (the engine is not deterministic)",
                       name, differ)
    process = [float(r["process_s"]) for r in runs if r.get("process_s")]
    return {**best, "walls": [w for r in runs for w in r["walls"]],
            "peak_rss_mb": max(float(r["peak_rss_mb"]) for r in runs),
            "process_s": min(process) if process else None}


def speed_by_round(by_round: Dict[str, List[Dict[str, object]]], name: str,
                   reference: Optional[str], key: str = "wall") -> Optional[List[float]]:
    """``name``'s speed over ``reference``'s (the inverse ratio of their ``key`` times: the best pass's
    wall, or ``process_s``) in each round both finished."""
    if reference is None or name == reference:
        return None
    ref = {r["round"]: float(r[key]) for r in by_round[reference] if r.get(key)}
    return [ref[r["round"]] / float(r[key]) for r in by_round[name] if r["round"] in ref and r.get(key)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    if args.engine:
        result = run_engine(args)
        with open(args.result, "w") as f:
            json.dump(result, f)
        return 0
    from s3tok.data.audio import mel_frames
    from s3tok.model.flops import utterance_flops
    from s3tok.modelfiles.onnx_import import read_onnx
    from s3tok.stages.features import load_waveform
    from s3tok.data.sources import Utterance

    config = read_onnx(args.model).config
    entries = _entries(args)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # decode once to count the frames
        counts = pool.map(lambda e: mel_frames(load_waveform(Utterance(e.key, recording=e)).numel()), entries)
        frames = dict(zip((e.key for e in entries), counts))
    seconds = sum(frames.values()) / 100.0
    model_flops = sum(utterance_flops(config, f) for f in frames.values())
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    default = [e for e in ENGINES if on_gpu or not e.endswith("-cpumel")]  # on a CPU it is the fp32 row again
    wanted = [e for e in (args.engines.split(",") if args.engines else default) if e]
    wanted = [e for e in wanted if _engine_available(e)]
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # the peak s3tok's fp32 rows can reach
    peaks: List[Dict[str, float]] = []
    by_round: Dict[str, List[Dict[str, object]]] = {name: [] for name in wanted}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(max(1, args.rounds)):
            peaks.append(measure_peaks(args.threads, device))
            for name in (wanted if rnd % 2 == 0 else wanted[::-1]):
                result = _run_engine_process(argv, name, os.path.join(tmp, f"{name}.{rnd}.json"))
                if result is not None:
                    by_round[name].append({"round": rnd, **result})
        peaks.append(measure_peaks(args.threads, device))
    peak = {key: max(p[key] for p in peaks) for key in peaks[0]}
    results = {name: merge_rounds(name, runs) for name, runs in by_round.items() if runs}
    ref_name = next((e for e in ("ort-1", "ort-N") if e in results), None)  # same tokens; ort-1 when both ran
    ref = results[ref_name]["tokens"] if ref_name else None
    ref_speed_name = next((e for e in ("ort-N", "ort-1") if e in results), None)  # the fastest official row
    rows = []
    for name, r in results.items():
        wall = float(r["wall"])
        ntok = sum(len(v) for v in r["tokens"].values())
        gflops = model_flops / wall / 1e9
        row_peak = peak["gpu_float32"] if on_gpu and name.startswith("s3tok-") else peak["fp32_peak"]
        rows.append({"engine": name, "wall_s": wall, "rtf": seconds / wall, "tokens_per_s": ntok / wall,
                     "peak_rss_mb": r["peak_rss_mb"], "padding_overhead": r["padding_overhead"],
                     "input_wait_share": r.get("input_wait_share"),
                     "gflops": gflops, "pct_of_peak": 100 * gflops / row_peak,
                     "gpu_util_pct": r.get("gpu_util_pct"), "gpu_peak_mb": r.get("gpu_peak_mb"),
                     "miss_rate": miss_rate(r["tokens"], ref) if ref else None,
                     "speed_vs_reference_by_round": speed_by_round(by_round, name, ref_speed_name),
                     "startup_s": r.get("startup_s"), "parts": r.get("parts"),
                     "process_rtf": seconds / float(r["process_s"]) if r.get("process_s") else None,
                     "speed_vs_reference_by_round_process": speed_by_round(by_round, name, ref_speed_name, "process_s"),
                     "linear_kernels": r.get("linear_kernels")})
    info = run_info("bench.py", argv, threads=args.threads, model=args.model, version=config.version,
                    width=config.width, depth=config.depth, clips=len(entries), reference=ref_name,
                    audio_seconds=seconds, gflop_per_audio_second=model_flops / seconds / 1e9, peak=peak,
                    peaks_fp32=[p["fp32_peak"] for p in peaks], rounds=max(1, args.rounds),
                    speed_reference=ref_speed_name, device=device_name(device))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    lines = [f"{config.version} (width {config.width}, {config.depth} blocks), {len(entries)} clips = {seconds:.1f} s, "
             f"{info['gflop_per_audio_second']:.2f} GFLOP per audio second; {args.threads} threads; "
             f"{peak_text(info)}", ""]
    lines += (table({"info": info, "rows": rows}, LABELS) + rounds_note({"info": info, "rows": rows}, LABELS)
              + time_table({"info": info, "rows": rows}, LABELS))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
