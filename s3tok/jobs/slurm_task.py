"""One task of a slurm.pl array: ``python3 -m s3tok.jobs.slurm_task SPEC_FILE TASK_ID``.

Writes the log's header, runs the job's command with ``bash -c`` (output appended to the log), appends the
footer with the exit code and then writes that code to the status file slurm.pl polls for (atomically:
a temporary file renamed). A SIGTERM from Slurm (scancel, time limit, preemption) is passed to the command
and noted in the footer. Exits with the command's code."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from s3tok.jobs.slurm import status_path
from s3tok.jobs.spec import Job, append_footer, write_header
from s3tok.util.fsutil import atomic_write_text

logger = logging.getLogger("s3tok.jobs.slurm_task")


def load_job(spec: dict, task: int) -> Job:
    j = spec["jobs"][str(task)]
    return Job(task, j["command"], Path(j["log"]), dict(j.get("env", {})), int(j.get("threads", 1)))


def write_status(path: Path, code: int) -> None:
    """Write ``code`` to ``path`` so that a reader sees all of it or nothing."""
    atomic_write_text(path, f"{code}\n")


def run_task(spec: dict, task: int, environ: Dict[str, str]) -> int:
    """Run the task's job with its log framed as run.pl frames it; the exit code."""
    job = load_job(spec, task)
    shown = dict(job.env)
    if spec.get("gpu") and "CUDA_VISIBLE_DEVICES" in environ:
        shown["CUDA_VISIBLE_DEVICES"] = environ["CUDA_VISIBLE_DEVICES"]
    start = time.monotonic()
    write_header(job, shown)
    terminated: List[int] = []
    proc: Optional[subprocess.Popen] = None

    def on_term(signum: int, _frame: object) -> None:
        terminated.append(signum)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        with open(job.log, "ab") as out:
            proc = subprocess.Popen(["bash", "-c", job.command], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env={**environ, **job.env})
        returncode = proc.wait()
        code, note = (128 - returncode, f"signal {-returncode}") if returncode < 0 else (returncode, "")
    except OSError as e:
        with open(job.log, "a") as f:
            f.write(f"slurm_task: cannot run bash: {e}\n")
        code, note = 127, ""
    if terminated:
        note = f"killed by Slurm with {signal.Signals(terminated[0]).name} (scancel, time limit or preemption)"
    append_footer(job, code, time.monotonic() - start, note)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python3 -m s3tok.jobs.slurm_task SPEC_FILE TASK_ID", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    task = int(args[1])
    os.chdir(spec["cwd"])
    code = run_task(spec, task, dict(os.environ))
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "0")
    write_status(status_path(Path(spec["status_dir"]), spec["name"], array_job, task), code)
    return code if 0 <= code < 256 else 1


if __name__ == "__main__":
    sys.exit(main())
