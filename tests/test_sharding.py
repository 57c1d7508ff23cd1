"""Duration-balanced contiguous shards, and tokenize under torchrun (2 processes, CPU)."""
from __future__ import annotations

import random
import subprocess
import sys

import pytest

from s3tok.stages.sharding import shard_by_weight


@pytest.mark.parametrize("seed", range(20))
def test_shards_are_contiguous_exact_and_non_empty(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    weights = [rng.choice([1, 5, 100, 3000]) for _ in range(n)]
    items = list(range(n))
    k = rng.randint(1, 12)
    pieces = [shard_by_weight(items, weights, k, j) for j in range(1, k + 1)]
    assert [x for p in pieces for x in p] == items  # concatenation gives the input back, each once
    assert all(pieces[j] for j in range(min(k, n)))  # the first min(k, n) pieces are non-empty
    assert all(not p for p in pieces[n:])  # more jobs than items: the rest are empty


def test_balance_follows_duration_not_count():
    items = list(range(8))
    weights = [60, 1, 1, 1, 1, 1, 1, 60]
    assert [shard_by_weight(items, weights, 2, j) for j in (1, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [len(shard_by_weight(items, [100, 1, 1, 1, 1, 1, 1, 1], 2, j)) for j in (1, 2)] == [1, 7]


@pytest.mark.slow
def test_torchrun_two_ranks_equal_single_process(ref, tmp_path):
    """7 utterances of very different lengths (1.4 to 65 s): every key once, tokens as one process."""
    utts = ["en_yes", "long_65s", "cmn_boats", "en_paragraph", "stereo_mix", "long_35s", "en_robot"]
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in (ref / "wav.scp").read_text().splitlines()}
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {ref / lines[u]}\n" for u in sorted(utts)))
    model = str(ref / "models" / "speech_tokenizer_v1_25hz.onnx")
    common = ["--wav_scp", str(scp), "--model", model, "--no_progress", "--num_threads", "1"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "-m", "s3tok.bin.tokenize", *common, "--output_dir", str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0 of 2" in run.stderr and "rank 1 of 2" in run.stderr
    merge = subprocess.run([sys.executable, "-m", "s3tok.bin.merge_tokens", "--wav_scp", str(scp), "--output_dir",
                            str(tmp_path / "ddp"), "--num_jobs", "2", "--dest", str(tmp_path / "merged")],
                           capture_output=True, text=True)
    assert merge.returncode == 0, merge.stderr[-2000:]
    single = subprocess.run([sys.executable, "-m", "s3tok.bin.tokenize", *common, "--output_dir",
                             str(tmp_path / "one")], capture_output=True, text=True)
    assert single.returncode == 0
    parts = [(tmp_path / "ddp" / f"tokens.{j}.txt").read_text() for j in (1, 2)]
    assert all(parts)  # both ranks did work
    assert "".join(parts) == (tmp_path / "one" / "tokens.txt").read_text()
