#!/usr/bin/env bash
# DNS QPS with decision reporting on and off (issue 12's "counting must not
# cost measurable QPS"): two servers, the shipped config, one with
# `[reports] enabled = false` (no store writes or fleet reads; the node's own
# counters still count), measured alternately with dnsperf so drifting
# machine load hits both alike. Usage: bench/reports.sh [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; rounds="${2:-3}"
command -v dnsperf >/dev/null || { apt-get update -qq && apt-get install -y -qq dnsperf >/dev/null; }
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked
out=target/bench/reports; rm -rf "$out"; mkdir -p "$out"
for i in $(seq 1 5000); do echo "q$i.best-rtt.switchyard.test A"; done > "$out/app.txt"
cp examples/switchyard.toml "$out/on.toml"
{ cat examples/switchyard.toml; printf '\n[reports]\nenabled = false\n'; } > "$out/off.toml"
# `start` runs in a command substitution (a subshell), so pids go to files.
stop_all() {
  for f in "$out"/*.pid; do
    [ -e "$f" ] || continue
    # SIGTERM to the supervisor stops it and its serving process.
    kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 2
}
trap stop_all EXIT
start() { # name
  RUST_LOG=info POSTGRES= target/release/switchyard serve --config "$out/$1.toml" --dns 127.0.0.1:0 \
    --http 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir "$out/data-$1" >/dev/null 2>"$out/$1.log" &
  echo $! > "$out/$1.pid"
  for _ in $(seq 1 200); do grep -q "switchyard ready" "$out/$1.log" && break; sleep 0.05; done
  grep -m1 "listening for DNS over UDP" "$out/$1.log" | sed 's/.*addr=127.0.0.1:\([0-9]*\).*/\1/'
}
on=$(start on); off=$(start off)
run() { # name port
  local r qps lost
  r=$(dnsperf -s 127.0.0.1 -p "$2" -d "$out/app.txt" -l "$secs" -c 4 -Q 200000 2>&1)
  qps=$(echo "$r" | awk '/Queries per second/ {print $4}')
  lost=$(echo "$r" | awk '/Queries lost/ {print $3}')
  printf "%-14s %10s qps  lost %s\n" "$1" "$qps" "$lost"
}
echo "dnsperf, best-rtt app, ${secs}s per run, $(nproc) cores shared with dnsperf and the idle twin, $(date -u +%F)"
for _ in $(seq 1 "$rounds"); do
  run "reports on" "$on"
  run "reports off" "$off"
done
