#!/usr/bin/env python3
"""Make the test suite's own reference set: small random-weight models in the four official layouts, clips,
and the tokens onnxruntime gives for every (model, clip) pair at batch 1.

    python tools/make_test_set.py OUT_DIR [--seed 0]

The layout is that of ``../shared/reference`` (made by an independent implementation, and absent from a
user's clone), so a test runs on either set unchanged:

  models/<name>.onnx              written by ``s3tok.modelfiles.onnx_export`` (official node/initializer layout, opset)
  audio/, wav.scp                 17 clips with the same keys, rates, channels, formats and lengths as the
                                  shared set's (the keys name those properties; the speech is egs/mini's
                                  espeak-ng corpus cut and converted, not the shared recordings)
  expected/tokens_<name>.json     ``{utt: [ids]}`` from onnxruntime on CPU at batch 1, clips over 30 s in
                                  s3tok's 30 s windows (the parity check's code path)
  expected/near_ties_<name>.json  ``{utt: [[position, margin], ...]}``: tokens whose decision margin in
                                  onnxruntime is under 1e-4 (the shared set's rule), where an fp32
                                  re-implementation may round the other way
  meta.json                       how the set was made, and per clip its rate, channels, format, frames

The tokens come from onnxruntime running the exported graph, not from the PyTorch model under test.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
MINI_CORPUS = ROOT / "egs" / "mini" / "corpus" / "data_aishell" / "wav"

# (model name, width, heads, depth): the sizes of the shared reference models.
MODELS = (("speech_tokenizer_v1", 128, 2, 2), ("speech_tokenizer_v1_25hz", 128, 2, 2),
          ("speech_tokenizer_v2_25hz", 128, 2, 2), ("speech_tokenizer_v3_25hz", 128, 2, 3))

# (key, samples at 16 kHz, file rate, channels, format, subtype, suffix)
CLIPS = (
    ("BAC009S0764W0121", 67262, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("cmn_boats", 133334, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("cmn_folder_22k", 136858, 22050, 1, "WAV", "PCM_16", ".wav"),
    ("cmn_morning", 95778, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("cmn_rain_f32", 47546, 16000, 1, "WAV", "FLOAT", ".wav"),
    ("cmn_thanks_48k", 51282, 48000, 1, "WAV", "PCM_16", ".wav"),
    ("en_boats_8k", 71656, 8000, 1, "WAV", "PCM_16", ".wav"),
    ("en_bread_24bit", 63382, 16000, 1, "WAV", "PCM_24", ".wav"),
    ("en_folder", 96816, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("en_morning", 51771, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("en_music_44k", 70392, 44100, 1, "WAV", "PCM_16", ".wav"),
    ("en_paragraph", 235200, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("en_robot", 72750, 16000, 1, "FLAC", "PCM_16", ".flac"),
    ("en_yes", 22802, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("long_35s", 560208, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("long_65s", 1040347, 16000, 1, "WAV", "PCM_16", ".wav"),
    ("stereo_mix", 40454, 16000, 2, "WAV", "PCM_16", ".wav"),
)

logger = logging.getLogger("make_test_set")


def speech_stream() -> np.ndarray:
    """egs/mini's corpus as one 16 kHz float32 stream, in a fixed order."""
    paths = sorted(MINI_CORPUS.rglob("*.wav"))
    if not paths:
        raise FileNotFoundError(f"{MINI_CORPUS}: no .wav files (the clips are cut from egs/mini's corpus)")
    parts = []
    for p in paths:
        audio, rate = sf.read(p, dtype="float32", always_2d=True)
        if rate != 16000:
            raise ValueError(f"{p}: {rate} Hz, expected 16000")
        parts.append(audio.mean(1))
    return np.concatenate(parts)


def make_audio(out: Path, rng: np.random.Generator) -> List[Tuple[str, str]]:
    """Write the clips into ``out/audio``; returns ``[(key, relative path)]`` sorted by key."""
    import torch

    from s3tok.data.audio import resample

    stream = speech_stream()
    (out / "audio").mkdir(parents=True, exist_ok=True)
    entries = []
    for key, n16, rate, channels, fmt, subtype, suffix in CLIPS:
        chans = []
        for _ in range(channels):  # each channel its own stretch of speech
            start = int(rng.integers(0, len(stream)))
            chans.append(np.resize(np.roll(stream, -start), n16) * float(rng.uniform(0.3, 0.9)))
        audio = np.stack(chans, 1).astype(np.float32)
        if rate != 16000:
            audio = resample(torch.from_numpy(audio.T.copy()), 16000, rate).numpy().T
        rel = f"audio/{key}{suffix}"
        sf.write(out / rel, np.clip(audio, -1.0, 1.0), rate, format=fmt, subtype=subtype)
        entries.append((key, rel))
    return sorted(entries)


def make_models(out: Path, seed: int) -> Dict[str, Path]:
    from s3tok.modelfiles.onnx_export import export_onnx, random_model

    (out / "models").mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (name, width, heads, depth) in enumerate(MODELS):
        model = random_model(name, width=width, heads=heads, depth=depth, seed=seed + i)
        paths[name] = out / "models" / f"{name}.onnx"
        export_onnx(model, paths[name], random_init=True)
    return paths


NEAR_TIE = 1e-4  # the shared set's threshold on a decision margin


def _session_with_decision(model_path: Path):
    """An onnxruntime session of the graph with the quantizer's decision values as a second output: the
    input of VQ's ``ArgMax`` (negative distances) or of FSQ's ``Round`` (``tanh(h) * 0.999``)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(model_path))
    decision = [n.input[0] for n in proto.graph.node if n.op_type in ("ArgMax", "Round")]
    if len(decision) != 1:
        raise ValueError(f"{model_path}: expected one ArgMax or Round node, found {len(decision)}")
    proto.graph.output.append(onnx.helper.make_tensor_value_info(decision[0], onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]), decision[0]


def _margins(values: np.ndarray, quantizer: str) -> np.ndarray:
    """Per token, how far its decision is from changing: VQ, best minus second-best value; FSQ, the
    smallest distance of a dimension to a rounding boundary (|v| = 0.5)."""
    if quantizer == "vq":
        top2 = np.sort(values, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]
    return np.abs(np.abs(values) - 0.5).min(-1)


def expected_tokens(model_path: Path, mels: Dict[str, "object"]) -> Tuple[dict, dict]:
    """onnxruntime at batch 1 on every clip's log-mel, clips over 30 s in s3tok's 30 s windows merged as the
    parity check does; returns ``({utt: tokens}, {utt: [[position, margin], ...]})`` where the near-ties
    are the tokens whose decision margin is under :data:`NEAR_TIE`."""
    from s3tok.model.windows import merge_segments, plan_segments
    from s3tok.modelfiles.onnx_import import read_onnx

    config = read_onnx(model_path).config
    session, decision = _session_with_decision(model_path)
    tokens, ties = {}, {}
    for key, mel in mels.items():
        segs = plan_segments(0, mel.shape[-1], config.num_tokens, config.token_rate)
        parts, margins = [], []
        for s in segs:
            feats = mel[None, :, s.start:s.start + s.length].numpy()
            ids, values = session.run(["indices", decision],
                                      {"feats": feats, "feats_length": np.array([s.length], np.int32)})
            parts.append(ids.reshape(-1).tolist())
            margins.append(_margins(values[0], config.quantizer).tolist())
        tokens[key] = merge_segments(segs, parts)
        merged = merge_segments(segs, margins)
        ties[key] = [[i, float(f"{m:.4g}")] for i, m in enumerate(merged) if m < NEAR_TIE]
    return tokens, ties


def make_test_set(out: Path, seed: int = 0) -> Path:
    """Write the whole set into ``out`` (created; existing files of the set are overwritten)."""
    from s3tok.data.audio import load_audio, log_mel_spectrogram

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = make_audio(out, rng)
    (out / "wav.scp").write_text("".join(f"{k} {p}\n" for k, p in entries))
    mels = {k: log_mel_spectrogram(load_audio(str(out / p))) for k, p in entries}
    models = make_models(out, seed)
    (out / "expected").mkdir(exist_ok=True)
    for name, path in models.items():
        tokens, ties = expected_tokens(path, mels)
        (out / "expected" / f"tokens_{name}.json").write_text(json.dumps(tokens))
        (out / "expected" / f"near_ties_{name}.json").write_text(json.dumps(ties))
        logger.info("%s: %d tokens from onnxruntime at batch 1, %d near-ties", name,
                    sum(map(len, tokens.values())), sum(map(len, ties.values())))
    spec = {c[0]: c for c in CLIPS}
    meta = {
        "made_by": "tools/make_test_set.py", "seed": seed,
        "models": {n: {"width": w, "heads": h, "depth": d} for n, w, h, d in MODELS},
        "clips": {k: {"rate": spec[k][2], "channels": spec[k][3], "format": f"{spec[k][4]}/{spec[k][5]}",
                      "mel_frames": int(mels[k].shape[-1]),
                      "sha256": hashlib.sha256((out / p).read_bytes()).hexdigest()} for k, p in entries},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder to write (created)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of where clips are cut")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    make_test_set(Path(args.out_dir), args.seed)
    logger.info("test set written to %s", args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
