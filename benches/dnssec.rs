//! Signatures per second per core for both algorithms a signed zone can
//! use (ECDSA P-256, algorithm 13, the default; Ed25519, algorithm 15):
//! what a cache miss of the online signer costs (issue 23).
//!
//! ```text
//! cargo bench --bench dnssec -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! Each iteration signs the to-be-signed data (RFC 4034 §3.1.8.1) of a
//! typical app answer, two A records with a 20 s TTL, once, on one thread:
//! the throughput line reads as signatures per second on one core. The
//! data is built once; building it is the caller's cost, measured apart.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::dnssec::rdata::SigInput;
use hickory_proto::dnssec::{Algorithm, TBS};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use switchyard::config::DnssecAlgorithm;
use switchyard::dnssec::keys::{Role, Timing, ZoneKey};

/// geo-map's answer for a client with no geo: two addresses, TTL 20.
fn rrset() -> (Name, Vec<Record>) {
    let name = Name::from_ascii("geo-map.switchyard.test.").expect("name");
    let records = ["192.0.2.10", "192.0.2.11"]
        .iter()
        .map(|a| {
            let ip: Ipv4Addr = a.parse().expect("address");
            Record::from_rdata(name.clone(), 20, RData::A(A(ip)))
        })
        .collect();
    (name, records)
}

/// The RRSIG fields (all but the signature) for the RRset and a key.
fn input(name: &Name, algorithm: Algorithm, key_tag: u16) -> SigInput {
    SigInput {
        type_covered: RecordType::A,
        algorithm,
        num_labels: name.num_labels(),
        original_ttl: 20,
        sig_expiration: SerialNumber::new(1_800_000_000 + 14 * 86_400),
        sig_inception: SerialNumber::new(1_800_000_000),
        key_tag,
        signer_name: Name::from_ascii("switchyard.test.").expect("zone"),
    }
}

fn signatures(c: &mut Criterion) {
    let (name, records) = rrset();
    let mut group = c.benchmark_group("dnssec");
    group.throughput(Throughput::Elements(1));
    for (label, alg) in [
        ("sign/ecdsap256sha256", DnssecAlgorithm::EcdsaP256Sha256),
        ("sign/ed25519", DnssecAlgorithm::Ed25519),
    ] {
        let key = ZoneKey::generate(alg, Role::Zsk, Timing::default()).expect("key");
        let input = input(&name, key.algorithm(), key.tag);
        let tbs = TBS::from_input(&name, DNSClass::IN, &input, records.iter()).expect("tbs");
        group.bench_function(label, |b| {
            b.iter(|| key.sign(black_box(&tbs)).expect("sign"))
        });
    }
    let input = input(&name, Algorithm::ECDSAP256SHA256, 1);
    group.bench_function("tbs/a-rrset", |b| {
        b.iter(|| {
            TBS::from_input(black_box(&name), DNSClass::IN, &input, records.iter()).expect("tbs")
        })
    });
    group.finish();
}

criterion_group!(benches, signatures);
criterion_main!(benches);
