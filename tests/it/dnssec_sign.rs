//! Online signing (issue 23) proved with real validators: a server with a
//! signed zone (`dnssec = true`: a CSK made at first start under
//! data_dir/keys/), its anchor from `switchyard dnssec dnskey --anchor
//! delv`, and `delv` validating app answers, the apex, static records,
//! NXDOMAIN and NODATA against it; plus what must not change without DO
//! and the TC/TCP fallback of the larger signed answers.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Options, Server};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const ZONE: &str = "switchyard.test";

/// The shipped config and apps with the shipped zone signed.
fn signed_server() -> Server {
    Server::start_with(Options {
        config_edits: vec![(
            "ns = [\"ns1.switchyard.test.\"]".into(),
            "ns = [\"ns1.switchyard.test.\"]\ndnssec = true".into(),
        )],
        ..Options::default()
    })
}

/// The delv trust anchor file of the server's zone, as the CLI prints it.
fn anchor(s: &Server) -> std::path::PathBuf {
    let dir = s.dir.path().join("data/keys").join(ZONE);
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["dnssec", "dnskey", ZONE, "--anchor", "delv", "--dir"])
        .arg(&dir)
        .output()
        .expect("run switchyard dnssec dnskey");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("static-key 257 3 13"), "{text}");
    let path = s.dir.path().join("anchor.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// delv against the server alone, with the zone as its root of trust.
fn delv(dns: SocketAddr, anchor: &Path, extra: &[&str], name: &str, qtype: &str) -> String {
    let out = Command::new("delv")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), "-a"])
        .arg(anchor)
        .arg(format!("+root={ZONE}"))
        .args(extra)
        .args([name, qtype])
        .output()
        .expect("run delv (bind9-dnsutils)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_validated(out: &str, what: &str) {
    assert!(
        out.contains("; fully validated") || out.contains("; negative response, fully validated"),
        "{what}: {out}"
    );
}

fn query(name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Message {
    let mut m = Message::new(0x5151, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some((payload, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e.set_dnssec_ok(dnssec_ok);
        m.edns = Some(e);
    }
    m
}

fn udp(dns: SocketAddr, m: &Message) -> (Vec<u8>, Message) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&m.to_vec().unwrap(), dns).unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).expect("UDP reply");
    (buf[..n].to_vec(), Message::from_vec(&buf[..n]).unwrap())
}

fn tcp(dns: SocketAddr, m: &Message) -> Message {
    let mut s = TcpStream::connect(dns).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let bytes = m.to_vec().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn types(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

#[test]
fn delv_fully_validates_every_kind_of_answer() {
    let s = signed_server();
    let anchor = anchor(&s);
    for (name, qtype, what) in [
        (ZONE, "SOA", "apex SOA"),
        (ZONE, "NS", "apex NS"),
        (ZONE, "DNSKEY", "apex DNSKEY"),
        (ZONE, "MX", "apex static MX"),
        ("static.switchyard.test", "A", "static A"),
        ("static.switchyard.test", "AAAA", "static AAAA"),
        ("info.switchyard.test", "TXT", "static TXT"),
        ("x.geo-map.switchyard.test", "A", "app answer (A)"),
        ("nope.switchyard.test", "A", "NXDOMAIN"),
        (
            "a.b.static.switchyard.test",
            "AAAA",
            "NXDOMAIN under a static name",
        ),
        ("static.switchyard.test", "TXT", "NODATA at a static name"),
        ("x.geo-map.switchyard.test", "TXT", "NODATA at an app name"),
        (ZONE, "TXT", "NODATA at the apex"),
    ] {
        // Twice: the second from the signature cache.
        for _ in 0..2 {
            assert_validated(&delv(s.dns, &anchor, &[], name, qtype), what);
        }
    }
    // The app's CNAME is signed; its out-of-zone target is not ours.
    let m = udp(
        s.dns,
        &query(
            "best-rtt.switchyard.test.",
            RecordType::A,
            Some((1232, true)),
        ),
    )
    .1;
    assert_eq!(
        types(&m.answers),
        [RecordType::CNAME, RecordType::RRSIG],
        "{m:?}"
    );
}

#[test]
fn without_do_nothing_changes() {
    let s = signed_server();
    for edns in [None, Some((1232, false))] {
        for (name, qtype) in [
            ("x.geo-map.switchyard.test.", RecordType::A),
            ("switchyard.test.", RecordType::SOA),
            ("nope.switchyard.test.", RecordType::A),
            ("static.switchyard.test.", RecordType::TXT),
        ] {
            let m = udp(s.dns, &query(name, qtype, edns)).1;
            let all = m.answers.iter().chain(&m.authorities);
            assert!(
                all.clone()
                    .all(|r| !matches!(r.record_type(), RecordType::RRSIG | RecordType::NSEC)),
                "{name} {qtype} {edns:?}: {m:?}"
            );
        }
    }
    // DNSKEY is served without DO too, unsigned.
    let m = udp(s.dns, &query("switchyard.test.", RecordType::DNSKEY, None)).1;
    assert_eq!(types(&m.answers), [RecordType::DNSKEY]);
}

#[test]
fn signed_denial_truncates_over_small_udp_and_validates_over_tcp() {
    let s = signed_server();
    let q = query("nope.switchyard.test.", RecordType::A, Some((512, true)));
    let (bytes, m) = udp(s.dns, &q);
    assert!(bytes.len() <= 512);
    assert!(m.metadata.truncation, "{m:?}");
    assert!(m.answers.is_empty() && m.authorities.is_empty());
    assert!(m.edns.is_some(), "the OPT record stays");
    let full = tcp(s.dns, &q);
    assert_eq!(full.metadata.response_code, ResponseCode::NXDomain);
    assert!(!full.metadata.truncation);
    let t = types(&full.authorities);
    assert_eq!(
        t.iter().filter(|t| **t == RecordType::NSEC).count(),
        2,
        "{t:?}"
    );
    assert_eq!(
        t.iter().filter(|t| **t == RecordType::RRSIG).count(),
        3,
        "{t:?}"
    );
    // With the default payload it fits in UDP.
    let (bytes, m) = udp(
        s.dns,
        &query("nope.switchyard.test.", RecordType::A, Some((1232, true))),
    );
    assert!(!m.metadata.truncation && bytes.len() <= 1232);
    let anchor = anchor(&s);
    assert_validated(
        &delv(s.dns, &anchor, &["+tcp"], "nope.switchyard.test", "A"),
        "NXDOMAIN over TCP",
    );
    assert_validated(
        &delv(s.dns, &anchor, &["+tcp"], "x.geo-map.switchyard.test", "A"),
        "app answer over TCP",
    );
}
