"""AISHELL-1 download (loopback mirror, MD5, resume, per-speaker tarballs) and data-dir preparation."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from httpserver import LocalServer
from s3tok.bin import prepare_aishell
from s3tok.corpora import aishell
from s3tok.data import read_wav_scp

MINI = Path(__file__).resolve().parents[1] / "egs" / "mini" / "corpus"


def fake_archive() -> bytes:
    """data_aishell.tgz as OpenSLR ships it: per-speaker wav tarballs plus the transcript."""
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w:gz") as tar:
        for spk_dir in sorted((MINI / "data_aishell" / "wav").glob("*/*")):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w:gz") as itar:
                itar.add(spk_dir, arcname=f"{spk_dir.parent.name}/{spk_dir.name}")
            info = tarfile.TarInfo(f"data_aishell/wav/{spk_dir.name}.tar.gz")
            info.size = len(inner.getvalue())
            tar.addfile(info, io.BytesIO(inner.getvalue()))
        tar.add(MINI / aishell.TRANSCRIPT, arcname=str(aishell.TRANSCRIPT))
    return outer.getvalue()


@pytest.fixture()
def mirror():
    data = fake_archive()
    server = LocalServer({"/33/data_aishell.tgz": data})
    yield server, data
    server.close()


def test_download_resume_and_unpack(mirror, tmp_path):
    server, data = mirror
    md5 = hashlib.md5(data).hexdigest()
    url = server.url + "/33/data_aishell.tgz"
    server.cut_next, server.cut_at = 1, len(data) // 3
    with pytest.raises(Exception, match="connection closed"):
        aishell.download(tmp_path, [url], progress=False, md5=md5)
    corpus = aishell.download(tmp_path, [url], progress=False, md5=md5)
    assert server.requests[-1][1] == f"bytes={len(data) // 3}-"
    wavs = sorted(p.relative_to(corpus) for p in corpus.glob("wav/*/*/*.wav"))
    assert wavs == sorted(p.relative_to(MINI / "data_aishell") for p in MINI.glob("data_aishell/wav/*/*/*.wav"))
    n = len(server.requests)
    assert aishell.download(tmp_path, [url], progress=False, md5=md5) == corpus  # idempotent, no network
    assert len(server.requests) == n


def test_wrong_md5_refused(mirror, tmp_path):
    server, _ = mirror
    with pytest.raises(Exception, match="is not the expected"):
        aishell.download(tmp_path, [server.url + "/33/data_aishell.tgz"], progress=False)  # the real MD5
    assert not (tmp_path / "data_aishell").exists()


def test_prepare_mini_corpus(tmp_path):
    assert prepare_aishell.main(["--corpus_dir", str(MINI), "--data_dir", str(tmp_path)]) == 0
    for name, n in (("train", 4), ("dev", 2), ("test", 3)):
        d = tmp_path / name
        keys = [e.key for e in read_wav_scp(d / "wav.scp")]
        assert len(keys) == n and keys == sorted(keys)
        assert [line.split()[0] for line in (d / "text").read_text(encoding="utf-8").splitlines()] == keys
        utt2spk = dict(line.split() for line in (d / "utt2spk").read_text().splitlines())
        assert all(utt2spk[k] == k[6:11] for k in keys)
        spk2utt = {line.split()[0]: line.split()[1:] for line in (d / "spk2utt").read_text().splitlines()}
        assert sorted(u for us in spk2utt.values() for u in us) == keys


def test_prepare_rejects_wrong_layout(tmp_path):
    assert prepare_aishell.main(["--corpus_dir", str(tmp_path), "--data_dir", str(tmp_path / "d")]) == 2
