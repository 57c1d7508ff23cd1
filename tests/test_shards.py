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


def _member_tar(path: Path, members, end: bool = True) -> Path:
    """A tar of ``[(name, bytes)]``, without its end-of-archive blocks unless ``end``."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        if not end:
            tf.fileobj.flush()
            size = tf.offset
    if not end:
        with open(path, "r+b") as f:
            f.truncate(size)
    return path


def _one_list(tmp_path: Path, tar: Path) -> Path:
    lst = tmp_path / f"{tar.stem}.list"
    lst.write_text(f"{tar}\n")
    return lst


@pytest.mark.parametrize("damage", ["bad_header", "cut_in_header", "cut_at_member"])
def test_every_kind_of_damage_is_reported_with_the_keys_before_it(tmp_path, caplog, damage):
    """tarfile ends an archive quietly at an invalid, cut or missing header past the first: each is damage,
    logged naming the shard (before the fix these shards lost their last keys without a word)."""
    t = _member_tar(tmp_path / "s.tar", [(f"k{i}.wav", bytes(1000)) for i in range(5)])
    data = t.read_bytes()
    with tarfile.open(t) as tf:
        third = tf.getmembers()[3].offset
    if damage == "bad_header":
        b = bytearray(data)
        b[third + 5] ^= 0x55
        t.write_bytes(bytes(b))
    else:
        t.write_bytes(data[:third + (100 if damage == "cut_in_header" else 0)])
    assert [u.key for u in from_tar_list(_one_list(tmp_path, t))] == ["k0", "k1", "k2"]
    assert any("s.tar: damaged after 3 key(s)" in r.getMessage() for r in caplog.records)
    caplog.clear()
    full = _member_tar(tmp_path / "full.tar", [("a.wav", bytes(10))])
    assert [u.key for u in from_tar_list(_one_list(tmp_path, full))] == ["a"] and not caplog.records


def test_a_crafted_header_length_is_damage_not_an_allocation(tmp_path, caplog):
    """A GNU long-name header stating 3 GB of name: tarfile would read it whole; the index stops there."""
    t = _member_tar(tmp_path / "s.tar", [("k0.wav", bytes(1000))], end=False)
    evil = tarfile.TarInfo("././@LongLink")
    evil.type, evil.size = tarfile.GNUTYPE_LONGNAME, 3 * 10 ** 9
    with open(t, "ab") as f:
        f.write(evil.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096))
    assert [u.key for u in from_tar_list(_one_list(tmp_path, t))] == ["k0"]
    assert any("damaged after 1 key(s)" in r.getMessage() and "3000000000 bytes of header data" in r.getMessage()
               for r in caplog.records)
    first = tmp_path / "first.tar"  # the crafted header first: no keys at all, an error naming the shard
    first.write_bytes(evil.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096))
    with pytest.raises(ValueError, match="first.tar: .*3000000000 bytes of header data"):
        from_tar_list(_one_list(tmp_path, first))


def test_a_key_that_cannot_name_an_utterance_is_refused_naming_the_member(tmp_path):
    spaced = _member_tar(tmp_path / "spaced.tar", [("a.wav", b"x"), ("my utt.wav", b"x")])
    with pytest.raises(ValueError, match=r"spaced.tar//my utt.wav: its key contains whitespace"):
        from_tar_list(_one_list(tmp_path, spaced))
    gbk = tmp_path / "gbk.tar"
    with tarfile.open(gbk, "w", format=tarfile.GNU_FORMAT, encoding="gbk") as tf:  # a name written by a tool in a GBK locale
        ti = tarfile.TarInfo("今天.wav")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match=r"gbk.tar//.*: its name is not UTF-8"):
        from_tar_list(_one_list(tmp_path, gbk))


def test_members_left_out_are_logged(tmp_path, caplog):
    """A second audio member of a key (WebDataset: another field of the same sample) and hidden files
    (macOS's ._NAME) are no utterances of their own: left out, but each shard says so."""
    t = _member_tar(tmp_path / "s.tar", [("spk1.utt1.wav", b"x"), ("spk1.utt2.wav", b"x"), ("x.wav", b"x"),
                                          ("x.flac", b"x"), ("._x.wav", b"x"), ("d/.y.wav", b"x"), ("z.wav", b"x")])
    assert [u.key for u in from_tar_list(_one_list(tmp_path, t))] == ["spk1", "x", "z"]
    msg = next(r.getMessage() for r in caplog.records if "left out" in r.getMessage())
    assert "s.tar: 4 member(s) left out" in msg and "spk1.utt2.wav: a second audio member of key spk1" in msg


def test_member_is_read_as_the_decoder_asks_not_whole(tmp_path, monkeypatch):
    """A member whose WAV header states hours of audio fails from its header, reading kilobytes of it."""
    from s3tok.data import shards
    from s3tok.stages.features import load_waveform

    samples = 16000 * 3600 * 3  # 3 h at 16 kHz, 16-bit: 345 MB stated, none of it written
    header = b"RIFF" + (36 + 2 * samples).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
    header += (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header += b"data" + (2 * samples).to_bytes(4, "little")
    ti = tarfile.TarInfo("long.wav")
    ti.size = len(header) + 2 * samples
    t = tmp_path / "s.tar"
    with open(t, "wb") as f:  # a sparse file: the samples are a hole
        f.write(ti.tobuf() + header)
        f.seek(512 + ti.size + (-ti.size % 512) + 1024 - 1)
        f.write(b"\0")
    utt = from_tar_list(_one_list(tmp_path, t))[0]
    read = []
    real = shards._MemberFile.readinto
    monkeypatch.setattr(shards._MemberFile, "readinto", lambda self, b: read.append(real(self, b)) or read[-1])
    with pytest.raises(ValueError, match=r"s.tar//long.wav: 10800 s of audio, over the 7200 s limit"):
        load_waveform(utt)
    assert 0 < sum(read) < 1 << 20


def test_shard_keys_tell_shards_of_the_same_name_apart(tmp_path):
    tars = []
    for name in ("en/000000.tar", "zh/000000.tar", "train.000.tar", "train.001.tar"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        tars.append(_member_tar(tmp_path / name, [("u1.wav", b"x")]))
    lst = tmp_path / "all.list"
    lst.write_text("en/000000.tar\nzh/000000.tar\ntrain.000.tar\ntrain.001.tar\n")
    assert [u.key for u in from_tar_list(lst, shard_key=True)] == [
        "en/000000/u1", "zh/000000/u1", "train.000/u1", "train.001/u1"]


def test_shard_metadata_lists_unusable_fields_and_keeps_the_rest(tmp_path):
    from s3tok.bin import shard_metadata as meta_cli

    def js(d):
        import json
        return json.dumps(d).encode()

    t = _member_tar(tmp_path / "m.tar", [
        ("a1.wav", b"x"), ("a1.json", js({"text": " hello \n world ", "speaker": "John  Smith"})),
        ("a2.wav", b"x"), ("a2.txt", "今天天气".encode("gbk")),
        ("a3.wav", b"x"), ("a3.json", js({"text": ["x", "y"], "speaker": 17})),
        ("a4.wav", b"x"), ("a4.json", js({"text": "", "speaker": ""})),
        ("a5.wav", b"x"), ("a5.txt", "好".encode())])
    d = tmp_path / "data"
    assert meta_cli.main(["--tar_list", str(_one_list(tmp_path, t)), "--data_dir", str(d)]) == 0
    assert (d / "text").read_text() == "a1 hello world\na5 好\n"
    assert (d / "utt2spk").read_text() == "a1 John_Smith\na3 17\n"
    problems = (d / "metadata_problems").read_text()
    assert f"a2 {t}//a2.txt: unreadable metadata ('utf-8' codec can't decode" in problems
    assert f"a3 {t}//a3.json: 'text' is a JSON list, not a string" in problems
    assert f"a4 {t}//a4.json: 'text' is empty" in problems and f"a4 {t}//a4.json: 'speaker' is empty" in problems
    assert f"a5 {t}//a5.txt: no 'speaker'" in problems


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
    assert "orphan no metadata member" in problems


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


def test_a_list_file_is_cut_at_newlines_only(tmp_path):
    """A shard path holding U+2028 is one path (str.splitlines cut it in two)."""
    from s3tok.data.shards import read_path_list

    lst = tmp_path / "l"
    lst.write_text("a\u2028b.tar\r\nc.tar\n", encoding="utf-8")
    assert read_path_list(lst) == [str(tmp_path / "a\u2028b.tar"), str(tmp_path / "c.tar")]
