#!/usr/bin/env bash
# Quick start on a fresh Debian machine, as root: installs the build dependencies, builds
# Berth, starts berth-highd and berth-engine with their default paths, imports a busybox
# image built from the host's static busybox and runs a container with it.
# Needs Rust's cargo already installed. Stop the daemons again with scripts/stop.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[[ $EUID -eq 0 ]] || die "run as root (containers need namespaces, mounts and cgroups)"
command -v cargo >/dev/null || die "cargo not found: install Rust first (rustup or Debian's cargo)"

apt_install protobuf-compiler libseccomp-dev busybox-static pkg-config build-essential

echo "building release binaries..."
scripts/build-release.sh
BIN=$PWD/target/release
RUN=/run/berth
LOG=/var/log/berth
mkdir -p "$RUN" "$LOG"
chmod 0711 "$RUN"

# start_daemon NAME SOCKET: starts target/release/NAME with default paths unless running.
start_daemon() {
    local name=$1 sock=$2 pid
    if pid=$(pid_is "$RUN/$name.pid" "$name"); then
        echo "$name already running (pid $pid)"
        return
    fi
    rm -f "$sock"
    nohup "$BIN/$name" >>"$LOG/$name.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$RUN/$name.pid"
    wait_socket "$sock" 30 "$pid" || die "$name did not start; see $LOG/$name.log"
    echo "$name started (pid $pid, log $LOG/$name.log)"
}

start_daemon berth-highd "$RUN/highd.sock"
start_daemon berth-engine "$RUN/engine.sock"

berth() { "$BIN/berth" -H "unix://$RUN/engine.sock" "$@"; }

if ! berth images | awk 'NR > 1 && $1 == "busybox"' | grep -q .; then
    tar=$(mktemp /tmp/berth-busybox-XXXXXX.tar)
    build_busybox_tar "$tar"
    berth import "$tar" busybox
    rm -f "$tar"
fi

berth run --rm busybox echo hello from berth
