# Shared helpers for Berth's scripts (sourced, not run).

die() { echo "error: $*" >&2; exit 1; }

# apt_install PKG...: installs the packages not yet installed; runs `apt-get update` only
# when the package lists are missing or an install from the current lists fails.
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
        apt-get update -q
    fi
    if ! apt-get install -y -q "${missing[@]}"; then
        apt-get update -q
        apt-get install -y -q "${missing[@]}"
    fi
}

# wait_socket PATH SECONDS PID: polls until PATH is a socket; fails early if PID dies.
wait_socket() {
    local sock=$1 secs=$2 pid=$3 deadline
    deadline=$(($(date +%s) + secs))
    until [[ -S $sock ]]; do
        kill -0 "$pid" 2>/dev/null || return 1
        (($(date +%s) < deadline)) || return 1
        sleep 0.1
    done
}

# pid_is PIDFILE NAME: prints the PID in PIDFILE if that process is alive and runs the
# binary NAME (judged by /proc/PID/exe: the shim re-executes itself as /proc/self/exe).
pid_is() {
    local pidfile=$1 name=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    local exe
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [[ ${exe##*/} == "$name" || ${exe##*/} == "$name (deleted)" ]] || return 1
    echo "$pid"
}

# stop_pid PID SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL.
stop_pid() {
    local pid=$1 secs=$2 deadline
    kill -TERM "$pid" 2>/dev/null || return 0
    deadline=$(($(date +%s) + secs))
    while kill -0 "$pid" 2>/dev/null; do
        if (($(date +%s) >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
}

# build_busybox_tar DEST: a rootfs tar from the host's static busybox (busybox-static),
# with a symlink per applet, /etc/passwd and /etc/group.
build_busybox_tar() {
    local dest=$1 root
    [[ -x /bin/busybox ]] || die "/bin/busybox missing (apt-get install busybox-static)"
    root=$(mktemp -d /tmp/berth-rootfs-XXXXXX)
    mkdir -p "$root"/{bin,dev,etc,proc,root,sys,tmp,usr,var}
    chmod 1777 "$root/tmp"
    chmod 700 "$root/root"
    cp /bin/busybox "$root/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list) sh; do
        [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$dest" bin dev etc proc root sys tmp usr var
    rm -rf "$root"
}
