"""Stages that cannot be fooled: markers check their outputs, merges publish all or nothing, a resume reuses
only keys whose input is unchanged, interrupted runs leave nothing behind, merged sets are consistent."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from s3tok.bin import compute_mel as compute_mel_cli
from s3tok.bin import tokenize as tokenize_cli
from s3tok.data.sources import from_wav_scp
from s3tok.stages.merge import merge_jobs, write_consistent_dir

CLIPS = (("a", "en_yes.wav"), ("b", "cmn_rain_f32.wav"), ("c", "en_morning.wav"), ("d", "stereo_mix.wav"))


def _scp(tmp_path: Path, ref: Path, clips=CLIPS) -> Path:
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{k} {ref / 'audio' / f}\n" for k, f in clips))
    return scp


def _tokenize(scp: Path, ref: Path, out: Path, *extra: str) -> int:
    return tokenize_cli.main(["--wav_scp", str(scp), "--model", str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"),
                              "--output_dir", str(out), "--no_progress", *extra])


def test_truncated_output_is_not_taken_for_done(ref, tmp_path, caplog):
    scp, out = _scp(tmp_path, ref), tmp_path / "out"
    assert _tokenize(scp, ref, out) == 0
    ark = (out / "tokens.ark").read_bytes()
    with open(out / "tokens.ark", "r+b") as f:
        f.truncate(100)
    caplog.clear()
    assert _tokenize(scp, ref, out) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert not any("already done" in m for m in messages)
    assert any("tokens.ark is 100 bytes, not the" in m for m in messages)
    assert (out / "tokens.ark").read_bytes() == ark


def test_resume_redoes_keys_whose_input_changed(ref, tmp_path, caplog):
    """A killed job, then the same keys pointed at other audio: those keys are tokenized again."""
    scp, out = _scp(tmp_path, ref), tmp_path / "out"
    assert _tokenize(scp, ref, out) == 0
    done_tokens = (out / "tokens.txt").read_text().splitlines()
    # as after a kill: the journal holds every key, no marker, no final files
    fp = {}
    from s3tok.stages.protocol import input_fingerprint

    for u in from_wav_scp(scp):
        fp[u.key] = input_fingerprint(u)
    (out / "tokens.part").write_text("".join(f"{line.split(' ', 1)[0]} {fp[line.split(' ', 1)[0]]} "
                                             f"{line.split(' ', 1)[1]}\n" for line in done_tokens))
    shutil.rmtree(out / ".done")
    swapped = _scp(tmp_path, ref, (("a", "en_yes.wav"), ("b", "en_folder.wav"), ("c", "en_morning.wav"),
                                   ("d", "cmn_boats.wav")))
    caplog.clear()
    assert _tokenize(swapped, ref, out) == 0
    assert any("2 done again because their input changed" in r.getMessage() for r in caplog.records)
    fresh = tmp_path / "fresh"
    assert _tokenize(swapped, ref, fresh) == 0
    assert (out / "tokens.txt").read_bytes() == (fresh / "tokens.txt").read_bytes()


def test_merge_publishes_all_or_nothing(ref, tmp_path, monkeypatch):
    scp, out, dest = _scp(tmp_path, ref), tmp_path / "out", tmp_path / "dest"
    assert _tokenize(scp, ref, out) == 0
    keys = [u.key for u in from_wav_scp(scp)]
    merge_jobs(out, 0, keys, dest, utt2speech_token=dest / "utt2speech_token.pt")
    before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    # a second merge, of tokens made in bf16 (another tokenizer.json), interrupted while writing its last output
    assert _tokenize(scp, ref, out, "--dtype", "bfloat16") == 0
    import s3tok.util.fsutil as fsutil

    synced = []

    def interrupted(fd):  # the 5th and last output (utt2speech_token.pt) is cut while being written
        synced.append(fd)
        if len(synced) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(fsutil.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge_jobs(out, 0, keys, dest, utt2speech_token=dest / "utt2speech_token.pt")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    assert after == before  # nothing of the interrupted merge was published, no temporaries left
    assert not (dest / ".done" / "merge_tokens").exists()  # and the set is not marked as merged
    merge_jobs(out, 0, keys, dest, utt2speech_token=dest / "utt2speech_token.pt")
    assert (dest / ".done" / "merge_tokens").exists() and not list(dest.glob(".*.tmp"))
    # the same merge again gives the same bytes (torch.save made in memory: no temporary name inside it)
    again = tmp_path / "again"
    merge_jobs(out, 0, keys, again, utt2speech_token=again / "utt2speech_token.pt")
    assert (again / "utt2speech_token.pt").read_bytes() == (dest / "utt2speech_token.pt").read_bytes()
    assert '"dtype": "bfloat16"' in (dest / "tokenizer.json").read_text()


def test_consistent_dir_lists_only_tokenized_keys(ref, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"a {ref / 'audio' / 'en_yes.wav'}\nbad {tmp_path / 'missing.wav'}\n"
                                  f"c {ref / 'audio' / 'en_morning.wav'}\n")
    (data / "text").write_text("a hello\nbad oops\nc morning\n")
    (data / "utt2spk").write_text("a s1\nbad s1\nc s2\n")
    (data / "spk2utt").write_text("s1 a bad\ns2 c\n")
    out = tmp_path / "out"
    assert tokenize_cli.main(["--data_dir", str(data), "--model", str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"),
                              "--output_dir", str(out), "--no_progress", "--max_fail_ratio", "1"]) == 0
    merge_jobs(out, 0, ["a", "bad", "c"], data, utt2speech_token=data / "utt2speech_token.pt")
    kept, removed = write_consistent_dir(data, data, data / "tokenized")
    t = data / "tokenized"
    assert (kept, removed) == (2, 1)
    for name in ("wav.scp", "text", "utt2spk", "tokens.scp", "utt2num_tokens"):
        assert [line.split()[0] for line in (t / name).read_text().splitlines()] == ["a", "c"], name
    assert (t / "spk2utt").read_text() == "s1 a\ns2 c\n"
    assert (t / "removed").read_text().startswith("bad ")
    assert set(torch.load(t / "utt2speech_token.pt")) == {"a", "c"}
    write_consistent_dir(data, data, t)  # rerun replaces its own folder
    stranger = tmp_path / "mine"
    stranger.mkdir()
    with pytest.raises(ValueError, match="not made by merge_tokens"):  # bad usage (exit 2), not a disk fault
        write_consistent_dir(data, data, stranger)


def test_killed_compute_mel_leftovers_are_removed(ref, tmp_path):
    scp, out = _scp(tmp_path, ref), tmp_path / "mel"
    out.mkdir()
    stray = out / ".feats.1.ark.abc123.tmp"
    stray.write_bytes(b"x" * 1000)
    assert compute_mel_cli.main(["--wav_scp", str(scp), "--output_dir", str(out), "--num_jobs", "1", "--job", "1",
                                 "--no_progress"]) == 0
    assert not stray.exists() and (out / "feats.1.ark").is_file()


def test_compute_mel_is_a_job_like_the_others(ref, tmp_path, monkeypatch):
    """compute-mel takes the job options every stage has: -v, --overwrite (a finished job is redone, not
    skipped) and, under torchrun, this rank's shard."""
    scp, out = _scp(tmp_path, ref), tmp_path / "mel"
    args = ["--wav_scp", str(scp), "--output_dir", str(out), "--no_progress", "-v"]
    assert compute_mel_cli.main(args) == 0
    ark = out / "feats.ark"
    first = ark.stat().st_mtime_ns
    assert compute_mel_cli.main(args) == 0 and ark.stat().st_mtime_ns == first  # done: skipped
    os.utime(ark, ns=(first - 10**9, first - 10**9))
    assert compute_mel_cli.main([*args, "--overwrite"]) == 0
    assert ark.stat().st_mtime_ns != first - 10**9  # redone

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    ranked = tmp_path / "mel_ranked"
    assert compute_mel_cli.main(["--wav_scp", str(scp), "--output_dir", str(ranked), "--no_progress"]) == 0
    keys = [line.split()[0] for line in (ranked / "feats.2.scp").read_text().splitlines()]
    assert keys and keys == [k for k, _ in CLIPS][-len(keys):] and len(keys) < len(CLIPS)
    assert not (ranked / "feats.scp").exists() and not (ranked / "feats.1.scp").exists()
