"""Write the transcripts and speakers held in tar shards' JSON (or .txt) members as Kaldi ``text``,
``utt2spk`` and ``spk2utt`` in ``--data_dir``, without unpacking anything; keys as ``tokenize --tar_list``
gives them. Keys lacking usable metadata are listed, with the member and the reason, in
``--data_dir/metadata_problems``. Exit 2 for bad input."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from s3tok import exit_codes
from s3tok.data.kaldi_dir import utt2spk_to_spk2utt, write_spk2utt, write_text, write_utt2spk
from s3tok.data.shards import read_path_list, shard_metadata
from s3tok.util.fsutil import atomic_write_lines
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.shard_metadata")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok shard-metadata", description=__doc__)
    p.add_argument("--tar_list", required=True, help="tar shards, one path per line")
    p.add_argument("--data_dir", required=True, help="where text, utt2spk and spk2utt go")
    p.add_argument("--text_field", default="text", help="the JSON field of the transcript")
    p.add_argument("--speaker_field", default="speaker", help="the JSON field of the speaker")
    p.add_argument("--tar_shard_keys", action="store_true", help="keys SHARDNAME/KEY, as given to tokenize")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        text, spk, problems = shard_metadata(read_path_list(args.tar_list), args.text_field, args.speaker_field,
                                             args.tar_shard_keys)
        d = Path(args.data_dir)
        d.mkdir(parents=True, exist_ok=True)
        write_text(d / "text", text)
        write_utt2spk(d / "utt2spk", spk)
        write_spk2utt(d / "spk2utt", utt2spk_to_spk2utt(spk))
        atomic_write_lines(d / "metadata_problems", problems)
    except (ValueError, OSError) as e:
        return exit_codes.report(logger, e)
    logger.info("%s: text for %d keys, speakers for %d (%d speakers); %d problem(s) in %s", d, len(text), len(spk),
                len(set(spk.values())), len(problems), d / "metadata_problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
