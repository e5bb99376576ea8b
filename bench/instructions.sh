#!/usr/bin/env bash
# Instructions per decision of each shipped app (and of best-rtt written in
# the openmixapplib style), counted by callgrind: unlike time, the count does
# not move with the machine's load, so two trees can be compared on a busy
# machine. Each app runs 200 and then 1200 decisions; the difference / 1000
# is one decision (load and warm-up cancel out).
#
# Usage: bench/instructions.sh [APP.js ...]   (default: apps/*.js and
#        benches/apps/best-rtt-applib.js); NO_BUILD=1 to use the built example.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
[[ -n "${NO_BUILD:-}" ]] || cargo build --release --locked --example decide_loop >&2
BIN=target/release/examples/decide_loop
count() { # count APP N MODE...
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$@" 2>&1 |
    awk '/Collected/ { print $4 }'
}
per_decision() { # per_decision APP MODE...
  local app=$1; shift
  local a b
  a=$(count "$app" 200 "$@"); b=$(count "$app" 1200 "$@")
  echo $(((b - a) / 1000))
}
apps=("$@")
((${#apps[@]})) || apps=(apps/*.js benches/apps/best-rtt-applib.js)
printf '| app | instructions per decision | with shared probe objects | without the budget |\n|---|---:|---:|---:|\n'
for app in "${apps[@]}"; do
  printf '| %s | %s | %s | %s |\n' "$app" "$(per_decision "$app")" "$(per_decision "$app" shared)" "$(per_decision "$app" nobudget)"
done
