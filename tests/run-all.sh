#!/usr/bin/env bash
# Every test: the Rust unit and integration tests (over real sockets), the
# app fixtures on the real runtime, and the end-to-end scripts with dig/curl.
# This is the README's test command; .ci/run installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build for everything: the test binaries and target/release/switchyard
# (the e2e scripts' binary) with the same features, so the dependencies are
# compiled once.
cargo nextest run --release --locked --no-run
for script in tests/e2e/*.sh; do
  [ -e "$script" ] || continue
  echo "== $script"
  bash "$script"
done
cargo nextest run --release --locked --no-fail-fast
