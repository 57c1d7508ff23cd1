"""What every backend shares around ``Backend.run``: which jobs to run (all, or with ``--rerun-failed`` those
whose log has no success footer or records another command), and afterwards Kaldi's ``k / N failed, log is
in log/x.*.log`` and the exit status: 0 when every job succeeded, 1 when any failed, 128 + N when stopped by
signal N."""
from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from s3tok.jobs.backend import Backend, stop_on_signals
from s3tok.jobs.spec import JobSpec, log_tail, logged_command_is, succeeded

logger = logging.getLogger("s3tok.jobs.report")

TAIL_LINES = 5


def rerun_requested(flag: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """``--rerun-failed``, or ``S3TOK_RERUN_FAILED`` set to 1, true or yes."""
    return flag or environ.get("S3TOK_RERUN_FAILED", "").strip().lower() in ("1", "true", "yes")


def select_ids(spec: JobSpec, rerun_failed: bool) -> List[int]:
    """Every job id, or with ``rerun_failed`` those whose log does not end in ``# Ended (code 0)`` or whose
    header records another command than this job's (a changed option: the old success does not count)."""
    if not rerun_failed:
        return spec.ids
    ids, other = [], []
    for i in spec.ids:
        log = spec.log_path(i)
        if not succeeded(log):
            ids.append(i)
        elif not logged_command_is(log, spec.command(i)):
            ids.append(i)
            other.append(i)
    if other:
        logger.warning("job(s) %s: the log records the success of another command; run again",
                       " ".join(map(str, other)))
    logger.info("rerunning %d of %d job(s) (the others' logs end in success of this command): %s", len(ids),
                len(spec.ids), " ".join(map(str, ids)) or "none")
    return ids


def _say(prog: str, message: str) -> None:
    """A Kaldi-style line on stderr (what scripts and people grep for, so not through logging)."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def summarize(prog: str, spec: JobSpec, ran: Sequence[int], codes: Dict[int, int],
              stop_signal: Optional[int] = None) -> int:
    """Report the jobs in ``ran`` (the other ids of ``spec`` succeeded before) and return the exit status."""
    missing = [i for i in ran if i not in codes]
    if stop_signal is not None:
        name = signal.Signals(stop_signal).name
        _say(prog, f"interrupted by {name}: {len(codes)} job(s) ended or killed, {len(missing)} not started, "
                   f"log is in {spec.log_pattern()}")
        return 128 + stop_signal
    for i in missing:
        logger.error("%s: no exit code for job %d (counted as failed)", prog, i)
    failed = [i for i in ran if codes.get(i, 1) != 0]
    if not failed:
        return 0
    first = failed[0]
    _say(prog, f"job {first} failed with code {codes.get(first)}; the end of {spec.log_path(first)}:")
    for line in log_tail(spec.log_path(first), TAIL_LINES):
        print(f"  {line}", file=sys.stderr)
    if len(spec.ids) == 1:
        _say(prog, f"job failed, log is in {spec.log_pattern()}")
        if spec.name is None and "JOB" in spec.log:
            _say(prog, "probably you forgot to put JOB=1:$nj in your script.")
    else:
        _say(prog, f"{len(failed)} / {len(spec.ids)} failed, log is in {spec.log_pattern()}")
    return 1


def run_and_report(spec: JobSpec, backend: Backend, rerun_failed: bool = False) -> int:
    """Select the jobs, run them on ``backend`` (signals stop it cleanly), report; the exit status."""
    ids = select_ids(spec, rerun_requested(rerun_failed))
    if not ids:
        return 0
    with stop_on_signals(backend):
        codes = backend.run(spec.jobs(ids, backend.options.num_threads))
    return summarize(backend.prog, spec, ids, codes, backend.stop_signal)
