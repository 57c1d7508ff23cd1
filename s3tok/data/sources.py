"""What the tokenize stage reads: one :class:`Utterance` per key, from wav.scp, a data dir or feats.scp."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

from s3tok.data.kaldi_dir import iter_utterances
from s3tok.data.lines import read_lines
from s3tok.data.shards import TarMember, index_shards, read_tar_list
from s3tok.data.wav_scp import WavEntry, read_wav_scp, scan_audio_dir

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Utterance:
    """One key and where its input lives: a recording (whole, or ``[start, end)`` seconds of it when
    ``segment`` is set), a stored log-mel (``feats``: a Kaldi rxfilename such as ``feats.1.ark:123``), or a
    member of a tar shard (``member``)."""

    key: str
    recording: Optional[WavEntry] = None
    segment: bool = False
    start: float = 0.0
    end: Optional[float] = None
    feats: Optional[str] = None
    member: Optional[TarMember] = None

    @property
    def kind(self) -> str:
        if self.member is not None:
            return "tar"
        return "feats" if self.feats is not None else ("segment" if self.segment else "wav")


def from_wav_scp(path: PathLike) -> List[Utterance]:
    return [Utterance(e.key, recording=e) for e in read_wav_scp(path)]


def from_audio_dir(path: PathLike) -> List[Utterance]:
    return [Utterance(e.key, recording=e) for e in scan_audio_dir(path)]


def read_scp_pairs(path: PathLike) -> List[tuple]:
    """``key value`` lines (value = rest of line, blank lines skipped); errors name the file and line."""
    return [(ln.key, ln.value) for ln in read_lines(path, skip_blank=True)]


def from_feats_scp(path: PathLike) -> List[Utterance]:
    return [Utterance(k, feats=v) for k, v in read_scp_pairs(path)]


def from_data_dir(data_dir: PathLike) -> List[Utterance]:
    """A Kaldi data dir: ``segments`` (utterances cut from ``wav.scp`` recordings) when present, else
    ``wav.scp`` itself, in file order; malformed lines are errors naming the file and line."""
    segmented = (Path(data_dir) / "segments").is_file()
    return [Utterance(u.key, recording=u.recording, segment=segmented, start=u.start, end=u.end)
            for u in iter_utterances(data_dir)]


def from_tar_list(path: PathLike, shard_key: bool = False) -> List[Utterance]:
    """The audio members of the tar shards listed in ``path`` (see :mod:`s3tok.data.shards`)."""
    return [Utterance(k, member=m) for k, m in index_shards(read_tar_list(path), shard_key)]


def select_source(*, data_dir: Optional[PathLike] = None, wav_scp: Optional[PathLike] = None,
                  wav_dir: Optional[PathLike] = None, feats_scp: Optional[PathLike] = None,
                  tar_list: Optional[PathLike] = None, tar_shard_keys: bool = False) -> List[Utterance]:
    """The utterances of exactly one of the given sources."""
    given = [(n, v) for n, v in (("data_dir", data_dir), ("wav_scp", wav_scp), ("wav_dir", wav_dir),
                                 ("feats_scp", feats_scp), ("tar_list", tar_list)) if v]
    if len(given) != 1:
        raise ValueError(f"give exactly one input source, got {[n for n, _ in given] or 'none'}")
    name, value = given[0]
    readers = {"data_dir": from_data_dir, "wav_scp": from_wav_scp, "wav_dir": from_audio_dir,
               "feats_scp": from_feats_scp, "tar_list": lambda p: from_tar_list(p, tar_shard_keys)}
    utts = readers[name](value)
    if not utts:
        raise ValueError(f"--{name} {value}: no utterances (empty input)")
    return utts


def keys_of(utts: Sequence[Utterance]) -> List[str]:
    return [u.key for u in utts]
