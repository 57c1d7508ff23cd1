"""The benchmark harness runs end to end on a tiny model and one clip (its numbers are not asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str):
    """The module ``tools/<name>.py`` (the tools are scripts, not a package)."""
    import importlib

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.mark.slow
def test_bench_harness_smoke(ref, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--model",
                           str(ref / "models" / "speech_tokenizer_v1_25hz.onnx"), "--wav_dir", str(ref / "audio"),
                           "--limit", "1", "--runs", "1", "--rounds", "2", "--threads", "1", "--engines", "ort-1,s3tok-fp32",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["engine"]: r for r in result["rows"]}
    assert set(rows) == {"ort-1", "s3tok-fp32"}
    assert rows["s3tok-fp32"]["miss_rate"] == 0.0
    assert all(r["rtf"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert 0 <= rows["s3tok-fp32"]["input_wait_share"] < 1 and rows["ort-1"]["input_wait_share"] is None
    assert result["info"]["peak"]["fp32_peak"] > 0 and result["info"]["gflop_per_audio_second"] > 0
    assert "| s3tok fp32 (tokenize batching) |" in proc.stdout
    # the time outside the forward pass, per part (issue 20): measured in the pass, shown in the report
    parts = rows["s3tok-fp32"]["parts"]
    assert {"decode", "resample", "log-mel", "waiting for input", "batching", "model", "writing"} <= set(parts)
    assert all(v >= 0 for v in parts.values()) and parts["model"] > 0 and rows["s3tok-fp32"]["startup_s"] > 0
    assert parts["model"] + parts["waiting for input"] <= rows["s3tok-fp32"]["wall_s"] * 1.05
    assert "Where the time goes" in proc.stdout and rows["ort-1"].get("parts") is None
    times = proc.stdout.split("Where the time goes", 1)[1].splitlines()
    assert any(t.startswith("| onnxruntime") and t.endswith("| - | - | - | - | - | - | - | - |") for t in times)
    # two interleaved rounds: the peak measured before each and after the last, one speed ratio per round
    assert result["info"]["rounds"] == 2 and len(result["info"]["peaks_fp32"]) == 3
    assert result["info"]["peak"]["fp32_peak"] == max(result["info"]["peaks_fp32"])
    assert len(rows["s3tok-fp32"]["speed_vs_reference_by_round"]) == 2
    assert rows["ort-1"]["speed_vs_reference_by_round"] is None
    assert "(best pass), round by round (2 interleaved rounds): s3tok fp32 (tokenize batching)" in proc.stdout
    assert "(one process: start-up, warm-up clip and first pass), round by round" in proc.stdout
    assert len(rows["s3tok-fp32"]["speed_vs_reference_by_round_process"]) == 2
    for r in rows.values():  # one process: start-up + warm-up + a first pass, never faster than the best pass
        assert 0 < r["process_rtf"] < r["rtf"]
    assert set(rows["s3tok-fp32"]["linear_kernels"].values()) <= {"fused", "onednn", "aten"}
    assert "CPU linear kernels chosen by timing" in proc.stdout
    report = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_report.py"), str(out), str(out)],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr[-3000:]
    lines = report.stdout.splitlines()
    info = result["info"]
    assert info["source"]  # a commit in a checkout, else the package version
    assert lines[0].startswith(f"Measured {info['date']} with s3tok {info['source']} on {info['machine']}, 1 threads")
    summary = [line for line in lines if line.startswith("| speech_tokenizer_v1_25hz |")]
    assert len(summary) == 2 and "0.000 % / -" in summary[0]  # fp32 exact, no bf16 row in this run
    assert report.stdout.count(result["info"]["command"]) == 2
    assert report.stdout.count("round by round (2 interleaved rounds)") == 4
    md = tmp_path / "report.md"
    again = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_report.py"), str(out), str(out), "--out",
                            str(md)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "" and md.read_text() == report.stdout


def test_bench_report_gpu_columns():
    """s3tok rows run on a GPU add its utilisation and peak memory to the table, and the header names it."""
    bench_report = tool("bench_report")
    row = {"engine": "s3tok-bf16", "rtf": 2400.0, "tokens_per_s": 60000.0, "gflops": 17000.0, "pct_of_peak": 30.0,
           "peak_rss_mb": 3000.0, "padding_overhead": 1.03, "input_wait_share": 0.1, "miss_rate": None,
           "gpu_util_pct": 87.4, "gpu_peak_mb": 20480.0}
    ort = {**row, "engine": "ort-N", "gpu_util_pct": None, "gpu_peak_mb": None}
    info = {"threads": 16, "device": "NVIDIA H200 (cuda:0)", "peak": {"fp32_peak": 900.0, "torch_bf16": 3000.0,
            "gpu_float32": 51000.0, "gpu_bfloat16": 760000.0}, "peaks_fp32": [900.0]}
    lines = bench_report.table({"info": info, "rows": [ort, row]})
    assert lines[0].endswith("| miss rate vs ORT bs1 | GPU util | peak GPU MB |")
    assert lines[1].count("---") == 12
    assert lines[2].endswith("| - | - |") and lines[3].endswith("| 87 % | 20480 |")
    assert "NVIDIA H200 (cuda:0): fp32 51.0 TFLOP/s, bf16 760 TFLOP/s" in bench_report.peak_text(info)
    cpu = bench_report.table({"info": {"threads": 2}, "rows": [{**row, "gpu_util_pct": None, "gpu_peak_mb": None}]})
    assert "GPU util" not in cpu[0] and cpu[1].count("---") == 10


def test_bench_report_rejects_other_json(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"rows": []}')
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_report.py"), str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a tools/bench.py --json result" in proc.stderr


def test_frame_count_measures_padding(ref):
    """The tokenizer counts the mel frames it ran with and without padding (the bench's padding column)."""
    import torch

    import s3tok
    from s3tok.data.audio import padding
    from s3tok.model.tokenizer import FrameCount

    model = s3tok.load_model(ref / "models" / "speech_tokenizer_v2_25hz.onnx")
    mels = [torch.randn(128, 300), torch.randn(128, 250), torch.randn(128, 7000)]
    x, lens = padding(mels)
    model.frame_count = FrameCount()
    model.quantize(x, lens, max_frames_per_forward=6000)
    # 7000 frames: windows 0..3000, 2600..5600, 5200..7000 (1800); budget 6000 -> [3000, 3000], [1800],
    # [300, 250] (250 >= 0.75 * 300: packed together, 50 frames of padding)
    # On a CPU the blocks run a padded batch packed (no padded frame computed): no overhead there.
    assert model.frame_count.useful == 300 + 250 + 3000 + 3000 + 1800
    assert model.frame_count.computed == model.frame_count.useful and model.frame_count.overhead == 1.0
    model.encoder.pack_rows = False  # the padded path (as on a GPU) computes the 50 frames of padding
    model.frame_count = FrameCount()
    model.quantize(x, lens, max_frames_per_forward=6000)
    assert model.frame_count.computed == 2 * 3000 + 1800 + 2 * 300
    assert abs(model.frame_count.overhead - 8400 / 8350) < 1e-12


@pytest.mark.slow
def test_bench_ops_profile(ref, tmp_path):
    """tools/bench_ops.py splits one forward pass into op groups whose FLOPs add up to the model's."""
    out = tmp_path / "ops.json"
    model = ref / "models" / "speech_tokenizer_v2_25hz.onnx"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_ops.py"), "--model", str(model),
                           "--threads", "1", "--windows", "2", "--frames", "500", "--reps", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import s3tok
    from s3tok.model.flops import window_flops

    result = json.loads(out.read_text())["results"][0]
    config = s3tok.load_model(model).config
    groups = result["groups"]
    assert set(groups) == {"linear", "attention", "conv", "other"}
    assert abs(sum(g["gflop"] for g in groups.values()) * 1e9 - 2 * window_flops(config, 500)) < 1e3
    assert abs(sum(g["share"] for g in groups.values()) - 1) < 1e-6
    assert all(groups[g]["gflops"] > 0 for g in ("linear", "attention", "conv")) and groups["other"]["gflops"] is None
    assert 0 < result["ceilings"]["forward"] <= result["ceilings"]["attention"]
    assert "| speech_tokenizer_v2_25hz | **forward** |" in proc.stdout


def test_op_groups():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from bench_ops import op_group
    finally:
        sys.path.pop(0)
    assert op_group("mkldnn::_linear_pointwise") == "linear" and op_group("aten::addmm") == "linear"
    assert op_group("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_group("aten::mkldnn_convolution") == "conv" and op_group("aten::native_layer_norm") == "other"


def test_ops_against_onnxruntime_classes():
    """tools/bench_ops_ort.py sorts both engines' ops into the same classes."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from bench_ops_ort import ort_class, torch_class
    finally:
        sys.path.pop(0)
    assert ort_class("/blocks.3/mlp/mlp.0/MatMul", "MatMul") == "mlp up (D -> 4D)"
    assert ort_class("/blocks.3/mlp/mlp.2/MatMul", "MatMul") == "mlp down (4D -> D)"
    assert ort_class("/blocks.0/attn/query/MatMul", "MatMul") == "query/key/value/out"
    assert ort_class("/blocks.0/attn/MatMul/MatMulScaleFusion/", "FusedMatMul") == "attention"
    assert ort_class("/blocks.0/attn/Softmax", "Softmax") == "attention"
    assert ort_class("/quantizer/rq/model/layers.0/_codebook/MatMul", "MatMul") == "quantizer"
    assert ort_class("/conv1/Conv", "Conv") == "convolutions" and ort_class("/blocks.0/mlp/mlp.1/Gelu", "Gelu") == "other"
    d = 64
    assert torch_class("mkldnn::_linear_pointwise", [[10, d], [4 * d, d], [4 * d]], d) == "mlp up (D -> 4D)"
    assert torch_class("aten::addmm", [[d], [10, 4 * d], [4 * d, d]], d) == "mlp down (4D -> D)"
    assert torch_class("mkldnn::_linear_pointwise", [[d, 4 * d], [d, d], [d, 4 * d], [d], [], []], d) \
        == "mlp down (4D -> D)"  # the fused addition: (x, other, weight, bias, ...), 64 rows
    assert torch_class("aten::addmm", [[d], [d, d], [d, d]], d) == "query/key/value/out"
    assert torch_class("aten::addmm", [[8], [d, d], [d, 8]], d) == "quantizer"  # v2's projection, 64 rows
    assert torch_class("aten::mm", [[10, d], [d, 4096]], d) == "quantizer"
    assert torch_class("aten::_scaled_dot_product_flash_attention_for_cpu", [], d) == "attention"
    assert torch_class("aten::mkldnn_convolution", [], d) == "convolutions"
    assert torch_class("aten::native_layer_norm", [], d) == "other"


@pytest.mark.slow
def test_ops_against_onnxruntime_smoke(ref, tmp_path):
    """tools/bench_ops_ort.py profiles both engines on a small group and fills every product class."""
    out = tmp_path / "ops_ort.json"
    model = ref / "models" / "speech_tokenizer_v2_25hz.onnx"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_ops_ort.py"), "--model", str(model),
                           "--lengths", "500,300", "--threads", "1", "--reps", "1", "--pause", "0",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())["result"]
    for engine in ("onnxruntime_ms", "s3tok_ms"):
        for c in ("query/key/value/out", "mlp up (D -> 4D)", "mlp down (4D -> D)", "attention", "convolutions",
                  "quantizer"):
            assert result[engine][c] > 0, (engine, c, result[engine])
    assert "| **sum**" in proc.stdout


@pytest.mark.slow
def test_bench_shards_smoke(tmp_path):
    """tools/bench_shards.py end to end on a few clips (its numbers are not asserted, only that both inputs
    give the same tokens)."""
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_shards.py"), "--clips", "12", "--shards", "2",
                           "--rounds", "1", "--threads", "1", "--work_dir", str(tmp_path / "w"), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tokens_equal"] and result["clips"] == 12 and result["rows"]["tars"]["best_s"] > 0


def test_bench_report_updates_its_section_in_place():
    """--update replaces only the marked block of docs/benchmarks.md (or appends one), so a rerun of the
    bench regenerates its table there and leaves the prose around it."""
    bench_report = tool("bench_report")
    text = ("# B\n\nintro\n<!-- bench_report a -->\nold table\n<!-- /bench_report a -->\nreading it\n"
            "<!-- bench_report b -->\nb table\n<!-- /bench_report b -->\n")
    new = bench_report.update_section(text, "a", "new table\n")
    assert new == text.replace("old table", "new table")
    assert bench_report.update_section(new, "a", "new table\n") == new
    appended = bench_report.update_section(text, "c", "c table")
    assert appended.startswith(text.rstrip("\n")) and appended.endswith(
        "\n\n<!-- bench_report c -->\nc table\n<!-- /bench_report c -->\n")
    with pytest.raises(ValueError, match="no closing"):
        bench_report.update_section("<!-- bench_report a -->\nx\n", "a", "y")
    # the real file carries the blocks this tool regenerates
    doc = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for name in ("four-models", "short-clips"):
        assert doc.count(f"<!-- bench_report {name} -->") == 1 and doc.count(f"<!-- /bench_report {name} -->") == 1


def test_time_table_lists_each_part_and_what_is_left():
    bench_report = tool("bench_report")
    parts = {"decode": 1.0, "resample": 0.5, "log-mel": 2.0, "waiting for input": 0.25, "batching": 0.05,
             "model": 6.0, "writing": 0.2}
    run = {"info": {"threads": 2}, "rows": [{"engine": "ort-N", "wall_s": 9.0},
                                            {"engine": "s3tok-fp32", "wall_s": 7.0, "startup_s": 2.5, "parts": parts}]}
    lines = bench_report.time_table(run)
    assert lines[3].startswith("| engine | start-up | pass wall | decode | resample | log-mel |")
    assert lines[-1] == "| s3tok fp32 | 2.50 | 7.00 | 1.00 | 0.50 | 2.00 | 0.25 | 0.05 | 6.00 | 0.20 | 0.50 |"
    assert len(lines) == 6  # onnxruntime has no parts: no row


def test_bench_load_times_every_load_path(ref):
    """``tools/bench_load.py`` prints the three load paths, the first load of a new process among them."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_load.py"),
                           str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"), "--repeat", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "median" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| ONNX parse (cache=False)", "| converted-weights cache",
                                                  "| converted-weights cache, first load of a new process"]
    assert all(float(r.split(" | ")[1]) > 0 for r in rows)


def test_bench_report_without_an_onnxruntime_row():
    """A run of s3tok rows alone (no reference to compare with) still prints its tables."""
    bench_report = tool("bench_report")
    row = {"engine": "s3tok-fp32", "rtf": 20.0, "tokens_per_s": 500.0, "gflops": 130.0, "pct_of_peak": 60.0,
           "peak_rss_mb": 1300.0, "padding_overhead": 1.03, "input_wait_share": 0.01, "miss_rate": None,
           "speed_vs_reference_by_round": None, "startup_s": 2.0, "wall_s": 30.0, "parts": {"model": 29.0}}
    run = {"info": {"threads": 2, "rounds": 1, "speed_reference": None}, "rows": [row]}
    assert bench_report.rounds_note(run) == []
    assert bench_report.table(run)[2].startswith("| s3tok fp32 | 20.0 |")


def test_bench_machine_line_says_what_was_hidden(monkeypatch):
    """Under tools/as_avx2.sh the machine line names the hidden features and the ISA torch's kernels use."""
    monkeypatch.setenv("S3TOK_HIDDEN_CPU_FEATURES", "AVX-512,AMX,AVX-VNNI")
    line = tool("bench").machine_name()
    assert "AVX-512,AMX,AVX-VNNI hidden from every library by tools/as_avx2.sh" in line
    assert "torch kernels: " in line


def test_bench_feed_smoke(ref, tmp_path):
    """tools/bench_feed.py times both pools over the reference clips (its numbers are not asserted)."""
    out = tmp_path / "f.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_feed.py"), "--wav_dir", str(ref / "audio"),
                           "--threads", "2", "--workers", "2", "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["clips"] == len(list((ref / "audio").iterdir()))
    for kind in ("plain", "one thread each"):
        (p,) = result["passes"][kind]
        assert p["wall_s"] > 0 and p["decode"] > 0 and p["log-mel"] > 0
        assert f"| {kind} |" in proc.stdout


@pytest.mark.slow
def test_bench_ab_smoke(ref, tmp_path):
    """tools/bench_ab.py runs an earlier source tree (a folder here) and this checkout, each against
    onnxruntime, and tabulates both sides (its numbers are not asserted)."""
    import shutil

    before = tmp_path / "before"
    for part in ("s3tok", "tools"):
        shutil.copytree(ROOT / part, before / part, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "ab.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_ab.py"), "--base", str(before),
                           "--model", str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"),
                           "--wav_dir", str(ref / "audio"), "--threads", "1", "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for side in ("before", "after"):
        (run,) = result["runs"][side]
        assert run["ratio"] > 0 and run["s3tok_rtf"] > 0 and f"| {side} |" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_ab.py"), "--base", str(tmp_path / "nothing"),
                          "--model", "m.onnx", "--wav_dir", str(ref / "audio")], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "nothing" in bad.stderr
