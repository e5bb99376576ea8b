# Sourced by the e2e scripts (not run on its own: tests/run-all.sh runs
# tests/e2e/*.sh): the server start-up they share. Set NAME (the script's
# name in messages) first; then `serve [ARGS...]` starts `switchyard serve
# ARGS` from the repository root with every listener on a free port and
# waits for it to be ready, and the server is stopped on exit.
#
# The binary must already be built: $SWITCHYARD_BIN when set, else
# target/release/switchyard, else target/debug/switchyard.
#
# Sets BIN, TMP (scratch, removed on exit), DATA (the data directory), LOG
# (the server's stderr) and SERVER_PID; addr_of reads a listener's address.

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [[ -n "${SWITCHYARD_BIN:-}" ]]; then
  BIN="$SWITCHYARD_BIN"
elif [[ -x target/release/switchyard ]]; then
  BIN=target/release/switchyard
else
  BIN=target/debug/switchyard
fi
[[ -x "$BIN" ]] || { echo "$NAME e2e: no switchyard binary at $BIN (build first)" >&2; exit 1; }

TMP="$(mktemp -d)"
DATA="$TMP/data"
LOG="$TMP/server.log"
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# serve [ARGS...]: starts the server and waits (at most 30 s) for its ready line.
serve() {
  RUST_LOG=info "$BIN" serve "$@" --dns 127.0.0.1:0 --http 127.0.0.1:0 --admin 127.0.0.1:0 \
    --data-dir "$DATA" 2>"$LOG" >/dev/null &
  SERVER_PID=$!
  local deadline=$((SECONDS + 30)) rc
  until grep -q 'switchyard ready' "$LOG" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      rc=0
      wait "$SERVER_PID" || rc=$?
      SERVER_PID=""
      echo "$NAME e2e: $BIN exited (status $rc) before it was ready; its log:" >&2
      cat "$LOG" >&2
      exit 1
    fi
    if (( SECONDS >= deadline )); then
      echo "$NAME e2e: switchyard not ready after 30 s:" >&2
      cat "$LOG" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# addr_of "listening for ..." -> host:port from that line's addr= field.
addr_of() {
  sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -F "$1" | head -n1 | sed -n 's/.*addr=\([^ ]*\).*/\1/p' || true
}
