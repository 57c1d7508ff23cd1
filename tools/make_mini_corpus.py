#!/usr/bin/env python3
"""Make egs/mini's tiny corpus: Mandarin sentences spoken by espeak-ng, laid out like AISHELL-1.

  data_aishell/wav/<set>/<spk>/BAC009<spk>W<nnnn>.wav        16 kHz mono 16-bit
  data_aishell/transcript/aishell_transcript_v0.8.txt       utt word word ...

The committed corpus was made with this script (espeak-ng 1.51, Debian package ``espeak-ng``); rerun it
only to change the corpus. Four speakers are four espeak-ng pitch/speed settings; one test utterance is
longer than 30 s so the long-audio windows are exercised.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import soundfile as sf

from s3tok.data.audio import read_audio, resample

logger = logging.getLogger("make_mini_corpus")

# (set, speaker, espeak-ng pitch, words per minute)
SPEAKERS = [("train", "S9001", 35, 150), ("train", "S9002", 70, 175), ("dev", "S9003", 50, 160),
            ("test", "S9004", 60, 140)]
SENTENCES = [
    ["今天", "天气", "很", "好"],
    ["我们", "一起", "去", "公园", "散步", "吧"],
    ["这个", "城市", "的", "交通", "越来越", "方便", "了"],
    ["请", "把", "窗户", "打开", "一点"],
    ["他", "每天", "早上", "六点", "起床", "跑步"],
    ["图书馆", "里", "有", "很多", "新", "书"],
    ["明天", "下午", "三点", "开会"],
    ["这家", "饭店", "的", "菜", "又", "便宜", "又", "好吃"],
]
LONG_TEST = [w for s in SENTENCES[:6] for w in s]  # one utterance over 30 s


def speak(words: Sequence[str], pitch: int, wpm: int) -> np.ndarray:
    """espeak-ng audio of the words, as 16 kHz float32 mono."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", "cmn", "-p", str(pitch), "-s", str(wpm), "-w", tmp.name,
                        "，".join(words) + "。"], check=True)
        audio, rate = read_audio(tmp.name)
    return resample(audio.mean(0), rate, 16000).numpy()


def make(root: Path) -> List[str]:
    """Write the corpus under ``root`` (``root/data_aishell``); returns the transcript lines."""
    lines = []
    n = 0
    for set_name, spk, pitch, wpm in SPEAKERS:
        spk_dir = root / "data_aishell" / "wav" / set_name / spk
        spk_dir.mkdir(parents=True, exist_ok=True)
        texts = [SENTENCES[(n + i) % len(SENTENCES)] for i in range(2)]
        if set_name == "test":
            texts.append(LONG_TEST)
        for words in texts:
            n += 1
            utt = f"BAC009{spk}W{n:04d}"
            audio = speak(words, pitch, wpm)
            sf.write(spk_dir / f"{utt}.wav", np.clip(audio, -1, 1), 16000, subtype="PCM_16")
            lines.append(f"{utt} {' '.join(words)}")
            logger.info("%s: %.2f s", utt, len(audio) / 16000)
    transcript = root / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.parent.mkdir(parents=True, exist_ok=True)
    transcript.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    return lines


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "egs" / "mini" / "corpus"))
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    lines = make(Path(args.out))
    logger.info("%d utterances under %s", len(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
