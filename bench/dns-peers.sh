#!/usr/bin/env bash
# Peer benchmark: Switchyard against other authoritative servers answering the
# same 10,000 names with the same decision, over loopback UDP with dnsperf.
#
#   nsd                NSD 4, a static CNAME per name (the machine's ceiling)
#   gdnsd              gdnsd 3, geoip plugin: best-rtt's choice as a per-continent map
#   pdns-lua           PowerDNS 4 LUA records running best-rtt's logic in Lua,
#                      enable-lua-records=yes (a fresh Lua state per query)
#   pdns-lua-shared    the same with enable-lua-records=shared
#   switchyard-app     Switchyard with the shipped config serving apps/best-rtt.js
#                      (exact decision memoisation on, the default)
#   switchyard-app-nomemo  the same with server.memoise = false: every query runs the app
#   switchyard-app-rrl the same as switchyard-app with loopback not exempt from
#                      response rate limiting, so every reply goes through RRL
#                      (at a rate no account reaches: nothing is limited) and
#                      DNS cookies on (the default)
#   switchyard-static  Switchyard with the same names as static CNAME records
#   switchyard-app-nolog, switchyard-app-nomemo-nolog (not in the defaults)
#                      switchyard-app and -nomemo with the decision log's
#                      sampling off (`[log] decisions_sample = 0`; the shipped
#                      config samples 1 %), to measure what the log costs
#
# The signed table (SIGNED=1; issue 23): every query carries the DO bit
# (queries-do.bin, the same queries with DO set), and besides the unsigned
# nsd, pdns-lua-shared, switchyard-app, switchyard-app-nomemo and
# switchyard-static it runs their signed twins:
#   nsd-signed         NSD serving the same names pre-signed by dnssec-signzone
#                      (ECDSA P-256 KSK + ZSK, NSEC), signed by this script
#   pdns-lua-signed    pdns-lua-shared (enable-lua-records=shared) with the bind
#                      backend's bind-dnssec-db and `pdnsutil secure-zone`: the
#                      LUA answers signed online (pdnsutil's default ECDSA P-256)
#   switchyard-app-signed, switchyard-app-nomemo-signed, switchyard-static-signed
#                      switchyard-app, -nomemo and -static with `dnssec = true`
#                      on the zone (a CSK made at first start, ECDSA P-256)
# A signed server's sample check also wants an RRSIG over each answer, and
# `delv` (trust anchor: the server's own key, from dnssec-keygen, pdnsutil or
# `switchyard dnssec dnskey --anchor delv`) to fully validate DELV_NAMES of
# the names (their CNAME RRset: the target is another zone). A *-signed
# server given in SERVERS without SIGNED=1 is sent DO queries too.
#
# Every server gets the same query file (bench/dns-peers/gen_queries.rs:
# q0..q9999.best-rtt.switchyard.test, 70% A / 30% AAAA, half with an EDNS
# client subnet from the shipped geo/ networks), dnsperf runs DURATION seconds
# against each in turn, ROUNDS times interleaved (A B C ... A B C ...). Before
# the load, a sample of each server's answers is checked against
# `switchyard decide` for the same client (the static servers against their
# static record). Prints one markdown table (also written to
# target/bench/dns-peers/results.md).
#
# Two workloads (WORKLOAD=):
#   small       (the default) the above: 10,000 queries, ECS from the 12 networks of
#               the shipped geo/ databases, so every located client is one of 12
#   realistic   a generated City database in the GeoLite2 layout with GEO_N /24
#               networks (25 countries x 4 subdivisions) and an ASN database to
#               match (examples/make_geo_dbs.rs --generate; built once, kept in
#               target/bench/geo-gen/GEO_N/), QUERY_COUNT queries over the same
#               10,000 names, half with ECS from GEO_M distinct /24s of it (none
#               repeats with the defaults). Every server (gdnsd, switchyard, and
#               switchyard decide for the check) uses the generated databases.
#               Everything is written under target/bench/dns-peers-realistic/.
#
# Usage: bench/dns-peers.sh            (about 4 minutes with the defaults, build aside)
#        WORKLOAD=realistic bench/dns-peers.sh
#        WORKLOAD=both bench/dns-peers.sh   (small, then realistic, then the issue-30 goals table)
#        SIGNED=1 bench/dns-peers.sh   (the signed table, about 5 minutes)
# Environment: DURATION=10 LAT_DURATION=4 ROUNDS=2 CLIENTS=16 OUTSTANDING=100 PORT_BASE=15350
#              SAMPLE=48 SERVERS="nsd gdnsd pdns-lua pdns-lua-shared switchyard-app switchyard-app-rrl switchyard-app-nomemo switchyard-static"
#              SIGNED=1 (DO on every query; SERVERS defaults to "nsd nsd-signed pdns-lua-shared
#              pdns-lua-signed switchyard-app switchyard-app-signed switchyard-app-nomemo
#              switchyard-app-nomemo-signed switchyard-static switchyard-static-signed") DELV_NAMES=4
#              NO_INSTALL=1 (never run apt-get) NO_BUILD=1 (use target/release/switchyard as is)
#              SWITCHYARD_BIN=path (another build to run, with NO_BUILD=1)
#              CHECK_ONLY=1 (start the servers and check the sample, no dnsperf load)
#              WORKLOAD=small GEO_N=1000000 GEO_M=100000 QUERY_COUNT=200000 (realistic only)
# Every server listens on 127.0.0.1:PORT_BASE+n (never port 53); everything it
# writes is under target/bench/dns-peers/; on exit it stops exactly the
# processes it started (their PIDs are in target/bench/dns-peers/*/pid).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/bench/dns-peers
WORKLOAD=${WORKLOAD:-small}
GEO_N=${GEO_N:-1000000}
GEO_M=${GEO_M:-100000}
QUERY_COUNT=${QUERY_COUNT:-200000}
# WORKLOAD=both: the small workload, then the realistic one, in one
# invocation, and the issue-30 goals computed across the two reports (the
# every-query realistic / small ratio needs both).
if [[ $WORKLOAD == both ]]; then
  export SERVERS=${SERVERS:-nsd gdnsd switchyard-app switchyard-app-nomemo switchyard-static}
  WORKLOAD=small "$ROOT/bench/dns-peers.sh"
  WORKLOAD=realistic "$ROOT/bench/dns-peers.sh"
  cell() { # cell REPORT SERVER COLUMN → that server's cell (1 = QPS mean, 4 = p99 ms)
    awk -F' *[|] *' -v s="$2" -v c="$3" '$2 == s { print $(c + 3); exit }' "$1"
  }
  div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.3f", a / b }'; }
  small=$ROOT/target/bench/dns-peers/results.md
  real=$ROOT/target/bench/dns-peers-realistic/results.md
  {
    echo
    echo "## Both workloads, one invocation: the goals of issue 30"
    echo
    echo "| goal | measured |"
    echo "|---|---:|"
    echo "| realistic: memoised / NSD ≥ 0.95 | $(div "$(cell "$real" switchyard-app 1)" "$(cell "$real" nsd 1)") |"
    echo "| realistic: memoised / gdnsd ≥ 0.9 | $(div "$(cell "$real" switchyard-app 1)" "$(cell "$real" gdnsd 1)") |"
    echo "| realistic: memoised p99 / NSD p99 ≤ 1.5 | $(div "$(cell "$real" switchyard-app 4)" "$(cell "$real" nsd 4)") |"
    echo "| every query: realistic / small ≥ 0.9 | $(div "$(cell "$real" switchyard-app-nomemo 1)" "$(cell "$small" switchyard-app-nomemo 1)") |"
    echo "| small: memoised / NSD (unchanged) | $(div "$(cell "$small" switchyard-app 1)" "$(cell "$small" nsd 1)") |"
    echo "| realistic / small, NSD (the machine's drift between the two) | $(div "$(cell "$real" nsd 1)" "$(cell "$small" nsd 1)") |"
  } | tee "$ROOT/target/bench/dns-peers-both.md"
  exit 0
fi
case $WORKLOAD in
  small) OUT=$ROOT/target/bench/dns-peers ;;
  realistic) OUT=$ROOT/target/bench/dns-peers-realistic ;;
  *) printf 'dns-peers: WORKLOAD is small, realistic or both, not %s\n' "$WORKLOAD" >&2; exit 2 ;;
esac
# The signed table's results are kept apart from the unsigned one's.
[[ -n "${SIGNED:-}" ]] && OUT=$OUT-signed
DURATION=${DURATION:-10}
LAT_DURATION=${LAT_DURATION:-4}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-16}
OUTSTANDING=${OUTSTANDING:-100}
PORT_BASE=${PORT_BASE:-15350}
SAMPLE=${SAMPLE:-48}
SIGNED=${SIGNED:-}
DELV_NAMES=${DELV_NAMES:-4}
if [[ -n "$SIGNED" ]]; then
  SERVERS=${SERVERS:-nsd nsd-signed pdns-lua-shared pdns-lua-signed switchyard-app switchyard-app-signed switchyard-app-nomemo switchyard-app-nomemo-signed switchyard-static switchyard-static-signed}
else
  SERVERS=${SERVERS:-nsd gdnsd pdns-lua pdns-lua-shared switchyard-app switchyard-app-rrl switchyard-app-nomemo switchyard-static}
fi
ZONE=switchyard.test
CITY=$ROOT/geo/Switchyard-City-Test.mmdb
CONFIG=$ROOT/examples/switchyard.toml
PROBES=$ROOT/examples/data/probes.json
SY=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
GEO_ARGS=()   # the realistic workload's databases, for switchyard serve and decide
GEN_ARGS=()   # and gen_queries' arguments for it
read -r -a SERVER_LIST <<<"$SERVERS"

say() { printf '%s\n' "$*" >&2; }
die() { say "dns-peers: $*"; exit 1; }

# ---------------------------------------------------------------- packages
need=()
have_pkg() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
# PowerDNS only when a pdns server is asked for.
PDNS_PKGS=(); [[ " $SERVERS " == *" pdns-"* ]] && PDNS_PKGS=(pdns-server pdns-backend-bind pdns-backend-geoip)
# dnssec-keygen and dnssec-signzone sign NSD's zone; delv checks signed answers.
SIGN_PKGS=(); [[ " $SERVERS " == *"-signed "* ]] && SIGN_PKGS=(bind9-utils)
for p in dnsperf nsd gdnsd "${PDNS_PKGS[@]}" "${SIGN_PKGS[@]}" bind9-dnsutils jq iproute2 curl; do
  have_pkg "$p" || need+=("$p")
done
if ((${#need[@]})); then
  [[ -n "${NO_INSTALL:-}" ]] && die "missing packages: ${need[*]} (NO_INSTALL is set)"
  SUDO=(); ((EUID == 0)) || SUDO=(sudo)
  say "installing: ${need[*]}"
  "${SUDO[@]}" apt-get update -qq
  # Package scripts may start the distribution's own services on port 53;
  # this script never uses or stops them.
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
for c in dnsperf nsd gdnsd dig jq curl ${PDNS_PKGS[0]:+pdns_server pdnsutil} ${SIGN_PKGS[0]:+dnssec-keygen dnssec-signzone delv}; do command -v "$c" >/dev/null || die "$c not found"; done
dnsperf -h 2>&1 | grep -- '-B ' >/dev/null || die "dnsperf $(dpkg-query -W -f='${Version}' dnsperf) cannot read binary query files (-B): 2.5 or later needed"
PDNS_LIB=
((${#PDNS_PKGS[@]})) && PDNS_LIB=$(dirname "$(dpkg -L pdns-backend-bind | grep 'libbindbackend.so$' | head -1)")

# ---------------------------------------------------------------- build
if [[ -z "${NO_BUILD:-}" ]]; then
  say "building switchyard (release)"
  cargo build --release --locked >&2
fi
[[ -x "$SY" ]] || die "$SY not built"
mkdir -p "$OUT"
if [[ $WORKLOAD == realistic ]]; then
  source "$ROOT/bench/geo-gen.bash"
  generated_geo "$GEO_N"
  CITY=$GEN_CITY
  GEO_ARGS=(--geo-city "$GEN_CITY" --geo-asn "$GEN_ASN")
  GEN_ARGS=(--networks "$GEN_NETWORKS" --distinct "$GEO_M" --queries "$QUERY_COUNT")
fi
rustc -O --edition 2021 "$HERE/gen_queries.rs" -o "$OUT/gen_queries"
"$OUT/gen_queries" "$OUT" 10000 "$ZONE" "${GEN_ARGS[@]}"

# ---------------------------------------------------------------- processes
STARTED=()   # names whose $OUT/NAME/pid we wrote
TMPDIRS=()   # run directories made under /tmp
cleanup() {
  local name pid i d
  for name in "${STARTED[@]}"; do
    pid=$(cat "$OUT/$name/pid" 2>/dev/null) || continue
    kill -TERM "$pid" 2>/dev/null || true
  done
  for name in "${STARTED[@]}"; do
    pid=$(cat "$OUT/$name/pid" 2>/dev/null) || continue
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) did not stop on SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$OUT/$name/pid"
  done
  for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_of() {
  local i
  for i in "${!SERVER_LIST[@]}"; do
    [[ "${SERVER_LIST[$i]}" == "$1" ]] && { echo $((PORT_BASE + i)); return; }
  done
  return 1
}

# start NAME DIR COMMAND...: runs COMMAND in the background from DIR, logs to
# $OUT/NAME/log, writes its PID to $OUT/NAME/pid.
start() {
  local name=$1 dir=$2; shift 2
  local port; port=$(port_of "$name")
  if [[ -n "$(ss -Hlnu "sport = :$port" 2>/dev/null)$(ss -Hlnt "sport = :$port" 2>/dev/null)" ]]; then
    die "port $port (for $name) is already in use: set PORT_BASE"
  fi
  ( cd "$dir" && exec "$@" ) >"$OUT/$name/log" 2>&1 &
  echo $! >"$OUT/$name/pid"
  STARTED+=("$name")
}

# rundir NAME: a directory for NAME's control socket; unix socket paths are
# limited to 107 bytes, so a deep checkout gets one under /tmp instead.
rundir() {
  local d=$OUT/$1/run
  if ((${#d} > 80)); then
    d=$(mktemp -d "${TMPDIR:-/tmp}/dns-peers-$1.XXXXXX"); TMPDIRS+=("$d")
  fi
  mkdir -p "$d"; echo "$d"
}

# ready NAME: waits until NAME answers q0 with NOERROR and an answer.
ready() {
  local name=$1 port pid i
  port=$(port_of "$name"); pid=$(cat "$OUT/$name/pid")
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$OUT/$name/log" >&2; die "$name exited at startup (log: $OUT/$name/log)"; }
    if [[ -n "$(dig +norec +short +time=1 +tries=1 @127.0.0.1 -p "$port" "q0.best-rtt.$ZONE" A 2>/dev/null)" ]]; then
      return 0
    fi
    sleep 0.1
  done
  tail -20 "$OUT/$name/log" >&2
  die "$name did not answer on 127.0.0.1:$port within 60 s"
}

soa_header() {
  printf '$ORIGIN %s.\n$TTL 20\n' "$ZONE"
  printf '@ 60 IN SOA ns1.%s. hostmaster.%s. 2026112201 3600 600 604800 60\n' "$ZONE" "$ZONE"
  printf '@ 60 IN NS ns1.%s.\nns1 60 IN A 127.0.0.1\n' "$ZONE"
}
subst() { # subst FILE.in > out, filling @DIR@ @PORT@ @CITY@ @MODE@
  sed -e "s#@DIR@#$2#g" -e "s#@PORT@#$3#g" -e "s#@CITY@#$CITY#g" -e "s#@MODE@#${4:-}#g" "$1"
}

start_nsd() { # start_nsd NAME [signed]
  local name=$1 d=$OUT/$1 port ksk; port=$(port_of "$name")
  subst "$HERE/nsd.conf.in" "$d" "$port" >"$d/nsd.conf"
  { soa_header; awk 'BEGIN { for (i = 0; i < 10000; i++) printf "q%d.best-rtt 20 IN CNAME cdn-a.example.net.\n", i }'; } >"$d/$ZONE.zone"
  if [[ -n "${2:-}" ]]; then
    # A KSK and a ZSK, ECDSA P-256; NSEC (dnssec-signzone's default); the
    # signed file replaces the zone file nsd.conf names.
    ksk=$(cd "$d" && dnssec-keygen -q -a ECDSAP256SHA256 -f KSK -K . "$ZONE.")
    (cd "$d" && dnssec-keygen -q -a ECDSAP256SHA256 -K . "$ZONE." >/dev/null)
    (cd "$d" && dnssec-signzone -q -K . -S -o "$ZONE." -f "$ZONE.zone.signed" "$ZONE.zone" >/dev/null) || die "dnssec-signzone failed"
    mv "$d/$ZONE.zone.signed" "$d/$ZONE.zone"
    grep -v '^;' "$d/$ksk.key" | delv_anchor >"$d/anchor.conf"
  fi
  nsd-checkconf "$d/nsd.conf" || die "nsd.conf does not check"
  start "$name" "$d" nsd -d -c "$d/nsd.conf"
}

# delv_anchor: DNSKEY lines (zone-file form) on stdin → a delv -a file
# trusting the ones with the SEP flag (257).
delv_anchor() {
  awk 'BEGIN { print "trust-anchors {" }
       { for (i = 1; i < NF; i++) if ($i == "DNSKEY" && $(i + 1) == 257) {
           k = ""; for (j = i + 4; j <= NF; j++) k = k $j
           printf "  %s static-key %s %s %s \"%s\";\n", $1, $(i + 1), $(i + 2), $(i + 3), k } }
       END { print "};" }'
}

start_gdnsd() {
  local d=$OUT/gdnsd port; port=$(port_of gdnsd)
  mkdir -p "$d/zones"
  subst "$HERE/gdnsd.config.in" "$d" "$port" | sed "s#@RUN@#$(rundir gdnsd)#g" >"$d/config"
  { soa_header; awk 'BEGIN { for (i = 0; i < 10000; i++) printf "q%d.best-rtt 20/20 DYNC geoip!best_rtt\n", i }'; } >"$d/zones/$ZONE"
  start gdnsd "$d" gdnsd -c "$d" start
}

start_pdns() { # start_pdns NAME MODE [signed]
  local name=$1 mode=$2 d=$OUT/$1 port code
  port=$(port_of "$name")
  subst "$HERE/pdns.conf.in" "$d" "$port" "$mode" | sed "s#@RUN@#$(rundir "$name")#g" >"$d/pdns.conf"
  # Signed: the bind backend keeps keys in a SQLite database.
  [[ -n "${3:-}" ]] && printf 'bind-dnssec-db=%s/dnssec.db\n' "$d" >>"$d/pdns.conf"
  printf 'options { directory "%s"; };\nzone "%s" { type master; file "%s/%s.zone"; };\n' "$d" "$ZONE" "$d" "$ZONE" >"$d/named.conf"
  printf 'domains: []\n' >"$d/geoip-zones.yaml"
  # best-rtt.lua as one record: comments dropped, lines joined.
  code=$(sed -e 's/--.*$//' "$HERE/best-rtt.lua" | tr -s ' \n' ' ')
  { soa_header; awk -v code="$code" 'BEGIN { for (i = 0; i < 10000; i++) printf "q%d.best-rtt 20 IN LUA CNAME \";%s\"\n", i, code }'; } >"$d/$ZONE.zone"
  if [[ -n "${3:-}" ]]; then
    pdnsutil --config-dir="$d" create-bind-db "$d/dnssec.db" >"$d/pdnsutil.log" 2>&1 \
      && pdnsutil --config-dir="$d" secure-zone "$ZONE" >>"$d/pdnsutil.log" 2>&1 \
      || { cat "$d/pdnsutil.log" >&2; die "$name: pdnsutil could not sign the zone"; }
    pdnsutil --config-dir="$d" show-zone "$ZONE" 2>/dev/null \
      | sed -n 's/^.*DNSKEY = \([^;]*\).*/\1/p' | delv_anchor >"$d/anchor.conf"
  fi
  start "$name" "$d" pdns_server --config-dir="$d" --module-dir="$PDNS_LIB"
}

start_switchyard() { # start_switchyard NAME CONFIG
  local name=$1 cfg=$2 d=$OUT/$1 port i
  port=$(port_of "$name")
  rm -rf "$d/data"
  # Run from the repo root: the config's paths (apps/, geo/, examples/data/)
  # are relative to it.
  start "$name" "$ROOT" env RUST_LOG="${SWITCHYARD_LOG:-info}" \
    "$SY" serve --config "$cfg" --dns "127.0.0.1:$port" --http 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir "$d/data" "${GEO_ARGS[@]}"
  for ((i = 0; i < 600; i++)); do
    grep -q 'switchyard ready' "$d/log" 2>/dev/null && return 0
    kill -0 "$(cat "$d/pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$d/log" >&2
  die "$name: no 'switchyard ready' line (log: $d/log)"
}

static_config() { # the shipped config plus q0..q9999.best-rtt as static CNAMEs
  awk '{ print } /^records = \[/ && !done { for (i = 0; i < 10000; i++) printf "  { name = \"q%d.best-rtt\", type = \"CNAME\", value = \"cdn-a.example.net.\" },\n", i; done = 1 }' "$CONFIG"
}

# signed_config FILE: FILE with the zone signed (`dnssec = true` after its
# `ns = [...]` line), on stdout.
signed_config() {
  awk '{ print } /^ns = \[/ && !done { print "dnssec = true"; done = 1 }' "$1"
}

# switchyard_anchor NAME CONFIG: the delv anchor of a started signed
# Switchyard (its CSK, made at first start in its data dir).
switchyard_anchor() {
  (cd "$ROOT" && "$SY" dnssec dnskey "$ZONE." --anchor delv --config "$2" --data-dir "$OUT/$1/data") >"$OUT/$1/anchor.conf" \
    || die "$1: switchyard dnssec dnskey failed"
}

say "starting: ${SERVER_LIST[*]} on 127.0.0.1:$PORT_BASE.."
for s in "${SERVER_LIST[@]}"; do
  rm -rf "${OUT:?}/$s"; mkdir -p "$OUT/$s"
  case $s in
    nsd) start_nsd nsd ;;
    nsd-signed) start_nsd nsd-signed signed ;;
    gdnsd) start_gdnsd ;;
    pdns-lua) start_pdns pdns-lua yes ;;
    pdns-lua-shared) start_pdns pdns-lua-shared shared ;;
    pdns-lua-signed) start_pdns pdns-lua-signed shared signed ;;
    switchyard-app) start_switchyard switchyard-app "$CONFIG" ;;
    switchyard-app-nomemo)
      sed 's/^memoise = true/memoise = false/' "$CONFIG" >"$OUT/$s/switchyard.toml"
      grep -q '^memoise = false' "$OUT/$s/switchyard.toml" || die "no 'memoise = true' line in $CONFIG"
      start_switchyard switchyard-app-nomemo "$OUT/$s/switchyard.toml" ;;
    switchyard-app-nomemo-nolog)
      sed -e 's/^memoise = true/memoise = false/' -e 's/^decisions_sample = [0-9.]*/decisions_sample = 0/' "$CONFIG" >"$OUT/$s/switchyard.toml"
      grep -Eq '^decisions_sample = 0([^.0-9]|$)' "$OUT/$s/switchyard.toml" || die "no '[log] decisions_sample' line in $CONFIG"
      start_switchyard switchyard-app-nomemo-nolog "$OUT/$s/switchyard.toml" ;;
    switchyard-app-nolog)
      sed 's/^decisions_sample = [0-9.]*/decisions_sample = 0/' "$CONFIG" >"$OUT/$s/switchyard.toml"
      grep -Eq '^decisions_sample = 0([^.0-9]|$)' "$OUT/$s/switchyard.toml" || die "no '[log] decisions_sample' line in $CONFIG"
      start_switchyard switchyard-app-nolog "$OUT/$s/switchyard.toml" ;;
    switchyard-app-rrl)
      # Loopback not exempt, and a rate no account reaches: dnsperf is one
      # source, and an app's names (q0..q9999.best-rtt) are one answer to
      # RRL, as a wildcard's are in BIND, so every A reply debits one account.
      sed -e 's|^exempt = \[.*|exempt = []|' -e 's|^responses_per_second = 200 |responses_per_second = 1000000 |' \
          -e 's|^window_secs = 15 |window_secs = 1 |' "$CONFIG" >"$OUT/$s/switchyard.toml"
      grep -q '^exempt = \[\]' "$OUT/$s/switchyard.toml" || die "no '[rrl] exempt' line in $CONFIG"
      start_switchyard switchyard-app-rrl "$OUT/$s/switchyard.toml" ;;
    switchyard-static)
      static_config >"$OUT/$s/switchyard.toml"
      grep -q 'q9999.best-rtt' "$OUT/$s/switchyard.toml" || die "no 'records = [' line in $CONFIG"
      start_switchyard switchyard-static "$OUT/$s/switchyard.toml" ;;
    switchyard-app-signed | switchyard-app-nomemo-signed | switchyard-static-signed)
      case $s in
        switchyard-app-signed) cp "$CONFIG" "$OUT/$s/unsigned.toml" ;;
        switchyard-app-nomemo-signed) sed 's/^memoise = true/memoise = false/' "$CONFIG" >"$OUT/$s/unsigned.toml" ;;
        switchyard-static-signed) static_config >"$OUT/$s/unsigned.toml" ;;
      esac
      signed_config "$OUT/$s/unsigned.toml" >"$OUT/$s/switchyard.toml"
      grep -q '^dnssec = true' "$OUT/$s/switchyard.toml" || die "no 'ns = [' line in $CONFIG"
      start_switchyard "$s" "$OUT/$s/switchyard.toml"
      switchyard_anchor "$s" "$OUT/$s/switchyard.toml" ;;
    *) die "unknown server '$s'" ;;
  esac
done
for s in "${SERVER_LIST[@]}"; do ready "$s"; done

# ---------------------------------------------------------------- correctness
# A sample of the query file (every Nth line): each server's answer must be
# what `switchyard decide` gives for the same client (ECS subnet, else the
# loopback source) and query type; the static servers must give their record.
say "checking $SAMPLE sampled answers per server against switchyard decide"
declare -A EXPECT CORRECT
step=$(( $(wc -l <"$OUT/queries.txt") / SAMPLE ))
mapfile -t SAMPLES < <(awk -v s="$step" 'NR % s == 1' "$OUT/queries.txt" | head -n "$SAMPLE")
bad=0
for line in "${SAMPLES[@]}"; do
  read -r qname qtype ecs <<<"$line"
  key="$qtype $ecs"
  if [[ -z "${EXPECT[$key]:-}" ]]; then
    args=(decide --config "$CONFIG" --app best-rtt --ip 127.0.0.1 --qtype "$qtype" --probe "$PROBES")
    [[ "$ecs" != - ]] && args+=(--ecs "$ecs")
    args+=("${GEO_ARGS[@]}")
    EXPECT[$key]=$(cd "$ROOT" && "$SY" "${args[@]}" | jq -r '[.answers[] | "\(.type) \(.value | rtrimstr("."))"] | sort | join(",")')
  fi
done
signed() { [[ $1 == *-signed ]]; }
for s in "${SERVER_LIST[@]}"; do
  port=$(port_of "$s"); ok=0
  dnssec=(); signed "$s" && dnssec=(+dnssec)
  for line in "${SAMPLES[@]}"; do
    read -r qname qtype ecs <<<"$line"
    case $s in
      nsd | nsd-signed | switchyard-static | switchyard-static-signed) want="CNAME cdn-a.example.net" ;;
      *) want=${EXPECT["$qtype $ecs"]} ;;
    esac
    sub=(); [[ "$ecs" != - ]] && sub=("+subnet=$ecs")
    answer=$(dig +norec +nocookie +noall +answer "${dnssec[@]}" +time=2 +tries=2 @127.0.0.1 -p "$port" "$qname" "$qtype" "${sub[@]}")
    got=$(awk '$4 != "RRSIG" { v = $5; sub(/\.$/, "", v); print $4 " " v }' <<<"$answer" | sort | paste -sd, -)
    # Signed: an RRSIG over every RRset of the answer.
    unsigned=
    if signed "$s"; then
      unsigned=$(awk '$4 == "RRSIG" { c[$5] = 1 } $4 != "RRSIG" { t[$4] = 1 } END { for (k in t) if (!(k in c)) printf "%s ", k }' <<<"$answer")
    fi
    if [[ "$got" == "$want" && -z "$unsigned" ]]; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1))
      say "WRONG $s: $qname $qtype ecs=$ecs: got '$got'${unsigned:+ with no RRSIG over $unsigned}, want '$want'"
    fi
  done
  CORRECT[$s]="$ok/${#SAMPLES[@]}"
  # Signed: delv validates the first DELV_NAMES sampled names' CNAME RRset
  # (no ECS: delv sends none) from the server's key.
  if signed "$s"; then
    for line in "${SAMPLES[@]:0:$DELV_NAMES}"; do
      read -r qname _ <<<"$line"
      if delv @127.0.0.1 -p "$port" -a "$OUT/$s/anchor.conf" +root="$ZONE" "$qname" CNAME 2>&1 | grep -q '^; fully validated$'; then
        ok=$((ok + 1))
      else
        bad=$((bad + 1))
        say "NOT VALIDATED $s: delv $qname CNAME: $(delv @127.0.0.1 -p "$port" -a "$OUT/$s/anchor.conf" +root="$ZONE" "$qname" CNAME 2>&1 | tr '\n' ' ')"
      fi
    done
    CORRECT[$s]="$ok/$((${#SAMPLES[@]} + DELV_NAMES)) (delv $DELV_NAMES)"
  fi
done
((bad == 0)) || die "$bad wrong answers: not benchmarking"
if [[ -n "${CHECK_ONLY:-}" ]]; then
  say "CHECK_ONLY: every sampled answer is right; no load"
  exit 0
fi

# ---------------------------------------------------------------- load
# Per server and round: a throughput run (QPS, lost, rcodes) and right after
# it a latency run with dnsperf -v, which prints every response's latency
# (it slows dnsperf itself by 15-35%, which would lower the NSD ceiling, so
# QPS never comes from it). Each latency run is reduced to a histogram
# (microseconds → count) and its output deleted.
mkdir -p "$OUT/runs"
rm -f "$OUT/runs/"*
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "dnsperf: $ROUNDS rounds x ${#SERVER_LIST[@]} servers x (${DURATION}s + ${LAT_DURATION}s -v), $CLIENTS clients, $OUTSTANDING outstanding"
# The DO bit (SIGNED=1, or a signed server): queries-do.bin, the same
# queries with DO set.
queries_of() { if [[ -n "$SIGNED" ]] || signed "$1"; then echo "$OUT/queries-do.bin"; else echo "$OUT/queries.bin"; fi; }
perf_run() { # perf_run PORT SECONDS OUTFILE [-v]
  dnsperf -B -d "$QUERIES" -s 127.0.0.1 -p "$1" -l "$2" -c "$CLIENTS" -q "$OUTSTANDING" -t 5 ${4:-} \
    >"$3" 2>"$3.err" || { cat "$3.err" >&2; die "dnsperf failed against port $1"; }
  rm -f "$3.err"
}
summary() { # the statistics lines of dnsperf's output, rcodes one per line as "R CODE N"
  grep -E 'Queries (sent|completed|lost)|Queries per second|Average Latency' "$1"
  sed -n 's/^ *Response codes: *//p' "$1" | tr ',' '\n' | awk 'NF >= 2 { print "R", $1, $2 }'
}
for ((r = 1; r <= ROUNDS; r++)); do
  for s in "${SERVER_LIST[@]}"; do
    port=$(port_of "$s")
    QUERIES=$(queries_of "$s")
    f=$OUT/runs/$s.$r
    perf_run "$port" "$DURATION" "$f.out"
    summary "$f.out" >"$f.sum"; rm -f "$f.out"
    sleep 1
    perf_run "$port" "$LAT_DURATION" "$f.lat.out" -v
    summary "$f.lat.out" >"$f.lat.sum"
    awk '/^> / && $NF ~ /^[0-9.]+$/ { h[int($NF * 1e6 + 0.5)]++ } END { for (k in h) print k, h[k] }' "$f.lat.out" >"$f.hist"
    rm -f "$f.lat.out"
    say "  round $r  $(printf '%-18s' "$s") $(awk '/Queries per second/ { printf "%.0f", $4 }' "$f.sum") qps"
    sleep 1
  done
done

# Switchyard's own count of what it answered during the load: a decision
# that ran out of budget is served the app's fallback (origin.example.net),
# which is not best-rtt's answer. dnsperf only sees the NOERROR.
VARS=
if [[ -f "$OUT/switchyard-app/log" ]] && [[ " ${SERVER_LIST[*]} " == *" switchyard-app "* ]]; then
  ops=$(sed -n 's/.*listening for operations addr=\([0-9.:]*\).*/\1/p' "$OUT/switchyard-app/log" | tail -1)
  if [[ -n "$ops" ]] && curl -sf "http://$ops/debug/vars" >"$OUT/switchyard-app/vars.json"; then
    VARS=$(jq -r '(.decisions["best-rtt"] // {}) as $d
        | ([$d[][]] | add // 0) as $n
        | "\($n) best-rtt decisions (the sample check included); by provider and reason: "
          + ([$d | to_entries[] | .key as $p | .value | to_entries[] | "\($p) \(.key) \(.value)"] | join(", "))
          + "; **\(.fallbacks) answered with the fallback** (origin.example.net, not best-rtt'"'"'s answer"
          + (if $n > 0 then ", \(10000 * .fallbacks / $n | round / 100)%" else "" end)
          + "); budget overruns \(.budget_overruns), workers overloaded \(.workers.overloaded), late \(.workers.late)"
          + "; memo: \(.memo.apps["best-rtt"] // {} | tojson)"' \
        "$OUT/switchyard-app/vars.json")
  fi
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
declare -A QPS P99
row() { # row NAME → markdown row
  local s=$1 qps_list sent lost stats rc
  qps_list=$(for ((r = 1; r <= ROUNDS; r++)); do awk '/Queries per second/ { printf "%.0f\n", $4 }' "$OUT/runs/$s.$r.sum"; done)
  QPS[$s]=$(awk '{ t += $1; n++ } END { printf "%.0f", t / n }' <<<"$qps_list")
  # lost queries and rcodes: over the throughput and the latency runs
  sent=$(cat "$OUT/runs/$s".*sum | awk '/Queries sent/ { t += $3 } END { print t + 0 }')
  lost=$(cat "$OUT/runs/$s".*sum | awk '/Queries lost/ { t += $3 } END { print t + 0 }')
  rc=$(cat "$OUT/runs/$s".*sum | awk '$1 == "R" && $2 != "NOERROR" { t[$2] += $3 } END { s = ""; for (k in t) s = s k " " t[k] " "; print (s == "" ? "none" : s) }')
  # mean and p99: over the latency runs
  stats=$(cat "$OUT/runs/$s".*.hist | sort -n \
    | awk '{ us[NR] = $1; c[NR] = $2; n += $2; sum += $1 * $2 }
           END { if (n == 0) { print "- -"; exit } t = n * 0.99; a = 0
                 for (i = 1; i <= NR; i++) { a += c[i]; if (a >= t) { p = us[i]; break } }
                 printf "%.3f %.3f", sum / n / 1000, p / 1000 }')
  P99[$s]=${stats#* }
  printf '| %s | %s | %s | %s | %s | %s | %s (%.3f%%) | %s | %s |\n' "$s" "$(version "$s")" "${QPS[$s]}" \
    "$(paste -sd/ - <<<"$qps_list")" "${stats% *}" "${stats#* }" "$lost" "$(awk -v l="$lost" -v s="$sent" 'BEGIN { print (s ? 100 * l / s : 0) }')" \
    "$rc" "${CORRECT[$s]}"
}
version() {
  case $1 in
    nsd) echo "NSD $(dpkg-query -W -f='${Version}' nsd)" ;;
    gdnsd) echo "gdnsd $(dpkg-query -W -f='${Version}' gdnsd)" ;;
    pdns-lua) echo "PowerDNS $(dpkg-query -W -f='${Version}' pdns-server), lua-records=yes" ;;
    pdns-lua-shared) echo "PowerDNS $(dpkg-query -W -f='${Version}' pdns-server), lua-records=shared" ;;
    switchyard-app) echo "Switchyard, apps/best-rtt.js, memoised" ;;
    switchyard-app-rrl) echo "Switchyard, apps/best-rtt.js, memoised, every reply through RRL" ;;
    switchyard-app-nolog) echo "Switchyard, apps/best-rtt.js, memoised, decision log sampling off" ;;
    switchyard-app-nomemo-nolog) echo "Switchyard, apps/best-rtt.js, every query runs it, decision log sampling off" ;;
    switchyard-app-nomemo) echo "Switchyard, apps/best-rtt.js, every query runs it" ;;
    switchyard-static) echo "Switchyard, static CNAMEs" ;;
    nsd-signed) echo "NSD $(dpkg-query -W -f='${Version}' nsd), pre-signed (dnssec-signzone, ECDSA P-256, NSEC)" ;;
    pdns-lua-signed) echo "PowerDNS $(dpkg-query -W -f='${Version}' pdns-server), lua-records=shared, signed online" ;;
    switchyard-app-signed) echo "Switchyard, apps/best-rtt.js, memoised, signed online" ;;
    switchyard-app-nomemo-signed) echo "Switchyard, apps/best-rtt.js, every query runs it, signed online" ;;
    switchyard-static-signed) echo "Switchyard, static CNAMEs, signed online" ;;
  esac
}
ratio() { # ratio A B
  [[ -n "${QPS[$1]:-}" && -n "${QPS[$2]:-}" ]] || return 0
  printf '| %s / %s | %s |\n' "$1" "$2" "$(awk -v a="${QPS[$1]}" -v b="${QPS[$2]}" 'BEGIN { printf "%.3f", (b ? a / b : 0) }')"
}
p99_ratio() { # p99_ratio A B: A's p99 latency over B's
  [[ "${P99[$1]:--}" != - && "${P99[$2]:--}" != - ]] || return 0
  printf '| %s / %s | %s |\n' "$1" "$2" "$(awk -v a="${P99[$1]}" -v b="${P99[$2]}" 'BEGIN { printf "%.2f", (b ? a / b : 0) }')"
}

{
  echo "## DNS peers ($WORKLOAD workload${SIGNED:+, signed}): $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(uname -sr), $(. /etc/os-release && echo "$PRETTY_NAME"); dnsperf $(dpkg-query -W -f='${Version}' dnsperf) on the same machine"
  echo
  if [[ $WORKLOAD == realistic ]]; then
    echo "Command: \`WORKLOAD=realistic GEO_N=$GEO_N GEO_M=$GEO_M QUERY_COUNT=$QUERY_COUNT DURATION=$DURATION LAT_DURATION=$LAT_DURATION ROUNDS=$ROUNDS CLIENTS=$CLIENTS OUTSTANDING=$OUTSTANDING bench/dns-peers.sh\`"
    echo "(Generated City database of $GEO_N /24 networks and ASN database to match; $QUERY_COUNT queries over 10,000 names, 70% A / 30% AAAA, half with ECS from $GEO_M distinct /24s of it; dnsperf -c $CLIENTS -q $OUTSTANDING; $ROUNDS interleaved rounds of, per server, a ${DURATION}s throughput run (QPS) and a ${LAT_DURATION}s latency run with -v (mean, p99, over all rounds); lost and rcodes over all runs.)"
  else
  echo "Command: \`${SIGNED:+SIGNED=1 }DURATION=$DURATION LAT_DURATION=$LAT_DURATION ROUNDS=$ROUNDS CLIENTS=$CLIENTS OUTSTANDING=$OUTSTANDING bench/dns-peers.sh\`"
  echo "(10,000 names, 70% A / 30% AAAA, half with ECS${SIGNED:+, DO set on every query}; dnsperf -c $CLIENTS -q $OUTSTANDING; $ROUNDS interleaved rounds of, per server, a ${DURATION}s throughput run (QPS) and a ${LAT_DURATION}s latency run with -v (mean, p99, over all rounds); lost and rcodes over all runs.)"
  fi
  echo "Load average (1/5/15 min) before the load: $LOAD_START, after: $LOAD_END. Switchyard binary built $(date -u -r "$SY" '+%Y-%m-%d %H:%M UTC'), tree at $(git rev-parse --short HEAD 2>/dev/null || echo '(not a git checkout)')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock apps examples 2>/dev/null || echo ' with uncommitted changes')."
  echo "Threads: NSD server-count 2; gdnsd udp_threads 2; PowerDNS receiver-threads 2 x distributor-threads 2; Switchyard its defaults; dnsperf 1 thread."
  echo
  echo "| server | software | QPS (mean) | QPS per round | mean latency ms | p99 latency ms | lost | rcode ≠ NOERROR | sample answers correct |"
  echo "|---|---|---:|---|---:|---:|---:|---|---|"
  for s in "${SERVER_LIST[@]}"; do row "$s"; done
  echo
  echo "| QPS ratio | |"
  echo "|---|---:|"
  ratio switchyard-app nsd
  ratio switchyard-app switchyard-static
  ratio switchyard-app pdns-lua
  ratio switchyard-app pdns-lua-shared
  ratio switchyard-app gdnsd
  ratio switchyard-app-rrl nsd
  ratio switchyard-app-rrl switchyard-app
  ratio switchyard-app switchyard-app-nolog
  ratio switchyard-app-nomemo switchyard-app-nomemo-nolog
  ratio switchyard-app-nomemo nsd
  ratio switchyard-app-nomemo switchyard-static
  ratio switchyard-app-nomemo pdns-lua
  ratio switchyard-app-nomemo pdns-lua-shared
  ratio switchyard-static nsd
  ratio nsd-signed nsd
  ratio pdns-lua-signed pdns-lua-shared
  ratio pdns-lua-signed nsd-signed
  ratio switchyard-app-signed nsd-signed
  ratio switchyard-app-signed pdns-lua-signed
  ratio switchyard-app-signed switchyard-app
  ratio switchyard-app-nomemo-signed switchyard-app-nomemo
  ratio switchyard-app-nomemo-signed pdns-lua-signed
  ratio switchyard-static-signed nsd-signed
  ratio switchyard-static-signed switchyard-static
  echo
  echo "| p99 latency ratio | |"
  echo "|---|---:|"
  p99_ratio switchyard-app nsd
  p99_ratio switchyard-app-rrl nsd
  p99_ratio switchyard-app-nomemo nsd
  p99_ratio switchyard-static nsd
  p99_ratio nsd-signed nsd
  p99_ratio switchyard-app-signed nsd-signed
  p99_ratio switchyard-app-nomemo-signed switchyard-app-nomemo
  p99_ratio switchyard-static-signed nsd-signed
  if [[ -n "$VARS" ]]; then
    echo
    echo "switchyard-app, from its /debug/vars after the load: $VARS."
  fi
} >"$OUT/results.md"
cat "$OUT/results.md"
