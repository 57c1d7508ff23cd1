"""Downloads that resume, verify a checksum and appear under their final name only when complete."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Sequence, Tuple, Union

from tqdm import tqdm

try:
    import fcntl
except ImportError:  # not POSIX: no lock, concurrent first downloads are then the caller's to avoid
    fcntl = None

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched from any of its URLs (no network, wrong checksum everywhere, ...)."""


def file_digest(path: PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``sha256``, ``md5``, ...), read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_of(path: PathLike) -> str:
    return file_digest(path, "sha256")


def fetch_url(url: str, part: Path, timeout: float, progress: bool, desc: str) -> None:
    """Download ``url`` into ``part``, resuming from its current size with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "s3tok"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part file is already complete
            return
        raise
    with resp:
        if have and resp.status != 206:
            logger.info("%s: server ignored the resume request; starting over", url)
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        got = have
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc,
                                         disable=not progress) as bar:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                got += len(block)
                bar.update(len(block))
        if total is not None and got < total:
            raise DownloadError(f"connection closed after {got} of {total} bytes (kept {part} to resume)")


def fetch_verified(urls: Sequence[str], dest: PathLike, digest: str, algorithm: str = "sha256",
                   progress: bool = True, timeout: float = 60.0, desc: str = "", hint: str = "") -> Path:
    """``dest`` with the expected checksum, downloading it (mirrors in order) when absent or wrong.

    A file already there with the right checksum is used without network; one with a wrong checksum is
    moved aside (``.bad-<digest>``) and never used. A partial download (``dest.part``) resumes. Processes
    fetching the same ``dest`` take turns on ``dest.lock``: the first downloads, the others find the file.
    """
    dest = Path(dest)
    if verified_copy(dest, digest, algorithm):  # the common case: no write, no lock (a read-only cache works)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.with_name(dest.name + ".lock")):  # one downloader; the others wait, then verify
        return _fetch_verified_locked(urls, dest, digest, algorithm, progress, timeout, desc or dest.name, hint)


def _marker_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def stat_identity(st: os.stat_result) -> Tuple[int, int, int, int]:
    """``(size, mtime_ns, inode, ctime_ns)``: while these are unchanged, a digest taken of the file still holds.
    ctime and inode matter: ``cp -p``, ``rsync -t`` and tar restore size and mtime of another file, but no user
    can set a ctime, and writing the file moves it."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _stat_key(st: os.stat_result) -> dict:
    return dict(zip(("size", "mtime_ns", "ino", "ctime_ns"), stat_identity(st)))


def _write_marker(dest: Path, digest: str, algorithm: str) -> None:
    """Remember that ``dest`` as it is now (size, mtime, ctime, inode) has ``digest``; best effort."""
    import json

    try:
        _marker_path(dest).write_text(json.dumps({"algorithm": algorithm, "digest": digest,
                                                  **_stat_key(dest.stat())}) + "\n")
    except OSError as e:  # a read-only cache only costs a rehash next time
        logger.debug("cannot write %s: %s", _marker_path(dest), e)


def verified_copy(dest: Path, digest: str, algorithm: str = "sha256") -> bool:
    """Whether ``dest`` is there with ``digest``, without writing anything: the marker ``dest.verified``
    (written when the file was last hashed) answers when it names this digest and the file's current size,
    mtime, ctime and inode; otherwise the file is hashed once (and the marker written where possible). A wrong
    or absent file answers False (the caller then moves it aside or downloads under the lock)."""
    import json

    try:
        st = dest.stat()
    except OSError:
        return False
    if not dest.is_file():
        return False
    try:
        marker = json.loads(_marker_path(dest).read_text())
    except (OSError, ValueError):
        marker = None
    if isinstance(marker, dict) and marker == {"algorithm": algorithm, "digest": digest, **_stat_key(st)}:
        return True
    try:
        have = file_digest(dest, algorithm)
    except OSError:
        return False
    if have != digest:
        return False
    _write_marker(dest, digest, algorithm)
    return True


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An exclusive advisory lock on ``lock_path`` (created; left in place, as lock files are)."""
    with open(lock_path, "a+b") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("%s: another process is fetching this file; waiting for it", lock_path)
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fetch_verified_locked(urls: Sequence[str], dest: Path, digest: str, algorithm: str, progress: bool,
                           timeout: float, desc: str, hint: str) -> Path:
    if dest.is_file():
        have = file_digest(dest, algorithm)
        if have == digest:
            _write_marker(dest, digest, algorithm)
            return dest
        bad = dest.with_name(dest.name + f".bad-{have[:12]}")
        logger.warning("%s: %s %s is not %s; moved aside to %s and downloading again",
                       dest, algorithm, have, digest, bad)
        os.replace(dest, bad)
    part = dest.with_name(dest.name + ".part")
    errors: List[str] = []
    for url in urls:
        try:
            logger.info("downloading %s from %s", desc, url)
            fetch_url(url, part, timeout, progress, desc=desc)
        except (OSError, DownloadError, ValueError) as e:
            errors.append(f"{url}: {e}")
            logger.warning("%s: %s", url, e)
            continue
        have = file_digest(part, algorithm)
        if have != digest:
            errors.append(f"{url}: {algorithm.upper()} {have} is not the expected {digest}")
            logger.warning("%s: wrong %s %s; discarded", url, algorithm.upper(), have)
            part.unlink()
            continue
        os.replace(part, dest)
        _write_marker(dest, digest, algorithm)
        logger.info("%s: saved %s (%d bytes, %s verified)", desc, dest, dest.stat().st_size, algorithm.upper())
        return dest
    raise DownloadError(
        f"could not download {desc}:\n  " + "\n  ".join(errors)
        + f"\nWithout network, fetch {dest.name} from one of\n  " + "\n  ".join(urls)
        + f"\nand put it at {dest} ({algorithm.upper()} {digest})" + (f", {hint}" if hint else "") + ".")
