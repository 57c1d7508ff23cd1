#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for testing utils/slurm.pl. No systemd: the daemons run from
# here, with their own munge key and socket, config, state and logs all under DIR (default: a new temp dir).
#
#   eval "$(tools/slurm/start_local_cluster.sh [DIR])"     # prints: export SLURM_CONF=DIR/slurm.conf
#   sbatch --wrap hostname; sinfo; squeue
#   tools/slurm/stop_local_cluster.sh DIR                   # cancels the jobs, stops the daemons by PID
#
# Installs Debian's slurmctld slurmd slurm-client munge when missing (needs root). The node advertises
# $S3TOK_SLURM_CPUS CPUs (default 8, whatever the machine has) so several jobs run at once on a small box.
# Exit status: 0 up (or already up in DIR), 1 it did not come up (see DIR/log), 3 the packages are missing
# and cannot be installed (not root, or no apt-get).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
prog=${0##*/}
say() { echo "$prog: $*" >&2; }
die() { say "error: $1"; exit "${2:-1}"; }

PACKAGES=(slurmctld slurmd slurm-client munge)
COMMANDS=(slurmctld slurmd sbatch squeue scancel sinfo scontrol munged mungekey)
CPUS=${S3TOK_SLURM_CPUS:-8}
MEM_MB=${S3TOK_SLURM_MEM_MB:-$(( CPUS * 1024 ))}
START_TIMEOUT_S=20

missing_commands() {
  local c
  for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null 2>&1 || echo "$c"; done
}

install_packages() {
  [ -z "$(missing_commands)" ] && return 0
  [ "$(id -u)" = 0 ] || die "Slurm is not installed ($(missing_commands | xargs)) and this is not root" 3
  command -v apt-get >/dev/null 2>&1 || die "Slurm is not installed and there is no apt-get" 3
  say "installing ${PACKAGES[*]}"
  local policy=/usr/sbin/policy-rc.d own_policy=false
  if [ ! -e "$policy" ]; then   # keep the packages from starting system-wide daemons while installing
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=true
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}")
  local ok=true
  "${apt[@]}" >&2 || { apt-get update >&2 && "${apt[@]}" >&2; } || ok=false
  if $own_policy; then rm -f "$policy"; fi
  $ok || die "apt-get install ${PACKAGES[*]} failed" 3
  [ -z "$(missing_commands)" ] || die "still missing after install: $(missing_commands | xargs)" 3
}

alive() {  # alive PIDFILE: the process in it runs (a zombie does not count)
  local pid state
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

free_ports() {  # two free TCP ports on 127.0.0.1
  python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_for() {  # wait_for WHAT COMMAND...: retry COMMAND until it succeeds, at most START_TIMEOUT_S
  local what=$1 deadline=$(( SECONDS + START_TIMEOUT_S )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after ${START_TIMEOUT_S}s; logs in $dir/log and $dir/munge"
    sleep 0.2
  done
}

probe_done() { [ -z "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; }
node_idle() { [ "$(sinfo -h -N -n "$node" -o %t 2>/dev/null)" = idle ]; }

write_config() {
  local ctld_port slurmd_port
  read -r ctld_port slurmd_port <<< "$(free_ports)"
  cat > "$dir/slurm.conf" <<EOF
# Written by $prog: a one-node test cluster on localhost (no DNS, no systemd, no accounting).
ClusterName=s3tok
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
KillWait=5
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  local m=$dir/munge
  mkdir -p "$m"
  chown munge:munge "$m" && chmod 755 "$m"
  if [ ! -f "$m/munge.key" ]; then
    mungekey -c -k "$m/munge.key" && chown munge:munge "$m/munge.key" && chmod 400 "$m/munge.key"
  fi
  runuser -u munge -- test -r "$m/munge.key" ||
    die "the munge user cannot reach $m (is a parent of $dir closed to other users?)"
  runuser -u munge -- munged --socket="$m/munge.socket" --key-file="$m/munge.key" --pid-file="$m/munged.pid" \
    --log-file="$m/munged.log" --seed-file="$m/munged.seed" || die "munged did not start; see $m/munged.log"
  wait_for munged munge -S "$m/munge.socket" -n
}

main() {
  dir=${1:-$(mktemp -d "${TMPDIR:-/tmp}/s3tok-slurm.XXXXXX")}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  node=$(hostname -s)
  export SLURM_CONF=$dir/slurm.conf
  if [ -f "$SLURM_CONF" ] && alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid"; then
    say "already running in $dir"
    echo "export SLURM_CONF=$SLURM_CONF"
    return 0
  fi
  install_packages
  [ "$(id -u)" = 0 ] || die "starting the daemons needs root" 3
  chmod 755 "$dir"   # munged runs as the munge user
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  write_config
  start_munge
  slurmctld -f "$SLURM_CONF" || die "slurmctld did not start; see $dir/log/slurmctld.log"
  wait_for slurmctld scontrol ping
  slurmd -f "$SLURM_CONF" -N "$node" || die "slurmd did not start; see $dir/log/slurmd.log"
  wait_for "node $node (idle in sinfo)" node_idle
  # slurmctld's scheduler first runs some seconds after it starts: return once a job has really run
  local probe
  probe=$(sbatch --parsable --job-name=probe --output=/dev/null --wrap true) || die "sbatch failed"
  wait_for "a probe job (Slurm job $probe)" probe_done "$probe"
  say "cluster up in $dir (node $node, $CPUS CPUs, ${MEM_MB} MB)"
  echo "export SLURM_CONF=$SLURM_CONF"
}

main "$@"
