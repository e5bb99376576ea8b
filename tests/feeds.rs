//! Live data reaching apps over DNS: a Fusion feed from an HTTP server, a
//! Sonar TCP check against a port that goes down and comes back, and stats
//! posted to the leaderboard API turning into probes. Each must change an
//! example app's answer within the expected time.

mod common;
mod dnsclient;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

/// A one-path HTTP server whose body can be changed.
fn fusion_server(body: Arc<Mutex<String>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let b = body.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                b.len()
            );
        }
    });
    addr
}

/// Waits until `name` answers `want` (first answer); returns how long it took.
fn until(dns: SocketAddr, name: &str, want: &str, limit: Duration) -> Duration {
    let sock = dnsclient::socket(Duration::from_millis(500));
    let start = Instant::now();
    let mut id = 0u16;
    let mut last = None;
    while start.elapsed() < limit {
        id = id.wrapping_add(1);
        if let Some(r) = dnsclient::query(&sock, dns, name, RecordType::A, id) {
            if r.answers.first().map(String::as_str) == Some(want) {
                return start.elapsed();
            }
            last = Some(r);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} did not answer {want} within {limit:?}; last answer {last:?}");
}

#[test]
fn fusion_feed_and_sonar_check_steer_the_fusion_budget_app() {
    let body = Arc::new(Mutex::new(
        r#"{"usage": {"unit": "GB", "value": "100"}}"#.to_string(),
    ));
    let fusion = fusion_server(body.clone());
    let sonar = TcpListener::bind("127.0.0.1:0").unwrap();
    let sonar_addr = sonar.local_addr().unwrap();
    let extra = format!(
        "[[fusion]]\nprovider = \"cdn_a\"\nurl = \"http://{fusion}/usage\"\ninterval_secs = 1\ntimeout_ms = 500\n\n\
         [[sonar]]\nprovider = \"cdn_c\"\ntcp = \"{sonar_addr}\"\ninterval_secs = 1\ntimeout_ms = 300\nrise = 1\nfall = 1\n"
    );
    let server = common::Server::start_with(common::Options {
        extra_config: extra,
        ..Default::default()
    });
    let name = "fusion-budget.switchyard.test.";
    // Everything within budget and up: the lowest http_rtt, cdn_c (20 ms).
    until(
        server.dns,
        name,
        "cdn-c.example.net.",
        Duration::from_secs(5),
    );

    // The Sonar port goes down: cdn_c is skipped, cdn_a (38 ms) is next.
    drop(sonar);
    let t = until(
        server.dns,
        name,
        "cdn-a.example.net.",
        Duration::from_secs(5),
    );
    eprintln!("sonar down → new answer in {t:?}");

    // cdn_a's Fusion usage passes its 20000 GB budget: cdn_b (45 ms).
    *body.lock().unwrap() = r#"{"usage": {"unit": "GB", "value": "25000"}}"#.to_string();
    let t = until(
        server.dns,
        name,
        "cdn-b.example.net.",
        Duration::from_secs(5),
    );
    eprintln!("fusion over budget → new answer in {t:?}");

    // The port comes back: cdn_c again.
    let _back = TcpListener::bind(sonar_addr).unwrap();
    let t = until(
        server.dns,
        name,
        "cdn-c.example.net.",
        Duration::from_secs(5),
    );
    eprintln!("sonar up → new answer in {t:?}");

    // The feeds show in /api/feeds.
    let admin = server.admin.expect("admin");
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    write!(
        s,
        "GET /api/feeds HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.contains("fusion cdn_a") && out.contains("sonar cdn_c"),
        "{out}"
    );
}

#[test]
fn posted_stats_become_probes() {
    let secret = "feed-test-secret";
    let server = common::Server::start_with(common::Options {
        env: vec![("SECRET".into(), secret.into())],
        config_edits: vec![("refresh_secs = 10".into(), "refresh_secs = 1".into())],
        ..Default::default()
    });
    let name = "best-rtt.switchyard.test.";
    // A client in GB (198.51.100.0/25) via ECS: the static probes pick cdn_a.
    let ask = |id: u16| -> Option<String> {
        use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
        use hickory_proto::rr::Name;
        use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let mut e = Edns::new();
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            "198.51.100.0".parse().unwrap(),
            24,
            0,
        )));
        m.set_edns(e);
        let sock = dnsclient::socket(Duration::from_millis(500));
        sock.send_to(&m.to_vec().unwrap(), server.dns).ok()?;
        let mut buf = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let r = Message::from_vec(&buf[..n]).ok()?;
        r.answers.first().map(|a| a.data.to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while ask(1).as_deref() != Some("cdn-a.example.net.") {
        assert!(
            Instant::now() < deadline,
            "best-rtt did not start with cdn-a: {:?}",
            ask(2)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Post stats for cdn_b's orchestrator in LON (the region serving GB).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let admin = server.admin.expect("admin");
    let post = |orchestrator: &str, success_rate: f64, round_trip_time: f64| {
        let body = format!(
            r#"{{"region":"LON","orchestrator":"{orchestrator}","timestamp":{now},"segments_sent":10,"segments_received":10,"success_rate":{success_rate},"seg_duration":2.0,"round_trip_time":{round_trip_time}}}"#
        );
        let sig = switchyard::stats::sign(secret.as_bytes(), body.as_bytes());
        let mut s = std::net::TcpStream::connect(admin).unwrap();
        write!(
            s,
            "POST /api/post_stats HTTP/1.1\r\nHost: x\r\nAuthorization: {sig}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    };
    post("0x00000000000000000000000000000000000000B2", 1.0, 0.5);

    // Within a refresh, LON's probes list only cdn_b as available.
    let start = Instant::now();
    while ask(3).as_deref() != Some("cdn-b.example.net.") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "posted stats did not reach the app: {:?}",
            ask(4)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("post → new answer in {:?}", start.elapsed());

    // cdn_c: lower availability (95 %, still above best-rtt's 90 %
    // threshold) but a faster round trip. Only `http_rtt` (the window's
    // mean round_trip_time) can make best-rtt prefer it to cdn_b.
    post("0x00000000000000000000000000000000000000c3", 0.95, 0.1);
    let start = Instant::now();
    while ask(5).as_deref() != Some("cdn-c.example.net.") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "http_rtt from posted round_trip_time did not steer: {:?}",
            ask(6)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
