//! Explaining decisions (issue 25): `GET /api/apps/{app}/explain` over real
//! HTTP against a running server with the shipped apps and the test GeoIP
//! databases, `switchyard explain` against it, and `switchyard decide
//! --explain` offline.

use crate::common;
use common::dnsclient;
use common::http::Request;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::Value;

const TOKEN: &str = "change-me";

/// Reads fusion, a feed that does not exist and a header.
const FEEDS_APP: &str = "function init(config) {\n  config.requireProvider('cdn_a');\n}\nfunction onRequest(request, response) {\n  var f = request.getData('fusion');\n  var none = request.getData('no_such_feed');\n  var h = request.getHeader('X-Test');\n  response.respond('cdn_a', h === 'yes' ? 'yes.example.net' : 'no.example.net');\n}\n";

/// Throws on every decision; its fallback answers.
const THROWER_APP: &str =
    "function onRequest(request, response) {\n  throw new Error('boom');\n}\n";

/// Reads randomness while deciding: memoisable app, never stored.
const DICE_APP: &str = "function onRequest(request, response) {\n  response.addARecord('203.0.113.' + Math.floor(Math.random() * 200 + 1));\n}\n";

/// Reads the clock: the purity proof refuses it.
const CLOCK_APP: &str = "function onRequest(request, response) {\n  response.addARecord(Date.now() % 2 ? '192.0.2.3' : '192.0.2.4');\n}\n";

fn start() -> common::Server {
    let mut apps = common::apps::shipped_with_budget();
    apps.extend([
        ("feeds.js".to_string(), FEEDS_APP.to_string()),
        ("thrower.js".to_string(), THROWER_APP.to_string()),
        (
            "thrower.toml".to_string(),
            "fallback = \"fallback.example.net\"\n".to_string(),
        ),
        ("dice.js".to_string(), DICE_APP.to_string()),
        ("clock.js".to_string(), CLOCK_APP.to_string()),
    ]);
    common::Server::start_with(common::Options {
        apps: Some(apps),
        config_edits: vec![(
            common::GEO_OVERRIDES_OFF.to_string(),
            common::GEO_OVERRIDES_ON.to_string(),
        )],
        ..Default::default()
    })
}

/// `GET /api/apps/{app}/explain?{query}` with the token: (status, JSON).
fn explain(admin: SocketAddr, app: &str, query: &str) -> (u16, Value) {
    let r = Request::new(admin, "GET", &format!("/api/apps/{app}/explain?{query}"))
        .token(Some(TOKEN))
        .send();
    (r.status, r.json_or_null())
}

fn ok(admin: SocketAddr, app: &str, query: &str) -> Value {
    let (status, v) = explain(admin, app, query);
    assert_eq!(status, 200, "{app}?{query}: {v}");
    v
}

fn sources(v: &Value) -> Vec<String> {
    v["reads"]
        .as_array()
        .expect("reads")
        .iter()
        .map(|r| r["source"].as_str().expect("source").to_string())
        .collect()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "error")
        .env_remove("SWITCHYARD_TOKEN")
        .env_remove("SWITCHYARD_ADMIN_URL")
        .output()
        .expect("runs")
}

#[test]
fn a_located_client_is_explained_read_by_read() {
    let server = start();
    let admin = server.admin.expect("operations listener");
    let v = ok(
        admin,
        "best-rtt",
        "ecs=198.51.100.0%2F24&resolver_ip=192.0.2.1",
    );

    // The request as located: the ECS subnet's network, its fields and the
    // override that renamed its region.
    let client = &v["request"]["client"];
    assert_eq!(client["ip"], "198.51.100.0", "{v}");
    assert_eq!(client["geo"]["market"], "EU", "{v}");
    assert_eq!(client["geo"]["country"], "GB", "{v}");
    assert_eq!(client["geo"]["region"], "GB-R-ENGLAND", "{v}");
    assert_eq!(client["source"]["network"], "198.51.100.0/25", "{v}");
    assert_eq!(
        client["source"]["overrides"][0]["computed"], "GB-R-ENG",
        "{v}"
    );
    assert_eq!(v["request"]["resolver"]["geo"]["country"], "US", "{v}");
    assert_eq!(v["request"]["fields"]["client"]["market"], "EU", "{v}");
    // The answer holds for the /25, but never more than the /24 sent.
    assert_eq!(v["ecs_scope"], 24, "{v}");

    // Every read, in order, with the probe rows the app got.
    assert_eq!(
        sources(&v),
        [
            "request.getProbe(avail)",
            "request.getProbe(http_rtt)",
            "request.market"
        ],
        "{v}"
    );
    assert_eq!(v["reads"][0]["value"]["cdn_a"], 99.5, "{v}");
    assert_eq!(v["reads"][1]["value"]["cdn_c"], 20, "{v}");
    assert_eq!(v["reads"][2]["value"], "EU", "{v}");

    assert_eq!(v["decision"]["provider"], "cdn_a", "{v}");
    assert_eq!(v["decision"]["reason"], "A", "{v}");
    assert_eq!(v["decision"]["ttl"], 20, "{v}");
    assert_eq!(v["how"]["kind"], "ran", "{v}");
    assert_eq!(v["memo"]["memoisable"], true, "{v}");
    assert!(v["version"].as_u64().is_some(), "{v}");
    assert!(v["data"]["snapshot"].as_u64().is_some(), "{v}");
    assert!(v["data"]["feeds"].is_object(), "{v}");
    assert!(v["time_us"].as_u64().is_some(), "{v}");

    // getData and getHeader reads, a feed that does not exist included.
    let v = ok(admin, "feeds", "ip=192.0.2.1&qtype=&header=X-Test%3A%20yes");
    assert_eq!(
        sources(&v),
        [
            "request.getData(fusion)",
            "request.getData(no_such_feed)",
            "request.getHeader(X-Test)"
        ],
        "{v}"
    );
    assert!(v["reads"][0]["value"].is_object(), "{v}");
    assert!(v["reads"][1]["value"].is_null(), "{v}");
    assert_eq!(v["reads"][2]["value"], "yes", "{v}");
    assert_eq!(
        v["decision"]["answers"][0]["value"], "yes.example.net",
        "{v}"
    );
    assert!(v["ecs_scope"].is_null(), "no client subnet: {v}");
}

#[test]
fn explain_agrees_with_dns_and_http_and_changes_nothing() {
    let server = start();
    let admin = server.admin.expect("operations listener");
    let http = server.http.expect("decision listener");

    // The HTTP decision for this test client (loopback: not located).
    let d = common::http::get(http, "/apps/best-rtt/decision").json();
    let v = ok(admin, "best-rtt", "ip=127.0.0.1&qtype=");
    assert_eq!(v["decision"]["provider"], d["provider"], "{v} vs {d}");

    // A DNS query from the same client, answered and memoised; explain
    // then says the memo would answer, without counting a hit.
    let sock = dnsclient::socket(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    let explained = loop {
        let reply = dnsclient::query(
            &sock,
            server.dns,
            "best-rtt.switchyard.test.",
            RecordType::A,
            7,
        )
        .expect("a DNS answer");
        let v = ok(admin, "best-rtt", "ip=127.0.0.1");
        assert_eq!(
            reply.answers,
            [format!(
                "{}.",
                v["decision"]["answers"][0]["value"].as_str().unwrap()
            )],
            "{v}"
        );
        if v["memo"]["would_hit"] == true {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the memo never held the decision: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(explained["how"]["kind"], "memo", "{explained}");
    assert_eq!(explained["memo"]["memoisable"], true, "{explained}");
    assert_eq!(
        sources(&explained).len(),
        3,
        "the app ran to show its reads: {explained}"
    );

    let stats = || server.debug_vars()["memo"]["apps"]["best-rtt"]["stats"].clone();
    let before = stats();
    for _ in 0..3 {
        ok(admin, "best-rtt", "ip=127.0.0.1");
        ok(admin, "best-rtt", "ip=192.0.2.200");
    }
    let after = stats();
    assert_eq!(before["hits"], after["hits"], "{before} → {after}");
    assert_eq!(before["misses"], after["misses"], "{before} → {after}");
    assert_eq!(before["stored"], after["stored"], "{before} → {after}");
}

#[test]
fn fallbacks_and_unmemoisable_apps_are_named() {
    let server = start();
    let admin = server.admin.expect("operations listener");

    let v = ok(admin, "thrower", "ip=192.0.2.1&ecs=192.0.2.0%2F24");
    assert_eq!(v["how"]["kind"], "fallback", "{v}");
    assert_eq!(v["how"]["error"], "error", "{v}");
    assert!(
        v["how"]["message"].as_str().unwrap().contains("boom"),
        "{v}"
    );
    assert_eq!(v["decision"]["provider"], "fallback", "{v}");
    assert_eq!(
        v["decision"]["answers"][0]["value"], "fallback.example.net",
        "{v}"
    );
    assert_eq!(
        v["ecs_scope"], 0,
        "a fallback does not depend on the client: {v}"
    );
    assert_eq!(v["memo"]["memoisable"], false, "{v}");

    let v = ok(admin, "dice", "ip=192.0.2.1");
    assert_eq!(v["how"]["kind"], "ran", "{v}");
    assert_eq!(v["memo"]["memoisable"], false, "{v}");
    assert!(
        v["memo"]["rule"].as_str().unwrap().contains("Math.random"),
        "{v}"
    );

    let v = ok(admin, "clock", "ip=192.0.2.1");
    assert_eq!(v["memo"]["memoisable"], false, "{v}");
    assert!(v["memo"]["rule"].as_str().unwrap().contains("Date"), "{v}");
}

#[test]
fn refusals_are_clear() {
    let server = start();
    let admin = server.admin.expect("operations listener");

    let r = Request::new(admin, "GET", "/api/apps/best-rtt/explain?ip=192.0.2.1").send();
    assert_eq!(r.status, 401, "{}", r.body);

    let (status, v) = explain(admin, "no-such-app", "ip=192.0.2.1");
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no-such-app"), "{v}");

    for (query, needle) in [
        ("ip=nope", "ip"),
        ("ecs=198.51.100.0%2F99", "ecs"),
        ("qtype=MX", "qtype"),
        ("asn=x", "asn"),
        ("header=no-colon", "header"),
        ("colour=red", "colour"),
    ] {
        let (status, v) = explain(admin, "best-rtt", query);
        assert_eq!(status, 400, "{query}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{query}: {v}"
        );
    }
    // Still serving.
    ok(admin, "best-rtt", "ip=192.0.2.1");

    // The dashboard's form asks the same endpoint.
    let page = common::http::get(admin, "/").body;
    assert!(page.contains("id=\"explain-form\""), "{page}");
    let js = common::http::get(admin, "/dashboard/app.js").body;
    assert!(js.contains("/explain?"), "{js}");
}

#[test]
fn the_cli_explains_against_a_server_and_offline() {
    let server = start();
    let admin = format!("http://{}", server.admin.expect("operations listener"));
    let api = ["--admin-url", admin.as_str(), "--token", TOKEN];

    let mut args = vec!["explain", "best-rtt", "--ecs", "198.51.100.0/24"];
    args.extend(api);
    let out = run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "client      198.51.100.0: EU GB GB-R-ENGLAND",
        "network 198.51.100.0/25",
        "1. request.getProbe(avail)",
        "3. request.market = \"EU\"",
        "decision    cdn_a → CNAME cdn-a.example.net (TTL 20, reason \"A\")",
        "how         ran",
        "memoisable  yes",
        "ecs scope   /24",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    args.push("--json");
    let v = json_of(&run(&args));
    assert_eq!(v["decision"]["provider"], "cdn_a", "{v}");

    let mut args = vec!["explain", "no-such-app"];
    args.extend(api);
    let out = run(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("no-such-app"), "{err}");

    // Offline, the same report.
    let v = json_of(&run(&[
        "decide",
        "--app",
        "best-rtt",
        "--explain",
        "--ecs",
        "198.51.100.0/24",
    ]));
    assert_eq!(v["decision"]["provider"], "cdn_a", "{v}");
    assert_eq!(v["request"]["client"]["geo"]["country"], "GB", "{v}");
    assert_eq!(v["ecs_scope"], 24, "{v}");
    assert_eq!(sources(&v).len(), 3, "{v}");
}

/// The JSON a successful CLI run printed.
fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}
