"""Write CosyVoice's training shards from a data dir: ``parquet_%09d.tar`` (parquet, despite the name) with
``utt2parquet_%09d.json`` and ``spk2parquet_%09d.json`` per shard, then ``data.list``, ``utt2data.list`` and
``spk2data.list`` (absolute paths, one a line: give data.list to CosyVoice's train.py) and
``parquet_skipped`` (``key reason``) in ``--output_dir``.

Columns: utt, audio_data, wav, text, spk, then utt_embedding, spk_embedding (from utt2embedding.pt,
spk2embedding.pt), speech_token (utt2speech_token.pt) and instruct (--instruct) when given. The .pt tables
are read from --data_dir unless named; one that is not there is a column not written. Only utterances
with every written column are written; the others, and those whose audio cannot be read (or is over
--max_duration, by its header, or too large for a parquet value), are listed in parquet_skipped. A rerun skips
the shards already written from the same inputs. An --output_dir holding the input shards is refused.

Exit codes: 0 done; 1 more than --max_skipped_ratio of the utterances skipped (everything else is written);
2 bad arguments or input files (the line names the file), pyarrow missing; 3 the disk failed."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok import exit_codes
from s3tok.bin import add_max_duration, within_duration_limit
from s3tok.data.sources import add_container_arguments, container_sources, select_source
from s3tok.stages.make_parquet import make_parquet, skip_summary
from s3tok.stages.parquet_rows import COSYVOICE3_INSTRUCT, Options, load_tables
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.make_parquet")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok make-parquet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True,
                   help="Kaldi data dir: text and utt2spk (required), wav.scp (+ segments) for the audio unless "
                        "--tar_list/--parquet_list, and by default utt2speech_token.pt, utt2embedding.pt, "
                        "spk2embedding.pt (merge-tokens and the embedding stage write them)")
    p.add_argument("--output_dir", required=True, help="where the shards and lists go (e.g. DATA/parquet)")
    src = p.add_mutually_exclusive_group()
    add_container_arguments(p, src)
    p.add_argument("--utt2speech_token", default=None, help="speech tokens (default DATA/utt2speech_token.pt)")
    p.add_argument("--utt2embedding", default=None, help="utterance embeddings (default DATA/utt2embedding.pt)")
    p.add_argument("--spk2embedding", default=None, help="speaker embeddings (default DATA/spk2embedding.pt)")
    p.add_argument("--no_speech_token", action="store_true", help="write no speech_token column")
    p.add_argument("--no_embedding", action="store_true", help="write no utt_embedding / spk_embedding columns")
    p.add_argument("--instruct", nargs="?", const=COSYVOICE3_INSTRUCT, default=None, metavar="TEXT",
                   help="write an instruct column, TEXT in every row (CosyVoice3); without TEXT, the text of "
                        f"CosyVoice3's recipes: {COSYVOICE3_INSTRUCT!r}")
    p.add_argument("--text_remove_spaces", action="store_true",
                   help="remove the spaces of word-segmented transcripts (AISHELL's '今天 天气' -> '今天天气'); "
                        "otherwise runs of whitespace become one space, as CosyVoice reads text")
    p.add_argument("--num_utts_per_parquet", type=int, default=1000, help="utterances per shard (default 1000)")
    p.add_argument("--num_workers", type=int, default=2, help="threads reading audio")
    p.add_argument("--base_dir", default=None, help="resolve relative wav.scp paths against this directory")
    add_max_duration(p)
    p.add_argument("--max_skipped_ratio", type=float, default=0.05,
                   help="exit 1 (after writing) when more than this share of the utterances is skipped")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    return within_duration_limit(logger, args, lambda: _main(args))


def _main(args) -> int:
    opts = Options(num_utts_per_parquet=args.num_utts_per_parquet, instruct=args.instruct,
                   text_remove_spaces=args.text_remove_spaces, num_workers=args.num_workers,
                   base_dir=args.base_dir, progress=not args.no_progress)
    try:
        containers = container_sources(args)
        if args.tar_list or args.parquet_list:
            utts = select_source(**containers)
        else:
            utts = select_source(data_dir=args.data_dir)
        tables = load_tables(args.data_dir, args.utt2speech_token, args.utt2embedding, args.spk2embedding,
                             args.no_speech_token, args.no_embedding)
        result = make_parquet(utts, tables, args.output_dir, opts)
    except (ValueError, OSError) as e:
        return exit_codes.report(logger, e)
    logger.info("%s: %d / %d utterances written in %d shard(s); data.list lists them", args.output_dir,
                result.written, result.total, len(result.shards))
    if result.skipped:
        logger.warning("%d utterance(s) skipped (%s); reasons in %s/parquet_skipped", len(result.skipped),
                       skip_summary(result.skipped), args.output_dir)
    if result.skipped_ratio > args.max_skipped_ratio:
        logger.error("%d / %d skipped (%.1f%%), above --max_skipped_ratio %.3f", len(result.skipped), result.total,
                     100 * result.skipped_ratio, args.max_skipped_ratio)
        return exit_codes.FAILED
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
