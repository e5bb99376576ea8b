//! Shadow mode over real sockets: `POST /api/apps/{app}/shadow` starts a
//! candidate beside a live app, DNS and HTTP decisions are sent, and
//! `GET` shows exactly the changes the candidate was written to make,
//! while every live answer stays the live app's.
//!
//! Markets come from `X-Forwarded-For` on the HTTP decision endpoint (the
//! test config trusts 127.0.0.1): 198.51.100.7 is GB/EU, 203.0.113.5 is
//! JP/AS; DNS queries from 127.0.0.1 have no market. The live app answers
//! `a` everywhere, so DNS repeats are memo hits answered on the DNS
//! threads, which the shadow must see too.

use crate::common;
use crate::common::http::{TOKEN, request};
use crate::common::{Options, Server, dnsclient};

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

const LIVE: &str = r#"
function init(config) { config.requireProvider('a'); config.requireProvider('b'); }
function onRequest(request, response) {
    response.respond('a', 'a.example.net');
    response.setReasonCode('live');
}
"#;

/// Moves EU to `b`, everything else as live.
const MOVES_EU: &str = r#"
function init(config) { config.requireProvider('a'); config.requireProvider('b'); }
function onRequest(request, response) {
    if (request.market === 'EU') {
        response.respond('b', 'b.example.net');
        response.setReasonCode('moved');
        return;
    }
    response.respond('a', 'a.example.net');
    response.setReasonCode('live');
}
"#;

/// Throws for AS, everything else as live.
const THROWS_IN_AS: &str = r#"
function init(config) { config.requireProvider('a'); }
function onRequest(request, response) {
    if (request.market === 'AS') {
        throw new Error('no plan for AS');
    }
    response.respond('a', 'a.example.net');
    response.setReasonCode('live');
}
"#;

const EU: &str = "198.51.100.7";
const AS: &str = "203.0.113.5";

fn start() -> Server {
    Server::start_with(Options {
        apps: Some(vec![
            ("steer.js".into(), LIVE.into()),
            (
                "steer.toml".into(),
                "ttl = 20\nfallback = \"fallback.example.net\"\nbudget_ms = 2000\n".into(),
            ),
        ]),
        config_edits: vec![(
            "trusted_proxies = []".into(),
            r#"trusted_proxies = ["127.0.0.1"]"#.into(),
        )],
        ..Options::default()
    })
}

fn admin(s: &Server) -> SocketAddr {
    s.admin.expect("an operations listener")
}

/// `POST` a shadow of `steer`.
fn post(s: &Server, body: &Value) -> common::http::Reply {
    request(
        admin(s),
        "POST",
        "/api/apps/steer/shadow",
        Some(TOKEN),
        body.to_string().as_bytes(),
    )
}

fn status(s: &Server) -> Value {
    request(admin(s), "GET", "/api/apps/steer/shadow", None, b"").ok()
}

/// One HTTP decision for a client at `ip`: the provider answered.
fn http_decision(s: &Server, ip: &str) -> String {
    let r = common::http::Request::new(
        s.http.expect("a public listener"),
        "GET",
        "/apps/steer/decision",
    )
    .header("X-Forwarded-For", ip)
    .send();
    r.ok()["provider"].as_str().unwrap_or_default().to_string()
}

/// One DNS decision: the answers.
fn dns_decision(s: &Server, id: u16) -> Vec<String> {
    let sock = dnsclient::socket(Duration::from_secs(3));
    dnsclient::query(&sock, s.dns, "steer.switchyard.test.", RecordType::A, id)
        .map(|r| r.answers)
        .unwrap_or_default()
}

/// Waits until the shadow has compared at least `n` decisions (callers
/// check the exact total in the diff); its status.
fn compared(s: &Server, n: u64) -> Value {
    let mut last = Value::Null;
    let done = common::wait::wait_for(Duration::from_secs(20), || {
        last = status(s);
        last["decided"].as_u64() >= Some(n)
    });
    assert!(done, "the shadow never compared {n} decisions: {last}");
    last
}

fn moves(table: &Value) -> Vec<(String, String, String, u64)> {
    table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|m| {
            (
                m["place"].as_str().unwrap_or("*").to_string(),
                m["from"].as_str().unwrap_or_default().to_string(),
                m["to"].as_str().unwrap_or_default().to_string(),
                m["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn row(place: &str, from: &str, to: &str, n: u64) -> (String, String, String, u64) {
    (place.into(), from.into(), to.into(), n)
}

#[test]
fn a_shadow_reports_exactly_the_changes_its_candidate_makes() {
    let s = start();
    assert!(
        common::wait::wait_for(Duration::from_secs(10), || !dns_decision(&s, 1).is_empty()),
        "the live app never answered"
    );
    let started = post(&s, &json!({ "source": MOVES_EU, "percent": 100 }));
    assert_eq!(started.status, 201, "{}", started.body);
    let v = started.json();
    assert_eq!(
        (v["active"].clone(), v["percent"].clone()),
        (json!(true), json!(100.0))
    );
    assert_eq!(v["candidate_hash"].as_str().map(str::len), Some(16), "{v}");

    // 5 EU and 5 AS clients over HTTP, 5 DNS queries (memo hits after the
    // first): every live answer is the live app's.
    for i in 0..5 {
        assert_eq!(http_decision(&s, EU), "a");
        assert_eq!(http_decision(&s, AS), "a");
        assert_eq!(dns_decision(&s, 10 + i), ["a.example.net."]);
    }
    let v = compared(&s, 15);
    let d = &v["diff"];
    assert_eq!(
        (
            d["total"].clone(),
            d["changed"].clone(),
            d["failed"].clone()
        ),
        (json!(15), json!(5), json!(0)),
        "{v}"
    );
    assert!(
        (d["changed_share"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9,
        "{d}"
    );
    assert_eq!(
        moves(&d["providers"]),
        [row("*", "a", "a", 10), row("*", "a", "b", 5)],
        "{d}"
    );
    assert_eq!(moves(&d["markets"]), [row("EU", "a", "b", 5)], "{d}");
    assert_eq!(moves(&d["countries"]), [row("GB", "a", "b", 5)], "{d}");
    assert_eq!(
        d["reasons"]["rows"],
        json!([{"reason": "live", "count": 10}, {"reason": "moved", "count": 5}])
    );
    let ex = &d["examples"][0];
    assert_eq!(
        (
            ex["request"]["market"].as_str(),
            ex["from"]["provider"].as_str(),
            ex["to"]["provider"].as_str()
        ),
        (Some("EU"), Some("a"), Some("b")),
        "{ex}"
    );
    assert_eq!(d["examples"].as_array().map(Vec::len), Some(5));
    assert_eq!(v["dropped"], 0);

    // Not counted as live decisions: the app's counts are the 15 sent plus
    // the first probing query(ies), never 30.
    let app = request(admin(&s), "GET", "/api/applications/steer", None, b"").ok();
    let counted: u64 = app["last_minute"]["a"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    assert!((15..30).contains(&counted), "{app}");

    // A reload of the live app keeps the shadow, which now compares with
    // the new version (answering b everywhere).
    std::fs::write(
        s.apps.join("steer.js"),
        LIVE.replace("'a', 'a.example.net'", "'b', 'b.example.net'"),
    )
    .unwrap();
    assert!(
        common::wait::wait_for(Duration::from_secs(10), || http_decision(&s, AS) == "b"),
        "the reload never took effect"
    );
    let before = status(&s)["decided"].as_u64().unwrap();
    assert_eq!(http_decision(&s, AS), "b");
    let v = compared(&s, before + 1);
    assert_eq!(v["active"], true);
    assert!(
        moves(&v["diff"]["providers"])
            .iter()
            .any(|m| m.1 == "b" && m.2 == "a"),
        "the candidate (a in AS) against the new live version (b): {v}"
    );

    // DELETE ends it and shows the last diff; then it is gone.
    let ended = request(
        admin(&s),
        "DELETE",
        "/api/apps/steer/shadow",
        Some(TOKEN),
        b"",
    )
    .ok();
    assert_eq!(ended["app"], "steer");
    assert_eq!(status(&s)["active"], false);
    request(
        admin(&s),
        "DELETE",
        "/api/apps/steer/shadow",
        Some(TOKEN),
        b"",
    )
    .error(404);
}

#[test]
fn a_failing_candidate_shows_its_failures_and_live_answers_stay_right() {
    let s = start();
    assert!(common::wait::wait_for(
        Duration::from_secs(10),
        || http_decision(&s, EU) == "a"
    ));
    post(&s, &json!({ "source": THROWS_IN_AS, "percent": 100 })).ok();
    for i in 0..4 {
        assert_eq!(http_decision(&s, AS), "a", "a live answer changed");
        assert_eq!(http_decision(&s, EU), "a");
        assert_eq!(dns_decision(&s, 20 + i), ["a.example.net."]);
    }
    let v = compared(&s, 12);
    let d = &v["diff"];
    assert_eq!(
        (d["changed"].clone(), d["failed"].clone()),
        (json!(4), json!(4)),
        "{d}"
    );
    let f = &d["failures"]["rows"][0];
    assert_eq!(f["count"], 4, "{d}");
    assert!(
        f["message"].as_str().unwrap().contains("no plan for AS"),
        "{f}"
    );
    assert_eq!(f["ids"].as_array().map(Vec::len), Some(3), "{f}");
    // The candidate's own fallback is what it would answer.
    assert_eq!(moves(&d["markets"]), [row("AS", "a", "fallback", 4)], "{d}");
    // The live app is neither quarantined nor backing off.
    let app = request(admin(&s), "GET", "/api/applications/steer", None, b"").ok();
    assert_eq!(app["status"], "ok", "{app}");
    assert!(app["last_minute"].get("fallback").is_none(), "{app}");
}

#[test]
fn a_share_takes_every_nth_decision() {
    let s = start();
    assert!(common::wait::wait_for(Duration::from_secs(10), || {
        !dns_decision(&s, 1).is_empty()
    }));
    let v = post(&s, &json!({ "source": MOVES_EU })).ok();
    assert_eq!(v["percent"], 10.0, "the default share: {v}");
    for i in 0..30 {
        assert_eq!(dns_decision(&s, 100 + i), ["a.example.net."]);
    }
    let v = compared(&s, 3);
    assert_eq!(v["diff"]["total"], 3, "one decision in ten: {v}");
    assert_eq!(v["diff"]["changed"], 0, "{v}");
}

#[test]
fn bad_shadow_requests_get_clear_errors() {
    let s = start();
    let a = admin(&s);
    // No token, or a wrong one: 401.
    let body = json!({ "source": MOVES_EU }).to_string();
    assert_eq!(
        request(a, "POST", "/api/apps/steer/shadow", None, body.as_bytes()).status,
        401
    );
    request(
        a,
        "POST",
        "/api/apps/steer/shadow",
        Some("wrong"),
        body.as_bytes(),
    )
    .assert_invalid_token("wrong token");
    assert_eq!(
        request(a, "DELETE", "/api/apps/steer/shadow", None, b"").status,
        401
    );
    // A candidate that does not compile: 400 with its line.
    let r = post(
        &s,
        &json!({ "source": "function init(c) {}\nfunction onRequest(q, r) {\n  r.respond('a', ;\n}\n" }),
    );
    let v = r.json();
    assert_eq!(r.status, 400, "{v}");
    assert_eq!(v["line"], 3, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("does not load"),
        "{v}"
    );
    // One whose init throws: 400.
    let r = post(
        &s,
        &json!({ "source": "function init(c) { throw new Error('nope'); }\nfunction onRequest(q, r) {}\n" }),
    );
    assert!(r.error(400).contains("nope"));
    // Bad bodies and shares.
    assert!(
        post(&s, &json!({ "percent": 5 }))
            .error(400)
            .contains("source")
    );
    assert!(
        post(&s, &json!({ "source": MOVES_EU, "percent": 0 }))
            .error(400)
            .contains("percent")
    );
    assert!(
        post(&s, &json!({ "source": MOVES_EU, "percent": 101 }))
            .error(400)
            .contains("percent")
    );
    request(
        a,
        "POST",
        "/api/apps/steer/shadow",
        Some(TOKEN),
        b"{not json",
    )
    .error(400);
    // Unknown app, and no shadow to end: 404.
    request(
        a,
        "POST",
        "/api/apps/nope/shadow",
        Some(TOKEN),
        body.as_bytes(),
    )
    .error(404);
    request(a, "GET", "/api/apps/nope/shadow", None, b"").error(404);
    request(a, "DELETE", "/api/apps/steer/shadow", Some(TOKEN), b"").error(404);
    // Nothing was started by any of it, and the server still answers.
    assert_eq!(status(&s)["active"], false);
    assert!(common::wait::wait_for(Duration::from_secs(10), || {
        !dns_decision(&s, 7).is_empty()
    }));
}
