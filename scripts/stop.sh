#!/usr/bin/env bash
# Stops the berth-engine and berth-highd that scripts/quickstart.sh started (by their PID
# files under /run/berth). Running containers are not stopped: they belong to their shims
# and survive daemon restarts; remove them first with `berth rm -f` if they should go too.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[[ $EUID -eq 0 ]] || die "run as root"
RUN=/run/berth
for name in berth-engine berth-highd; do
    if pid=$(pid_is "$RUN/$name.pid" "$name"); then
        stop_pid "$pid" 10
        echo "$name stopped (pid $pid)"
    else
        echo "$name not running"
    fi
    rm -f "$RUN/$name.pid"
done
