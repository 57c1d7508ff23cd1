"""Merge tokenize jobs: concatenate their outputs in job order, check coverage, write the set's files.

Into ``dest`` (usually ``data/<set>``): ``tokens.scp`` (pointing at the jobs' arks), ``utt2num_tokens``,
``utt2fail``, ``tokenizer.json``; optionally ``utt2speech_token.pt`` (CosyVoice: ``dict[str, list[int]]``)
and a JSONL file (``{"key": ..., "code": [...]}`` per line). Every input key must appear exactly once, in
the tokens or in the failures.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from s3tok.util.fsutil import publish, remove_leftovers, torch_saved
from s3tok.stages import protocol
from s3tok.stages.journal import clear_done, mark_done
from s3tok.stages.protocol import MergeError, check_coverage, read_pairs  # noqa: F401 - part of this API
from s3tok.stages.tokenize_job import MAKER_FIELDS, TOKENIZE

logger = logging.getLogger(__name__)

MERGE_STAGE = "merge_tokens"

PathLike = Union[str, os.PathLike]


@dataclass
class MergeResult:
    tokens: int
    failed: int
    total: int

    @property
    def fail_ratio(self) -> float:
        return self.failed / self.total if self.total else 0.0


def merge_jobs(output_dir: PathLike, num_jobs: int, input_keys: Sequence[str], dest: PathLike,
               utt2speech_token: Optional[PathLike] = None, jsonl: Optional[PathLike] = None,
               prior_fail: Sequence[PathLike] = ()) -> MergeResult:
    """Check and merge; raise :class:`MergeError` naming what is wrong. ``prior_fail``: ``key reason``
    files of keys that failed in an earlier stage (e.g. compute_mel) and so never reached tokenize."""
    order = {k: i for i, k in enumerate(input_keys)}
    protocol.require_finished(TOKENIZE, output_dir, num_jobs)
    scp_rows, txt_rows, fail_rows = (protocol.read_tables(TOKENIZE, output_dir, num_jobs, role)
                                     for role in ("scp", "txt", "fail"))
    jobs = TOKENIZE.jobs(output_dir, num_jobs)
    makers: List[Dict[str, object]] = [json.loads(j["provenance"].read_text(encoding="utf-8")) for j in jobs]
    first = makers[0]
    for j, m in zip(jobs, makers):
        diff = [k for k in MAKER_FIELDS if m.get(k) != first.get(k)]
        if diff:
            raise MergeError(f"{j['provenance']} differs from {jobs[0]['provenance']} in {diff}: jobs made by "
                             "different models cannot be merged")
    prior = [row for path in prior_fail for row in read_pairs(Path(path))]
    check_coverage(output_dir, input_keys, [("tokens", scp_rows), ("utt2fail", fail_rows),
                                            ("an earlier stage's failures", prior)])
    fail_rows = sorted(prior + fail_rows, key=lambda r: order[r[0]]) if prior else fail_rows
    dest = Path(dest)
    tokens = {k: [int(t) for t in v.split()] for k, v in txt_rows}
    outputs: List[Tuple[Path, object]] = [
        (dest / "tokens.scp", _lines([f"{k} {v}" for k, v in scp_rows])),
        (dest / "utt2num_tokens", _lines([f"{k} {len(v.split())}" for k, v in txt_rows])),
        (dest / "utt2fail", _lines([f"{k} {v}" for k, v in fail_rows])),
        (dest / "tokenizer.json", (json.dumps(first, indent=1, sort_keys=True) + "\n").encode("utf-8")),
    ]
    if utt2speech_token:
        outputs.append((Path(utt2speech_token), torch_saved(dict(tokens))))
    if jsonl:
        outputs.append((Path(jsonl), _lines([json.dumps({"key": k, "code": v}, ensure_ascii=False)
                                             for k, v in tokens.items()])))
    clear_done(dest, MERGE_STAGE)  # from here until the marker, the set is not a finished merge
    remove_leftovers(dest, [p for p, _ in outputs])
    publish(outputs)  # all of them, or (interrupted) none: the old files stay until the renames
    result = MergeResult(len(txt_rows), len(fail_rows), len(input_keys))
    mark_done(dest, MERGE_STAGE, None, {"tokens": result.tokens, "failed": result.failed,
                                        "output_dir": str(output_dir)}, outputs=[p for p, _ in outputs])
    return result


def _lines(rows: Sequence[str]) -> bytes:
    return "".join(r + "\n" for r in rows).encode("utf-8")


CONSISTENT_MARK = ".s3tok_consistent"
_DATA_FILES = ("wav.scp", "segments", "text", "utt2spk", "spk2utt", "utt2dur", "utt2num_frames", "feats.scp",
               "reco2dur", "spk2gender")
_TOKEN_FILES = ("tokens.scp", "utt2num_tokens", "tokenizer.json", "utt2speech_token.pt")


def write_consistent_dir(data_dir: PathLike, merged: PathLike, out_dir: PathLike) -> Tuple[int, int]:
    """A copy of ``data_dir`` with the merged token files of ``merged``, restricted (as Kaldi's
    ``fix_data_dir.sh`` does) to the utterances that have tokens, so that every key it lists has tokens:
    what CosyVoice's ``make_parquet_list.py`` needs (a key without a token costs it a whole shard).
    ``removed`` lists the keys left out with their reasons. Built aside and renamed into place; an existing
    ``out_dir`` is replaced only when an earlier call made it. Returns ``(kept, removed)``."""
    from s3tok.data.validate import fix_data_dir

    data_dir, merged, out = Path(data_dir), Path(merged), Path(out_dir)
    if out.exists() and not (out / CONSISTENT_MARK).is_file():
        raise FileExistsError(f"{out}: exists and was not made by merge_tokens --consistent_dir; choose another")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = None
    try:
        for src, names in ((data_dir, _DATA_FILES), (merged, _TOKEN_FILES)):
            for name in names:
                if (src / name).is_file():
                    shutil.copy2(src / name, tmp / name)
        fix_data_dir(tmp)  # keeps the keys present in every file, tokens.scp included
        shutil.rmtree(tmp / ".backup", ignore_errors=True)  # a fresh copy: nothing to back up
        kept = len((tmp / "tokens.scp").read_text(encoding="utf-8").splitlines())
        shutil.copy2(merged / "utt2fail", tmp / "removed")
        (tmp / CONSISTENT_MARK).write_text(f"made by merge_tokens from {data_dir} and {merged}\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / "dir")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    removed = len((out / "removed").read_text(encoding="utf-8").splitlines())
    logger.info("%s: %d utterances, every one with tokens; %d left out (listed in %s)", out, kept, removed,
                out / "removed")
    return kept, removed
