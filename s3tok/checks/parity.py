"""Parity with the official runtime: the ONNX file run by onnxruntime on CPU at batch 1, as CosyVoice's
``tools/extract_speech_token.py`` does, compared token by token with s3tok's output.

Utterances over 30 s (which CosyVoice itself refuses) are run in the same 30 s windows s3tok uses and
merged the same way, so they are compared too, and counted separately.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Sequence, Union

import numpy as np
import torch

from s3tok.model.config import S3Config
from s3tok.model.windows import WINDOW, merge_segments, plan_segments

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class ParityUnavailable(RuntimeError):
    """onnxruntime is not installed."""


def ort_session(onnx_path: PathLike, threads: int = 1):
    """A CPU onnxruntime session with full graph optimisation, as the official extractor uses."""
    from s3tok.modelfiles.ort_session import cpu_session

    try:
        return cpu_session(onnx_path, threads)
    except ImportError:
        raise ParityUnavailable("the parity check runs the ONNX file with onnxruntime, which is not installed: "
                                "pip install 's3tok[parity]' (or pip install onnxruntime)") from None


def onnx_tokens(session, mel: torch.Tensor, config: S3Config) -> List[int]:
    """Tokens of one log-mel ``[128, T]`` at batch 1; over 30 s in s3tok's windows, merged."""
    segs = plan_segments(0, mel.shape[-1], config.num_tokens, config.token_rate)
    parts = []
    for s in segs:
        feats = mel[None, :, s.start:s.start + s.length].to(torch.float32).numpy()
        out = session.run(["indices"], {"feats": feats, "feats_length": np.array([s.length], np.int32)})[0]
        parts.append(np.asarray(out).reshape(-1).tolist())
    return merge_segments(segs, parts)


def sample_keys(keys: Sequence[str], num: int) -> List[str]:
    """A deterministic sample of ``num`` keys (all when fewer): the smallest SHA-1 of each key, in input order."""
    if num <= 0 or num >= len(keys):
        return list(keys)
    chosen = set(sorted(keys, key=lambda k: hashlib.sha1(k.encode("utf-8")).hexdigest())[:num])
    return [k for k in keys if k in chosen]


@dataclass
class UttParity:
    key: str
    tokens: int
    mismatches: int
    length_diff: int
    long: bool

    @property
    def miss_rate(self) -> float:
        return self.mismatches / max(1, self.tokens)


@dataclass
class ParityReport:
    """Totals over the compared utterances; ``miss_rate`` counts length differences as misses."""

    utterances: int = 0
    tokens: int = 0
    mismatches: int = 0
    length_mismatches: int = 0
    long_utterances: int = 0
    missing: List[str] = field(default_factory=list)
    worst: List[Dict[str, object]] = field(default_factory=list)

    @property
    def miss_rate(self) -> float:
        return self.mismatches / max(1, self.tokens)

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["miss_rate"] = self.miss_rate
        return d


def compare(ours: Sequence[int], theirs: Sequence[int], key: str, long: bool) -> UttParity:
    """Mismatches of one utterance: differing positions plus the length difference."""
    n = min(len(ours), len(theirs))
    diff = int(np.count_nonzero(np.asarray(ours[:n]) != np.asarray(theirs[:n]))) if n else 0
    extra = abs(len(ours) - len(theirs))
    return UttParity(key, len(theirs), diff + extra, len(ours) - len(theirs), long)


def summarize(results: Sequence[UttParity], missing: Sequence[str], worst: int = 10) -> ParityReport:
    rep = ParityReport(utterances=len(results), missing=list(missing))
    for r in results:
        rep.tokens += r.tokens
        rep.mismatches += r.mismatches
        rep.length_mismatches += int(r.length_diff != 0)
        rep.long_utterances += int(r.long)
    bad = sorted((r for r in results if r.mismatches), key=lambda r: (-r.miss_rate, r.key))[:worst]
    rep.worst = [{"key": r.key, "mismatches": r.mismatches, "tokens": r.tokens, "length_diff": r.length_diff,
                  "miss_rate": r.miss_rate} for r in bad]
    return rep


def score(ours: Mapping[str, Sequence[int]], mels: Mapping[str, torch.Tensor], session,
          config: S3Config) -> List[UttParity]:
    """Compare ``ours`` with onnxruntime on the given log-mels (one key each)."""
    out = []
    for key, mel in mels.items():
        theirs = onnx_tokens(session, mel, config)
        out.append(compare(ours[key], theirs, key, mel.shape[-1] > WINDOW))
    return out


def format_table(rep: ParityReport, label: str = "") -> str:
    """A readable summary for the log."""
    lines = [f"parity {label}".rstrip(),
             f"  utterances compared   {rep.utterances} ({rep.long_utterances} over 30 s, in windows)",
             f"  tokens                {rep.tokens}",
             f"  mismatched tokens     {rep.mismatches}  (miss rate {100 * rep.miss_rate:.4f} %)",
             f"  length mismatches     {rep.length_mismatches}"]
    if rep.missing:
        lines.append(f"  missing from tokens   {len(rep.missing)}: {', '.join(rep.missing[:5])}")
    if rep.worst:
        lines.append("  worst utterances:")
        for w in rep.worst:
            length = f", length {int(w['length_diff']):+d}" if w["length_diff"] else ""
            lines.append(f"    {w['key']}: {w['mismatches']} / {w['tokens']} "
                         f"({100 * float(w['miss_rate']):.2f} %){length}")
    return "\n".join(lines)


def run_parity(tokens_path: PathLike, utts: Mapping[str, "object"], model: str, num_utts: int = 200,
               threads: int = 1, base_dir: Union[None, PathLike] = None) -> Dict[str, object]:
    """Run the ONNX file ``model`` (a path or an official name) with onnxruntime at batch 1 on a
    deterministic sample of ``utts`` (``{key: Utterance}``) and compare with the tokens in ``tokens_path``.
    Returns the report as a dict (``report`` holds the :class:`ParityReport`). Raises ValueError, OSError
    or :class:`ParityUnavailable` before any work when an input is unusable."""
    from s3tok.data.tokens import read_token_table
    from s3tok.modelfiles.hub import resolve_onnx
    from s3tok.modelfiles.onnx_import import read_onnx
    from s3tok.stages.features import featurize

    ours = {k: v.tolist() for k, v in read_token_table(tokens_path).items()}
    onnx_path, sha = resolve_onnx(model)
    config = read_onnx(onnx_path).config
    session = ort_session(onnx_path, threads)
    keys = sample_keys([k for k in utts if k in ours], num_utts)
    missing = [k for k in utts if k not in ours]
    logger.info("comparing %d of %d utterances with %s (onnxruntime, batch 1, %d thread(s)); %d have no tokens",
                len(keys), len(utts), onnx_path, threads, len(missing))
    mels = {}
    for k in keys:
        try:
            mels[k] = featurize(utts[k], base_dir).mel
        except Exception as e:  # noqa: BLE001 - an utterance s3tok tokenized but we cannot decode now
            logger.warning("%s: cannot compute its log-mel (%s); left out", k, e)
    report = summarize(score(ours, mels, session, config), missing)
    return {"model": str(onnx_path), "onnx_sha256": sha, "version": config.version, "tokens": str(tokens_path),
            "sampled": len(keys), "report": report}

