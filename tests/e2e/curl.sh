#!/usr/bin/env bash
# End-to-end HTTP checks with curl against a real `switchyard serve`, started
# from the repository root with its built-in defaults (apps/, geo/) and every
# listener on a free port: the public decision endpoint
# (GET /apps/{app}/decision, CORS, redirect, errors) and the operations
# listener (/healthcheck, /deepcheck, /debug/vars, /metrics, /api/*).
#
# The binary must already be built (see serve.bash).
#
# geo-map reads no probe data, so from 127.0.0.1 (no geo) it always answers
# its default branch: cdn_a, reason D, 192.0.2.10 and 192.0.2.11. The other
# shipped apps depend on the probe data the configuration loads; they are
# checked against the branches and host names of apps/README.md.
#
# Each check prints one line; the last line is "curl e2e: N passed, M failed".
set -euo pipefail

NAME=curl
source "$(dirname "$0")/serve.bash"
command -v curl >/dev/null || { echo "curl e2e: curl is not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "curl e2e: python3 is not installed" >&2; exit 1; }

serve

HTTP="$(addr_of 'listening for HTTP decisions')"
OPS="$(addr_of 'listening for operations')"
if [[ -z "$HTTP" || -z "$OPS" ]]; then
  echo "curl e2e: no 'listening for HTTP decisions addr=...' or 'listening for operations addr=...' line:" >&2
  cat "$LOG" >&2
  exit 1
fi
echo "curl e2e: switchyard (pid $SERVER_PID) decisions on $HTTP, operations on $OPS, binary $BIN"

passed=0
failed=0
STATUS=""

# fetch CURL-ARGS...: one request; sets STATUS, writes $TMP/head and $TMP/body.
fetch() {
  STATUS="$(curl -sS --noproxy '*' --max-time 15 -o "$TMP/body" -D "$TMP/head" -w '%{http_code}' "$@" 2>"$TMP/curl.err")" || STATUS="000"
}

# verdict EXPR: evaluates a Python expression over the last response:
# s (status, int), h (headers, lower-case names), b (body text), v (body as
# JSON, or None). Prints why when false.
verdict() {
  python3 - "$STATUS" "$TMP/head" "$TMP/body" "$1" <<'PY'
import json, sys
status, head_file, body_file, expr = sys.argv[1:5]
s = int(status)
h = {}
with open(head_file, encoding="utf-8", errors="replace") as f:
    for line in f.read().splitlines():
        if line.startswith("HTTP/"):
            h = {}
        elif ":" in line:
            k, _, val = line.partition(":")
            h[k.strip().lower()] = val.strip()
with open(body_file, encoding="utf-8", errors="replace") as f:
    b = f.read()
try:
    v = json.loads(b)
except ValueError:
    v = None
def hosts(v):
    return [p["host"] for p in v["providers"]]
def shaped(v):
    """The decision shape: providers [{provider, host, custom?}], provider, reason, ttl."""
    return (isinstance(v, dict)
            and all(k in v for k in ("providers", "provider", "reason", "ttl"))
            and isinstance(v["providers"], list) and len(v["providers"]) > 0
            and all(isinstance(p, dict) and isinstance(p.get("provider"), str) and isinstance(p.get("host"), str)
                    and set(p) <= {"provider", "host", "custom"} for p in v["providers"])
            and isinstance(v["provider"], str) and isinstance(v["reason"], str) and isinstance(v["ttl"], int))
def cdn_host(p, scheme=""):
    return scheme + p.replace("_", "-") + ".example.net"
def error(code):
    return s == code and isinstance(v, dict) and isinstance(v.get("error"), str) and h.get("content-type", "").startswith("application/json")
try:
    ok = bool(eval(expr))
except Exception as e:
    ok = False
    print(f"({type(e).__name__}: {e})", end=" ")
if not ok:
    print(f"status {s}; headers {h}; body {b[:300]!r}")
sys.exit(0 if ok else 1)
PY
}

# check NAME EXPR CURL-ARGS...: one line per check. A decision answered from
# the app's fallback (a cold worker missing its time limit) is asked again,
# for at most 3 s, before the check counts as failed.
check() {
  local name="$1" expr="$2" why
  shift 2
  local until=$((SECONDS + 3))
  while :; do
    fetch "$@"
    if why="$(verdict "$expr")"; then
      passed=$((passed + 1))
      echo "ok   $name"
      return 0
    fi
    if grep -q '"reason":"fallback"' "$TMP/body" 2>/dev/null && (( SECONDS < until )); then
      sleep 0.1
      continue
    fi
    failed=$((failed + 1))
    echo "FAIL $name: $why $(cat "$TMP/curl.err" 2>/dev/null)"
    return 0
  done
}

D="http://$HTTP/apps"
O="http://$OPS"

# --- decisions, one per shipped app
check "geo-map: 200, cdn_a, reason D, 192.0.2.10 + 192.0.2.11, ttl 20" \
  's == 200 and shaped(v) and v["provider"] == "cdn_a" and v["reason"] == "D" and hosts(v) == ["192.0.2.10", "192.0.2.11"] and v["ttl"] == 20 and h["content-type"].startswith("application/json")' \
  "$D/geo-map/decision"
check "best-rtt: 200, a CDN or origin by a README branch, its CNAME" \
  's == 200 and shaped(v) and v["reason"] in "ABCDE" and hosts(v)[0] == cdn_host(v["provider"]) and v["provider"] in ("cdn_a", "cdn_b", "cdn_c", "origin")' \
  "$D/best-rtt/decision"
check "fusion-budget: 200, a CDN or origin by a README branch, its CNAME" \
  's == 200 and shaped(v) and v["reason"] in "ABC" and hosts(v)[0] == cdn_host(v["provider"]) and v["provider"] in ("cdn_a", "cdn_b", "cdn_c", "origin")' \
  "$D/fusion-budget/decision"
check "http-hosts: 200, ranked https hosts, X-Switchyard-App header" \
  's == 200 and shaped(v) and v["reason"] in ("A", "B") and all(p["host"] == cdn_host(p["provider"], "https://") and p["custom"]["rank"] == i + 1 for i, p in enumerate(v["providers"])) and h.get("x-switchyard-app") == "http-hosts"' \
  "$D/http-hosts/decision"
check "http-hosts ?fail=1: 403, denied, reason C" \
  's == 403 and shaped(v) and v["provider"] == "denied" and v["reason"] == "C" and v["providers"][0]["custom"] == {"blocked_by": "query"} and h.get("x-switchyard-app") == "http-hosts"' \
  "$D/http-hosts/decision?fail=1"
check "http-hosts X-Block header: 403, blocked_by header" \
  's == 403 and v["providers"][0]["custom"] == {"blocked_by": "header"}' \
  -H 'X-Block: 1' "$D/http-hosts/decision"

# --- CORS
check "http-hosts GET with Origin: Access-Control-Allow-Origin *" \
  's == 200 and h.get("access-control-allow-origin") == "*"' \
  -H 'Origin: https://x.example' "$D/http-hosts/decision"
check "http-hosts OPTIONS preflight: 204, allow origin, methods, headers" \
  's in (200, 204) and h.get("access-control-allow-origin") == "*" and "GET" in h.get("access-control-allow-methods", "") and "x-block" in h.get("access-control-allow-headers", "").lower() and b == ""' \
  -X OPTIONS -H 'Origin: https://x.example' -H 'Access-Control-Request-Method: GET' \
  -H 'Access-Control-Request-Headers: X-Block' "$D/http-hosts/decision"
check "geo-map (no enableCors) GET with Origin: no CORS header" \
  's == 200 and "access-control-allow-origin" not in h' \
  -H 'Origin: https://x.example' "$D/geo-map/decision"

# --- redirect
check "geo-map ?redirect=1: 302 to http://192.0.2.10/" \
  's == 302 and h.get("location") == "http://192.0.2.10/"' \
  "$D/geo-map/decision?redirect=1"
check "http-hosts ?redirect=1: 302 to an https CDN URL" \
  's == 302 and h.get("location", "").startswith("https://") and h["location"].endswith(".example.net")' \
  "$D/http-hosts/decision?redirect=1"

# --- errors
check "unknown app: 404 JSON error" 'error(404) and "nope" in v["error"]' "$D/nope/decision"
check "unknown path: 404 JSON error" 'error(404)' "http://$HTTP/nope"
check "POST decision: 405 JSON error with Allow" 'error(405) and "GET" in h.get("allow", "")' -X POST "$D/geo-map/decision"
check "HEAD decision: 200, JSON headers" 's == 200 and h.get("content-type", "").startswith("application/json")' -I "$D/geo-map/decision"
check "Content-Length over max_body_bytes (65536): 413 JSON error" 'error(413)' \
  -H 'Content-Length: 65537' "$D/geo-map/decision"

# --- operations
check "/healthcheck: 200, ok list, no failures" \
  's == 200 and isinstance(v["ok"], list) and len(v["ok"]) > 0 and v["failed"] == []' "$O/healthcheck"
check "/deepcheck: 200, geo and apps ok" \
  's == 200 and v["failed"] == [] and any("geo city" in x for x in v["ok"]) and any(x.startswith("apps") for x in v["ok"])' "$O/deepcheck"
check "/debug/vars: decisions by app/provider/reason, geo cache, uptime, memory, reloads" \
  's == 200 and v["decisions"]["geo-map"]["cdn_a"]["D"] >= 1 and "denied" in v["decisions"]["http-hosts"] and isinstance(v["uptime_seconds"], int) and v["memory"]["rss_bytes"] > 0 and v["geo_cache"]["hits"] + v["geo_cache"]["misses"] >= 1 and isinstance(v["reloads"], int)' \
  "$O/debug/vars"
check "/debug/vars memo: geo-map memoised with hits (it was asked several times), fusion-budget not (it caches Fusion values)" \
  's == 200 and v["memo"]["apps"]["geo-map"]["memoised"] is True and v["memo"]["apps"]["geo-map"]["stats"]["hits"] >= 1 and v["memo"]["apps"]["fusion-budget"]["memoised"] is False and "writes a property" in v["memo"]["apps"]["fusion-budget"]["why_not"] and v["memo"]["hits"] >= 1' \
  "$O/debug/vars"
check "/metrics: decision counters and latency histogram" \
  's == 200 and h["content-type"].startswith("text/plain") and "switchyard_decisions_total{app=\"geo-map\",provider=\"cdn_a\",reason=\"D\"}" in b and "switchyard_decision_seconds_bucket{app=\"geo-map\",frontend=\"http\",le=\"+Inf\"}" in b' \
  "$O/metrics"
check "/api/applications: the five shipped apps, ok, http-hosts CORS *" \
  's == 200 and sorted(a["name"] for a in v["applications"]) == ["best-rtt", "fusion-budget", "geo-map", "http-hosts", "weighted"] and all(a["status"] == "ok" for a in v["applications"]) and [a["cors"] for a in v["applications"] if a["name"] == "http-hosts"] == ["*"]' \
  "$O/api/applications"
check "/api/applications/geo-map: names, settings, last_minute counts" \
  's == 200 and "geo-map.switchyard.test." in v["names"] and v["settings"]["ttl"] == 20 and v["last_minute"]["cdn_a"]["D"] >= 1' \
  "$O/api/applications/geo-map"
check "/api/applications/nope: 404 JSON error" 'error(404)' "$O/api/applications/nope"
check "/debug/pprof/profile?seconds=0: 400 JSON error" 'error(400)' "$O/debug/pprof/profile?seconds=0"
check "/debug/pprof/heap?format=json: rss_bytes" 's == 200 and v["rss_bytes"] > 0' "$O/debug/pprof/heap?format=json"
check "/debug/pprof/heap?seconds=0: 400 JSON error" 'error(400)' "$O/debug/pprof/heap?seconds=0"
# The built-in defaults set no api_token: serve generated one into the data
# directory (mode 0600) and logged the file, never the token.
TOKEN_FILE="$DATA/api_token"
TOKEN="$(cat "$TOKEN_FILE" 2>/dev/null || true)"
token_ok() {
  [[ "$TOKEN" =~ ^[0-9a-f]{64}$ ]] && [[ "$(stat -c %a "$TOKEN_FILE")" == 600 ]] \
    && grep -qF "$TOKEN_FILE" "$LOG" && ! grep -qF "$TOKEN" "$LOG"
}
if token_ok; then
  passed=$((passed + 1))
  echo "ok   generated api_token: 64 hex digits in \$DATA/api_token, mode 600, path logged, token not"
else
  failed=$((failed + 1))
  echo "FAIL generated api_token: file $TOKEN_FILE, token ${#TOKEN} chars"
fi
check "POST /api/reload without a token: 401 with a Bearer challenge" \
  'error(401) and h.get("www-authenticate") == "Bearer realm=\"switchyard\""' -X POST "$O/api/reload"
check "GET /api/inventory: the configured providers, up, and the apps as endpoints" \
  's == 200 and [p["id"] for p in v["providers"]] == ["cdn_a", "cdn_b", "cdn_c", "origin"] and all(p["state"] == "up" for p in v["providers"]) and "weighted" in [e["name"] for e in v["endpoints"]]' \
  -H "Authorization: Bearer $TOKEN" "$O/api/inventory"
check "GET /api/inventory with the old example token change-me: 401 invalid_token" \
  'error(401) and "invalid_token" in h.get("www-authenticate", "")' -H 'Authorization: Bearer change-me' "$O/api/inventory"
check "GET /api/inventory without a token: 401" 'error(401)' "$O/api/inventory"
check "weighted with no routes: origin, reason B" \
  's == 200 and v["provider"] == "origin" and v["reason"] == "B"' "$D/weighted/decision"
check "POST /api/reload with a wrong token: 401 invalid_token" \
  'error(401) and "invalid_token" in h.get("www-authenticate", "")' -X POST -H 'Authorization: Bearer wrong' "$O/api/reload"
check "GET /api/reload: 405" 'error(405)' "$O/api/reload"

# Still alive after all of it.
if kill -0 "$SERVER_PID" 2>/dev/null; then
  passed=$((passed + 1))
  echo "ok   server still running"
else
  failed=$((failed + 1))
  echo "FAIL server still running: it exited; its log:"
  cat "$LOG"
fi

echo "curl e2e: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
