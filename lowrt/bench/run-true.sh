#!/bin/sh
# Times `run` of busybox `true` with berth-lowrt, runc and crun (when installed) using
# hyperfine. Usage: lowrt/bench/run-true.sh [berth-lowrt binary]. Needs root.
set -eu
BIN=${1:-$(dirname "$0")/../../target/release/berth-lowrt}
BIN=$(realpath "$BIN")
T=$(mktemp -d /tmp/lowrt-bench.XXXXXX)
CG=/berth-test-bench-$$
cleanup() {
    for d in /sys/fs/cgroup/*/"${CG#/}"; do [ -d "$d" ] && { rmdir "$d"/* 2>/dev/null || true; rmdir "$d" || true; }; done
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/b/rootfs/bin" "$T/b/rootfs/proc" "$T/b/rootfs/dev" "$T/b/rootfs/sys"
cp /bin/busybox "$T/b/rootfs/bin/"
ln -s busybox "$T/b/rootfs/bin/true"
cd "$T/b"
runc spec
jq ".process.terminal=false | .process.args=[\"/bin/true\"] | .linux.cgroupsPath=\"$CG/c\"" config.json > c && mv c config.json
set -- -N --warmup 20 --runs 200 -n berth-lowrt "$BIN --root $T/berth run c"
if command -v runc >/dev/null; then set -- "$@" -n runc "runc --root $T/runc run c"; fi
if command -v crun >/dev/null; then set -- "$@" -n crun "crun --root $T/crun run c"; fi
hyperfine "$@"
