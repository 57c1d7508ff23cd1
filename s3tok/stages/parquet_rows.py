"""The columns of CosyVoice's parquet rows besides the audio: the tables make-parquet reads (``text``,
``utt2spk``, the ``.pt`` token and embedding tables), checked value by value, and the plan of which
utterances can be written at all: those with every requested field (text, speaker, each requested token or
embedding, well formed); the others get their reason (``parquet_skipped``)."""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from s3tok.data import cosyvoice_parquet as cvp
from s3tok.data.sources import Utterance
from s3tok.stages.features import one_line

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
INT64_MAX = (1 << 63) - 1  # speech_token is list<int64>

#: The instruct text of CosyVoice3's recipes (``local/prepare_data.py --instruct`` writes it for every utterance).
COSYVOICE3_INSTRUCT = "You are a helpful assistant.<|endofprompt|>"


@dataclass
class Tables:
    """What make-parquet reads besides the audio; ``None``: that column is not written."""

    text: Dict[str, str]
    utt2spk: Dict[str, str]
    speech_token: Optional[dict] = None
    utt_embedding: Optional[dict] = None
    spk_embedding: Optional[dict] = None
    codebook_size: Optional[int] = None  # from tokenizer.json beside the token table: ids must be below it


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
    if tables.speech_token is not None:
        tables.codebook_size = codebook_size_beside(utt2speech_token or d / "utt2speech_token.pt")
    if (tables.utt_embedding is None) != (tables.spk_embedding is None):
        logger.warning("only one of utt_embedding / spk_embedding will be written; CosyVoice's training reads both")
    return tables


def _as_list(value) -> list:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"not a list ({type(value).__name__})")
    return list(value)


def _short(x) -> str:
    text = repr(x)
    return text if len(text) <= 40 else f"{text[:37]}..."


def tokens_of(value, codebook_size: Optional[int] = None) -> List[int]:
    """A token sequence as a list of ints (int64, below ``codebook_size`` when known); ``ValueError`` with the
    reason otherwise."""
    out = _as_list(value)
    for t in out:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= INT64_MAX:
            raise ValueError(f"not a token: {_short(t)}")
        if codebook_size is not None and t >= codebook_size:
            raise ValueError(f"token {t} outside the codebook of {codebook_size} (tokenizer.json)")
    return out


def vector_of(value) -> List[float]:
    """An embedding as a list of finite floats; ``ValueError`` with the reason otherwise."""
    out = []
    for x in _as_list(value):
        try:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise TypeError
            out.append(float(x))  # OverflowError for an int beyond any float
        except (TypeError, OverflowError):
            raise ValueError(f"not a finite number: {_short(x)}") from None
        if not math.isfinite(out[-1]):
            raise ValueError(f"not a finite number: {_short(x)}")
    return out


def codebook_size_beside(table: PathLike) -> Optional[int]:
    """The ``codebook_size`` of the ``tokenizer.json`` that merge-tokens writes beside ``utt2speech_token.pt``,
    or None (not there, or without one: token ids are then not checked against the codebook)."""
    path = Path(table).parent / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        size = json.loads(path.read_text(encoding="utf-8")).get("codebook_size")
    except (ValueError, OSError, AttributeError) as e:
        logger.warning("%s: unreadable (%s); token ids are not checked against the codebook", path, one_line(e))
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


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
            tokens = tokens_of(tables.speech_token[key], tables.codebook_size)
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
