#!/usr/bin/env bash
# Runs the whole test suite: unit, property, conformance, golden-fixture and end-to-end tests.
# The end-to-end tests drive the built `mover` binary; tests that need root (tmpfs, loop
# devices) fail rather than skip when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build -p mover
cargo test --workspace --no-fail-fast
