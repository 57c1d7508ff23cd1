"""tools/device_bench.sh fits the lent GPU machine: its CPU dry run (same steps, layout and scaled limits) leaves
few, valid files in OUT with everything in one archive, and its steps run under timeouts and a budget."""
from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "device_bench.sh"
OUT_FILES = {"device_bench.tar.gz", "device_bench.log", "device_bench.md"}
NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def check_out_layout(out: Path) -> None:
    """What the device tool brings back: at most 8 files, 16 MiB each, at most 2 folders deep, plain names."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) - 1 <= 2, rel
        assert all(NAME.match(part) for part in rel.parts), rel
        assert p.stat().st_size <= 16 * 2 ** 20, rel
    assert {p.name for p in files} == OUT_FILES


def steps_table(archive: tarfile.TarFile) -> dict:
    rows = archive.extractfile("./steps.tsv").read().decode().splitlines()
    assert rows[0].split("\t") == ["step", "status", "seconds", "limit_s", "estimate_s"]
    return {r.split("\t")[0]: r.split("\t")[1:] for r in rows[1:]}


@pytest.mark.slow
def test_dry_run(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "S3TOK_BENCH_WORK": str(tmp_path / "work")}
    proc = subprocess.run(["bash", str(SCRIPT), "dry-run", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    check_out_layout(out)
    v = "v2_25hz"
    with tarfile.open(out / "device_bench.tar.gz") as archive:
        names = {n[2:] for n in archive.getnames() if n.startswith("./")}
        expected = {f"exact_{v}.json", f"tokenize_{v}.json", f"speed_{v}.json", f"speed4x_{v}.json", f"cpu_ab_{v}.json",
                    "exact.md", "tokenize.md", "speed.md", "speed4x.md", "cpu_ab.md", "steps.tsv", "device_bench.log",
                    "device_bench.md"}
        assert expected <= names, expected - names
        steps = steps_table(archive)
        data = {n: json.load(archive.extractfile(f"./{n}")) for n in expected if n.endswith(".json")}
        tables = {n: archive.extractfile(f"./{n}").read().decode() for n in expected if n.endswith(".md")}
    plan = ["env", "clip-set", f"export-{v}", f"exact-{v}", f"tokenize-{v}-fp32", f"tokenize-{v}-bf16",
            f"speed-{v}", f"speed4x-{v}", "clip-set-3m", f"cpu-ab-{v}", "table-exact", "table-speed", "table-speed4x",
            f"table-cpu-ab-{v}", "table-tokenize"]
    assert list(steps) == plan
    assert all(s[0] == "ok" for s in steps.values()), steps
    log = (out / "device_bench.log").read_text()
    for name in plan:  # the log says what each step took
        assert re.search(rf"device_bench: {re.escape(name)}: ok in [0-9]+\.[0-9] s", log), name
    assert re.search(r"done in [0-9]+ s: 0 failed, 0 skipped", log)
    exact = {r["engine"]: r for r in data[f"exact_{v}.json"]["rows"]}
    assert set(exact) == {"ort-N", "s3tok-fp32", "s3tok-fp32-cpumel", "s3tok-bf16"} and data[f"exact_{v}.json"]["info"]["clips"] == 17
    assert all(exact[e]["miss_rate"] is not None for e in ("s3tok-fp32", "s3tok-fp32-cpumel", "s3tok-bf16"))
    assert exact["s3tok-fp32-cpumel"]["miss_rate"] == exact["s3tok-fp32"]["miss_rate"]  # on a CPU: the same path
    assert {r["engine"] for r in data[f"speed_{v}.json"]["rows"]} == {"s3tok-fp32", "s3tok-bf16"}
    assert [r["engine"] for r in data[f"speed4x_{v}.json"]["rows"]] == ["s3tok-bf16"]
    one_pass = {r["dtype"]: r for r in data[f"tokenize_{v}.json"]["rows"]}
    assert set(one_pass) == {"fp32", "bf16"}
    for r in one_pass.values():
        assert r["process_wall_s"] > r["tokenize_wall_s"] > 0 and r["best_wall_s"] > 0 and r["audio_seconds"] > 60
    assert "| v2_25hz | fp32 |" in tables["tokenize.md"] and "| s3tok bf16 |" in tables["speed.md"]
    summary = (out / "device_bench.md").read_text()
    assert "| exact-v2_25hz | ok |" in summary and "## tokenize" in summary and "## speed4x" in summary
    ab = data[f"cpu_ab_{v}.json"]["runs"]  # phase 4: before (a copy of this tree in the dry run) and after
    assert len(ab["before"]) == len(ab["after"]) == 2 and ab["before"][0]["source"] == "this checkout (dry run)"
    assert "| before |" in tables["cpu_ab.md"] and "| after |" in tables["cpu_ab.md"] and "## cpu_ab" in summary


def test_step_timeout_and_budget(tmp_path):
    """A step over its limit fails as timed out and the next goes on; a step over the budget is skipped;
    the exit status counts the failures."""
    out = tmp_path / "out"
    script = f"""
        source {SCRIPT}
        WORK={tmp_path / 'work'} init {out} 40
        step sleepy 1 1 sleep 30
        step quick 1 5 true
        step broken 1 5 false
        step too-long 100 100 true
        finish "" quick
        echo "finish: $?"
    """
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "finish: 2" in proc.stdout
    log = (out / "device_bench.log").read_text()
    assert "sleepy: FAILED: timed out after 1 s" in log
    assert re.search(r"quick: ok in [0-9.]+ s", log)
    assert re.search(r"broken: FAILED \(exit 1\) after [0-9.]+ s", log)
    assert "too-long: SKIPPED: over the budget" in log
    assert "done in" in log and "2 failed, 1 skipped" in log
    check_out_layout(out)
    with tarfile.open(out / "device_bench.tar.gz") as archive:
        steps = steps_table(archive)
    assert {k: v[0] for k, v in steps.items()} == {"sleepy": "timeout", "quick": "ok", "broken": "exit 1",
                                                  "too-long": "skipped"}
    assert float(steps["sleepy"][1]) < 10  # killed at its limit, not after the 30 s of sleep
