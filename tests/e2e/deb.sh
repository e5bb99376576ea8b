#!/usr/bin/env bash
# End-to-end check of the Debian package: builds it from the release binary
# (contrib/debian/build.sh), installs it with dpkg -i, checks its files, man
# page, completions, conffile, user, data directory and systemd unit
# (systemd-analyze verify), then runs the installed binary as the package's
# user with the installed configuration (on loopback port 0 instead of 53,
# JSON logs) and asks it with dig; last, dpkg --purge.
#
# Needs root and cargo-deb: with CI set, their absence fails; elsewhere the
# script prints SKIPPED and exits 0. Outside CI it also will not touch a
# switchyard package that is already installed.
#
# Each check prints one line; the last line is "deb e2e: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."

unavailable() {
  if [[ -n "${CI:-}" ]]; then
    echo "deb e2e: FAIL: $1 (CI is set: the package test may not be skipped)" >&2
    exit 1
  fi
  echo "deb e2e: SKIPPED: $1 ********************************************"
  exit 0
}
(( EUID == 0 )) || unavailable "needs root (dpkg -i, the service user)"
for tool in cargo-deb dpkg systemd-analyze dig setpriv man; do
  command -v "$tool" >/dev/null || unavailable "$tool is not installed"
done
if dpkg-query -W -f='${Status}' switchyard 2>/dev/null | grep -q 'installed'; then
  [[ -n "${CI:-}" ]] || unavailable "a switchyard package is already installed here"
  dpkg --purge switchyard >/dev/null
fi

TMP="$(mktemp -d)"
LOG="$TMP/server.log"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  dpkg --purge switchyard >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

source tests/e2e/check.bash   # check NAME EXPECTED ACTUAL, and the tally
yes_if() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }

start=$SECONDS
DEB="$(bash contrib/debian/build.sh)"
echo "deb e2e: built $DEB in $((SECONDS - start)) s ($(du -h "$DEB" | cut -f1))"
dpkg -i "$DEB" >"$TMP/dpkg.log" 2>&1 || { cat "$TMP/dpkg.log" >&2; exit 1; }

# Files.
FILES="$(dpkg -L switchyard)"
for f in /usr/bin/switchyard \
  /etc/switchyard/switchyard.toml \
  /usr/lib/systemd/system/switchyard.service \
  /usr/share/man/man1/switchyard.1.gz \
  /usr/share/man/man1/switchyard-serve.1.gz \
  /usr/share/bash-completion/completions/switchyard \
  /usr/share/zsh/vendor-completions/_switchyard \
  /usr/share/fish/vendor_completions.d/switchyard.fish \
  /usr/share/switchyard/apps/weighted.js \
  /usr/share/switchyard/apps/weighted.toml \
  /usr/share/switchyard/geo/Switchyard-City-Test.mmdb \
  /usr/share/switchyard/geo/Switchyard-ASN-Test.mmdb \
  /usr/share/doc/switchyard/README.md; do
  check "packaged and installed: $f" "yes yes" \
    "$(yes_if grep -qx "$f" <<<"$FILES") $(yes_if test -f "$f")"
done
check "the binary runs" "switchyard 0.1.0" "$(/usr/bin/switchyard --version)"
check "conffile" "yes" "$(yes_if grep -q '^ /etc/switchyard/switchyard.toml [0-9a-f]*$' \
  <<<"$(dpkg-query -W -f='${Conffiles}\n' switchyard)")"
check "config: system paths" "yes yes yes" "$(for k in 'apps = "/etc/switchyard/apps"' \
  'data_dir = "/var/lib/switchyard"' 'city = "/usr/share/switchyard/geo/Switchyard-City-Test.mmdb"'; do
  yes_if grep -qF "$k" /etc/switchyard/switchyard.toml; done | paste -sd' ')"
check "config: DNS on port 53" "yes" "$(yes_if grep -qF 'dns = ["0.0.0.0:53", "[::]:53"]' /etc/switchyard/switchyard.toml)"

# Man page: roff sections, and man renders it.
check "man page: NAME and SYNOPSIS" "yes yes" \
  "$(yes_if zgrep -q '^\.SH NAME' /usr/share/man/man1/switchyard.1.gz) $(yes_if zgrep -q '^\.SH SYNOPSIS' /usr/share/man/man1/switchyard.1.gz)"
check "man -l renders it, --log-format included" "yes" \
  "$(yes_if grep -q -- '--log-format' <<<"$(MANPAGER=cat MANWIDTH=100 man -l /usr/share/man/man1/switchyard.1.gz 2>/dev/null)")"
check "bash completion loads" "yes" \
  "$(yes_if bash -c 'source /usr/share/bash-completion/completions/switchyard && complete -p switchyard')"

# User, data directory, apps.
check "system user" "yes /usr/sbin/nologin" \
  "$([[ "$(id -u switchyard)" -lt 1000 ]] && echo yes || echo no) $(getent passwd switchyard | cut -d: -f7)"
check "/var/lib/switchyard owner and mode" "switchyard:switchyard 750" "$(stat -c '%U:%G %a' /var/lib/switchyard)"
check "apps seeded into /etc/switchyard/apps" "$(ls /usr/share/switchyard/apps/ | grep -v README | paste -sd' ')" \
  "$(ls /etc/switchyard/apps/ | paste -sd' ')"

# The unit: verify clean (nothing printed), enabled by the package.
verify="$(systemd-analyze verify /usr/lib/systemd/system/switchyard.service 2>&1)" && rc=0 || rc=$?
check "systemd-analyze verify: clean" "0 []" "$rc [$verify]"
check "unit enabled" "yes" "$(yes_if test -L /etc/systemd/system/multi-user.target.wants/switchyard.service)"
UNIT=/usr/lib/systemd/system/switchyard.service
for line in 'User=switchyard' 'AmbientCapabilities=CAP_NET_BIND_SERVICE' 'ProtectSystem=strict' \
  'StateDirectory=switchyard' 'Restart=on-failure' 'ExecReload=/bin/kill -HUP $MAINPID'; do
  check "unit: $line" "yes" "$(yes_if grep -qxF "$line" "$UNIT")"
done

# The installed configuration passes the go-live check, run as the
# package's user (the SQLite store it names is only opened read-only).
checked="$(cd /var/lib/switchyard && setpriv --reuid=switchyard --regid=switchyard --init-groups \
  /usr/bin/switchyard check --config /etc/switchyard/switchyard.toml 2>&1)" && rc=0 || rc=$?
check "switchyard check of the installed config: exit 0" "0" "$rc"
[[ "$rc" == 0 ]] || echo "$checked"

# Run it as the package's user, with the installed config, as the unit
# does (working directory /var/lib/switchyard), on port 0 of loopback.
(cd /var/lib/switchyard && exec setpriv --reuid=switchyard --regid=switchyard --init-groups \
  /usr/bin/switchyard --log-format json serve --config /etc/switchyard/switchyard.toml \
  --dns 127.0.0.1:0 --http 127.0.0.1:0 --admin 127.0.0.1:0) 2>"$LOG" >/dev/null &
SERVER_PID=$!
deadline=$((SECONDS + 30))
until grep -q '"message":"switchyard ready"' "$LOG" 2>/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null || (( SECONDS >= deadline )); then
    echo "deb e2e: the installed switchyard did not get ready; its log:" >&2
    cat "$LOG" >&2
    exit 1
  fi
  sleep 0.1
done
PORT="$(grep -F '"listening for DNS over UDP"' "$LOG" | sed -n 's/.*"addr":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' | head -n1)"
echo "deb e2e: installed switchyard (pid $SERVER_PID, user switchyard) on 127.0.0.1:$PORT"
check "runs as the switchyard user" "switchyard" "$(ps -o user= -p "$SERVER_PID")"
check "every log line is a JSON object" "0" "$(grep -cv '^{.*"level":"[A-Z]*".*"fields":{.*}$' "$LOG" || true)"

q() { dig @127.0.0.1 -p "$PORT" +norec +time=3 +tries=1 "$@" 2>&1 || true; }
check "SOA of the configured zone" "ns1.switchyard.test. hostmaster.switchyard.test. 2026112201 3600 600 604800 60" \
  "$(q +short switchyard.test SOA)"
check "static record" "192.0.2.53" "$(q +short static.switchyard.test A)"
check "app answer (weighted, no routes: its default)" "origin.example.net." \
  "$(q +short weighted.switchyard.test CNAME)"
check "generated secrets in data_dir, the user's alone" "switchyard 600 switchyard 600" \
  "$(stat -c '%U %a' /var/lib/switchyard/api_token /var/lib/switchyard/cookie_secret | paste -sd' ')"

# SIGHUP to the supervisor (the unit's MAINPID, ExecReload) reaches the
# serving process, which reloads.
kill -HUP "$SERVER_PID"
deadline=$((SECONDS + 10))
until grep -q '"message":"configuration reloaded"' "$LOG" || (( SECONDS >= deadline )); do sleep 0.1; done
check "SIGHUP reloads through the supervisor" "yes" "$(yes_if grep -q '"message":"configuration reloaded"' "$LOG")"
check "answers after the reload" "origin.example.net." "$(q +short weighted.switchyard.test CNAME)"

kill -TERM "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=""
check "stops cleanly on SIGTERM" "0" "$rc"

dpkg --purge switchyard >"$TMP/dpkg.log" 2>&1 || { cat "$TMP/dpkg.log" >&2; exit 1; }
check "purge removes binary, config, apps, data" "no no no" \
  "$(yes_if test -e /usr/bin/switchyard) $(yes_if test -e /etc/switchyard) $(yes_if test -e /var/lib/switchyard)"

if (( failed > 0 )); then
  echo "--- server log:"
  tail -n 40 "$LOG" || true
fi
echo "deb e2e: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
