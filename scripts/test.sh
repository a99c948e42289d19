#!/usr/bin/env bash
# Runs the whole test suite: unit, property, conformance, golden-fixture and end-to-end tests,
# including the S3 tests against real Garage and s3s-fs servers that this script installs
# (once, with cargo install) and starts on loopback, and stops when the tests end.
# Tests that need root (tmpfs, loop devices) or the S3 servers fail rather than skip when
# CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --demo
cargo build -p mover-cli

state=$(mktemp -d -t mover-s3.XXXXXX)
cleanup() {
    scripts/s3-servers.sh stop "$state" || true
    rm -rf "$state"
}
trap cleanup EXIT
if scripts/s3-servers.sh start "$state"; then
    # shellcheck disable=SC1091
    source "$state/env"
else
    echo "test: the S3 test servers did not start; the S3 tests will fail under CI=true" >&2
fi

cargo test --workspace --no-fail-fast
