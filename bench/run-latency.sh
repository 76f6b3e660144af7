#!/usr/bin/env bash
# Latency and memory of a private Berth stack (not a test): wall time of
# `docker run --rm busybox true` (hyperfine when installed, else a timed loop), and the
# RSS/PSS of berth-engine, berth-highd and one berth-shim. Run as root after building:
#   cargo build --release --workspace --bins && bench/run-latency.sh [RUNS]
# BERTH_BIN picks the binaries (default target/release, else target/debug). The stack lives
# in a temp dir with its own cgroup parent and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

RUNS=${1:-20}
[[ $EUID -eq 0 ]] || die "run as root"
BIN=${BERTH_BIN:-}
if [[ -z $BIN ]]; then
    BIN=$PWD/target/release
    [[ -x $BIN/berth-engine ]] || BIN=$PWD/target/debug
fi
for b in berth-highd berth-engine berth-shim berth-lowrt berth; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release --workspace --bins"
done

DIR=$(mktemp -d /tmp/bb-XXXXXX)
SUFFIX=$(basename "$DIR" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z' | tail -c 7)
# Own cgroup parent, bridge, subnet and nft table: the bench never touches berth0 or the
# host's forwarding setting.
CG=berth-bench-$SUFFIX BRIDGE=bb${SUFFIX}0 TABLE=bb$SUFFIX
BIP=10.$((64 + RANDOM % 190)).$((RANDOM % 256)).1/24
HIGHD_PID= ENGINE_PID=
export DOCKER_HOST=unix://$DIR/e.sock DOCKER_CONFIG=$DIR/dc BERTH_HOST=unix://$DIR/e.sock
if command -v docker >/dev/null; then CLI=(docker); else CLI=("$BIN/berth"); fi

cleanup() {
    set +e
    "${CLI[@]}" ps -aq 2>/dev/null | xargs -r "${CLI[@]}" rm -f >/dev/null 2>&1
    [[ -n $ENGINE_PID ]] && stop_pid "$ENGINE_PID" 10
    [[ -n $HIGHD_PID ]] && stop_pid "$HIGHD_PID" 10
    local f pid
    for f in "$DIR"/hs/*/*/shim.pid; do
        [[ -e $f ]] && pid=$(pid_is "$f" berth-shim) && kill -KILL "$pid"
    done
    [[ -e /sys/class/net/$BRIDGE ]] && ip link delete "$BRIDGE"
    nft list table ip "$TABLE" >/dev/null 2>&1 && nft delete table ip "$TABLE"
    for d in /sys/fs/cgroup/*/"$CG"; do
        [[ -d $d ]] || continue
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    awk -v p="$DIR/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    if awk -v p="$DIR/" 'index($5, p) == 1' /proc/self/mountinfo | grep -q .; then
        echo "warning: mounts left under $DIR; not removing it" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT

mkdir -p "$DIR/dc"
"$BIN/berth-highd" --root "$DIR/h" --state "$DIR/hs" --address "$DIR/h.sock" \
    >>"$DIR/highd.log" 2>&1 </dev/null &
HIGHD_PID=$!
wait_socket "$DIR/h.sock" 30 "$HIGHD_PID" || die "berth-highd did not start: $(tail -5 "$DIR/highd.log")"
"$BIN/berth-engine" --data-root "$DIR/e" --exec-root "$DIR/ex" -H "unix://$DIR/e.sock" \
    --containerd "$DIR/h.sock" --cgroup-parent "/$CG" --bridge-name "$BRIDGE" --bip "$BIP" \
    --firewall-table "$TABLE" --ip-forward=false >>"$DIR/engine.log" 2>&1 </dev/null &
ENGINE_PID=$!
wait_socket "$DIR/e.sock" 30 "$ENGINE_PID" || die "berth-engine did not start: $(tail -5 "$DIR/engine.log")"

build_busybox_tar "$DIR/busybox.tar"
"${CLI[@]}" import "$DIR/busybox.tar" busybox >/dev/null
"${CLI[@]}" run --rm busybox true || die "warm-up run failed"

echo "== ${CLI[0]##*/} run --rm busybox true ($RUNS runs, binaries from $BIN)"
if command -v hyperfine >/dev/null; then
    hyperfine --warmup 2 --runs "$RUNS" "${CLI[*]} run --rm busybox true"
else
    times=()
    for ((i = 0; i < RUNS; i++)); do
        t0=$(date +%s%N)
        "${CLI[@]}" run --rm busybox true
        t1=$(date +%s%N)
        times+=($(((t1 - t0) / 1000)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '
        { v[NR] = $1; sum += $1 }
        END { printf "mean %.1f ms  median %.1f ms  min %.1f ms  max %.1f ms\n",
              sum / NR / 1000, v[int((NR + 1) / 2)] / 1000, v[1] / 1000, v[NR] / 1000 }'
fi

# One long-running container so there is a shim to measure.
"${CLI[@]}" run -d busybox sleep 1000 >/dev/null
SHIM_PID=
for f in "$DIR"/hs/*/*/shim.pid; do
    [[ -e $f ]] && SHIM_PID=$(pid_is "$f" berth-shim) && break
done

kb() { awk -v k="$2:" '$1 == k { print $2 }' "$1" 2>/dev/null; }
echo
printf '%-14s %8s %10s %10s\n' PROCESS PID "RSS(kB)" "PSS(kB)"
for row in "berth-engine $ENGINE_PID" "berth-highd $HIGHD_PID" "berth-shim ${SHIM_PID:-}"; do
    read -r name pid <<<"$row"
    if [[ -z ${pid:-} ]]; then
        printf '%-14s %8s %10s %10s\n' "$name" - - -
        continue
    fi
    printf '%-14s %8s %10s %10s\n' "$name" "$pid" \
        "$(kb "/proc/$pid/status" VmRSS)" "$(kb "/proc/$pid/smaps_rollup" Pss)"
done
