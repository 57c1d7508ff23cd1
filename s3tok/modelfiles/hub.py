"""Official model names, their URLs and SHA-256, the download cache and the converted-weights cache.

Cache layout under ``$S3TOK_HOME`` (default ``~/.cache/s3tok``)::

    onnx/<name>/<official file name>          downloaded ONNX files (verified SHA-256)
    onnx/<name>/<file>.verified               size, mtime, ctime, inode of the file when its SHA-256 was checked
    converted/<model id>/model.safetensors     weights converted once from that ONNX file
    converted/<model id>/config.json           S3Config + provenance
    sha256.json                                 path, size, mtime, inode, ctime -> SHA-256 (no rehash)

The model id (:func:`model_sha256`) is the ONNX file's SHA-256, or for a model with external data a SHA-256
over the file's and every external data file's SHA-256.
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


from s3tok.model.versions import VERSIONS
from s3tok.modelfiles.fetch import DownloadError, fetch_verified, sha256_of, stat_identity  # noqa: F401 - DownloadError is API
from s3tok.util.fsutil import atomic_write_text

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
CONVERTED_FORMAT = 1  # bump when the converted layout changes; older entries are then rebuilt


@dataclass(frozen=True)
class OfficialModel:
    """One downloadable tokenizer: official file name, SHA-256 and mirrors, tried in order."""

    name: str
    filename: str
    sha256: str
    urls: Tuple[str, ...]


# The official files, from the version table (s3tok.model.versions).
REGISTRY: Dict[str, OfficialModel] = {v.name: OfficialModel(v.name, v.filename, v.sha256, v.urls)
                                      for v in VERSIONS.values()}


def s3tok_home() -> Path:
    """The cache root: ``$S3TOK_HOME`` or ``~/.cache/s3tok``."""
    return Path(os.environ.get("S3TOK_HOME") or Path.home() / ".cache" / "s3tok")


def onnx_cache_path(name: str, home: Optional[PathLike] = None) -> Path:
    """Where the official file of ``name`` lives in the cache (one folder per name: both v1 files share
    the file name ``speech_tokenizer_v1.onnx``)."""
    entry = REGISTRY[name]
    return Path(home or s3tok_home()) / "onnx" / name / entry.filename


def file_sha256(path: PathLike, home: Optional[PathLike] = None) -> str:
    """SHA-256 of a local file, remembered by its real path and :func:`stat_identity` so a reload does not
    rehash."""
    p = Path(path).resolve()
    st = p.stat()
    key = "|".join([str(p), *map(str, stat_identity(st))])
    memo = _read_memo(home)
    if key in memo:
        return memo[key]
    digest = sha256_of(p)
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{p}|")}
    memo[key] = digest
    _write_memo(memo, home)
    return digest


def _read_memo(home: Optional[PathLike]) -> dict:
    """``sha256.json`` in the cache: remembered digests (and external data lists); empty if unreadable."""
    try:
        memo = json.loads((Path(home or s3tok_home()) / "sha256.json").read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(memo: dict, home: Optional[PathLike]) -> None:
    path = Path(home or s3tok_home()) / "sha256.json"
    try:
        atomic_write_text(path, json.dumps(memo, indent=0, sort_keys=True))
    except OSError as e:  # a read-only cache only costs a rehash next time
        logger.debug("cannot write %s: %s", path, e)


def download_model(name: str, home: Optional[PathLike] = None, progress: bool = True,
                   timeout: float = 60.0) -> Path:
    """The verified local path of official model ``name``, downloading it when the cache lacks it.

    A cached file with the right SHA-256 is used without network; one with a wrong hash is never used.
    Mirrors are tried in order; a partial download resumes; the file appears under its final name
    only once complete and verified.
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    dest = onnx_cache_path(name, home)
    return fetch_verified(entry.urls, dest, entry.sha256, "sha256", progress=progress, timeout=timeout,
                          desc=name, hint="or pass its path to load_model / --model")


def onnx_path(path_or_name: PathLike, home: Optional[PathLike] = None, progress: bool = True) -> Path:
    """The local ONNX file of a path or an official name (downloaded if needed): the one place a model
    name becomes a file."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    if str(path_or_name) in REGISTRY:
        return download_model(str(path_or_name), home, progress)
    raise FileNotFoundError(f"{path_or_name}: no such model file, and not one of {', '.join(REGISTRY)}")


def resolve_onnx(path_or_name: PathLike, home: Optional[PathLike] = None, progress: bool = True) -> Tuple[Path, str]:
    """``(local ONNX path, its identity)`` for a file path or an official name (downloaded if needed). The
    identity is the file's SHA-256, or for a model with external data (:func:`model_sha256`) a SHA-256 that
    also covers every external data file: it keys the converted-weights cache and the job markers."""
    path = onnx_path(path_or_name, home, progress)
    name = str(path_or_name)
    return path, (REGISTRY[name].sha256 if path != Path(name) else model_sha256(path, home))


def external_locations(path: PathLike) -> List[str]:
    """The external data files an ONNX file refers to (``location`` entries, in first-use order), read from
    the graph without loading any tensor; empty for a self-contained file or one that is not ONNX."""
    import onnx
    from onnx import TensorProto, external_data_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
        tensors = external_data_helper._get_all_tensors(model)
        seen: List[str] = []
        for t in tensors:
            if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL:
                loc = next((e.value for e in t.external_data if e.key == "location"), "")
                if loc not in seen:
                    seen.append(loc)
        return seen
    except Exception:  # noqa: BLE001 - not ONNX / damaged: read_onnx names the problem later
        return []


def model_sha256(path: PathLike, home: Optional[PathLike] = None) -> str:
    """The identity of an ONNX model: the SHA-256 of the file when it is self-contained; otherwise the SHA-256
    of a text listing that SHA-256 and, for each external data file it refers to, its location and SHA-256
    (so changed external weights change the identity, and a cache never serves the old ones). The list of
    locations is remembered by the file's SHA-256 (it depends only on its content)."""
    sha = file_sha256(path, home)
    key = f"external|{sha}"
    memo = _read_memo(home)
    locations = memo.get(key)
    if not isinstance(locations, list):
        locations = external_locations(path)
        memo[key] = locations
        _write_memo(memo, home)
    if not locations:
        return sha
    folder = Path(path).resolve().parent
    lines = ["s3tok model with external data 1", f"onnx {sha}"]
    for loc in locations:
        target = (folder / loc).resolve() if loc and not os.path.isabs(loc) else None
        inside = target is not None and ".." not in Path(loc).parts and folder in target.parents
        digest = file_sha256(target, home) if inside and target.is_file() else "missing-or-refused"
        lines.append(f"{loc} {digest}")
    import hashlib

    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def converted_dir(sha256: str, home: Optional[PathLike] = None) -> Path:
    return Path(home or s3tok_home()) / "converted" / sha256


CONVERTED_FILES = ("config.json", "model.safetensors")


def _is_earlier_conversion(d: Path) -> bool:
    """An empty folder, or one holding only what :func:`save_converted` writes, its config.json ours."""
    names = {p.name for p in d.iterdir()}
    if not names:
        return True
    if not names <= set(CONVERTED_FILES) or "config.json" not in names:
        return False
    try:
        meta = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "format" in meta and "config" in meta


def save_converted(out_dir: PathLike, config_dict: dict, state_dict: dict, provenance: dict) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into a temporary folder, then rename it to ``out_dir``.
    An existing ``out_dir`` is replaced only when it is an earlier conversion (or empty); anything else is
    refused with :class:`FileExistsError`, never deleted."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and not out.is_symlink() and _is_earlier_conversion(out)):
        what = "a file" if not out.is_dir() else "a folder that is not an earlier s3tok conversion"
        raise FileExistsError(f"{out}: exists and is {what}; s3tok replaces only what it wrote itself: "
                              f"choose another output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp"))
    try:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp / "model.safetensors"))
        meta = {"format": CONVERTED_FORMAT, "config": config_dict, **provenance}
        (tmp / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        if out.exists():  # an earlier conversion (checked above): two files, or none
            for name in CONVERTED_FILES:
                (out / name).unlink(missing_ok=True)
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class BadConverted(ValueError):
    """A converted folder that cannot be trusted: unreadable JSON, a bad configuration, damaged weights."""


def read_converted(path: PathLike) -> Optional[Tuple[dict, Dict[str, "object"]]]:
    """``(config.json contents, state_dict)`` of a converted folder, or None if it is absent or of an older
    format. Raises :class:`BadConverted` naming the file and the damage when it is there but unusable."""
    from safetensors.torch import load_file

    from s3tok.model.config import S3Config
    from s3tok.model.tokenizer import weight_problems

    d = Path(path)
    cfg_path, weights = d / "config.json", d / "model.safetensors"
    if not (cfg_path.is_file() and weights.is_file()):
        return None
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadConverted(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise BadConverted(f"{cfg_path}: a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != CONVERTED_FORMAT:
        return None
    try:
        config = S3Config.from_dict(meta.get("config"))
    except (TypeError, ValueError) as e:
        raise BadConverted(f"{cfg_path}: bad model configuration: {e}") from None
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise BadConverted(f"{weights}: unreadable ({type(e).__name__}: {e})") from None
    problems = weight_problems(config, state)
    if problems:
        raise BadConverted(f"{weights}: does not fit {cfg_path}: " + " | ".join(problems))
    return meta, state


def move_aside(path: Path) -> Path:
    """Rename a damaged cache entry to ``<name>.bad-<n>`` (kept for inspection, never read again)."""
    n = 0
    while True:
        bad = path.with_name(f"{path.name}.bad-{n}")
        if not bad.exists():
            os.replace(path, bad)
            return bad
        n += 1


def is_converted_dir(path: PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def official_names() -> Sequence[str]:
    return list(REGISTRY)


# ------------------------------------------------------------------------------------------ speaker models
# CAM++ speaker embedding (CosyVoice's campplus.onnx; the same file ships with CosyVoice-300M, CosyVoice2-0.5B and
# Fun-CosyVoice3-0.5B-2512). Kept apart from REGISTRY, which lists the tokenizers.

SPEAKER_MODELS: Dict[str, OfficialModel] = {
    "campplus": OfficialModel(
        "campplus", "campplus.onnx", "a6ac6a63997761ae2997373e2ee1c47040854b4b759ea41ec48e4e42df0f4d73",
        ("https://www.modelscope.cn/models/iic/CosyVoice2-0.5B/resolve/master/campplus.onnx",
         "https://huggingface.co/FunAudioLLM/CosyVoice2-0.5B/resolve/main/campplus.onnx")),
}


def download_speaker_model(name: str, home: Optional[PathLike] = None, progress: bool = True,
                           timeout: float = 60.0) -> Path:
    """The verified local path of official speaker model ``name`` (``campplus``), downloaded when the cache
    (``onnx/<name>/<file>``) lacks it; as :func:`download_model` does for the tokenizers."""
    if name not in SPEAKER_MODELS:
        raise KeyError(f"unknown speaker model {name!r}; known: {', '.join(SPEAKER_MODELS)}")
    entry = SPEAKER_MODELS[name]
    dest = Path(home or s3tok_home()) / "onnx" / name / entry.filename
    return fetch_verified(entry.urls, dest, entry.sha256, "sha256", progress=progress, timeout=timeout,
                          desc=name, hint="or pass its path to --model")
