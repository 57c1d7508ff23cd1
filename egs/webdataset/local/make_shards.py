#!/usr/bin/env python3
"""The webdataset recipe's synthetic corpus: egs/mini's espeak-ng utterances packed as WebDataset tar
shards (``KEY.{wav,flac,mp3}`` + ``KEY.json`` with text and speaker), as Emilia-like corpora ship.

    local/make_shards.py --mini_corpus ../mini/corpus --out corpus

Writes ``corpus/<set>/shard-NNNNNN.tar`` (train: 2 shards, test: 1) and ``corpus/<set>.list``. Each
utterance appears twice in train with different keys (as a FLAC and as an MP3), so the shards hold
compressed formats too.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import soundfile as sf


def utterances(mini_corpus: Path) -> List[Tuple[str, str, Path, str]]:
    """``[(set, speaker, wav, text)]`` of the mini corpus, with its AISHELL-layout transcript."""
    texts = {}
    for line in (mini_corpus / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt").read_text(
            encoding="utf-8").splitlines():
        key, _, text = line.partition(" ")
        texts[key] = "".join(text.split())
    out = []
    for wav in sorted((mini_corpus / "data_aishell" / "wav").rglob("*.wav")):
        out.append(("test" if wav.parent.parent.name == "test" else "train", wav.parent.name, wav, texts[wav.stem]))
    return out


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def encode(wav: Path, fmt: str) -> bytes:
    audio, rate = sf.read(wav, dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt)
    return buf.getvalue()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mini_corpus", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    items = utterances(Path(args.mini_corpus))
    for set_name, shards in (("train", 2), ("test", 1)):
        rows = []
        for set_, spk, wav, text in items:
            if set_ != set_name:
                continue
            rows.append((f"{spk}_{wav.stem}_flac", "flac", "FLAC", spk, wav, text))
            if set_name == "train":
                rows.append((f"{spk}_{wav.stem}_mp3", "mp3", "MP3", spk, wav, text))
        (out / set_name).mkdir(parents=True, exist_ok=True)
        per = -(-len(rows) // shards)
        names = []
        for s in range(shards):
            name = f"{set_name}/shard-{s:06d}.tar"
            tmp = out / (name + ".tmp")
            with tarfile.open(tmp, "w") as tf:
                for key, ext, fmt, spk, wav, text in rows[s * per:(s + 1) * per]:
                    add(tf, f"{key}.{ext}", encode(wav, fmt))
                    add(tf, f"{key}.json", json.dumps({"text": text, "speaker": spk}, ensure_ascii=False).encode())
            tmp.replace(out / name)
            names.append(name)
        (out / f"{set_name}.list").write_text("".join(f"{n}\n" for n in names))
        print(f"{out / set_name}: {len(rows)} utterances in {len(names)} shard(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
