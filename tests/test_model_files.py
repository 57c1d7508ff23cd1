"""Crafted and damaged model files: bounded sizes, cache keys over external data, one-line errors, memory
bounds on external data, read-only caches, and the CAM++ check of ``s3tok embed``. Tiny models, seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import s3tok
from s3tok.bin import convert as convert_bin
from s3tok.modelfiles import hub

V2 = "speech_tokenizer_v2_25hz"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """Random-weight v1_25hz and v2_25hz models (width 128, 2 blocks), made once."""
    from s3tok.modelfiles.onnx_export import export_onnx, random_model

    d = tmp_path_factory.mktemp("models")
    out = {}
    for i, name in enumerate(("speech_tokenizer_v1_25hz", V2)):
        out[name] = d / f"{name}.onnx"
        export_onnx(random_model(name, width=128, heads=2, depth=2, seed=i), out[name], random_init=True)
    return out


@pytest.fixture()
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("S3TOK_HOME", str(h))
    return h


HWM = ("hwm = lambda: int([x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]) "
       "// 1024\n")


def _run(code: str, vmem_kb: int = 4_000_000, **kw) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python under ``ulimit -v`` (so an unbounded allocation fails fast, not the machine)."""
    return subprocess.run(["bash", "-c", f"ulimit -v {vmem_kb}; exec {sys.executable} -c \"$0\"", code],
                          capture_output=True, text=True, timeout=120, **kw)


# ------------------------------------------------------------------------------- 1: sizes from names/config
@pytest.mark.parametrize("block", ["1000000000", "99999999999999999999"])
def test_graph_naming_block_a_billion_is_refused_in_little_memory(models, tmp_path, block):
    import onnx

    proto = onnx.load(str(models["speech_tokenizer_v1_25hz"]))
    proto.graph.node.append(onnx.helper.make_node("Identity", ["feats"], ["x"], name=f"/blocks.{block}/Identity"))
    crafted = tmp_path / "deep.onnx"
    onnx.save(proto, str(crafted))
    out = _run("import sys\nfrom s3tok.bin import convert\n"
               f"sys.exit(convert.main([{str(crafted)!r}, {str(tmp_path / 'out')!r}]))")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "deep.onnx" in out.stderr and "at most 256 blocks" in out.stderr


@pytest.mark.parametrize("field,value", [("depth", 10 ** 9), ("width", 10 ** 9), ("heads", 10 ** 9),
                                         ("max_positions", 10 ** 12), ("codebook_size", 10 ** 12)])
def test_converted_config_with_a_huge_size_is_refused_naming_the_file(models, tmp_path, field, value):
    conv = tmp_path / "conv"
    assert convert_bin.main([str(models[V2]), str(conv)]) == 0
    meta = json.loads((conv / "config.json").read_text())
    meta["config"][field] = value
    (conv / "config.json").write_text(json.dumps(meta))
    out = _run(f"import s3tok\ntry:\n    s3tok.load_model({str(conv)!r})\n"
               "except ValueError as e:\n    print('refused:', e)\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused:" in out.stdout and "config.json" in out.stdout and field in out.stdout


def test_cache_entry_with_a_huge_depth_is_moved_aside(models, home):
    first = s3tok.load_model(models[V2])
    entry = hub.converted_dir(first.onnx_sha256)
    meta = json.loads((entry / "config.json").read_text())
    meta["config"]["depth"] = 10 ** 9
    (entry / "config.json").write_text(json.dumps(meta))
    out = _run(f"import s3tok\ns3tok.load_model({str(models[V2])!r})\nprint('loaded')\n")
    assert out.returncode == 0 and "loaded" in out.stdout, out.stderr[-2000:]
    assert "damaged converted-weights cache" in out.stderr and "depth 1000000000" in out.stderr
    assert list(entry.parent.glob(f"{entry.name}.bad-*"))
    assert hub.read_converted(entry) is not None  # rebuilt


# ------------------------------------------------------------------------ 2: cache key covers external data
def _save_external(src: Path, folder: Path) -> Path:
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx.load(str(src)), str(folder / "m.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024)
    return folder / "m.onnx"


def test_changed_external_weights_are_not_served_from_the_cache(models, home, tmp_path):
    from s3tok.modelfiles.onnx_export import export_onnx, random_model

    other = tmp_path / "other.onnx"
    export_onnx(random_model(V2, width=128, heads=2, depth=2, seed=7), other, random_init=True)
    path = _save_external(models[V2], tmp_path / "ext")
    new = _save_external(other, tmp_path / "ext2")
    old_model = s3tok.load_model(path)  # converted and cached
    onnx_bytes = path.read_bytes()
    assert (new.parent / "weights.bin").stat().st_size == (path.parent / "weights.bin").stat().st_size
    os.replace(new.parent / "weights.bin", path.parent / "weights.bin")  # m.onnx untouched
    assert path.read_bytes() == onnx_bytes
    cached = s3tok.load_model(path)
    fresh = s3tok.load_model(path, cache=False)
    sd, fd, od = cached.state_dict(), fresh.state_dict(), old_model.state_dict()
    assert all((sd[k] == fd[k]).all() for k in fd), "the cache served the old external weights"
    assert not all((od[k] == fd[k]).all() for k in fd)
    assert cached.onnx_sha256 != old_model.onnx_sha256  # the identity in provenance/job markers changed too


# ----------------------------------------------------------------- 6: damaged tensors, a non-ONNX path: one line
def _craft(src: Path, out: Path, data_type: int, dims, raw: bytes) -> Path:
    import onnx

    m = onnx.load(str(src))
    t = m.graph.initializer.add()
    t.name, t.data_type = "x", data_type
    t.dims.extend(dims)
    t.raw_data = raw
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("kind", ["raw size", "unknown type", "undefined"])
def test_damaged_tensor_is_one_line_error_naming_the_file(models, tmp_path, kind, caplog):
    from onnx import TensorProto

    from s3tok.modelfiles.campplus_onnx import CampPlusImportError, read_campplus
    from s3tok.modelfiles.onnx_import import OnnxImportError

    data_type, dims, raw = {"raw size": (TensorProto.FLOAT, [10], b"\0" * 12), "unknown type": (999, [2], b"\0" * 8),
                            "undefined": (TensorProto.UNDEFINED, [2], b"\0" * 8)}[kind]
    crafted = _craft(models[V2], tmp_path / "crafted.onnx", data_type, dims, raw)
    assert convert_bin.main([str(crafted), str(tmp_path / "out")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "crafted.onnx" in errors[0] and "'x'" in errors[0], errors
    with pytest.raises(OnnxImportError, match=r"crafted\.onnx: tensor 'x'"):
        s3tok.load_model(crafted, cache=False)
    with pytest.raises(CampPlusImportError, match=r"crafted\.onnx"):
        read_campplus(crafted)


def test_a_config_json_given_as_the_model_is_a_clear_error(models, tmp_path, caplog):
    conv = tmp_path / "conv"
    assert convert_bin.main([str(models[V2]), str(conv)]) == 0
    with pytest.raises(ValueError, match=r"config\.json: not a readable ONNX model"):
        s3tok.load_model(conv / "config.json", cache=False)
    assert convert_bin.main([str(conv / "config.json"), str(tmp_path / "out")]) == 2


# ------------------------------------------------------------------------------ 5: external data memory bound
def _add_external(path: Path, name: str, location: str, count: int, offset: int = 0) -> None:
    import onnx
    from onnx import TensorProto

    p = onnx.load(str(path), load_external_data=False)
    t = p.graph.initializer.add()
    t.name, t.data_type, t.data_location = name, TensorProto.FLOAT, TensorProto.EXTERNAL
    t.dims.append(count)
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(4 * count))):
        e = t.external_data.add()
        e.key, e.value = k, v
    path.write_bytes(p.SerializeToString())


def test_external_ranges_read_twice_are_refused_before_reading(models, tmp_path):
    from s3tok.modelfiles.onnx_import import OnnxImportError, read_onnx

    path = _save_external(models[V2], tmp_path / "amp")
    size = (path.parent / "weights.bin").stat().st_size // 4
    for i in range(3):
        _add_external(path, f"amp{i}", "weights.bin", size)
    with pytest.raises(OnnxImportError, match=r"m\.onnx: tensors .* share bytes of weights\.bin"):
        read_onnx(path)


def test_external_data_over_the_cap_is_refused_before_reading(models, tmp_path):
    path = _save_external(models[V2], tmp_path / "big")
    with open(path.parent / "huge.bin", "wb") as f:
        f.truncate(3 << 30)  # sparse: no disk used
    _add_external(path, "huge", "huge.bin", (3 << 30) // 4)
    out = _run("from s3tok.modelfiles.onnx_import import OnnxImportError, read_onnx\n"
               f"try:\n    read_onnx({str(path)!r})\nexcept OnnxImportError as e:\n    print('refused:', e)\n"
               + HWM + "print('hwm_mb', hwm())\n",
               vmem_kb=8_000_000)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused:" in out.stdout and "bytes of external data" in out.stdout
    assert int(out.stdout.split("hwm_mb")[1]) < 1000


def test_external_weights_are_held_once_in_memory(models, tmp_path):
    """A 256 MiB external tensor (sparse file) costs about its size, not two or three copies."""
    path = _save_external(models[V2], tmp_path / "one")
    with open(path.parent / "big.bin", "wb") as f:
        f.truncate(256 << 20)
    _add_external(path, "big", "big.bin", (256 << 20) // 4)
    out = _run("from s3tok.modelfiles.onnx_import import OnnxImportError, read_onnx\n" + HWM + "base = hwm()\n"
               f"try:\n    read_onnx({str(path)!r})\n"
               "except OnnxImportError as e:\n    print('refused:', str(e)[:200])\n"
               "print('grew_mb', hwm() - base)\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "left over" in out.stdout and int(out.stdout.split("grew_mb")[1]) < 256 * 1.6, out.stdout


# ---------------------------------------------------------------------------------- 4: read-only model cache
def _fake_official(monkeypatch, data: bytes, name: str = "fake_tokenizer"):
    import hashlib

    monkeypatch.setitem(hub.REGISTRY, name, hub.OfficialModel(name, "speech_tokenizer_v1.onnx",
                                                              hashlib.sha256(data).hexdigest(),
                                                              ("http://127.0.0.1:9/x.onnx",)))
    return name


def test_read_only_cache_with_the_verified_file_loads_without_rehashing(models, home, monkeypatch):
    import errno

    from s3tok.modelfiles import fetch

    data = models["speech_tokenizer_v1_25hz"].read_bytes()
    name = _fake_official(monkeypatch, data)
    dest = hub.onnx_cache_path(name)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)
    s3tok.load_model(name, progress=False)  # writable: verifies once, converts once
    assert (dest.parent / (dest.name + ".verified")).is_file()

    def read_only(lock_path):  # what a read-only cache or another user's cache gives
        raise OSError(errno.EROFS, "Read-only file system", str(lock_path))

    hashed = []
    real_digest = fetch.file_digest
    monkeypatch.setattr(fetch, "_exclusive", read_only)
    monkeypatch.setattr(fetch, "file_digest", lambda *a, **k: hashed.append(a) or real_digest(*a, **k))
    tok = s3tok.load_model(name, progress=False)
    assert tok.config.version == "speech_tokenizer_v1_25hz" and hashed == []  # the marker answered
    # a file replaced behind the marker's back (same size) is hashed again and refused, never used
    bad = bytearray(data)
    bad[-1] ^= 0xFF
    st = dest.stat()
    dest.write_bytes(bytes(bad))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(OSError):
        hub.download_model(name, progress=False)
    assert hashed


def test_download_into_an_unwritable_cache_is_one_line_and_exit_3(home, monkeypatch, caplog):
    import errno

    from s3tok.bin import download as download_bin
    from s3tok.modelfiles import fetch

    def read_only(lock_path):
        raise OSError(errno.EROFS, "Read-only file system", str(lock_path))

    monkeypatch.setattr(fetch, "_exclusive", read_only)
    assert download_bin.main([V2, "--no_progress"]) == 3
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("cannot write" in m and ".lock" in m and "read-only" in m for m in errors), errors
    assert not any(r.exc_info for r in caplog.records)  # no traceback logged (stderr may hold the logging
    # module's own "Logging error" when an earlier test's captured stream is gone: not ours to judge)


# ------------------------------------------------------------------------- 9: embed given a tokenizer file
@pytest.mark.parametrize("engine", ["auto", "onnxruntime"])
def test_embed_given_a_tokenizer_file_is_bad_input(models, tmp_path, engine, caplog):
    import numpy as np
    import soundfile as sf

    from s3tok.bin import embed as embed_bin
    from s3tok.modelfiles.campplus_engines import load_embedder

    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match=r"speech_tokenizer_v2_25hz\.onnx: not a CAM\+\+ speaker model"):
        load_embedder(models[V2], engine=engine, threads=1)
    wav = tmp_path / "a.wav"
    sf.write(str(wav), (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32), 16000)
    (tmp_path / "wav.scp").write_text(f"a {wav}\n")
    code = embed_bin.main(["--wav_scp", str(tmp_path / "wav.scp"), "--model", str(models[V2]), "--engine", engine,
                           "--output_dir", str(tmp_path / "emb"), "--no_progress", "--num_threads", "1"])
    assert code == 2
    assert any("not a CAM++ speaker model" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
