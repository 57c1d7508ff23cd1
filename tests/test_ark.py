"""ark/scp tables through kaldi-native-io (s3tok.data.ark), and that kaldiio users read them the same."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from s3tok.data.ark import (Specifier, parse_specifier, read_float_matrices, read_float_matrix, read_int32_vector,
                            read_int32_vectors, write_float_matrices, write_int32_vectors)

TOKENS = [("utt-a", [1, 2, 3, 6560]), ("utt-b", np.array([0, 4095], dtype=np.int64)), ("utt-c", []),
          ("utt-d", torch.arange(300, dtype=torch.int32))]


def _mels(n: int = 4):
    rng = np.random.default_rng(1)
    return [(f"m{i}", rng.standard_normal((5 + 7 * i, 128)).astype(np.float32)) for i in range(n)]


def test_parse_specifier():
    assert parse_specifier("ark,scp:a.ark,a.scp") == Specifier("a.ark", "a.scp")
    assert parse_specifier("scp,ark:a.scp,a.ark") == Specifier("a.ark", "a.scp", scp_first=True)
    assert parse_specifier("scp:d/x.scp") == Specifier(scp="d/x.scp")
    assert parse_specifier("ark,t:-") == Specifier(ark="-", options=("t",))
    assert parse_specifier("ark,s,cs:a.ark").rspecifier() == "ark,s,cs:a.ark"
    assert parse_specifier("ark,scp:a.ark,a.scp").rspecifier() == "scp:a.scp"
    assert parse_specifier("x/feats.ark") == Specifier(ark="x/feats.ark")
    assert parse_specifier("/abs/tokens.scp") == Specifier(scp="/abs/tokens.scp")
    assert parse_specifier("ark,scp:a.ark,a.scp").wspecifier("t.ark", "t.scp") == "ark,scp:t.ark,t.scp"
    for bad in ("a.txt", "ark,scp:a.ark", "ark,scp:a,b,c", "foo:a.ark", "ark,zz:a.ark", "ark:", "ark,ark:a,b"):
        with pytest.raises(ValueError):
            parse_specifier(bad)


@pytest.mark.parametrize("as_tuple", [False, True])
def test_int32_round_trip_and_final_paths(tmp_path, monkeypatch, as_tuple):
    monkeypatch.chdir(tmp_path)
    target = ("out/tokens.1.ark", "out/tokens.1.scp") if as_tuple else "ark,scp:out/tokens.1.ark,out/tokens.1.scp"
    assert write_int32_vectors(target, iter(TOKENS)) == len(TOKENS)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tokens.1.ark", "tokens.1.scp"]
    lines = (tmp_path / "out" / "tokens.1.scp").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == [k for k, _ in TOKENS]
    assert all(ln.split()[1].startswith("out/tokens.1.ark:") for ln in lines), lines
    for spec in ("scp:out/tokens.1.scp", "ark:out/tokens.1.ark", "out/tokens.1.scp",
                 "ark,scp:out/tokens.1.ark,out/tokens.1.scp"):
        got = list(read_int32_vectors(spec))
        assert [k for k, _ in got] == [k for k, _ in TOKENS]
        for (_, v), (_, want) in zip(got, TOKENS):
            assert v.dtype == np.int32 and v.tolist() == list(np.asarray(want).tolist())
    rx = lines[1].split()[1]
    assert read_int32_vector(rx).tolist() == [0, 4095]


def test_float_matrices_round_trip(tmp_path):
    mels = _mels()
    ark, scp = tmp_path / "feats.ark", tmp_path / "feats.scp"
    items = [(k, torch.from_numpy(m)) if i % 2 else (k, m) for i, (k, m) in enumerate(mels)]
    assert write_float_matrices(f"ark,scp:{ark},{scp}", items) == len(mels)
    got = list(read_float_matrices(f"scp:{scp}"))
    assert [k for k, _ in got] == [k for k, _ in mels]
    for (_, a), (_, b) in zip(got, mels):  # copies survive the reader moving on
        assert a.dtype == np.float32 and a.shape == b.shape and np.array_equal(a, b)
    rx = scp.read_text().splitlines()[2].split()[1]
    assert rx.startswith(f"{ark}:") and np.array_equal(read_float_matrix(rx), mels[2][1])
    # float64 input is stored as float32; ark-only and text-mode specifiers
    write_float_matrices(f"ark,t:{tmp_path / 't.ark'}", [("x", np.eye(3))])
    (k, m), = read_float_matrices(f"ark:{tmp_path / 't.ark'}")
    assert k == "x" and m.dtype == np.float32 and np.array_equal(m, np.eye(3, dtype=np.float32))


def test_failed_write_leaves_old_files_and_no_temporaries(tmp_path):
    ark, scp = tmp_path / "tokens.ark", tmp_path / "tokens.scp"
    write_int32_vectors((ark, scp), [("a", [1])])
    old = (ark.read_bytes(), scp.read_bytes())

    def items():
        yield "b", [2]
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        write_int32_vectors((ark, scp), items())
    with pytest.raises(ValueError, match="invalid key 'b c'"):
        write_int32_vectors((ark, scp), [("b c", [2])])
    with pytest.raises(ValueError, match="1-D"):
        write_int32_vectors((ark, scp), [("b", [[1, 2]])])
    with pytest.raises(ValueError, match="2-D"):
        write_float_matrices((ark, scp), [("b", np.zeros(3))])
    assert (ark.read_bytes(), scp.read_bytes()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.ark", "tokens.scp"]


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        list(read_int32_vectors(f"scp:{tmp_path / 'missing.scp'}"))
    write_int32_vectors((tmp_path / "t.ark", tmp_path / "t.scp"), [("a", [1, 2])])
    with pytest.raises(ValueError, match=r"t\.scp"):
        list(read_float_matrices(f"scp:{tmp_path / 't.scp'}"))
    with pytest.raises(ValueError):
        write_int32_vectors(f"scp:{tmp_path / 't.scp'}", [("a", [1])])


def test_package_does_not_import_kaldiio():
    code = ("import sys, s3tok, s3tok.data.ark, s3tok.data.kaldi_dir, s3tok.data.segments, s3tok.data.split; "
            "assert 'kaldiio' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_kaldiio_reads_our_files_identically(tmp_path, monkeypatch):
    kaldiio = pytest.importorskip("kaldiio")
    monkeypatch.chdir(tmp_path)
    write_int32_vectors("ark,scp:tokens.ark,tokens.scp", TOKENS)
    write_float_matrices(("feats.ark", "feats.scp"), _mels())
    toks = kaldiio.load_scp("tokens.scp")
    assert list(toks) == [k for k, _ in TOKENS]
    for k, want in TOKENS:
        assert toks[k].dtype == np.int32 and toks[k].tolist() == list(np.asarray(want).tolist())
    feats = kaldiio.load_scp("feats.scp")
    for k, want in _mels():
        assert feats[k].dtype == np.float32 and np.array_equal(feats[k], want)
    # and the other way: what kaldiio writes, we read
    kaldiio.save_ark("k.ark", {k: np.asarray(v, dtype=np.int32) for k, v in TOKENS if len(v)}, scp="k.scp")
    assert [(k, v.tolist()) for k, v in read_int32_vectors("scp:k.scp")] == \
        [(k, list(np.asarray(v).tolist())) for k, v in TOKENS if len(v)]
