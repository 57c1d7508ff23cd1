"""The one thing a backend does: run a set of jobs and give back each one's exit code. Everything around it
(which jobs, logs' header and footer format, the failure count, the exit status) is shared; see
:func:`s3tok.jobs.report.run_and_report`."""
from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional, Sequence

from s3tok.jobs.spec import Job

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class JobOptions:
    """Kaldi's ``$cmd`` options. ``extra`` holds the ones a backend may use or ignore (``mem``, ``time``,
    ``config``, ...), by name without dashes."""

    max_jobs_run: Optional[int] = None
    gpu: int = 0
    num_threads: Optional[int] = None
    extra: Dict[str, str] = field(default_factory=dict)


class Backend(ABC):
    """Runs jobs somewhere. ``run`` must write each job's log with :func:`~s3tok.jobs.spec.write_header`,
    the job's stdout and stderr, and :func:`~s3tok.jobs.spec.append_footer`, wait on every job, and return
    ``{job id: exit code}`` for every job it started (0 is success). When ``stop_signal`` becomes set (see
    :meth:`interrupt`) it must stop what runs, give those jobs a footer saying so, start nothing more, and
    return; the jobs it never started are left out of the result."""

    prog = "jobs"  # the name in Kaldi-style messages: run.pl, slurm.pl

    def __init__(self, options: JobOptions) -> None:
        self.options = options
        self.stop_signal: Optional[int] = None
        self.stop_count = 0

    def interrupt(self, signum: int) -> None:
        """Ask ``run`` to stop (called from a signal handler; a second call means: stop harder)."""
        self.stop_signal = self.stop_signal or signum
        self.stop_count += 1

    @abstractmethod
    def run(self, jobs: Sequence[Job]) -> Dict[int, int]:
        """Run ``jobs`` to completion (or until interrupted); ``{job id: exit code}``."""


@contextmanager
def stop_on_signals(backend: Backend) -> Iterator[None]:
    """While inside, SIGINT, SIGTERM and SIGHUP call ``backend.interrupt`` instead of ending the process."""
    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, lambda signum, _frame: backend.interrupt(signum))
        except ValueError:  # not the main thread: leave signals alone
            break
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
