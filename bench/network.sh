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
. bench/stack.sh

RUNS=${1:-20}
stack_start bn

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
