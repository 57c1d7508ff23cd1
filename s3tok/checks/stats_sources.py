"""Where a token set's rate and codebook size come from (``tokenizer.json``, ``--model``, flags), whether
those sources agree, and the set loaded with its durations: the logic behind ``s3tok stats``."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from s3tok.checks.stats import TokenSet, load_set, read_utt2num_frames

logger = logging.getLogger("s3tok.checks.stats")

PathLike = Union[str, os.PathLike]

#: ``(source name, token rate, codebook size, model name or None)``
ModelInfo = Tuple[str, float, int, Optional[str]]


def model_info(model: str) -> ModelInfo:
    """Rate, codebook size and version of ``--model``: an official name, an .onnx file or a converted folder."""
    from s3tok.modelfiles.resolve import model_config

    cfg = model_config(model)
    return f"--model {model}", cfg.token_rate, cfg.codebook_size, cfg.version


def choose_model_info(ts: TokenSet, model: Optional[str] = None, token_rate: Optional[float] = None,
                      codebook_size: Optional[int] = None) -> Tuple[ModelInfo, List[str]]:
    """The first known of tokenizer.json, --model, the flags; and a warning for each source that disagrees."""
    sources: List[ModelInfo] = []
    if ts.token_rate and ts.codebook_size:
        sources.append((str(ts.tokenizer_path), float(ts.token_rate), int(ts.codebook_size),
                        (ts.tokenizer or {}).get("model")))
    if model:
        sources.append(model_info(model))
    if (token_rate is None) != (codebook_size is None):
        raise ValueError("--token_rate and --codebook_size go together")
    if token_rate is not None:
        sources.append(("--token_rate/--codebook_size", token_rate, codebook_size, None))
    if not sources:
        raise ValueError(f"{ts.path}: token rate and codebook size unknown (no tokenizer.json beside it): pass "
                         "--model NAME or --token_rate and --codebook_size")
    first, warnings = sources[0], []
    for other in sources[1:]:
        same_model = first[3] is None or other[3] is None or first[3] == other[3]
        if (first[1], first[2]) != (other[1], other[2]) or not same_model:
            warnings.append(f"model: {first[0]} says {_describe(first)} but {other[0]} says {_describe(other)}: "
                            "these tokens were not made by the model you expect")
    if (ts.tokenizer or {}).get("random_init"):
        warnings.append(f"model: {ts.tokenizer_path} says the tokens were made by a random-weight test model "
                        "(random_init): they are meaningless")
    return first, warnings


def _describe(info: ModelInfo) -> str:
    name = f"{info[3]}, " if info[3] else ""
    return f"{name}{info[1]:g} Hz, {info[2]} codes"


def load_set_with(path: PathLike, utt2num_frames: Optional[PathLike] = None,
                  utt2dur: Optional[PathLike] = None) -> TokenSet:
    """:func:`load_set`, with frames or durations taken from the files given instead of those beside it."""
    from s3tok.data.kaldi_dir import read_utt2dur

    ts = load_set(path)
    if utt2num_frames:
        ts.frames, ts.durations, ts.durations_path = (read_utt2num_frames(utt2num_frames), None,
                                                      Path(utt2num_frames))
    elif utt2dur:
        ts.frames, ts.durations, ts.durations_path = None, read_utt2dur(utt2dur), Path(utt2dur)
    return ts


def write_report_plots(ts: TokenSet, k: int, rate: float, out_dir: Path, stats: Dict[str, Any]) -> None:
    """The PNG plots of a report, or a warning when matplotlib is missing."""
    try:
        from s3tok.checks.stats_plots import write_plots

        title = f"{ts.path}: {stats['model'] + ', ' if stats.get('model') else ''}{rate:g} Hz, {k} codes"
        write_plots(ts.tokens, k, rate, out_dir, ts.durations, ts.frames, title=title, stats=stats)
    except ImportError as e:
        logger.warning("plots skipped: %s", e)
