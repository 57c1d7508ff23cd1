"""``s3tok make-parquet``: CosyVoice's training shards, read back as CosyVoice's ``parquet_opener`` reads them;
skipped keys with their reasons, resume by shard, segments, pipes, tar members, instruct, missing pyarrow."""
from __future__ import annotations

import errno
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf
import torch

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from s3tok.bin import make_parquet as cli  # noqa: E402
from s3tok.data import cosyvoice_parquet as cvp  # noqa: E402
from s3tok.stages.parquet_rows import COSYVOICE3_INSTRUCT  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "egs" / "mini" / "corpus" / "data_aishell"

try:
    import pandas  # noqa: F401 - CosyVoice reads the shards with pandas; without it rows come from to_pylist
    HAVE_PANDAS = True
except ImportError:
    HAVE_PANDAS = False


def _mini() -> Dict[str, Path]:
    return {p.stem: p for p in sorted(MINI.glob("wav/*/*/*.wav"), key=lambda p: p.stem)}


def _transcripts() -> Dict[str, str]:
    lines = (MINI / "transcript" / "aishell_transcript_v0.8.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) for line in lines)


def _spk(key: str) -> str:
    return key[6:11]  # BAC009S9001W0001 -> S9001


def _tokens(i: int) -> List[int]:
    return [(7 * i + j) % 6561 for j in range(5 + i)]


def _write_tables(d: Path, keys: List[str], text: Dict[str, str], no_token=(), spk=_spk) -> dict:
    """text, utt2spk and the three .pt tables of ``keys`` in ``d``; returns what was saved."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "text").write_text("".join(f"{k} {text[k]}\n" for k in keys), encoding="utf-8")
    (d / "utt2spk").write_text("".join(f"{k} {spk(k)}\n" for k in keys))
    speakers = list(dict.fromkeys(spk(k) for k in keys))
    tables = {"speech_token": {k: _tokens(i) for i, k in enumerate(keys) if k not in no_token},
              "utt_embedding": {k: [0.25 * i, -1.5, 1e-3 * i] for i, k in enumerate(keys)},
              "spk_embedding": {s: [float(i), 0.5, -0.125 * i] for i, s in enumerate(speakers)}}
    torch.save(tables["speech_token"], d / "utt2speech_token.pt")
    torch.save(tables["utt_embedding"], d / "utt2embedding.pt")
    torch.save(tables["spk_embedding"], d / "spk2embedding.pt")
    return tables


def _mini_data_dir(tmp_path: Path, no_token=()) -> tuple:
    """A data dir of the mini corpus's 9 utterances (absolute paths) and its tables."""
    wavs = _mini()
    d = tmp_path / "data"
    d.mkdir()
    (d / "wav.scp").write_text("".join(f"{k} {p}\n" for k, p in wavs.items()))
    tables = _write_tables(d, list(wavs), _transcripts(), no_token)
    return d, wavs, tables


def _run(*argv) -> int:
    return cli.main([str(a) for a in argv] + ["--no_progress"])


def _list(out: Path, name: str = "data.list") -> List[str]:
    return (out / name).read_text(encoding="utf-8").splitlines()


def opener_rows(out: Path) -> List[dict]:
    """The rows of ``out/data.list`` as CosyVoice's ``parquet_opener`` yields them: for each listed file,
    ``pq.ParquetFile(url).iter_batches(batch_size=64)``, ``.to_pandas()``, ``dict(df.loc[i])``."""
    rows = []
    for url in _list(out):
        for batch in pq.ParquetFile(url).iter_batches(batch_size=64):
            if HAVE_PANDAS:
                df = batch.to_pandas()
                rows += [dict(df.loc[i]) for i in range(len(df))]
            else:
                rows += batch.to_pylist()
    return rows


def _skipped(out: Path) -> Dict[str, str]:
    return dict(line.split(" ", 1) for line in _list(out, "parquet_skipped"))


# ---------------------------------------------------------------------------------------------------------- format

def test_every_field_of_every_row(tmp_path):
    d, wavs, tables = _mini_data_dir(tmp_path, no_token={"BAC009S9002W0004"})
    out = tmp_path / "parquet"
    assert _run("--data_dir", d, "--output_dir", out, "--num_utts_per_parquet", 3, "--max_skipped_ratio", 0.2) == 0

    keys = [k for k in wavs if k != "BAC009S9002W0004"]
    shards = _list(out)
    assert shards == [str(out.absolute() / cvp.shard_name(i)) for i in range(3)]  # 8 written: 3 + 3 + 2
    for name in cvp.LISTS:
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in _list(out, name)), name
    assert _skipped(out) == {"BAC009S9002W0004": "no speech_token"}

    schema = pq.ParquetFile(shards[0]).schema_arrow
    assert schema.names == list(cvp.COLUMNS[:-1])  # no --instruct: no instruct column
    assert str(schema.field("speech_token").type) in ("list<element: int64>", "list<item: int64>")
    assert schema.field("utt_embedding").type.value_type == schema.field("spk_embedding").type.value_type
    assert str(schema.field("utt_embedding").type.value_type) == "double"
    assert str(schema.field("audio_data").type) == "binary"

    rows = opener_rows(out)
    assert [r["utt"] for r in rows] == keys
    text = _transcripts()
    for r in rows:
        k = r["utt"]
        assert r["audio_data"] == wavs[k].read_bytes(), k
        assert r["wav"] == str(wavs[k])
        assert r["text"] == " ".join(text[k].split())
        assert r["spk"] == _spk(k)
        token = np.asarray(r["speech_token"])
        assert token.dtype == np.int64 and token.tolist() == tables["speech_token"][k]
        for col, want in (("utt_embedding", tables["utt_embedding"][k]),
                          ("spk_embedding", tables["spk_embedding"][_spk(k)])):
            vec = np.asarray(r[col])
            assert vec.dtype == np.float64 and vec.tolist() == want, (k, col)
        if HAVE_PANDAS:  # what CosyVoice's processors then do with them
            assert r["speech_token"].shape == (len(tables["speech_token"][k]),)  # compute_fbank: .shape[0]
            assert torch.tensor(r["utt_embedding"], dtype=torch.float32).shape == (3,)  # parse_embedding

    for i, shard in enumerate(shards):
        utt2 = json.loads((out / cvp.utt2parquet_name(i)).read_text(encoding="utf-8"))
        spk2 = json.loads((out / cvp.spk2parquet_name(i)).read_text(encoding="utf-8"))
        in_shard = [r["utt"] for r in cvp.read_rows(shard)]
        assert utt2 == {k: shard for k in in_shard}
        assert spk2 == {s: shard for s in dict.fromkeys(_spk(k) for k in in_shard)}
    assert _list(out, "utt2data.list") == [str(out.absolute() / cvp.utt2parquet_name(i)) for i in range(3)]


def test_bad_audio_is_a_skipped_key_and_its_shard_is_written(tmp_path):
    d, wavs, _ = _mini_data_dir(tmp_path)
    keys = list(wavs)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really")
    lines = [f"{k} {p}" for k, p in wavs.items()]
    lines[1] = f"{keys[1]} {tmp_path / 'missing.wav'}"
    lines[4] = f"{keys[4]} {garbage}"
    (d / "wav.scp").write_text("\n".join(lines) + "\n")
    out = tmp_path / "parquet"
    assert _run("--data_dir", d, "--output_dir", out, "--num_utts_per_parquet", 3) == 1  # 2 / 9 > 0.05
    skipped = _skipped(out)
    assert set(skipped) == {keys[1], keys[4]}
    assert skipped[keys[1]].startswith("audio: ") and "missing.wav" in skipped[keys[1]]
    assert "not decodable audio" in skipped[keys[4]]
    per_shard = [[r["utt"] for r in cvp.read_rows(p)] for p in _list(out)]
    assert per_shard == [[keys[0], keys[2]], [keys[3], keys[5]], keys[6:9]]  # planned by tables, not shifted
    # a rerun knows the shards' skips without reading them again
    assert _run("--data_dir", d, "--output_dir", out, "--num_utts_per_parquet", 3) == 1
    assert _skipped(out) == skipped


def test_a_shard_with_no_readable_audio_is_not_listed(tmp_path):
    d, wavs, _ = _mini_data_dir(tmp_path)
    keys = list(wavs)
    out = tmp_path / "parquet"
    args = ("--data_dir", d, "--output_dir", out, "--num_utts_per_parquet", 3, "--max_skipped_ratio", 0.5)
    assert _run(*args) == 0
    lines = [f"{k} {tmp_path / 'gone' / k}.wav" if i < 3 else f"{k} {wavs[k]}" for i, k in enumerate(keys)]
    (d / "wav.scp").write_text("\n".join(lines) + "\n")
    for _ in range(2):  # the second run finds shard 0 done (empty) and does not list it either
        assert _run(*args) == 0
        assert _list(out) == [str(out.absolute() / cvp.shard_name(i)) for i in (1, 2)]
        assert not (out / cvp.shard_name(0)).exists() and not (out / cvp.utt2parquet_name(0)).exists()
        assert sorted(_skipped(out)) == keys[:3]
        assert [r["utt"] for r in opener_rows(out)] == keys[3:]


def test_instruct_and_text_remove_spaces(tmp_path):
    d, wavs, _ = _mini_data_dir(tmp_path)
    out = tmp_path / "p1"
    assert _run("--data_dir", d, "--output_dir", out, "--instruct", "--text_remove_spaces", "--no_embedding") == 0
    rows = opener_rows(out)
    assert pq.ParquetFile(_list(out)[0]).schema_arrow.names == ["utt", "audio_data", "wav", "text", "spk",
                                                                "speech_token", "instruct"]
    text = _transcripts()
    assert all(r["instruct"] == COSYVOICE3_INSTRUCT for r in rows)
    assert all(r["text"] == "".join(text[r["utt"]].split()) and " " not in r["text"] for r in rows)
    assert rows[0]["text"] == "今天天气很好"  # BAC009S9001W0001: 今天 天气 很 好
    out2 = tmp_path / "p2"
    assert _run("--data_dir", d, "--output_dir", out2, "--instruct", "Speak slowly.<|endofprompt|>",
                "--no_speech_token") == 0
    rows = opener_rows(out2)
    assert {r["instruct"] for r in rows} == {"Speak slowly.<|endofprompt|>"} and "speech_token" not in rows[0]


# ---------------------------------------------------------------------------------------------------------- resume

def test_resume_skips_done_shards_and_redoes_changed_ones(tmp_path, caplog):
    d, wavs, tables = _mini_data_dir(tmp_path)
    out = tmp_path / "parquet"
    args = ("--data_dir", d, "--output_dir", out, "--num_utts_per_parquet", 3)
    assert _run(*args) == 0
    shards = [Path(p) for p in _list(out)]
    stamp = {p: p.stat().st_mtime_ns for p in shards}

    caplog.clear()
    assert _run(*args) == 0
    assert [p.stat().st_mtime_ns for p in shards] == list(stamp.values())
    assert caplog.text.count("already done; skipping") == 3

    keys = list(wavs)
    tables["speech_token"][keys[4]] = [1, 2, 3]  # shard 1 changes
    torch.save(tables["speech_token"], d / "utt2speech_token.pt")
    shards[2].unlink()  # shard 2 is lost
    assert _run(*args) == 0
    assert shards[0].stat().st_mtime_ns == stamp[shards[0]]
    assert shards[1].stat().st_mtime_ns != stamp[shards[1]]
    assert shards[2].is_file()
    rows = {r["utt"]: r for r in opener_rows(out)}
    assert np.asarray(rows[keys[4]]["speech_token"]).tolist() == [1, 2, 3] and len(rows) == 9

    # fewer shards now: the lists name 2, and the third of the earlier run is gone
    assert _run("--data_dir", d, "--output_dir", out, "--num_utts_per_parquet", 5) == 0
    assert _list(out) == [str(out.absolute() / cvp.shard_name(i)) for i in range(2)]
    assert not (out / cvp.shard_name(2)).exists() and not (out / cvp.utt2parquet_name(2)).exists()
    assert len(opener_rows(out)) == 9


# ---------------------------------------------------------------------------------------------------------- sources

def _recordings(tmp_path: Path) -> Dict[str, tuple]:
    """A 16-bit recording at 16 kHz and a float32 stereo one at 22.05 kHz: ``{reco: (path, samples, rate)}``."""
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(16000 * 3) * 3000).astype(np.int16)
    flt = (rng.standard_normal((22050 * 2, 2)) * 0.1).astype(np.float32)
    a, b = tmp_path / "a16.wav", tmp_path / "b32f.wav"
    sf.write(a, pcm, 16000, subtype="PCM_16")
    sf.write(b, flt, 22050, subtype="FLOAT")
    return {"recoA": (a, pcm.astype(np.float32) / 32768, 16000), "recoB": (b, flt, 22050)}


def test_segments_and_pipes_are_wav_bytes_of_their_samples(tmp_path):
    recos = _recordings(tmp_path)
    d = tmp_path / "data"
    segs = {"uA1": ("recoA", 0.5, 1.25), "uA2": ("recoA", 2.0, -1), "uB1": ("recoB", 0.1, 1.7)}
    d.mkdir()
    (d / "wav.scp").write_text(f"recoA {recos['recoA'][0]}\nrecoB cat {recos['recoB'][0]} |\n")
    (d / "segments").write_text("".join(f"{u} {r} {s} {e}\n" for u, (r, s, e) in segs.items()))
    keys = list(segs)
    _write_tables(d, keys, {k: f"text of {k}" for k in keys}, spk=lambda k: f"spk{k[1]}")
    out = tmp_path / "parquet"
    assert _run("--data_dir", d, "--output_dir", out) == 0
    rows = {r["utt"]: r for r in opener_rows(out)}
    assert set(rows) == set(keys)
    for u, (reco, start, end) in segs.items():
        path, samples, rate = recos[reco]
        info = sf.info(io.BytesIO(rows[u]["audio_data"]))
        assert info.format == "WAV" and info.samplerate == rate
        assert info.subtype == ("PCM_16" if reco == "recoA" else "FLOAT")
        got, _ = sf.read(io.BytesIO(rows[u]["audio_data"]), dtype="float32", always_2d=True)
        s, e = round(start * rate), (len(samples) if end == -1 else round(end * rate))
        want = samples[s:e].reshape(e - s, -1)
        assert got.shape == want.shape and np.array_equal(got, want), u  # bit-exact, all channels
    assert rows["uA1"]["wav"] == str(recos["recoA"][0]) and rows["uB1"]["wav"] == f"cat {recos['recoB'][0]} |"

    # a whole pipe, no segments: its decoded audio as WAV
    d2 = tmp_path / "data2"
    d2.mkdir()
    (d2 / "wav.scp").write_text(f"p1 cat {recos['recoA'][0]} |\np2 false |\n")
    _write_tables(d2, ["p1", "p2"], {"p1": "a", "p2": "b"}, spk=lambda k: "sp")
    out2 = tmp_path / "parquet2"
    assert _run("--data_dir", d2, "--output_dir", out2, "--max_skipped_ratio", 1) == 0
    (row,) = opener_rows(out2)
    got, rate = sf.read(io.BytesIO(row["audio_data"]), dtype="float32")
    assert rate == 16000 and np.array_equal(got, recos["recoA"][1])
    assert _skipped(out2)["p2"].startswith("audio: ") and "pipe command failed" in _skipped(out2)["p2"]


def test_tar_members_are_their_bytes(tmp_path):
    wavs = _mini()
    keys = list(wavs)[:3]
    tar = tmp_path / "shards" / "shard-000000.tar"
    tar.parent.mkdir()
    members = {}
    with tarfile.open(tar, "w") as tf:
        for i, k in enumerate(keys):
            audio, rate = sf.read(wavs[k], dtype="float32")
            buf = io.BytesIO()
            sf.write(buf, audio, rate, format="FLAC" if i % 2 else "WAV")
            data = buf.getvalue()
            name = f"{k}.{'flac' if i % 2 else 'wav'}"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            members[k] = (name, data)
    (tmp_path / "shards.list").write_text("shards/shard-000000.tar\n")
    d = tmp_path / "data"
    _write_tables(d, keys, _transcripts())
    out = tmp_path / "parquet"
    assert _run("--data_dir", d, "--tar_list", tmp_path / "shards.list", "--output_dir", out) == 0
    rows = opener_rows(out)
    assert [r["utt"] for r in rows] == keys
    for r in rows:
        name, data = members[r["utt"]]
        assert r["audio_data"] == data
        assert r["wav"] == f"{tar}//{name}"


def _wav_bytes(seconds: float, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    samples = (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
    sf.write(buf, samples, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_max_duration_and_the_value_size_apply_to_files_members_and_rows(tmp_path, monkeypatch):
    """--max_duration is checked from the header of a whole file, a tar member and a parquet row (before they
    are read); audio too large for one parquet value is a skipped key, not a crash; the others are written."""
    seconds = {"k0": 0.5, "k1": 2.0, "k2": 0.5, "k3": 0.9}
    data = {k: _wav_bytes(s, i) for i, (k, s) in enumerate(seconds.items())}
    keys = list(data)
    d = tmp_path / "data"
    _write_tables(d, keys, {k: "hi" for k in keys}, spk=lambda k: "s")
    for k, b in data.items():
        (tmp_path / f"{k}.wav").write_bytes(b)
    (d / "wav.scp").write_text("".join(f"{k} {tmp_path / k}.wav\n" for k in keys))
    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        for k, b in data.items():
            info = tarfile.TarInfo(f"{k}.wav")
            info.size = len(b)
            tf.addfile(info, io.BytesIO(b))
    (tmp_path / "tar.list").write_text("a.tar\n")
    pq.write_table(pa.table({"utt": keys, "audio_data": list(data.values())}), tmp_path / "a.parquet")
    (tmp_path / "pq.list").write_text("a.parquet\n")
    # k3 (0.9 s) is too large to store: one parquet value may hold fewer bytes (here)
    monkeypatch.setattr(cvp, "MAX_AUDIO_BYTES", len(data["k3"]) - 1)
    for name, source in (("files", []), ("tar", ["--tar_list", tmp_path / "tar.list"]),
                         ("parquet", ["--parquet_list", tmp_path / "pq.list"])):
        out = tmp_path / f"out_{name}"
        assert _run("--data_dir", d, *source, "--output_dir", out, "--max_duration", 1, "--max_skipped_ratio", 1) == 0
        skipped = _skipped(out)
        assert sorted(skipped) == ["k1", "k3"], (name, skipped)
        assert "2 s of audio, over the 1 s limit (--max_duration)" in skipped["k1"], name
        assert "more than one parquet value holds" in skipped["k3"], name
        assert [r["utt"] for r in opener_rows(out)] == ["k0", "k2"], name


def test_a_row_that_cannot_be_stored_is_skipped_and_its_shard_written(tmp_path, monkeypatch):
    """Whatever value pyarrow cannot store (too large, out of its type's range) costs its row only."""
    from s3tok.stages import parquet_rows

    monkeypatch.setattr(parquet_rows, "tokens_of", lambda value, codebook_size=None: list(value))  # unchecked
    d, wavs, tables = _mini_data_dir(tmp_path)
    keys = list(wavs)
    tables["speech_token"][keys[1]] = [1, 2 ** 70]  # not an int64: pa.array raises
    torch.save(tables["speech_token"], d / "utt2speech_token.pt")
    out = tmp_path / "parquet"
    assert _run("--data_dir", d, "--output_dir", out, "--num_utts_per_parquet", 3, "--max_skipped_ratio", 0.2) == 0
    assert list(_skipped(out)) == [keys[1]] and "cannot be stored" in _skipped(out)[keys[1]]
    assert [r["utt"] for r in opener_rows(out)] == [k for k in keys if k != keys[1]]
    utt2 = json.loads((out / cvp.utt2parquet_name(0)).read_text(encoding="utf-8"))
    assert list(utt2) == [keys[0], keys[2]]


def test_row_groups_end_at_a_byte_budget(tmp_path, monkeypatch):
    rows = [{"utt": f"k{i}", "audio_data": _wav_bytes(0.1, i), "wav": "w", "text": "t", "spk": "s"}
            for i in range(5)]
    monkeypatch.setattr(cvp, "ROW_GROUP_BYTES", 2 * len(rows[0]["audio_data"]))
    path = tmp_path / cvp.shard_name(0)
    assert cvp.write_shard(path, rows, cvp.columns_for([])) == 5
    assert pq.ParquetFile(path).num_row_groups == 3  # 2 + 2 + 1 rows
    assert [r["utt"] for r in cvp.read_rows(path)] == [r["utt"] for r in rows]


def test_malformed_pt_values_are_skipped_keys(tmp_path):
    """A token beyond int64 or the codebook (tokenizer.json beside the table), an embedding beyond float:
    that key is skipped with the reason, the run goes on."""
    d, wavs, tables = _mini_data_dir(tmp_path)
    keys = list(wavs)
    tables["speech_token"][keys[0]] = [1, 2 ** 70]
    tables["speech_token"][keys[1]] = [2 ** 63]
    tables["speech_token"][keys[2]] = [5, 6561]
    tables["utt_embedding"][keys[3]] = [10 ** 400, 0.0, 0.0]
    torch.save(tables["speech_token"], d / "utt2speech_token.pt")
    torch.save(tables["utt_embedding"], d / "utt2embedding.pt")
    (d / "tokenizer.json").write_text(json.dumps({"codebook_size": 6561, "model": "x"}))
    out = tmp_path / "parquet"
    assert _run("--data_dir", d, "--output_dir", out, "--max_skipped_ratio", 0.5) == 0
    skipped = _skipped(out)
    assert skipped == {keys[0]: "bad speech_token: not a token: 1180591620717411303424",
                       keys[1]: "bad speech_token: not a token: 9223372036854775808",
                       keys[2]: "bad speech_token: token 6561 outside the codebook of 6561 (tokenizer.json)",
                       keys[3]: "bad utt_embedding: not a finite number: 1000000000000000000000000000000000000..."}
    assert [r["utt"] for r in opener_rows(out)] == keys[4:]


# ---------------------------------------------------------------------------------------------------------- errors

def test_an_output_dir_holding_the_input_shards_is_refused(tmp_path, caplog):
    """CosyVoice's shards given back to make-parquet (to add a column) with the same folder: their names are
    the ones it writes and removes, so the run is refused before anything is written (else rows would be
    read from rewritten files: another key's audio). Through a link to that folder too."""
    d, wavs, _ = _mini_data_dir(tmp_path)
    shards = tmp_path / "shards"
    assert _run("--data_dir", d, "--output_dir", shards, "--num_utts_per_parquet", 4, "--no_speech_token") == 0
    before = {p.name: p.read_bytes() for p in shards.iterdir() if p.is_file()}
    (tmp_path / "link").symlink_to(shards)
    for out in (shards, tmp_path / "link"):
        caplog.clear()
        assert _run("--data_dir", d, "--parquet_list", shards / "data.list", "--output_dir", out) == 2
        line = next(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
        assert str(shards / cvp.shard_name(0)) in line and f"--output_dir {out.absolute()}" in line
        assert {p.name: p.read_bytes() for p in shards.iterdir() if p.is_file()} == before
    # another folder: every row with its own audio, the speech tokens added
    out = tmp_path / "again"
    assert _run("--data_dir", d, "--parquet_list", shards / "data.list", "--output_dir", out) == 0
    rows = opener_rows(out)
    assert [r["utt"] for r in rows] == list(wavs)
    assert all(r["audio_data"] == wavs[r["utt"]].read_bytes() and len(r["speech_token"]) for r in rows)



def test_without_pyarrow_a_clear_error_and_no_lists(tmp_path, monkeypatch, caplog):
    d, _, _ = _mini_data_dir(tmp_path)
    out = tmp_path / "parquet"
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert _run("--data_dir", d, "--output_dir", out) == 2
    assert "needs pyarrow" in caplog.text and "pip install" in caplog.text
    assert not out.exists()  # nothing written: no shard, no list


def test_bad_inputs_exit_2_naming_the_file(tmp_path, caplog):
    d, _, _ = _mini_data_dir(tmp_path)
    out = tmp_path / "parquet"
    missing = tmp_path / "nope.pt"
    assert _run("--data_dir", d, "--output_dir", out, "--utt2speech_token", missing) == 2
    assert str(missing) in caplog.text
    torch.save([1, 2, 3], d / "utt2embedding.pt")
    caplog.clear()
    assert _run("--data_dir", d, "--output_dir", out) == 2
    assert "utt2embedding.pt" in caplog.text and "expected a dict" in caplog.text
    (d / "text").unlink()
    caplog.clear()
    assert _run("--data_dir", d, "--output_dir", out) == 2
    assert str(d / "text") in caplog.text
    assert not (out / "data.list").exists()


def test_disk_error_exits_3_and_writes_no_lists(tmp_path, monkeypatch):
    d, _, _ = _mini_data_dir(tmp_path)
    out = tmp_path / "parquet"

    def full(path, rows, columns, reject=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cvp, "write_shard", full)
    assert _run("--data_dir", d, "--output_dir", out) == 3
    assert not (out / "data.list").exists()
