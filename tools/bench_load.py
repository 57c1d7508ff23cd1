#!/usr/bin/env python3
"""Time ``s3tok.load_model`` on one ONNX file: parsing the ONNX graph vs reading the converted-weights cache.

Both in one run, on a fresh cache folder (``$S3TOK_HOME`` is set to a temporary directory). Loads repeated in
one process hide what only the first load of a process pays (lazy imports, first-use set-up), so the cache
is also timed as a job pays it: the first load in a new process (imports of torch and s3tok not counted).

  s3tok export-onnx --random-init --version speech_tokenizer_v2_25hz /tmp/v2.onnx   # official size
  python tools/bench_load.py /tmp/v2.onnx --repeat 3
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", help="official-layout .onnx file")
    p.add_argument("--repeat", type=int, default=3)
    return p


def timed(fn, repeat: int) -> List[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


CHILD = """
import sys, time
import s3tok, s3tok.api
t0 = time.perf_counter()
s3tok.load_model(sys.argv[1])
print(time.perf_counter() - t0)
"""


def load_in_new_process(onnx: str) -> float:
    """Seconds of the first ``load_model`` in a fresh interpreter (same ``$S3TOK_HOME``), running the same
    s3tok as this process: its folder first on the path, and a working folder that holds no other copy."""
    import s3tok

    root = os.path.dirname(os.path.dirname(os.path.abspath(s3tok.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(onnx)], check=True, capture_output=True,
                         text=True, env=env, cwd=os.environ["S3TOK_HOME"]).stdout
    return float(out.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ["S3TOK_HOME"] = tempfile.mkdtemp(prefix="s3tok-bench-load-")
    import s3tok

    size = os.path.getsize(args.onnx) / 1e6
    t0 = time.perf_counter()
    s3tok.load_model(args.onnx)  # first load: hash + parse + convert + write the cache
    first = time.perf_counter() - t0
    onnx_times = timed(lambda: s3tok.load_model(args.onnx, cache=False), args.repeat)
    cached_times = timed(lambda: s3tok.load_model(args.onnx), args.repeat)
    fresh_times = [load_in_new_process(args.onnx) for _ in range(args.repeat)]
    rows = [("ONNX parse (cache=False)", onnx_times), ("converted-weights cache", cached_times),
            ("converted-weights cache, first load of a new process", fresh_times)]
    lines = [f"{args.onnx}: {size:.1f} MB; first load (hash, parse, convert, write cache) {first:.2f} s",
             "| load path | median s | min s | runs |", "|---|---|---|---|"]
    for name, ts in rows:
        lines.append(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {len(ts)} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
