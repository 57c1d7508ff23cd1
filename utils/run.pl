#!/usr/bin/env bash
# Kaldi's run.pl, in Python: utils/run.pl [--max-jobs-run N] [--gpu N] [--num-threads N] [--rerun-failed]
#   [JOB=1:N] log/x.JOB.log command args...   (see: python3 -m s3tok.bin.run_jobs --help)
# s3tok is pip-installed, so this works from any directory. S3TOK_PYTHON picks another interpreter.
exec "${S3TOK_PYTHON:-python3}" -m s3tok.bin.run_jobs --backend local "$@"
