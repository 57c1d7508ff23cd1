"""PNG plots of a token set (matplotlib, Agg; ``pip install s3tok[plots]``).

* :func:`plot_codebook_usage`: code counts sorted by frequency, log scale;
* :func:`plot_token_rate`: histogram of tokens/s per utterance with the model's rate marked;
* :func:`plot_lengths`: duration vs tokens per utterance with the expected line;
* :func:`write_plots`: the three as separate PNGs plus ``token_stats.png`` with all three side by side.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from s3tok.checks.stats import code_counts, utterance_seconds

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
#: At most this many points in the length scatter (a deterministic subsample beyond).
MAX_SCATTER_POINTS = 20000
FILES = {"codebook": "codebook_usage.png", "rate": "token_rate.png", "lengths": "token_lengths.png",
         "overview": "token_stats.png"}


def _figure(width: float, height: float):
    """A matplotlib Figure on an Agg canvas (pyplot and the global backend are left alone)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("matplotlib is needed for the token plots: pip install 's3tok[plots]' "
                          "(or pass --no_plots)") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def draw_codebook_usage(ax, counts: np.ndarray) -> None:
    """Counts of the codes sorted by frequency (unused codes are left out of the log scale)."""
    k = len(counts)
    sorted_counts = np.sort(counts)[::-1]
    used = int((sorted_counts > 0).sum())
    ranks = np.arange(1, used + 1)
    ax.fill_between(ranks, sorted_counts[:used], step="mid", alpha=0.4, color="C0")
    ax.step(ranks, sorted_counts[:used], where="mid", color="C0", lw=0.8)
    if used < k:
        ax.axvline(used + 0.5, color="C3", ls="--", lw=1, label=f"{k - used} codes unused")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlim(0, k + 1)
    ax.set_xlabel("code rank (most frequent first)")
    ax.set_ylabel("count")
    ax.set_title(f"codebook usage: {used} / {k} codes", fontsize=10)


def draw_token_rate(ax, rates: Sequence[float], expected: float) -> None:
    """Histogram of tokens/s per utterance with the model's rate as a line."""
    r = np.asarray(rates, dtype=np.float64)
    if r.size:
        lo, hi = min(r.min(), expected), max(r.max(), expected)
        pad = max(0.05 * expected, 0.05 * (hi - lo))
        ax.hist(r, bins=min(60, max(10, int(np.sqrt(r.size)))), range=(lo - pad, hi + pad), color="C0", alpha=0.7)
    ax.axvline(expected, color="C3", ls="--", lw=1.2, label=f"model: {expected:g} tokens/s")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("tokens per second (per utterance)")
    ax.set_ylabel("utterances")
    ax.set_title("token rate" if r.size else "token rate: no durations", fontsize=10)


def draw_lengths(ax, seconds: Sequence[float], num_tokens: Sequence[int], expected: float) -> None:
    """Duration vs tokens per utterance, with ``tokens = rate * seconds``."""
    x = np.asarray(seconds, dtype=np.float64)
    y = np.asarray(num_tokens, dtype=np.float64)
    if x.size > MAX_SCATTER_POINTS:
        keep = np.random.default_rng(0).choice(x.size, MAX_SCATTER_POINTS, replace=False)
        x, y = x[keep], y[keep]
    top = float(x.max()) if x.size else 1.0
    ax.plot([0, top], [0, expected * top], color="C3", ls="--", lw=1, label=f"{expected:g} tokens/s", zorder=1)
    ax.scatter(x, y, s=14 if x.size < 500 else 5, alpha=0.7, color="C0", lw=0, label="utterances", zorder=2)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("tokens")
    ax.set_title("utterance lengths", fontsize=10)


def plot_codebook_usage(counts: np.ndarray, path: PathLike) -> Path:
    fig = _figure(6, 4)
    draw_codebook_usage(fig.add_subplot(), counts)
    return _save(fig, path)


def plot_token_rate(rates: Sequence[float], expected: float, path: PathLike) -> Path:
    fig = _figure(6, 4)
    draw_token_rate(fig.add_subplot(), rates, expected)
    return _save(fig, path)


def plot_lengths(seconds: Sequence[float], num_tokens: Sequence[int], expected: float, path: PathLike) -> Path:
    fig = _figure(6, 4)
    draw_lengths(fig.add_subplot(), seconds, num_tokens, expected)
    return _save(fig, path)


def write_plots(tokens: Mapping[str, Sequence[int]], codebook_size: int, token_rate: float, out_dir: PathLike,
                durations: Optional[Mapping[str, float]] = None, frames: Optional[Mapping[str, int]] = None,
                title: str = "", stats: Optional[Dict[str, Any]] = None) -> List[Path]:
    """Write the three plots and the side-by-side overview into ``out_dir``; returns the paths. The rate and
    length plots need durations or frames (without them they say so)."""
    out = Path(out_dir)
    counts = code_counts(tokens, codebook_size)
    seconds = utterance_seconds(list(tokens), durations, frames)
    keys = [k for k in tokens if seconds.get(k, 0) > 0]
    sec = [seconds[k] for k in keys]
    lens = [len(tokens[k]) for k in keys]
    rates = [n / s for n, s in zip(lens, sec)]
    paths = [plot_codebook_usage(counts, out / FILES["codebook"]),
             plot_token_rate(rates, token_rate, out / FILES["rate"]),
             plot_lengths(sec, lens, token_rate, out / FILES["lengths"])]
    fig = _figure(13, 3.6)
    axes = fig.subplots(1, 3)
    draw_codebook_usage(axes[0], counts)
    draw_token_rate(axes[1], rates, token_rate)
    draw_lengths(axes[2], sec, lens, token_rate)
    if stats is not None:
        n_warn = len(stats.get("warnings", []))
        title = f"{title}  ({n_warn} warning{'s' if n_warn != 1 else ''})" if title else f"{n_warn} warnings"
    if title:
        fig.suptitle(title, fontsize=10)
    paths.append(_save(fig, out / FILES["overview"]))
    logger.info("plots: %s", ", ".join(str(p) for p in paths))
    return paths
