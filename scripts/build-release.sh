#!/usr/bin/env bash
# Release build of every program, with berth-lowrt linked statically (glibc and
# libseccomp, no PIE): it is exec'd twice per container operation, and a static binary
# skips ld.so, its relocations and libgcc_s's start-up, whose cpuid instructions trap to
# the hypervisor on VMs (~1 ms of a ~6 ms `run`; see docs/lowrt.md, Speed). The runtime
# uses no NSS (users come from the container's own /etc/passwd), so nothing needs
# glibc's shared NSS modules at run time. The debug build the tests use stays dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
# Static libseccomp (libseccomp-dev ships libseccomp.a), and crt-static for this one
# binary only: as a workspace RUSTFLAGS it would also reach proc-macros and the others.
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$(dirname "$(gcc -print-file-name=libseccomp.a)")" \
    cargo rustc --release -p berth-lowrt --bin berth-lowrt -- \
    -C target-feature=+crt-static -C relocation-model=static
if ldd target/release/berth-lowrt >/dev/null 2>&1; then
    echo "target/release/berth-lowrt is not static" >&2
    exit 1
fi
