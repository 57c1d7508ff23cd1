"""``--parquet_list`` input (:mod:`s3tok.data.parquet`): keys and column types checked when indexing, rows of a
file that changed since, a damaged row group read once, a large row group read in bounded batches; and
tokenize never publishing tokens.txt for a key its ark refuses."""
from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from s3tok.bin import tokenize as tokenize_cli  # noqa: E402
from s3tok.data import parquet  # noqa: E402
from s3tok.data.parquet import index_parquet  # noqa: E402


def _wav(seed: int, seconds: float = 0.1) -> bytes:
    buf = io.BytesIO()
    samples = np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1
    sf.write(buf, samples.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write(path: Path, columns: dict, **kw) -> Path:
    pq.write_table(pa.table(columns), path, **kw)
    return path


@pytest.mark.parametrize("bad, problem", [(None, "the key is null"), ("", "the key is empty"),
                                          ("my utt", "the key 'my utt' contains whitespace or a control character"),
                                          ("a\x01b", "the key 'a\\x01b' contains whitespace or a control character")])
def test_a_key_that_cannot_name_an_utterance_is_an_error_at_indexing(tmp_path, caplog, bad, problem):
    f = _write(tmp_path / "k.parquet", {"utt": ["a1", bad, "a3"], "audio_data": [_wav(i) for i in range(3)]})
    with pytest.raises(ValueError, match=re.escape(f"k.parquet#0/1: {problem} (column 'utt')")):
        index_parquet(f)
    # the command: exit 2 with that one line, before any job work (the model is not even looked at)
    (tmp_path / "l").write_text("k.parquet\n")
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        rc = tokenize_cli.main(["--parquet_list", str(tmp_path / "l"), "--model", str(tmp_path / "no.onnx"),
                                "--output_dir", str(out), "--no_progress"])
    assert rc == 2 and not out.exists()
    assert any("k.parquet#0/1" in r.getMessage() and problem in r.getMessage() for r in caplog.records)


def test_integer_keys_are_their_decimal_strings(tmp_path):
    f = _write(tmp_path / "i.parquet", {"utt": [7, 11], "audio_data": [_wav(0), _wav(1)]})
    assert [k for k, _ in index_parquet(f)] == ["7", "11"]


def test_the_audio_column_type_is_checked_at_indexing(tmp_path):
    wavs = [_wav(i) for i in range(2)]
    hf = pa.array([{"bytes": w, "path": f"{i}.wav"} for i, w in enumerate(wavs)])
    _write(tmp_path / "paths.parquet", {"utt": ["a", "b"], "audio_data": ["a.wav", "b.wav"]})
    _write(tmp_path / "hf.parquet", {"utt": ["a", "b"], "audio": hf})
    _write(tmp_path / "bin.parquet", {"utt": ["a", "b"], "audio_data": wavs})
    _write(tmp_path / "large.parquet", {"utt": ["a", "b"], "audio_data": pa.array(wavs, pa.large_binary())})
    _write(tmp_path / "hfstr.parquet", {"utt": ["a"], "audio": pa.array([{"bytes": "x", "path": "p"}])})
    bad = [("paths.parquet", "audio_data", None, "column 'audio_data' is string, expected binary"),
           ("hf.parquet", "audio", None, "it is a struct: name its bytes field with --parquet_audio_field "
                                         "(fields: bytes, path)"),
           ("bin.parquet", "audio_data", "bytes", "column 'audio_data' is binary, expected a struct"),
           ("hf.parquet", "audio", "data", "column 'audio' has no field 'data' (fields: bytes, path)"),
           ("hfstr.parquet", "audio", "bytes", "field 'bytes' of column 'audio' is string, expected binary")]
    for name, column, field, message in bad:
        with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / name))}: .*{re.escape(message)}"):
            index_parquet(tmp_path / name, audio_column=column, audio_field=field)
    # the right options read the bytes back
    for name, column, field in (("bin.parquet", "audio_data", None), ("large.parquet", "audio_data", None),
                                ("hf.parquet", "audio", "bytes")):
        rows = index_parquet(tmp_path / name, audio_column=column, audio_field=field)
        assert [r.open().read() for _, r in rows] == wavs, name


def test_a_file_changed_after_indexing_is_not_read_as_the_old_rows(tmp_path):
    f = _write(tmp_path / "c.parquet", {"utt": ["a", "b"], "audio_data": [_wav(0), _wav(1)]})
    rows = index_parquet(f)
    assert rows[0][1].open().read() == _wav(0)  # cached now
    _write(f, {"utt": ["x", "y"], "audio_data": [_wav(5), _wav(6, seconds=0.2)]})  # same name, other rows
    for _, row in rows:
        with pytest.raises(ValueError, match="changed after it was indexed"):
            row.open()
    assert [r.open().read() for _, r in index_parquet(f)] == [_wav(5), _wav(6, seconds=0.2)]


def test_a_damaged_row_group_is_read_once_and_names_the_file(tmp_path, monkeypatch):
    rows = [np.random.default_rng(i).integers(0, 4, 5000, dtype=np.uint8).tobytes() for i in range(12)]
    f = _write(tmp_path / "d.parquet", {"utt": [f"k{i}" for i in range(12)], "audio_data": rows}, row_group_size=4,
               compression="snappy", use_dictionary=False)
    chunk = pq.ParquetFile(f).metadata.row_group(1).column(1)
    with open(f, "r+b") as fh:  # garbage in the middle of row group 1's audio page
        fh.seek(chunk.data_page_offset + chunk.total_compressed_size // 2)
        fh.write(b"\xff" * 64)
    index = index_parquet(f)
    opened = []

    class Counting(pq.ParquetFile):
        def __init__(self, *a, **kw):
            opened.append(a[0])
            super().__init__(*a, **kw)

    monkeypatch.setattr(pq, "ParquetFile", Counting)
    got, errors = {}, {}
    for key, row in index:
        try:
            got[key] = row.open().read()
        except ValueError as e:
            errors[key] = str(e)
    assert got == {f"k{i}": rows[i] for i in (0, 1, 2, 3, 8, 9, 10, 11)}
    assert sorted(errors) == ["k4", "k5", "k6", "k7"]
    assert all(str(f) in e and "#1" in e for e in errors.values())
    assert len(opened) == 3  # once per row group, not once per row of the damaged one


def test_rows_read_in_about_file_order_read_each_row_group_once(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "AUDIO_BATCH_BYTES", 3 * len(_wav(0)))  # a few rows a batch
    wavs = [_wav(i) for i in range(20)]
    f = _write(tmp_path / "o.parquet", {"utt": [f"k{i:02d}" for i in range(20)], "audio_data": wavs},
               row_group_size=10)
    starts = []
    real = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, *a, **kw: starts.append(1) or real(self, *a, **kw))
    index = index_parquet(f)
    order = [1, 0, 2, 4, 3, 5, 6, 8, 7, 9] + [10 + i for i in (1, 0, 3, 2, 5, 4, 7, 6, 9, 8)]  # as decode threads do
    assert [index[i][1].open().read() for i in order] == [wavs[i] for i in order]
    assert len(starts) == 2


_PEAK = """
import sys, pyarrow as pa
from s3tok.data import parquet
parquet.AUDIO_BATCH_BYTES, parquet._WINDOW_BYTES = 1 << 20, 2 << 20
rows = parquet.index_parquet(sys.argv[1])
data = rows[-1][1].open().read()
print(len(data), pa.default_memory_pool().max_memory())
"""


def test_one_row_of_a_large_row_group_is_read_in_bounded_memory(tmp_path):
    """A file written as pyarrow writes by default: one row group (16 MB here). Reading its last row holds
    about the batches kept (``AUDIO_BATCH_BYTES`` 1 MB, ``_WINDOW_BYTES`` 2 MB here) of Arrow memory, not the
    group."""
    rows = [bytes([i]) * 400_000 for i in range(40)]
    f = _write(tmp_path / "big.parquet", {"utt": [f"k{i}" for i in range(40)], "audio_data": rows},
               use_dictionary=False, data_page_size=64 << 10, write_batch_size=1)
    assert pq.ParquetFile(f).num_row_groups == 1
    out = subprocess.run([sys.executable, "-c", _PEAK, str(f)], capture_output=True, text=True, check=True)
    size, peak = map(int, out.stdout.split())
    assert size == 400_000 and peak < 6_000_000, peak  # about 3.5 MB; before: 27 MB (the group, and more)


def test_tokenize_publishes_no_tokens_txt_for_a_key_its_ark_refuses(tmp_path, monkeypatch):
    """The ark's writer checks the keys: it is written before tokens.txt, so a key it refuses (one no input
    should give any more, as keys are checked when indexing) leaves no tokens.txt naming it."""
    from s3tok.data.sources import Utterance
    from s3tok.data.wav_scp import WavEntry
    from s3tok.stages import tokenize_job
    from s3tok.stages.pipeline import RunStats

    def fake_run(model, utts, write_tokens, write_failure, **kw):
        for u in utts:
            write_tokens(u.key, [1, 2, 3])
        return RunStats()

    monkeypatch.setattr(tokenize_job, "run_tokenize", fake_run)
    monkeypatch.setattr(tokenize_job, "provenance", lambda model: {"model": "fake"})
    wav = tmp_path / "a.wav"
    wav.write_bytes(_wav(0))
    utts = [Utterance("", recording=WavEntry("", str(wav)))]
    files = tokenize_job.job_files(tmp_path / "out", None)
    with pytest.raises(ValueError, match=r"tokens\.ark: invalid"):
        tokenize_job.run_job(None, utts, files, progress=False)
    assert not files["txt"].exists() and not files["ark"].exists()
