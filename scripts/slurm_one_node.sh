#!/usr/bin/env bash
# A one-node SLURM cluster on this Debian machine, for trying and testing the submitit_slurm
# launcher without a real cluster. Run as root:
#
#   scripts/slurm_one_node.sh start    # install (apt-get) if needed, configure, start, wait for the node
#   scripts/slurm_one_node.sh status   # daemons, node and queue
#   scripts/slurm_one_node.sh stop     # stop slurmd, slurmctld and munged
#
# What `start` does: installs slurm-wlm and munge when their daemons are missing; prepares munge
# (run/log/lib/etc folders owned by munge, a key if there is none) and starts munged as the munge
# user; writes /etc/slurm/slurm.conf for one node named after this host (all its CPUs, up to
# SLURM_CPUS, 2 by default; most of its memory) in one default partition; starts slurmctld and
# slurmd as root and waits until `sinfo` shows the node idle. Daemons and the node talk over
# 127.0.0.1 only. Finished jobs are appended to the job-completion file (JobCompLoc below), one
# line per job with its JobState, so their final states can be read after they leave the queue.
#
# An existing slurm.conf that this script did not write is never replaced (a real cluster's).
# Settings: SLURM_PARTITION (default "main"), SLURM_CPUS (default 2), SLURM_START_TIMEOUT (s, 60).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by ppo_research scripts/slurm_one_node.sh"
LOG_DIR=/var/log/slurm
JOBCOMP=$LOG_DIR/jobcomp.txt
RUN_DIR=/run/slurm
PARTITION=${SLURM_PARTITION:-main}
CPUS=${SLURM_CPUS:-2}
TIMEOUT=${SLURM_START_TIMEOUT:-60}
NODE=$(hostname -s)

say() { echo "slurm_one_node: $*"; }
die() { echo "slurm_one_node: error: $*" >&2; exit 1; }

pid_alive() {  # pid_alive FILE: the process named in FILE runs
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sinfo >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  [ "${#missing[@]}" -eq 0 ] && return 0
  say "installing slurm-wlm munge (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start_munge() {
  id munge >/dev/null 2>&1 || die "no munge user (the munge package creates it)"
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0755 /run/munge
  chmod 0700 /var/log/munge /var/lib/munge /etc/munge
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
      runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  if ! pid_alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
  fi
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "munged does not answer (see /var/log/munge/munged.log)"
}

real_memory_mb() {
  # What slurmd itself detects (slurmd -C), less 5% so the node is never drained for low memory;
  # /proc/meminfo when slurmd -C says nothing.
  local mb
  mb=$(slurmd -C 2>/dev/null | tr ' ' '\n' | sed -n 's/^RealMemory=//p' | head -n1)
  [ -n "$mb" ] || mb=$(( $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024 ))
  echo $(( mb * 95 / 100 ))
}

write_conf() {
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not replacing it"
  fi
  local cpus
  cpus=$(nproc)
  [ "$cpus" -gt "$CPUS" ] && cpus=$CPUS
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" /var/spool/slurmctld /var/spool/slurmd
  touch "$JOBCOMP"
  cat >"$CONF" <<EOF
$MARK
# One node, one partition; daemons run as root and talk over 127.0.0.1.
ClusterName=onenode
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$(real_memory_mb) State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

node_state() {
  sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1
}

start() {
  [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"
  local t0=$SECONDS
  install_packages
  start_munge
  write_conf
  pid_alive "$RUN_DIR/slurmctld.pid" || slurmctld
  pid_alive "$RUN_DIR/slurmd.pid" || slurmd
  local state="" resumed=""
  for _ in $(seq $((TIMEOUT * 2))); do
    state=$(node_state)
    case "$state" in
      idle) say "node $NODE idle in partition $PARTITION ($((SECONDS - t0))s; job records: $JOBCOMP)"; return 0 ;;
      down*|drain*|fail*)
        if [ -z "$resumed" ]; then scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true; resumed=1; fi ;;
    esac
    sleep 0.5
  done
  die "node $NODE not idle after ${TIMEOUT}s (state: ${state:-no answer}); see $LOG_DIR/slurmctld.log and slurmd.log"
}

stop_pidfile() {  # stop_pidfile NAME FILE
  if pid_alive "$2"; then
    local pid
    pid=$(cat "$2")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped $1 ($pid)"
  fi
  return 0
}

stop() {
  stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
  stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
  stop_pidfile munged /run/munge/munged.pid
}

status() {
  local name file ok=0
  for name in munged:/run/munge/munged.pid slurmctld:$RUN_DIR/slurmctld.pid slurmd:$RUN_DIR/slurmd.pid; do
    file=${name#*:}
    if pid_alive "$file"; then echo "${name%%:*}: running ($(cat "$file"))"; else echo "${name%%:*}: stopped"; ok=1; fi
  done
  if [ "$ok" -eq 0 ]; then
    sinfo
    squeue
  fi
  return "$ok"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
