"""Token statistics of a tokenized set: spot a broken run (wrong sample rate, wrong model) before training.

:func:`token_stats` takes ``{utt: token ids}`` and the model's codebook size and token rate (plus
per-utterance durations or mel frames when known) and returns a JSON-ready dict: counts, codebook usage
(share of codes used, entropy, top codes), the measured token rate (with mel frames: the exact expected
count of every utterance), suspicious utterances, and ``warnings``: one readable line per problem.
:func:`load_set` reads a whole data dir (the token file through :func:`s3tok.data.tokens.read_token_table`).
Plots are in :mod:`s3tok.checks.stats_plots`. Nothing here needs torch.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from s3tok.data.tokens import read_token_table

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
MEL_FRAMES_PER_SECOND = 100
#: Mel frames per token of each known rate and the conv strides that give it (each ``ceil(L / s)``).
RATE_STRIDES = {50: (2,), 25: (2, 2)}


@dataclass(frozen=True)
class Thresholds:
    """When an utterance is suspicious and when a set-level warning fires."""

    max_repeat_share: float = 0.8  # one token over more than this share of an utterance
    min_distinct_ratio: float = 0.1  # distinct tokens / tokens below this
    min_tokens_to_judge: int = 10  # shorter utterances are not judged on repetition / distinct ratio
    rate_tolerance: float = 0.1  # measured tokens/s may differ from the model's rate by this share
    max_count_mismatch_share: float = 0.0  # share of utterances whose count differs from the frames' count
    min_code_usage: float = 0.05  # used codes / min(codebook size, number of tokens) below this warns
    max_suspicious_share: float = 0.05  # share of repeated / low-distinct utterances above this warns
    max_examples: int = 20  # utterances listed per kind of problem


# --------------------------------------------------------------------------------------- token counts

def expected_num_tokens(mel_frames: int, token_rate: float) -> Optional[int]:
    """Exact token count of ``mel_frames`` frames: ``ceil(T/2)`` at 50 Hz, ``ceil(ceil(T/2)/2)`` at 25 Hz;
    None for another rate."""
    strides = RATE_STRIDES.get(int(token_rate)) if float(token_rate).is_integer() else None
    if strides is None:
        return None
    n = int(mel_frames)
    for s in strides:
        n = -(-n // s)
    return n


def utterance_seconds(keys: Sequence[str], durations: Optional[Mapping[str, float]] = None,
                      frames: Optional[Mapping[str, int]] = None) -> Dict[str, float]:
    """Seconds of each key that has a duration: ``frames / 100`` first, else ``durations``."""
    out: Dict[str, float] = {}
    for k in keys:
        if frames is not None and k in frames:
            out[k] = frames[k] / MEL_FRAMES_PER_SECOND
        elif durations is not None and k in durations:
            out[k] = float(durations[k])
    return out


def code_counts(tokens: Mapping[str, Sequence[int]], codebook_size: int) -> np.ndarray:
    """How often each code in ``[0, codebook_size)`` occurs (ids outside are not counted)."""
    counts = np.zeros(codebook_size, dtype=np.int64)
    for seq in tokens.values():
        a = np.asarray(seq, dtype=np.int64)
        a = a[(a >= 0) & (a < codebook_size)]
        if a.size:
            counts += np.bincount(a, minlength=codebook_size)
    return counts


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def codebook_usage(counts: np.ndarray, top_k: int = 20) -> Dict[str, Any]:
    """Share of codes used, entropy (bits, and its ratio to ``log2(K)``), the ``top_k`` codes."""
    k = len(counts)
    total = int(counts.sum())
    used = int((counts > 0).sum())
    entropy = _entropy_bits(counts)
    order = np.argsort(-counts, kind="stable")[:top_k]
    top = [{"code": int(c), "count": int(counts[c]), "share": float(counts[c]) / total if total else 0.0}
           for c in order if counts[c] > 0]
    attainable = min(k, total)
    return {"used": used, "usage": used / k if k else 0.0,
            "usage_of_attainable": used / attainable if attainable else 0.0,
            "entropy_bits": entropy, "max_entropy_bits": math.log2(k) if k > 1 else 0.0,
            "entropy_ratio": entropy / math.log2(k) if k > 1 else 0.0, "top": top}


# ---------------------------------------------------------------------------------- per-utterance checks

def _examples(rows: List[Dict[str, Any]], limit: int) -> Dict[str, Any]:
    return {"count": len(rows), "examples": rows[:limit]}


def _suspicious(tokens: Mapping[str, Sequence[int]], codebook_size: int, th: Thresholds) -> Dict[str, Any]:
    """Empty utterances, ids outside ``[0, K)``, one token over most of an utterance, few distinct tokens."""
    empty: List[Dict[str, Any]] = []
    out_of_range: List[Dict[str, Any]] = []
    repeated: List[Dict[str, Any]] = []
    low_distinct: List[Dict[str, Any]] = []
    bad_ids = 0
    for key, seq in tokens.items():
        a = np.asarray(seq, dtype=np.int64)
        n = int(a.size)
        if n == 0:
            empty.append({"utt": key})
            continue
        bad = (a < 0) | (a >= codebook_size)
        if bad.any():
            nb = int(bad.sum())
            bad_ids += nb
            out_of_range.append({"utt": key, "num_bad": nb, "min": int(a.min()), "max": int(a.max())})
        if n < th.min_tokens_to_judge:
            continue
        values, counts = np.unique(a, return_counts=True)
        top = int(counts.argmax())
        share = float(counts[top]) / n
        if share > th.max_repeat_share:
            repeated.append({"utt": key, "token": int(values[top]), "share": share, "num_tokens": n})
        distinct = len(values) / n
        if distinct < th.min_distinct_ratio:
            low_distinct.append({"utt": key, "distinct_ratio": distinct, "distinct": len(values), "num_tokens": n})
    flagged = {r["utt"] for rows in (empty, out_of_range, repeated, low_distinct) for r in rows}
    degenerate = {r["utt"] for rows in (repeated, low_distinct) for r in rows}
    return {"num_utterances": len(flagged), "num_degenerate": len(degenerate), "out_of_range_ids": bad_ids,
            "empty": _examples(empty, th.max_examples), "out_of_range": _examples(out_of_range, th.max_examples),
            "repeated": _examples(repeated, th.max_examples),
            "low_distinct": _examples(low_distinct, th.max_examples)}


def _percentiles(x: np.ndarray) -> Dict[str, float]:
    if x.size == 0:
        return {}
    p5, p50, p95 = np.percentile(x, [5, 50, 95])
    return {"min": float(x.min()), "p5": float(p5), "median": float(p50), "p95": float(p95), "max": float(x.max())}


def _rate(tokens: Mapping[str, Sequence[int]], token_rate: float, seconds: Mapping[str, float],
          frames: Optional[Mapping[str, int]], th: Thresholds) -> Dict[str, Any]:
    """Measured tokens per second, and with mel frames the exact count check of every utterance."""
    keys = [k for k in tokens if seconds.get(k, 0.0) > 0]
    n = np.array([len(tokens[k]) for k in keys], dtype=np.float64)
    sec = np.array([seconds[k] for k in keys], dtype=np.float64)
    out: Dict[str, Any] = {"expected": token_rate, "utterances_with_duration": len(keys),
                           "utterances_without_duration": len(tokens) - len(keys),
                           "total_seconds": float(sec.sum())}
    if keys:
        overall = float(n.sum() / sec.sum())
        out.update(overall=overall, ratio=overall / token_rate, per_utterance=_percentiles(n / sec))
    if frames is not None and expected_num_tokens(1, token_rate) is not None:
        checked, mismatched, got, want = 0, [], 0, 0
        for k, seq in tokens.items():
            if k not in frames:
                continue
            exp = expected_num_tokens(frames[k], token_rate)
            checked += 1
            got, want = got + len(seq), want + exp
            if len(seq) != exp:
                mismatched.append({"utt": k, "tokens": len(seq), "expected": exp, "frames": int(frames[k])})
        out["count_check"] = {"checked": checked, "mismatched": len(mismatched),
                              "ratio": got / want if want else None, "examples": mismatched[:th.max_examples]}
    return out


# -------------------------------------------------------------------------------------------- warnings

def _rate_cause(ratio: float) -> str:
    """What a measured/expected rate ratio usually means."""
    if 0.45 <= ratio <= 0.55:
        return ("about half the model's rate: tokens from a 25 Hz model where a 50 Hz one is claimed, or audio "
                "at 8 kHz decoded as 16 kHz")
    if 1.8 <= ratio <= 2.2:
        return ("about twice the model's rate: tokens from a 50 Hz model where a 25 Hz one is claimed, or audio "
                "at 32 kHz decoded as 16 kHz")
    return (f"wrong sample rate (audio at {16 * ratio:.1f} kHz decoded as 16 kHz gives this ratio), or "
            "durations that do not belong to these tokens")


def _warnings(stats: Dict[str, Any], th: Thresholds) -> List[str]:
    out: List[str] = []
    n_utt, k = stats["num_utterances"], stats["codebook_size"]
    if n_utt == 0:
        return ["no utterances: the token set is empty"]
    rate = stats["rate"]
    check = rate.get("count_check")
    if check and check["ratio"] and check["mismatched"] > th.max_count_mismatch_share * check["checked"]:
        ex = check["examples"][0]
        r = check["ratio"]
        cause = _rate_cause(r) if abs(r - 1) > th.rate_tolerance else (
            "off by a few tokens: frames counted another way (utt2num_frames not from s3tok's front end, "
            "e.g. Kaldi fbank) or tokens cut or padded")
        out.append(f"token counts: {check['mismatched']} / {check['checked']} utterances do not have the exact "
                   f"count for their mel frames at {rate['expected']:g} Hz (e.g. {ex['utt']}: {ex['tokens']} "
                   f"tokens, {ex['expected']} expected from {ex['frames']} frames); tokens / expected = "
                   f"{r:.3f}: {cause}")
    if "ratio" in rate and abs(rate["ratio"] - 1) > th.rate_tolerance:
        out.append(f"token rate: {rate['overall']:.2f} tokens/s measured, the model makes {rate['expected']:g} "
                   f"(ratio {rate['ratio']:.3f}): {_rate_cause(rate['ratio'])}")
    sus = stats["suspicious"]
    if sus["out_of_range_ids"]:
        bad = sus["out_of_range"]
        ex = bad["examples"][0]
        out.append(f"token ids: {sus['out_of_range_ids']} ids in {bad['count']} utterances outside [0, {k}) "
                   f"(e.g. {ex['utt']}: ids {ex['min']}..{ex['max']}): wrong codebook size, or tokens of another "
                   "model (v2/v3 have 6561 codes, v1 4096)")
    if sus["empty"]["count"]:
        out.append(f"empty: {sus['empty']['count']} utterances have no tokens "
                   f"(e.g. {sus['empty']['examples'][0]['utt']})")
    if sus["num_degenerate"] > th.max_suspicious_share * n_utt:
        n = sus["num_degenerate"]
        out.append(f"suspicious utterances: {n} of {n_utt} ({100 * n / n_utt:.1f}%, more than "
                   f"{100 * th.max_suspicious_share:g}%) look degenerate: {sus['repeated']['count']} with one token "
                   f"over {100 * th.max_repeat_share:.0f}% of the utterance, {sus['low_distinct']['count']} with "
                   f"under {100 * th.min_distinct_ratio:.0f}% distinct tokens (silence, broken audio or a collapsed "
                   "model)")
    cb = stats["codebook"]
    if stats["num_tokens"] and cb["usage_of_attainable"] < th.min_code_usage:
        out.append(f"codebook: only {cb['used']} of {k} codes used ({100 * cb['usage']:.2f}%), entropy "
                   f"{cb['entropy_bits']:.2f} bits of {cb['max_entropy_bits']:.2f}: wrong or collapsed model, "
                   "or audio that is silence / noise")
    return out


def token_stats(tokens: Mapping[str, Sequence[int]], codebook_size: int, token_rate: float,
                durations: Optional[Mapping[str, float]] = None, *, frames: Optional[Mapping[str, int]] = None,
                thresholds: Optional[Thresholds] = None, top_k: int = 20) -> Dict[str, Any]:
    """Statistics and warnings of a token set (``{utt: ids}``) made by a model of ``codebook_size`` codes at
    ``token_rate`` tokens/s. ``durations``: seconds per utterance; ``frames``: mel frames per utterance
    (100 per second; preferred, and they give the exact expected count of each utterance)."""
    if codebook_size <= 0 or token_rate <= 0:
        raise ValueError(f"codebook_size and token_rate must be positive, got {codebook_size} and {token_rate}")
    th = thresholds or Thresholds()
    lengths = np.array([len(v) for v in tokens.values()], dtype=np.int64)
    seconds = utterance_seconds(list(tokens), durations, frames)
    stats: Dict[str, Any] = {
        "num_utterances": len(tokens), "num_tokens": int(lengths.sum()), "codebook_size": int(codebook_size),
        "token_rate": token_rate, "tokens_per_utterance": _percentiles(lengths.astype(np.float64)),
        "codebook": codebook_usage(code_counts(tokens, codebook_size), top_k),
        "rate": _rate(tokens, token_rate, seconds, frames, th),
        "suspicious": _suspicious(tokens, codebook_size, th),
        "thresholds": th.__dict__.copy(),
    }
    stats["warnings"] = _warnings(stats, th)
    return stats


# ------------------------------------------------------------------------------------------------ input

def read_utt2num_frames(path: PathLike) -> Dict[str, int]:
    """``utt2num_frames``: ``{utt: mel frames}`` (100 per second)."""
    from s3tok.data.kaldi_dir import read_lines

    out = {}
    for ln in read_lines(path):
        try:
            out[ln.key] = int(ln.value)
        except ValueError:
            raise ValueError(f"{path}:{ln.lineno}: frame count must be an integer, got {ln.value!r}") from None
        if out[ln.key] < 0:
            raise ValueError(f"{path}:{ln.lineno}: negative frame count {ln.value}")
    return out


@dataclass
class TokenSet:
    """A token set and what is known about it: the tokenizer's ``tokenizer.json`` and durations."""

    tokens: Dict[str, np.ndarray]
    path: Path  # the token file
    tokenizer: Optional[Dict[str, Any]] = None  # tokenizer.json, when found
    tokenizer_path: Optional[Path] = None
    frames: Optional[Dict[str, int]] = None  # utt2num_frames
    durations: Optional[Dict[str, float]] = None  # utt2dur
    durations_path: Optional[Path] = None  # the file that gave frames or durations

    @property
    def token_rate(self) -> Optional[float]:
        return (self.tokenizer or {}).get("token_rate")

    @property
    def codebook_size(self) -> Optional[int]:
        return (self.tokenizer or {}).get("codebook_size")


def _beside(token_file: Path, base: str, ext: str = "") -> Path:
    """``tokenizer.json`` beside ``tokens.scp``; ``tokenizer.3.json`` beside a job's ``tokens.3.txt``."""
    parts = token_file.name.split(".")
    job = f".{parts[1]}" if len(parts) == 3 and parts[0] == "tokens" and parts[1].isdigit() else ""
    return token_file.with_name(f"{base}{job}{ext}")


def find_token_file(path: PathLike) -> Path:
    """The token file of ``path``: itself if a file, else ``tokens.scp`` or ``tokens.txt`` inside it."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for name in ("tokens.scp", "tokens.txt"):
            if (p / name).is_file():
                return p / name
        raise ValueError(f"{p}: neither tokens.scp nor tokens.txt in this directory")
    raise ValueError(f"{p}: no such file or directory")


def load_set(data_dir: PathLike) -> TokenSet:
    """Read a data dir (or a token file): tokens, ``tokenizer.json`` and ``utt2num_frames`` / ``utt2dur``
    beside them when present."""
    token_file = find_token_file(data_dir)
    ts = TokenSet(read_token_table(token_file), token_file)
    tok_json = _beside(token_file, "tokenizer", ".json")
    if tok_json.is_file():
        try:
            ts.tokenizer = json.loads(tok_json.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{tok_json}: not valid JSON ({e})") from None
        ts.tokenizer_path = tok_json
    frames_file = _beside(token_file, "utt2num_frames")
    dur_file = token_file.with_name("utt2dur")
    if frames_file.is_file():
        ts.frames, ts.durations_path = read_utt2num_frames(frames_file), frames_file
    elif dur_file.is_file():
        from s3tok.data.kaldi_dir import read_utt2dur

        ts.durations, ts.durations_path = read_utt2dur(dur_file), dur_file
    logger.info("%s: %d utterances%s%s", token_file, len(ts.tokens),
                f", model info from {ts.tokenizer_path}" if ts.tokenizer_path else "",
                f", durations from {ts.durations_path}" if ts.durations_path else "")
    return ts


def _hours(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 600 else f"{seconds / 3600:.2f} h"


def summary_lines(stats: Mapping[str, Any]) -> List[str]:
    """A short readable summary of :func:`token_stats` output."""
    cb, rate, sus = stats["codebook"], stats["rate"], stats["suspicious"]
    lines = [f"{stats['num_utterances']} utterances, {stats['num_tokens']} tokens "
             f"({stats['token_rate']:g} Hz, {stats['codebook_size']} codes)",
             f"codebook: {cb['used']} / {stats['codebook_size']} codes used ({100 * cb['usage']:.1f}%), entropy "
             f"{cb['entropy_bits']:.2f} bits ({100 * cb['entropy_ratio']:.1f}% of {cb['max_entropy_bits']:.2f})"]
    if "overall" in rate:
        pu = rate["per_utterance"]
        lines.append(f"rate: {rate['overall']:.2f} tokens/s over {_hours(rate['total_seconds'])} "
                     f"(expected {rate['expected']:g}; per utterance median {pu['median']:.2f}, "
                     f"5-95% {pu['p5']:.2f}..{pu['p95']:.2f})")
    else:
        lines.append("rate: not checked (no utt2num_frames or utt2dur)")
    if "count_check" in rate:
        c = rate["count_check"]
        lines.append(f"exact counts: {c['checked'] - c['mismatched']} / {c['checked']} utterances match their "
                     "mel frames")
    lines.append(f"suspicious: {sus['num_utterances']} utterances ({sus['repeated']['count']} repeated, "
                 f"{sus['low_distinct']['count']} low distinct, {sus['out_of_range']['count']} out of range, "
                 f"{sus['empty']['count']} empty)")
    return lines
