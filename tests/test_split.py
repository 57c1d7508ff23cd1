"""Contiguous splits (s3tok.data.split) and the split_scp entry point / utils/split_scp wrapper."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from s3tok.bin import split_scp
from s3tok.data.split import split_by_weight, split_contiguous

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("total", [0, 1, 2, 5, 7, 10, 33])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 50])
def test_split_contiguous_exact_clamped(total, n):
    items = [f"k{i:03d}" for i in range(total)]
    pieces = split_contiguous(items, n)
    assert len(pieces) == min(n, total)
    assert all(pieces), "no empty piece"
    assert [x for p in pieces for x in p] == items, "contiguous, exact, in order, no repeats"
    if pieces:
        sizes = [len(p) for p in pieces]
        assert max(sizes) - min(sizes) <= 1


def test_split_contiguous_piece_rule():
    """Piece j is items[j * n // k:(j + 1) * n // k]: larger pieces come last."""
    assert split_contiguous(list(range(5)), 2) == [[0, 1], [2, 3, 4]]
    assert split_contiguous(list(range(7)), 3) == [[0, 1], [2, 3], [4, 5, 6]]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_split_rejects_bad_n(bad):
    with pytest.raises(ValueError):
        split_contiguous([1, 2], bad)
    with pytest.raises(ValueError):
        split_by_weight([1, 2], [1, 1], bad)


def test_split_by_weight_balances_and_stays_contiguous():
    keys = [f"u{i}" for i in range(11)]
    weights = [10.0] + [1.0] * 10
    pieces = split_by_weight(keys, weights, 2)
    assert pieces == [keys[:1], keys[1:]]
    for n in range(1, 15):
        pieces = split_by_weight(keys, weights, n)
        assert len(pieces) == min(n, len(keys)) and all(pieces)
        assert [x for p in pieces for x in p] == keys
    # balanced durations: 3 pieces of 30 s each from a 90 s list
    keys, durs = list("abcdefgh"), [5, 25, 10, 10, 10, 20, 5, 5]
    pieces = split_by_weight(keys, durs, 3)
    assert [sum(dict(zip(keys, durs))[k] for k in p) for p in pieces] == [30, 30, 30]
    assert split_by_weight(keys, [0] * 8, 4) == split_contiguous(keys, 4)
    assert split_by_weight([], [], 3) == []
    with pytest.raises(ValueError, match="weights"):
        split_by_weight(keys, [1.0], 2)
    with pytest.raises(ValueError, match="'b'"):
        split_by_weight(keys, [1, -1, 1, 1, 1, 1, 1, 1], 2)


def _write_scp(path: Path, n: int, extra: bytes = b"") -> bytes:
    data = b"".join(f"utt{i:02d} /data/some dir/utt{i:02d}.wav\n".encode() for i in range(n)) + extra
    path.write_bytes(data)
    return data


def test_cli_kaldi_form(tmp_path):
    data = _write_scp(tmp_path / "wav.scp", 5, b"utt\xff\xfe raw bytes kept")  # no final newline, not UTF-8
    outs = [tmp_path / f"out.{j}.scp" for j in (1, 2, 3)]
    assert split_scp.main([str(tmp_path / "wav.scp")] + [str(o) for o in outs]) == 0
    pieces = [o.read_bytes() for o in outs]
    assert b"".join(pieces) == data + b"\n"
    assert [p.count(b"\n") for p in pieces] == [2, 2, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_kaldi_form_refuses_fewer_lines_than_outputs(tmp_path, caplog):
    _write_scp(tmp_path / "wav.scp", 2)
    outs = [str(tmp_path / f"out.{j}.scp") for j in (1, 2, 3)]
    assert split_scp.main([str(tmp_path / "wav.scp")] + outs) == 1
    assert "2 lines" in caplog.text and "3 output files" in caplog.text
    assert not any(os.path.exists(o) for o in outs)


def test_cli_num_pieces_clamps_and_prints_k(tmp_path, capsys):
    data = _write_scp(tmp_path / "wav.scp", 3)
    assert split_scp.main(["--num_pieces", "8", str(tmp_path / "wav.scp"), str(tmp_path / "split")]) == 0
    assert capsys.readouterr().out == "3\n"
    pieces = [(tmp_path / "split" / str(j) / "wav.scp").read_bytes() for j in (1, 2, 3)]
    assert b"".join(pieces) == data
    assert not (tmp_path / "split" / "4").exists()
    assert split_scp.main(["--num_pieces", "2", str(tmp_path / "wav.scp"), str(tmp_path / "split2")]) == 0
    assert capsys.readouterr().out == "2\n"


def test_cli_utt2dur_balances(tmp_path, capsys):
    _write_scp(tmp_path / "wav.scp", 4)
    (tmp_path / "utt2dur").write_text("utt00 30.0\nutt01 10.0\nutt02 10.0\nutt03 10.0\n")
    assert split_scp.main(["--num_pieces", "2", "--utt2dur", str(tmp_path / "utt2dur"),
                           str(tmp_path / "wav.scp"), str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out == "2\n"
    assert (tmp_path / "s" / "1" / "wav.scp").read_text().count("\n") == 1
    (tmp_path / "utt2dur").write_text("utt00 30.0\n")
    assert split_scp.main(["--utt2dur", str(tmp_path / "utt2dur"), str(tmp_path / "wav.scp"),
                           str(tmp_path / "a"), str(tmp_path / "b")]) == 1


def test_cli_empty_input_fails(tmp_path):
    (tmp_path / "wav.scp").write_bytes(b"")
    assert split_scp.main([str(tmp_path / "wav.scp"), str(tmp_path / "o1")]) == 1


def test_utils_wrapper(tmp_path):
    data = _write_scp(tmp_path / "wav.scp", 4)
    tool = ROOT / "utils" / "split_scp"
    assert os.access(tool, os.X_OK)
    r = subprocess.run([str(tool), "--num_pieces", "3", str(tmp_path / "wav.scp"), str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "3\n"
    assert b"".join((tmp_path / "s" / str(j) / "wav.scp").read_bytes() for j in (1, 2, 3)) == data
