"""Token statistics of a tokenized set, to spot a broken run (wrong sample rate, wrong model) before training.

Reads DATA_DIR/tokens.scp (or tokens.txt, or the token file given), tokenizer.json and utt2num_frames or
utt2dur beside it; writes OUT_DIR/token_stats.json and PNG plots (OUT_DIR: stats/ beside the tokens);
logs a summary and every warning. The token rate and codebook size come from tokenizer.json, else
from --model, else from --token_rate and --codebook_size; a source that disagrees is itself a warning.
Exit codes: 0 done; 1 a warning fired and --fail_on_warning; 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from s3tok.util.fsutil import atomic_write_text
from s3tok.util.logging_setup import setup_logging
from s3tok.checks.stats import Thresholds, summary_lines, token_stats
from s3tok.checks.stats_sources import choose_model_info, load_set_with, write_report_plots

logger = logging.getLogger("s3tok.checks.stats")

def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok stats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="data dir with tokens.scp / tokens.txt, or a token file (.scp or text)")
    p.add_argument("--model", default=None,
                   help="the model the tokens should come from: official name, .onnx file or converted folder")
    p.add_argument("--token_rate", type=float, default=None, help="tokens per second (25 or 50)")
    p.add_argument("--codebook_size", type=int, default=None, help="number of codes (4096 or 6561)")
    p.add_argument("--utt2num_frames", default=None, help="mel frames per utterance (default: beside the tokens)")
    p.add_argument("--utt2dur", default=None, help="seconds per utterance (default: beside the tokens)")
    p.add_argument("--out_dir", default=None, help="where token_stats.json and the PNGs go "
                                                  "(default: stats/ beside the tokens)")
    p.add_argument("--no_plots", action="store_true", help="no PNGs (matplotlib not needed)")
    p.add_argument("--fail_on_warning", action="store_true", help="exit 1 when a warning fired")
    d = Thresholds()
    p.add_argument("--max_repeat_share", type=float, default=d.max_repeat_share,
                   help="flag an utterance when one token covers more than this share of it")
    p.add_argument("--min_distinct_ratio", type=float, default=d.min_distinct_ratio,
                   help="flag an utterance with fewer distinct tokens per token")
    p.add_argument("--rate_tolerance", type=float, default=d.rate_tolerance,
                   help="warn when tokens/s differs from the model's rate by more than this share")
    p.add_argument("--max_suspicious_share", type=float, default=d.max_suspicious_share,
                   help="warn when more than this share of utterances is flagged")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.verbose)
    th = Thresholds(max_repeat_share=args.max_repeat_share, min_distinct_ratio=args.min_distinct_ratio,
                    rate_tolerance=args.rate_tolerance, max_suspicious_share=args.max_suspicious_share)
    try:
        ts = load_set_with(args.input, args.utt2num_frames, args.utt2dur)
        (source, rate, k, name), model_warnings = choose_model_info(ts, args.model, args.token_rate, args.codebook_size)
        stats = token_stats(ts.tokens, k, rate, ts.durations, frames=ts.frames, thresholds=th)
    except (ValueError, OSError) as e:
        logger.error("%s", e)
        return 2
    stats["warnings"] = model_warnings + stats["warnings"]
    report: Dict[str, Any] = {"input": str(ts.path), "model": name, "model_info_from": source,
                              "durations_from": str(ts.durations_path) if ts.durations_path else None,
                              "tokenizer": ts.tokenizer, **stats}
    out_dir = Path(args.out_dir) if args.out_dir else ts.path.parent / "stats"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "token_stats.json", json.dumps(report, indent=1) + "\n")
    except OSError as e:
        logger.error("%s: cannot write token_stats.json (%s)", out_dir, e)
        return 2
    logger.info("%s (%s from %s):", ts.path, name or "model", source)
    for line in summary_lines(stats):
        logger.info("  %s", line)
    if not args.no_plots:
        write_report_plots(ts, k, rate, out_dir, report)
    for w in stats["warnings"]:
        logger.warning("%s", w)
    n = len(stats["warnings"])
    logger.info("%s: %s; wrote %s", ts.path, f"{n} warning(s)" if n else "no warnings", out_dir / "token_stats.json")
    return 1 if n and args.fail_on_warning else 0


if __name__ == "__main__":
    sys.exit(main())
