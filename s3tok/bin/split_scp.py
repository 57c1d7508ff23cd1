"""Split an scp (or any one-key-per-line file) into contiguous pieces whose sizes differ by at most one.

  python -m s3tok.bin.split_scp in.scp out.1.scp out.2.scp ...   (Kaldi's form: one piece per output; fewer
                                                                   lines than outputs is an error)
  python -m s3tok.bin.split_scp --num_pieces N in.scp out_dir     (writes out_dir/1/<name> .. out_dir/K/<name>,
                                                                   K = min(N, lines), and prints K)

Lines are copied byte for byte, so the pieces concatenate back to the input. With ``--utt2dur`` the pieces
balance the total duration instead of the line count (still contiguous, none empty). Each piece is written
to a temporary name and renamed. Exit 1 for bad input, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from s3tok.data.split import split_by_weight, split_contiguous
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.split_scp")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok split-scp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_pieces", "--num-pieces", type=int, default=None, metavar="N",
                   help="split into min(N, lines) pieces under OUT_DIR/J/ and print that number")
    p.add_argument("--utt2dur", default=None, help="balance pieces by these durations (key seconds lines)")
    p.add_argument("input", help="the file to split")
    p.add_argument("outputs", nargs="+", help="output files (Kaldi form), or one OUT_DIR with --num_pieces")
    return p


def _write_atomic(path: Path, lines: Sequence[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _weights(lines: Sequence[bytes], utt2dur: str, input_name: str) -> List[float]:
    durs = {}
    with open(utt2dur, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            parts = raw.split()
            if not parts:
                continue
            try:
                if len(parts) != 2:
                    raise ValueError
                durs[parts[0]] = float(parts[1])
            except ValueError:
                raise ValueError(f"{utt2dur}:{lineno}: expected 'key seconds', got {raw!r}") from None
    out = []
    for lineno, line in enumerate(lines, 1):
        parts = line.split(maxsplit=1)
        key = parts[0] if parts else b""
        if key not in durs:
            raise ValueError(f"{input_name}:{lineno}: key {key.decode('utf-8', 'replace')!r} is not in {utt2dur}")
        out.append(durs[key])
    return out


def split_file(input_path: str, n: int, utt2dur: Optional[str] = None) -> List[List[bytes]]:
    """The pieces of ``input_path`` (lines as bytes, each ending in a newline)."""
    with open(input_path, "rb") as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    if not lines:
        raise ValueError(f"{input_path}: empty, nothing to split")
    if utt2dur:
        return split_by_weight(lines, _weights(lines, utt2dur, input_path), n)
    return split_contiguous(lines, n)


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
                _write_atomic(out_dir / str(j) / name, piece)
            stale = out_dir / str(len(pieces) + 1) / name
            if stale.exists():
                logger.warning("%s is left from an earlier split into more pieces; only 1..%d are current",
                               stale, len(pieces))
            if len(pieces) < args.num_pieces:
                logger.info("%s has %d lines: %d pieces instead of %d", args.input,
                            sum(len(p) for p in pieces), len(pieces), args.num_pieces)
            sys.stdout.write(f"{len(pieces)}\n")
            sys.stdout.flush()
            return 0
        n = len(args.outputs)
        pieces = split_file(args.input, n, args.utt2dur)
        if len(pieces) < n:
            logger.error("refusing to split %s: it has %d lines, fewer than the %d output files",
                         args.input, len(pieces), n)
            return 1
        for out, piece in zip(args.outputs, pieces):
            _write_atomic(Path(out), piece)
        return 0
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
