"""Two CAM++ engines with one interface: ``embed(feats: [T, 80] tensors) -> np.ndarray [N, 192]`` in input order.

* :class:`OnnxEmbedder`: onnxruntime at batch 1, as CosyVoice's ``tools/extract_embedding.py`` runs
  ``campplus.onnx``, with several sessions working in parallel threads.
* :class:`TorchEmbedder`: s3tok's :class:`~s3tok.model.campplus.CampPlus` (folded inference form), utterances
  sorted by length and batched by a frame budget with exact masks.

:func:`load_embedder` picks one (``auto``: torch when the file's graph can be mapped, else onnxruntime).
Both expose ``engine`` and ``provenance`` (file, SHA-256, engine, random_init).
"""
from __future__ import annotations

import logging
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from s3tok.model.campplus import CampPlus
from s3tok.model.packing import pack_by_length

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
ENGINES = ("auto", "torch", "onnxruntime")


def _check_feats(feats: Sequence[torch.Tensor], feat_dim: int) -> List[torch.Tensor]:
    out = []
    for i, f in enumerate(feats):
        f = torch.as_tensor(f, dtype=torch.float32)
        if f.dim() != 2 or f.shape[1] != feat_dim or f.shape[0] < 1:
            raise ValueError(f"features {i}: expected [T >= 1, {feat_dim}], got {list(f.shape)}")
        out.append(f)
    return out


def _provenance(path: Optional[PathLike], engine: str, random_init: bool) -> Dict[str, object]:
    from s3tok.modelfiles.hub import file_sha256

    return {"file": str(path) if path else None, "sha256": file_sha256(path) if path else None,
            "engine": engine, "random_init": bool(random_init)}


def check_campplus_signature(session, path: PathLike) -> None:
    """Refuse (``ValueError``, naming the file) an onnxruntime session whose graph is not shaped like CAM++: one
    input ``[B, T, F]`` of floats and one output ``[B, D]`` (an S3 tokenizer, for one, has two inputs)."""
    ins, outs = session.get_inputs(), session.get_outputs()

    def show(args) -> str:
        return ", ".join(f"{a.name} {list(a.shape)}" for a in args)

    ok = (len(ins) == 1 and len(outs) == 1 and len(ins[0].shape or []) == 3 and "float" in str(ins[0].type)
          and len(outs[0].shape or []) == 2)
    if not ok:
        raise ValueError(f"{path}: not a CAM++ speaker model: its inputs are [{show(ins)}] and outputs "
                         f"[{show(outs)}]; CAM++ has one input [B, T, 80] and one output [B, 192] "
                         "(an S3 tokenizer goes to s3tok tokenize)")


class OnnxEmbedder:
    """onnxruntime at batch 1 (``input`` [1, T, 80] -> ``output`` [1, 192]), ``sessions`` sessions in parallel
    threads, each with ``threads_per_session`` intra-op threads, full graph optimisation, CPU provider."""

    engine = "onnxruntime"

    def __init__(self, path: PathLike, sessions: int = 2, threads_per_session: int = 1):
        from s3tok.modelfiles.ort_session import cpu_session

        self.path = Path(path)
        first = cpu_session(path, threads_per_session)
        check_campplus_signature(first, path)
        self._sessions = [first] + [cpu_session(path, threads_per_session) for _ in range(max(1, int(sessions)) - 1)]
        self._input = first.get_inputs()[0].name
        shape = first.get_inputs()[0].shape
        self.feat_dim = shape[2] if len(shape) == 3 and isinstance(shape[2], int) else 80
        out_shape = first.get_outputs()[0].shape
        self.embedding_size = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else 192
        meta = first.get_modelmeta().custom_metadata_map
        random_init = meta.get("s3tok_random_init") == "1"
        if random_init:
            logger.warning("%s: random-weight CAM++ made by s3tok: its embeddings are meaningless", path)
        self.provenance = _provenance(path, self.engine, random_init)
        self._free: "queue.Queue" = queue.Queue()
        for s in self._sessions:
            self._free.put(s)

    def _one(self, f: torch.Tensor) -> np.ndarray:
        session = self._free.get()
        try:
            out = session.run(None, {self._input: f.numpy()[None]})[0]
        finally:
            self._free.put(session)
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def embed(self, feats: Sequence[torch.Tensor]) -> np.ndarray:
        """Embeddings [N, D] float32, in input order."""
        feats = _check_feats(feats, self.feat_dim)
        if not feats:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        if len(self._sessions) == 1 or len(feats) == 1:
            return np.stack([self._one(f) for f in feats])
        with ThreadPoolExecutor(len(self._sessions)) as pool:
            return np.stack(list(pool.map(self._one, feats)))


def frame_batches(lengths: Sequence[int], max_frames: int) -> List[List[int]]:
    """Indices sorted by length (longest first) cut into batches whose padded size ``n * longest`` stays within
    ``max_frames`` (a longer utterance goes alone): :func:`~s3tok.model.packing.pack_by_length` without its
    fill rule (exact masks make padding cost time only, not accuracy)."""
    return pack_by_length(range(len(lengths)), lengths.__getitem__, max_frames, min_fill=0.0)


class TorchEmbedder:
    """s3tok's CAM++ in PyTorch: sorted by length, batched by ``max_frames_per_batch`` padded frames, exact masks.

    On CPU the batches run in ``threads`` worker threads with one intra-op thread each (like onnxruntime's
    parallel sessions: small batches stay in cache); torch's intra-op thread count is set to 1 during
    :meth:`embed` and restored afterwards.
    """

    engine = "torch"

    def __init__(self, model: CampPlus, device: Union[str, torch.device] = "cpu", max_frames_per_batch: int = 1600,
                 threads: Optional[int] = None, path: Optional[PathLike] = None):
        self.device = torch.device(device)
        self.config = model.config
        self.form = model.eval().inference_form().to(self.device)
        self.max_frames = max(1, int(max_frames_per_batch))
        self.threads = max(1, int(threads or torch.get_num_threads()))
        self.provenance = _provenance(path, self.engine, bool(getattr(model, "random_init", False)))

    def _batch(self, feats: List[torch.Tensor], idx: List[int]) -> np.ndarray:
        lengths = [feats[i].shape[0] for i in idx]
        x = torch.zeros(len(idx), max(lengths), self.config.feat_dim)
        for k, i in enumerate(idx):
            x[k, :lengths[k]] = feats[i]
        with torch.inference_mode():
            out = self.form(x.to(self.device), torch.tensor(lengths, device=self.device))
        return out.float().cpu().numpy()

    def embed(self, feats: Sequence[torch.Tensor]) -> np.ndarray:
        """Embeddings [N, D] float32, in input order."""
        feats = _check_feats(feats, self.config.feat_dim)
        out = np.zeros((len(feats), self.config.embedding_size), dtype=np.float32)
        batches = frame_batches([f.shape[0] for f in feats], self.max_frames)
        if self.device.type != "cpu" or self.threads == 1 or len(batches) == 1:
            results = [self._batch(feats, b) for b in batches]
        else:
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(self.threads) as pool:
                    results = list(pool.map(lambda b: self._batch(feats, b), batches))
            finally:
                torch.set_num_threads(before)
        for b, r in zip(batches, results):
            out[b] = r
        return out


def load_embedder(model_path: PathLike, engine: str = "auto", device: str = "cpu",
                  threads: Optional[int] = None):
    """An embedder for the CAM++ ONNX file ``model_path`` (or the official name ``campplus``).

    ``torch`` imports the graph (:func:`~s3tok.modelfiles.campplus_onnx.read_campplus`; a refused file is an
    error); ``onnxruntime`` runs the file itself at batch 1; ``auto`` tries torch and falls back to onnxruntime
    with a warning naming why. ``threads``: worker threads (torch) or parallel sessions (onnxruntime)."""
    from s3tok.modelfiles.campplus_onnx import CampPlusImportError, load_campplus
    from s3tok.modelfiles.hub import SPEAKER_MODELS, download_speaker_model

    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    path = Path(model_path)
    if not path.is_file() and str(model_path) in SPEAKER_MODELS:
        path = download_speaker_model(str(model_path))
    if not path.is_file():
        raise FileNotFoundError(f"{model_path}: no such CAM++ model file")
    threads = max(1, int(threads or torch.get_num_threads()))
    if engine == "onnxruntime":
        return OnnxEmbedder(path, sessions=threads)
    try:
        model = load_campplus(path)
    except CampPlusImportError as e:
        if engine == "torch":
            raise
        logger.warning("%s: the torch engine cannot use this file (%s); using onnxruntime at batch 1", path, e)
        return OnnxEmbedder(path, sessions=threads)
    return TorchEmbedder(model, device=device, threads=threads, path=path)
