"""The ``audio_data`` and ``wav`` columns of CosyVoice's parquet rows.

``audio_data``: a plain file's bytes (its header checked, so that training never meets an empty or
undecodable file); for a segment or a ``cmd |`` pipe, a WAV of the utterance's samples at the recording's own
rate and channels (CosyVoice resamples and averages itself): 16-bit PCM when the recording is 8- or 16-bit
PCM (bit-exact, half the size of float), 32-bit float otherwise (the samples exactly as decoded, no
requantisation); for a tar member or parquet row, its bytes. A file, member or row is checked from its
header before it is read whole (decodable, not empty, within ``--max_duration``); no value may exceed
:data:`s3tok.data.cosyvoice_parquet.MAX_AUDIO_BYTES`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import soundfile as sf

from s3tok.data import cosyvoice_parquet as cvp
from s3tok.data.audio import SF_COUNT_MAX, check_span
from s3tok.data.sources import Utterance
from s3tok.stages.features import one_line

PathLike = Union[str, os.PathLike]


def _check_size(size: int) -> None:
    if size > cvp.MAX_AUDIO_BYTES:
        raise ValueError(f"{size} bytes of audio, more than one parquet value holds ({cvp.MAX_AUDIO_BYTES})")


def _read_checked(src: BinaryIO) -> bytes:
    """All of ``src`` (a seekable audio file), after its size and its header are checked: refused, before it is
    read into memory, when too large for a parquet value, not decodable, empty, or longer than
    ``--max_duration`` (:func:`s3tok.data.audio.check_span`)."""
    try:
        info = sf.info(src)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise ValueError(f"not decodable audio ({one_line(e)})") from None
    if info.frames <= 0:
        raise ValueError("audio is empty (0 samples)")
    if info.frames < SF_COUNT_MAX:  # a length not in the header (a FLAC written to a pipe): the size bounds it
        check_span(int(info.samplerate), int(info.frames))
    _check_size(src.seek(0, io.SEEK_END))
    src.seek(0)
    return src.read()


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
        with u.member.open() as src:
            return _read_checked(src)
    if u.segment or u.recording.is_pipe:
        data = _wav_of_utterance(u, base_dir)
        _check_size(len(data))
        return data
    with open(wav_name(u, base_dir), "rb") as f:
        return _read_checked(f)
