//! Hot reload under a continuous stream of UDP queries: modify in place,
//! atomic rename, add, remove, rename to another name, a burst of partial
//! writes, a syntax error, a sidecar change, and SIGHUP config reloads (good,
//! failing validation, changing GeoIP paths and restart-only keys). Every
//! query must be answered (no timeout, no SERVFAIL), each answer must come
//! whole from one version, a new version must answer within a second of the
//! write, and nothing reloads while nothing changes.

use crate::common;
use crate::common::dnsclient;

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

/// A server with one app, `v` at version 1, once it answers.
fn serve_v1() -> common::Server {
    let server = common::Server::start_with(common::Options {
        apps: Some(vec![("v.js".into(), app(1))]),
        ..Default::default()
    });
    until_answer(
        server.dns,
        "v.switchyard.test.",
        Some("192.0.2.1"),
        ResponseCode::NoError,
        Duration::from_secs(5),
    );
    server
}

#[test]
fn edits_take_effect_within_a_second_and_nothing_drops() {
    let server = serve_v1();
    let dns = server.dns;
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
        let body = common::http::get(admin, "/api/applications/v").body;
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

/// Checks what a [`Stream`] saw: every query answered, whole, by one of `versions`.
fn assert_whole_answers(seen: &[(Instant, Option<dnsclient::Reply>)], versions: &[&str]) {
    assert!(seen.len() > 20, "too few queries: {}", seen.len());
    for (_, r) in seen {
        let r = r.as_ref().expect("a query went unanswered during reloads");
        assert_eq!(r.rcode, ResponseCode::NoError, "{r:?}");
        assert_eq!(r.answers.len(), 2, "{r:?}");
        let v1 = r.answers[0].rsplit('.').next().unwrap();
        let v2 = r.answers[1].rsplit('.').next().unwrap();
        assert_eq!(v1, v2, "an answer mixed two versions: {r:?}");
        assert!(versions.contains(&v1), "{r:?}");
    }
}

#[test]
fn renaming_an_app_file_moves_its_name() {
    let server = common::Server::start_with(common::Options {
        apps: Some(vec![("foo.js".into(), app(1))]),
        ..Default::default()
    });
    let dns = server.dns;
    until_answer(
        dns,
        "foo.switchyard.test.",
        Some("192.0.2.1"),
        ResponseCode::NoError,
        Duration::from_secs(5),
    );
    std::fs::rename(server.apps.join("foo.js"), server.apps.join("bar.js")).unwrap();
    let t = until_answer(
        dns,
        "bar.switchyard.test.",
        Some("192.0.2.1"),
        ResponseCode::NoError,
        Duration::from_secs(1),
    );
    eprintln!("rename foo.js → bar.js: new name answers in {t:?}");
    // Both names change in one swap: the old one is gone as soon as the new one answers.
    until_answer(
        dns,
        "foo.switchyard.test.",
        None,
        ResponseCode::NXDomain,
        Duration::from_millis(200),
    );
}

#[test]
fn a_burst_of_partial_writes_ends_with_the_final_content() {
    let server = serve_v1();
    let dns = server.dns;
    let stream = Stream::start(dns, "v.switchyard.test.");

    // A slow copy: truncate, then five chunks 40 ms apart, all within 300 ms. Every
    // state but the last is a syntax error.
    use std::io::Write;
    let text = app(5);
    let chunk = text.len().div_ceil(5);
    let path = server.apps.join("v.js");
    let mut file = std::fs::File::create(&path).unwrap();
    let start = Instant::now();
    for piece in text.as_bytes().chunks(chunk) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    drop(file);
    let burst = start.elapsed();
    assert!(burst < Duration::from_millis(300), "burst took {burst:?}");
    let t = until_answer(
        dns,
        "v.switchyard.test.",
        Some("192.0.2.5"),
        ResponseCode::NoError,
        Duration::from_secs(1),
    );
    eprintln!("burst of {burst:?} → final content answers {t:?} after the last write");
    // Nothing of the burst is served once the final content is.
    std::thread::sleep(Duration::from_millis(500));
    let seen = stream.finish();
    assert_whole_answers(&seen, &["1", "5"]);
    let last = seen.last().unwrap().1.as_ref().unwrap();
    assert_eq!(last.answers[0], "192.0.2.5", "{last:?}");
}

/// How many log lines contain `needle`.
fn log_count(server: &common::Server, needle: &str) -> usize {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn nothing_reloads_while_nothing_changes() {
    let server = serve_v1();
    let dns = server.dns;
    let before = server.debug_vars()["reloads"].as_u64().expect("reloads");
    let path = server.apps.join("v.js");
    std::fs::write(&path, app(2)).unwrap();
    until_answer(
        dns,
        "v.switchyard.test.",
        Some("192.0.2.2"),
        ResponseCode::NoError,
        Duration::from_secs(1),
    );
    // Let the debounce window of the write pass (with room for a busy machine).
    std::thread::sleep(Duration::from_secs(1));
    let after_write = server.debug_vars()["reloads"].as_u64().unwrap();
    assert!(
        after_write > before,
        "the write was not counted as a reload"
    );
    let loaded = log_count(&server, "app loaded");
    let log_mark = server.log.lock().unwrap().len();
    let since_mark = || server.log.lock().unwrap()[log_mark..].join("\n");

    // ~2 s of queries, reads of the file (open events) and a chmod (a metadata-only
    // event): the app must not be loaded again.
    let stream = Stream::start(dns, "v.switchyard.test.");
    let start = Instant::now();
    let mut chmodded = false;
    while start.elapsed() < Duration::from_secs(2) {
        assert_eq!(std::fs::read_to_string(&path).unwrap(), app(2));
        if !chmodded && start.elapsed() > Duration::from_millis(500) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            chmodded = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The chmod's event, if any reload follows it, has had its debounce window.
    std::thread::sleep(Duration::from_millis(500));
    assert_whole_answers(&stream.finish(), &["2"]);
    assert_eq!(
        server.debug_vars()["reloads"].as_u64().unwrap(),
        after_write,
        "the reload counter moved while no app changed; log since:\n{}",
        since_mark()
    );
    assert_eq!(
        log_count(&server, "app loaded"),
        loaded,
        "an app was loaded again while nothing changed; log since:\n{}",
        since_mark()
    );
}

#[test]
fn sighup_applies_geo_paths_warns_on_restart_only_keys_and_keeps_an_invalid_config() {
    let server = common::Server::start_with(common::Options {
        apps: Some(vec![(
            "t.js".into(),
            "function onRequest(q, r) { r.addARecord('192.0.2.1'); }".into(),
        )]),
        ..Default::default()
    });
    let dns = server.dns;
    let admin = server.admin.expect("an operations listener");
    let sock = dnsclient::socket(Duration::from_secs(2));
    let ttl = |id| {
        dnsclient::query(&sock, dns, "t.switchyard.test.", RecordType::A, id)
            .unwrap()
            .ttl
    };
    assert_eq!(ttl(1), Some(20), "zone TTL");
    let config = server.dir.path().join("switchyard.toml");
    let shipped = std::fs::read_to_string(&config).unwrap();
    let reloaded = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(3);
        while log_count(&server, "configuration reloaded") < n {
            assert!(Instant::now() < deadline, "SIGHUP reload {n} not logged");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // 1. New GeoIP paths apply live; a restart-only key gets its warning; the zone TTL
    //    applies.
    let city = server.dir.path().join("City-copy.mmdb");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("geo/Switchyard-City-Test.mmdb"),
        &city,
    )
    .unwrap();
    let city_line = format!("city = {:?}", city.to_str().unwrap());
    let edited = shipped
        .replacen("city = \"geo/Switchyard-City-Test.mmdb\"", &city_line, 1)
        .replacen("max_udp_payload = 1232", "max_udp_payload = 1400", 1)
        .replacen("ttl = 20 ", "ttl = 33 ", 1);
    assert_ne!(edited, shipped);
    std::fs::write(&config, &edited).unwrap();
    server.signal("HUP");
    reloaded(1);
    assert_eq!(ttl(2), Some(33));
    assert_eq!(
        log_count(
            &server,
            "server.max_udp_payload changed in the config; takes effect after a restart"
        ),
        1
    );
    assert_eq!(
        log_count(&server, "changed in the config"),
        1,
        "only that key"
    );
    let deepcheck = common::http::get(admin, "/deepcheck").body;
    assert!(
        deepcheck.contains(&format!("geo city: {}", city.display())),
        "{deepcheck}"
    );

    // 2. A config that parses but fails validation keeps the current one, and says why.
    std::fs::write(
        &config,
        edited
            .replacen("max_udp_payload = 1400", "max_udp_payload = 100", 1)
            .replacen("ttl = 33 ", "ttl = 44 ", 1),
    )
    .unwrap();
    server.signal("HUP");
    assert!(server.wait_log("config reload failed", Duration::from_secs(3)));
    assert!(
        server.logged("server.max_udp_payload: must be at least 512, got 100"),
        "{:?}",
        server.log.lock().unwrap()
    );
    assert_eq!(ttl(3), Some(33), "the failed config must not apply");

    // 3. A GeoIP path that does not load fails the whole reload, naming the file.
    std::fs::write(
        &config,
        edited
            .replacen(&city_line, "city = \"/nonexistent/City.mmdb\"", 1)
            .replacen("ttl = 33 ", "ttl = 55 ", 1),
    )
    .unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(3);
    while log_count(&server, "config reload failed") < 2 {
        assert!(
            Instant::now() < deadline,
            "the bad GeoIP path was not refused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.logged("geo database /nonexistent/City.mmdb: cannot open"));
    assert_eq!(ttl(4), Some(33));
    let deepcheck = common::http::get(admin, "/deepcheck").body;
    assert!(
        deepcheck.contains(&format!("geo city: {}", city.display())),
        "{deepcheck}"
    );
    assert_eq!(log_count(&server, "configuration reloaded"), 1);
}

/// An app none of whose versions ever loaded (its `init` throws from the
/// first save) is not an unknown name: it answers with its sidecar's
/// fallback, or SERVFAIL without one; `/api/applications` shows the error;
/// a version that loads replaces it.
#[test]
fn an_app_that_never_loaded_answers_its_fallback() {
    let broken = "function init(config) { throw new Error('no config'); }\nfunction onRequest(request, response) { response.addARecord('192.0.2.9'); }\n";
    let server = common::Server::start_with(common::Options {
        apps: Some(vec![
            ("fb.js".into(), broken.into()),
            ("fb.toml".into(), "fallback = [\"192.0.2.250\"]\n".into()),
            ("nofb.js".into(), broken.into()),
        ]),
        ..Default::default()
    });
    let dns = server.dns;
    until_answer(
        dns,
        "fb.switchyard.test.",
        Some("192.0.2.250"),
        ResponseCode::NoError,
        Duration::from_secs(5),
    );
    until_answer(
        dns,
        "nofb.switchyard.test.",
        None,
        ResponseCode::ServFail,
        Duration::from_secs(1),
    );
    if let Some(admin) = server.admin {
        let body = common::http::get(admin, "/api/applications/fb").body;
        assert!(body.contains(r#""status":"error""#), "{body}");
        assert!(body.contains(r#""version":null"#), "{body}");
        assert!(body.contains("no config"), "{body}");
    }
    // A version that loads replaces the entry.
    std::fs::write(server.apps.join("fb.js"), app(5)).unwrap();
    let t = until_answer(
        dns,
        "fb.switchyard.test.",
        Some("192.0.2.5"),
        ResponseCode::NoError,
        Duration::from_secs(2),
    );
    eprintln!("fixed version of a never-loaded app served after {t:?}");
    std::fs::write(server.apps.join("nofb.js"), app(6)).unwrap();
    until_answer(
        dns,
        "nofb.switchyard.test.",
        Some("192.0.2.6"),
        ResponseCode::NoError,
        Duration::from_secs(2),
    );
}

/// SIGHUPs that reach a serving process before it has installed its
/// handler (while it starts, or restarts after a crash) are ignored rather
/// than killing it: with SIGHUPs arriving every few milliseconds, a killed
/// serving process is restarted once and serves again, instead of every
/// restart dying in turn.
#[test]
fn sighup_while_the_serving_process_starts_does_not_kill_it() {
    let server = serve_v1();
    let pid = server.pid();
    let child = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("the serving process")
        .split_whitespace()
        .next()
        .expect("one serving process")
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let hups = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "HUP", &pid.to_string()])
                    .status();
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::process::Command::new("kill")
        .args(["-s", "KILL", &child])
        .status();
    // The restarted process serves while the SIGHUPs go on.
    let sock = dnsclient::socket(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = 0;
    while answered < 20 {
        assert!(
            Instant::now() < deadline,
            "no answers while SIGHUPs arrive: {:?}",
            server.log.lock().unwrap()
        );
        if dnsclient::query(&sock, server.dns, "v.switchyard.test.", RecordType::A, 1)
            .is_some_and(|r| r.rcode == ResponseCode::NoError && !r.answers.is_empty())
        {
            answered += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = hups.join().unwrap();
    let deaths = log_count(&server, "serving process died; restarting it");
    eprintln!("{sent} SIGHUPs sent; serving process died {deaths} time(s)");
    assert_eq!(
        deaths,
        1,
        "only the SIGKILL: {:?}",
        server.log.lock().unwrap()
    );
}
