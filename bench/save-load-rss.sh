#!/usr/bin/env bash
# Peak memory of berth-engine while it imports, saves and loads a big image (not a test):
# an image of MB megabytes of random data (default 300, in 3 files, so nothing compresses)
# is imported, saved with `docker save -o`, removed and loaded again with `docker load -i`
# and from stdin. Before each step the engine's peak RSS is reset (`5 > clear_refs`); the
# row prints VmHWM after the step and its growth over VmRSS before it, in MB.
# Run as root after building (debug binaries are fine: the numbers are about buffering):
#   cargo build --workspace --bins && bench/save-load-rss.sh [MB]
# Isolation: bench/stack.sh (private temp dirs and cgroup parent, removed on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/stack.sh

MB=${1:-300}
stack_start sl

kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$ENGINE_PID/status"; }

step() {
    local name=$1 before
    shift
    before=$(kb VmRSS)
    echo 5 >"/proc/$ENGINE_PID/clear_refs"
    "$@" >/dev/null
    printf '%-22s peak %5d MB  growth %5d MB\n' "$name" \
        $(($(kb VmHWM) / 1024)) $((($(kb VmHWM) - before) / 1024))
}

mkdir -p "$DIR/rootfs"
for i in 1 2 3; do
    head -c $((MB / 3))M /dev/urandom >"$DIR/rootfs/f$i"
done
tar -C "$DIR/rootfs" -cf "$DIR/big.tar" .
rm -rf "$DIR/rootfs"

echo "berth-engine ($BIN), image of $MB MB"
step "import" "${CLI[@]}" import "$DIR/big.tar" big:1
rm -f "$DIR/big.tar"
step "save -o" "${CLI[@]}" save -o "$DIR/save.tar" big:1
"${CLI[@]}" rmi big:1 >/dev/null
step "load -i" "${CLI[@]}" load -i "$DIR/save.tar"
"${CLI[@]}" rmi big:1 >/dev/null
# shellcheck disable=SC2016 # expanded by the inner shell
step "load < stdin" sh -c '"$@" < "$0"' "$DIR/save.tar" "${CLI[@]}" load
