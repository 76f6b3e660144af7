#!/usr/bin/env bash
# Builds every binary (the end-to-end tests drive them from target/debug), then runs all
# tests. Run as root: tests that need root, the docker CLI or busybox print "SKIP:" and are
# counted as ignored otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
# --no-fail-fast: one failing crate must not hide the results of the others.
cargo test --workspace --no-fail-fast "$@"
