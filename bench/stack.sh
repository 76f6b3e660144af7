# Sourced by the bench scripts (after scripts/lib.sh): one private Berth stack.
#
# stack_start PREFIX starts berth-highd and berth-engine from $BERTH_BIN (default
# target/release, else target/debug) in /tmp/PREFIX-XXXXXX with their own cgroup parent
# /berth-bench-<rand>, bridge PREFIX<rand>0 on a random 10.x.y.0/24, nft table
# PREFIX<rand> and --ip-forward=false, so a bench never touches berth0, the host's
# forwarding setting or anyone else's cgroups; imports the busybox image and does one
# warm-up run. Sets BIN DIR CLI HIGHD_PID ENGINE_PID and DOCKER_HOST; an EXIT trap
# removes everything again.

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
    suffix=$(basename "$DIR" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z' | tail -c 7)
    STACK_CG=berth-bench-$suffix STACK_BRIDGE=$prefix${suffix}0 STACK_TABLE=$prefix$suffix
    local bip=10.$((64 + RANDOM % 190)).$((RANDOM % 256)).1/24
    HIGHD_PID= ENGINE_PID=
    export DOCKER_HOST=unix://$DIR/e.sock DOCKER_CONFIG=$DIR/dc BERTH_HOST=unix://$DIR/e.sock
    if command -v docker >/dev/null; then CLI=(docker); else CLI=("$BIN/berth"); fi
    trap stack_cleanup EXIT

    mkdir -p "$DIR/dc"
    "$BIN/berth-highd" --root "$DIR/h" --state "$DIR/hs" --address "$DIR/h.sock" \
        >>"$DIR/highd.log" 2>&1 </dev/null &
    HIGHD_PID=$!
    wait_socket "$DIR/h.sock" 30 "$HIGHD_PID" ||
        die "berth-highd did not start: $(tail -5 "$DIR/highd.log")"
    "$BIN/berth-engine" --data-root "$DIR/e" --exec-root "$DIR/ex" -H "unix://$DIR/e.sock" \
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
    [[ -e /sys/class/net/$STACK_BRIDGE ]] && ip link delete "$STACK_BRIDGE"
    nft list table ip "$STACK_TABLE" >/dev/null 2>&1 && nft delete table ip "$STACK_TABLE"
    for d in /sys/fs/cgroup/*/"$STACK_CG"; do
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
