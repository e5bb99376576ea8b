# Sourced by the benchmarks with a realistic workload (bench/dns-peers.sh,
# bench/dns-instructions.sh): `generated_geo N` makes sure the generated
# GeoIP databases of N /24 networks (examples/make_geo_dbs.rs --generate)
# are in target/bench/geo-gen/N/, building them once, and sets GEN (that
# folder), GEN_CITY, GEN_ASN and GEN_NETWORKS (the list gen_queries draws
# ECS subnets from). Needs ROOT; NO_BUILD=1 uses the built example as is.

generated_geo() {
  GEN=$ROOT/target/bench/geo-gen/$1
  GEN_CITY=$GEN/Switchyard-City-Gen.mmdb
  GEN_ASN=$GEN/Switchyard-ASN-Gen.mmdb
  GEN_NETWORKS=$GEN/networks.txt
  if [[ ! -s "$GEN_CITY" || ! -s "$GEN_ASN" || ! -s "$GEN_NETWORKS" ]]; then
    printf 'generating the GeoIP databases (%s networks) in %s\n' "$1" "$GEN" >&2
    [[ -n "${NO_BUILD:-}" ]] || cargo build --release --locked --example make_geo_dbs >&2
    "$ROOT/target/release/examples/make_geo_dbs" --generate "$1" "$GEN" >&2
  fi
}
