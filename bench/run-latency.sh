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
. bench/stack.sh

RUNS=${1:-20}
stack_start bb

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
SHIM_PID=$(stack_shim_pid || true)

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
