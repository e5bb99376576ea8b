#!/usr/bin/env bash
# Hot-reload latency: 100 app rewrites under a continuous UDP query stream.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo run --release --locked --example reload_bench -- target/release/switchyard
