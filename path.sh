# Sourced by the recipes: locale, encoding and thread settings only (s3tok itself is pip-installed).
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
# One job = one process; let torch use the cores it is given (run.pl/slurm.pl set these per job).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 1)}
