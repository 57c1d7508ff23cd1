"""make_parquet: a data dir and its tokens and embeddings as CosyVoice's training shards
(:mod:`s3tok.data.cosyvoice_parquet`).

A stage on :mod:`s3tok.stages.protocol`, one unit per shard: shard ``i`` (``parquet_%09d.tar`` with its
``utt2parquet``/``spk2parquet`` JSON) has the marker ``.done/make_parquet.i``, so a rerun with the same inputs
skips the finished shards and redoes the rest. Then ``data.list``, ``utt2data.list``, ``spk2data.list`` and
``parquet_skipped`` are published together, last, naming only shards that exist, by absolute path
(CosyVoice's ``train.py`` opens them from its own working directory).

Shards are planned from the tables alone (:func:`s3tok.stages.parquet_rows.plan`), before any audio is
read: the utterances, in the audio source's order, that have every requested field (text, speaker, and each
requested token or embedding) fill shards of ``num_utts_per_parquet``. An utterance whose audio then cannot
be read (or is over ``--max_duration``, or too large to store) is skipped with its reason and its shard is
written without it (one bad file never costs a shard, nor moves a key to another shard). Every skipped
utterance is in ``parquet_skipped`` as ``key reason``. An output folder where a shard would overwrite one of
the input containers (CosyVoice's shards given back in place) is refused before anything is written.

A row's other columns come from :mod:`s3tok.stages.parquet_rows`, its ``audio_data`` from
:mod:`s3tok.stages.parquet_audio`.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

from tqdm import tqdm

from s3tok.data import cosyvoice_parquet as cvp
from s3tok.data.sources import Utterance
from s3tok.stages import protocol
from s3tok.stages.journal import done_marker
from s3tok.stages.features import one_line
from s3tok.stages.protocol import JobPaths, Stage
from s3tok.stages.parquet_audio import audio_bytes, wav_name
from s3tok.stages.parquet_rows import Options, Planned, Tables, optional_columns, plan
from s3tok.util.fsutil import publish

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
T = TypeVar("T")
R = TypeVar("R")

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
class Result:
    total: int
    written: int = 0
    shards: List[ShardPaths] = field(default_factory=list)  # those written, in order
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def skipped_ratio(self) -> float:
        return len(self.skipped) / self.total if self.total else 0.0


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

    def skip(key: str, reason: str) -> None:
        skipped.append((key, " ".join(reason.split())))
        logger.warning("%s: skipped: %s", key, skipped[-1][1])

    def table_rows() -> Iterator[dict]:
        read = ordered_results(rows, lambda p: audio_bytes(p.utt, opts.base_dir), opts.num_workers,
                               2 * max(1, opts.num_workers) + 2)
        for p, data, error in read:
            if bar is not None:
                bar.update(1)
            if error is not None:
                skip(p.utt.key, f"audio: {one_line(error)}")
                continue
            yield {"utt": p.utt.key, "audio_data": data, "wav": wav_name(p.utt, opts.base_dir), **p.meta}

    written = cvp.write_shard(shard, table_rows(), columns, reject=lambda row, why: skip(str(row["utt"]), why))
    if written + len(skipped) != len(rows):  # every read accounted for, written or skipped
        raise RuntimeError(f"{shard}: {written} written + {len(skipped)} skipped != {len(rows)} planned")
    if written:
        gone = {k for k, _ in skipped}
        kept = [p for p in rows if p.utt.key not in gone]
        publish([(files["utt2parquet"], _json({p.utt.key: shard for p in kept})),
                 (files["spk2parquet"], _json({p.meta["spk"]: shard for p in kept}))])
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

_OUTPUT_NAME = re.compile(r"(parquet_\d{9}\.tar|(utt|spk)2parquet_\d{9}\.json)")


def check_inputs_apart(utts: Sequence[Utterance], output_dir: Path) -> None:
    """``ValueError`` naming the input and ``output_dir`` when a shard, list or stale shard that make-parquet
    writes or removes there would be one of its input containers (tar shards, parquet files: CosyVoice's
    shards given back to it, as ``--parquet_list DIR/data.list --output_dir DIR``), whether named as given or
    reached through a link. Rows read after such a file is rewritten would be another key's audio."""
    if not output_dir.is_dir():
        return
    outputs = set(cvp.LISTS) | {SKIPPED_FILE}
    for container in sorted({u.member.container for u in utts if u.member is not None}):
        for path in (os.path.abspath(container), os.path.realpath(container)):
            folder, name = os.path.split(path)
            if (name in outputs or _OUTPUT_NAME.fullmatch(name)) and os.path.samefile(folder, output_dir):
                raise ValueError(f"{container}: an input of make-parquet, and --output_dir {output_dir} would "
                                 f"overwrite or remove it ({name}); write the shards to another folder")


def make_parquet(utts: Sequence[Utterance], tables: Tables, output_dir: PathLike, opts: Options) -> Result:
    """Write the shards of ``utts`` and then the lists into ``output_dir`` (see the module's docstring)."""
    cvp.pyarrow_modules()  # before anything is written: without pyarrow, no shard and no list
    if opts.num_utts_per_parquet < 1:
        raise ValueError(f"--num_utts_per_parquet must be at least 1, got {opts.num_utts_per_parquet}")
    out = Path(output_dir).absolute()
    check_inputs_apart(utts, out)
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
