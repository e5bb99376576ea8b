//! Decision memoisation over real DNS: a stateless app's repeated
//! decisions come from the memo (counted in `/debug/vars`), a reload
//! replaces them at once, and apps that keep state, read the clock or
//! break ties with `Math.random` are run for every query.

use crate::common;
use crate::common::dnsclient;

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

fn ask(dns: std::net::SocketAddr, name: &str, id: u16) -> Vec<String> {
    let sock = dnsclient::socket(Duration::from_secs(2));
    dnsclient::query(&sock, dns, name, RecordType::A, id)
        .expect("an answer")
        .answers
}

const PURE: &str = "function onRequest(request, response) {\n  'use strict';\n  response.addARecord(request.hostname_prefix === 'b' ? '192.0.2.2' : '192.0.2.1');\n}\n";

#[test]
fn stateless_decisions_are_reused_and_stateful_ones_never() {
    let server = common::Server::start_with(common::Options {
        apps: Some(vec![
            ("pure.js".into(), PURE.into()),
            (
                "counter.js".into(),
                "var n = 0;\nfunction onRequest(request, response) {\n  n += 1;\n  response.addARecord('192.0.2.' + (n % 250 + 1));\n}\n".into(),
            ),
            (
                "closure.js".into(),
                "var next = (function () { var c = 0; return function () { c += 1; return c; }; })();\nfunction onRequest(request, response) {\n  response.addARecord('198.51.100.' + (next() % 250 + 1));\n}\n".into(),
            ),
            (
                "clock.js".into(),
                "function onRequest(request, response) {\n  response.addARecord(Date.now() % 2 ? '192.0.2.3' : '192.0.2.4');\n}\n".into(),
            ),
            (
                "dice.js".into(),
                "function onRequest(request, response) {\n  response.addARecord('203.0.113.' + Math.floor(Math.random() * 200 + 1));\n}\n".into(),
            ),
        ]),
        ..Default::default()
    });
    let dns = server.dns;
    let deadline = Instant::now() + Duration::from_secs(5);
    while ask(dns, "pure.switchyard.test.", 1).is_empty() {
        assert!(Instant::now() < deadline, "pure never answered");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The same values read: one decision run, the rest from the memo.
    for i in 0..20 {
        assert_eq!(ask(dns, "pure.switchyard.test.", 10 + i), ["192.0.2.1"]);
        assert_eq!(ask(dns, "b.pure.switchyard.test.", 40 + i), ["192.0.2.2"]);
    }
    let v = server.debug_vars();
    let pure = &v["memo"]["apps"]["pure"];
    assert_eq!(pure["memoised"], true, "{v}");
    assert_eq!(
        pure["stats"]["entries"], 2,
        "one per value of hostname_prefix: {pure}"
    );
    assert!(pure["stats"]["hits"].as_u64().unwrap() >= 38, "{pure}");
    assert!(v["memo"]["hits"].as_u64().unwrap() >= 38, "{v}");

    // State between decisions: every query runs the app, answers move on.
    for (app, why) in [
        ("counter", "assigns to `n`"),
        ("closure", "assigns to `c`"),
        ("clock", "uses `Date`"),
    ] {
        let answers: Vec<Vec<String>> = (0..6)
            .map(|i| ask(dns, &format!("{app}.switchyard.test."), 100 + i))
            .collect();
        if app != "clock" {
            // Each worker thread keeps its own context (and counter), so
            // values repeat once per worker; memoised, all would be one.
            let distinct: std::collections::BTreeSet<_> = answers.iter().collect();
            assert!(distinct.len() >= 3, "{app} answers repeated: {answers:?}");
        }
        let info = &server.debug_vars()["memo"]["apps"][app];
        assert_eq!(info["memoised"], false, "{app}: {info}");
        assert!(
            info["why_not"].as_str().is_some_and(|w| w.contains(why)),
            "{app}: {info}"
        );
    }
    // Randomness read at decision time: memoisable app, no decision stored.
    let answers: std::collections::BTreeSet<Vec<String>> = (0..30)
        .map(|i| ask(dns, "dice.switchyard.test.", 200 + i))
        .collect();
    assert!(answers.len() > 5, "dice answers repeated: {answers:?}");
    let dice = &server.debug_vars()["memo"]["apps"]["dice"];
    assert_eq!(dice["memoised"], true, "{dice}");
    assert_eq!(dice["stats"]["hits"], 0, "{dice}");
    assert_eq!(dice["stats"]["entries"], 0, "{dice}");
    assert_eq!(dice["stats"]["impure"], 30, "{dice}");

    // A new version replaces the memoised decisions at once.
    std::fs::write(
        server.apps.join("pure.js"),
        PURE.replace("192.0.2.1", "192.0.2.9"),
    )
    .unwrap();
    let start = Instant::now();
    while ask(dns, "pure.switchyard.test.", 300) != ["192.0.2.9"] {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the new version was not served"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..10 {
        assert_eq!(ask(dns, "pure.switchyard.test.", 400 + i), ["192.0.2.9"]);
    }
}
