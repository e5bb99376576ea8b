#!/usr/bin/env bash
# Amplification under a simulated reflection flood (issue #24): many loopback
# sources (127.0.S.1, each standing in for a spoofed victim network) send the
# query with the largest answer in the shipped zone, EDNS 4096, at a fixed
# rate each, for a few seconds; examples/rrl_flood.rs counts what the server
# sent back to them. Run twice: response rate limiting on (the shipped
# [rrl] settings, only 127.0.0.1 exempt) and off. Prints, per run, bytes
# received by the "victims" ÷ bytes the flood sent, overall and after the
# first second, and the server's own RRL counters. Loopback only, bounded.
# Usage: bench/rrl.sh            (about 30 s, build aside)
#   SOURCES=50 SECONDS_=5 QPS=1000 (per source); NO_BUILD=1 uses target/release as is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SOURCES=${SOURCES:-50}
DURATION=${SECONDS_:-5}
QPS=${QPS:-1000}
OUT=$ROOT/target/bench/rrl
BIN=$ROOT/target/release/switchyard
FLOOD=$ROOT/target/release/examples/rrl_flood
command -v dig >/dev/null || { apt-get update -qq && apt-get install -y -qq bind9-dnsutils >/dev/null; }
if [[ -z "${NO_BUILD:-}" ]]; then
  cargo build --release --locked >&2
  cargo build --release --locked --example rrl_flood >&2
fi
mkdir -p "$OUT"

sup=
cleanup() { [[ -n "$sup" ]] && kill "$sup" 2>/dev/null && wait "$sup" 2>/dev/null || true; }
trap cleanup EXIT

# run NAME ENABLED: one server (the shipped config, [rrl] enabled = ENABLED,
# only 127.0.0.1 exempt), the flood against it, its counters.
run() {
  local name=$1 enabled=$2 d=$OUT/$1 dns ops q best size qname qtype
  rm -rf "$d"; mkdir -p "$d"
  sed -e "s|^exempt = \[.*|exempt = [\"127.0.0.1/32\"]|" \
      -e "/^\[rrl\]/,/^\[/ s|^enabled = true|enabled = $enabled|" \
      examples/switchyard.toml >"$d/switchyard.toml"
  grep -q '^exempt = \["127.0.0.1/32"\]' "$d/switchyard.toml" || { echo "rrl.sh: no [rrl] exempt line in examples/switchyard.toml" >&2; exit 1; }
  RUST_LOG=info "$BIN" serve --config "$d/switchyard.toml" --dns 127.0.0.1:0 --http 127.0.0.1:0 \
    --admin 127.0.0.1:0 --data-dir "$d/data" >/dev/null 2>"$d/log" &
  sup=$!
  for _ in $(seq 1 400); do grep -q "switchyard ready" "$d/log" && break; sleep 0.05; done
  grep -q "switchyard ready" "$d/log" || { echo "server did not start:" >&2; cat "$d/log" >&2; exit 1; }
  dns=$(grep -m1 "listening for DNS over UDP" "$d/log" | sed 's/.*addr=127.0.0.1:\([0-9]*\).*/\1/')
  ops=$(grep -m1 "listening for operations" "$d/log" | sed 's/.*addr=\(127.0.0.1:[0-9]*\).*/\1/')
  # The largest answer in the zone over UDP with EDNS 4096 (asked from the
  # exempt 127.0.0.1): the flood's query.
  best=0
  for q in "switchyard.test ANY" "switchyard.test NS" "switchyard.test SOA" "static.switchyard.test A" \
           "geo-map.switchyard.test A" "best-rtt.switchyard.test AAAA" "weighted.switchyard.test A" \
           "nope.switchyard.test A"; do
    read -r qname qtype <<<"$q"
    size=$(dig @127.0.0.1 -p "$dns" +norec +nocookie +bufsize=4096 +time=2 +tries=2 "$qname" "$qtype" \
      | sed -n 's/.*MSG SIZE  rcvd: \([0-9]*\).*/\1/p')
    if [[ -n "$size" ]] && ((size > best)); then best=$size; BEST="$qname $qtype"; fi
  done
  echo "### RRL $([[ $enabled == true ]] && echo on || echo off): $SOURCES sources × $QPS queries/s × ${DURATION}s, '$BEST' (a $best-byte reply), EDNS 4096"
  echo
  echo '```'
  # shellcheck disable=SC2086
  "$FLOOD" "127.0.0.1:$dns" "$SOURCES" "$DURATION" "$QPS" $BEST | tee "$d/flood.txt"
  echo '```'
  echo
  echo "Server counters (/metrics):"
  echo
  echo '```'
  curl -sf "http://$ops/metrics" | grep -E '^switchyard_(rrl_responses_total|dns_responses_total)' | grep -v ' 0$' || true
  echo '```'
  echo
  kill "$sup"; wait "$sup" 2>/dev/null || true; sup=
}

{
  echo "## Reflection flood: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(uname -sr). Command: \`SOURCES=$SOURCES SECONDS_=$DURATION QPS=$QPS bench/rrl.sh\`"
  echo
  run rrl-on true
  run rrl-off false
} | tee "$OUT/results.md"
