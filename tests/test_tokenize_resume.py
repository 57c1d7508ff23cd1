"""A tokenize job killed with SIGKILL and rerun gives the outputs of an uninterrupted run, byte for byte."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from s3tok.stages.journal import LineJournal

MODEL = "speech_tokenizer_v1"


def make_scp(ref, tmp_path, copies=4):
    lines = []
    for line in (ref / "wav.scp").read_text().splitlines():
        utt, rel = line.split(maxsplit=1)
        for c in range(copies):
            lines.append(f"{utt}_{c} {ref / rel}")
    scp = tmp_path / "wav.scp"
    scp.write_text("\n".join(sorted(lines)) + "\n")
    return scp, len(lines)


def tokenize_cmd(ref, scp, out, *extra):
    return [sys.executable, "-m", "s3tok.bin.tokenize", "--wav_scp", str(scp), "--model",
            str(ref / "models" / f"{MODEL}.onnx"), "--output_dir", str(out), "--batch_size", "2",
            "--no_progress", "--num_threads", "2", *extra]


def read_table(scp):
    import kaldi_native_io

    return [(k, list(v)) for k, v in kaldi_native_io.SequentialInt32VectorReader(f"scp:{scp}")]


@pytest.mark.slow
def test_kill9_then_rerun_is_identical(ref, tmp_path):
    scp, n = make_scp(ref, tmp_path)
    clean = tmp_path / "clean"
    subprocess.run(tokenize_cmd(ref, scp, clean), check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(tokenize_cmd(ref, scp, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = killed / "tokens.part"
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.exists() and journal.read_text().count("\n") >= 10:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = journal.read_text().count("\n")
    assert 10 <= done_before < n, "the job was not killed mid-run"
    assert not (killed / "tokens.scp").exists() and not (killed / ".done" / "tokenize").exists()
    with open(journal, "a") as f:  # as if the kill had cut a record in half
        f.write("cut_key 1 2 3")
    out = subprocess.run(tokenize_cmd(ref, scp, killed), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming: {done_before} of {n}" in out.stderr
    resumed, uninterrupted = read_table(killed / "tokens.scp"), read_table(clean / "tokens.scp")
    assert [k for k, _ in resumed] == [k for k, _ in uninterrupted]
    flips = [(k, i) for (k, a), (_, b) in zip(resumed, uninterrupted) for i, (x, y) in enumerate(zip(a, b)) if x != y]
    assert resumed == uninterrupted, f"tokens differ at {flips[:20]}"
    assert (killed / "tokens.txt").read_bytes() == (clean / "tokens.txt").read_bytes()
    assert (killed / "utt2fail").read_bytes() == (clean / "utt2fail").read_bytes() == b""
    assert not journal.exists()
    again = subprocess.run(tokenize_cmd(ref, scp, killed), capture_output=True, text=True)
    assert again.returncode == 0 and "already done" in again.stderr


def test_resume_refuses_another_model(ref, tmp_path):
    scp, _ = make_scp(ref, tmp_path, copies=1)
    out = tmp_path / "o"
    out.mkdir()
    (out / "tokens.part").write_text("x_0 1 2\n")
    (out / "tokenizer.json").write_text('{"model": "speech_tokenizer_v2_25hz", "dtype": "float32"}\n')
    res = subprocess.run(tokenize_cmd(ref, scp, out), capture_output=True, text=True)
    assert res.returncode == 2 and "started with another model" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run(tokenize_cmd(ref, scp, out, "--overwrite"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def test_journal_drops_a_cut_last_record(tmp_path):
    path = tmp_path / "j.part"
    path.write_bytes(b"a 1 2\nb 3\nc 4 5")
    j = LineJournal(path).open()
    assert j.entries == {"a": "1 2", "b": "3"}
    j.add("c", "4 5 6")
    j.close()
    assert path.read_bytes() == b"a 1 2\nb 3\nc 4 5 6\n"
    with pytest.raises(ValueError):
        LineJournal(path).open().add("bad key", "1")


def test_skipped_keys_keep_the_batches_of_an_uninterrupted_run(ref):
    """run_tokenize(skip=...) writes only the other keys, with the bits they get in the full run: its
    forward passes are the full run's (same shapes), less those that hold only skipped keys."""
    from collections import Counter

    import torch

    from s3tok.api import load_model
    from s3tok.data.sources import select_source
    from s3tok.stages.pipeline import run_tokenize

    model = load_model(str(ref / "models" / f"{MODEL}.onnx"), device=torch.device("cpu"), dtype=torch.float32)
    utts = select_source(wav_scp=str(ref / "wav.scp"))
    forward, shapes = model.forward_segments, []
    model.forward_segments = lambda mels, lens: shapes.append(tuple(mels.shape)) or forward(mels, lens)

    def run(skip=()):
        out = {}
        shapes.clear()
        stats = run_tokenize(model, utts, out.__setitem__, pytest.fail, batch_size=2, chunk_size=6,
                             progress=False, base_dir=ref, skip=skip)
        assert stats.done == len(out)
        return out, Counter(shapes)

    full, full_shapes = run()
    skip = {u.key for u in utts[:9]}  # the first chunk whole, half of the second
    part, part_shapes = run(skip)
    assert sorted(part) == sorted(k for k in full if k not in skip)
    assert all(part[k] == full[k] for k in part)
    assert part_shapes < full_shapes, (part_shapes, full_shapes)
