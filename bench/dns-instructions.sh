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
#   nomemo    server.memoise = false: every query runs the app on a worker
#             (as bench/dns-peers.sh's switchyard-app-nomemo)
#
# Collection is on inside the handler and inside the workers' app runs (steer::run_traced: a
# decision the memo did not answer runs there), counted apart: the table
# gives both per query.
#
# Workloads (WORKLOAD=):
#   small       (the default) the query file's names sent as text, without
#               ECS: every client is the loopback source. ECS=1 sends the
#               binary query file instead (half with ECS from the 12 shipped
#               geo/ networks), for a like-for-like comparison with:
#   realistic   bench/dns-peers.sh's realistic workload: the generated
#               databases of GEO_N /24 networks (target/bench/geo-gen/GEO_N,
#               made as dns-peers.sh makes them) and QUERIES queries, half with
#               ECS from GEO_M distinct /24s of them, sent as binary (-B).
#               With QUERIES / 2 <= GEO_M no ECS subnet repeats, as in
#               dns-peers.sh's 200,000 queries over 100,000 subnets.
#
# The serving process runs under callgrind with collection on only inside
# the handler; dnsperf sends the query file of bench/dns-peers.sh (10,000
# names, 70 % A / 30 % AAAA, half with ECS) once, slowly; the count is
# divided by the queries answered.
#
# Usage: bench/dns-instructions.sh   (about 2 minutes; NO_BUILD=1 to use the built binary)
# Environment: QUERIES=20000 PORT=15390 CONFIGS="default rrl rrl-off"
#              WORKLOAD=small ECS= GEO_N=1000000 GEO_M=100000
#              SWITCHYARD_BIN=path (another build, e.g. an older tree's, to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORKLOAD=${WORKLOAD:-small}
GEO_N=${GEO_N:-1000000}
GEO_M=${GEO_M:-100000}
ECS=${ECS:-}
case $WORKLOAD in
  small) OUT=$ROOT/target/bench/dns-instructions${ECS:+-ecs} ;;
  realistic) OUT=$ROOT/target/bench/dns-instructions-realistic; ECS=1 ;;
  *) printf 'dns-instructions: WORKLOAD is small or realistic, not %s\n' "$WORKLOAD" >&2; exit 2 ;;
esac
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
GEO_ARGS=()
GEN_ARGS=()
if [[ $WORKLOAD == realistic ]]; then
  source "$ROOT/bench/geo-gen.bash"
  generated_geo "$GEO_N"
  GEO_ARGS=(--geo-city "$GEN_CITY" --geo-asn "$GEN_ASN")
  GEN_ARGS=(--networks "$GEN_NETWORKS" --distinct "$GEO_M" --queries "$QUERIES")
elif [[ -n $ECS ]]; then
  GEN_ARGS=(--queries "$QUERIES")
fi
rustc -O --edition 2021 "$ROOT/bench/dns-peers/gen_queries.rs" -o "$OUT/gen_queries"
"$OUT/gen_queries" "$OUT" 10000 "$ZONE" "${GEN_ARGS[@]}"
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
    nomemo) sed 's/^memoise = true/memoise = false/' "$CONFIG" ;;
    nolog) sed 's/^decisions_sample = [0-9.]*/decisions_sample = 0/' "$CONFIG" ;;
    nomemo-nolog) sed -e 's/^memoise = true/memoise = false/' -e 's/^decisions_sample = [0-9.]*/decisions_sample = 0/' "$CONFIG" ;;
    *) die "unknown config $1" ;;
  esac
}

printf '| workload | config | instructions per query in the handler | in workers | queries answered |\n|---|---|---:|---:|---:|\n'
for name in $CONFIGS; do
  d=$OUT/$name; rm -rf "$d"; mkdir -p "$d"
  config_for "$name" | generous >"$d/switchyard.toml"
  case $name in
    rrl) grep -q '^exempt = \[\]' "$d/switchyard.toml" || die "no '[rrl] exempt' line in $CONFIG" ;;
    rrl-off) (($(grep -c '^enabled = false' "$d/switchyard.toml") == 2)) || die "no '[rrl]'/'[cookies] enabled' lines in $CONFIG" ;;
    nomemo) grep -q '^memoise = false' "$d/switchyard.toml" || die "no 'memoise = true' line in $CONFIG" ;;
    nolog | nomemo-nolog) grep -Eq '^decisions_sample = 0([^.0-9]|$)' "$d/switchyard.toml" || die "no '[log] decisions_sample' line in $CONFIG" ;;
  esac
  # --separate-threads: the handler's and the workers' counts apart (the
  # DNS threads' files hold the handler's, the workers' their jobs').
  (cd "$ROOT" && exec valgrind --tool=callgrind --toggle-collect='*DnsHandler*handle*' \
      --toggle-collect='switchyard::engine::steer::run_traced' --separate-threads=yes \
      --callgrind-out-file="$d/callgrind.out" \
      "$SY" serve --worker --config "$d/switchyard.toml" --dns "127.0.0.1:$PORT" \
      --http 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir "$d/data" "${GEO_ARGS[@]}") >"$d/log" 2>&1 &
  PID=$!
  for ((i = 0; i < 1200; i++)); do
    grep -q 'switchyard ready' "$d/log" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { tail -20 "$d/log" >&2; die "$name exited at startup"; }
    sleep 0.1
  done
  grep -q 'switchyard ready' "$d/log" || die "$name: not ready in 120 s (log: $d/log)"
  # Warm: the first decision of each client loads and runs the app.
  dig +short +time=20 +tries=1 @127.0.0.1 -p "$PORT" "q0.best-rtt.$ZONE" A >/dev/null
  if [[ -n $ECS ]]; then input=(-B -d "$OUT/queries.bin"); else input=(-d "$OUT/dnsperf.txt"); fi
  dnsperf -s 127.0.0.1 -p "$PORT" "${input[@]}" -n 1 -c 1 -q 20 -t 30 >"$d/dnsperf.txt" 2>&1 ||
    { cat "$d/dnsperf.txt" >&2; die "$name: dnsperf failed"; }
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=
  answered=$(awk '/Queries completed:/ { print $3 }' "$d/dnsperf.txt")
  # Per thread: a file whose count includes the handler is a DNS thread's;
  # any other non-empty one is a worker's (or a thread running neither: 0).
  handler=0; workers=0
  for f in "$d"/callgrind.out-*; do
    n=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    [[ -n "$n" ]] || continue
    if grep -q 'DnsHandler' "$f"; then handler=$((handler + n)); else workers=$((workers + n)); fi
  done
  [[ -n "$answered" && "$answered" -gt 0 && "$handler" -gt 0 ]] || die "$name: no count (see $d)"
  # The warm-up query is in the count too.
  printf '| %s%s | %s | %d | %d | %d |\n' "$WORKLOAD" "${ECS:+ (ECS)}" "$name" $((handler / (answered + 1))) $((workers / (answered + 1))) "$answered"
done
