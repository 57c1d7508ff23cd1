"""Merge the tokenize jobs of one set: ``tokens.scp``, ``utt2num_tokens``, ``utt2fail``, ``tokenizer.json``
in ``--dest`` (and optionally ``utt2speech_token.pt`` / JSONL), after checking that every input key appears
exactly once. Exit 1 when more than ``--max_fail_ratio`` failed, 2 when the jobs cannot be merged or an
option is wrong (a ``--consistent_dir`` folder it did not make: refused before anything is written), 3 for a
fault of the disk."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from s3tok.data.sources import add_container_arguments, container_sources, keys_of, select_source
from s3tok import exit_codes
from s3tok.bin import add_merge_arguments, merged_fail_exit
from s3tok.util.logging_setup import setup_logging
from s3tok.stages.merge import check_consistent_target, merge_jobs, write_consistent_dir

logger = logging.getLogger("s3tok.merge_tokens")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok merge-tokens", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_dir", help="the data dir that was tokenized (its keys are the expected ones)")
    src.add_argument("--wav_scp")
    src.add_argument("--feats_scp")
    add_container_arguments(p, src)
    add_merge_arguments(p, "tokenize")
    p.add_argument("--utt2speech_token", default=None, help="also write CosyVoice's utt2speech_token.pt here")
    p.add_argument("--jsonl", default=None, help="also write {'key':..., 'code': [...]} lines here")
    p.add_argument("--prior_fail", action="append", default=[],
                   help="'key reason' file of keys that failed in an earlier stage (repeatable)")
    p.add_argument("--consistent_dir", default=None,
                   help="also write a copy of --data_dir with only the utterances that have tokens (wav.scp, "
                        "text, utt2spk, spk2utt, ..., tokens, utt2speech_token.pt; 'removed' lists the others): "
                        "the folder to give CosyVoice's tools")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        if args.consistent_dir:  # bad usage is refused before anything is published
            if not args.data_dir:
                raise ValueError("--consistent_dir needs --data_dir (the data dir to copy)")
            check_consistent_target(args.consistent_dir)
        keys = keys_of(select_source(data_dir=args.data_dir, wav_scp=args.wav_scp, feats_scp=args.feats_scp,
                                           **container_sources(args)))
        result = merge_jobs(args.output_dir, args.num_jobs, keys, args.dest, args.utt2speech_token, args.jsonl,
                            args.prior_fail)
        if args.consistent_dir:
            write_consistent_dir(args.data_dir, args.dest, args.consistent_dir, keys, args.utt2speech_token)
    except (ValueError, OSError) as e:  # MergeError is a ValueError
        return exit_codes.report(logger, e)
    logger.info("%s: %d / %d utterances tokenized, %d failed (%s/utt2fail)", args.dest, result.tokens,
                result.total, result.failed, args.dest)
    return merged_fail_exit(logger, result, args.max_fail_ratio, f"{args.dest}/utt2fail")


if __name__ == "__main__":
    sys.exit(main())
