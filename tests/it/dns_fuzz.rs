//! Fuzzing the DNS front end over real sockets: random bytes and mutated
//! valid queries (bit flips, byte sets, truncation, extension, splices,
//! header count changes) go to one running server over UDP (and, fewer, over
//! TCP). After every packet a probe query must still be answered; whatever
//! the server sends back must be a decodable DNS response for one of the two
//! IDs; and at the end the server must still be the same live process,
//! answer correctly, and never have logged a panic.
//!
//! Bounded (a few hundred cases, no persistence files) so it runs in
//! seconds with `cargo test --release --test it dns_fuzz::`.

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::Server;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const WAIT: Duration = Duration::from_secs(5);

fn query(qname: &str, qtype: RecordType, edns: Option<(u16, Option<ClientSubnet>)>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(qname).unwrap(), qtype));
    if let Some((payload, cs)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        if let Some(cs) = cs {
            e.options_mut().insert(EdnsOption::Subnet(cs));
        }
        m.set_edns(e);
    }
    m
}

fn cs(addr: &str, prefix: u8) -> Option<ClientSubnet> {
    Some(ClientSubnet::new(addr.parse().unwrap(), prefix, 0))
}

/// Valid packets to mutate: every path of the handler (apps, statics,
/// apex, NXDOMAIN, REFUSED, ECS v4/v6/mapped, other opcodes, TCP-only sizes).
fn seeds() -> Vec<Vec<u8>> {
    let mut v = vec![
        query("geo-map.switchyard.test.", RecordType::A, None),
        query(
            "geo-map.switchyard.test.",
            RecordType::AAAA,
            Some((1232, cs("198.51.100.0", 24))),
        ),
        query(
            "www.geo-map.switchyard.test.",
            RecordType::A,
            Some((4096, cs("2001:db8:2::", 56))),
        ),
        query(
            "a.b.best-rtt.switchyard.test.",
            RecordType::CNAME,
            Some((512, cs("::ffff:203.0.113.0", 120))),
        ),
        query(
            "fusion-budget.switchyard.test.",
            RecordType::A,
            Some((1232, cs("0.0.0.0", 0))),
        ),
        query("http-hosts.switchyard.test.", RecordType::MX, None),
        query(
            "static.switchyard.test.",
            RecordType::ANY,
            Some((1232, None)),
        ),
        query("info.switchyard.test.", RecordType::TXT, None),
        query(
            "switchyard.test.",
            RecordType::SOA,
            Some((1232, cs("203.0.113.64", 26))),
        ),
        query("nope.switchyard.test.", RecordType::A, None),
        query("example.com.", RecordType::A, Some((1232, None))),
    ];
    let mut notify = query("switchyard.test.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    v.push(notify);
    let mut bad_version = query(
        "geo-map.switchyard.test.",
        RecordType::A,
        Some((1232, None)),
    );
    bad_version.edns.as_mut().unwrap().set_version(1);
    v.push(bad_version);
    // DNS Cookies: a client cookie alone, with a (made-up) server cookie,
    // and of a bad length; mutations take them to every other length.
    for cookie in [vec![0x24; 8], vec![0x42; 24], vec![1; 9], vec![7; 40]] {
        let mut m = query("static.switchyard.test.", RecordType::A, Some((1232, None)));
        m.edns
            .as_mut()
            .unwrap()
            .options_mut()
            .insert(EdnsOption::Unknown(10, cookie));
        v.push(m);
    }
    let mut out: Vec<Vec<u8>> = v.iter().map(|m| m.to_vec().unwrap()).collect();
    // A query with a compressed name in a second question.
    let mut two = out[0].clone();
    two[5] = 2;
    two.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12, 0, 1, 0, 1]);
    out.push(two);
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Overwrite one of the four 16-bit header counts.
    Count(usize, u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (0usize..4, prop_oneof![Just(0u16), Just(1), Just(2), Just(0xffff), any::<u16>()])
            .prop_map(|(i, n)| Mutation::Count(i, n)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        match m {
            Mutation::Flip(i, bit) if !b.is_empty() => {
                let i = i % b.len();
                b[i] ^= 1 << bit;
            }
            Mutation::Set(i, v) if !b.is_empty() => {
                let i = i % b.len();
                b[i] = *v;
            }
            Mutation::Truncate(n) => b.truncate(n % (b.len() + 1)),
            Mutation::Extend(x) => b.extend_from_slice(x),
            Mutation::Insert(i, x) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, x.iter().copied());
            }
            Mutation::Remove(i, n) if !b.is_empty() => {
                let i = i % b.len();
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Count(i, n) if b.len() >= 12 => {
                let at = 4 + 2 * i;
                b[at..at + 2].copy_from_slice(&n.to_be_bytes());
            }
            _ => {}
        }
    }
    b
}

/// Random bytes, or a seed with up to 3 mutations.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    let n = seeds.len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..600),
        // A valid-looking header with random body.
        1 => (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(id, body)| {
            let mut b = id.to_be_bytes().to_vec();
            b.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
            b.extend(body);
            b
        }),
        4 => (0..n, proptest::collection::vec(mutation(), 1..4))
            .prop_map(move |(i, muts)| apply(seeds[i].clone(), &muts)),
    ]
}

fn probe(id: u16) -> Message {
    let mut m = query("static.switchyard.test.", RecordType::A, None);
    m.metadata.id = id;
    m
}

fn check_probe(bytes: &[u8], id: u16) -> Result<(), String> {
    let m = Message::from_vec(bytes).map_err(|e| format!("probe answer undecodable: {e}"))?;
    if m.metadata.id != id
        || m.metadata.response_code != ResponseCode::NoError
        || m.answers.len() != 1
    {
        return Err(format!("bad probe answer: {m}"));
    }
    Ok(())
}

/// How many fuzz packets got each rcode.
type RcodeCounts = std::cell::RefCell<std::collections::BTreeMap<String, usize>>;

/// Sends `fuzz`, then a probe; reads until the probe's answer arrives.
/// Every datagram received must decode as a response with the fuzz
/// packet's ID or the probe's.
fn udp_round(
    sock: &UdpSocket,
    fuzz: &[u8],
    probe_id: u16,
    seen: &RcodeCounts,
) -> Result<(), TestCaseError> {
    sock.send(fuzz)
        .map_err(|e| TestCaseError::fail(format!("send: {e}")))?;
    sock.send(&probe(probe_id).to_vec().unwrap()).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 65_535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TestCaseError::fail(format!(
                "no answer to the probe after {} bytes: {fuzz:02x?}",
                fuzz.len()
            )));
        }
        sock.set_read_timeout(Some(left)).unwrap();
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let got = &buf[..n];
        let id = (n >= 2).then(|| u16::from_be_bytes([got[0], got[1]]));
        if id == Some(probe_id) {
            check_probe(got, probe_id).map_err(TestCaseError::fail)?;
            return Ok(());
        }
        // A late answer to an earlier round's packet is possible; anything
        // else must be the answer to this fuzz packet.
        let m = Message::from_vec(got).map_err(|e| {
            TestCaseError::fail(format!(
                "server sent undecodable bytes ({e}) for {fuzz:02x?}: {got:02x?}"
            ))
        })?;
        prop_assert_eq!(m.metadata.message_type, MessageType::Response);
        *seen
            .borrow_mut()
            .entry(m.metadata.response_code.to_string())
            .or_default() += 1;
    }
}

#[test]
fn udp_fuzz_never_breaks_the_server() {
    let server = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.dns).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let next_id = std::cell::Cell::new(0x5000u16);
    let seen = RcodeCounts::default();
    runner
        .run(&packet(), |fuzz| {
            let mut probe_id = next_id.get().wrapping_add(1);
            // Keep the probe ID apart from the fuzz packet's.
            if fuzz.len() >= 2 && u16::from_be_bytes([fuzz[0], fuzz[1]]) == probe_id {
                probe_id = probe_id.wrapping_add(1);
            }
            next_id.set(probe_id);
            udp_round(&sock, &fuzz, probe_id, &seen)
        })
        .unwrap_or_else(|e| panic!("{e}\nserver log: {:?}", server.log.lock().unwrap()));
    // The mix reached both the parser's error path and the answer paths.
    let seen = seen.into_inner();
    eprintln!("answers to fuzz packets by rcode: {seen:?}");
    for rcode in ["Form Error", "No Error"] {
        assert!(
            seen.get(rcode).copied().unwrap_or(0) > 0,
            "no {rcode} answer to any fuzz packet: {seen:?}"
        );
    }
    after_fuzz(&server);
}

/// One TCP connection per case: a frame with a (possibly wrong) length
/// prefix, then the write side closed. Whatever comes back must be whole,
/// decodable DNS responses, and the connection must end.
#[test]
fn tcp_fuzz_never_breaks_the_server() {
    let server = start();
    let mut runner = TestRunner::new(Config {
        cases: 80,
        failure_persistence: None,
        max_shrink_iters: 100,
        ..Config::default()
    });
    let frame = (
        packet(),
        prop_oneof![3 => Just(None), 1 => any::<u16>().prop_map(Some)],
    );
    runner
        .run(&frame, |(body, len)| {
            let mut s = TcpStream::connect_timeout(&server.dns, WAIT).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let len = len.unwrap_or(body.len() as u16);
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&body);
            let _ = s.write_all(&framed);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut got = Vec::new();
            if let Err(e) = s.read_to_end(&mut got) {
                // A reset is acceptable; a hang is not.
                prop_assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "connection not closed within 10 s"
                );
            }
            let mut rest = &got[..];
            while rest.len() >= 2 {
                let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                prop_assert!(rest.len() >= 2 + n, "partial TCP frame: {:02x?}", got);
                let m = Message::from_vec(&rest[2..2 + n]).map_err(|e| {
                    TestCaseError::fail(format!("undecodable TCP answer ({e}): {got:02x?}"))
                })?;
                prop_assert_eq!(m.metadata.message_type, MessageType::Response);
                rest = &rest[2 + n..];
            }
            prop_assert!(rest.is_empty(), "trailing byte in TCP stream: {:02x?}", got);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}\nserver log: {:?}", server.log.lock().unwrap()));
    after_fuzz(&server);
}

/// Queries geo-map until it answers steadily: one query at a time until 4
/// in a row get the app's answer, then batches of 8 concurrent queries
/// until two batches in a row do. Every JS worker has then built its
/// context (see `warm` in tests/it/dns.rs for why the first decision per
/// worker can be late), so the final check tests the steady state.
fn warm(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ask = || {
        let q = query(
            "geo-map.switchyard.test.",
            RecordType::A,
            Some((1232, cs("203.0.113.0", 24))),
        );
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server.dns).unwrap();
        sock.send(&q.to_vec().unwrap()).unwrap();
        (sock, q.metadata.id)
    };
    let good = |(sock, id): &(UdpSocket, u16)| {
        let r = recv(sock, *id, server);
        r.answers.len() == 1 && r.answers[0].data.to_string() == "203.0.113.30"
    };
    let mut in_a_row = 0;
    while in_a_row < 4 {
        assert!(
            Instant::now() < deadline,
            "geo-map never answered steadily; log: {:?}",
            server.log.lock().unwrap()
        );
        in_a_row = if good(&ask()) { in_a_row + 1 } else { 0 };
    }
    in_a_row = 0;
    while in_a_row < 2 {
        assert!(
            Instant::now() < deadline,
            "geo-map never answered steadily; log: {:?}",
            server.log.lock().unwrap()
        );
        let batch: Vec<(UdpSocket, u16)> = (0..8).map(|_| ask()).collect();
        // Read every answer (no short-circuit), then judge the batch.
        let all = batch.iter().map(good).filter(|ok| !ok).count() == 0;
        in_a_row = if all { in_a_row + 1 } else { 0 };
    }
}

/// Serializes the two tests' server start-ups and warm-ups (start-up is
/// the heaviest moment; see tests/it/dns.rs `STARTING`).
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start() -> Server {
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start_with(common::Options {
        apps: Some(common::apps::shipped_with_budget()),
        ..Default::default()
    });
    warm(&server);
    server
}

/// The server (supervisor) is alive, the serving process was never
/// restarted, it answers a steered query correctly, and never panicked.
fn after_fuzz(server: &Server) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
        .expect("server process exists");
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?");
    assert!(state != "Z" && state != "X", "server process state {state}");

    let q = query(
        "geo-map.switchyard.test.",
        RecordType::A,
        Some((1232, cs("203.0.113.0", 24))),
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.dns).unwrap();
    sock.send(&q.to_vec().unwrap()).unwrap();
    let r = recv(&sock, q.metadata.id, server);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r}");
    assert!(r.metadata.authoritative);
    let answers: Vec<String> = r
        .answers
        .iter()
        .map(|a| format!("{} {}", a.ttl, a.data))
        .collect();
    assert_eq!(answers, vec!["20 203.0.113.30"], "{r}");
    match r.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
        Some(EdnsOption::Subnet(c)) => assert_eq!((c.source_prefix(), c.scope_prefix()), (24, 24)),
        other => panic!("ECS echo: {other:?}"),
    }
    for needle in ["panicked", "serving process died"] {
        assert!(
            !server.logged(needle),
            "server log has '{needle}': {:?}",
            server.log.lock().unwrap()
        );
    }
}

fn recv(sock: &UdpSocket, id: u16, server: &Server) -> Message {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 65_535];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf)
            && n >= 2
            && u16::from_be_bytes([buf[0], buf[1]]) == id
        {
            return Message::from_vec(&buf[..n]).expect("decodable answer");
        }
    }
    panic!(
        "no answer from {}; server log: {:?}",
        server.dns,
        server.log.lock().unwrap()
    );
}
