#!/usr/bin/env python3
"""Write one long 16 kHz mono wav made of real speech clips laid end to end, for long-audio benchmarks.

  python tools/make_long_wav.py --minutes 60 --out /tmp/long/hour.wav ../shared/reference/audio
  python tools/bench.py --model /tmp/v2.onnx --wav_dir /tmp/long --threads 2 --runs 1 \
      --engines ort-N,s3tok-fp32,s3tok-bf16

The clips (any rate, channels, format s3tok reads) are decoded and resampled with s3tok's front end,
separated by 0.3 s of silence and repeated in sorted order until the length is reached; the file is written
as 16-bit PCM, atomically.
"""
import argparse
import logging
import sys
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger("make_long_wav")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio_dir", help="folder of clips to repeat")
    p.add_argument("--minutes", type=float, default=60.0, help="length of the output")
    p.add_argument("--out", required=True, help="wav file to write")
    return p


def speech_stream(audio_dir: str, seconds: float) -> Optional[np.ndarray]:
    """``seconds`` of 16 kHz speech: the clips of ``audio_dir`` (sorted, s3tok's front end) each followed by
    0.3 s of silence, repeated until long enough, clipped to [-1, 1]; None (logged) if there is no audio."""
    from s3tok.data.audio import SAMPLE_RATE, load_audio
    from s3tok.data import scan_audio_dir

    try:
        clips = [load_audio(e.location).numpy() for e in scan_audio_dir(audio_dir)]
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return None
    if not clips:
        logger.error("%s: no audio found", audio_dir)
        return None
    gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    want = int(seconds * SAMPLE_RATE)
    parts, have, i = [], 0, 0
    while have < want:
        piece = np.concatenate([clips[i % len(clips)], gap])
        parts.append(piece)
        have += len(piece)
        i += 1
    return np.clip(np.concatenate(parts)[:want], -1.0, 1.0)


def write_pcm16(path: str, audio: np.ndarray) -> None:
    """Write 16 kHz mono ``audio`` as a 16-bit PCM wav, atomically."""
    import io

    import soundfile as sf

    from s3tok.data.audio import SAMPLE_RATE
    from s3tok.util.fsutil import atomic_write_bytes

    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buf.getvalue())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    from s3tok.data.audio import SAMPLE_RATE

    if args.minutes <= 0:
        logger.error("--minutes %s is not positive", args.minutes)
        return 1
    audio = speech_stream(args.audio_dir, args.minutes * 60)
    if audio is None:
        return 1
    write_pcm16(args.out, audio)
    logger.info("%s: %.1f min of speech", args.out, len(audio) / SAMPLE_RATE / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
