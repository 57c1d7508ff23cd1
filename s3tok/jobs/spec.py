"""What a Kaldi job line means, for every backend: the ``JOB=1:N`` range, ``JOB`` substituted in the log
path and the command, the command's quoting, and the log header and footer (with the success test that
``--rerun-failed`` uses)."""
from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

RANGE_RE = re.compile(r"^([A-Za-z_]\w*)=(\d+):(\d+)$")  # JOB=1:4
SINGLE_RE = re.compile(r"^([A-Za-z_]\w*)=(\d+)$")  # JOB=3
SUCCESS_RE = re.compile(r"^# Ended \(code 0\) at ")
FRAME_RE = re.compile(r"^#( Started at | Running on | Environment: | Accounting: | Ended \(|$)")
TAIL_BYTES = 4096


class JobsError(Exception):
    """A job line that cannot be run (bad range, no GPU, ...): nothing was started."""


def parse_range(arg: str) -> Optional[Tuple[str, int, int]]:
    """``"JOB=1:4"`` -> ``("JOB", 1, 4)``, ``"JOB=3"`` -> ``("JOB", 3, 3)``; ``None`` if ``arg`` is no range."""
    m = RANGE_RE.match(arg) or SINGLE_RE.match(arg)
    if m is None:
        return None
    name, start = m.group(1), int(m.group(2))
    end = int(m.group(3)) if m.re is RANGE_RE else start
    if start > end:
        raise JobsError(f"invalid job range {arg}")
    if start <= 0:
        raise JobsError(f"invalid job range {arg}, start must be strictly positive")
    return name, start, end


def quote_words(words: Sequence[str]) -> str:
    """Join command words as Kaldi's run.pl does: a word without whitespace as is (so ``"|"`` or ``">"`` act
    in bash), else in double quotes, or single quotes if it holds a double quote."""
    out = []
    for w in words:
        if re.fullmatch(r"\S+", w):
            out.append(w)
        elif '"' in w:
            out.append(f"'{w}'")
        else:
            out.append(f'"{w}"')
    return " ".join(out)


@dataclass
class Job:
    """One job as a backend runs it: ``bash -c command``, output appended to ``log``, ``env`` added."""

    id: int
    command: str
    log: Path
    env: Dict[str, str] = field(default_factory=dict)
    threads: int = 1


@dataclass
class JobSpec:
    """``[JOB=1:N] log cmd...``: the range (``name`` None for the single-job form), log template and command."""

    log: str
    words: List[str]
    name: Optional[str] = None
    start: int = 1
    end: int = 1

    def __post_init__(self) -> None:
        if not self.words:
            raise JobsError("no command given after the log file")
        if self.name and self.end > self.start and self.name not in self.log:
            raise JobsError(f"you are trying to run a parallel job but you are putting the output into just one "
                            f"log file ({self.log})")

    @property
    def ids(self) -> List[int]:
        return list(range(self.start, self.end + 1))

    def _sub(self, text: str, value: str) -> str:
        return text.replace(self.name, value) if self.name else text

    def log_path(self, job_id: int) -> Path:
        return Path(self._sub(self.log, str(job_id)))

    def log_pattern(self) -> str:
        """The log path with the job name as ``*`` (``log/x.*.log``), or the one log of a single job."""
        if self.name and self.end > self.start:
            return self._sub(self.log, "*")
        return str(self.log_path(self.start))

    def command(self, job_id: int) -> str:
        return quote_words([self._sub(w, str(job_id)) for w in self.words])

    def jobs(self, ids: Sequence[int], num_threads: Optional[int] = None) -> List[Job]:
        """The :class:`Job` of each id; ``num_threads`` sets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``."""
        env = {"OMP_NUM_THREADS": str(num_threads), "MKL_NUM_THREADS": str(num_threads)} if num_threads else {}
        return [Job(i, self.command(i), self.log_path(i), dict(env), num_threads or 1) for i in ids]


def date_now() -> str:
    """The time as ``date`` prints it in the C locale."""
    return time.strftime("%a %b %e %H:%M:%S %Z %Y")


def header(job: Job, env: Optional[Mapping[str, str]] = None) -> str:
    """The lines a log starts with: the command, start time, host and the variables the job was given."""
    lines = [f"# {job.command}", f"# Started at {date_now()}", f"# Running on {socket.gethostname()}"]
    if env:
        lines.append("# Environment: " + " ".join(f"{k}={v}" for k, v in sorted(env.items())))
    return "\n".join(lines + ["#"]) + "\n"


def footer(code: int, elapsed: float, threads: int = 1, note: str = "") -> str:
    """The lines a log ends with; ``# Ended (code 0)`` is the success mark ``note`` must not appear with."""
    secs = int(round(elapsed))
    status = f"code {code}; {note}" if note else f"code {code}"
    return (f"# Accounting: time={secs} threads={threads}\n"
            f"# Ended ({status}) at {date_now()}, elapsed time {secs} seconds\n")


def write_header(job: Job, env: Optional[Mapping[str, str]] = None) -> None:
    """Create the log's directory and start the log afresh with :func:`header`."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    job.log.write_text(header(job, env))


def append_footer(job: Job, code: int, elapsed: float, note: str = "") -> None:
    with open(job.log, "a") as f:
        f.write(footer(code, elapsed, job.threads, note))


def _tail(log: Path) -> Tuple[List[str], bool]:
    """The lines of the last ``TAIL_BYTES`` of ``log`` and whether they start at its first byte."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            start = max(0, f.tell() - TAIL_BYTES)
            f.seek(start)
            return f.read().decode("utf-8", "replace").splitlines(), start == 0
    except OSError:
        return [], False


def succeeded(log: Path, command: Optional[str] = None) -> bool:
    """Whether ``log`` ends with a success footer (its last non-empty line is ``# Ended (code 0) at ...``)
    and, when ``command`` is given, its header records that same command (``# <command>`` first): a log of
    another command's success does not make this job done."""
    lines = [line for line in _tail(log)[0] if line.strip()]
    if not lines or SUCCESS_RE.match(lines[-1]) is None:
        return False
    return command is None or logged_command_is(log, command)


def logged_command_is(log: Path, command: str) -> bool:
    """Whether ``log`` starts with the header line of ``command`` (:func:`header`'s ``# <command>``)."""
    want = f"# {command}\n".encode("utf-8", "surrogateescape")
    try:
        with open(log, "rb") as f:
            return f.read(len(want)) == want
    except OSError:
        return False


def log_tail(log: Path, n: int = 10) -> List[str]:
    """The last ``n`` lines of a log's job output, without the header and footer lines."""
    lines, whole = _tail(log)
    if whole and lines:
        lines = lines[1:]  # the command line
    return [line for line in lines if not FRAME_RE.match(line)][-n:]
