"""``egs/mini/run.sh`` stage by stage on CPU, against ``s3tok tokenize`` on the same audio; a forced failure."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from s3tok.data import scan_audio_dir

ROOT = Path(__file__).resolve().parents[1]
MODEL = "speech_tokenizer_v2_25hz"


def copy_recipe(tmp_path: Path) -> Path:
    """The recipe parts of the tree in a temporary copy, so a run writes nothing into the checkout."""
    shutil.copytree(ROOT / "egs", tmp_path / "egs", ignore=shutil.ignore_patterns("data", "exp"))
    shutil.copytree(ROOT / "utils", tmp_path / "utils")
    shutil.copy2(ROOT / "path.sh", tmp_path / "path.sh")
    return tmp_path / "egs" / "mini"


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["./run.sh", *args], cwd=recipe, capture_output=True, text=True)


def read_table(scp: Path, cwd: Path):
    import kaldi_native_io

    lines = [line.split(" ", 1) for line in scp.read_text().splitlines()]
    return {k: list(kaldi_native_io.read_int32_vector(str(cwd / v) if not v.startswith("/") else v))
            for k, v in lines}


@pytest.mark.slow
def test_mini_recipe_stage_by_stage(ref, tmp_path):
    recipe = copy_recipe(tmp_path)
    model = str(ref / "models" / f"{MODEL}.onnx")
    for stage in range(0, 6):
        out = run(recipe, "--stage", str(stage), "--stop_stage", str(stage), "--model", model)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert f"Stage {stage}:" in out.stdout
    reference = tmp_path / "ref"
    subprocess.run(["s3tok", "tokenize", "--wav_dir", str(recipe / "corpus"), "--model", model, "--output_dir",
                    str(reference), "--no_progress"], check=True, capture_output=True)
    expected = {line.split()[0].rsplit("/", 1)[-1]: [int(t) for t in line.split()[1:]]
                for line in (reference / "tokens.txt").read_text().splitlines()}
    seen = {}
    for name, n in (("train", 4), ("dev", 2), ("test", 3)):
        d = recipe / "data" / name
        tokens = read_table(d / "tokens.scp", recipe)
        assert len(tokens) == n and list(tokens) == sorted(tokens)
        seen.update(tokens)
        assert (d / "utt2fail").read_text() == ""
        pt = torch.load(d / "utt2speech_token.pt")
        assert pt == tokens
        nums = dict(line.split() for line in (d / "utt2num_tokens").read_text().splitlines())
        assert {k: int(v) for k, v in nums.items()} == {k: len(v) for k, v in tokens.items()}
        assert '"model": "speech_tokenizer_v2_25hz"' in (d / "tokenizer.json").read_text()
    assert seen == expected  # the recipe (via stored log-mels, 2 jobs per set) equals s3tok tokenize


@pytest.mark.slow
def test_recipe_reruns_are_idempotent_and_skip_done_jobs(ref, tmp_path):
    recipe = copy_recipe(tmp_path)
    model = str(ref / "models" / f"{MODEL}.onnx")
    first = run(recipe, "--model", model, "--sets", "dev")
    assert first.returncode == 0, first.stderr[-2000:]
    before = (recipe / "data" / "dev" / "tokens.scp").read_bytes()
    again = run(recipe, "--model", model, "--sets", "dev", "--stage", "1")
    assert again.returncode == 0
    assert (recipe / "data" / "dev" / "tokens.scp").read_bytes() == before
    log = (recipe / "exp" / MODEL / "dev" / "log" / "tokenize.1.log").read_text()
    assert "already done" in log


def test_bad_audio_is_recorded_and_the_ratio_enforced(ref, tmp_path):
    recipe = copy_recipe(tmp_path)
    bad = recipe / "corpus" / "data_aishell" / "wav" / "test" / "S9004" / "BAC009S9004W0099.wav"
    bad.write_bytes(b"RIFF but not really a wav file")
    with open(recipe / "corpus" / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt", "a") as f:
        f.write("BAC009S9004W0099 坏 文件\n")
    model = str(ref / "models" / f"{MODEL}.onnx")
    out = run(recipe, "--model", model, "--sets", "test")
    assert out.returncode == 1  # 1 of 4 failed: above the 5 % default; merge-mel judges and stage 1 stops
    assert "1 / 4 failed" in out.stderr and "mel_fail" in out.stderr
    assert not (recipe / "exp" / MODEL / "test").exists()  # stage 2 never ran
    fail = (recipe / "data" / "test" / "mel_fail").read_text()
    assert fail.startswith("BAC009S9004W0099 ") and "cannot decode audio" in fail
    ok = run(recipe, "--model", model, "--sets", "test", "--stage", "1", "--max_fail_ratio", "0.5")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (recipe / "data" / "test" / "utt2fail").read_text().startswith("BAC009S9004W0099 ")
    assert len((recipe / "data" / "test" / "tokens.scp").read_text().splitlines()) == 3
    # the set for CosyVoice: every listed key has tokens, the bad one is listed as removed
    tokenized = recipe / "data" / "test" / "tokenized"
    for name in ("wav.scp", "text", "utt2spk", "tokens.scp"):
        keys = [line.split()[0] for line in (tokenized / name).read_text().splitlines()]
        assert len(keys) == 3 and "BAC009S9004W0099" not in keys, name
    assert set(torch.load(tokenized / "utt2speech_token.pt")) == set(keys)
    assert (tokenized / "removed").read_text().startswith("BAC009S9004W0099 ")


def test_recipe_rejects_unknown_option(tmp_path):
    recipe = copy_recipe(tmp_path)
    out = run(recipe, "--no_such_thing", "1")
    assert out.returncode == 2 and "unknown option --no_such_thing" in out.stderr


def test_parse_options(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text(f"stage=0\nstop_stage=9\nname=x\n. {ROOT}/utils/parse_options.sh\n"
                      'echo "$stage|$stop_stage|$name|$*"\n')
    run_ = lambda *a: subprocess.run(["bash", str(script), *a], capture_output=True, text=True)  # noqa: E731
    assert run_("--stage", "2", "--stop-stage=3", "--name", "a b", "pos").stdout == "2|3|a b|pos\n"
    bad = run_("--stage")
    assert bad.returncode == 2 and "--stage needs a value" in bad.stderr


def test_scan_audio_dir_keys(tmp_path):
    (tmp_path / "sub dir").mkdir()
    for rel in ("b.wav", "a.flac", "sub dir/c d.wav", "notes.txt"):
        (tmp_path / rel).write_bytes(b"")
    keys = [e.key for e in scan_audio_dir(tmp_path)]
    assert keys == ["a", "b", "sub_dir/c_d"]
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="same key 'a'"):
        scan_audio_dir(tmp_path)


@pytest.mark.slow
def test_webdataset_recipe_reads_tar_shards_end_to_end(tmp_path):
    """egs/webdataset: synthetic tar shards (FLAC and MP3 members with JSON metadata), every stage, 2 jobs
    per set split by shard; every key tokenized, parity with onnxruntime exact, text from the JSON."""
    import json

    recipe = copy_recipe(tmp_path).parent / "webdataset"
    out = subprocess.run(["./run.sh"], cwd=recipe, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for name, n in (("train", 12), ("test", 3)):
        d = recipe / "data" / name
        assert len((d / "tokens.scp").read_text().splitlines()) == n and (d / "utt2fail").read_text() == ""
        assert len((d / "text").read_text().splitlines()) == n
        parity = json.loads((recipe / "exp" / "demo" / name / "parity.json").read_text())
        assert parity["utterances"] == n and parity["mismatches"] == 0
    jobs = [{line.split()[0].rsplit("_", 1)[0] for line in
             (recipe / "exp" / "demo" / "train" / f"tokens.{j}.txt").read_text().splitlines()} for j in (1, 2)]
    assert jobs[0] and jobs[1]  # two shards, one per job
    # stages 6 and 7 read the shards in place too: embeddings of every key, parquet audio_data = member bytes
    import tarfile

    import pyarrow.parquet as pq
    import torch

    assert len(torch.load(recipe / "data" / "train" / "utt2embedding.pt")) == 12
    members = {}
    for shard in (recipe / "data" / "test" / "shards.list").read_text().split():
        with tarfile.open(recipe / shard if not shard.startswith("/") else shard) as tar:
            for m in tar.getmembers():
                if not m.name.endswith((".json", ".txt")):
                    members[m.name.split(".", 1)[0]] = tar.extractfile(m).read()
    rows = [r for f in (recipe / "data" / "dev.data.list").read_text().split()
            for r in pq.ParquetFile(f).read().to_pylist()]
    assert len(rows) == 3 and all(r["audio_data"] == members[r["utt"]] for r in rows)
