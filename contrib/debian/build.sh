#!/usr/bin/env bash
# Builds the Debian package (cargo-deb, `[package.metadata.deb]` in
# Cargo.toml) from the release binary and prints the .deb's path.
#
# The binary is target/release/switchyard as `cargo build --release` (or
# tests/run-all.sh) left it, built here only when missing: cargo deb runs
# with --no-build, so nothing compiles twice. Beside the files in git, the
# package holds what the binary generates from its command-line definition
# (man pages, completions) and /etc/switchyard/switchyard.toml, which is
# examples/switchyard.toml with system paths (edit() below): one example,
# two installs.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v cargo-deb >/dev/null || {
  echo "build.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 1
}
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/switchyard"
[[ -x "$bin" ]] || cargo build --release --locked >&2

assets="$target/release/deb-assets"
rm -rf "$assets"
mkdir -p "$assets"
"$bin" generate man "$assets/man" >/dev/null
# Gzipped here: cargo-deb compresses man pages only outside target/.
gzip -9n "$assets"/man/*.1
"$bin" generate completions "$assets/completions" >/dev/null

config="$(<examples/switchyard.toml)"
# edit FROM TO: replaces the first FROM in the config; a FROM that is not
# there (the example changed) stops the build rather than ship a wrong file.
edit() {
  [[ "$config" == *"$1"* ]] || {
    echo "build.sh: examples/switchyard.toml no longer has: $1" >&2
    exit 1
  }
  config="${config/"$1"/"$2"}"
}
edit '# Switchyard configuration: these are also the built-in defaults used when
# no --config is given and no ./switchyard.toml exists. Paths are relative to
# the working directory.' \
'# Switchyard configuration of the Debian package: /etc/switchyard/switchyard.toml,
# read by switchyard.service (`systemctl reload switchyard` rereads it). It is
# the example configuration (the built-in defaults) with system paths; see
# switchyard(1) and /usr/share/doc/switchyard/README.md.'
edit 'dns = ["127.0.0.1:5353"]        # UDP and TCP on each; add "[::1]:5353" for IPv6' \
     'dns = ["0.0.0.0:53", "[::]:53"] # UDP and TCP on each (the unit grants CAP_NET_BIND_SERVICE)'
edit 'apps = "apps"' \
     'apps = "/etc/switchyard/apps"  # seeded at install from the examples in /usr/share/switchyard/apps'
edit 'data_dir = "data"' \
     'data_dir = "/var/lib/switchyard"  # the unit'"'"'s StateDirectory: tokens, secrets, stats'
edit '[geo]
city = "geo/Switchyard-City-Test.mmdb"
asn = "geo/Switchyard-ASN-Test.mmdb"
# overrides = "geo/overrides.toml"' \
'# The shipped test databases (documentation ranges only) so the server starts
# out of the box; geoipupdate writes the real ones to /var/lib/GeoIP:
#   city = "/var/lib/GeoIP/GeoLite2-City.mmdb"
#   asn = "/var/lib/GeoIP/GeoLite2-ASN.mmdb"
[geo]
city = "/usr/share/switchyard/geo/Switchyard-City-Test.mmdb"
asn = "/usr/share/switchyard/geo/Switchyard-ASN-Test.mmdb"
# overrides = "/usr/share/switchyard/geo/overrides.toml"'
edit 'probes = "examples/data/probes.json"' \
     '# probes = "/usr/share/switchyard/data/probes.json"   # the example table (static values, for trying the apps)'
printf '%s\n' "$config" >"$assets/switchyard.toml"

# --no-build: package the binary above. --strip: the release profile keeps
# line tables (debug = 1) for benchmarks and profiles; the package ships
# the stripped binary (a sixth of the size, and xz takes seconds, not minutes).
# cargo deb prints the .deb's path.
cargo deb --no-build --strip --locked --output "$target/debian/" | tail -n1
