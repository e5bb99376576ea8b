//! Live data reaching apps over DNS: a Fusion feed from an HTTP server, a
//! Sonar TCP check against a port that goes down and comes back, and stats
//! posted to the leaderboard API turning into probes. Each must change an
//! example app's answer within the expected time.

use crate::common;
use crate::common::dnsclient;

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

/// The first answer for `name` to a client in GB (198.51.100.0/24 via ECS),
/// which the default regions map to LON.
fn ask_gb(dns: SocketAddr, name: &str, id: u16) -> Option<String> {
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
    sock.send_to(&m.to_vec().unwrap(), dns).ok()?;
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    let r = Message::from_vec(&buf[..n]).ok()?;
    r.answers.first().map(|a| a.data.to_string())
}

/// Polls [`ask_gb`] until it answers `want`; returns how long it took.
fn until_gb(dns: SocketAddr, name: &str, want: &str, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    let mut id = 0u16;
    loop {
        id = id.wrapping_add(1);
        let got = ask_gb(dns, name, id);
        if got.as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: {name} did not answer {want} within {limit:?}; last {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Posts one signed LON record to the stats API at `admin`.
fn post_lon(admin: SocketAddr, secret: &str, orchestrator: &str, success_rate: f64, rtt: f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = format!(
        r#"{{"region":"LON","orchestrator":"{orchestrator}","timestamp":{now},"segments_sent":10,"segments_received":10,"success_rate":{success_rate},"seg_duration":2.0,"round_trip_time":{rtt}}}"#
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
}

/// The best-rtt story on `probes_dns` (the node whose apps answer) while
/// stats are posted to `stats_admin` (the node that stores them; the same
/// node, or the remote leaderboard the first reads).
fn best_rtt_follows_posts(probes_dns: SocketAddr, stats_admin: SocketAddr, secret: &str) {
    let name = "best-rtt.switchyard.test.";
    let limit = Duration::from_secs(20);
    // Before any post, the static probes pick cdn_a for GB.
    until_gb(
        probes_dns,
        name,
        "cdn-a.example.net.",
        limit,
        "static probes",
    );

    // Stats for cdn_b's orchestrator in LON (the region serving GB): within
    // a refresh, LON's probes list only cdn_b as available.
    post_lon(
        stats_admin,
        secret,
        "0x00000000000000000000000000000000000000B2",
        1.0,
        0.5,
    );
    let t = until_gb(probes_dns, name, "cdn-b.example.net.", limit, "avail");
    eprintln!("post → new answer in {t:?}");

    // cdn_c: lower availability (95 %, still above best-rtt's 90 %
    // threshold) but a faster round trip. Only `http_rtt` (the window's
    // mean round_trip_time) can make best-rtt prefer it to cdn_b.
    post_lon(
        stats_admin,
        secret,
        "0x00000000000000000000000000000000000000c3",
        0.95,
        0.1,
    );
    until_gb(probes_dns, name, "cdn-c.example.net.", limit, "http_rtt");
}

#[test]
fn posted_stats_become_probes() {
    let secret = "feed-test-secret";
    let server = common::Server::start_with(common::Options {
        env: vec![("SECRET".into(), secret.into())],
        config_edits: vec![("refresh_secs = 10".into(), "refresh_secs = 1".into())],
        ..Default::default()
    });
    best_rtt_follows_posts(server.dns, server.admin.expect("admin"), secret);
}

/// A node whose probes come from another Switchyard's leaderboard: the
/// remote path, including `http_rtt`, which the public row lacks and the
/// refresher asks for with `include=round_trip_time`.
#[test]
fn remote_leaderboard_becomes_probes_with_http_rtt() {
    let secret = "remote-feed-secret";
    let leaderboard = common::Server::start_with(common::Options {
        env: vec![("SECRET".into(), secret.into())],
        config_edits: vec![("source = \"local\"".into(), "source = \"off\"".into())],
        ..Default::default()
    });
    let lb_admin = leaderboard.admin.expect("leaderboard ops listener");
    let edge = common::Server::start_with(common::Options {
        config_edits: vec![
            ("refresh_secs = 10".into(), "refresh_secs = 1".into()),
            (
                "source = \"local\"".into(),
                format!("source = \"http://{lb_admin}/\""),
            ),
        ],
        ..Default::default()
    });
    best_rtt_follows_posts(edge.dns, lb_admin, secret);

    // What the edge read: the mean round-trip time only on request.
    let get = |addr: SocketAddr, path: &str| -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
    };
    let b2 = "0x00000000000000000000000000000000000000b2";
    let public = get(lb_admin, "/api/aggregated_stats");
    assert!(
        public[b2]["LON"].get("round_trip_time").is_none(),
        "{public}"
    );
    let full = get(lb_admin, "/api/aggregated_stats?include=round_trip_time");
    assert_eq!(full[b2]["LON"]["round_trip_time"], 0.5, "{full}");
    // The edge stored nothing itself: the values came over HTTP.
    let edge_admin = edge.admin.expect("edge ops listener");
    assert_eq!(
        get(edge_admin, "/api/aggregated_stats"),
        serde_json::json!({})
    );
}

/// A test HTTP server answering every path with `status` and `body`;
/// status 0 means "down": the connection is closed unanswered. Counts what
/// it served, so tests can tell how many checks saw which status.
struct Flaky {
    addr: SocketAddr,
    status: Arc<std::sync::atomic::AtomicU16>,
    body: Arc<Mutex<String>>,
    /// Answers per status served so far.
    served: Arc<Mutex<std::collections::BTreeMap<u16, usize>>>,
}

impl Flaky {
    fn start(status: u16, body: &str) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let f = Flaky {
            addr: listener.local_addr().unwrap(),
            status: Arc::new(status.into()),
            body: Arc::new(Mutex::new(body.to_string())),
            served: Arc::default(),
        };
        let (st, b, served) = (f.status.clone(), f.body.clone(), f.served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let status = st.load(std::sync::atomic::Ordering::SeqCst);
                if status == 0 {
                    continue; // dropped: the client sees the connection close
                }
                let b = b.lock().unwrap().clone();
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                    b.len()
                );
                *served.lock().unwrap().entry(status).or_default() += 1;
            }
        });
        f
    }

    fn set(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    fn served(&self, status: u16) -> usize {
        self.served
            .lock()
            .unwrap()
            .get(&status)
            .copied()
            .unwrap_or(0)
    }
}

/// Polls `/deepcheck` until `done(status, body)`; returns the last body.
fn until_deepcheck(
    admin: SocketAddr,
    limit: Duration,
    what: &str,
    done: impl Fn(u16, &str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let common::http::Reply { status, body, .. } = common::http::get(admin, "/deepcheck");
        if done(status, &body) {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: /deepcheck not as expected within {limit:?}: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn http_sonar_check_with_rise_and_fall_steers_the_fusion_budget_app() {
    let health = Flaky::start(200, "ok");
    let extra = format!(
        "[[sonar]]\nprovider = \"cdn_c\"\nurl = \"http://{}/health\"\nexpect_status = 200\ninterval_secs = 1\ntimeout_ms = 1000\nrise = 2\nfall = 2\n",
        health.addr
    );
    let server = common::Server::start_with(common::Options {
        extra_config: extra,
        ..Default::default()
    });
    let name = "fusion-budget.switchyard.test.";
    let limit = Duration::from_secs(20);
    // Up: the lowest http_rtt, cdn_c.
    until(server.dns, name, "cdn-c.example.net.", limit);

    // One failed check is not enough with fall = 2: after a single 500 and
    // two more successes, every answer in between was still cdn_c.
    let before = health.served(200);
    health.set(500);
    let start = Instant::now();
    while health.served(500) == 0 {
        assert!(start.elapsed() < limit, "the check never saw the 500");
        std::thread::sleep(Duration::from_millis(5));
    }
    health.set(200);
    let sock = dnsclient::socket(Duration::from_millis(500));
    let mut id = 100u16;
    while health.served(200) < before + 2 {
        assert!(start.elapsed() < limit, "the check stopped running");
        id = id.wrapping_add(1);
        // A flap would answer cdn_a; a decision past its budget on a loaded
        // machine answers the fallback (origin), which is not a flap.
        if let Some(r) = dnsclient::query(&sock, server.dns, name, RecordType::A, id) {
            assert_ne!(
                r.answers.first().map(String::as_str),
                Some("cdn-a.example.net."),
                "a single failure flapped cdn_c down"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Down for good: after two failures, cdn_a (38 ms) is next.
    let failures = health.served(500);
    health.set(500);
    let t = until(server.dns, name, "cdn-a.example.net.", limit);
    assert!(
        health.served(500) >= failures + 2,
        "cdn_c went down after fewer than `fall` failures"
    );
    eprintln!("http sonar down → new answer in {t:?}");

    // Back: after two successes, cdn_c again.
    let successes = health.served(200);
    health.set(200);
    let t = until(server.dns, name, "cdn-c.example.net.", limit);
    assert!(
        health.served(200) >= successes + 2,
        "cdn_c came back after fewer than `rise` successes"
    );
    eprintln!("http sonar up → new answer in {t:?}");
}

#[test]
fn fusion_file_feed_steers_the_fusion_budget_app() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("usage-cdn_c.json");
    // Written whole and renamed into place, so the feed never reads half a file.
    let write = |text: &str| {
        let tmp = dir.path().join("usage.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(r#"{"usage": {"unit": "GB", "value": "100"}}"#);
    let extra = format!(
        "[[fusion]]\nprovider = \"cdn_c\"\nfile = \"{}\"\ninterval_secs = 1\ntimeout_ms = 1000\n",
        file.display()
    );
    let server = common::Server::start_with(common::Options {
        extra_config: extra,
        ..Default::default()
    });
    let name = "fusion-budget.switchyard.test.";
    let limit = Duration::from_secs(20);
    until(server.dns, name, "cdn-c.example.net.", limit);
    // cdn_c passes its 10000 GB budget: cdn_a (38 ms) is next.
    write(r#"{"usage": {"unit": "TB", "value": "15"}}"#);
    let t = until(server.dns, name, "cdn-a.example.net.", limit);
    eprintln!("fusion file over budget → new answer in {t:?}");
    // Back under budget.
    write(r#"{"usage": {"unit": "GB", "value": "9000"}}"#);
    until(server.dns, name, "cdn-c.example.net.", limit);
    let feeds = common::http::get(server.admin.expect("admin"), "/api/feeds").body;
    assert!(feeds.contains("fusion cdn_c"), "{feeds}");
}

#[test]
fn failing_feed_keeps_its_value_then_goes_stale_in_deepcheck() {
    let usage = Flaky::start(200, r#"{"usage": {"unit": "GB", "value": "15000"}}"#);
    let extra = format!(
        "[[fusion]]\nprovider = \"cdn_c\"\nurl = \"http://{}/usage\"\ninterval_secs = 1\ntimeout_ms = 1000\n",
        usage.addr
    );
    let server = common::Server::start_with(common::Options {
        extra_config: extra,
        config_edits: vec![
            ("stale_secs = 120".into(), "stale_secs = 3".into()),
            // Only the feed under test: no refresher to go stale beside it.
            ("source = \"local\"".into(), "source = \"off\"".into()),
        ],
        ..Default::default()
    });
    let admin = server.admin.expect("admin");
    let name = "fusion-budget.switchyard.test.";
    let limit = Duration::from_secs(20);
    // cdn_c is over budget per its feed: cdn_a.
    until(server.dns, name, "cdn-a.example.net.", limit);
    until_deepcheck(admin, limit, "feed up", |s, b| {
        s == 200 && b.contains("fusion cdn_c: last good value")
    });

    // The URL goes down (connections closed unanswered).
    usage.set(0);
    let body = until_deepcheck(admin, limit, "feed down", |s, b| {
        s == 500 && b.contains("fusion cdn_c") && b.contains("(stale)")
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failed: Vec<&str> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(
        failed.len() == 1 && failed[0].contains("last error"),
        "only the feed fails, with its error: {body}"
    );
    // Stale, yet the last good value still steers: cdn_c stays over budget.
    // Losing the value would make cdn_c (the fastest) the answer; a decision
    // past its 5 ms budget on a loaded machine gets the app's fallback
    // (origin), which says nothing about the feed, so only cdn_c fails.
    let mut steered = 0;
    for id in 0..20u16 {
        let sock = dnsclient::socket(Duration::from_millis(500));
        if let Some(r) = dnsclient::query(&sock, server.dns, name, RecordType::A, 500 + id) {
            let first = r.answers.first().map(String::as_str);
            assert_ne!(
                first,
                Some("cdn-c.example.net."),
                "a failed feed lost its last value"
            );
            steered += usize::from(first == Some("cdn-a.example.net."));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        steered > 0,
        "no query was answered by the app while the feed was down"
    );

    // Back up: fresh again.
    usage.set(200);
    until_deepcheck(admin, limit, "feed back", |s, b| {
        s == 200 && b.contains("fusion cdn_c: last good value")
    });
}
