#!/usr/bin/env python3
"""Make ``tests/data/kaldi_fbank_reference.npz``: torchaudio's own ``compliance.kaldi.fbank`` on the test set's
clips, the values ``tests/test_kaldi_fbank.py`` holds ``s3tok.data.kaldi_fbank`` to.

    python tools/make_fbank_reference.py [--out tests/data/kaldi_fbank_reference.npz] [--wheel WHL]

torchaudio is not installed (its wheels want a matching, often CUDA, torch): the script downloads the wheel
(``pip download torchaudio==VERSION --no-deps``), takes its pure-Python ``compliance/kaldi.py`` and
``functional/functional.py`` out of it, and loads them standalone with stubs for the little they import
from the rest of torchaudio. The clips are ``tools/make_test_set.py``'s (the ``ref`` fixture's), made twice
to check they come out the same; each is decoded with soundfile, channel 0 is resampled to 16 kHz with
s3tok's ``resample`` and given to ``kaldi.fbank(wave[None], num_mel_bins=80, dither=0,
sample_frequency=16000)``, as CosyVoice's ``tools/extract_embedding.py`` does. The log reports how far
s3tok's resampler is from torchaudio's (``transforms.Resample``'s float64 kernel and ``functional.resample``'s
float32 one). The npz holds, per clip, the SHA-256 of its decoded samples (``clip_digest``), the fbank rows
(all of them up to ``--full_seconds``, else the first, middle and last ``--rows``) and their indices, and
the torchaudio version and wheel SHA-256 used.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "kaldi_fbank_reference.npz"

logger = logging.getLogger("make_fbank_reference")


def clip_digest(path: Path) -> str:
    """SHA-256 of a clip's decoded samples (soundfile float32 ``[frames, channels]``) and rate. Not of the
    file: libsndfile stamps float WAVs' PEAK chunk with the time of writing."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    head = f"{rate} {data.shape[0]} {data.shape[1]}\n".encode()
    return hashlib.sha256(head + np.ascontiguousarray(data, dtype="<f4").tobytes()).hexdigest()


def fetch_wheel(version: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", f"torchaudio=={version}", "--no-deps",
                    "--only-binary=:all:", "-d", str(folder)], check=True, stdout=subprocess.DEVNULL)
    (wheel,) = folder.glob("torchaudio-*.whl")
    return wheel


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_from_wheel(wheel: Path, folder: Path) -> Tuple[types.ModuleType, types.ModuleType]:
    """torchaudio's ``compliance.kaldi`` and ``functional.functional``, loaded from the wheel's files under
    stub packages (never an installed torchaudio)."""
    with zipfile.ZipFile(wheel) as z:
        kaldi_py = Path(z.extract("torchaudio/compliance/kaldi.py", folder))
        functional_py = Path(z.extract("torchaudio/functional/functional.py", folder))
    for name in ("torchaudio", "torchaudio.compliance", "torchaudio.functional", "torchaudio._internal"):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__path__ = []  # a package, so submodules resolve through sys.modules
    # what functional.py imports besides torch; neither is used by resampling
    utils = sys.modules["torchaudio._internal.module_utils"] = types.ModuleType("torchaudio._internal.module_utils")
    utils.dropping_support = lambda f: f
    filtering = sys.modules["torchaudio.functional.filtering"] = types.ModuleType("torchaudio.functional.filtering")
    filtering.highpass_biquad = filtering.treble_biquad = None
    return _load("torchaudio.compliance.kaldi", kaldi_py), _load("torchaudio.functional.functional", functional_py)


def make_clips(folder: Path) -> list:
    """``[(utt, path)]`` of ``tools/make_test_set.py``'s set written into ``folder``."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_test_set.py"), str(folder)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"tools/make_test_set.py failed:\n{proc.stderr[-3000:]}")
    lines = (folder / "wav.scp").read_text().splitlines()
    return [(u, folder / p) for u, p in (line.split(maxsplit=1) for line in lines)]


def rows_to_keep(frames: int, full: int, rows: int) -> np.ndarray:
    """All rows when ``frames <= full``; else the first, middle and last ``rows``."""
    if frames <= full:
        return np.arange(frames)
    mid = frames // 2 - rows // 2
    return np.unique(np.concatenate([np.arange(rows), np.arange(mid, mid + rows), np.arange(frames - rows, frames)]))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--version", default="2.9.0", help="torchaudio version to download")
    p.add_argument("--wheel", type=Path, help="a torchaudio wheel already downloaded (else pip downloads one)")
    p.add_argument("--full_seconds", type=float, default=8.0,
                   help="clips up to this long keep every row (8: twelve of the 17, and the file stays ~1.4 MB)")
    p.add_argument("--rows", type=int, default=100, help="rows kept at the start, middle and end of longer clips")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.data.audio import resample
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    with tempfile.TemporaryDirectory(prefix="fbank-ref-") as tmp:
        tmp = Path(tmp)
        wheel = args.wheel or fetch_wheel(args.version, tmp / "wheel")
        wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        kaldi, functional = load_from_wheel(wheel, tmp / "src")
        clips = make_clips(tmp / "set1")
        again = dict(make_clips(tmp / "set2"))
        meta = {"made_by": "tools/make_fbank_reference.py", "torchaudio_wheel": wheel.name,
                "torchaudio_wheel_sha256": wheel_sha, "torchaudio_version": wheel.name.split("-")[1],
                "call": "kaldi.fbank(wave[None], num_mel_bins=80, dither=0, sample_frequency=16000)",
                "input": "soundfile float32, channel 0, s3tok.data.audio.resample to 16 kHz", "clips": {}}
        arrays = {}
        for utt, path in clips:
            digest = clip_digest(path)
            if digest != clip_digest(again[utt]):
                raise RuntimeError(f"{utt}: tools/make_test_set.py made different samples on two runs")
            data, rate = sf.read(path, dtype="float32", always_2d=True)
            x = torch.from_numpy(np.ascontiguousarray(data[:, 0]))
            wave = resample(x, rate, 16000)
            if rate != 16000:
                g = np.gcd(rate, 16000)
                kernel, width = functional._get_sinc_resample_kernel(rate, 16000, g)  # transforms.Resample's
                ta = functional._apply_sinc_resample_kernel(x, rate, 16000, g, kernel, width)
                ta32 = functional.resample(x, rate, 16000)
                logger.info("%s: resample %d -> 16000 Hz, max |s3tok - torchaudio| %.3g (transforms.Resample), "
                            "%.3g (functional.resample)", utt, rate, (wave - ta).abs().max(), (wave - ta32).abs().max())
            feat = kaldi.fbank(wave[None], num_mel_bins=80, dither=0.0, sample_frequency=16000).numpy()
            rows = rows_to_keep(len(feat), int(args.full_seconds * 100), args.rows)
            arrays[f"feat_{utt}"], arrays[f"rows_{utt}"] = feat[rows], rows.astype(np.int32)
            meta["clips"][utt] = {"sha256": digest, "rate": rate, "channels": data.shape[1],
                                  "samples_16k": len(wave), "frames": len(feat), "rows_stored": len(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, meta=np.array(json.dumps(meta, indent=1)), **arrays)
    logger.info("%s: %d clips, %.0f kB", args.out, len(clips), args.out.stat().st_size / 1e3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
