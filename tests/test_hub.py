"""Model names, download cache (against a loopback HTTP server) and the converted-weights cache."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import s3tok
from s3tok.modelfiles import hub
from s3tok.bin import convert as convert_bin
from s3tok.bin import download as download_bin
from httpserver import LocalServer


@pytest.fixture()
def onnx_bytes(ref):
    return (ref / "models" / "speech_tokenizer_v1_25hz.onnx").read_bytes()


@pytest.fixture()
def server(onnx_bytes):
    bad = bytearray(onnx_bytes)
    bad[1000] ^= 0xFF
    s = LocalServer({"/good/speech_tokenizer_v1.onnx": onnx_bytes, "/bad/speech_tokenizer_v1.onnx": bytes(bad)})
    yield s
    s.close()


@pytest.fixture()
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("S3TOK_HOME", str(h))
    return h


def fake_entry(monkeypatch, onnx_bytes, *urls):
    entry = hub.OfficialModel("fake_tokenizer", "speech_tokenizer_v1.onnx",
                              hashlib.sha256(onnx_bytes).hexdigest(), tuple(urls))
    monkeypatch.setitem(hub.REGISTRY, "fake_tokenizer", entry)
    return entry


def test_registry_matches_the_official_table():
    assert set(hub.REGISTRY) == set(s3tok.available_models())
    v2 = hub.REGISTRY["speech_tokenizer_v2_25hz"]
    assert v2.urls[0] == "https://www.modelscope.cn/models/iic/CosyVoice2-0.5B/resolve/master/speech_tokenizer_v2.onnx"
    assert v2.urls[1].startswith("https://huggingface.co/FunAudioLLM/")
    assert v2.sha256 == "d43342aa12163a80bf07bffb94c9de2e120a8df2f9917cd2f642e7f4219c6f71"
    # the two v1 files share a file name, so they live in separate cache folders
    assert hub.onnx_cache_path("speech_tokenizer_v1") != hub.onnx_cache_path("speech_tokenizer_v1_25hz")


def test_download_then_cache_without_network(server, home, monkeypatch, onnx_bytes):
    fake_entry(monkeypatch, onnx_bytes, server.url + "/good/speech_tokenizer_v1.onnx")
    path = hub.download_model("fake_tokenizer", progress=False)
    assert path == home / "onnx" / "fake_tokenizer" / "speech_tokenizer_v1.onnx"
    assert path.read_bytes() == onnx_bytes and not list(path.parent.glob("*.part"))
    n = len(server.requests)
    server.close()  # no network from here on
    assert hub.download_model("fake_tokenizer", progress=False) == path
    assert len(server.requests) == n


def test_interrupted_download_resumes(server, home, monkeypatch, onnx_bytes):
    fake_entry(monkeypatch, onnx_bytes, server.url + "/good/speech_tokenizer_v1.onnx")
    server.cut_next, server.cut_at = 1, 300_000
    with pytest.raises(hub.DownloadError, match="connection closed after 300000"):
        hub.download_model("fake_tokenizer", progress=False)
    part = home / "onnx" / "fake_tokenizer" / "speech_tokenizer_v1.onnx.part"
    assert part.stat().st_size == 300_000
    assert not part.with_name("speech_tokenizer_v1.onnx").exists()
    path = hub.download_model("fake_tokenizer", progress=False)
    assert server.requests[-1][1] == "bytes=300000-"
    assert path.read_bytes() == onnx_bytes and not part.exists()


def test_wrong_hash_rejected_next_mirror_used(server, home, monkeypatch, onnx_bytes, caplog):
    fake_entry(monkeypatch, onnx_bytes, server.url + "/bad/speech_tokenizer_v1.onnx",
               server.url + "/good/speech_tokenizer_v1.onnx")
    path = hub.download_model("fake_tokenizer", progress=False)
    assert path.read_bytes() == onnx_bytes
    assert "wrong SHA256" in caplog.text


def test_wrong_hash_everywhere_is_an_error(server, home, monkeypatch, onnx_bytes):
    fake_entry(monkeypatch, onnx_bytes, server.url + "/bad/speech_tokenizer_v1.onnx")
    with pytest.raises(hub.DownloadError, match="is not the expected"):
        hub.download_model("fake_tokenizer", progress=False)
    assert not (home / "onnx" / "fake_tokenizer" / "speech_tokenizer_v1.onnx").exists()


def test_cached_file_with_wrong_hash_is_never_used(server, home, monkeypatch, onnx_bytes):
    fake_entry(monkeypatch, onnx_bytes, server.url + "/good/speech_tokenizer_v1.onnx")
    dest = home / "onnx" / "fake_tokenizer" / "speech_tokenizer_v1.onnx"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"corrupt")
    path = hub.download_model("fake_tokenizer", progress=False)
    assert path.read_bytes() == onnx_bytes
    assert [p.name for p in dest.parent.glob("*.bad-*")]  # moved aside, not deleted silently


def test_offline_error_names_urls_and_destination(home, monkeypatch, onnx_bytes):
    url = "http://127.0.0.1:9/speech_tokenizer_v1.onnx"  # discard port: connection refused
    fake_entry(monkeypatch, onnx_bytes, url)
    with pytest.raises(hub.DownloadError) as e:
        hub.download_model("fake_tokenizer", progress=False, timeout=5)
    msg = str(e.value)
    assert url in msg and str(home / "onnx" / "fake_tokenizer" / "speech_tokenizer_v1.onnx") in msg
    assert "Without network" in msg


def test_download_cli(server, home, monkeypatch, onnx_bytes, capsys):
    fake_entry(monkeypatch, onnx_bytes, server.url + "/good/speech_tokenizer_v1.onnx")
    assert download_bin.main(["fake_tokenizer", "--no_progress"]) == 0
    assert capsys.readouterr().out.startswith("fake_tokenizer\t")
    assert download_bin.main(["no_such_model"]) == 2


def test_load_model_by_name_downloads_and_identifies(server, home, monkeypatch, onnx_bytes, ref_mels):
    fake_entry(monkeypatch, onnx_bytes, server.url + "/good/speech_tokenizer_v1.onnx")
    model = s3tok.load_model("fake_tokenizer", progress=False)
    assert model.config.version == "speech_tokenizer_v1_25hz"  # by content, although the file says v1


def test_converted_cache_is_used_on_reload(ref, home, monkeypatch, ref_mels):
    path = ref / "models" / "speech_tokenizer_v3_25hz.onnx"
    first = s3tok.load_model(path)
    sha = hub.sha256_of(path)
    conv = home / "converted" / sha
    assert (conv / "model.safetensors").is_file() and (conv / "config.json").is_file()

    def no_onnx(*a, **k):
        raise AssertionError("the ONNX file was parsed again")

    monkeypatch.setattr(s3tok.api, "read_onnx", no_onnx)
    second = s3tok.load_model(path)
    assert second.source == str(path) and second.onnx_sha256 == sha
    for k, v in first.state_dict().items():
        assert torch.equal(v, second.state_dict()[k]), k
    mel = ref_mels["en_yes"]
    lens = torch.tensor([mel.shape[1]])
    assert torch.equal(first.quantize(mel[None], lens)[0], second.quantize(mel[None], lens)[0])


def test_convert_cli_and_load_converted_folder(ref, home, tmp_path, ref_mels):
    out = tmp_path / "v2conv"
    assert convert_bin.main([str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"), str(out)]) == 0
    model = s3tok.load_model(out)
    onnx_model = s3tok.load_model(ref / "models" / "speech_tokenizer_v2_25hz.onnx", cache=False)
    mel = ref_mels["cmn_boats"]
    lens = torch.tensor([mel.shape[1]])
    assert torch.equal(model.quantize(mel[None], lens)[0], onnx_model.quantize(mel[None], lens)[0])
    assert convert_bin.main([str(tmp_path / "missing.onnx"), str(tmp_path / "x")]) == 2


def test_unknown_name_error(home):
    with pytest.raises(FileNotFoundError, match="not one of speech_tokenizer_v1"):
        s3tok.load_model("speech_tokenizer_v9")


def test_sha_memo_avoids_rehash(ref, home, monkeypatch):
    path = ref / "models" / "speech_tokenizer_v2_25hz.onnx"
    digest = hub.file_sha256(path)
    monkeypatch.setattr(hub, "sha256_of", lambda p: (_ for _ in ()).throw(AssertionError("rehashed")))
    assert hub.file_sha256(path) == digest
    assert Path(home / "sha256.json").is_file()


def test_download_cli_takes_the_speaker_model(server, home, monkeypatch, onnx_bytes, capsys):
    """`s3tok download campplus` fetches CAM++ into the cache as the tokenizers are fetched (the real
    download code, from a local server standing in for the mirrors)."""
    import hashlib

    entry = hub.OfficialModel("campplus", "campplus.onnx", hashlib.sha256(onnx_bytes).hexdigest(),
                              (server.url + "/good/speech_tokenizer_v1.onnx",))
    monkeypatch.setitem(hub.SPEAKER_MODELS, "campplus", entry)
    assert download_bin.main(["campplus", "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("campplus\t") and out.strip().endswith(str(home / "onnx" / "campplus" / "campplus.onnx"))
    assert (home / "onnx" / "campplus" / "campplus.onnx").read_bytes() == onnx_bytes
