"""The embed stage: CosyVoice's extract_embedding.py, batched and on the job protocol. Parity of the torch engine
with onnxruntime at batch 1 on every reference clip, CosyVoice's file formats, jobs + merge, bad audio, resume,
a model fault."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from s3tok.bin import embed as embed_bin
from s3tok.bin import merge_embeddings as merge_bin
from s3tok.data.kaldi_fbank import embedding_features
from s3tok.data.audio import read_audio
from s3tok.model.campplus import random_campplus
from s3tok.modelfiles.campplus_onnx import export_campplus
from s3tok.stages.embed_job import EMBED

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def campplus_onnx(tmp_path_factory) -> Path:
    """An official-size CAM++ with random weights, exported as a 2023-2024 export would be."""
    path = tmp_path_factory.mktemp("campplus") / "campplus.onnx"
    export_campplus(random_campplus(3), path)
    return path


def _data_dir(ref: Path, dest: Path, keys=None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    lines = [ln for ln in (ref / "wav.scp").read_text().splitlines() if ln.strip()]
    rows = []
    for ln in lines:
        key, path = ln.split(maxsplit=1)
        if keys is None or key in keys:
            rows.append((key, str((ref / path).resolve())))
    (dest / "wav.scp").write_text("".join(f"{k} {p}\n" for k, p in rows))
    (dest / "utt2spk").write_text("".join(f"{k} {'spk' + str(i % 3)}\n" for i, (k, _) in enumerate(rows)))
    return dest


def _official_way(onnx_path: Path, wav_scp: Path) -> dict:
    """What CosyVoice's tools/extract_embedding.py computes: onnxruntime at batch 1 on [1, T, 80]."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    out = {}
    for line in wav_scp.read_text().splitlines():
        key, path = line.split(maxsplit=1)
        feat = embedding_features(*read_audio(path))
        out[key] = sess.run(None, {sess.get_inputs()[0].name: feat[None].numpy()})[0].reshape(-1)
    return out


def _run(args) -> int:
    return embed_bin.main([*args, "--no_progress"])


def test_torch_engine_matches_onnxruntime_batch1_on_every_reference_clip(ref, campplus_onnx, tmp_path):
    data = _data_dir(ref, tmp_path / "data")
    expected = _official_way(campplus_onnx, data / "wav.scp")
    for engine in ("torch", "onnxruntime"):
        out = tmp_path / engine
        assert _run(["--data_dir", str(data), "--model", str(campplus_onnx), "--engine", engine,
                     "--output_dir", str(out)]) == 0
        assert merge_bin.main(["--data_dir", str(data), "--output_dir", str(out), "--num_jobs", "0",
                               "--dest", str(out / "merged")]) == 0
        got = torch.load(out / "merged" / "utt2embedding.pt")
        assert list(got) == list(expected)  # every clip, in input order
        for key, vec in got.items():
            a, b = np.asarray(vec, dtype=np.float64), expected[key].astype(np.float64)
            cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            assert cos >= 0.99999 and np.abs(a - b).max() <= 1e-4, (engine, key, cos, np.abs(a - b).max())
        if engine == "onnxruntime":  # the reference path is CosyVoice's computation itself
            assert all(np.array_equal(np.asarray(v, np.float32), expected[k]) for k, v in got.items())


def test_cosyvoice_formats_jobs_merge_and_speaker_means(ref, campplus_onnx, tmp_path):
    data = _data_dir(ref, tmp_path / "data")
    (data / "wav.scp").write_text((data / "wav.scp").read_text() + f"zz_broken {tmp_path / 'missing.wav'}\n")
    (data / "utt2spk").write_text((data / "utt2spk").read_text() + "zz_broken spk0\n")
    one, two = tmp_path / "one", tmp_path / "two"
    # one bad utterance in 18 is over the default 5 %: exit 1, the others' work is kept
    assert _run(["--data_dir", str(data), "--model", str(campplus_onnx), "--output_dir", str(one)]) == 1
    assert _run(["--data_dir", str(data), "--model", str(campplus_onnx), "--output_dir", str(one),
                 "--max_fail_ratio", "1"]) == 0
    for j in (1, 2):
        assert _run(["--data_dir", str(data), "--model", str(campplus_onnx), "--output_dir", str(two),
                     "--num_jobs", "2", "--job", str(j), "--max_fail_ratio", "1"]) == 0
    # a merge before every job is done, or with a job missing, fails with the reason
    assert merge_bin.main(["--data_dir", str(data), "--output_dir", str(two), "--num_jobs", "3",
                           "--dest", str(tmp_path / "bad")]) == 2
    for out, n in ((one, "0"), (two, "2")):
        assert merge_bin.main(["--data_dir", str(data), "--output_dir", str(out), "--num_jobs", n,
                               "--dest", str(out / "m"), "--max_fail_ratio", "0.1"]) == 0
    u1 = torch.load(one / "m" / "utt2embedding.pt")
    u2 = torch.load(two / "m" / "utt2embedding.pt")
    assert list(u1) == list(u2) and "zz_broken" not in u1
    assert all(isinstance(v, list) and len(v) == 192 and isinstance(v[0], float) for v in u1.values())
    for k in u1:
        assert np.abs(np.asarray(u1[k]) - np.asarray(u2[k])).max() <= 1e-4, k  # other batch neighbours
    fail = (one / "m" / "embed_fail").read_text()
    assert fail.startswith("zz_broken ") and "no such audio file" in fail
    # spk2embedding: each speaker's float32 mean, as CosyVoice's tool computes it
    spk = torch.load(one / "m" / "spk2embedding.pt")
    utt2spk = dict(ln.split() for ln in (data / "utt2spk").read_text().splitlines())
    for s, vec in spk.items():
        members = [u1[k] for k in u1 if utt2spk[k] == s]
        assert vec == torch.tensor(members).mean(dim=0).tolist()
    assert set(spk) == {"spk0", "spk1", "spk2"}
    # a second merge writes the same bytes
    assert merge_bin.main(["--data_dir", str(data), "--output_dir", str(one), "--num_jobs", "0",
                           "--dest", str(one / "m2"), "--max_fail_ratio", "0.1"]) == 0
    for name in ("utt2embedding.pt", "spk2embedding.pt"):
        assert (one / "m2" / name).read_bytes() == (one / "m" / name).read_bytes(), name


def test_an_utterance_without_a_speaker_keeps_its_embedding_and_the_others_merge(campplus_onnx, tmp_path, caplog):
    """A tar key without metadata has no utt2spk line (shard-metadata lists it in metadata_problems): the merge
    keeps its utt2embedding, leaves it out of every speaker's mean, lists it in embed_no_speaker and exits 0
    (make-parquet skips it later for want of a speaker); a utt2spk with none of the keys is refused."""
    import soundfile as sf

    data = tmp_path / "data"
    data.mkdir()
    keys = [f"u{i}" for i in range(4)]
    for i, k in enumerate(keys):
        sf.write(tmp_path / f"{k}.wav", np.random.default_rng(i).standard_normal(8000).astype(np.float32) * 0.1,
                 16000, subtype="PCM_16")
    (data / "wav.scp").write_text("".join(f"{k} {tmp_path / k}.wav\n" for k in keys))
    (data / "utt2spk").write_text("u0 a\nu1 b\nu3 a\n")  # u2: none
    out, dest = tmp_path / "emb", tmp_path / "dest"
    assert _run(["--data_dir", str(data), "--model", str(campplus_onnx), "--output_dir", str(out)]) == 0
    merge = ["--data_dir", str(data), "--output_dir", str(out), "--num_jobs", "0", "--dest", str(dest)]
    assert merge_bin.main(merge) == 0
    utt = torch.load(dest / "utt2embedding.pt")
    spk = torch.load(dest / "spk2embedding.pt")
    assert list(utt) == keys and sorted(spk) == ["a", "b"]
    assert spk["a"] == torch.tensor([utt["u0"], utt["u3"]]).mean(dim=0).tolist() and spk["b"] == utt["u1"]
    assert (dest / "embed_no_speaker").read_text() == "u2 no speaker in utt2spk\n"
    assert "1 embedded utterance(s) have no speaker in utt2spk, e.g. ['u2']" in caplog.text
    (tmp_path / "other").write_text("x1 a\n")
    assert merge_bin.main(merge + ["--utt2spk", str(tmp_path / "other")]) == 2
    assert "none of the 4 embedded utterances is in utt2spk" in caplog.text


def test_resume_keeps_the_journal_and_a_finished_job_is_skipped(ref, campplus_onnx, tmp_path, caplog):
    data = _data_dir(ref, tmp_path / "data")
    out = tmp_path / "out"
    args = ["--data_dir", str(data), "--model", str(campplus_onnx), "--output_dir", str(out)]
    assert _run(args) == 0
    files = EMBED.files(out)
    first = files["ark"].read_bytes()
    # a killed run: no marker and no final files yet (embedder.json is written first), 5 utterances journaled
    journal = files.path("embedding", ".part")
    lines = [f"{k} {fp} {v}" for k, fp, v in _journal_lines(out, data)][:5]
    journal.write_text("".join(ln + "\n" for ln in lines))
    shutil.rmtree(out / ".done")
    for role in ("ark", "scp", "fail"):
        files[role].unlink()
    caplog.set_level("INFO")
    assert _run(args) == 0
    assert "resuming: 5 of" in caplog.text
    assert files["ark"].read_bytes() == first and not journal.exists()
    caplog.clear()
    assert _run(args) == 0
    assert "already done; skipping" in caplog.text


def _journal_lines(out: Path, data: Path):
    """``(key, fingerprint, values)`` the way the job journals them, from a finished job's outputs."""
    from s3tok.data.ark import read_float_vectors
    from s3tok.data.sources import select_source
    from s3tok.stages.protocol import input_fingerprint

    prints = {u.key: input_fingerprint(u) for u in select_source(data_dir=str(data))}
    for key, vec in read_float_vectors(EMBED.files(out)["scp"]):
        yield key, prints[key], " ".join(f"{x:.9g}" for x in vec.tolist())


def test_a_model_that_fails_on_everything_is_a_fault_not_bad_data(ref, campplus_onnx, tmp_path, monkeypatch):
    from s3tok.modelfiles import campplus_engines

    def broken(self, feats):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(campplus_engines.TorchEmbedder, "embed", broken)
    data = _data_dir(ref, tmp_path / "data")
    out = tmp_path / "out"
    assert _run(["--data_dir", str(data), "--model", str(campplus_onnx), "--engine", "torch",
                 "--output_dir", str(out)]) == 3
    assert not EMBED.files(out)["fail"].exists()  # nothing blamed on the audio


def test_bad_arguments_exit_2(tmp_path, ref):
    data = _data_dir(ref, tmp_path / "data", keys={"en_morning"})
    assert _run(["--data_dir", str(data), "--model", str(tmp_path / "nope.onnx"),
                 "--output_dir", str(tmp_path / "o")]) == 2
    assert _run(["--data_dir", str(data), "--model", "demo", "--output_dir", str(tmp_path / "o"),
                 "--num_jobs", "2"]) == 2


@pytest.mark.slow
def test_torch_engine_at_batch_one_and_in_mixed_batches(ref, campplus_onnx, tmp_path):
    """Issue 18's parity bar, on every reference clip: cosine >= 0.99999 and max abs diff <= 1e-4 against
    onnxruntime at batch 1, with the torch engine run one utterance at a time and in mixed-length batches."""
    from s3tok.modelfiles.campplus_engines import TorchEmbedder
    from s3tok.modelfiles.campplus_onnx import load_campplus

    data = _data_dir(ref, tmp_path / "data")
    expected = _official_way(campplus_onnx, data / "wav.scp")
    feats = [embedding_features(*read_audio(ln.split(maxsplit=1)[1]))
             for ln in (data / "wav.scp").read_text().splitlines()]
    model = load_campplus(campplus_onnx)
    want = np.stack(list(expected.values())).astype(np.float64)
    for budget in (1, 3000, 100000):  # alone; a few per batch; all 17 (35 s and 65 s clips beside 3 s ones)
        got = TorchEmbedder(model, max_frames_per_batch=budget, threads=1).embed(feats).astype(np.float64)
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= 0.99999 and np.abs(got - want).max() <= 1e-4, (budget, cos.min(), np.abs(got - want).max())
