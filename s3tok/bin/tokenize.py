"""Tokenize the utterances of a ``wav.scp`` (or a directory of audio files) with an S3 tokenizer.

Writes ``<output_dir>/tokens.txt`` (``key t1 t2 ...`` per utterance) and ``<output_dir>/utt2fail``
(``key reason`` per utterance that could not be tokenized); the rest go on.
Exit codes: 0 done; 1 more than ``--max_fail_ratio`` of the utterances failed; 2 bad arguments or model.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ..api import load_model, parse_dtype
from ..data import read_wav_scp, scan_audio_dir
from ..logging_setup import setup_logging
from ..pipeline import run_tokenize

logger = logging.getLogger("s3tok.tokenize")

def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok tokenize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav_scp", help="Kaldi wav.scp: 'key path' (spaces allowed) or 'key cmd |'")
    src.add_argument("--wav_dir", help="a directory searched recursively for audio files; key = relative path "
                                       "without suffix")
    p.add_argument("--model", required=True,
                   help="official name (downloaded to the cache), .onnx file, or folder from s3tok convert")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--batch_size", type=int, default=16, help="most utterances per batch")
    p.add_argument("--max_frames_per_batch", type=int, default=48000,
                   help="most padded mel frames per batch (100 frames = 1 s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--num_workers", type=int, default=2, help="decoding threads")
    p.add_argument("--num_threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--base_dir", default=None, help="resolve relative wav.scp paths against this directory "
                                                   "(default: the current directory)")
    p.add_argument("--max_fail_ratio", type=float, default=0.05,
                   help="exit 1 when a larger share of utterances failed")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.verbose)
    logger.info("command: %s", " ".join(sys.argv if argv is None else ["s3tok tokenize", *argv]))
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    try:
        entries = read_wav_scp(args.wav_scp) if args.wav_scp else scan_audio_dir(args.wav_dir)
        device = torch.device(args.device)
        model = load_model(args.model, device=device, dtype=parse_dtype(args.dtype))
    except (ValueError, OSError, RuntimeError) as e:
        logger.error("%s", e)
        return 2
    cfg = model.config
    logger.info("model %s: %s, %d Hz, %d codes, dtype %s, device %s", args.model, cfg.version, cfg.token_rate,
                cfg.codebook_size, args.dtype, device)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens_path, fail_path = out / "tokens.txt", out / "utt2fail"
    tmp_tokens, tmp_fail = tokens_path.with_name("tokens.txt.tmp"), fail_path.with_name("utt2fail.tmp")
    with open(tmp_tokens, "w", encoding="utf-8") as ft, open(tmp_fail, "w", encoding="utf-8") as ff:
        def write_tokens(key: str, toks: List[int]) -> None:
            ft.write(key + " " + " ".join(map(str, toks)) + "\n")

        def write_failure(key: str, reason: str) -> None:
            ff.write(f"{key} {reason}\n")
            ff.flush()

        stats = run_tokenize(model, entries, write_tokens, write_failure, batch_size=args.batch_size,
                             max_frames_per_batch=args.max_frames_per_batch, num_workers=args.num_workers,
                             base_dir=args.base_dir, device=device, progress=not args.no_progress)
    os.replace(tmp_tokens, tokens_path)
    os.replace(tmp_fail, fail_path)
    total = len(entries)
    logger.info("%d / %d utterances tokenized, %d failed (%s); %.1f s of audio in %.1f s: %.1f audio s/s",
                stats.done, total, stats.failed, fail_path, stats.audio_seconds, stats.wall_seconds, stats.speed)
    if total and stats.failed / total > args.max_fail_ratio:
        logger.error("%d / %d failed, above --max_fail_ratio %.3f; reasons in %s", stats.failed, total,
                     args.max_fail_ratio, fail_path)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
