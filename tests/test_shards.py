"""Tar (WebDataset) shards read in place: the same tokens as from files, bad members and damaged shards,
sharding by tar file."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from s3tok.bin import merge_tokens as merge_cli
from s3tok.bin import tokenize as tokenize_cli
from s3tok.data.sources import from_tar_list
from s3tok.stages.sharding import job_shard

CLIPS = ("en_yes", "cmn_boats", "stereo_mix", "en_music_44k", "cmn_rain_f32", "long_35s")


def _model(ref: Path) -> str:
    return str(ref / "models" / "speech_tokenizer_v2_25hz.onnx")


def _audio_files(ref: Path, tmp_path: Path):
    """The clips as files, one of them re-encoded as MP3 (decoded by the same library on both paths)."""
    files = {}
    for u in CLIPS:
        src = next((ref / "audio").glob(f"{u}.*"))
        files[u] = src
    audio, rate = sf.read(ref / "audio" / "cmn_boats.wav", dtype="float32")
    mp3 = tmp_path / "cmn_boats.mp3"
    sf.write(mp3, audio, rate, format="MP3")
    files["cmn_boats"] = mp3
    return files


def _make_shards(files, tmp_path: Path, per_shard: int = 2, extra=None):
    tars = []
    names = list(files)
    for i in range(0, len(names), per_shard):
        t = tmp_path / f"shard-{i // per_shard:03d}.tar"
        with tarfile.open(t, "w") as tf:
            for u in names[i:i + per_shard]:
                tf.add(files[u], arcname=f"{u}{files[u].suffix}")
                meta = f'{{"text": "text of {u}", "speaker": "spk{i}"}}'.encode()
                ti = tarfile.TarInfo(f"{u}.json")
                ti.size = len(meta)
                tf.addfile(ti, io.BytesIO(meta))
            for name, data in (extra or {}).get(i // per_shard, []):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        tars.append(t)
    lst = tmp_path / "shards.list"
    lst.write_text("".join(f"{t.name}\n" for t in tars))  # relative to the list's folder
    return lst, tars


def _tokens(out: Path):
    return {line.split()[0]: line.split()[1:] for line in (out / "tokens.txt").read_text().splitlines()}


def test_tar_tokens_equal_file_tokens(ref, tmp_path):
    files = _audio_files(ref, tmp_path)
    lst, _ = _make_shards(files, tmp_path)
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {files[u]}\n" for u in files))
    assert tokenize_cli.main(["--tar_list", str(lst), "--model", _model(ref), "--output_dir", str(tmp_path / "tar"),
                              "--no_progress"]) == 0
    assert tokenize_cli.main(["--wav_scp", str(scp), "--model", _model(ref), "--output_dir", str(tmp_path / "scp"),
                              "--no_progress"]) == 0
    got, expected = _tokens(tmp_path / "tar"), _tokens(tmp_path / "scp")
    assert sorted(got) == sorted(CLIPS) and got == expected


def test_jobs_split_by_tar_and_merge(ref, tmp_path):
    files = _audio_files(ref, tmp_path)
    lst, tars = _make_shards(files, tmp_path)
    utts = from_tar_list(lst)
    shards = [job_shard(utts, 2, j) for j in (1, 2)]
    tars_of = [{u.member.tar for u in s} for s in shards]
    assert not tars_of[0] & tars_of[1] and [u.key for s in shards for u in s] == [u.key for u in utts]
    for j in (1, 2):
        assert tokenize_cli.main(["--tar_list", str(lst), "--model", _model(ref), "--output_dir",
                                  str(tmp_path / "out"), "--num_jobs", "2", "--job", str(j), "--no_progress"]) == 0
    assert merge_cli.main(["--tar_list", str(lst), "--output_dir", str(tmp_path / "out"), "--num_jobs", "2",
                           "--dest", str(tmp_path / "merged")]) == 0
    assert len((tmp_path / "merged" / "tokens.scp").read_text().splitlines()) == len(CLIPS)


def test_bad_member_fails_alone_and_damaged_shard_keeps_its_first_keys(ref, tmp_path, caplog):
    files = _audio_files(ref, tmp_path)
    lst, tars = _make_shards(files, tmp_path, extra={0: [("broken.wav", b"RIFF not really audio")]})
    data = tars[-1].read_bytes()  # the last shard cut inside its second member
    first = tarfile.open(tars[-1]).getmembers()
    cut = first[2].offset_data + 100
    tars[-1].write_bytes(data[:cut])
    rc = tokenize_cli.main(["--tar_list", str(lst), "--model", _model(ref), "--output_dir", str(tmp_path / "out"),
                            "--no_progress", "--max_fail_ratio", "1"])
    assert rc == 0
    got = _tokens(tmp_path / "out")
    fails = dict(line.split(" ", 1) for line in (tmp_path / "out" / "utt2fail").read_text().splitlines())
    assert "broken" in fails and "cannot decode audio" in fails["broken"] and "shard-000.tar//broken.wav" in fails["broken"]
    last_keys = [CLIPS[-2], CLIPS[-1]]
    assert last_keys[0] in got and last_keys[1] not in got and last_keys[1] not in fails
    assert any("damaged after 1 key(s)" in r.getMessage() and tars[-1].name in r.getMessage() for r in caplog.records)


def test_duplicate_keys_across_shards_need_shard_keys(ref, tmp_path):
    src = next((ref / "audio").glob("en_yes.*"))
    for name in ("part-a.tar", "part-b.tar"):
        with tarfile.open(tmp_path / name, "w") as tf:
            tf.add(src, arcname="en_yes.wav")
    both = tmp_path / "both.list"
    both.write_text("part-a.tar\npart-b.tar\n")
    with pytest.raises(ValueError, match="'en_yes' is in .*part-a.tar and in .*part-b.tar: keys must be unique"):
        from_tar_list(both)
    assert [u.key for u in from_tar_list(both, shard_key=True)] == ["part-a/en_yes", "part-b/en_yes"]


def test_compressed_shard_is_refused_with_the_fix(tmp_path):
    import gzip

    t = tmp_path / "x.tar"
    with tarfile.open(t, "w") as tf:
        ti = tarfile.TarInfo("a.wav")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    gz = tmp_path / "x.tar.gz"
    gz.write_bytes(gzip.compress(t.read_bytes()))
    lst = tmp_path / "l"
    lst.write_text(f"{gz}\n")
    with pytest.raises(ValueError, match="not an uncompressed tar file.*decompress them first"):
        from_tar_list(lst)


def test_shard_metadata_to_a_data_dir(ref, tmp_path):
    from s3tok.bin import shard_metadata as meta_cli

    files = _audio_files(ref, tmp_path)
    lst, _ = _make_shards(files, tmp_path, extra={1: [("orphan.flac", b"x")]})
    d = tmp_path / "data"
    assert meta_cli.main(["--tar_list", str(lst), "--data_dir", str(d)]) == 0
    text = dict(line.split(" ", 1) for line in (d / "text").read_text().splitlines())
    assert text["en_yes"] == "text of en_yes" and len(text) == len(CLIPS)
    utt2spk = dict(line.split() for line in (d / "utt2spk").read_text().splitlines())
    assert utt2spk["en_yes"] == "spk0" and utt2spk["stereo_mix"] == "spk2"
    assert "s" in (d / "spk2utt").read_text()
    problems = (d / "metadata_problems").read_text()
    assert "orphan no 'text'" in problems and "orphan no 'speaker'" in problems


def _write_parquet(path: Path, files, hf: bool = False, rows_per_group: int = 2, bad=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(files) + ([bad[0]] if bad else [])
    data = [Path(files[k]).read_bytes() for k in files] + ([bad[1]] if bad else [])
    if hf:
        audio = pa.array([{"bytes": d, "path": f"{k}.wav"} for k, d in zip(keys, data)])
        table = pa.table({"id": keys, "audio": audio})
    else:
        table = pa.table({"utt": keys, "audio_data": data, "text": [f"text {k}" for k in keys]})
    pq.write_table(table, path, row_group_size=rows_per_group)


def test_parquet_tokens_equal_file_tokens(ref, tmp_path):
    pytest.importorskip("pyarrow")
    files = _audio_files(ref, tmp_path)
    _write_parquet(tmp_path / "a.parquet", {k: files[k] for k in CLIPS[:3]})
    _write_parquet(tmp_path / "b.parquet", {k: files[k] for k in CLIPS[3:]}, bad=("broken", b"RIFF nope"))
    lst = tmp_path / "data.list"
    lst.write_text("a.parquet\nb.parquet\n")
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {files[u]}\n" for u in files))
    assert tokenize_cli.main(["--parquet_list", str(lst), "--model", _model(ref), "--output_dir",
                              str(tmp_path / "pq"), "--no_progress", "--max_fail_ratio", "1"]) == 0
    assert tokenize_cli.main(["--wav_scp", str(scp), "--model", _model(ref), "--output_dir", str(tmp_path / "scp"),
                              "--no_progress"]) == 0
    got = _tokens(tmp_path / "pq")
    assert got == _tokens(tmp_path / "scp")
    fail = (tmp_path / "pq" / "utt2fail").read_text()
    assert fail.startswith("broken ") and "b.parquet#" in fail
    # two jobs: one file each
    for j in (1, 2):
        assert tokenize_cli.main(["--parquet_list", str(lst), "--model", _model(ref), "--output_dir",
                                  str(tmp_path / "jobs"), "--num_jobs", "2", "--job", str(j), "--no_progress",
                                  "--max_fail_ratio", "1"]) == 0
    job1 = {line.split()[0] for line in (tmp_path / "jobs" / "tokens.1.txt").read_text().splitlines()}
    assert job1 == set(CLIPS[:3])


def test_parquet_hugging_face_audio_struct(ref, tmp_path):
    pytest.importorskip("pyarrow")
    files = _audio_files(ref, tmp_path)
    _write_parquet(tmp_path / "hf.parquet", {k: files[k] for k in CLIPS[:2]}, hf=True)
    lst = tmp_path / "l"
    lst.write_text("hf.parquet\n")
    rc = tokenize_cli.main(["--parquet_list", str(lst), "--parquet_key_column", "id", "--parquet_audio_column", "audio",
                            "--parquet_audio_field", "bytes", "--model", _model(ref), "--output_dir",
                            str(tmp_path / "out"), "--no_progress"])
    assert rc == 0 and sorted(_tokens(tmp_path / "out")) == sorted(CLIPS[:2])
    rc = tokenize_cli.main(["--parquet_list", str(lst), "--model", _model(ref), "--output_dir", str(tmp_path / "x"),
                            "--no_progress"])
    assert rc == 2  # no column 'utt': one line naming the columns there are
