#!/usr/bin/env bash
# Requests/s of the HTTP decision endpoint with wrk (loopback, bounded).
# Usage: bench/http.sh [seconds, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked
out=target/bench/http; rm -rf "$out"; mkdir -p "$out"
RUST_LOG=info target/release/switchyard serve --dns 127.0.0.1:0 --http 127.0.0.1:0 --admin 127.0.0.1:0 \
  --data-dir "$out/data" 2>"$out/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do grep -q "switchyard ready" "$out/server.log" && break; sleep 0.05; done
addr=$(grep -m1 "listening for HTTP decisions" "$out/server.log" | sed 's/.*addr=\([0-9.:]*\).*/\1/')
echo "wrk, ${secs}s, 2 threads, 32 connections, $(date -u +%F)"
for app in http-hosts geo-map; do
  printf "%-12s " "$app"
  wrk -t2 -c32 -d"${secs}s" "http://$addr/apps/$app/decision" | awk '/Requests\/sec/ {printf "%s req/s  ", $2} /Latency/ {printf "avg latency %s\n", $2}'
done
