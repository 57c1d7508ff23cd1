"""Kaldi's ``run.pl`` job contract: ``[options] [JOB=1:N] log/x.JOB.log command args...``.

The command words are joined (a word with whitespace is quoted, so pass a pipe as its own word ``"|"``) and
run by ``bash -c``, with the job name (``JOB``, or ``TASK`` in ``TASK=1:N``) replaced by the job number in
the log path and the command. Each log gets a ``# command`` / ``# Started at`` header and a
``# Accounting`` / ``# Ended (code N)`` footer. Exit status: 0 all jobs succeeded; 1 some failed
(``k / N failed, log is in log/x.*.log``); 2 nothing run (bad arguments, no GPU); 128 + N stopped by signal N.
Options are ``--name value`` or ``--name=value`` and may come before or after ``JOB=1:N``; options a backend
does not use (``--mem``, ``--time``, ``--config``, ...) are accepted and ignored."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Type

from s3tok.jobs.backend import Backend, JobOptions
from s3tok.jobs.local import LocalBackend
from s3tok.jobs.report import run_and_report
from s3tok.jobs.slurm import SlurmBackend
from s3tok.jobs.spec import JobsError, JobSpec, parse_range
from s3tok.util.logging_setup import setup_logging

logger = logging.getLogger("s3tok.run_jobs")

BACKENDS: Dict[str, Type[Backend]] = {"local": LocalBackend, "slurm": SlurmBackend}
KNOWN = {"backend", "max-jobs-run", "gpu", "num-threads"}
FLAGS = {"rerun-failed"}
ALIASES = {"tc": "max-jobs-run"}  # GridEngine's spelling, accepted by Kaldi's run.pl


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="utils/run.pl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=sorted(BACKENDS), default="local", help="where jobs run")
    p.add_argument("--max-jobs-run", type=int, default=None,
                   help="jobs at once (default: local, the CPUs this process may use, as Kaldi's run.pl)")
    p.add_argument("--gpu", type=int, default=0, help="GPUs per job (CUDA_VISIBLE_DEVICES set per job)")
    p.add_argument("--num-threads", type=int, default=None, help="sets OMP_NUM_THREADS, MKL_NUM_THREADS per job")
    p.add_argument("--rerun-failed", action="store_true",
                   help="run only the jobs whose log lacks '# Ended (code 0)' (also: S3TOK_RERUN_FAILED=1)")
    p.add_argument("job_line", nargs=argparse.REMAINDER, metavar="[JOB=1:N] log command ...")
    return p


def _option(tok: str, rest: List[str], known: List[str], extra: Dict[str, str]) -> None:
    """Consume one option (``tok``, already taken off ``rest``) and the values it takes from ``rest``."""
    name, eq, value = tok.lstrip("-").partition("=")
    name = ALIASES.get(name.replace("_", "-"), name.replace("_", "-"))
    if name in FLAGS:
        if not eq and rest and rest[0].lower() in ("true", "false"):
            eq, value = "=", rest.pop(0)
        if not eq or value.lower() in ("true", "1", "yes"):
            known.append(f"--{name}")
        return
    if name == "V":  # GridEngine's -V takes no value
        return
    if not eq:
        if not rest:
            raise JobsError(f"option {tok} needs a value")
        value = rest.pop(0)
    if name == "pe" and rest:  # GridEngine's -pe smp 4
        value += " " + rest.pop(0)
    if name in KNOWN:
        known += [f"--{name}", value]
    else:
        extra[name] = value


def split_argv(argv: Sequence[str]) -> Tuple[List[str], Dict[str, str], Optional[str], List[str]]:
    """Kaldi's order: options and at most one ``JOB=1:N``, in any order, then the log and the command.
    Returns (known option tokens for :func:`get_parser`, other options, the range or None, the rest)."""
    known: List[str] = []
    extra: Dict[str, str] = {}
    job_range = None
    rest = list(argv)
    while rest:
        tok = rest[0]
        if tok in ("-h", "--help"):
            known.append(rest.pop(0))
        elif tok.startswith("-") and len(rest) >= 2:
            _option(rest.pop(0), rest, known, extra)
        elif job_range is None and parse_range(tok) is not None:
            job_range = rest.pop(0)
        else:
            if job_range is None and "=" in tok and ":" in tok.split("=", 1)[1]:
                logger.warning("suspicious first argument (not a JOB=1:N range): %s", tok)
            break
    return known, extra, job_range, rest


def main(argv: Optional[Sequence[str]] = None) -> int:
    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_parser()
    try:
        known, extra, job_range, rest = split_argv(argv)
        args = parser.parse_args(known)
    except SystemExit as e:  # --help, or a bad option value
        return int(e.code or 0)
    except JobsError as e:
        prog = "slurm.pl" if "--backend" in argv and argv[argv.index("--backend") + 1:][:1] == ["slurm"] else "run.pl"
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    backend_cls = BACKENDS[args.backend]
    if len(rest) < 2:
        print(f"{backend_cls.prog}: usage: {backend_cls.prog} [options] [JOB=1:N] log-file command-line "
              f"arguments...", file=sys.stderr)
        return 2
    try:
        name, start, end = parse_range(job_range) if job_range else (None, 1, 1)
        spec = JobSpec(log=rest[0], words=rest[1:], name=name, start=start, end=end)
        backend = backend_cls(JobOptions(args.max_jobs_run, args.gpu, args.num_threads, extra))
        return run_and_report(spec, backend, args.rerun_failed)
    except JobsError as e:
        print(f"{backend_cls.prog}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
