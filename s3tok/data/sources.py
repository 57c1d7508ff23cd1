"""What the tokenize stage reads: one :class:`Utterance` per key, from wav.scp, a data dir or feats.scp."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

from s3tok.data.kaldi_dir import iter_utterances
from s3tok.data.lines import read_lines
from s3tok.data.shards import TarMember, index_shards, read_path_list
from s3tok.data.wav_scp import WavEntry, read_wav_scp, scan_audio_dir

PathLike = Union[str, os.PathLike]

if TYPE_CHECKING:  # pyarrow is optional: the parquet module is imported only when used
    from s3tok.data.parquet import ParquetRow


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
    member: Optional[Union[TarMember, "ParquetRow"]] = None  # a tar member or a parquet row

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
    return [Utterance(k, member=m) for k, m in index_shards(read_path_list(path), shard_key)]


def from_parquet_list(path: PathLike, key_column: str = "utt", audio_column: str = "audio_data",
                      audio_field: Optional[str] = None) -> List[Utterance]:
    """The rows of the parquet files listed in ``path`` (see :mod:`s3tok.data.parquet`)."""
    from s3tok.data.parquet import index_parquet_list

    return [Utterance(k, member=r) for k, r in index_parquet_list(path, key_column, audio_column, audio_field)]


def select_source(*, data_dir: Optional[PathLike] = None, wav_scp: Optional[PathLike] = None,
                  wav_dir: Optional[PathLike] = None, feats_scp: Optional[PathLike] = None,
                  tar_list: Optional[PathLike] = None, tar_shard_keys: bool = False,
                  parquet_list: Optional[PathLike] = None, parquet_columns: Tuple[str, str, Optional[str]] =
                  ("utt", "audio_data", None)) -> List[Utterance]:
    """The utterances of exactly one of the given sources. ``parquet_columns``: key column, audio column,
    field of a struct audio column (or None)."""
    given = [(n, v) for n, v in (("data_dir", data_dir), ("wav_scp", wav_scp), ("wav_dir", wav_dir),
                                 ("feats_scp", feats_scp), ("tar_list", tar_list), ("parquet_list", parquet_list))
             if v]
    if len(given) != 1:
        raise ValueError(f"give exactly one input source, got {[n for n, _ in given] or 'none'}")
    name, value = given[0]
    readers = {"data_dir": from_data_dir, "wav_scp": from_wav_scp, "wav_dir": from_audio_dir,
               "feats_scp": from_feats_scp, "tar_list": lambda p: from_tar_list(p, tar_shard_keys),
               "parquet_list": lambda p: from_parquet_list(p, *parquet_columns)}
    utts = readers[name](value)
    if not utts:
        raise ValueError(f"--{name} {value}: no utterances (empty input)")
    return utts


def keys_of(utts: Sequence[Utterance]) -> List[str]:
    return [u.key for u in utts]


def add_container_arguments(parser, group) -> None:
    """``--tar_list`` / ``--parquet_list`` (in the mutually exclusive ``group`` of sources) and their options."""
    group.add_argument("--tar_list", help="WebDataset-style tar shards, one path per line, read in place; jobs and "
                                          "torchrun ranks split it by shard")
    group.add_argument("--parquet_list", help="parquet files with audio bytes, one path per line (CosyVoice's "
                                              "data.list), read by row group; jobs split it by file")
    parser.add_argument("--tar_shard_keys", action="store_true",
                        help="with --tar_list: keys are SHARDNAME/KEY (for corpora whose keys repeat across shards)")
    parser.add_argument("--parquet_key_column", default="utt", help="with --parquet_list: the key column")
    parser.add_argument("--parquet_audio_column", default="audio_data", help="with --parquet_list: the audio column")
    parser.add_argument("--parquet_audio_field", default=None,
                        help="with --parquet_list: the bytes field of a struct audio column (Hugging Face: bytes)")


def container_sources(args) -> dict:
    """The ``select_source`` arguments of :func:`add_container_arguments`' options."""
    return {"tar_list": args.tar_list, "tar_shard_keys": args.tar_shard_keys, "parquet_list": args.parquet_list,
            "parquet_columns": (args.parquet_key_column, args.parquet_audio_column, args.parquet_audio_field)}
