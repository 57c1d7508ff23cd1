"""run.pl's backend: each job is ``bash -c command`` in its own process group on this machine, at most
``max_jobs_run`` at a time (default: the CPUs this process may use, as Kaldi's run.pl does), every process
waited on and its exit code kept. ``--gpu N`` gives each job N of the visible GPUs in
``CUDA_VISIBLE_DEVICES`` and runs no more jobs at once than there are such groups."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Dict, List, Mapping, Optional, Sequence

from s3tok.jobs.backend import Backend, JobOptions
from s3tok.jobs.spec import Job, JobsError, append_footer, write_header

logger = logging.getLogger("s3tok.jobs.local")

POLL_S = 0.05
KILL_GRACE_S = 5.0


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus(environ: Mapping[str, str] = os.environ) -> List[str]:
    """The GPU ids jobs may use: ``CUDA_VISIBLE_DEVICES`` when set (empty or ``-1``: none), else one id per
    ``GPU`` line of ``nvidia-smi -L``, else none."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [g.strip() for g in environ["CUDA_VISIBLE_DEVICES"].split(",")]
        return list(takewhile(lambda g: g and not g.startswith("-"), ids))  # CUDA stops at an invalid id
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i in range(sum(line.startswith("GPU ") for line in out.splitlines()))]


@dataclass
class _Running:
    job: Job
    proc: Optional[subprocess.Popen]  # None: bash could not be started
    gpus: List[str] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def poll(self) -> Optional[int]:
        return 127 if self.proc is None else self.proc.poll()

    def exited(self) -> bool:
        """Whether the process has ended, without reaping it (its pid, the group id, stays reserved)."""
        if self.proc is None or self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _code(returncode: int) -> int:
    """A shell-style exit code: 128 + N for a process ended by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _footer(r: _Running, code: int, note: str) -> None:
    try:
        append_footer(r.job, code, time.monotonic() - r.start, note)
    except OSError as e:
        logger.error("run.pl: job %d: cannot write the footer of %s: %s", r.job.id, r.job.log, e)


class LocalBackend(Backend):
    """Kaldi's run.pl: jobs as local subprocesses."""

    prog = "run.pl"

    def __init__(self, options: JobOptions) -> None:
        super().__init__(options)
        for name, value in options.extra.items():
            logger.debug("run.pl: ignoring option --%s %s", name, value)
        if options.max_jobs_run is not None and options.max_jobs_run <= 0:
            raise JobsError(f"--max-jobs-run must be positive, got {options.max_jobs_run}")
        self.gpu_groups = self._gpu_groups(options.gpu)

    @staticmethod
    def _gpu_groups(per_job: int) -> List[List[str]]:
        if per_job <= 0:
            return []
        gpus = visible_gpus()
        if not gpus:
            raise JobsError(f"--gpu {per_job}: no GPU (CUDA_VISIBLE_DEVICES is empty, or unset and "
                            f"'nvidia-smi -L' lists none)")
        if len(gpus) < per_job:
            raise JobsError(f"--gpu {per_job}: only {len(gpus)} GPU(s) visible ({','.join(gpus)})")
        return [gpus[i:i + per_job] for i in range(0, len(gpus) - per_job + 1, per_job)]

    def slots(self, njobs: int) -> int:
        """How many jobs run at once."""
        limit = self.options.max_jobs_run or cpu_count()
        if self.gpu_groups:
            limit = min(limit, len(self.gpu_groups))
        return max(1, min(limit, njobs))

    def run(self, jobs: Sequence[Job]) -> Dict[int, int]:
        pending = deque(jobs)
        running: List[_Running] = []
        codes: Dict[int, int] = {}
        free_gpus = deque(self.gpu_groups)
        slots = self.slots(len(jobs))
        logger.debug("run.pl: %d job(s), %d at a time", len(jobs), slots)
        while (pending or running) and self.stop_signal is None:
            while pending and len(running) < slots and self.stop_signal is None:
                running.append(self._start(pending.popleft(), free_gpus.popleft() if free_gpus else []))
            done = [r for r in running if r.poll() is not None]
            for r in done:
                running.remove(r)
                if r.gpus:
                    free_gpus.append(r.gpus)
                codes[r.job.id] = self._finish(r)
            if not done:
                time.sleep(POLL_S)
        if running:
            codes.update(self._kill(running))
        return codes

    def _start(self, job: Job, gpus: List[str]) -> _Running:
        env = dict(job.env)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        try:
            write_header(job, env)
            with open(job.log, "ab") as out:
                proc = subprocess.Popen(["bash", "-c", job.command], stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env={**os.environ, **env},
                                        start_new_session=True)
        except OSError as e:
            logger.error("run.pl: job %d (log %s) could not start: %s", job.id, job.log, e)
            proc = None
        logger.debug("run.pl: job %d started (pid %s)", job.id, proc.pid if proc else None)
        return _Running(job, proc, gpus)

    def _finish(self, r: _Running) -> int:
        returncode = r.poll()
        assert returncode is not None
        code = _code(returncode)
        _footer(r, code, f"signal {-returncode}" if returncode < 0 else "")
        logger.debug("run.pl: job %d ended with code %d", r.job.id, code)
        return code

    def _kill(self, running: List[_Running]) -> Dict[int, int]:
        """Stop the running jobs' process groups (SIGTERM, then SIGKILL after a grace time or a second
        signal), wait on each, and footer each log as killed."""
        assert self.stop_signal is not None
        name = signal.Signals(self.stop_signal).name
        for r in running:
            r.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        while not all(r.exited() for r in running) and time.monotonic() < deadline and self.stop_count < 2:
            time.sleep(POLL_S)
        codes = {}
        for r in running:
            r.signal_group(signal.SIGKILL)  # stragglers of the group; the leader is at most a zombie here
            returncode = 127 if r.proc is None else r.proc.wait()
            codes[r.job.id] = _code(returncode) or 128 + self.stop_signal
            _footer(r, codes[r.job.id], f"killed by run.pl on {name}")
        return codes
