#!/usr/bin/env bash
# Issue #5's benchmark table: berth-engine next to Debian's dockerd (docker.io 20.10) in the
# same run, through the same docker CLI (not a test):
#   - `run --rm busybox true` latency, with --network none and on the default bridge;
#   - `run -d` of N_SEQ containers one after another, then N_PAR more with xargs -P PAR
#     (--network none, `sleep`: they keep running);
#   - `ps` with those N_SEQ + N_PAR (default 200) running containers;
#   - memory with them running: the summed PSS (from /proc/PID/smaps_rollup) and RSS of
#     every process of the stack, found by PID: berth-engine + berth-highd + each
#     berth-shim (by its pid file) against dockerd + its containerd + each
#     containerd-shim-runc-v2 (the processes naming dockerd's temp dir on their command
#     line); the containers' own processes are not counted;
#   - `pull` of a PULL_MB (default 100) MB image of PULL_LAYERS random-data layers on
#     busybox from a local docker-registry on loopback, `rmi` between runs. Each run pulls
#     an image of its own (all layers fresh, the busybox one too): highd keeps the layers
#     of a removed image for its GC grace period (600 s), so a second pull of the same
#     image would download nothing.
# Run as root after building:
#   cargo build --release --workspace --bins && bench/engine-scale.sh [RUNS]
# RUNS (default 10) is the number of runs of each latency row; pulls run PULL_RUNS (default
# 3) times. BERTH_BIN picks the binaries (default target/release, else target/debug: say
# which in any number you quote). Takes about 10 min with the defaults.
#
# Isolation: as bench/engine.sh (private temp dirs, cgroup parents /berth-bench-<rand>, each
# daemon in a network namespace of its own). The registry runs twice, once in each
# daemon's namespace on its 127.0.0.1:5000 (so no port is taken on the host), both serving
# one storage dir under $DIR that skopeo filled once. Everything we started is stopped by
# PID and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/stack.sh

RUNS=${1:-10}
PULL_RUNS=${PULL_RUNS:-3}
N_SEQ=${N_SEQ:-100}
N_PAR=${N_PAR:-100}
PAR=${PAR:-8}
PULL_MB=${PULL_MB:-100}
PULL_LAYERS=${PULL_LAYERS:-4}
for t in docker-registry skopeo jq gzip sha256sum; do
    command -v "$t" >/dev/null || die "$t missing (apt-get install docker-registry skopeo jq)"
done

STACK_NETNS=1 stack_start bs
dockerd_start bu
REG_PIDS=()
scale_cleanup() {
    local p
    for p in "${REG_PIDS[@]}"; do stop_pid "$p" 5; done
    REG_PIDS=()
}
trap 'scale_cleanup; dockerd_cleanup; stack_cleanup' EXIT

REG=127.0.0.1:5000
IMAGE=$REG/bench/big

# blob LAYOUT FILE: moves FILE into the OCI layout's blobs and prints its digest.
blob() {
    local hex
    hex=$(sha256sum "$2" | cut -d' ' -f1)
    mv "$2" "$1/blobs/sha256/$hex"
    echo "sha256:$hex"
}

# build_layout DIR: an OCI image layout (ref `latest`): the busybox rootfs (with a file
# making it unlike any other image's) plus PULL_LAYERS layers of random data, PULL_MB MB
# in all, each a gzip layer.
build_layout() {
    local dir=$1 i tmp diff_ids=() layers=() size=$((PULL_MB * 1024 * 1024 / PULL_LAYERS))
    mkdir -p "$dir/blobs/sha256"
    tmp=$(mktemp -d "$dir/.work-XXXXXX")
    layer() { # layer TAR: appends TAR as a gzip layer
        diff_ids+=("\"sha256:$(sha256sum "$1" | cut -d' ' -f1)\"")
        gzip -1 -n -c "$1" >"$tmp/l.gz"
        local s
        s=$(stat -c %s "$tmp/l.gz")
        layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$(blob "$dir" "$tmp/l.gz")\",\"size\":$s}")
    }
    cp "$DIR/busybox.tar" "$tmp/base.tar"
    mkdir -p "$tmp/b/etc"
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/b/etc/bench-image"
    tar --numeric-owner --owner=0 --group=0 -C "$tmp/b" -rf "$tmp/base.tar" etc/bench-image
    layer "$tmp/base.tar"
    for ((i = 0; i < PULL_LAYERS; i++)); do
        mkdir -p "$tmp/r$i/data"
        head -c "$size" /dev/urandom >"$tmp/r$i/data/random-$i"
        tar --numeric-owner --owner=0 --group=0 -C "$tmp/r$i" -cf "$tmp/l.tar" data
        layer "$tmp/l.tar"
    done
    local ids ls cfg cs man ms
    ids=$(IFS=,; echo "${diff_ids[*]}")
    ls=$(IFS=,; echo "${layers[*]}")
    jq -cn --argjson ids "[$ids]" '{architecture: "amd64", os: "linux",
        config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["sh"]},
        rootfs: {type: "layers", diff_ids: $ids}}' >"$tmp/c"
    cs=$(stat -c %s "$tmp/c")
    cfg=$(blob "$dir" "$tmp/c")
    jq -cn --arg cfg "$cfg" --argjson cs "$cs" --argjson ls "[$ls]" '{schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cfg, size: $cs},
        layers: $ls}' >"$tmp/m"
    ms=$(stat -c %s "$tmp/m")
    man=$(blob "$dir" "$tmp/m")
    jq -cn --arg man "$man" --argjson ms "$ms" '{schemaVersion: 2, manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $man, size: $ms,
        annotations: {"org.opencontainers.image.ref.name": "latest"}}]}' >"$dir/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
    rm -rf "$tmp"
}

# registry_start NS...: a docker-registry on 127.0.0.1:5000 inside the namespace entered by
# the command NS (nsenter execs it, so $! is the registry), serving $DIR/registry.
registry_start() {
    local cfg=$DIR/registry.yml i
    if [[ ! -e $cfg ]]; then
        mkdir -p "$DIR/registry"
        printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
            "$DIR/registry" "$REG" >"$cfg"
    fi
    "$@" docker-registry serve "$cfg" >>"$DIR/registry.log" 2>&1 </dev/null &
    REG_PIDS+=($!)
    for ((i = 0; i < 100; i++)); do
        "$@" bash -c "exec 3<>/dev/tcp/${REG%:*}/${REG#*:}" 2>/dev/null && return 0
        kill -0 "${REG_PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    die "docker-registry did not start: $(tail -5 "$DIR/registry.log")"
}

echo "building $((2 * PULL_RUNS)) images of ${PULL_MB} MB and pushing them into the registry" >&2
registry_start "${IN_NS[@]}"
for ((i = 0; i < 2 * PULL_RUNS; i++)); do
    build_layout "$DIR/oci"
    "${IN_NS[@]}" skopeo --insecure-policy copy -q --dest-tls-verify=false \
        "oci:$DIR/oci:latest" "docker://$IMAGE:$i" >/dev/null
    rm -rf "$DIR/oci"
done
registry_start "${DK_NS[@]}"

declare -A R

# elapsed_ms CMD...: wall time of one run of CMD in ms (its output discarded).
elapsed_ms() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null || echo "warning: failed: $*" >&2
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

run_seq() {
    local i
    for ((i = 0; i < N_SEQ; i++)); do "$@" run -d --network none busybox sleep 3600 >/dev/null; done
}

run_par() {
    seq "$N_PAR" | xargs -P "$PAR" -I{} "$@" run -d --network none busybox sleep 3600 >/dev/null
}

# stack_kb KIND PID...: the summed Pss (KIND=Pss) or Rss of the processes, in KiB.
stack_kb() {
    local kind=$1 p s=0 v
    shift
    for p in "$@"; do
        v=$(awk -v k="$kind:" '$1 == k { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        s=$((s + ${v:-0}))
    done
    echo "$s"
}

berth_pids() {
    local f pid
    printf "%s\n" "$ENGINE_PID" "$HIGHD_PID"
    for f in "$DIR"/hs/*/*/shim.pid; do
        [[ -e $f ]] && pid=$(pid_is "$f" berth-shim) && echo "$pid"
    done
}

# dockerd's processes: dockerd, and every containerd / containerd-shim-runc-v2 whose
# command line names its temp dir (the shims name containerd's socket under its exec root).
dockerd_pids() {
    local p exe
    echo "$DK_PID"
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        case ${exe##*/} in
        containerd | containerd-shim-runc-v2) grep -qF "$DK_DIR/" "$p/cmdline" 2>/dev/null && echo "${p#/proc/}" ;;
        esac
    done
}

# pull_once REF CLI...: one pull; warns unless every layer was downloaded.
pull_once() {
    local ref=$1 out
    shift
    out=$("$@" pull "$ref" 2>&1) || { echo "$out" >&2; return 1; }
    (($(grep -c 'Pull complete' <<<"$out") == PULL_LAYERS + 1)) ||
        { echo "warning: not every layer was downloaded: $out" >&2; }
}

measure() {
    local who=$1 pids=$2 first=$3 f i t
    shift 3
    R[$who,run_none]=$(time_ms "$@" run --rm --network none busybox true)
    R[$who,run_bridge]=$(time_ms "$@" run --rm busybox true)
    R[$who,seq]=$(elapsed_ms run_seq "$@")
    R[$who,par]=$(elapsed_ms run_par "$@")
    local n
    n=$("$@" ps -q | wc -l)
    ((n == N_SEQ + N_PAR)) || echo "warning: $who: $n containers running, not $((N_SEQ + N_PAR))" >&2
    R[$who,ps]=$(time_ms "$@" ps)
    mapfile -t P < <("$pids")
    R[$who,procs]=${#P[@]}
    ((${#P[@]} == N_SEQ + N_PAR + 2)) ||
        echo "warning: $who: ${#P[@]} processes counted, not $((N_SEQ + N_PAR + 2)): ${P[*]}" >&2
    R[$who,pss]=$(($(stack_kb Pss "${P[@]}") / 1024))
    R[$who,rss]=$(($(stack_kb Rss "${P[@]}") / 1024))
    R[$who,rm]=$(elapsed_ms bash -c "$(printf '%q ' "$@") ps -q | xargs -r $(printf '%q ' "$@") rm -f")
    f=$(mktemp)
    for ((i = 0; i < PULL_RUNS; i++)); do
        t=$(elapsed_ms pull_once "$IMAGE:$((first + i))" "$@")
        echo $((t * 1000)) >>"$f"
        "$@" rmi "$IMAGE:$((first + i))" >/dev/null
    done
    R[$who,pull]=$(mean_ms <"$f")
    rm -f "$f"
}

echo "measuring berth" >&2
measure berth berth_pids 0 "${CLI[@]}"
echo "measuring dockerd" >&2
measure dockerd dockerd_pids "$PULL_RUNS" "${DK[@]}"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
row() { printf '| %-46s | %10s | %10s | %6s |\n' "$1" "${R[berth,$2]}" "${R[dockerd,$2]}" "$(ratio "${R[berth,$2]}" "${R[dockerd,$2]}")"; }
echo "== docker CLI $(docker version -f '{{.Client.Version}}' 2>/dev/null), dockerd $(dockerd --version | cut -d' ' -f3 | tr -d ,), berth from $BIN, $(nproc) cores"
printf '| %-46s | %10s | %10s | %6s |\n' "" berth dockerd ratio
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..48})" ------------ ------------ --------
row "run --rm --network none true, ms ($RUNS runs)" run_none
row "run --rm true (default bridge), ms" run_bridge
row "run -d, $N_SEQ sequential, total ms" seq
row "run -d, $N_PAR with xargs -P$PAR, total ms" par
row "ps, $((N_SEQ + N_PAR)) running, ms" ps
row "PSS of the stack, $((N_SEQ + N_PAR)) running, MiB" pss
row "RSS of the stack, $((N_SEQ + N_PAR)) running, MiB" rss
row "  (processes counted)" procs
row "rm -f of the $((N_SEQ + N_PAR)), total ms" rm
row "pull ${PULL_MB} MB, $((PULL_LAYERS + 1)) layers, ms ($PULL_RUNS runs)" pull
