#!/usr/bin/env bash
# Stats store load bench: 100k signed posts through the real handler
# (posts/s), then the table grown to 1M rows over 7 days and the
# aggregated query timed (median of 9 runs) — on SQLite, and on PostgreSQL
# when SWITCHYARD_TEST_POSTGRES (or POSTGRES) holds a URL.
#
#   bench/stats-load.sh                    # defaults
#   POSTS=20000 ROWS=200000 bench/stats-load.sh
#
# The run is capped at 5 minutes (the build before it is not). Output is
# printed and kept in target/bench/stats-load.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

POSTS="${POSTS:-100000}"
ROWS="${ROWS:-1000000}"
CONCURRENCY="${CONCURRENCY:-32}"
PG_URL="${SWITCHYARD_TEST_POSTGRES:-${POSTGRES:-}}"

cargo build --release --example stats_load
mkdir -p target/bench

args=(--posts "$POSTS" --rows "$ROWS" --concurrency "$CONCURRENCY")
if [[ -n "$PG_URL" ]]; then
    args+=(--postgres "$PG_URL")
fi

{
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -m) $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    RUST_LOG="${RUST_LOG:-error}" timeout 300 target/release/examples/stats_load "${args[@]}"
} 2>&1 | tee target/bench/stats-load.txt
exit "${PIPESTATUS[0]}"
