"""Corpora as they ship: WebDataset-style tar shards, read in place (no extraction).

A shard is an uncompressed ``.tar`` whose members are grouped by key: the member's path up to the first dot
of its file name (``spk1/utt7.mp3`` and ``spk1/utt7.json`` are key ``spk1/utt7``). The first member of a key
with an audio suffix is its audio; a ``.json``/``.txt`` member is its metadata. Indexing reads only the tar
headers (``tarfile`` seeks past the data); an utterance's audio is then read by offset and size, so any
job can take any key, resume at the utterance level and never unpack a file.

Keys are the WebDataset keys themselves, as they are unique within a corpus's shards; two shards holding
the same key are an error naming both (``shard_key=True`` prefixes every key with its shard's name
instead, for corpora whose keys repeat across shards).
"""
from __future__ import annotations

import io
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Tuple, Union

from s3tok.data.wav_scp import AUDIO_SUFFIXES

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
META_SUFFIXES = (".json", ".txt")


@dataclass(frozen=True)
class TarMember:
    """Where one member's bytes lie inside a tar file. Like every container member (see also
    :class:`s3tok.data.parquet.ParquetRow`): ``container`` (the file a job reads), ``location`` (for
    messages and input fingerprints), ``size`` (bytes, for balancing jobs) and :meth:`open`."""

    tar: str
    name: str
    offset: int
    size: int

    @property
    def container(self) -> str:
        return self.tar

    @property
    def location(self) -> str:
        return f"{self.tar}//{self.name}@{self.offset}+{self.size}"

    def open(self) -> BinaryIO:
        return read_member(self)


def read_member(m: TarMember) -> BinaryIO:
    """The member's bytes as a file object named ``tar//member`` (for messages)."""
    with open(m.tar, "rb") as f:
        f.seek(m.offset)
        data = f.read(m.size)
    name = f"{m.tar}//{m.name}"
    if len(data) != m.size:
        raise OSError(f"{name}: the tar is truncated ({len(data)} of {m.size} bytes of this member)")
    out = io.BytesIO(data)
    out.name = name
    return out


def _key_of(name: str) -> str:
    head, _, base = name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{head}/{stem}" if head else stem


@dataclass
class ShardIndex:
    """The keys of one shard: ``{key: (audio member, metadata members)}`` in member order, and the damage
    that stopped the indexing, if any (the keys before it are kept)."""

    tar: str
    audio: Dict[str, TarMember]
    meta: Dict[str, List[TarMember]]
    no_audio: List[str]
    damage: Optional[str] = None


def index_tar(path: PathLike) -> ShardIndex:
    """Index one uncompressed tar shard (headers only)."""
    tar = os.fspath(path)
    audio: Dict[str, TarMember] = {}
    meta: Dict[str, List[TarMember]] = {}
    seen: List[str] = []
    damage = None
    size = os.path.getsize(tar)
    try:
        with tarfile.open(tar, mode="r:") as tf:
            while True:
                try:
                    info = tf.next()
                except (tarfile.TarError, EOFError, OSError) as e:
                    damage = f"{type(e).__name__}: {e}"
                    break
                if info is None:
                    break
                if not info.isfile():
                    continue
                if info.offset_data + info.size > size:
                    damage = f"member {info.name} runs past the end of the file (truncated tar)"
                    break
                key = _key_of(info.name)
                m = TarMember(tar, info.name, info.offset_data, info.size)
                suffix = os.path.splitext(info.name)[1].lower()
                if key not in seen:
                    seen.append(key)
                if suffix in AUDIO_SUFFIXES and key not in audio:
                    audio[key] = m
                elif suffix in META_SUFFIXES:
                    meta.setdefault(key, []).append(m)
    except tarfile.ReadError as e:
        raise ValueError(f"{tar}: not an uncompressed tar file ({e}); compressed shards (.tar.gz) cannot be "
                         "read in place: decompress them first") from None
    no_audio = [k for k in seen if k not in audio]
    order = {k: i for i, k in enumerate(seen)}
    audio = dict(sorted(audio.items(), key=lambda kv: order[kv[0]]))
    return ShardIndex(tar, audio, meta, no_audio, damage)


def read_path_list(list_file: PathLike) -> List[str]:
    """The paths of a list file (one per line, ``#`` comments; relative ones against the list file's folder)."""
    base = Path(list_file).parent
    out = []
    for lineno, line in enumerate(Path(list_file).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        out.append(os.fspath(p if p.is_absolute() else base / p))
    if not out:
        raise ValueError(f"{list_file}: no files listed")
    return out


def index_shards(tars: List[str], shard_key: bool = False) -> List[Tuple[str, TarMember]]:
    """``[(key, audio member)]`` over all shards, in list and member order. A shard that cannot be opened is
    an error naming it; a damaged one keeps the keys before the damage (logged); a key found twice is an
    error (unless ``shard_key``: keys become ``SHARDNAME/KEY``)."""
    out: List[Tuple[str, TarMember]] = []
    first: Dict[str, str] = {}
    for tar in tars:
        if not os.path.isfile(tar):
            raise ValueError(f"{tar}: no such tar shard")
        idx = index_tar(tar)
        if idx.damage:
            logger.error("%s: damaged after %d key(s) (%s); those keys are kept, the rest of this shard is lost",
                         tar, len(idx.audio), idx.damage)
        if idx.no_audio:
            logger.warning("%s: %d key(s) without an audio member (%s), e.g. %s", tar, len(idx.no_audio),
                           ", ".join(AUDIO_SUFFIXES), idx.no_audio[:3])
        prefix = f"{Path(tar).name.split('.', 1)[0]}/" if shard_key else ""
        for key, m in idx.audio.items():
            k = prefix + key
            if k in first:
                raise ValueError(f"key {k!r} is in {first[k]} and in {tar}: keys must be unique across shards "
                                 "(--tar_shard_keys names each key SHARDNAME/KEY)")
            first[k] = tar
            out.append((k, m))
    return out


def shard_metadata(tars: List[str], text_field: str = "text", speaker_field: str = "speaker",
                   shard_key: bool = False) -> Tuple[Dict[str, str], Dict[str, str], List[str]]:
    """``({key: text}, {key: speaker}, problems)`` from each key's ``.json`` member (or ``.txt``: the text),
    for the keys that have audio. A key without metadata, or whose JSON lacks a field, is listed in
    ``problems`` (key and reason) and left out of that table."""
    import json

    text: Dict[str, str] = {}
    spk: Dict[str, str] = {}
    problems: List[str] = []
    for tar in tars:
        idx = index_tar(tar)
        prefix = f"{Path(tar).name.split('.', 1)[0]}/" if shard_key else ""
        for key in idx.audio:
            k = prefix + key
            members = idx.meta.get(key, [])
            js = next((m for m in members if m.name.endswith(".json")), None)
            txt = next((m for m in members if m.name.endswith(".txt")), None)
            info: dict = {}
            if js is not None:
                try:
                    info = json.loads(read_member(js).read().decode("utf-8"))
                    if not isinstance(info, dict):
                        raise ValueError("not a JSON object")
                except (ValueError, OSError) as e:
                    problems.append(f"{k} {js.tar}//{js.name}: unreadable JSON ({e})")
                    info = {}
            elif txt is not None:
                info = {text_field: read_member(txt).read().decode("utf-8", "replace")}
            for field, table in ((text_field, text), (speaker_field, spk)):
                value = info.get(field)
                if value is None:
                    problems.append(f"{k} no '{field}' in its metadata")
                else:
                    table[k] = " ".join(str(value).split())  # one line, single spaces
    return text, spk, problems
