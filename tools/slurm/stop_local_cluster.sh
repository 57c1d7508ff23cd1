#!/usr/bin/env bash
# Stop the cluster that tools/slurm/start_local_cluster.sh started in DIR (default: the directory of
# $SLURM_CONF): cancel every job and wait for them to go (slurmstepd outlives 'scontrol shutdown'), then stop
# slurmd, slurmctld and munged by the PIDs in their pid files, never by name. DIR itself is left in place.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
prog=${0##*/}
say() { echo "$prog: $*" >&2; }
STOP_TIMEOUT_S=15

dir=${1:-$(dirname "${SLURM_CONF:?give the cluster directory, or set SLURM_CONF}")}
[ -f "$dir/slurm.conf" ] || { say "error: no cluster in $dir (no slurm.conf)"; exit 1; }
export SLURM_CONF=$dir/slurm.conf

running() {  # running PID: the process runs (a zombie is on its way out and does not count)
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, then SIGKILL after STOP_TIMEOUT_S
  local name=$1 pid deadline
  pid=$(cat "$2" 2>/dev/null) || return 0
  [ -n "$pid" ] && running "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( SECONDS + STOP_TIMEOUT_S ))
  while running "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name ($pid) ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
}

if [ -f "$dir/slurmctld.pid" ] && running "$(cat "$dir/slurmctld.pid")"; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | xargs) || jobs=""
  if [ -n "$jobs" ]; then
    say "cancelling jobs: $jobs"
    scancel $jobs || true
    deadline=$(( SECONDS + STOP_TIMEOUT_S ))
    while [ -n "$(squeue -h -o %A 2>/dev/null)" ]; do
      [ "$SECONDS" -lt "$deadline" ] || { say "warning: jobs still listed after ${STOP_TIMEOUT_S}s"; break; }
      sleep 0.2
    done
  fi
fi
stop_pid slurmd "$dir/slurmd.pid"
stop_pid slurmctld "$dir/slurmctld.pid"
stop_pid munged "$dir/munge/munged.pid"
say "stopped the cluster in $dir"
