#!/usr/bin/env bash
# Memory under sustained load with nothing scraping /metrics (issue #31):
# the release binary with the shipped defaults (the shipped apps/, geo/
# and examples/data/ copied into a temp dir, no config file; only the
# listeners moved to free loopback ports), dnsperf at a fixed rate over a mix of static, memoised
# (best-rtt), non-memoised (fusion-budget) and NXDOMAIN queries, and a
# bounded curl loop of HTTP decisions on the public listener. The serving
# process's RSS (the supervisor's child, VmRSS) is sampled every 30 s and its
# growth printed. Bounded in time, loopback only.
# Usage: bench/soak.sh MINUTES
#   RATE=queries/s (default 4000); NO_BUILD=1 skips the build;
#   SWITCHYARD_BIN=path runs another binary (an older build, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:?usage: bench/soak.sh MINUTES}"
[[ "$minutes" =~ ^[1-9][0-9]*$ ]] || { echo "MINUTES must be a whole number of minutes" >&2; exit 2; }
rate="${RATE:-4000}"
secs=$((minutes * 60))
command -v dnsperf >/dev/null || { apt-get update -qq && apt-get install -y -qq dnsperf >/dev/null; }
bin="${SWITCHYARD_BIN:-$PWD/target/release/switchyard}"
[ -n "${NO_BUILD:-}" ] || [ -n "${SWITCHYARD_BIN:-}" ] || cargo build --release --locked
tmp=$(mktemp -d)
# The built-in defaults (examples/switchyard.toml, compiled in) read these
# paths relative to the working directory.
cp -a apps geo "$tmp/"
mkdir -p "$tmp/examples" && cp -a examples/data "$tmp/examples/"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # SIGTERM to the supervisor stops it and its serving process.
  [ -n "${sup:-}" ] && kill "$sup" 2>/dev/null && wait "$sup" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

(cd "$tmp" && RUST_LOG=info exec "$bin" serve --dns 127.0.0.1:0 --http 127.0.0.1:0 --admin 127.0.0.1:0 \
  >/dev/null 2>"$tmp/server.log") &
sup=$!
for _ in $(seq 1 400); do grep -q "switchyard ready" "$tmp/server.log" && break; sleep 0.05; done
grep -q "switchyard ready" "$tmp/server.log" || { echo "server did not start:" >&2; cat "$tmp/server.log" >&2; exit 1; }
port() { grep -m1 "$1" "$tmp/server.log" | sed 's/.*addr=127.0.0.1:\([0-9]*\).*/\1/'; }
dns=$(port "listening for DNS over UDP"); http=$(port "listening for HTTP decisions")
serving=$(pgrep -P "$sup" | head -1)
[ -n "$serving" ] || { echo "no serving process under the supervisor $sup" >&2; exit 1; }

for _ in $(seq 1 500); do
  echo "best-rtt.switchyard.test A"
  echo "fusion-budget.switchyard.test A"
  echo "best-rtt.switchyard.test A"
  echo "fusion-budget.switchyard.test A"
  echo "static.switchyard.test A"
  echo "nope.switchyard.test A"
done > "$tmp/queries.txt"

dnsperf -s 127.0.0.1 -p "$dns" -d "$tmp/queries.txt" -l "$secs" -c 2 -Q "$rate" >"$tmp/dnsperf.txt" 2>&1 &
pids+=($!)
# HTTP decisions, ~100/s over keep-alive connections, for the same time.
urls=()
for _ in $(seq 1 5); do
  urls+=("http://127.0.0.1:$http/apps/best-rtt/decision" "http://127.0.0.1:$http/apps/fusion-budget/decision")
done
(
  end=$((SECONDS + secs))
  while ((SECONDS < end)); do
    curl -s --max-time 5 "${urls[@]}" >/dev/null || true
    sleep 0.1
  done
) &
pids+=($!)

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$serving/status"; }
first=$(rss_kb)
echo "soak: ${minutes} min, dnsperf -Q $rate (best-rtt ×2, fusion-budget ×2, static, NXDOMAIN), ~100 HTTP decisions/s, no scraping; $(nproc) cores, $(date -u '+%F %H:%M') UTC"
printf "%8s %10s %12s\n" "t (s)" "RSS (MB)" "growth (MB)"
printf "%8d %10.1f %12s\n" 0 "$(echo "$first / 1024" | bc -l)" "+0.0"
t=0
while ((t < secs)); do
  sleep 30
  t=$((t + 30))
  now=$(rss_kb)
  printf "%8d %10.1f %+12.1f\n" "$t" "$(echo "$now / 1024" | bc -l)" "$(echo "($now - $first) / 1024" | bc -l)"
done
wait "${pids[0]}" || true
awk '/Queries sent|Queries completed|Queries lost|Queries per second|Response codes/' "$tmp/dnsperf.txt"
echo "RSS: $(echo "$first / 1024" | bc -l | xargs printf %.1f) MB at start, $(echo "$now / 1024" | bc -l | xargs printf %.1f) MB after ${minutes} min ($(echo "($now - $first) / 1024" | bc -l | xargs printf %+.1f) MB)"
