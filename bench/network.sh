#!/usr/bin/env bash
# Cost of bridge networking on a private Berth stack (not a test):
#   - `run --rm busybox true` with --network none vs the default bridge (netns + veth +
#     address + nft rewrite per container, and their removal),
#   - request latency to a busybox httpd through a published port on 127.0.0.1 (DNAT +
#     route_localnet + masquerade) vs the container's address directly.
# Run as root after building:
#   cargo build --release --workspace --bins && bench/network.sh [RUNS]
# BERTH_BIN picks the binaries (default target/release, else target/debug).
#
# Isolation: one /tmp/bn-XXXXXX dir, cgroup parent /berth-bench-<rand>, the engine's own
# bridge bn<rand>0 on a random 10.x.y.0/24, nft table bn<rand>, --ip-forward=false. Traffic
# only between 127.0.0.1 and the stack's containers. Everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

RUNS=${1:-20}
[[ $EUID -eq 0 ]] || die "run as root"
command -v nft >/dev/null || die "nft missing (apt-get install nftables)"
BIN=${BERTH_BIN:-}
if [[ -z $BIN ]]; then
    BIN=$PWD/target/release
    [[ -x $BIN/berth-engine ]] || BIN=$PWD/target/debug
fi
for b in berth-highd berth-engine berth-shim berth-lowrt berth; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release --workspace --bins"
done

DIR=$(mktemp -d /tmp/bn-XXXXXX)
SUFFIX=$(basename "$DIR" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z' | tail -c 7)
CG=berth-bench-$SUFFIX BRIDGE=bn${SUFFIX}0 TABLE=bn$SUFFIX
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
    for d in /sys/fs/cgroup/*/"$CG"; do
        [[ -d $d ]] || continue
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    awk -v p="$DIR/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    # Only this stack's own names; normally the engine removed them at its clean stop.
    [[ -e /sys/class/net/$BRIDGE ]] && ip link delete "$BRIDGE"
    nft list table ip "$TABLE" >/dev/null 2>&1 && nft delete table ip "$TABLE"
    if awk -v p="$DIR/" 'index($5, p) == 1' /proc/self/mountinfo | grep -q .; then
        echo "warning: mounts left under $DIR; not removing it" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT

# Prints mean/median/min/max of the microsecond values on stdin.
stats() {
    sort -n | awk '{ v[NR] = $1; sum += $1 }
        END { printf "mean %.2f ms  median %.2f ms  min %.2f ms  max %.2f ms\n",
              sum / NR / 1000, v[int((NR + 1) / 2)] / 1000, v[1] / 1000, v[NR] / 1000 }'
}

# Runs "$@" RUNS times and prints the timing stats.
# Failed runs are counted and left out of the stats.
timed() {
    local i t0 t1 failed=0
    for ((i = 0; i < RUNS; i++)); do
        t0=$(date +%s%N)
        if "$@" >/dev/null 2>&1; then
            t1=$(date +%s%N)
            echo $(((t1 - t0) / 1000)) >>"$DIR/times"
        else
            failed=$((failed + 1))
        fi
    done
    if [[ -s $DIR/times ]]; then stats <"$DIR/times"; else echo "no successful run"; fi
    ((failed == 0)) || echo "  ($failed of $RUNS runs failed)"
    rm -f "$DIR/times"
}

# One HTTP/1.0 GET to $1:$2 over bash's /dev/tcp.
get() {
    exec 3<>"/dev/tcp/$1/$2"
    printf 'GET / HTTP/1.0\r\n\r\n' >&3
    cat <&3 >/dev/null
    exec 3<&-
}

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
"${CLI[@]}" run --rm busybox true >/dev/null 2>&1 || "${CLI[@]}" run --rm busybox true ||
    die "warm-up run failed"

echo "== ${CLI[0]##*/} run --rm busybox true ($RUNS runs, binaries from $BIN)"
printf '%-30s' "--network none:" && timed "${CLI[@]}" run --rm --network none busybox true
printf '%-30s' "--network bridge:" && timed "${CLI[@]}" run --rm busybox true

ID=$("${CLI[@]}" run -d -p 127.0.0.1::80 busybox sh -c \
    'mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www')
PORT=$("${CLI[@]}" inspect -f '{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}' "$ID")
IP=$("${CLI[@]}" inspect -f '{{.NetworkSettings.IPAddress}}' "$ID")
for ((i = 0; i < 100; i++)); do get "$IP" 80 2>/dev/null && break; sleep 0.1; done
RUNS=$((RUNS * 10))
echo
echo "== HTTP GET to busybox httpd ($RUNS requests)"
printf '%-30s' "container $IP:80:" && timed get "$IP" 80
printf '%-30s' "published 127.0.0.1:$PORT:" && timed get 127.0.0.1 "$PORT"
