"""Corpora as they ship: WebDataset-style tar shards, read in place (no extraction).

A shard is an uncompressed ``.tar`` whose members are grouped by key: the member's path up to the first dot
of its file name (``spk1/utt7.mp3`` and ``spk1/utt7.json`` are key ``spk1/utt7``). The first member of a key
with an audio suffix is its audio (a second one, and hidden files, are left out and logged); a
``.json``/``.txt`` member is its metadata. Indexing reads only the tar headers (``tarfile`` seeks past the
data), in bounded memory; an utterance's audio is then read by offset as its decoder asks, so any job can
take any key, resume at the utterance level and never unpack a file.

Keys are the WebDataset keys themselves, as they are unique within a corpus's shards; two shards holding
the same key are an error naming both (``shard_key=True`` prefixes every key with its shard's name
instead, for corpora whose keys repeat across shards). A key with whitespace, or a member name that is not
UTF-8, cannot name an utterance in Kaldi files: an error naming the member.
"""
from __future__ import annotations

import io
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

from s3tok.data.lines import BAD_KEY_CHARS, split_text_lines
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


class _MemberFile(io.RawIOBase):
    """A seekable, read-only window of ``size`` bytes at ``offset`` of a file: one tar member, read as the
    decoder asks for it, never whole (a header's stated length is checked before the samples are read)."""

    def __init__(self, path: str, offset: int, size: int, name: str):
        super().__init__()
        self._f = open(path, "rb", buffering=0)
        self._start, self._size, self._pos = offset, size, 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buf) -> int:
        n = max(0, min(len(buf), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(memoryview(buf)[:n])
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def read_member(m: TarMember) -> BinaryIO:
    """The member's bytes as a seekable file object named ``tar//member`` (for messages), read on demand;
    close it (``with read_member(m) as f``)."""
    name = f"{m.tar}//{m.name}"
    have = os.path.getsize(m.tar) - m.offset
    if have < m.size:
        raise OSError(f"{name}: the tar is truncated ({max(0, have)} of {m.size} bytes of this member)")
    return io.BufferedReader(_MemberFile(m.tar, m.offset, m.size, name), buffer_size=1 << 16)


def _key_of(name: str) -> str:
    head, _, base = name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{head}/{stem}" if head else stem


def _bad_key(key: str) -> Optional[str]:
    """Why ``key`` cannot name an utterance (Kaldi keys: UTF-8, no whitespace), or None."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    if BAD_KEY_CHARS.search(key):
        return "its key contains whitespace or a control character"
    return None


MAX_HEADER_BYTES = 1 << 20  # a tar header's own data (GNU long name, pax records): 1 MiB is far beyond any real one


class HeaderTooLarge(tarfile.TarError):
    """A tar header states more header data than :data:`MAX_HEADER_BYTES`."""


class _HeaderReads:
    """The tar file as :mod:`tarfile` reads it while indexing: headers only (members are skipped by seeking),
    so a read of more than :data:`MAX_HEADER_BYTES` can only be a crafted or damaged header's stated length,
    which would otherwise be allocated whole."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.name = getattr(f, "name", None)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > MAX_HEADER_BYTES:
            raise HeaderTooLarge(f"a header at byte {self._f.tell()} states {n} bytes of header data (more than "
                          f"{MAX_HEADER_BYTES}): damaged or crafted")
        return self._f.read(n)


def _end_problem(f: BinaryIO, offset: int) -> Optional[str]:
    """Why the archive does not end properly at ``offset`` (where :mod:`tarfile` stopped), or None when a zero
    block (tar's end-of-archive marker) lies there."""
    f.seek(offset)
    block = f.read(tarfile.BLOCKSIZE)
    if not block:
        return f"no end-of-archive marker after byte {offset} (the file may be cut short)"
    if len(block) < tarfile.BLOCKSIZE:
        return f"the file ends inside a header at byte {offset} (cut short)"
    if block.count(0) != len(block):
        return f"an invalid tar header at byte {offset}"
    return None


@dataclass
class ShardIndex:
    """The keys of one shard: ``{key: (audio member, metadata members)}`` in member order, the keys without
    audio, the members left out (``(member, why)``: a second audio member of a key, a hidden file), and the
    damage that stopped the indexing, if any (the keys before it are kept)."""

    tar: str
    audio: Dict[str, TarMember]
    meta: Dict[str, List[TarMember]]
    no_audio: List[str]
    damage: Optional[str] = None
    left_out: List[Tuple[str, str]] = field(default_factory=list)


def index_tar(path: PathLike) -> ShardIndex:
    """Index one uncompressed tar shard (headers only, in bounded memory). A member whose key cannot name an
    utterance (whitespace, a name that is not UTF-8) is an error naming it."""
    tar = os.fspath(path)
    audio: Dict[str, TarMember] = {}
    meta: Dict[str, List[TarMember]] = {}
    seen: Dict[str, None] = {}  # every key, in member order
    left_out: List[Tuple[str, str]] = []
    damage = None
    size = os.path.getsize(tar)
    with open(tar, "rb") as raw:
        try:
            with tarfile.open(fileobj=_HeaderReads(raw), mode="r:") as tf:
                while True:
                    try:
                        info = tf.next()
                    except (tarfile.TarError, EOFError, OSError) as e:
                        damage = f"{type(e).__name__}: {e}"
                        break
                    tf.members.clear()  # tarfile keeps every header read; the index needs none of them
                    if info is None:
                        damage = _end_problem(raw, tf.offset)
                        break
                    if not info.isfile():
                        continue
                    if info.offset_data + info.size > size:
                        damage = f"member {info.name} runs past the end of the file (truncated tar)"
                        break
                    base = info.name.rpartition("/")[2]
                    if base.startswith("."):  # hidden files (macOS's ._NAME among them) are no samples
                        left_out.append((info.name, "a hidden file"))
                        continue
                    key = _key_of(info.name)
                    why = _bad_key(key)
                    if why is not None:
                        shown = info.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                        raise ValueError(f"{tar}//{shown}: {why}: tar keys name utterances in every output "
                                         "(Kaldi keys: UTF-8, no whitespace); rename the member")
                    m = TarMember(tar, info.name, info.offset_data, info.size)
                    suffix = os.path.splitext(info.name)[1].lower()
                    seen.setdefault(key)
                    if suffix in AUDIO_SUFFIXES:
                        if key in audio:
                            left_out.append((info.name, f"a second audio member of key {key} "
                                                        f"(the first, {audio[key].name}, is used)"))
                        else:
                            audio[key] = m
                    elif suffix in META_SUFFIXES:
                        meta.setdefault(key, []).append(m)
        except HeaderTooLarge as e:  # the first header: no keys at all
            raise ValueError(f"{tar}: {e}") from None
        except tarfile.ReadError as e:
            raise ValueError(f"{tar}: not an uncompressed tar file ({e}); compressed shards (.tar.gz) cannot be "
                             "read in place: decompress them first") from None
    no_audio = [k for k in seen if k not in audio]
    order = {k: i for i, k in enumerate(seen)}
    audio = dict(sorted(audio.items(), key=lambda kv: order[kv[0]]))
    return ShardIndex(tar, audio, meta, no_audio, damage, left_out)


def read_path_list(list_file: PathLike) -> List[str]:
    """The paths of a list file (one per line, ``#`` comments; relative ones against the list file's folder)."""
    base = Path(list_file).parent
    out = []
    for lineno, line in enumerate(split_text_lines(Path(list_file).read_text(encoding="utf-8")), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        out.append(os.fspath(p if p.is_absolute() else base / p))
    if not out:
        raise ValueError(f"{list_file}: no files listed")
    return out


def shard_names(tars: Sequence[str]) -> Dict[str, str]:
    """``{tar: name}``: each shard's file name without ``.tar``, with as many of its folders as it takes to
    tell the list's shards apart (``en/000000`` and ``zh/000000``). What ``shard_key`` puts before each key."""
    parts = {t: Path(t[:-4] if t.lower().endswith(".tar") else t).parts for t in tars}
    depth = dict.fromkeys(tars, 1)
    while True:
        names = {t: "/".join(parts[t][-depth[t]:]) for t in tars}
        groups: Dict[str, List[str]] = {}
        for t, n in names.items():
            groups.setdefault(n, []).append(t)
        grow = [t for g in groups.values() if len(g) > 1 for t in g if depth[t] < len(parts[t])]
        if not grow:  # all apart, or the same path listed twice (its keys then clash: an error below)
            return names
        for t in grow:
            depth[t] += 1


def index_shards(tars: List[str], shard_key: bool = False) -> List[Tuple[str, TarMember]]:
    """``[(key, audio member)]`` over all shards, in list and member order. A shard that cannot be opened is
    an error naming it; a damaged one keeps the keys before the damage (logged), members left out are
    logged per shard; a key found twice is an error (unless ``shard_key``: keys become ``SHARDNAME/KEY``,
    :func:`shard_names`)."""
    out: List[Tuple[str, TarMember]] = []
    first: Dict[str, str] = {}
    names = shard_names(tars) if shard_key else {}
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
        if idx.left_out:
            logger.warning("%s: %d member(s) left out, e.g. %s", tar, len(idx.left_out),
                           "; ".join(f"{name}: {why}" for name, why in idx.left_out[:3]))
        prefix = f"{names[tar]}/" if shard_key else ""
        for key, m in idx.audio.items():
            k = prefix + key
            if k in first:
                raise ValueError(f"key {k!r} is in {first[k]} and in {tar}: keys must be unique across shards"
                                 + ("" if shard_key else " (--tar_shard_keys names each key SHARDNAME/KEY)"))
            first[k] = tar
            out.append((k, m))
    return out


MAX_META_BYTES = 1 << 20  # a transcript or JSON member larger than this is not metadata


def _meta_value(info: dict, name: str) -> Tuple[Optional[str], Optional[str]]:
    """``(value, None)`` for a JSON field that is a string or an integer, else ``(None, why)``."""
    value = info.get(name)
    if value is None:
        return None, f"no '{name}' in its metadata"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"'{name}' is a JSON {type(value).__name__}, not a string"
    return str(value), None


def shard_metadata(tars: List[str], text_field: str = "text", speaker_field: str = "speaker",
                   shard_key: bool = False) -> Tuple[Dict[str, str], Dict[str, str], List[str]]:
    """``({key: text}, {key: speaker}, problems)`` from each key's ``.json`` member (or ``.txt``: the text),
    for the keys that have audio. Text is put on one line with single spaces; a speaker's inner whitespace
    becomes ``_`` (a Kaldi speaker id is one word). A key without metadata, with unreadable metadata (not
    UTF-8, not a JSON object, over 1 MiB) or with a field missing, empty or not a string is listed in
    ``problems`` (key, member and reason) and left out of that table."""
    import json

    text: Dict[str, str] = {}
    spk: Dict[str, str] = {}
    problems: List[str] = []
    names = shard_names(tars) if shard_key else {}
    for tar in tars:
        idx = index_tar(tar)
        prefix = f"{names[tar]}/" if shard_key else ""
        for key in idx.audio:
            k = prefix + key
            members = idx.meta.get(key, [])
            m = next((m for m in members if m.name.endswith(".json")),
                     next((m for m in members if m.name.endswith(".txt")), None))
            if m is None:
                problems.append(f"{k} no metadata member (.json or .txt)")
                continue
            where = f"{m.tar}//{m.name}"
            try:
                if m.size > MAX_META_BYTES:
                    raise ValueError(f"{m.size} bytes, over {MAX_META_BYTES}")
                with read_member(m) as f:
                    content = f.read().decode("utf-8")
                info = json.loads(content) if m.name.endswith(".json") else {text_field: content}
                if not isinstance(info, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                problems.append(f"{k} {where}: unreadable metadata ({e})")
                continue
            for name, table, joiner in ((text_field, text, " "), (speaker_field, spk, "_")):
                value, why = _meta_value(info, name)
                if value is not None:
                    value = joiner.join(value.split())
                    why = None if value else f"'{name}' is empty"
                if why is None:
                    table[k] = value
                else:
                    problems.append(f"{k} {where}: {why}")
    return text, spk, problems
