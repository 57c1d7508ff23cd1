"""Merge the embed jobs of one set into CosyVoice's files in ``--dest``: ``utt2embedding.pt``
(``dict[str, list[float]]``), ``spk2embedding.pt`` (each speaker's mean, from ``utt2spk``), plus
``embedding.scp``, ``embed_fail`` and ``embedder.json``, after checking that every input key appears exactly
once. An embedded utterance without a speaker in ``utt2spk`` stays in ``utt2embedding.pt``, is left out of
``spk2embedding.pt`` and is listed in ``embed_no_speaker`` (a warning, not a failure: make-parquet skips it
later, for want of a speaker). Exit 1 when more than ``--max_fail_ratio`` failed, 2 when the jobs cannot be
merged (or ``utt2spk`` has none of the embedded utterances)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from s3tok import exit_codes
from s3tok.bin import add_merge_arguments, merged_fail_exit
from s3tok.data.sources import add_container_arguments, container_sources, keys_of, select_source
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.merge_embeddings")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok merge-embeddings", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_dir", help="the data dir that was embedded (its keys are the expected ones)")
    src.add_argument("--wav_scp")
    add_container_arguments(p, src)
    add_merge_arguments(p, "embed")
    p.add_argument("--utt2spk", default=None,
                   help="speakers, for spk2embedding.pt (default: --dest/utt2spk, else --data_dir/utt2spk)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    from s3tok.data.kaldi_dir import read_utt2spk
    from s3tok.stages.embed_job import merge_embed_jobs

    try:
        keys = keys_of(select_source(data_dir=args.data_dir, wav_scp=args.wav_scp, **container_sources(args)))
        candidates = [args.utt2spk] if args.utt2spk else [Path(args.dest) / "utt2spk"] + (
            [Path(args.data_dir) / "utt2spk"] if args.data_dir else [])
        spk_file = next((Path(c) for c in candidates if Path(c).is_file()), None)
        if args.utt2spk and spk_file is None:
            raise ValueError(f"--utt2spk {args.utt2spk}: no such file")
        utt2spk = read_utt2spk(spk_file) if spk_file else None
        if utt2spk is None:
            logger.warning("no utt2spk: spk2embedding.pt not written (CosyVoice's training needs it)")
        result = merge_embed_jobs(args.output_dir, args.num_jobs, keys, args.dest, utt2spk)
    except (ValueError, OSError) as e:  # MergeError is a ValueError
        return exit_codes.report(logger, e)
    logger.info("%s: %d / %d utterances embedded, %d speakers, %d failed (%s/embed_fail)%s", args.dest,
                result.embedded, result.total, result.speakers, result.failed, args.dest,
                f", {result.no_speaker} without a speaker ({args.dest}/embed_no_speaker)" if result.no_speaker else "")
    return merged_fail_exit(logger, result, args.max_fail_ratio, f"{args.dest}/embed_fail")


if __name__ == "__main__":
    sys.exit(main())
