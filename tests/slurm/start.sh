#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine for the executor tests: installs
# Debian's slurm-wlm and munge when absent, writes a minimal slurm.conf with its state, spool
# and log paths under $LATENTSCOPE_SLURM_DIR (default /tmp/latentscope-slurm), starts munged,
# slurmctld and slurmd (as root), and waits until the node is idle.
#
# Prints the environment the tests need; use it as: eval "$(tests/slurm/start.sh)"
# Stop the daemons it started with tests/slurm/stop.sh (it kills them by PID).
set -euo pipefail

dir=${LATENTSCOPE_SLURM_DIR:-/tmp/latentscope-slurm}
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "tests/slurm/start.sh: needs root (or sudo) to run slurmd" >&2; exit 1; }
    sudo="sudo"
fi
say() { echo "tests/slurm/start.sh: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt)"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
$sudo mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/run"
conf="$dir/slurm.conf"
$sudo tee "$conf" >/dev/null <<CONF
ClusterName=latentscope-test
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmUser=root
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
JobCompType=jobcomp/none
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf

alive() { [ -f "$1" ] && $sudo kill -0 "$(cat "$1")" 2>/dev/null; }

# munge: the package's key, or a new one. Running means answering (not a zombie's pid).
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    if [ ! -s /etc/munge/munge.key ]; then
        $sudo mkdir -p /etc/munge
        $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    $sudo chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    $sudo chmod 0400 /etc/munge/munge.key
    $sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
    $sudo chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if [ -z "$sudo" ]; then runuser -u munge -- munged; else sudo -u munge munged; fi
    for _ in $(seq 1 50); do munge_ok && break; sleep 0.1; done
    munge_ok || { say "munged did not start"; exit 1; }
    # munged writes its own pid file (the daemon's pid, after it forked).
    $sudo cp /run/munge/munged.pid "$dir/run/munged.pid"
fi

if ! alive "$dir/run/slurmctld.pid"; then
    $sudo env SLURM_CONF="$conf" slurmctld -c
fi
if ! alive "$dir/run/slurmd.pid"; then
    $sudo env SLURM_CONF="$conf" slurmd
fi

for _ in $(seq 1 60); do
    state=$(timeout 5 sinfo -h -n "$host" -o %T 2>/dev/null || true)
    case "$state" in
        idle* | mixed* | allocated*) break ;;
        down* | drain*) $sudo env SLURM_CONF="$conf" scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
case "${state:-}" in
    idle* | mixed* | allocated*) say "node $host is $state (config $conf)" ;;
    *) say "the node did not become idle (state: ${state:-none}); see $dir/log/"; exit 1 ;;
esac
echo "export SLURM_CONF=$conf"
