//! `switchyard test`, the fixture runner: passing and failing fixtures of
//! each kind, random and clock injection, state across requests, and every
//! broken-fixture error.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("test")
        // Debug builds on a busy machine miss the production 5 ms budget.
        .args(["--budget-ms", "1000"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "error")
        .output()
        .expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Writes `app` and a fixture using it into a temp dir; returns the fixture path.
fn fixture(dir: &Path, app: &str, fixture: serde_json::Value) -> std::path::PathBuf {
    std::fs::write(dir.join("app.js"), app).unwrap();
    let mut f = fixture;
    f["app"] = serde_json::Value::from(dir.join("app.js").display().to_string());
    let p = dir.join("fixture.json");
    std::fs::write(&p, serde_json::to_string_pretty(&f).unwrap()).unwrap();
    p
}

const ECHO: &str = "var n = 0;
function init(config) { config.requireProvider('a'); config.requireProvider('b'); }
function onRequest(request, response) {
  n += 1;
  var avail = request.getProbe('avail');
  var sonar = request.getData('sonar');
  response.respond('a', 'a.example.net');
  response.setTTL(20);
  response.setReasonCode([n, request.market, typeof request.country, Object.keys(avail || {}).join('+'),
    sonar ? JSON.parse(sonar.a).avail : 'none', Math.random(), Date.now(), new Date().getUTCFullYear(),
    request.getHeader('x-h'), request.getQueryString('q')].join('|'));
}";

#[test]
fn shipped_fixtures_pass() {
    let out = run(&["examples/fixtures"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.trim_end().ends_with(" passed, 0 failed"), "{text}");
    assert!(
        text.lines().filter(|l| l.starts_with("ok ")).count() >= 20,
        "{text}"
    );
}

#[test]
fn calls_pass_and_fail_with_the_first_difference() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(
        dir.path(),
        ECHO,
        serde_json::json!({
            "tests": [
                {"name": "passes", "random": [0.5], "now_ms": 1763700000000u64, "expect_init": {"required_providers": ["a", "b"]},
                 "requests": [{"request": {"market": "EU"}, "probes": {"avail": {"a": {"avail": 99}}}, "data": {"sonar": {"a": "{\"avail\":1}"}},
                                "headers": {"X-H": "hv"}, "query": {"q": "qv"},
                                "expect": {"calls": [["respond", "a", "a.example.net"], ["setTTL", 20.0], ["setReasonCode", "1|EU|undefined|a|1|0.5|1763700000000|2025|hv|qv"]]}}]},
                {"name": "fails on a call", "requests": [{"request": {}, "expect": {"calls": [["respond", "b", "a.example.net"]]}}]},
                {"name": "fails on init", "expect_init": {"required_providers": ["b", "a"]}, "requests": []}
            ]
        }),
    );
    let out = run(&[f.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ok   ") && text.contains(": passes"),
        "{text}"
    );
    assert!(text.contains("call 1 differs: expected [\"respond\",\"b\",\"a.example.net\"], got [\"respond\",\"a\",\"a.example.net\"]"), "{text}");
    assert!(
        text.contains("required providers: expected [\"b\", \"a\"], got [\"a\", \"b\"]"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("1 passed, 2 failed"), "{text}");
}

#[test]
fn decision_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(
        dir.path(),
        "function onRequest(q, r) { r.respond('cdn', 'x.example.net'); r.setTTL(30); r.setReasonCode('R'); r.setStatus(201); }",
        serde_json::json!({"tests": [
            {"name": "matches", "requests": [{"expect": {"provider": "cdn", "cname": "x.example.net", "ttl": 30, "reason": "R", "status": 201}}]},
            {"name": "differs", "requests": [{"expect": {"provider": "other", "ttl": 31}}]}
        ]}),
    );
    let text = stdout(&run(&[f.to_str().unwrap()]));
    assert!(
        text.contains("ok   ") && text.contains(": matches"),
        "{text}"
    );
    assert!(text.contains("provider: expected Some(\"other\"), got Some(\"cdn\"); ttl: expected Some(31), got Some(30)"), "{text}");
}

#[test]
fn random_repeats_last_value_and_state_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let app = "var seen = 0; function onRequest(q, r) { seen += 1; r.respondEmpty(); r.setReasonCode(seen + ':' + Math.random()); }";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [
            {"name": "sequence", "random": [0.1, 0.2], "requests": [
                {"expect": {"reason": "1:0.1"}}, {"expect": {"reason": "2:0.2"}}, {"expect": {"reason": "3:0.2"}}]},
            {"name": "fresh instance per test", "random": [0.7], "requests": [{"expect": {"reason": "1:0.7"}}]}
        ]}),
    );
    let out = run(&[f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn special_values_and_setup() {
    let dir = tempfile::tempdir().unwrap();
    let app = "var settings = {x: 1};
function onRequest(q, r) { var p = q.getProbe('http_rtt'); r.respondEmpty();
  r.setReasonCode([settings.x, p.a.http_rtt === Infinity, isNaN(p.b.http_rtt), q.asn === undefined, typeof q.getProbe('avail')].join(',')); }";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({
            "setup": "settings = {x: 2};",
            "tests": [{"name": "special", "requests": [{
                "request": {"asn": {"$undefined": true}},
                "probes": {"http_rtt": {"a": {"http_rtt": {"$number": "Infinity"}}, "b": {"http_rtt": {"$number": "NaN"}}}},
                "expect": {"reason": "2,true,true,true,undefined"}}]}]
        }),
    );
    let out = run(&[f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn geo_ip_fills_fields() {
    let dir = tempfile::tempdir().unwrap();
    let app = "function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(q.market + ',' + q.country + ',' + q.asn + ',' + q.resolver_country); }";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [{"name": "geo", "requests": [
        {"geo_ip": "198.51.100.7", "expect": {"reason": "EU,GB,64499,GB"}}]}]}),
    );
    let out = run(&[f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn js_errors_print_message_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = "function onRequest(q, r) {\n  'use strict';\n  throw new Error('boom');\n}";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [{"name": "throws", "requests": [{"expect": {"calls": []}}]}]}),
    );
    let text = stdout(&run(&[f.to_str().unwrap()]));
    assert!(
        text.contains("Error: boom") && text.contains("app line 3"),
        "{text}"
    );
}

#[test]
fn json_report() {
    let out = run(&["--json", "examples/fixtures/geo-map.json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(v["failed"], 0);
    assert!(v["passed"].as_u64().unwrap() >= 3);
    assert_eq!(v["tests"][0]["passed"], true);
}

#[test]
fn broken_fixtures_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, &str)> = vec![
        ("{not json", "key must be a string"),
        (
            r#"{"app": "nope.js", "tests": []}"#,
            "key \"app\": cannot read",
        ),
        (
            r#"{"app": "x.js", "tests": [], "bogus": 1}"#,
            "unknown field `bogus`",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"request": {"markt": "EU"}, "expect": {"calls": []}}]}]}"#,
            "request: unknown field \"markt\"",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"probes": {"rtt": {}}, "expect": {"calls": []}}]}]}"#,
            "unknown probe \"rtt\"",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "random": [], "requests": []}]}"#,
            "random: must list at least one value",
        ),
        (r#"{"tests": []}"#, "missing field `app`"),
    ];
    std::fs::write(
        dir.path().join("x.js"),
        "function onRequest(q, r) { r.respondEmpty(); }",
    )
    .unwrap();
    for (i, (text, needle)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("broken{i}.json"));
        std::fs::write(
            &p,
            text.replace("x.js", &dir.path().join("x.js").display().to_string()),
        )
        .unwrap();
        let out = run(&[p.to_str().unwrap()]);
        let got = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{text}: {got}");
        assert!(
            got.contains(&format!("broken{i}.json")) && got.contains(needle),
            "{text}: {got}"
        );
        assert!(got.trim_end().ends_with("0 passed, 1 failed"), "{got}");
    }
}
