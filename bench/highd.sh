#!/usr/bin/env bash
# berth-highd against Debian's containerd, both driven by the same `ctr` (not a test):
#   - latency of `ctr run --rm IMAGE ID true` (hyperfine when installed, else a timed loop),
#   - `ctr images import` time of the same docker archive,
#   - PSS of the daemon idle and with N running containers, and of each shim
#     (berth-shim vs containerd-shim-runc-v2).
# Run as root after building:
#   cargo build --release -p berth-highd -p berth-shim -p berth-lowrt && bench/highd.sh [RUNS] [N]
# BERTH_BIN picks the binaries (default target/release, else target/debug).
#
# Isolation: everything lives in one /tmp/bh-XXXX dir (short: ctr cannot dial sockets
# longer than 107 bytes) with cgroup parent /berth-test-<rand>, both removed on exit.
# containerd gets its own root/state/socket from a temp config, and runs in a private mount
# namespace with a tmpfs on /run, because its runc shim puts sockets in
# /run/containerd/s whatever the config says; ctr's FIFOs go to the temp dir
# (--fifo-dir). Both daemons are stopped by PID.
# State dirs: both daemons keep their state (task dirs, runtime state) on a tmpfs, as
# /run is in a real deployment (/run/berth/highd, /run/containerd and runc's
# /run/containerd/runc). On disk, every durable write of berth-lowrt's state and the
# shim's exit.json costs an fsync that runc (root on containerd's tmpfs /run) never pays.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

RUNS=${1:-20}
N=${2:-50}
[[ $EUID -eq 0 ]] || die "run as root"
for b in ctr containerd containerd-shim-runc-v2 runc unshare; do
    command -v "$b" >/dev/null || die "$b missing (apt-get install containerd runc util-linux)"
done
BIN=${BERTH_BIN:-}
if [[ -z $BIN ]]; then
    BIN=$PWD/target/release
    [[ -x $BIN/berth-highd ]] || BIN=$PWD/target/debug
fi
for b in berth-highd berth-shim berth-lowrt; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release -p $b"
done

DIR=$(mktemp -d /tmp/bh-XXXX)
CG=berth-test-$(basename "$DIR" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
HIGHD_PID= CTRD_PID=
IMAGE=docker.io/library/bhbench:latest

# ctr against daemon $1 (highd|ctrd) with our FIFO dir for the commands that make FIFOs.
c() {
    local sock=$DIR/$1.sock
    shift
    case "$1 ${2:-}" in
    "run "* | "tasks exec" | "tasks start")
        local a=$1
        shift
        if [[ $a == tasks ]]; then a="tasks $1" && shift; fi
        # shellcheck disable=SC2086
        ctr --address "$sock" -n bench $a --fifo-dir "$DIR/fifo" "$@"
        ;;
    *) ctr --address "$sock" -n bench "$@" ;;
    esac
}

cleanup() {
    set +e
    local d id
    for d in highd ctrd; do
        [[ -S $DIR/$d.sock ]] || continue
        for id in $(c "$d" tasks ls -q 2>/dev/null); do
            c "$d" tasks kill -s 9 "$id" >/dev/null 2>&1
        done
    done
    [[ -n $CTRD_PID ]] && stop_pid "$CTRD_PID" 10
    [[ -n $HIGHD_PID ]] && stop_pid "$HIGHD_PID" 10
    local f pid
    for f in "$DIR"/run/hs/*/*/shim.pid; do
        [[ -e $f ]] && pid=$(pid_is "$f" berth-shim) && kill -KILL "$pid"
    done
    for pid in $(ctrd_shims); do kill -KILL "$pid"; done
    for d in /sys/fs/cgroup/*/"$CG"; do
        [[ -d $d ]] || continue
        local until=$(($(date +%s) + 10))
        until find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; do
            (($(date +%s) < until)) || break
            sleep 0.2
        done
    done
    awk -v p="$DIR/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    if awk -v p="$DIR/" 'index($5, p) == 1' /proc/self/mountinfo | grep -q .; then
        echo "warning: mounts left under $DIR; not removing it" >&2
    else
        rm -rf "$DIR"
    fi
}
# containerd's shims for our socket (they outlive containerd, like ours).
ctrd_shims() {
    local pid
    for pid in $(ps -eo pid=,comm= | awk '$2 ~ /^containerd-shim/ { print $1 }'); do
        [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */containerd-shim-runc-v2 ]] || continue
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-address $DIR/ctrd.sock" && echo "$pid"
    done
    return 0
}
trap cleanup EXIT
mkdir -p "$DIR/fifo" "$DIR/run"
mount -t tmpfs -o mode=755 bh-state "$DIR/run"

# A docker archive of a busybox rootfs: one layer, config, manifest.json.
build_busybox_tar "$DIR/layer.tar"
LAYER=$(sha256sum "$DIR/layer.tar" | cut -d' ' -f1)
mkdir -p "$DIR/img/$LAYER"
mv "$DIR/layer.tar" "$DIR/img/$LAYER/layer.tar"
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$LAYER" >"$DIR/img/config.json"
CONFIG=$(sha256sum "$DIR/img/config.json" | cut -d' ' -f1)
mv "$DIR/img/config.json" "$DIR/img/$CONFIG.json"
printf '[{"Config":"%s.json","RepoTags":["bhbench:latest"],"Layers":["%s/layer.tar"]}]' \
    "$CONFIG" "$LAYER" >"$DIR/img/manifest.json"
tar -C "$DIR/img" -cf "$DIR/image.tar" manifest.json "$CONFIG.json" "$LAYER/layer.tar"

# berth-highd
"$BIN/berth-highd" --root "$DIR/h" --state "$DIR/run/hs" --address "$DIR/highd.sock" \
    >>"$DIR/highd.log" 2>&1 </dev/null &
HIGHD_PID=$!
wait_socket "$DIR/highd.sock" 30 "$HIGHD_PID" || die "berth-highd did not start: $(tail -5 "$DIR/highd.log")"

# containerd, CRI and the other plugins a ctr run does not need left out.
cat >"$DIR/ctrd.toml" <<EOF
version = 2
root = "$DIR/cr"
state = "$DIR/run/cs"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$DIR/ctrd.sock"
[ttrpc]
  address = "$DIR/ctrd.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"
EOF
unshare --mount --propagation private sh -c \
    'mount -t tmpfs -o mode=755 bh-run /run && exec containerd --config "$1"' sh "$DIR/ctrd.toml" \
    >>"$DIR/ctrd.log" 2>&1 </dev/null &
CTRD_PID=$!
wait_socket "$DIR/ctrd.sock" 30 "$CTRD_PID" || die "containerd did not start: $(tail -5 "$DIR/ctrd.log")"

pss() { awk '$1 == "Pss:" { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
mean_ms() { sort -n | awk '{ s += $1; v[NR] = $1 } END { printf "%.1f", s / NR / 1000 }'; }

declare -A IMPORT IDLE WARM BUSY SHIM LAT MED FAIL
for d in highd ctrd; do
    pid_var=${d^^}_PID
    IDLE[$d]=$(pss "${!pid_var}")
    t0=$(date +%s%N)
    c "$d" images import "$DIR/image.tar" >/dev/null
    t1=$(date +%s%N)
    IMPORT[$d]=$(((t1 - t0) / 1000000))
    c "$d" run --rm --cgroup "/$CG/warm-$d" "$IMAGE" warm true || die "warm-up run on $d failed"
    FAIL[$d]=0
    : >"$DIR/$d.times"
done

# Latency in alternating rounds, so load from elsewhere on the host hits both daemons alike.
ROUNDS=5
PER_ROUND=$(((RUNS + ROUNDS - 1) / ROUNDS))
RUNS=$((PER_ROUND * ROUNDS))
echo "== ctr run --rm $IMAGE true: $ROUNDS rounds of $PER_ROUND runs per daemon"
for ((r = 0; r < ROUNDS; r++)); do
    for d in highd ctrd; do
        cmd="ctr --address $DIR/$d.sock -n bench run --rm --fifo-dir $DIR/fifo --cgroup /$CG/lat-$d $IMAGE lat-$d true"
        if command -v hyperfine >/dev/null; then
            # -i: a failed run is counted rather than ending the benchmark.
            hyperfine -N -i --style none --warmup 1 --runs "$PER_ROUND" --export-json "$DIR/$d.json" "$cmd" >/dev/null
            jq -r '.results[0].times[] | . * 1000000 | floor' "$DIR/$d.json" >>"$DIR/$d.times"
            FAIL[$d]=$((FAIL[$d] + $(jq '[.results[0].exit_codes[] | select(. != 0)] | length' "$DIR/$d.json")))
        else
            for ((i = 0; i < PER_ROUND; i++)); do
                t0=$(date +%s%N)
                $cmd >/dev/null 2>&1 || FAIL[$d]=$((FAIL[$d] + 1))
                t1=$(date +%s%N)
                echo $(((t1 - t0) / 1000)) >>"$DIR/$d.times"
            done
        fi
    done
done
for d in highd ctrd; do
    LAT[$d]=$(mean_ms <"$DIR/$d.times")
    MED[$d]=$(sort -n "$DIR/$d.times" | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] / 1000 }')
    echo "$d: mean ${LAT[$d]} ms, median ${MED[$d]} ms, ${FAIL[$d]} failed"
done

# Sum of the PSS of daemon $1's shims.
shims_pss() {
    local total=0 f pid
    if [[ $1 == highd ]]; then
        for f in "$DIR"/run/hs/bench/*/shim.pid; do
            pid=$(pid_is "$f" berth-shim) && total=$((total + $(pss "$pid")))
        done
    else
        for pid in $(ctrd_shims); do total=$((total + $(pss "$pid"))); done
    fi
    echo "$total"
}

declare -A LONE
for d in highd ctrd; do
    pid_var=${d^^}_PID
    # After the runs above every code path is paged in: growth from here is per container.
    WARM[$d]=$(pss "${!pid_var}")
    echo "== $d: starting $N containers"
    for ((i = 0; i < N; i++)); do
        c "$d" run -d --cgroup "/$CG/m-$d-$i" "$IMAGE" "m-$d-$i" sleep 100000 >/dev/null
        if ((i == 0)); then
            # The only shim: PSS charges it all the text pages. berth-shim trims its heap
            # after 1 s without requests.
            sleep 2
            LONE[$d]=$(shims_pss "$d")
        fi
    done
    sleep 2
    BUSY[$d]=$(pss "${!pid_var}")
    SHIM[$d]=$(($(shims_pss "$d") / N))
    for ((i = 0; i < N; i++)); do c "$d" tasks kill -s 9 "m-$d-$i" >/dev/null; done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
per() { awk -v busy="$1" -v warm="$2" -v shim="$3" -v n="$N" 'BEGIN { printf "%d", (busy - warm) / n + shim }'; }
PER_H=$(per "${BUSY[highd]}" "${WARM[highd]}" "${SHIM[highd]}")
PER_C=$(per "${BUSY[ctrd]}" "${WARM[ctrd]}" "${SHIM[ctrd]}")
echo
echo "binaries: $BIN; ctr $(ctr --version | awk '{ print $3 }'); $RUNS runs each; $N containers; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-34s | %12s | %12s | %6s |\n' metric berth-highd containerd ratio
printf '|%s|%s|%s|%s|\n' "------------------------------------" "--------------" "--------------" "--------"
row() { printf '| %-34s | %12s | %12s | %6s |\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
row "ctr run --rm true, mean (ms)" "$(printf %.1f "${LAT[highd]}")" "$(printf %.1f "${LAT[ctrd]}")"
row "ctr run --rm true, median (ms)" "$(printf %.1f "${MED[highd]}")" "$(printf %.1f "${MED[ctrd]}")"
row "failed runs of $RUNS" "${FAIL[highd]}" "${FAIL[ctrd]}"
row "images import (ms)" "${IMPORT[highd]}" "${IMPORT[ctrd]}"
row "daemon PSS idle (kB)" "${IDLE[highd]}" "${IDLE[ctrd]}"
row "daemon PSS after the runs (kB)" "${WARM[highd]}" "${WARM[ctrd]}"
row "daemon PSS, $N containers (kB)" "${BUSY[highd]}" "${BUSY[ctrd]}"
row "PSS of a lone idle shim (kB)" "${LONE[highd]}" "${LONE[ctrd]}"
row "PSS per shim, $N running (kB)" "${SHIM[highd]}" "${SHIM[ctrd]}"
row "per container: shim + daemon growth" "$PER_H" "$PER_C"
echo "(latency means include failed runs; per container = (daemon with $N - daemon after the runs) / $N + shim)"
