#!/usr/bin/env python3
"""Before and after: s3tok at an earlier commit against this checkout, each against onnxruntime, in one run.

Each round runs ``tools/bench.py --engines ort-N,s3tok-fp32 --runs 1`` once from each source tree (the order
alternates: before, after; after, before; ...), so every process measures its own s3tok / onnxruntime ratio
on the machine as it is at that moment; the medians of those ratios are compared. ``--base`` is a commit
(checked out into a temporary git worktree, removed afterwards) or a folder holding an s3tok source tree
(``s3tok/`` and ``tools/bench.py``, e.g. from ``git archive``; a ``SOURCE`` file there names it in the table).
``--prefix`` runs every process under a wrapper (``tools/as_avx2.sh``, ``taskset -c 0,1``).

  python tools/bench_ab.py --base 7e04c8d --model /tmp/v2.onnx --wav_dir /tmp/clips --rounds 3
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from bench import run_info  # tools/, beside this file

logger = logging.getLogger("bench_ab")

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("before", "after")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the earlier s3tok: a commit of this repository, or a source folder")
    p.add_argument("--model", required=True, help="an official-layout .onnx file")
    p.add_argument("--wav_dir", required=True, help="a folder of clips")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="processes per side, alternating")
    p.add_argument("--prefix", default="", help="a wrapper for every process, e.g. 'tools/as_avx2.sh'")
    p.add_argument("--json", default=None, help="write the results here")
    return p


@contextmanager
def source_tree(base: str) -> Iterator[Tuple[Path, str]]:
    """``base`` as a folder and what the table calls it: the folder itself (named by its ``SOURCE`` file, else
    its path), or a temporary worktree of that commit (named by its short hash; removed afterwards)."""
    if os.path.isdir(base):
        tree = Path(base).resolve()
        if not (tree / "s3tok").is_dir() or not (tree / "tools" / "bench.py").is_file():
            raise SystemExit(f"--base {base}: no s3tok/ and tools/bench.py in that folder")
        source = tree / "SOURCE"
        yield tree, source.read_text().strip() if source.is_file() else str(tree)
        return
    with tempfile.TemporaryDirectory(prefix="s3tok_ab_") as tmp:
        tree = Path(tmp) / "before"
        made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), base],
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise SystemExit(f"--base {base}: not a folder, and git cannot check it out: {made.stderr.strip()}")
        try:
            head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True)
            yield tree, head.stdout.strip() or base
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


def one_process(tree: Path, args: argparse.Namespace, out: Path) -> Dict[str, float]:
    """tools/bench.py of ``tree``, with that tree's s3tok first on the path; its engines' audio s/s and RSS."""
    cmd = [*shlex.split(args.prefix), sys.executable, str(tree / "tools" / "bench.py"), "--model", args.model,
           "--wav_dir", args.wav_dir, "--threads", str(args.threads), "--runs", "1",
           "--engines", "ort-N,s3tok-fp32", "--json", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    rows = {r["engine"]: r for r in result["rows"]}
    ort, ours = rows["ort-N"], rows["s3tok-fp32"]
    return {"ratio": ours["rtf"] / ort["rtf"], "s3tok_rtf": ours["rtf"], "ort_rtf": ort["rtf"],
            "s3tok_rss_mb": ours.get("peak_rss_mb"), "ort_rss_mb": ort.get("peak_rss_mb"),
            "source": result["info"].get("source")}


def report(runs: Dict[str, List[Dict[str, float]]]) -> List[str]:
    """The table: each round's ratio per side, then the medians."""
    lines = ["| side | s3tok / onnxruntime, round by round | median | s3tok audio s/s, median | s3tok peak RSS MB, max "
             "| onnxruntime peak RSS MB, max | source |", "|---|---|---|---|---|---|---|"]
    for side in SIDES:
        rs = runs[side]
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in rs)
        lines.append(f"| {side} | {ratios} | "
                     f"{statistics.median(r['ratio'] for r in rs):.2f} | "
                     f"{statistics.median(r['s3tok_rtf'] for r in rs):.1f} | "
                     f"{max((r['s3tok_rss_mb'] or 0) for r in rs):.0f} | "
                     f"{max((r.get('ort_rss_mb') or 0) for r in rs):.0f} | {rs[0]['source']} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    runs: Dict[str, List[Dict[str, float]]] = {side: [] for side in SIDES}
    with source_tree(args.base) as (before, label), tempfile.TemporaryDirectory(prefix="s3tok_ab_json_") as tmp:
        trees = {"before": before, "after": ROOT}
        for r in range(max(1, args.rounds)):
            for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                got = one_process(trees[side], args, Path(tmp) / f"{side}_{r}.json")
                if side == "before":  # its own bench.py may name the checkout around it (a folder in this one)
                    got["source"] = label
                runs[side].append(got)
                logger.info("round %d, %s (%s): s3tok %.1f, onnxruntime %.1f audio s/s: %.2f", r + 1, side,
                            got["source"], got["s3tok_rtf"], got["ort_rtf"], got["ratio"])
    lines = report(runs)
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": run_info("bench_ab.py", argv, base=args.base, threads=args.threads), "runs": runs,
                       "table": lines}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
