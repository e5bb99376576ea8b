#!/usr/bin/env bash
# Deploys under load (issue 29): dnsperf queries an app for 12 s while the
# binary the server runs from is replaced by a rename (as a package upgrade
# does), the supervisor is told to pick it up (SIGUSR2), the file is
# deleted, and the serving process is killed with SIGKILL. Prints what
# dnsperf lost and the supervisor's lines about it.
# Usage: bench/upgrade.sh [seconds, default 12]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-12}"
command -v dnsperf >/dev/null || { apt-get update -qq && apt-get install -y -qq dnsperf >/dev/null; }
cargo build --release --locked
out=target/bench/upgrade; rm -rf "$out"; mkdir -p "$out/bin"
cp target/release/switchyard "$out/bin/switchyard"
for i in $(seq 1 5000); do echo "q$i.best-rtt.switchyard.test A"; done > "$out/app.txt"

RUST_LOG=info "$out/bin/switchyard" serve --dns 127.0.0.1:0 --http 127.0.0.1:0 --admin 127.0.0.1:0 \
  --data-dir "$out/data" 2>"$out/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do grep -q "switchyard ready" "$out/server.log" && break; sleep 0.05; done
port=$(grep -m1 "listening for DNS over UDP" "$out/server.log" | sed 's/.*addr=127.0.0.1:\([0-9]*\).*/\1/')
serving() { cat /proc/$pid/task/*/children | tr ' ' '\n' | grep -m1 .; }

dnsperf -s 127.0.0.1 -p "$port" -d "$out/app.txt" -l "$secs" -c 4 -Q 5000 > "$out/dnsperf.txt" 2>&1 &
perf=$!
sleep 2
cp target/release/switchyard "$out/bin/switchyard.new" && mv "$out/bin/switchyard.new" "$out/bin/switchyard"
kill -USR2 $pid
echo "t=2s  renamed a new binary over the path; SIGUSR2"
sleep 3
rm "$out/bin/switchyard"
child=$(serving)
kill -9 "$child"
echo "t=5s  deleted the binary; kill -9 $child (the serving process)"
wait $perf
echo "dnsperf, ${secs}s at 5000 qps, $(date -u +%F):"
grep -E "Queries (sent|completed|lost)" "$out/dnsperf.txt"
grep -E "serving process (started|died)|upgraded|drained|upgrade failed" "$out/server.log" \
  | sed 's/^.*\(INFO\|ERROR\|WARN\) *//'
