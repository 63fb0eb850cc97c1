#!/usr/bin/env bash
# A real single-node SLURM on this machine (Debian's slurm-wlm + munge, controller and node on
# localhost), the tiny profile run through snakemake-executor-plugin-slurm, then SLURM stopped.
#
#   sudo scripts/slurm_local.sh            # install if needed, start, run, stop
#   scripts/slurm_local.sh start|stop      # only start or stop the cluster
#
# State and logs go under $SLURM_HOME (default /tmp/cfgan-slurm). srun inside jobs reads the
# default /etc/slurm/slurm.conf, so the script writes one there, marked as its own, and refuses
# to touch an existing one it did not write. Needs root (munge and slurmd run as root here).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SLURM_HOME="${SLURM_HOME:-/tmp/cfgan-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by cfgan scripts/slurm_local.sh"

install() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
  fi
}

start() {
  install
  mkdir -p "$SLURM_HOME"/{state,spool,log} /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  chmod 0400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force
  local cpus mem host
  cpus=$(nproc); mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 )); host=$(hostname -s)
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "$CONF exists and is not ours: refusing to replace a real cluster's configuration" >&2; exit 1
  fi
  mkdir -p /etc/slurm
  cat > "$CONF" <<CONF
$MARK
ClusterName=cfgan
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SLURM_HOME/state
SlurmdSpoolDir=$SLURM_HOME/spool
SlurmctldPidFile=$SLURM_HOME/slurmctld.pid
SlurmdPidFile=$SLURM_HOME/slurmd.pid
SlurmctldLogFile=$SLURM_HOME/log/slurmctld.log
SlurmdLogFile=$SLURM_HOME/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none   # no slurmdbd: job states come from squeue (MinJobAge)
JobCompType=jobcomp/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  pgrep -x slurmctld >/dev/null || slurmctld -c   # -c: a fresh queue, no jobs recovered from an earlier run
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 30); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
    sleep 1
  done
  sinfo
}

stop() {
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 20); do { pgrep -x slurmctld || pgrep -x slurmd; } >/dev/null || break; sleep 0.5; done
  if [ -e "$CONF" ] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
}

run() {
  cd "$ROOT"
  # the slurm profile, with the tiny configuration and this node's resources (no GPU here)
  snakemake --profile workflow/profiles/slurm \
    --configfile params.yaml workflow/profiles/tiny/params.yaml \
    --cores "$(nproc)" --default-resources slurm_partition=debug mem_mb=2000 runtime=30 cpus_per_task=1 \
    --set-resources train:gpu=0 train_baseline:gpu=0 train_segmenter:gpu=0 \
                    train:cpus_per_task="$(nproc)" train_baseline:cpus_per_task="$(nproc)" \
    --slurm-status-command squeue --jobs 4 all
}

case "${1:-all}" in
  start) start ;;
  stop) stop ;;
  run) run ;;
  all) start; trap stop EXIT; run ;;
  *) echo "usage: $0 [start|stop|run|all]" >&2; exit 2 ;;
esac
