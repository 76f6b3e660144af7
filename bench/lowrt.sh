#!/bin/bash
# berth-lowrt against runc and crun, same run, same bundle: `run` of busybox `true`,
# create+start+delete, the kernel floor (`unshare -fmpiun true`), peak RSS of the runtime
# process tree and binary size. Prints a markdown table with ratios to runc.
# Usage: bench/lowrt.sh [berth-lowrt binary [baseline binary]] (default
# target/release/berth-lowrt, as scripts/build-release.sh links it: static; a baseline,
# e.g. a build of main or the dynamic `cargo build --release` one, gets its own row). Root.
# Needs hyperfine, jq, runc; crun when installed (apt-get install -y crun hyperfine).
#
# crun refuses this host's hybrid cgroups (a cgroup2 mount at /sys/fs/cgroup/unified
# whose cgroup.controllers is empty is not what it expects). In a private mount namespace
# an empty file is bind-mounted over that cgroup.controllers, which makes crun take the
# v1 path; nothing outside the namespace changes, and all runtimes run the same way.
set -euo pipefail
RUNS=${RUNS:-100}
if [ -z "${LOWRT_BENCH_INNER:-}" ]; then
    export LOWRT_BENCH_INNER=1
    exec unshare -m --propagation private "$0" "$@"
fi
BIN=$(realpath "${1:-$(dirname "$0")/../target/release/berth-lowrt}")
T=$(mktemp -d /tmp/lowrt-bench.XXXXXX)
CG=berth-test-bench-$$
cleanup() {
    for d in /sys/fs/cgroup/*/"$CG"; do
        [ -d "$d" ] || continue
        for c in "$d"/*/; do [ -d "$c" ] && rmdir "$c" 2>/dev/null || true; done
        rmdir "$d" 2>/dev/null || true
    done
    umount "$T/roots" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
if [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then
    : > "$T/empty"
    mount --bind "$T/empty" /sys/fs/cgroup/unified/cgroup.controllers
fi

# State roots on tmpfs, as /run/runc, /run/crun and /run/berth/lowrt are on a real host
# (berth-lowrt fsyncs state.json; on a disk that alone costs 10+ ms).
mkdir -p "$T/roots"
mount -t tmpfs tmpfs "$T/roots"
mkdir -p "$T/rootfs/bin" "$T/rootfs/proc" "$T/rootfs/dev" "$T/rootfs/sys"
cp /bin/busybox "$T/rootfs/bin/"
ln -s busybox "$T/rootfs/bin/true"
(cd "$T" && runc spec)

names=(berth-lowrt runc)
bins=("$BIN" "$(command -v runc)")
if [ -n "${2:-}" ]; then names+=(berth-lowrt-baseline); bins+=("$(realpath "$2")"); fi
if command -v crun >/dev/null; then names+=(crun); bins+=("$(command -v crun)"); fi
for i in "${!names[@]}"; do
    n=${names[$i]}
    mkdir -p "$T/$n"
    jq ".process.terminal=false | .process.args=[\"/bin/true\"] | .root.path=\"$T/rootfs\" | .linux.cgroupsPath=\"/$CG/$n\"" \
        "$T/config.json" > "$T/$n/config.json"
done

run_args=(-N --warmup 10 --runs "$RUNS" --export-json "$T/run.json")
cycle_args=(--warmup 10 --runs "$RUNS" --export-json "$T/cycle.json")
for i in "${!names[@]}"; do
    n=${names[$i]} b=${bins[$i]} r="$T/roots/state-$n"
    run_args+=(-n "$n" "$b --root $r run --bundle $T/$n c")
    cycle_args+=(-n "$n" "$b --root $r create --bundle $T/$n c && $b --root $r start c && $b --root $r delete --force c")
done
run_args+=(-n floor "unshare -fmpiun true")
hyperfine "${run_args[@]}" >&2
hyperfine "${cycle_args[@]}" >&2

median() { jq -r --arg n "$2" '.results[] | select(.command==$n) | .median * 1000' "$1"; }
rss() { # peak RSS (KiB) of `run`: the runtime and every process it waited for
    /usr/bin/time -f %M "$1" --root "$T/roots/rss-$2" run --bundle "$T/$2" c 2>&1 >/dev/null | tail -1
}
runc_run=$(median "$T/run.json" runc)
runc_cycle=$(median "$T/cycle.json" runc)
echo
echo "| runtime | run median ms | × runc | create+start+delete median ms | × runc | peak RSS KiB | binary bytes |"
echo "|---|---|---|---|---|---|---|"
for i in "${!names[@]}"; do
    n=${names[$i]}
    r=$(median "$T/run.json" "$n")
    c=$(median "$T/cycle.json" "$n")
    printf '| %s | %.1f | %.2f | %.1f | %.2f | %s | %s |\n' "$n" "$r" \
        "$(echo "$r / $runc_run" | bc -l)" "$c" "$(echo "$c / $runc_cycle" | bc -l)" \
        "$(rss "${bins[$i]}" "$n")" "$(stat -L -c %s "${bins[$i]}")"
done
f=$(median "$T/run.json" floor)
printf '| kernel floor (unshare -fmpiun true) | %.1f | %.2f | | | | |\n' "$f" "$(echo "$f / $runc_run" | bc -l)"
