#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages (slurm-wlm: slurmctld + slurmd, munge), to try
# the SLURM profile before a real cluster: no accounting database, no cgroups, no GPUs, like many small clusters.
#
#   bash workflow/cluster/local-slurm.sh start    # install what is missing, configure, start; waits for the node
#   bash workflow/cluster/local-slurm.sh status   # the node and the queue
#   bash workflow/cluster/local-slurm.sh stop
#
# Needs root and apt-get (Debian or Ubuntu). NATINV_SLURM_CPUS sets the CPUs the node offers (default: nproc; more
# than the machine has oversubscribes it, for short jobs that mostly wait); its memory is the machine's. The configuration is /etc/slurm/slurm.conf, the daemons' logs /var/log/slurm/.
set -euo pipefail

action=${1:-start}
conf=/etc/slurm/slurm.conf
logdir=/var/log/slurm

need_root() {
  if [[ $(id -u) != 0 ]]; then
    echo "local-slurm: needs root (it installs packages and starts slurmctld, slurmd and munged)" >&2
    exit 2
  fi
}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
      && command -v munged >/dev/null; then
    return
  fi
  if ! command -v apt-get >/dev/null; then
    echo "local-slurm: needs apt-get to install slurmctld, slurmd, slurm-client and munge" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=${NATINV_SLURM_CPUS:-$(nproc)}
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$logdir"
  cat > "$conf" <<CONF
# Written by workflow/cluster/local-slurm.sh: one node, no accounting database, no cgroups, no CPU binding (a job
# sees every core, as a local run does: with binding, an oversubscribed node hands a 2-thread job a single core and
# the job step scales its threads down, which changes float results; srun then notes that it cannot bind).
ClusterName=natinv-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logdir/slurmctld.log
SlurmdLogFile=$logdir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=300
SlurmdParameters=config_overrides
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  need_root
  install
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
  write_conf
  pkill -x slurmctld 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  sleep 1
  slurmctld -c   # -c: a clean start, no jobs from an earlier run
  slurmd
  for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1)
    if [[ $state == idle ]]; then
      echo "local-slurm: node $(hostname -s) idle with ${NATINV_SLURM_CPUS:-$(nproc)} CPUs (partition main)"
      return
    fi
    [[ $state == down* || $state == drain* || $state == inval* ]] && scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
    sleep 1
  done
  echo "local-slurm: the node did not become idle; see $logdir/slurmctld.log and $logdir/slurmd.log" >&2
  sinfo -N -l >&2 || true
  exit 1
}

stop() {
  need_root
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  echo "local-slurm: stopped (munged left running)"
}

case $action in
  start) start ;;
  stop) stop ;;
  status) sinfo -N -l && squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
