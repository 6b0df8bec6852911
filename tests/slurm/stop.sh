#!/usr/bin/env bash
# Stops the daemons tests/slurm/start.sh started, by the PIDs in their pid files.
set -uo pipefail
dir=${LATENTSCOPE_SLURM_DIR:-/tmp/latentscope-slurm}
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
for daemon in slurmd slurmctld munged; do
    pidfile="$dir/run/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if $sudo kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do $sudo kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "tests/slurm/stop.sh: stopped $daemon (pid $pid)" >&2
    fi
    $sudo rm -f "$pidfile"
done
