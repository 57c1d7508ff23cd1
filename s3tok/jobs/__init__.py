"""Kaldi's job runners (``utils/run.pl``, ``utils/slurm.pl``): a job line ``[JOB=1:N] log cmd...``
(:mod:`.spec`), a backend that runs jobs and returns their exit codes (:mod:`.backend`, :mod:`.local`,
:mod:`.slurm`), and
the shared rerun selection, failure count and exit status (:mod:`.report`)."""
from s3tok.jobs.backend import Backend, JobOptions
from s3tok.jobs.local import LocalBackend
from s3tok.jobs.report import run_and_report
from s3tok.jobs.spec import Job, JobSpec, JobsError, parse_range, succeeded

__all__ = ["Backend", "Job", "JobOptions", "JobSpec", "JobsError", "LocalBackend", "parse_range",
           "run_and_report", "succeeded"]
