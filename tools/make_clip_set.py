#!/usr/bin/env python3
"""Write a folder of short 16 kHz clips cut from real speech, with an AISHELL-like mix of lengths.

  python tools/make_clip_set.py --minutes 10 --min_seconds 2 --max_seconds 8 --out /tmp/short \\
      ../shared/reference/audio
  python tools/bench.py --model /tmp/v2.onnx --wav_dir /tmp/short --threads 2 --engines ort-N,s3tok-fp32

The clips of the input folder are laid end to end as ``tools/make_long_wav.py`` does, then cut into pieces
of lengths drawn uniformly from [min, max] seconds (numpy generator seeded by ``--seed``, so the same set
every time). Each piece is written as ``clipNNNNN.wav`` (16-bit PCM), atomically. AISHELL-1's test set has
about 7,000 utterances of 2-10 s (about 5 s on average): many short items, where batching matters most.
"""
import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import numpy as np

from make_long_wav import speech_stream, write_pcm16  # tools/, beside this file

logger = logging.getLogger("make_clip_set")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio_dir", help="folder of clips to cut from")
    p.add_argument("--minutes", type=float, default=10.0, help="total length of the set")
    p.add_argument("--min_seconds", type=float, default=2.0)
    p.add_argument("--max_seconds", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder to write the clips into")
    return p


def cut_lengths(total: int, low: int, high: int, seed: int) -> list:
    """Piece lengths in samples, uniform in [low, high], summing to at most ``total``."""
    rng = np.random.default_rng(seed)
    out, have = [], 0
    while True:
        n = int(rng.integers(low, high + 1))
        if have + n > total:
            return out
        out.append(n)
        have += n


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    from s3tok.data.audio import SAMPLE_RATE

    if not 0 < args.min_seconds <= args.max_seconds or args.minutes <= 0:
        logger.error("need 0 < --min_seconds <= --max_seconds and --minutes > 0")
        return 1
    audio = speech_stream(args.audio_dir, args.minutes * 60)
    if audio is None:
        return 1
    lengths = cut_lengths(len(audio), int(args.min_seconds * SAMPLE_RATE), int(args.max_seconds * SAMPLE_RATE),
                          args.seed)
    os.makedirs(args.out, exist_ok=True)
    start = 0
    for i, n in enumerate(lengths, 1):
        write_pcm16(os.path.join(args.out, f"clip{i:05d}.wav"), audio[start:start + n])
        start += n
    logger.info("%s: %d clips, %.1f min", args.out, len(lengths), start / SAMPLE_RATE / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
