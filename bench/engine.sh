#!/usr/bin/env bash
# berth-engine next to Debian's dockerd (docker.io 20.10) in the same run (not a test):
# the everyday docker CLI operations, timed end to end through the same docker CLI 28, and
# the daemons' memory. Each row prints the mean wall time in ms for Berth and dockerd and
# the ratio berth/dockerd (below 1: Berth is faster). Both stacks use --network none for
# the run/exec rows so only the engine, its runtime layers and the CLI are measured
# (bench/network.sh covers networking).
# Run as root after building:
#   cargo build --release --workspace --bins && bench/engine.sh [RUNS]
# BERTH_BIN picks the binaries (default target/release, else target/debug: say which in
# any number you quote).
#
# Isolation: as bench/network.sh (private temp dirs, cgroup parents /berth-bench-<rand>,
# each daemon in a network namespace of its own, everything stopped by PID and removed on
# exit).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/stack.sh

RUNS=${1:-20}
STACK_NETNS=1 stack_start be
dockerd_start bf

# create_rm CLI...: one `create` and one `rm` (the pair is timed as a unit).
create_rm() {
    local id
    id=$("$@" create --network none busybox true) && "$@" rm "$id" >/dev/null
}

# start_attach CLI...: start the created container $ID and wait for it to exit.
start_attach() { "$@" start -a "$ID" >/dev/null; }

# stop_ms CLI...: mean ms of `stop -t 0` on a freshly started `sleep` container.
stop_ms() {
    local i c t0 t1 f
    f=$(mktemp)
    for ((i = 0; i < RUNS; i++)); do
        c=$("$@" run -d --network none busybox sleep 3600)
        t0=$(date +%s%N)
        "$@" stop -t 0 "$c" >/dev/null
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000)) >>"$f"
        "$@" rm "$c" >/dev/null
    done
    mean_ms <"$f"
    rm -f "$f"
}

# rss_kb PID...: the summed RSS of the processes, in KiB.
rss_kb() {
    local p s=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        s=$((s + ${v:-0}))
    done
    echo "$s"
}

declare -A R
measure() {
    local who=$1
    shift
    R[$who,version]=$(time_ms "$@" version)
    R[$who,run]=$(time_ms "$@" run --rm --network none busybox true)
    R[$who,create_rm]=$(time_ms create_rm "$@")
    ID=$("$@" create --network none busybox true)
    R[$who,start]=$(time_ms start_attach "$@")
    "$@" rm "$ID" >/dev/null
    local c
    c=$("$@" run -d --network none busybox sleep 3600)
    R[$who,exec]=$(time_ms "$@" exec "$c" true)
    R[$who,inspect]=$(time_ms "$@" inspect "$c")
    R[$who,logs]=$(time_ms "$@" logs "$c")
    local i
    for ((i = 0; i < 30; i++)); do "$@" create --network none busybox true >/dev/null; done
    R[$who,ps]=$(time_ms "$@" ps -a)
    R[$who,images]=$(time_ms "$@" images)
    R[$who,stop]=$(stop_ms "$@")
    "$@" ps -aq | xargs -r "$@" rm -f >/dev/null
}

measure berth "${CLI[@]}"
measure dockerd "${DK[@]}"

# Daemons' memory at rest, after the runs: berth-engine + berth-highd vs dockerd + its
# containerd.
R[berth,rss]=$(rss_kb "$ENGINE_PID" "$HIGHD_PID")
mapfile -t ctrd < <(pgrep -P "$DK_PID" -x containerd || true)
R[dockerd,rss]=$(rss_kb "$DK_PID" "${ctrd[@]}")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
row() { printf '%-40s %10s %10s %8s\n' "$1" "${R[berth,$2]}" "${R[dockerd,$2]}" "$(ratio "${R[berth,$2]}" "${R[dockerd,$2]}")"; }
echo "== $RUNS runs per row, docker CLI $(docker version -f '{{.Client.Version}}' 2>/dev/null), berth from $BIN"
printf '%-40s %10s %10s %8s\n' "" berth dockerd ratio
row "docker version (ms)" version
row "run --rm --network none true (ms)" run
row "create + rm (ms)" create_rm
row "start -a (created, runs true) (ms)" start
row "exec true (ms)" exec
row "inspect (ms)" inspect
row "logs (ms)" logs
row "ps -a, 31 containers (ms)" ps
row "images (ms)" images
row "stop -t 0 a running sleep (ms)" stop
row "daemons' RSS at rest (KiB)" rss
