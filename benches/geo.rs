//! GeoIP lookup cost on the shipped test databases (City + ASN): the raw database lookup
//! every cache miss pays, and the cached lookup the DNS front end normally pays.
//!
//! ```text
//! cargo bench --bench geo -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Each iteration looks up a batch of addresses (every shipped network, both families, plus
//! unlisted ones), so the throughput line reads as lookups per second.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard::geo::{Geo, GeoDb, GeoPaths};

#[rustfmt::skip]
const ADDRESSES: &[&str] = &[
    "192.0.2.1", "192.0.2.70", "192.0.2.200", "198.51.100.1", "198.51.100.130",
    "198.51.100.200", "203.0.113.1", "203.0.113.65", "203.0.113.130", "203.0.113.200",
    "203.0.113.230", "2001:db8::1", "2001:db8:1::1", "2001:db8:2::1", "2001:db8:3::1",
    "::ffff:198.51.100.7", "10.0.0.1", "8.8.8.8", "fe80::1",
];

fn paths() -> GeoPaths {
    let geo = Path::new(env!("CARGO_MANIFEST_DIR")).join("geo");
    GeoPaths {
        city: Some(geo.join("Switchyard-City-Test.mmdb")),
        asn: Some(geo.join("Switchyard-ASN-Test.mmdb")),
        overrides: Some(geo.join("overrides.toml")),
    }
}

fn lookups(c: &mut Criterion) {
    let ips: Vec<IpAddr> = ADDRESSES
        .iter()
        .map(|a| a.parse().expect("valid address"))
        .collect();
    let mut group = c.benchmark_group("geo");
    group.throughput(Throughput::Elements(ips.len() as u64));

    let db = GeoDb::open(&paths()).expect("shipped databases load");
    group.bench_function("GeoDb::lookup (uncached)", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(db.lookup(black_box(*ip)));
            }
        });
    });

    let geo = Geo::new(GeoDb::open(&paths()).expect("shipped databases load"));
    for ip in &ips {
        geo.lookup(*ip); // warm the cache: this bench measures hits
    }
    group.bench_function("Geo::lookup (cached)", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(geo.lookup(black_box(*ip)));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
