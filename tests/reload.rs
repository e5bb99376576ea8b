//! Hot reload under a continuous stream of UDP queries: modify in place,
//! atomic rename, add, remove, a syntax error, a sidecar change, and a
//! SIGHUP config reload. Every query must be answered (no timeout, no
//! SERVFAIL), each answer must come whole from one version, and a new
//! version must answer within a second of the write.

mod common;
mod dnsclient;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// An app whose two A records both carry its version number.
fn app(version: u8) -> String {
    format!(
        "function onRequest(request, response) {{ 'use strict';
  response.addARecord('192.0.2.{version}'); response.addARecord('198.51.100.{version}'); response.setTTL(30); }}"
    )
}

/// What the stream saw: when, and the reply (None: timed out).
type Seen = Arc<Mutex<Vec<(Instant, Option<dnsclient::Reply>)>>>;

/// Queries `name` in a loop until stopped; records every outcome.
struct Stream {
    stop: Arc<AtomicBool>,
    seen: Seen,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(server: std::net::SocketAddr, name: &'static str) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let sock = dnsclient::socket(Duration::from_secs(2));
            let mut id = 0u16;
            while !s.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let r = dnsclient::query(&sock, server, name, RecordType::A, id);
                v.lock().unwrap().push((Instant::now(), r));
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Stream {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(Instant, Option<dnsclient::Reply>)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Waits until `name` answers with `want` (first answer value); returns how long it took.
fn until_answer(
    server: std::net::SocketAddr,
    name: &str,
    want: Option<&str>,
    rcode: ResponseCode,
    limit: Duration,
) -> Duration {
    let sock = dnsclient::socket(Duration::from_millis(500));
    let start = Instant::now();
    let mut id = 1000u16;
    loop {
        id = id.wrapping_add(1);
        if let Some(r) = dnsclient::query(&sock, server, name, RecordType::A, id)
            && r.rcode == rcode
            && r.answers.first().map(String::as_str) == want
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{name} did not answer {want:?}/{rcode} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn edits_take_effect_within_a_second_and_nothing_drops() {
    let server = common::Server::start_with(common::Options {
        apps: Some(vec![("v.js".into(), app(1))]),
        ..Default::default()
    });
    let dns = server.dns;
    until_answer(
        dns,
        "v.switchyard.test.",
        Some("192.0.2.1"),
        ResponseCode::NoError,
        Duration::from_secs(5),
    );
    let stream = Stream::start(dns, "v.switchyard.test.");
    let path = server.apps.join("v.js");

    // 1. write in place
    std::fs::write(&path, app(2)).unwrap();
    let t = until_answer(
        dns,
        "v.switchyard.test.",
        Some("192.0.2.2"),
        ResponseCode::NoError,
        Duration::from_secs(1),
    );
    eprintln!("write in place → new answer in {t:?}");

    // 2. atomic rename (editors, deploy tools)
    let tmp = server.apps.join(".v.js.tmp");
    std::fs::write(&tmp, app(3)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let t = until_answer(
        dns,
        "v.switchyard.test.",
        Some("192.0.2.3"),
        ResponseCode::NoError,
        Duration::from_secs(1),
    );
    eprintln!("atomic rename → new answer in {t:?}");

    // 3. a syntax error keeps the previous version serving and shows the error
    std::fs::write(
        &path,
        "function onRequest(request, response) {\n  response.addARecord('192.0.2.9'\n}\n",
    )
    .unwrap();
    assert!(
        server.wait_log("app failed to load", Duration::from_secs(2)),
        "the bad version was not reported"
    );
    until_answer(
        dns,
        "v.switchyard.test.",
        Some("192.0.2.3"),
        ResponseCode::NoError,
        Duration::from_millis(200),
    );
    if let Some(admin) = server.admin {
        let body = http_get(admin, "/api/applications/v");
        assert!(
            body.contains("previous version serving") && body.contains("v.js:3"),
            "{body}"
        );
    }

    // 4. add and remove an app
    std::fs::write(server.apps.join("w.js"), app(7)).unwrap();
    until_answer(
        dns,
        "w.switchyard.test.",
        Some("192.0.2.7"),
        ResponseCode::NoError,
        Duration::from_secs(1),
    );
    std::fs::remove_file(server.apps.join("w.js")).unwrap();
    until_answer(
        dns,
        "w.switchyard.test.",
        None,
        ResponseCode::NXDomain,
        Duration::from_secs(1),
    );

    // 5. fix the file again
    std::fs::write(&path, app(4)).unwrap();
    until_answer(
        dns,
        "v.switchyard.test.",
        Some("192.0.2.4"),
        ResponseCode::NoError,
        Duration::from_secs(1),
    );

    let seen = stream.finish();
    assert!(seen.len() > 50, "too few queries: {}", seen.len());
    for (_, r) in &seen {
        let r = r.as_ref().expect("a query went unanswered during reloads");
        assert_eq!(r.rcode, ResponseCode::NoError, "{r:?}");
        assert_eq!(r.answers.len(), 2, "{r:?}");
        let v1 = r.answers[0].rsplit('.').next().unwrap();
        let v2 = r.answers[1].rsplit('.').next().unwrap();
        assert_eq!(v1, v2, "an answer mixed two versions: {r:?}");
        assert!(["1", "2", "3", "4"].contains(&v1), "{r:?}");
    }
    let versions: BTreeSet<String> = seen
        .iter()
        .map(|(_, r)| r.as_ref().unwrap().answers[0].clone())
        .collect();
    assert!(versions.len() >= 3, "the stream saw only {versions:?}");
}

#[test]
fn sidecar_and_sighup_reload() {
    let server = common::Server::start_with(common::Options {
        apps: Some(vec![(
            "t.js".into(),
            "function onRequest(q, r) { r.addARecord('192.0.2.1'); }".into(),
        )]),
        ..Default::default()
    });
    let dns = server.dns;
    let sock = dnsclient::socket(Duration::from_secs(2));
    let ttl = |id| {
        dnsclient::query(&sock, dns, "t.switchyard.test.", RecordType::A, id)
            .unwrap()
            .ttl
    };
    assert_eq!(ttl(1), Some(20), "zone TTL");

    // A sidecar sets the app's default TTL.
    std::fs::write(server.apps.join("t.toml"), "ttl = 45\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while ttl(2) != Some(45) {
        assert!(
            Instant::now() < deadline,
            "sidecar TTL not applied within 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(server.apps.join("t.toml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while ttl(3) != Some(20) {
        assert!(
            Instant::now() < deadline,
            "sidecar removal not applied within 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // SIGHUP: a changed zone TTL takes effect; a broken config keeps the old one.
    let config = server.dir.path().join("switchyard.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen("ttl = 20 ", "ttl = 33 ", 1)).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(2);
    while ttl(4) != Some(33) {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the new zone TTL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(&config, "this is = not [valid toml").unwrap();
    server.signal("HUP");
    assert!(server.wait_log("config reload failed", Duration::from_secs(2)));
    assert_eq!(ttl(5), Some(33), "a bad config must keep the old one");
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
