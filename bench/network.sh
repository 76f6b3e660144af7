#!/usr/bin/env bash
# Cost of bridge networking, Berth next to Debian's dockerd (docker.io 20.10) in the same
# run (not a test):
#   - `docker run --rm busybox true` with --network none and on the default bridge (the
#     difference is the bridge's setup and teardown: netns, veth, address, rules);
#   - HTTP to a busybox httpd through a published port on 127.0.0.1: latency (ab -c 1)
#     and throughput (ab -c 8), plus latency straight to the container's address;
#   - the ratio berth/dockerd of each (below 1: Berth is faster / for req/s: slower).
# Run as root after building:
#   cargo build --release --workspace --bins && bench/network.sh [RUNS]
# BERTH_BIN picks the binaries (default target/release, else target/debug: say which in
# any number you quote). NO_DOCKERD=1 measures Berth alone. Needs ab (apache2-utils).
#
# Isolation: both daemons run in network namespaces of their own (bind-mounted under their
# temp dirs, entered with nsenter --net only), so the bridges, veths, nft/iptables rules
# and published ports exist only there, and the load generator runs in the same namespace
# as the daemon it measures ("host" below means that namespace). Berth: /tmp/bn-XXXXXX,
# cgroup parent /berth-bench-<rand>, bridge bn<rand>0, table bn<rand>. dockerd: /tmp/bd-XXXXXX
# with its data root, exec root, socket, pid file and an empty config file, cgroup parent
# /berth-bench-<rand>, its default docker0 on a random 10.x.y.0/24 and its default
# userland proxy for 127.0.0.1. Everything is stopped (by PID) and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/stack.sh

RUNS=${1:-20}
command -v ab >/dev/null || die "ab missing (apt-get install apache2-utils)"
STACK_NETNS=1 stack_start bn
if [[ -z ${NO_DOCKERD:-} ]]; then
    dockerd_start bd
fi

# httpd_up CLI...: starts busybox httpd with port 80 published on 127.0.0.1 and prints
# "ID PORT IP" once it answers from inside the namespace NS (the array named by $NSVAR).
httpd_up() {
    local -n ns=$1
    shift
    local id port ip i
    id=$("$@" run -d -p 127.0.0.1::80 busybox sh -c \
        'mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www')
    port=$("$@" inspect -f '{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}' "$id")
    ip=$("$@" inspect -f '{{.NetworkSettings.IPAddress}}' "$id")
    for ((i = 0; i < 100; i++)); do
        "${ns[@]}" ab -q -n 1 "http://$ip/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "$id $port $ip"
}

# ab_stat NSVAR C N URL FIELD: runs ab in the namespace and prints "ms" (mean time per
# request at concurrency 1) or "rps" (requests per second).
ab_stat() {
    local -n ns=$1
    local out
    out=$("${ns[@]}" ab -q -c "$2" -n "$3" "$4" 2>&1) || {
        echo "-"
        return
    }
    case $5 in
    ms) awk '/^Time per request:.*\(mean\)$/ { printf "%.3f", $4; exit }' <<<"$out" ;;
    rps) awk '/^Requests per second:/ { printf "%.0f", $4; exit }' <<<"$out" ;;
    esac
}

declare -A R
measure() {
    local who=$1 nsvar=$2
    shift 2
    R[$who,none]=$(time_ms "$@" run --rm --network none busybox true)
    R[$who,bridge]=$(time_ms "$@" run --rm busybox true)
    local id port ip n=$((RUNS * 100))
    read -r id port ip < <(httpd_up "$nsvar" "$@")
    R[$who,lat]=$(ab_stat "$nsvar" 1 "$n" "http://127.0.0.1:$port/" ms)
    R[$who,direct]=$(ab_stat "$nsvar" 1 "$n" "http://$ip/" ms)
    R[$who,rps]=$(ab_stat "$nsvar" 8 "$((n * 2))" "http://127.0.0.1:$port/" rps)
    "$@" rm -f "$id" >/dev/null
}

measure berth IN_NS "${CLI[@]}"
[[ -n ${NO_DOCKERD:-} ]] || measure dockerd DK_NS "${DK[@]}"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
row() {
    local label=$1 key=$2 b=${R[berth,$2]} d=${R[dockerd,$2]:--}
    printf '%-44s %10s %10s %8s\n' "$label" "$b" "$d" "$(ratio "$b" "$d")"
}
echo "== $RUNS runs per start time, $((RUNS * 100)) requests per latency, berth from $BIN"
printf '%-44s %10s %10s %8s\n' "" berth dockerd ratio
row "run --rm --network none (ms)" none
row "run --rm, default bridge (ms)" bridge
b=$(awk -v a="${R[berth,bridge]}" -v b="${R[berth,none]}" 'BEGIN { printf "%.1f", a - b }')
d=$(awk -v a="${R[dockerd,bridge]:--}" -v b="${R[dockerd,none]:--}" \
    'BEGIN { if (a == "-") print "-"; else printf "%.1f", a - b }')
R[berth,cost]=$b R[dockerd,cost]=$d
row "  bridge cost: bridge - none (ms)" cost
row "HTTP 127.0.0.1:published, c=1 (ms/req)" lat
row "HTTP container address, c=1 (ms/req)" direct
row "HTTP 127.0.0.1:published, c=8 (req/s)" rps
