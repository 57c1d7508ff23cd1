"""``egs/mini/run.sh`` end to end on the reference clips, and the shell option parser it uses."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import load_expected
from s3tok.data import read_wav_scp, scan_audio_dir

ROOT = Path(__file__).resolve().parents[1]


def copy_recipe(tmp_path: Path) -> Path:
    """A copy of the tree's recipe parts, so the run writes nothing into the checkout."""
    for part in ("egs/mini", "utils"):
        shutil.copytree(ROOT / part, tmp_path / part)
    shutil.copy(ROOT / "path.sh", tmp_path / "path.sh")
    return tmp_path / "egs" / "mini"


def test_mini_recipe_stages(ref, tmp_path):
    recipe = copy_recipe(tmp_path)
    model = ref / "models" / "speech_tokenizer_v1.onnx"
    cmd = ["bash", "run.sh", "--audio_dir", str(ref / "audio"), "--model", str(model), "--batch_size", "4"]
    out = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Stage 0:" in out.stdout and "Stage 1:" in out.stdout
    entries = read_wav_scp(recipe / "data" / "mini" / "wav.scp")
    assert [e.key for e in entries] == sorted(e.key for e in entries) and len(entries) == 17
    expected, ties = load_expected(ref, "speech_tokenizer_v1")
    got = {}
    for line in (recipe / "exp" / "speech_tokenizer_v1" / "tokens.txt").read_text().splitlines():
        key, *toks = line.split()
        got[key] = [int(t) for t in toks]
    assert set(got) == set(expected)
    for key in expected:
        assert len(got[key]) == len(expected[key])
        assert {i for i, (a, b) in enumerate(zip(got[key], expected[key])) if a != b} <= ties.get(key, set())
    # only stage 1 again: same output, stage 0 not run
    again = subprocess.run(cmd + ["--stage", "1"], cwd=recipe, capture_output=True, text=True)
    assert again.returncode == 0 and "Stage 0:" not in again.stdout


def test_recipe_rejects_unknown_option(tmp_path):
    recipe = copy_recipe(tmp_path)
    out = subprocess.run(["bash", "run.sh", "--no_such_thing", "1"], cwd=recipe, capture_output=True, text=True)
    assert out.returncode == 1 and "unknown option --no_such_thing" in out.stderr


def test_parse_options(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text(f"stage=0\nstop_stage=9\nname=x\n. {ROOT}/utils/parse_options.sh\n"
                      'echo "$stage|$stop_stage|$name|$*"\n')
    run = lambda *a: subprocess.run(["bash", str(script), *a], capture_output=True, text=True)  # noqa: E731
    assert run("--stage", "2", "--stop-stage=3", "--name", "a b", "pos").stdout == "2|3|a b|pos\n"
    bad = run("--stage")
    assert bad.returncode == 1 and "--stage needs a value" in bad.stderr


def test_scan_audio_dir_keys(tmp_path):
    (tmp_path / "sub dir").mkdir()
    for rel in ("b.wav", "a.flac", "sub dir/c d.wav", "notes.txt"):
        (tmp_path / rel).write_bytes(b"")
    keys = [e.key for e in scan_audio_dir(tmp_path)]
    assert keys == ["a", "b", "sub_dir/c_d"]
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="same key 'a'"):
        scan_audio_dir(tmp_path)
