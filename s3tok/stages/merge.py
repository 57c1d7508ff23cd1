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
#: Per-utterance files an earlier stage or run derived from the audio: one that lacks an utterance with tokens
#: (e.g. a feats.scp left by an earlier --use_mel run) is not copied, rather than costing that utterance.
_DERIVED_FILES = ("utt2dur", "utt2num_frames", "feats.scp")
#: Per-utterance files whose missing line takes the utterance out (listed in ``removed`` with the reason).
_UTT_KEYED = ("segments", "wav.scp", "text", "utt2spk")
_TOKEN_FILES = ("tokens.scp", "utt2num_tokens", "tokenizer.json")


def check_consistent_target(out_dir: PathLike) -> None:
    """Refuse (``ValueError``: bad usage, exit 2) an ``out_dir`` that exists and was not made by
    :func:`write_consistent_dir`; called before anything is published."""
    out = Path(out_dir)
    if out.exists() and not (out / CONSISTENT_MARK).is_file():
        raise ValueError(f"--consistent_dir {out}: exists and was not made by merge_tokens --consistent_dir; "
                         "choose another folder (or remove it)")


def _line_keys(path: Path) -> List[str]:
    """First words of the lines of a data-dir file (as fix_data_dir reads them), in file order."""
    from s3tok.data.lines import BOM, split_line, split_text_lines

    text = path.read_bytes().decode("utf-8", "surrogateescape")
    text = text[1:] if text.startswith(BOM) else text
    return [split_line(line)[0] for line in split_text_lines(text) if line.strip(" \t")]


def write_consistent_dir(data_dir: PathLike, merged: PathLike, out_dir: PathLike,
                         input_keys: Optional[Sequence[str]] = None,
                         utt2speech_token: Optional[PathLike] = None) -> Tuple[int, int]:
    """A copy of ``data_dir`` with the merged token files of ``merged``, restricted (as Kaldi's
    ``fix_data_dir.sh`` does) to the utterances that have tokens, so that every key it lists has tokens:
    what CosyVoice's ``make_parquet_list.py`` needs (a key without a token costs it a whole shard).

    ``removed`` lists every utterance of ``input_keys`` (default: the data dir's) left out, with its reason:
    the failure from ``utt2fail``, or "has tokens but no line in text" and the like. A derived file
    (``feats.scp``, ``utt2num_frames``, ``utt2dur``) that lacks an utterance with tokens is left out of the
    copy (logged) instead. ``utt2speech_token`` (default ``merged/utt2speech_token.pt``), when there, is copied
    restricted to the kept keys. Built aside and renamed into place; an existing ``out_dir`` is replaced only when an earlier call made it
    (else ``ValueError``). Returns ``(kept, removed)``, which add up to the number of utterances."""
    from s3tok.data.validate import fix_data_dir

    data_dir, merged, out = Path(data_dir), Path(merged), Path(out_dir)
    check_consistent_target(out)
    if input_keys is None:
        from s3tok.data.sources import keys_of, select_source

        input_keys = keys_of(select_source(data_dir=str(data_dir)))
    failures = dict(read_pairs(merged / "utt2fail")) if (merged / "utt2fail").is_file() else {}
    with_tokens = {k for k, _ in read_pairs(merged / "tokens.scp")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = None
    try:
        per_utt: Dict[str, set] = {}
        for name in _DATA_FILES:
            if not (data_dir / name).is_file():
                continue
            if name in _DERIVED_FILES or name in _UTT_KEYED:
                keys = set(_line_keys(data_dir / name))
                lacking = [k for k in input_keys if k in with_tokens and k not in keys]
                if name in _DERIVED_FILES and lacking:
                    logger.warning("%s lacks %d utterance(s) that have tokens (e.g. %s; left from an earlier "
                                   "run?): not copied to %s", data_dir / name, len(lacking), lacking[0], out)
                    continue
                if name != "wav.scp" or not (data_dir / "segments").is_file():
                    per_utt[name] = keys
            shutil.copy2(data_dir / name, tmp / name)
        for name in _TOKEN_FILES:
            if (merged / name).is_file():
                shutil.copy2(merged / name, tmp / name)
        fix_data_dir(tmp)  # keeps the keys present in every file, tokens.scp included
        shutil.rmtree(tmp / ".backup", ignore_errors=True)  # a fresh copy: nothing to back up
        kept_keys = set(_line_keys(tmp / "tokens.scp"))
        removed_rows = []
        for k in input_keys:
            if k in kept_keys:
                continue
            if k in failures:
                why = failures[k]
            elif k not in with_tokens:
                why = "no tokens (not in tokens.scp)"
            else:
                lacking = [n for n, keys in per_utt.items() if k not in keys]
                why = (f"has tokens but no line in {', '.join(lacking)}" if lacking
                       else "has tokens but a malformed line in the data dir (fix_data_dir dropped it)")
            removed_rows.append(f"{k} {why}")
        pt = Path(utt2speech_token) if utt2speech_token else merged / "utt2speech_token.pt"
        if pt.is_file():
            import torch

            tokens = torch.load(pt)
            (tmp / "utt2speech_token.pt").write_bytes(
                torch_saved({k: v for k, v in tokens.items() if k in kept_keys}))
        (tmp / "removed").write_bytes(_lines(removed_rows))
        (tmp / CONSISTENT_MARK).write_text(f"made by merge_tokens from {data_dir} and {merged}\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / "dir")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    kept, removed = len(kept_keys), len(removed_rows)
    unexplained = sum(1 for r in removed_rows if " has tokens but " in r)
    logger.info("%s: %d utterances, every one with tokens; %d left out (listed with reasons in %s)%s", out, kept,
                removed, out / "removed", f", {unexplained} of them with tokens" if unexplained else "")
    if unexplained:
        logger.warning("%s: %d utterance(s) with tokens left out because the data dir lacks their lines (see "
                       "%s); utils/validate_data_dir.sh %s names the problem", out, unexplained, out / "removed",
                       data_dir)
    return kept, removed
