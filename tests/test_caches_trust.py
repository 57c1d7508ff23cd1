"""Caches and model files that cannot be trusted blindly: conversions never delete a stranger's folder, the
hash memo sees a file copied over with its mtime, damaged converted entries are rebuilt, parallel first
downloads share one fetch, crafted graphs cost no memory."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import s3tok
from s3tok.modelfiles import hub
from s3tok.bin import convert as convert_bin
from httpserver import LocalServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("S3TOK_HOME", str(h))
    return h


def test_convert_refuses_a_folder_it_did_not_write(ref, tmp_path):
    model = str(ref / "models" / "speech_tokenizer_v2_25hz.onnx")
    exp = tmp_path / "exp"
    (exp / "old_experiment").mkdir(parents=True)
    (exp / "old_experiment" / "result.txt").write_text("precious")
    assert convert_bin.main([model, str(exp)]) == 2
    assert (exp / "old_experiment" / "result.txt").read_text() == "precious"
    cwd_like = tmp_path / "cwd"
    cwd_like.mkdir()
    (cwd_like / "notes.md").write_text("mine")
    assert convert_bin.main([model, str(cwd_like)]) == 2
    assert (cwd_like / "notes.md").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert convert_bin.main([model, str(a_file)]) == 2 and a_file.read_text() == "x"
    # an earlier conversion (or an empty folder) is replaced
    out = tmp_path / "conv"
    out.mkdir()
    assert convert_bin.main([model, str(out)]) == 0
    assert convert_bin.main([model, str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_sha_memo_sees_a_file_copied_over_with_its_mtime(ref, home, tmp_path):
    """``cp -p``: another model of the same size, with the old mtime, is hashed again."""
    a = (ref / "models" / "speech_tokenizer_v1.onnx").read_bytes()
    b = bytearray(a)
    b[-1] ^= 0xFF
    path = tmp_path / "m.onnx"
    path.write_bytes(a)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert hub.file_sha256(path) == hashlib.sha256(a).hexdigest()
    time.sleep(0.01)
    subprocess.run(["cp", "-p", "/dev/stdin", str(path)], input=bytes(b), check=True)  # same size, new bytes
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # and the old mtime, as cp -p / rsync -t / tar give
    assert path.stat().st_size == len(a)
    assert hub.file_sha256(path) == hashlib.sha256(bytes(b)).hexdigest()


@pytest.mark.parametrize("damage", ["truncated weights", "heads 0", "config a list", "bad json", "depth 9999"])
def test_damaged_converted_cache_entry_is_moved_aside_and_rebuilt(ref, home, damage, caplog):
    path = ref / "models" / "speech_tokenizer_v2_25hz.onnx"
    first = s3tok.load_model(path)
    entry = hub.converted_dir(hub.file_sha256(path))
    weights, cfg = entry / "model.safetensors", entry / "config.json"
    meta = json.loads(cfg.read_text())
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "heads 0":
        meta["config"]["heads"] = 0
        cfg.write_text(json.dumps(meta))
    elif damage == "config a list":
        cfg.write_text("[1, 2]")
    elif damage == "bad json":
        cfg.write_text("{not json")
    else:
        meta["config"]["depth"] = 9999
        cfg.write_text(json.dumps(meta))
    again = s3tok.load_model(path)
    warnings = [r.getMessage() for r in caplog.records if "damaged converted-weights cache" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert list(entry.parent.glob(f"{entry.name}.bad-*"))
    for k, v in first.state_dict().items():
        assert (v == again.state_dict()[k]).all(), k
    assert hub.read_converted(entry) is not None  # rebuilt


def test_damaged_converted_folder_given_by_the_user_is_an_error(ref, tmp_path):
    out = tmp_path / "conv"
    assert convert_bin.main([str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"), str(out)]) == 0
    (out / "config.json").write_text('{"format": 1, "config": {"version": "speech_tokenizer_v2_25hz", "heads": 0}}')
    with pytest.raises(ValueError, match=r"config.json: bad model configuration: heads must be a positive"):
        s3tok.load_model(out)


def test_graph_naming_a_far_block_is_refused_before_building_it(ref, tmp_path):
    """A small file whose node names claim block 99999: refused at once, in little memory."""
    import onnx

    proto = onnx.load(str(ref / "models" / "speech_tokenizer_v1_25hz.onnx"))
    proto.graph.node.append(onnx.helper.make_node("Identity", ["feats"], ["fake_out"], name="/blocks.99999/Identity"))
    crafted = tmp_path / "crafted.onnx"
    onnx.save(proto, str(crafted))
    code = ("import s3tok\n"
            "from s3tok.modelfiles.onnx_import import OnnxImportError, read_onnx\n"
            "try:\n    read_onnx(%r)\nexcept OnnxImportError as e:\n    print('refused:', e)\n"
            # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (a grown pytest)
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print('maxrss_mb', int(hwm) // 1024)\n" % str(crafted))
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused:" in out.stdout and "names block 99999" in out.stdout and "at most 256 blocks" in out.stdout
    assert int(out.stdout.split("maxrss_mb")[1]) < 1000 and time.time() - t0 < 60


def test_parallel_first_downloads_share_one_fetch(ref, tmp_path):
    """Four processes load one official name into an empty cache at once (torchrun's first run): all get
    the verified file, and it is downloaded once."""
    data = (ref / "models" / "speech_tokenizer_v1_25hz.onnx").read_bytes()
    server = LocalServer({"/m.onnx": data})
    try:
        code = ("import hashlib, sys\nfrom s3tok.modelfiles import hub\n"
                "hub.REGISTRY['fake'] = hub.OfficialModel('fake', 'speech_tokenizer_v1.onnx', %r, (%r,))\n"
                "p = hub.download_model('fake', progress=False)\nprint(p)\n"
                % (hashlib.sha256(data).hexdigest(), server.url + "/m.onnx"))
        env = {**os.environ, "S3TOK_HOME": str(tmp_path / "home")}
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        server.close()
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    paths = {o.strip() for o, _ in outs}
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == data
    assert len(server.requests) == 1, server.requests


def _external_copy(ref: Path, tmp_path: Path) -> Path:
    """The reference v2 model saved with its weights in ``weights.bin`` beside it."""
    import onnx

    d = tmp_path / "ext"
    d.mkdir()
    proto = onnx.load(str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"))
    onnx.save(proto, str(d / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=1024)
    return d / "m.onnx"


def _tamper(path: Path, **fields) -> None:
    """Rewrite the external-data entries (location/offset/length) of the first external tensor."""
    import onnx
    from onnx import TensorProto

    proto = onnx.load(str(path), load_external_data=False)
    t = next(t for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL)
    info = {e.key: e.value for e in t.external_data}
    info.update({k: str(v) for k, v in fields.items()})
    del t.external_data[:]
    for k, v in info.items():
        t.external_data.add(key=k, value=v)
    path.write_bytes(proto.SerializeToString())


def test_external_data_model_loads_and_gives_the_same_weights(ref, tmp_path):
    from s3tok.modelfiles.onnx_import import read_onnx

    a = read_onnx(ref / "models" / "speech_tokenizer_v2_25hz.onnx").state_dict
    b = read_onnx(_external_copy(ref, tmp_path)).state_dict
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink", "too long", "past the end"])
def test_external_data_cannot_escape_or_overread(ref, tmp_path, how):
    from s3tok.modelfiles.onnx_import import OnnxImportError, read_onnx

    path = _external_copy(ref, tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes((path.parent / "weights.bin").read_bytes())
    if how == "parent":
        _tamper(path, location="../secret.bin")
    elif how == "absolute":
        _tamper(path, location=str(secret))
    elif how == "symlink":
        (path.parent / "link.bin").symlink_to(secret)
        _tamper(path, location="link.bin")
    elif how == "too long":
        _tamper(path, length=10 ** 9)
    else:
        _tamper(path, offset=(path.parent / "weights.bin").stat().st_size)
    match = "outside the model's folder" if how in ("parent", "absolute", "symlink") else "declares"
    with pytest.raises(OnnxImportError, match=match):
        read_onnx(path)


def test_the_suite_leaves_no_model_cache_behind(tmp_path):
    """The suite's own ``$S3TOK_HOME`` (converted weights, downloads) is removed when pytest ends: it was
    left in the temporary folder by every run."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_linear_kernels.py::test_a_bad_environment_value_names_the_variable"],
                          cwd=root, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert not list(tmp_path.glob("s3tok-test-home-*"))


def test_convert_on_a_full_disk_is_a_fault_not_bad_input(ref, tmp_path, monkeypatch, caplog):
    """README's exit codes: a disk fault while writing the converted folder is 3, naming the path; nothing is
    left behind. A refused output folder stays 2 (above)."""
    import errno

    import safetensors.torch

    def full(tensors, filename, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "conv"
    assert convert_bin.main([str(ref / "models" / "speech_tokenizer_v2_25hz.onnx"), str(out)]) == 3
    assert "the disk is full" in caplog.text and "model.safetensors" in caplog.text
    assert not out.exists() and not list(tmp_path.glob("conv.*.tmp"))
