# shellcheck shell=bash
# Sourced by the bench scripts (after scripts/lib.sh): one private Berth stack.
#
# stack_start PREFIX starts berth-highd and berth-engine from $BERTH_BIN (default
# target/release, else target/debug) in /tmp/PREFIX-XXXXXX with their own cgroup parent
# /berth-bench-<rand>, bridge PREFIX<rand>0 on a random 10.x.y.0/24, nft table
# PREFIX<rand> and --ip-forward=false, so a bench never touches berth0, the host's
# forwarding setting or anyone else's cgroups; imports the busybox image and does one
# warm-up run. Sets BIN DIR CLI HIGHD_PID ENGINE_PID and DOCKER_HOST; an EXIT trap
# removes everything again. The runtime-state dirs (highd --state, engine --exec-root, and
# dockerd's --exec-root) are tmpfs mounts, as /run is on a real host.
#
# With STACK_NETNS=1 the daemons run in a network namespace of their own ($DIR/netns,
# entered with `nsenter --net`, so only the network namespace differs): the bridge, veths
# and nft table live there, and IN_NS runs a command inside it (e.g. a load generator).
#
# dockerd_start PREFIX starts Debian's dockerd the same way for comparisons (see below).
#
# time_ms CMD... times $RUNS runs of a command (mean ms); mean_ms averages microseconds.

stack_start() {
    local prefix=$1 b
    [[ $EUID -eq 0 ]] || die "run as root"
    BIN=${BERTH_BIN:-}
    if [[ -z $BIN ]]; then
        BIN=$PWD/target/release
        [[ -x $BIN/berth-engine ]] || BIN=$PWD/target/debug
    fi
    for b in berth-highd berth-engine berth-shim berth-lowrt berth; do
        [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release --workspace --bins"
    done
    command -v nft >/dev/null || die "nft missing (apt-get install nftables)"

    DIR=$(mktemp -d "/tmp/$prefix-XXXXXX")
    local suffix
    suffix=$(basename "$DIR" | tr -dc 'a-zA-Z0-9' | tr '[:upper:]' '[:lower:]' | tail -c 7)
    STACK_CG=berth-bench-$suffix STACK_BRIDGE=$prefix${suffix}0 STACK_TABLE=$prefix$suffix
    local bip=10.$((64 + RANDOM % 190)).$((RANDOM % 256)).1/24
    HIGHD_PID='' ENGINE_PID=''
    IN_NS=()
    if [[ -n ${STACK_NETNS:-} ]]; then
        make_netns "$DIR/netns"
        IN_NS=(nsenter --net="$DIR/netns")
    fi
    export DOCKER_HOST=unix://$DIR/e.sock DOCKER_CONFIG=$DIR/dc BERTH_HOST=unix://$DIR/e.sock
    if command -v docker >/dev/null; then CLI=(docker); else CLI=("$BIN/berth"); fi
    trap stack_cleanup EXIT

    mkdir -p "$DIR/dc" "$DIR/hs" "$DIR/ex"
    # Runtime state on tmpfs, as /run/berth is on a real host (lowrt, the shim and highd
    # fsync their state files there; on this disk each fsync costs milliseconds).
    mount -t tmpfs -o mode=0711 bench-run "$DIR/hs"
    mount -t tmpfs -o mode=0711 bench-run "$DIR/ex"
    "$BIN/berth-highd" --root "$DIR/h" --state "$DIR/hs" --address "$DIR/h.sock" \
        >>"$DIR/highd.log" 2>&1 </dev/null &
    HIGHD_PID=$!
    wait_socket "$DIR/h.sock" 30 "$HIGHD_PID" ||
        die "berth-highd did not start: $(tail -5 "$DIR/highd.log")"
    "${IN_NS[@]}" "$BIN/berth-engine" --data-root "$DIR/e" --exec-root "$DIR/ex" -H "unix://$DIR/e.sock" \
        --containerd "$DIR/h.sock" --cgroup-parent "/$STACK_CG" --bridge-name "$STACK_BRIDGE" \
        --bip "$bip" --firewall-table "$STACK_TABLE" --ip-forward=false \
        >>"$DIR/engine.log" 2>&1 </dev/null &
    ENGINE_PID=$!
    wait_socket "$DIR/e.sock" 30 "$ENGINE_PID" ||
        die "berth-engine did not start: $(tail -5 "$DIR/engine.log")"

    build_busybox_tar "$DIR/busybox.tar"
    "${CLI[@]}" import "$DIR/busybox.tar" busybox >/dev/null
    "${CLI[@]}" run --rm busybox true >/dev/null 2>&1 || "${CLI[@]}" run --rm busybox true ||
        die "warm-up run failed"
}

# The first live shim of the stack, by its pid file.
stack_shim_pid() {
    local f pid
    for f in "$DIR"/hs/*/*/shim.pid; do
        [[ -e $f ]] && pid=$(pid_is "$f" berth-shim) && echo "$pid" && return 0
    done
    return 1
}

stack_cleanup() {
    set +e
    "${CLI[@]}" ps -aq 2>/dev/null | xargs -r "${CLI[@]}" rm -f >/dev/null 2>&1
    [[ -n $ENGINE_PID ]] && stop_pid "$ENGINE_PID" 10
    [[ -n $HIGHD_PID ]] && stop_pid "$HIGHD_PID" 10
    local f pid d
    for f in "$DIR"/hs/*/*/shim.pid; do
        [[ -e $f ]] && pid=$(pid_is "$f" berth-shim) && kill -KILL "$pid"
    done
    # Only this stack's own names; normally the engine removed them at its clean stop.
    # In a namespace of its own they go with the namespace (unmounted below).
    if ((${#IN_NS[@]} == 0)); then
        [[ -e /sys/class/net/$STACK_BRIDGE ]] && ip link delete "$STACK_BRIDGE"
        nft list table ip "$STACK_TABLE" >/dev/null 2>&1 && nft delete table ip "$STACK_TABLE"
    fi
    for d in /sys/fs/cgroup/*/"$STACK_CG"; do
        [[ -d $d ]] || continue
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    if umount_under "$DIR"; then
        rm -rf "$DIR"
    else
        echo "warning: mounts left under $DIR; not removing it" >&2
    fi
}

# make_netns FILE: a new network namespace kept alive by a bind mount on FILE (as
# `ip netns add`, but inside our own dir), with its loopback up.
make_netns() {
    touch "$1"
    unshare --net="$1" true || die "cannot create a network namespace on $1"
    nsenter --net="$1" ip link set lo up
}

# umount_under DIR: lazily unmounts every mount below DIR, deepest first; fails if any
# is left.
umount_under() {
    awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    ! awk -v p="$1/" 'index($5, p) == 1' /proc/self/mountinfo | grep -q .
}

# dockerd_start PREFIX: Debian's dockerd (docker.io) as a private daemon for comparisons:
# /tmp/PREFIX-XXXXXX holds its --data-root, --exec-root, API socket, --pidfile and an
# empty --config-file (the host's /etc/docker/daemon.json is not read); it runs in a
# network namespace of its own so its docker0 (on a random 10.x.y.0/24 --bip) and its
# iptables rules never touch the host's, with --cgroup-parent /berth-bench-<rand>; its
# containerd is the one dockerd starts and stops itself. Imports the same busybox rootfs
# tar ($DIR/busybox.tar, so call stack_start first) and does a warm-up run. Sets DK_DIR,
# DK_PID, DK (the docker CLI pointed at it) and DK_NS (nsenter into its namespace).
# dockerd itself still uses /run/docker/plugins and /etc/docker/key.json, which no flag
# moves.
dockerd_start() {
    local prefix=$1
    command -v dockerd >/dev/null || die "dockerd missing (apt-get install docker.io)"
    DK_DIR=$(mktemp -d "/tmp/$prefix-XXXXXX")
    DK_CG=berth-bench-$(basename "$DK_DIR" | tr -dc 'a-zA-Z0-9' | tr '[:upper:]' '[:lower:]' | tail -c 7)
    DK_PID=
    trap 'dockerd_cleanup; stack_cleanup' EXIT
    make_netns "$DK_DIR/netns"
    DK_NS=(nsenter --net="$DK_DIR/netns")
    echo '{}' >"$DK_DIR/daemon.json"
    mkdir -p "$DK_DIR/dc" "$DK_DIR/x"
    # Its exec root (containerd's and runc's state too) on tmpfs, as /var/run/docker is.
    mount -t tmpfs -o mode=0711 bench-run "$DK_DIR/x"
    "${DK_NS[@]}" dockerd --config-file "$DK_DIR/daemon.json" --data-root "$DK_DIR/d" \
        --exec-root "$DK_DIR/x" -H "unix://$DK_DIR/d.sock" --pidfile "$DK_DIR/d.pid" \
        --bip "10.$((64 + RANDOM % 190)).$((RANDOM % 256)).1/24" \
        --cgroup-parent "/$DK_CG" >>"$DK_DIR/dockerd.log" 2>&1 </dev/null &
    DK_PID=$!
    DK=(env DOCKER_CONFIG="$DK_DIR/dc" docker -H "unix://$DK_DIR/d.sock")
    wait_socket "$DK_DIR/d.sock" 60 "$DK_PID" ||
        die "dockerd did not start: $(tail -5 "$DK_DIR/dockerd.log")"
    local i
    for ((i = 0; i < 100; i++)); do "${DK[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
    "${DK[@]}" import "$DIR/busybox.tar" busybox >/dev/null
    "${DK[@]}" run --rm busybox true >/dev/null || die "dockerd warm-up run failed"
}

dockerd_cleanup() {
    set +e
    [[ -n ${DK_DIR:-} ]] || return 0
    if [[ -n $DK_PID ]]; then
        "${DK[@]}" ps -aq 2>/dev/null | xargs -r "${DK[@]}" rm -f >/dev/null 2>&1
        stop_pid "$DK_PID" 20
    fi
    # dockerd stops its containerd; anything of this daemon still running (containerd,
    # a shim) names $DK_DIR on its command line.
    local p
    for p in /proc/[0-9]*; do
        grep -qF "$DK_DIR/" "$p/cmdline" 2>/dev/null && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    local d
    for d in /sys/fs/cgroup/*/"$DK_CG"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    if umount_under "$DK_DIR"; then
        rm -rf "$DK_DIR"
    else
        echo "warning: mounts left under $DK_DIR; not removing it" >&2
    fi
    DK_DIR=
}

# mean_ms: the mean of the microsecond values on stdin, in ms; "-" for none.
mean_ms() { awk '{ s += $1 } END { if (NR) printf "%.1f", s / NR / 1000; else print "-" }'; }

# time_ms CMD...: mean wall time in ms of $RUNS runs of CMD (failures are counted and
# reported, not timed).
time_ms() {
    local i t0 t1 failed=0 f
    f=$(mktemp)
    for ((i = 0; i < RUNS; i++)); do
        t0=$(date +%s%N)
        if "$@" >/dev/null 2>&1; then
            t1=$(date +%s%N)
            echo $(((t1 - t0) / 1000)) >>"$f"
        else
            failed=$((failed + 1))
        fi
    done
    ((failed == 0)) || echo "warning: $failed of $RUNS runs failed: $*" >&2
    mean_ms <"$f"
    rm -f "$f"
}
