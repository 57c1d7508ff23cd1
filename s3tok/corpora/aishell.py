"""AISHELL-1: download (OpenSLR 33, MD5-checked, resumable) and Kaldi data dirs for train/dev/test.

Corpus layout (also used by ``egs/mini``'s tiny corpus)::

    data_aishell/wav/{train,dev,test}/<speaker>/<utt>.wav
    data_aishell/transcript/aishell_transcript_v0.8.txt      utt word word ...
"""
from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path
from typing import Dict, List, Sequence, Union

from s3tok.data.lines import split_text_lines
from s3tok.modelfiles.fetch import fetch_verified
from s3tok.util.fsutil import atomic_write_lines, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

ARCHIVE = "data_aishell.tgz"
ARCHIVE_MD5 = "2f494334227864a8a8fec932999db9d8"
MIRRORS = ("https://www.openslr.org/resources/33", "https://us.openslr.org/resources/33",
           "https://openslr.elda.org/resources/33", "https://openslr.magicdatatech.com/resources/33")
SETS = ("train", "dev", "test")
TRANSCRIPT = Path("data_aishell") / "transcript" / "aishell_transcript_v0.8.txt"


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive, refusing members that would land outside ``dest``."""
    root = dest.resolve()
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            target = (dest / m.name).resolve()
            if not str(target).startswith(str(root) + os.sep) and target != root:
                raise ValueError(f"{archive}: member {m.name!r} would be written outside {dest}")
            if m.issym() or m.islnk():
                raise ValueError(f"{archive}: member {m.name!r} is a link; refusing to extract")
        tar.extractall(dest, filter="data")


def download(target_dir: PathLike, urls: Sequence[str] = (), progress: bool = True,
             md5: str = ARCHIVE_MD5) -> Path:
    """Fetch and unpack AISHELL-1 into ``target_dir`` (``target_dir/data_aishell``); idempotent.

    The archive is resumed if interrupted and checked against its MD5; the per-speaker tarballs inside
    are unpacked one by one, each marked done, so a rerun continues where it stopped.
    """
    target = Path(target_dir)
    corpus = target / "data_aishell"
    done = target / ".data_aishell.unpacked"
    if done.is_file():
        logger.info("%s: already downloaded and unpacked", corpus)
        return corpus
    archive = fetch_verified(list(urls) or [f"{m}/{ARCHIVE}" for m in MIRRORS], target / ARCHIVE, md5,
                             "md5", progress=progress, desc=ARCHIVE)
    if not (target / TRANSCRIPT).is_file():
        logger.info("unpacking %s", archive)
        _safe_extract(archive, target)
    wav_dir = corpus / "wav"
    for inner in sorted(wav_dir.glob("*.tar.gz")):
        marker = inner.with_name(f".{inner.name}.unpacked")
        if marker.is_file():
            continue
        _safe_extract(inner, wav_dir)
        atomic_write_text(marker, "")
    atomic_write_text(done, "")
    return corpus


def scan(corpus_dir: PathLike) -> Dict[str, Dict[str, Path]]:
    """``{set: {utt: wav path}}`` from ``<corpus_dir>/data_aishell/wav/<set>/<spk>/<utt>.wav``."""
    wav_root = Path(corpus_dir) / "data_aishell" / "wav"
    if not wav_root.is_dir():
        raise ValueError(f"{corpus_dir}: no data_aishell/wav folder (AISHELL-1 layout expected)")
    out: Dict[str, Dict[str, Path]] = {}
    for name in SETS:
        files = sorted((wav_root / name).glob("*/*.wav"))
        out[name] = {f.stem: f.resolve() for f in files}
    return out


def read_transcript(corpus_dir: PathLike) -> Dict[str, str]:
    path = Path(corpus_dir) / TRANSCRIPT
    if not path.is_file():
        raise ValueError(f"{corpus_dir}: no {TRANSCRIPT}")
    text = {}
    for lineno, line in enumerate(split_text_lines(path.read_text(encoding="utf-8")), 1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            text[parts[0]] = " ".join(parts[1].split())
        elif parts:
            logger.warning("%s:%d: no words for %s; skipped", path, lineno, parts[0])
    return text


def speaker_of(utt: str) -> str:
    """AISHELL utterance ids are ``BAC009<speaker>W<nnnn>``: the speaker is characters 6..10."""
    if len(utt) < 11:
        raise ValueError(f"utterance id {utt!r} is not in AISHELL form BAC009SxxxxWxxxx")
    return utt[6:11]


def prepare(corpus_dir: PathLike, data_root: PathLike, sets: Sequence[str] = SETS) -> Dict[str, int]:
    """Write ``<data_root>/<set>/{wav.scp,text,utt2spk,spk2utt}`` (sorted, atomic) for each set.

    Utterances without a transcript are left out (as Kaldi's AISHELL recipe does) and counted in the log.
    Returns the number of utterances per set.
    """
    audio = scan(corpus_dir)
    text = read_transcript(corpus_dir)
    counts = {}
    for name in sets:
        utts = sorted(u for u in audio[name] if u in text)
        dropped = len(audio[name]) - len(utts)
        if not utts:
            raise ValueError(f"{corpus_dir}: set {name} has no transcribed utterances")
        d = Path(data_root) / name
        atomic_write_lines(d / "wav.scp", [f"{u} {audio[name][u]}" for u in utts])
        atomic_write_lines(d / "text", [f"{u} {text[u]}" for u in utts])
        atomic_write_lines(d / "utt2spk", [f"{u} {speaker_of(u)}" for u in utts])
        spk2utt: Dict[str, List[str]] = {}
        for u in utts:
            spk2utt.setdefault(speaker_of(u), []).append(u)
        atomic_write_lines(d / "spk2utt", [f"{s} {' '.join(us)}" for s, us in sorted(spk2utt.items())])
        counts[name] = len(utts)
        logger.info("%s: %d utterances, %d speakers%s", d, len(utts), len(spk2utt),
                    f" ({dropped} without transcript left out)" if dropped else "")
    return counts
