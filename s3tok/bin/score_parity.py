"""Prove on your own data that s3tok's tokens are the official ones: run the ONNX file with onnxruntime on
CPU at batch 1 (CosyVoice's way, same front end) on a deterministic sample of the set and compare with the
tokens s3tok wrote. Writes a JSON report and logs a table; exit 1 above ``--max_miss_rate``, 2 on bad input
or when onnxruntime is missing (``pip install 's3tok[parity]'``)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from s3tok.data.sources import add_container_arguments, container_sources, select_source
from s3tok.util.fsutil import atomic_write_text
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.score_parity")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok score-parity", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_dir", help="the data dir that was tokenized (audio: wav.scp + segments)")
    src.add_argument("--wav_scp")
    add_container_arguments(p, src)
    p.add_argument("--tokens", required=True, help="s3tok's tokens: tokens.scp (Kaldi table) or tokens.txt")
    p.add_argument("--model", required=True, help="the ONNX file (or official name) the tokens claim to be from")
    p.add_argument("--num_utts", type=int, default=200, help="utterances to compare (deterministic sample; "
                                                             "0 or more than the set: all)")
    p.add_argument("--output", required=True, help="parity.json to write")
    p.add_argument("--max_miss_rate", type=float, default=0.0001)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--base_dir", default=None)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    from s3tok.modelfiles.onnx_import import OnnxImportError
    from s3tok.checks.parity import ParityUnavailable, format_table, run_parity

    try:
        utts = {u.key: u for u in select_source(data_dir=args.data_dir, wav_scp=args.wav_scp, **container_sources(args))}
        result = run_parity(args.tokens, utts, args.model, args.num_utts, args.threads, args.base_dir)
    except (ParityUnavailable, ValueError, OSError, RuntimeError, OnnxImportError) as e:
        logger.error("%s", e)
        return 2
    report = result.pop("report")
    result = {**result, "tokens": args.tokens, "max_miss_rate": args.max_miss_rate, **report.to_dict()}
    atomic_write_text(args.output, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    logger.info("%s\n(report in %s)", format_table(report, f"of {args.tokens} vs {result['model']}"), args.output)
    if report.miss_rate > args.max_miss_rate:
        logger.error("miss rate %.4f %% is above --max_miss_rate %.4f %%: these tokens are not the official "
                     "model's (worst: %s)", 100 * report.miss_rate, 100 * args.max_miss_rate,
                     ", ".join(str(w["key"]) for w in report.worst[:5]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
