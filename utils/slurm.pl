#!/usr/bin/env bash
# Kaldi's slurm.pl, in Python: the jobs as one Slurm array job, with run.pl's logs, messages and exit codes.
#   utils/slurm.pl [--config conf/slurm.conf] [--gpu N] [--mem 4G] [--num-threads N] [--time T]
#     [--max-jobs-run N] [--rerun-failed] [JOB=1:N] log/x.JOB.log command args...
# Site options (partition, account, gres) go in the config (Kaldi's format; see egs/aishell/conf/slurm.conf).
# s3tok is pip-installed, so this works from any directory. S3TOK_PYTHON picks another interpreter.
exec "${S3TOK_PYTHON:-python3}" -m s3tok.bin.run_jobs --backend slurm "$@"
