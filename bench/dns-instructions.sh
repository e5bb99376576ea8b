#!/usr/bin/env bash
# Instructions per DNS query in the query handler (`DnsHandler::handle`,
# everything from the parsed packet to the encoded reply: zones, the app
# decision or its memo, RRL, cookies), counted by callgrind for each
# configuration below. Unlike a rate, the count does not move with the
# machine's load, so the cost of a feature on the hot path (RRL, cookies)
# shows even on a busy 2-core machine where dnsperf's noise (±3 %) hides it.
#
#   default   the shipped config: loopback exempt from RRL, cookies on
#   rrl       loopback not exempt, a rate no account reaches: every reply
#             is accounted (as bench/dns-peers.sh's switchyard-app-rrl)
#   rrl-off   [rrl] enabled = false, [cookies] enabled = false
#
# The serving process runs under callgrind with collection on only inside
# the handler; dnsperf sends the query file of bench/dns-peers.sh (10,000
# names, 70 % A / 30 % AAAA, half with ECS) once, slowly; the count is
# divided by the queries answered.
#
# Usage: bench/dns-instructions.sh   (about 2 minutes; NO_BUILD=1 to use the built binary)
# Environment: QUERIES=20000 PORT=15390 CONFIGS="default rrl rrl-off"
#              SWITCHYARD_BIN=path (another build, e.g. an older tree's, to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench/dns-instructions
QUERIES=${QUERIES:-20000}
PORT=${PORT:-15390}
CONFIGS=${CONFIGS:-default rrl rrl-off}
CONFIG=$ROOT/examples/switchyard.toml
SY=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
ZONE=switchyard.test

say() { printf '%s\n' "$*" >&2; }
die() { say "dns-instructions: $*"; exit 1; }
for c in valgrind dnsperf dig; do command -v "$c" >/dev/null || die "$c not found (apt-get install valgrind dnsperf bind9-dnsutils)"; done
[[ -n "${NO_BUILD:-}" ]] || cargo build --release --locked >&2
[[ -x "$SY" ]] || die "$SY not built"
mkdir -p "$OUT"
rustc -O --edition 2021 "$ROOT/bench/dns-peers/gen_queries.rs" -o "$OUT/gen_queries"
"$OUT/gen_queries" "$OUT" 10000 "$ZONE"
# QUERIES lines of the query file, from its start again when it runs out.
# dnsperf's text format is "name type", and ECS via -E is per run, not per
# line: the names go without ECS here (the memo keys on the located client
# either way).
awk -v n="$QUERIES" '{ q[NR] = $1 " " $2 } END { for (i = 0; i < n; i++) print q[i % NR + 1] }' \
  "$OUT/queries.txt" >"$OUT/dnsperf.txt"

PID=
cleanup() {
  [[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null || true
}
trap cleanup EXIT

# Under callgrind everything runs ~50 times slower: budgets and the hard
# limit are raised so no app call (load, init, onFusion, a memo miss) fails
# or trips the watchdog on a busy machine. A memo hit never runs the app, so
# the counts do not depend on them.
generous() {
  sed -e 's|^decision_ms = [0-9]*|decision_ms = 2000|' -e 's|^load_ms = [0-9]*|load_ms = 60000|' \
      -e 's|^hard_limit_ms = [0-9]*|hard_limit_ms = 120000|'
}

config_for() {
  case $1 in
    default) cat "$CONFIG" ;;
    rrl) sed -e 's|^exempt = \[.*|exempt = []|' -e 's|^responses_per_second = 200 |responses_per_second = 1000000 |' \
             -e 's|^window_secs = 15 |window_secs = 1 |' "$CONFIG" ;;
    rrl-off) sed -e '/^\[rrl\]/{n;s/^enabled = true/enabled = false/}' -e '/^\[cookies\]/{n;s/^enabled = true/enabled = false/}' "$CONFIG" ;;
    *) die "unknown config $1" ;;
  esac
}

printf '| config | instructions per query in the handler | queries answered |\n|---|---:|---:|\n'
for name in $CONFIGS; do
  d=$OUT/$name; rm -rf "$d"; mkdir -p "$d"
  config_for "$name" | generous >"$d/switchyard.toml"
  case $name in
    rrl) grep -q '^exempt = \[\]' "$d/switchyard.toml" || die "no '[rrl] exempt' line in $CONFIG" ;;
    rrl-off) (($(grep -c '^enabled = false' "$d/switchyard.toml") == 2)) || die "no '[rrl]'/'[cookies] enabled' lines in $CONFIG" ;;
  esac
  (cd "$ROOT" && exec valgrind --tool=callgrind --toggle-collect='*DnsHandler*handle*' \
      --callgrind-out-file="$d/callgrind.out" \
      "$SY" serve --worker --config "$d/switchyard.toml" --dns "127.0.0.1:$PORT" \
      --http 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir "$d/data") >"$d/log" 2>&1 &
  PID=$!
  for ((i = 0; i < 1200; i++)); do
    grep -q 'switchyard ready' "$d/log" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { tail -20 "$d/log" >&2; die "$name exited at startup"; }
    sleep 0.1
  done
  grep -q 'switchyard ready' "$d/log" || die "$name: not ready in 120 s (log: $d/log)"
  # Warm: the first decision of each client loads and runs the app.
  dig +short +time=20 +tries=1 @127.0.0.1 -p "$PORT" "q0.best-rtt.$ZONE" A >/dev/null
  dnsperf -s 127.0.0.1 -p "$PORT" -d "$OUT/dnsperf.txt" -n 1 -c 1 -q 20 -t 30 >"$d/dnsperf.txt" 2>&1 ||
    { cat "$d/dnsperf.txt" >&2; die "$name: dnsperf failed"; }
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=
  answered=$(awk '/Queries completed:/ { print $3 }' "$d/dnsperf.txt")
  total=$(awk '/^(summary|totals):/ { print $2; exit }' "$d/callgrind.out")
  [[ -n "$answered" && -n "$total" && "$answered" -gt 0 ]] || die "$name: no count (see $d)"
  # The warm-up query is in the count too.
  printf '| %s | %d | %d |\n' "$name" $((total / (answered + 1))) "$answered"
done
