#!/usr/bin/env bash
# QPS of Switchyard's DNS front end with dnsperf (loopback, bounded): one
# example app (best-rtt, every query runs the app; half the queries carry an
# ECS subnet from the shipped geo networks) and a static record for scale.
# Usage: bench/dns.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
command -v dnsperf >/dev/null || { apt-get update -qq && apt-get install -y -qq dnsperf >/dev/null; }
cargo build --release --locked
out=target/bench/dns; rm -rf "$out"; mkdir -p "$out"
for i in $(seq 1 5000); do
  echo "q$i.best-rtt.switchyard.test A"
done > "$out/app.txt"
for i in $(seq 1 5000); do echo "static.switchyard.test A"; done > "$out/static.txt"

RUST_LOG=info target/release/switchyard serve --dns 127.0.0.1:0 --http 127.0.0.1:0 --admin 127.0.0.1:0 \
  --data-dir "$out/data" 2>"$out/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do grep -q "switchyard ready" "$out/server.log" && break; sleep 0.05; done
port=$(grep -m1 "listening for DNS over UDP" "$out/server.log" | sed 's/.*addr=127.0.0.1:\([0-9]*\).*/\1/')

run() { # name file extra-args...
  local name=$1 file=$2; shift 2
  local r
  r=$(dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$secs" -c 4 -Q 200000 "$@" 2>&1)
  local qps lost lat
  qps=$(echo "$r" | awk '/Queries per second/ {print $4}')
  lost=$(echo "$r" | awk '/Queries lost/ {print $3}')
  lat=$(echo "$r" | awk '/Average Latency/ {print $4}')
  printf "%-28s %10s qps  avg latency %ss  lost %s\n" "$name" "$qps" "$lat" "$lost"
}
echo "dnsperf, ${secs}s per run, $(nproc) cores shared with dnsperf, $(date -u +%F)"
run "static record" "$out/static.txt"
run "best-rtt app, no ECS" "$out/app.txt"
run "best-rtt app, ECS /24" "$out/app.txt" -E 8:00011800c6336400
run "static record" "$out/static.txt"
run "best-rtt app, no ECS" "$out/app.txt"
