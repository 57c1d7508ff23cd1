"""slurm.pl's backend: the jobs go to Slurm as ONE array job (``sbatch --array=<ids>%<max-jobs-run>``),
polled with ``squeue`` (no ``--wait``, so signals are handled here, and no ``sacct``, which many sites lack).

Each array task runs :mod:`s3tok.jobs.slurm_task`, which writes the log's header, runs the command with
``bash -c``, appends the footer and writes the exit code to a status file ``<logdir>/.slurm/<name>.<array job
id>.<task id>.status``. A task that leaves ``squeue`` without a status file (cancelled, time limit, out of
memory, node failure) counts as failed with code 1, and its log gets a footer saying so, after the Slurm
output of the task (``.slurm/<name>.<array job id>.<task id>.out``). Site options (partition, account,
gres) come from a Kaldi-style config (``--config conf/slurm.conf``, see :mod:`s3tok.jobs.slurm_config`)."""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

from s3tok.jobs.backend import Backend, JobOptions
from s3tok.jobs.slurm_config import SlurmConfig
from s3tok.jobs.spec import Job, JobsError, append_footer

logger = logging.getLogger("s3tok.jobs.slurm")

POLL_S = 0.5
STATUS_GRACE_S = 10.0  # a task gone from squeue may still have its status file on its way (NFS caches)
CANCEL_WAIT_S = 120.0
SLURM_TIMEOUT_S = 60
STARTED_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
ENDED_STATES = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE", "OUT_OF_MEMORY"}


def array_ids(ids: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3,5"``."""
    parts: List[str] = []
    run: List[int] = []
    for i in sorted(set(ids)):
        if run and i != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def parse_task_ids(text: str) -> List[int]:
    """squeue's ``%K``: ``"3"``, or for tasks it lists together ``"[2-4,7%2]"``."""
    text = text.strip("[]").split("%", 1)[0]
    out: List[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += range(int(lo), int(hi or lo) + 1)
    return out


def job_name(jobs: Sequence[Job]) -> str:
    """A name for the array from the first log: ``log/mel.3.log`` -> ``mel``."""
    job = jobs[0]
    stem = job.log.name[:-4] if job.log.name.endswith(".log") else job.log.name
    words = [w for w in stem.split(".") if w != str(job.id)]
    return re.sub(r"[^\w.-]", "_", ".".join(words)) or "s3tok"


def status_path(status_dir: Path, name: str, array_job: str, task: int, suffix: str = "status") -> Path:
    """Where task ``task`` of array job ``array_job`` writes its exit code (or Slurm its output: ``out``)."""
    return status_dir / f"{name}.{array_job}.{task}.{suffix}"


def read_status(path: Path) -> Optional[int]:
    """The exit code a task wrote, or None while there is none."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _Array:
    """One submitted array job and what is known of its tasks."""

    job_id: str
    jobs: Dict[int, Job]
    status_dir: Path
    name: str
    start: float = field(default_factory=time.monotonic)
    codes: Dict[int, int] = field(default_factory=dict)
    started: Set[int] = field(default_factory=set)
    gone_since: Dict[int, float] = field(default_factory=dict)
    files: List[Path] = field(default_factory=list)  # the task spec and script, removed at the end

    def path(self, task: int, suffix: str = "status") -> Path:
        return status_path(self.status_dir, self.name, self.job_id, task, suffix)

    def open_tasks(self) -> List[int]:
        return [i for i in self.jobs if i not in self.codes]

    def collect(self) -> None:
        """Take in the status files written since the last call."""
        for i in self.open_tasks():
            code = read_status(self.path(i))
            if code is not None:
                self.codes[i] = code
                self.started.add(i)

    def was_started(self, task: int) -> bool:
        """Seen running, or Slurm created its output file (it does when the task starts)."""
        return task in self.started or self.path(task, "out").exists()


class SlurmBackend(Backend):
    """Kaldi's slurm.pl: the jobs as one Slurm array job."""

    prog = "slurm.pl"

    def __init__(self, options: JobOptions) -> None:
        super().__init__(options)
        extra = dict(options.extra)
        self.config = SlurmConfig.load(extra.pop("config", None))
        if options.max_jobs_run is not None and options.max_jobs_run <= 0:
            raise JobsError(f"--max-jobs-run must be positive, got {options.max_jobs_run}")
        given = dict(extra)
        if options.num_threads is not None:
            given["num_threads"] = str(options.num_threads)
        if options.gpu:
            given["gpu"] = str(options.gpu)
        self.sbatch = self.config.command + self.config.sbatch_options(given)
        default_gpu = self.config.defaults.get("gpu", "0")
        self.gpu = options.gpu or (int(default_gpu) if default_gpu.isdigit() else 0)
        self._warned = 0.0
        bindir = os.path.dirname(self.config.command[0])  # squeue and scancel beside a configured sbatch
        self.squeue = os.path.join(bindir, "squeue")
        self.scancel = os.path.join(bindir, "scancel")

    # -- Slurm commands -----------------------------------------------------------------------------------

    def _call(self, argv: List[str]) -> subprocess.CompletedProcess:
        """Run a Slurm client in its own session (a Ctrl-C meant for slurm.pl must not cut it short)."""
        return subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, start_new_session=True)

    def _submit(self, argv: List[str]) -> str:
        try:
            r = self._call(argv)
        except (OSError, subprocess.SubprocessError) as e:
            raise JobsError(f"cannot run {argv[0]}: {e}") from None
        if r.returncode != 0:
            raise JobsError(f"{argv[0]} failed (code {r.returncode}): {r.stderr.strip()}")
        job_id = r.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise JobsError(f"unexpected output of sbatch --parsable: {r.stdout.strip()!r}")
        return job_id

    def _tasks(self, job_id: str) -> Optional[Dict[int, str]]:
        """``{task id: state}`` of the array's tasks squeue lists, or None when squeue did not answer."""
        argv = [self.squeue, "-h", "-r", "-j", job_id, "-o", "%K %T"]
        try:
            r = self._call(argv)
        except (OSError, subprocess.SubprocessError) as e:
            self._warn(f"{argv[0]}: {e}")
            return None
        if r.returncode != 0:
            if "Invalid job id" in r.stderr:  # purged: none of its tasks is left
                return {}
            self._warn(f"squeue failed (code {r.returncode}): {r.stderr.strip()}")
            return None
        tasks: Dict[int, str] = {}
        for line in r.stdout.splitlines():
            ids, _, state = line.strip().partition(" ")
            if state.strip() not in ENDED_STATES:
                for i in parse_task_ids(ids):
                    tasks[i] = state.strip()
        return tasks

    def _warn(self, message: str) -> None:
        """A warning about squeue, at most one a minute (slurm.pl keeps polling: the controller may be busy)."""
        if time.monotonic() - self._warned >= 60:
            self._warned = time.monotonic()
            logger.warning("slurm.pl: %s (still polling)", message)

    def _cancel(self, job_id: str) -> None:
        try:
            r = self._call([self.scancel, job_id])
            if r.returncode != 0:
                logger.error("slurm.pl: scancel %s failed: %s", job_id, r.stderr.strip())
        except (OSError, subprocess.SubprocessError) as e:
            logger.error("slurm.pl: scancel %s: %s", job_id, e)

    # -- the run ------------------------------------------------------------------------------------------

    def run(self, jobs: Sequence[Job]) -> Dict[int, int]:
        if not jobs or self.stop_signal is not None:
            return {}
        array = self._start(jobs)
        try:
            self._poll(array)
            if self.stop_signal is not None:
                self._stop(array)
        finally:
            self._cleanup(array)
        return array.codes

    def _start(self, jobs: Sequence[Job]) -> _Array:
        """Write the task spec and script, create the log directories, submit; the submitted array."""
        logs = [job.log.resolve() for job in jobs]
        status_dir = Path(os.path.commonpath([str(log.parent) for log in logs])) / ".slurm"
        name = job_name(jobs)
        token = f"{name}.{os.getpid()}.{secrets.token_hex(3)}"
        spec = {"cwd": os.getcwd(), "status_dir": str(status_dir), "name": name, "gpu": self.gpu,
                "jobs": {str(j.id): {"command": j.command, "log": str(log), "env": j.env, "threads": j.threads}
                         for j, log in zip(jobs, logs)}}
        spec_file, script = status_dir / f"{token}.json", status_dir / f"{token}.sh"
        try:
            for d in {log.parent for log in logs} | {status_dir}:
                d.mkdir(parents=True, exist_ok=True)
            spec_file.write_text(json.dumps(spec, indent=1))
            script.write_text("#!/bin/bash\n"
                              f"exec {shlex.quote(sys.executable)} -m s3tok.jobs.slurm_task "
                              f"{shlex.quote(str(spec_file))} \"$SLURM_ARRAY_TASK_ID\"\n")
        except OSError as e:
            raise JobsError(f"cannot write the task files in {status_dir}: {e}") from None
        limit = f"%{self.options.max_jobs_run}" if self.options.max_jobs_run else ""
        out = str(status_dir).replace("%", "%%") + f"/{name}.%A.%a.out"
        argv = self.sbatch + ["--parsable", f"--job-name={name}", f"--array={array_ids([j.id for j in jobs])}{limit}",
                              f"--output={out}", f"--chdir={os.getcwd()}", str(script)]
        logger.debug("slurm.pl: %s", " ".join(argv))
        try:
            job_id = self._submit(argv)
        except JobsError:
            _unlink(spec_file, script)
            raise
        logger.info("slurm.pl: %d task(s) submitted as Slurm job %s", len(jobs), job_id)
        return _Array(job_id, {j.id: j for j in jobs}, status_dir, name, files=[spec_file, script])

    def _poll(self, array: _Array) -> None:
        """Until every task has a code or a stop is asked for: squeue, then the status files (in that order,
        so a task missing from squeue has written its status file before, if it ever will)."""
        while array.open_tasks() and self.stop_signal is None:
            tasks = self._tasks(array.job_id)
            array.collect()
            if tasks is not None:
                array.started |= {i for i, state in tasks.items() if state in STARTED_STATES}
                now = time.monotonic()
                for i in array.open_tasks():
                    if i in tasks:
                        array.gone_since.pop(i, None)
                    elif now - array.gone_since.setdefault(i, now) >= STATUS_GRACE_S:
                        self._lost(array, i)
            if array.open_tasks():
                self._sleep(POLL_S)

    def _lost(self, array: _Array, task: int) -> None:
        """A task that left squeue without a status file: failed, code 1."""
        note = (f"no exit status from Slurm task {array.job_id}_{task} (cancelled, time limit, out of memory, "
                f"node failure?)")
        logger.error("slurm.pl: job %d: %s", task, note)
        array.codes[task] = 1
        self._footer(array, task, 1, note)

    def _stop(self, array: _Array) -> None:
        """scancel the array, wait until squeue lists none of its tasks, footer the killed ones."""
        assert self.stop_signal is not None
        sig = self.stop_signal
        name = signal.Signals(sig).name
        logger.info("slurm.pl: %s: cancelling Slurm job %s", name, array.job_id)
        self._cancel(array.job_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline and self.stop_count < 2:
            tasks = self._tasks(array.job_id)
            if tasks is not None:
                array.started |= {i for i, state in tasks.items() if state in STARTED_STATES}
                if not tasks:
                    break
            self._sleep(POLL_S)
        else:
            logger.error("slurm.pl: Slurm job %s may still have tasks (not waiting longer)", array.job_id)
        array.collect()
        for i in array.open_tasks():
            if array.was_started(i):
                array.codes[i] = 128 + sig
                self._footer(array, i, 128 + sig, f"killed by slurm.pl on {name}")

    def _footer(self, array: _Array, task: int, code: int, note: str) -> None:
        """Append the task's Slurm output (what ran outside the log), then the footer."""
        job = array.jobs[task]
        try:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            out = array.path(task, "out")
            text = out.read_text(errors="replace") if out.is_file() else ""
            if text:
                with open(job.log, "a") as f:
                    f.write(text if text.endswith("\n") else text + "\n")
            append_footer(job, code, time.monotonic() - array.start, note)
        except OSError as e:
            logger.error("slurm.pl: job %d: cannot write the footer of %s: %s", task, job.log, e)

    def _cleanup(self, array: _Array) -> None:
        for i in array.jobs:
            _unlink(array.path(i), array.path(i, "out"))
        _unlink(*array.files)

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early on a signal."""
        deadline, count = time.monotonic() + seconds, self.stop_count
        while self.stop_count == count and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _unlink(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass
