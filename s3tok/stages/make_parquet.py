"""make_parquet: a data dir and its tokens and embeddings as CosyVoice's training shards
(:mod:`s3tok.data.cosyvoice_parquet`).

A stage on :mod:`s3tok.stages.protocol`, one unit per shard: shard ``i`` (``parquet_%09d.tar`` with its
``utt2parquet``/``spk2parquet`` JSON) has the marker ``.done/make_parquet.i``, so a rerun with the same inputs
skips the finished shards and redoes the rest. Then ``data.list``, ``utt2data.list``, ``spk2data.list`` and
``parquet_skipped`` are published together, last, naming only shards that exist, by absolute path
(CosyVoice's ``train.py`` opens them from its own working directory).

Shards are planned from the tables alone, before any audio is read: the utterances, in the audio source's
order, that have every requested field (text, speaker, and each requested token or embedding) fill shards
of ``num_utts_per_parquet``. An utterance whose audio then cannot be read is skipped with its reason and its
shard is written without it (one bad file never costs a shard, nor moves a key to another shard). Every
skipped utterance is in ``parquet_skipped`` as ``key reason``.

``audio_data``: a plain file's bytes (its header checked, so that training never meets an empty or
undecodable file); for a segment or a ``cmd |`` pipe, a WAV of the utterance's samples at the recording's own
rate and channels (CosyVoice resamples and averages itself): 16-bit PCM when the recording is 8- or 16-bit
PCM (bit-exact, half the size of float), 32-bit float otherwise (the samples exactly as decoded, no
requantisation); for a tar member or parquet row, its bytes.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import soundfile as sf
from tqdm import tqdm

from s3tok.data import cosyvoice_parquet as cvp
from s3tok.data.sources import Utterance
from s3tok.stages import protocol
from s3tok.stages.journal import done_marker
from s3tok.stages.features import one_line
from s3tok.stages.protocol import JobPaths, Stage
from s3tok.util.fsutil import publish

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
T = TypeVar("T")
R = TypeVar("R")

#: The instruct text of CosyVoice3's recipes (``local/prepare_data.py --instruct`` writes it for every utterance).
COSYVOICE3_INSTRUCT = "You are a helpful assistant.<|endofprompt|>"
FORMAT_VERSION = "cosyvoice-parquet-1"
SKIPPED_FILE = "parquet_skipped"

MAKE_PARQUET = Stage("make_parquet", {"parquet": ("parquet_", ".tar"), "utt2parquet": ("utt2parquet_", ".json"),
                                      "spk2parquet": ("spk2parquet_", ".json")})


@dataclass(frozen=True)
class ShardPaths(JobPaths):
    """The files of shard ``job``, named as CosyVoice names them (``parquet_%09d.tar``, ...); ``empty``: a
    shard none of whose utterances could be read, which has no files."""

    empty: bool = False

    def path(self, base: str, ext: str = "") -> Path:
        return self.output_dir / f"{base}{self.job:09d}{ext}"

    @property
    def outputs(self) -> List[Path]:
        return [] if self.empty else super().outputs


@dataclass
class Tables:
    """What make-parquet reads besides the audio; ``None``: that column is not written."""

    text: Dict[str, str]
    utt2spk: Dict[str, str]
    speech_token: Optional[dict] = None
    utt_embedding: Optional[dict] = None
    spk_embedding: Optional[dict] = None


@dataclass(frozen=True)
class Options:
    num_utts_per_parquet: int = 1000
    instruct: Optional[str] = None
    text_remove_spaces: bool = False
    num_workers: int = 2
    base_dir: Optional[str] = None
    progress: bool = True


@dataclass(frozen=True)
class Planned:
    """One utterance to write: its audio source and the other columns' values."""

    utt: Utterance
    meta: dict


@dataclass
class Result:
    total: int
    written: int = 0
    shards: List[ShardPaths] = field(default_factory=list)  # those written, in order
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def skipped_ratio(self) -> float:
        return len(self.skipped) / self.total if self.total else 0.0


# ------------------------------------------------------------------------------------------------ input tables

def load_pt_table(path: PathLike, what: str) -> dict:
    """A ``torch.save``d ``{key: values}`` (CosyVoice's ``utt2speech_token.pt`` and friends); ``ValueError``
    naming the file when it is missing or not such a dict."""
    import torch

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file ({what})")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file it cannot read
        raise ValueError(f"{path}: not a readable torch.save file ({what}): {one_line(e)}") from None
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a dict {{key: values}} ({what}), got {type(table).__name__}")
    return table


def _optional_table(data_dir: Path, given: Optional[PathLike], default: str, off: bool) -> Optional[dict]:
    """A ``.pt`` table: the one given (it must exist), else ``data_dir/default`` when it is there, else None;
    None too when ``off``."""
    if off:
        if given:
            raise ValueError(f"{given} is given but its column is turned off (--no_...)")
        return None
    if given:
        return load_pt_table(given, default)
    path = data_dir / default
    if path.is_file():
        return load_pt_table(path, default)
    logger.info("%s: not there; that column is not written", path)
    return None


def load_tables(data_dir: PathLike, utt2speech_token: Optional[PathLike] = None,
                utt2embedding: Optional[PathLike] = None, spk2embedding: Optional[PathLike] = None,
                no_speech_token: bool = False, no_embedding: bool = False) -> Tables:
    """``text`` and ``utt2spk`` of ``data_dir`` (required) and the ``.pt`` tables (see :func:`_optional_table`);
    ``ValueError`` naming the file that is missing or malformed."""
    from s3tok.data.kaldi_dir import read_text, read_utt2spk

    d = Path(data_dir)
    for name in ("text", "utt2spk"):
        if not (d / name).is_file():
            raise ValueError(f"{d / name}: no such file (make-parquet needs text and utt2spk)")
    tables = Tables(read_text(d / "text"), read_utt2spk(d / "utt2spk"),
                    speech_token=_optional_table(d, utt2speech_token, "utt2speech_token.pt", no_speech_token),
                    utt_embedding=_optional_table(d, utt2embedding, "utt2embedding.pt", no_embedding),
                    spk_embedding=_optional_table(d, spk2embedding, "spk2embedding.pt", no_embedding))
    if (tables.utt_embedding is None) != (tables.spk_embedding is None):
        logger.warning("only one of utt_embedding / spk_embedding will be written; CosyVoice's training reads both")
    return tables


def _as_list(value) -> list:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"not a list ({type(value).__name__})")
    return list(value)


def tokens_of(value) -> List[int]:
    """A token sequence as a list of ints; ``ValueError`` with the reason otherwise."""
    out = _as_list(value)
    for t in out:
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"not a token: {t!r}")
    return out


def vector_of(value) -> List[float]:
    """An embedding as a list of finite floats; ``ValueError`` with the reason otherwise."""
    out = _as_list(value)
    for x in out:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"not a finite number: {x!r}")
    return [float(x) for x in out]


def clean_text(text: str, remove_spaces: bool) -> str:
    """Whitespace runs made single spaces (as CosyVoice reads ``text``), or removed with ``remove_spaces``
    (word-segmented transcripts such as AISHELL's)."""
    return ("" if remove_spaces else " ").join(text.split())


# ------------------------------------------------------------------------------------------------ planning

def optional_columns(tables: Tables, instruct: Optional[str]) -> List[str]:
    given = {"utt_embedding": tables.utt_embedding, "spk_embedding": tables.spk_embedding,
             "speech_token": tables.speech_token, "instruct": instruct}
    return [c for c in cvp.OPTIONAL if given[c] is not None]


def _meta(key: str, tables: Tables, opts: Options, dims: Dict[str, int]) -> dict:
    """The non-audio columns of ``key``; ``ValueError`` with the reason it cannot be written."""
    if key not in tables.text:
        raise ValueError("no text")
    text = clean_text(tables.text[key], opts.text_remove_spaces)
    if not text:
        raise ValueError("empty text")
    spk = tables.utt2spk.get(key)
    if spk is None:
        raise ValueError("no utt2spk entry")
    meta: dict = {"text": text, "spk": spk}
    for column, table, lookup, label in (("utt_embedding", tables.utt_embedding, key, ""),
                                         ("spk_embedding", tables.spk_embedding, spk, f" (speaker {spk})")):
        if table is None:
            continue
        if lookup not in table:
            raise ValueError(f"no {column}{label}")
        try:
            vec = vector_of(table[lookup])
        except ValueError as e:
            raise ValueError(f"bad {column}{label}: {e}") from None
        if not vec:
            raise ValueError(f"empty {column}{label}")
        dim = dims.setdefault(column, len(vec))
        if len(vec) != dim:
            raise ValueError(f"{column}{label} has {len(vec)} values, the others {dim}")
        meta[column] = vec
    if tables.speech_token is not None:
        if key not in tables.speech_token:
            raise ValueError("no speech_token")
        try:
            tokens = tokens_of(tables.speech_token[key])
        except ValueError as e:
            raise ValueError(f"bad speech_token: {e}") from None
        if not tokens:
            raise ValueError("empty speech_token")  # CosyVoice's filter would drop it
        meta["speech_token"] = tokens
    if opts.instruct is not None:
        meta["instruct"] = opts.instruct
    return meta


def plan(utts: Sequence[Utterance], tables: Tables, opts: Options) -> Tuple[List[Planned], Dict[str, str]]:
    """The utterances that have every requested field, in input order, and ``{key: reason}`` of the others."""
    planned: List[Planned] = []
    skipped: Dict[str, str] = {}
    dims: Dict[str, int] = {}
    for u in utts:
        try:
            planned.append(Planned(u, _meta(u.key, tables, opts, dims)))
        except ValueError as e:
            skipped[u.key] = str(e)
    return planned, skipped


# ------------------------------------------------------------------------------------------------ audio bytes

def _check_decodable(data: bytes) -> None:
    """Refuse bytes whose header soundfile cannot read, or that hold no samples."""
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise ValueError(f"not decodable audio ({one_line(e)})") from None
    if info.frames <= 0:
        raise ValueError("audio is empty (0 samples)")


def _subtype_for(src) -> str:
    """``PCM_16`` for a recording of 8- or 16-bit PCM (re-encoding it is bit-exact), else ``FLOAT``."""
    try:
        subtype = sf.info(src).subtype
    except Exception:  # noqa: BLE001 - the decoder will say what is wrong
        subtype = ""
    finally:
        if hasattr(src, "seek"):
            src.seek(0)
    return "PCM_16" if subtype in ("PCM_16", "PCM_S8", "PCM_U8") else "FLOAT"


def _wav_of_utterance(u: Utterance, base_dir: Optional[PathLike]) -> bytes:
    """WAV bytes of a segment or a pipe's audio, at the recording's own rate and channels."""
    from s3tok.data.audio import read_audio
    from s3tok.data.segments import read_segment
    from s3tok.data.wav_scp import open_wav_entry

    src = open_wav_entry(u.recording, base_dir)
    subtype = _subtype_for(src)
    audio, rate = read_segment(src, u.start, u.end) if u.segment else read_audio(src)
    samples = audio.numpy().T
    if not np.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite samples")
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def wav_name(u: Utterance, base_dir: Optional[PathLike] = None) -> str:
    """The ``wav`` column: an absolute path, a pipe's command, ``TAR//MEMBER`` or ``PARQUET#GROUP/ROW``."""
    m = u.member
    if m is not None:
        from s3tok.data.shards import TarMember

        if isinstance(m, TarMember):
            return f"{os.path.abspath(m.tar)}//{m.name}"
        return f"{os.path.abspath(m.path)}#{m.row_group}/{m.index}"
    if u.recording.is_pipe:
        return u.recording.location
    p = Path(u.recording.location)
    if base_dir is not None and not p.is_absolute():
        p = Path(base_dir) / p
    return os.path.abspath(p)


def audio_bytes(u: Utterance, base_dir: Optional[PathLike] = None) -> bytes:
    """The ``audio_data`` of one utterance (see the module's docstring); raises with the reason."""
    if u.member is not None:
        data = u.member.open().read()
    elif u.segment or u.recording.is_pipe:
        return _wav_of_utterance(u, base_dir)
    else:
        with open(wav_name(u, base_dir), "rb") as f:
            data = f.read()
    _check_decodable(data)
    return data


def ordered_results(items: Iterable[T], fn: Callable[[T], R], workers: int,
                    ahead: int) -> Iterator[Tuple[T, Optional[R], Optional[BaseException]]]:
    """``(item, fn(item), None)`` or ``(item, None, error)`` for every item, in order, computed by ``workers``
    threads at most ``ahead`` items ahead of the consumer (so a shard's audio is not all held at once)."""
    pending: Deque[Tuple[T, Future]] = collections.deque()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def take():
            item, fut = pending.popleft()
            try:
                return item, fut.result(), None
            except Exception as e:  # noqa: BLE001 - a bad utterance is recorded, the shard goes on
                return item, None, e

        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= max(1, ahead):
                yield take()
        while pending:
            yield take()


# ------------------------------------------------------------------------------------------------ one shard

def _row_digest(p: Planned, base_dir: Optional[PathLike]) -> str:
    meta = hashlib.sha256(json.dumps(p.meta, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"{protocol.input_fingerprint(p.utt, base_dir)} {meta[:16]}"


def shard_digest(files: ShardPaths, rows: Sequence[Planned], columns: Sequence[str],
                 base_dir: Optional[PathLike]) -> str:
    """What shard ``files.job`` is made from: the format, where it lies, its columns and each row's inputs."""
    head = [FORMAT_VERSION, str(files["parquet"]), ",".join(columns)]
    return protocol.digest(head + [_row_digest(p, base_dir) for p in rows])


def _json(mapping: dict) -> bytes:
    return (json.dumps(mapping, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def write_one_shard(files: ShardPaths, rows: Sequence[Planned], columns: Sequence[str], opts: Options,
                    bar: Optional[tqdm] = None) -> Tuple[int, List[Tuple[str, str]]]:
    """Shard ``files.job`` from ``rows`` unless done for these inputs: ``(written, [(key, reason)])``."""
    inputs = shard_digest(files, rows, columns, opts.base_dir)
    info = protocol.begin(files, inputs)
    if info is not None:
        if bar is not None:
            bar.update(len(rows))
        return int(info["written"]), [(k, r) for k, r in info["skipped"]]
    shard = str(files["parquet"])
    skipped: List[Tuple[str, str]] = []
    keys: List[str] = []
    speakers: Dict[str, None] = {}

    def table_rows() -> Iterator[dict]:
        read = ordered_results(rows, lambda p: audio_bytes(p.utt, opts.base_dir), opts.num_workers,
                               2 * max(1, opts.num_workers) + 2)
        for p, data, error in read:
            if bar is not None:
                bar.update(1)
            if error is not None:
                skipped.append((p.utt.key, f"audio: {' '.join(one_line(error).split())}"))
                logger.warning("%s: skipped: %s", p.utt.key, skipped[-1][1])
                continue
            keys.append(p.utt.key)
            speakers[p.meta["spk"]] = None
            yield {"utt": p.utt.key, "audio_data": data, "wav": wav_name(p.utt, opts.base_dir), **p.meta}

    written = cvp.write_shard(shard, table_rows(), columns)
    if written + len(skipped) != len(rows):  # every read accounted for, written or skipped
        raise RuntimeError(f"{shard}: {written} written + {len(skipped)} skipped != {len(rows)} planned")
    if written:
        publish([(files["utt2parquet"], _json({k: shard for k in keys})),
                 (files["spk2parquet"], _json({s: shard for s in speakers}))])
    else:  # nothing readable: no files, and none left from an earlier run
        logger.warning("%s: none of its %d utterances could be read; no shard written", shard, len(rows))
        for p in files.outputs:
            p.unlink(missing_ok=True)
        files = dataclasses.replace(files, empty=True)
    protocol.finish(files, inputs, {"written": written, "skipped": [list(s) for s in skipped]})
    return written, skipped


def _stale_indices(output_dir: Path, count: int) -> List[int]:
    """Indices ``count`` and above of the shards and markers in ``output_dir``."""
    found = set()
    for p in output_dir.glob("parquet_*.tar"):
        stem = p.name[len("parquet_"):-len(".tar")]
        if stem.isdigit() and len(stem) == 9:
            found.add(int(stem))
    for p in done_marker(output_dir, MAKE_PARQUET.name, 0).parent.glob(f"{MAKE_PARQUET.name}.*"):
        suffix = p.name[len(MAKE_PARQUET.name) + 1:]
        if suffix.isdigit():
            found.add(int(suffix))
    return sorted(i for i in found if i >= count)


def remove_stale_shards(output_dir: Path, count: int) -> int:
    """Delete shards ``count`` and above (and their markers) that an earlier, larger run left."""
    removed = 0
    for i in _stale_indices(output_dir, count):
        for f in ShardPaths(MAKE_PARQUET, output_dir, i).outputs:
            f.unlink(missing_ok=True)
        done_marker(output_dir, MAKE_PARQUET.name, i).unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("%s: removed %d shard(s) of an earlier run beyond the %d of this one", output_dir, removed, count)
    return removed


# ------------------------------------------------------------------------------------------------ the stage

def make_parquet(utts: Sequence[Utterance], tables: Tables, output_dir: PathLike, opts: Options) -> Result:
    """Write the shards of ``utts`` and then the lists into ``output_dir`` (see the module's docstring)."""
    cvp.pyarrow_modules()  # before anything is written: without pyarrow, no shard and no list
    if opts.num_utts_per_parquet < 1:
        raise ValueError(f"--num_utts_per_parquet must be at least 1, got {opts.num_utts_per_parquet}")
    out = Path(output_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    columns = cvp.columns_for(optional_columns(tables, opts.instruct))
    planned, skipped = plan(utts, tables, opts)
    result = Result(total=len(utts))
    n = opts.num_utts_per_parquet
    chunks = [planned[j:j + n] for j in range(0, len(planned), n)]
    logger.info("%s: %d of %d utterances in %d shard(s) of up to %d; columns %s", out, len(planned), len(utts),
                len(chunks), n, ", ".join(columns))
    audio_skips: Dict[str, str] = {}
    with tqdm(total=len(planned), unit="utt", disable=not opts.progress) as bar:
        for i, rows in enumerate(chunks):
            files = ShardPaths(MAKE_PARQUET, out, i)
            written, bad = write_one_shard(files, rows, columns, opts, bar)
            audio_skips.update(bad)
            result.written += written
            if written:
                result.shards.append(files)
    skipped.update(audio_skips)
    result.skipped = {u.key: skipped[u.key] for u in utts if u.key in skipped}  # input order
    publish_lists(out, result)
    remove_stale_shards(out, len(chunks))
    return result


def publish_lists(out: Path, result: Result) -> None:
    """``data.list``, ``utt2data.list``, ``spk2data.list`` and ``parquet_skipped``, together."""
    for f in result.shards:
        missing = [p for p in f.outputs if not p.is_file()]
        if missing:
            raise RuntimeError(f"{missing[0]}: missing after its shard was written")
    lists = {name: "".join(f"{f[role]}\n" for f in result.shards)
             for name, role in zip(cvp.LISTS, ("parquet", "utt2parquet", "spk2parquet"))}
    skipped = "".join(f"{k} {r}\n" for k, r in result.skipped.items())
    publish([(out / name, text.encode("utf-8")) for name, text in lists.items()]
            + [(out / SKIPPED_FILE, skipped.encode("utf-8"))])


def skip_summary(skipped: Dict[str, str], top: int = 5) -> str:
    """``reason kind: count`` of the most common kinds (the reason up to a colon or parenthesis)."""
    kinds = collections.Counter(r.split(":")[0].split(" (")[0] for r in skipped.values())
    return ", ".join(f"{k}: {c}" for k, c in kinds.most_common(top))
