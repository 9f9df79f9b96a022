#!/usr/bin/env bash
# A single-node SLURM on this machine, as plain processes (no systemd), loopback only, for the
# workflow tests' SLURMCluster runs.
#
#   .ci/slurm.sh start DIR   configure DIR/slurm.conf, start munged, slurmctld and slurmd; prints
#                            SLURM_CONF=DIR/slurm.conf (export it for sbatch, squeue, scancel)
#   .ci/slurm.sh stop DIR    wait for the queue to empty, then stop the daemons
#
# Needs root (slurmd starts jobs as their users) and Debian's slurm-wlm and munge.
set -euo pipefail
cmd=${1:?start or stop}
DIR=$(realpath -m "${2:?a state folder}")
export SLURM_CONF=$DIR/slurm.conf

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
  if alive "$DIR/slurmctld.pid"; then
    for _ in $(seq 50); do  # jobs linger a few seconds after their workers are closed
      [ -z "$(squeue -h 2>/dev/null)" ] && break
      sleep 0.2
    done
    scancel --quiet --full "--user=$(id -un)" 2>/dev/null || true
  fi
  for pid in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    if alive "$pid"; then
      kill "$(cat "$pid")" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    fi
  done
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi

for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || { echo "slurm.sh: $tool is not installed (apt-get install slurm-wlm munge)" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "slurm.sh: slurmd needs root" >&2; exit 2; }

mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
# munge: its socket folder (systemd makes it otherwise) and a key, then the daemon as its own user
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  install -d -o munge -g munge -m 0700 /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi

cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$SLURM_CONF" <<EOF
ClusterName=geoseg-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SchedulerType=sched/builtin
SlurmctldTimeout=10
SlurmdTimeout=10
InactiveLimit=0
KillWait=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

stop  # daemons of an earlier start
slurmctld -i -f "$SLURM_CONF"
slurmd -N localhost -f "$SLURM_CONF"
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.1
done
echo "slurm.sh: the node did not come up; see $DIR/log/" >&2
sinfo >&2 || true
exit 1
