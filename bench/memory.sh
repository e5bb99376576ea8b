#!/usr/bin/env bash
# Memory per loaded app (issue 22): the serving process's RSS with the
# shipped apps, then with N generated apps beside them (N = 10, 100, 300 by
# default), every app decided over HTTP often enough, in parallel, that
# each JS worker has built its instance of it. The generated apps are copies
# of the five shipped ones (script and sidecar) under new names, taken in
# turn, so they are real Openmix apps of the usual sizes. Each N is a fresh
# server (release binary, built-in defaults, a temp dir of apps/, geo/ and
# examples/data/); loopback only, bounded (about 20 s per N).
# Usage: bench/memory.sh [N ...]
#   NO_BUILD=1 skips the build; SWITCHYARD_BIN=path runs another binary;
#   ROUNDS=16 decisions per app while warming (PARALLEL=8 at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
((${#counts[@]})) || counts=(10 100 300)
rounds=${ROUNDS:-16}
parallel=${PARALLEL:-8}
bin="${SWITCHYARD_BIN:-$PWD/target/release/switchyard}"
[ -n "${NO_BUILD:-}" ] || [ -n "${SWITCHYARD_BIN:-}" ] || cargo build --release --locked
workers=$(nproc)
shipped=(apps/*.js)

tmp=
sup=
stop() {
  # SIGTERM to the supervisor stops it and its serving process.
  [ -n "$sup" ] && kill "$sup" 2>/dev/null && wait "$sup" 2>/dev/null || true
  sup=
  [ -n "$tmp" ] && rm -rf "$tmp"
  tmp=
}
trap stop EXIT

# measure N: starts a server with the shipped apps and N generated ones,
# warms every app on every worker, prints "APPS RSS_KB".
measure() {
  local n=$1 i base name
  tmp=$(mktemp -d)
  cp -a apps geo "$tmp/"
  mkdir -p "$tmp/examples" && cp -a examples/data "$tmp/examples/"
  for ((i = 0; i < n; i++)); do
    base=${shipped[i % ${#shipped[@]}]%.js}
    name=$(printf 'gen%03d-%s' "$i" "${base#apps/}")
    cp "$base.js" "$tmp/apps/$name.js"
    [ -e "$base.toml" ] && cp "$base.toml" "$tmp/apps/$name.toml"
  done
  (cd "$tmp" && RUST_LOG=info exec "$bin" serve --dns 127.0.0.1:0 --http 127.0.0.1:0 --admin 127.0.0.1:0 \
    >/dev/null 2>"$tmp/server.log") &
  sup=$!
  for _ in $(seq 1 600); do grep -qs "switchyard ready" "$tmp/server.log" && break; sleep 0.05; done
  grep -q "switchyard ready" "$tmp/server.log" || { echo "server did not start:" >&2; cat "$tmp/server.log" >&2; exit 1; }
  local http serving
  http=$(grep -m1 "listening for HTTP decisions" "$tmp/server.log" | sed 's/.*addr=127.0.0.1:\([0-9]*\).*/\1/')
  serving=$(pgrep -P "$sup" | head -1)
  # Every app, ROUNDS times, PARALLEL requests at a time: each worker gets
  # some of each app's decisions and builds its instance.
  for f in "$tmp"/apps/*.js; do
    name=$(basename "$f" .js)
    for ((i = 0; i < rounds; i++)); do echo "http://127.0.0.1:$http/apps/$name/decision"; done
  done | xargs -P "$parallel" -n 8 curl -s --max-time 10 >/dev/null
  sleep 1
  echo "$(ls "$tmp"/apps/*.js | wc -l) $(awk '/^VmRSS:/ {print $2}' "/proc/$serving/status")"
  stop
}

echo "memory per loaded app: $workers JS workers, $(date -u '+%F %H:%M') UTC, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
read -r apps0 rss0 < <(measure 0)
printf '%6s %6s %10s %16s %22s\n' "N" "apps" "RSS (MB)" "added (MB)" "per app per worker (MB)"
printf '%6d %6d %10.1f %16s %22s\n' 0 "$apps0" "$(echo "$rss0 / 1024" | bc -l)" "-" "-"
for n in "${counts[@]}"; do
  read -r apps rss < <(measure "$n")
  added=$((rss - rss0))
  printf '%6d %6d %10.1f %16.1f %22.3f\n' "$n" "$apps" "$(echo "$rss / 1024" | bc -l)" \
    "$(echo "$added / 1024" | bc -l)" "$(echo "$added / 1024 / $n / $workers" | bc -l)"
done
