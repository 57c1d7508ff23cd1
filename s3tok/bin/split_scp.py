"""Split an scp (or any one-key-per-line file) into contiguous pieces whose sizes differ by at most one.

  python -m s3tok.bin.split_scp in.scp out.1.scp out.2.scp ...   (Kaldi's form: one piece per output; fewer
                                                                   lines than outputs is an error)
  python -m s3tok.bin.split_scp --num_pieces N in.scp out_dir     (writes out_dir/1/<name> .. out_dir/K/<name>,
                                                                   K = min(N, keys), and prints K)

Blank lines hold no key and are left out (a file of only blank lines is an error); the other lines are copied
byte for byte, so the pieces concatenate back to the input without its blank lines. With ``--utt2dur`` the pieces
balance the total duration instead of the line count (still contiguous, none empty). Each piece is written
to a temporary name and renamed. Exit 1 for bad input, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from s3tok.data.split import split_file
from s3tok.util.fsutil import atomic_write_bytes
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.split_scp")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok split-scp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_pieces", "--num-pieces", type=int, default=None, metavar="N",
                   help="split into min(N, non-blank lines) pieces under OUT_DIR/J/ and print that number")
    p.add_argument("--utt2dur", default=None, help="balance pieces by these durations (key seconds lines)")
    p.add_argument("input", help="the file to split")
    p.add_argument("outputs", nargs="+", help="output files (Kaldi form), or one OUT_DIR with --num_pieces")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        if args.num_pieces is not None:
            if len(args.outputs) != 1:
                logger.error("--num_pieces takes one output directory, got %d outputs", len(args.outputs))
                return 2
            if args.num_pieces < 1:
                logger.error("--num_pieces must be >= 1, got %d", args.num_pieces)
                return 2
            pieces = split_file(args.input, args.num_pieces, args.utt2dur)
            out_dir, name = Path(args.outputs[0]), Path(args.input).name
            for j, piece in enumerate(pieces, 1):
                atomic_write_bytes(out_dir / str(j) / name, b"".join(piece))
            stale = out_dir / str(len(pieces) + 1) / name
            if stale.exists():
                logger.warning("%s is left from an earlier split into more pieces; only 1..%d are current",
                               stale, len(pieces))
            if len(pieces) < args.num_pieces:
                logger.info("%s has %d lines (blank lines not counted): %d pieces instead of %d", args.input,
                            sum(len(p) for p in pieces), len(pieces), args.num_pieces)
            sys.stdout.write(f"{len(pieces)}\n")
            sys.stdout.flush()
            return 0
        n = len(args.outputs)
        pieces = split_file(args.input, n, args.utt2dur)
        if len(pieces) < n:
            logger.error("refusing to split %s: it has %d lines (blank lines not counted), fewer than the %d "
                         "output files", args.input, len(pieces), n)
            return 1
        for out, piece in zip(args.outputs, pieces):
            atomic_write_bytes(out, b"".join(piece))
        return 0
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
