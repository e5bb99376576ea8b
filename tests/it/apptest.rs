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

/// The shipped best-rtt is written lean (apps/README.md, "Fast apps"); the
/// same decisions written the application library's way pass the same
/// fixtures, so the two make the same decisions on every branch.
#[test]
fn best_rtt_lean_and_library_style_decide_alike() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut f: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/fixtures/best-rtt.json")).unwrap(),
    )
    .unwrap();
    let tests = f["tests"].as_array().map_or(0, Vec::len);
    assert!(tests >= 9, "the best-rtt fixtures cover its branches");
    f["app"] = serde_json::Value::from(
        root.join("benches/apps/best-rtt-applib.js")
            .display()
            .to_string(),
    );
    let p = dir.path().join("applib.json");
    std::fs::write(&p, serde_json::to_string(&f).unwrap()).unwrap();
    let out = run(&[p.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.trim_end()
            .ends_with(&format!("{tests} passed, 0 failed")),
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
function init(c) { c.requireProvider('a'); c.requireProvider('b'); }
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
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"probes": {"rtt": {}}, "expect": {"calls": []}}]}]}"#,
            "unknown probe \"rtt\"",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "random": [], "requests": []}]}"#,
            "random: must list at least one value",
        ),
        (r#"{"tests": []}"#, "missing field `app`"),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"data": {"radar": {}}, "expect": {"calls": []}}]}]}"#,
            "tests[0].requests[0].data: unknown feed \"radar\"",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requestz": []}]}"#,
            "unknown field `requestz`",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"probe": {}, "expect": {"calls": []}}]}]}"#,
            "unknown field `probe`",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"expect": {"reasn": "A"}}]}]}"#,
            "unknown field `reasn`",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"expect": {}}]}]}"#,
            "tests[0].requests[0].expect: must give \"calls\" or at least one of",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"expect": {"calls": [], "reason": "A"}}]}]}"#,
            "tests[0].requests[0].expect: \"reason\" cannot be combined with \"calls\"",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"expect": {"calls": [[1]]}}]}]}"#,
            "expect: calls[0]: must start with a method name",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"request": {"asn": {"$number": "bogus"}}, "expect": {"calls": []}}]}]}"#,
            "request.asn: bad special value {\"$number\":\"bogus\"}: \"$number\" must be",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"probes": {"avail": {"a": {"$undefined": false}}}, "expect": {"calls": []}}]}]}"#,
            "probes.avail: bad special value {\"$undefined\":false}: \"$undefined\" must be true",
        ),
        (
            r#"{"app": "x.js", "tests": [{"name": "t", "requests": [{"data": {"sonar": [{"$number": "NaN"}, {"$number": "NaN", "x": 1}]}, "expect": {"calls": []}}]}]}"#,
            "data.sonar: bad special value {\"$number\":\"NaN\",\"x\":1}: a \"$number\" or \"$undefined\" object has no other keys",
        ),
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

/// Runs `switchyard test` without the harness's `--budget-ms`.
fn run_with_app_budget(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("test")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "error")
        .output()
        .expect("runs")
}

#[test]
fn on_fusion_is_told_of_new_and_changed_values_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // The app decides from what onFusion told it, and shows what getData
    // returns next to it. onFusion gets strings; getData the fixture values.
    let app = "var told = [];
function init(c) { c.requireProvider('a'); c.requireProvider('b'); c.requireProvider('c'); }
function onFusion(provider, data) { told.push(provider + '=' + JSON.parse(data).u); }
function onRequest(q, r) {
  var f = q.getData('fusion');
  r.respond(told.length ? 'told' : 'quiet', 'x.example.net');
  r.setReasonCode(told.join(',') + '|' + (f ? Object.keys(f).map(function (k) { var v = f[k]; return k + ':' + (typeof v === 'string' ? JSON.parse(v) : v).u; }).join(',') : 'none'));
  told = [];
}";
    let fusion = |b: u32, a: u32| serde_json::json!({"fusion": {"b": format!("{{\"u\":{b}}}"), "a": format!("{{\"u\":{a}}}")}});
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [
            {"name": "deliveries", "requests": [
                {"data": fusion(2, 1), "expect": {"provider": "told", "reason": "b=2,a=1|b:2,a:1"}},
                {"data": fusion(2, 1), "expect": {"provider": "quiet", "reason": "|b:2,a:1"}},
                {"data": {"fusion": {"b": "{\"u\":2}", "a": "{\"u\":1}"}, "sonar": {"a": "{\"avail\":1}"}},
                 "expect": {"reason": "|b:2,a:1"}},
                {"data": fusion(3, 1), "expect": {"reason": "b=3|b:3,a:1"}},
                {"expect": {"reason": "|none"}},
                {"data": {"fusion": {"a": "{\"u\":1}", "c": {"u": 5}}}, "expect": {"reason": "a=1,c=5|a:1,c:5"}}
            ]},
            {"name": "a fresh instance is told everything again", "requests": [
                {"data": fusion(3, 1), "expect": {"reason": "b=3,a=1|b:3,a:1"}}
            ]}
        ]}),
    );
    let out = run(&[f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn file_level_use_strict_is_kept_with_pins() {
    let dir = tempfile::tempdir().unwrap();
    let app = "'use strict';
function onRequest(q, r) {
  var threw = 'no';
  try { undeclared = 1; } catch (e) { threw = e.name; }
  r.respondEmpty();
  r.setReasonCode([threw, (function () { return this === undefined; })(), Math.random(), Date.now()].join(','));
  if (q.market === 'boom') {
    throw new Error('boom');
  }
}";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [
            {"name": "strict with pins", "random": [0.25], "now_ms": 1000, "requests": [
                {"expect": {"reason": "ReferenceError,true,0.25,1000"}}]},
            {"name": "line numbers with pins", "random": [0.25], "now_ms": 1000, "requests": [
                {"request": {"market": "boom"}, "expect": {"calls": []}}]}
        ]}),
    );
    let out = run(&[f.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        text.contains("ok   ") && text.contains(": strict with pins"),
        "{text}"
    );
    assert!(
        text.contains("Error: boom") && text.contains("app line 8"),
        "{text}"
    );
}

#[test]
fn without_pins_random_and_date_are_real() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let app = format!(
        "function onRequest(q, r) {{
  var a = Math.random(), b = Math.random(), c = Math.random(), now = Date.now(), d = new Date();
  r.respondEmpty();
  r.setReasonCode([a >= 0 && a < 1 && !(a === b && b === c), Math.abs(now - {now}) < 600000,
    Math.abs(d.getTime() - now) < 60000, new Date(2020, 0, 2).getDate(),
    /native code/.test(String(Math.random)), /native code/.test(String(Date))].join(','));
}}"
    );
    let f = fixture(
        dir.path(),
        &app,
        serde_json::json!({"tests": [
            {"name": "pinned", "random": [0.5], "now_ms": 1000, "requests": [
                {"expect": {"reason": "false,false,true,2,false,false"}}]},
            {"name": "real", "requests": [{"expect": {"reason": "true,true,true,2,true,true"}}]}
        ]}),
    );
    let out = run(&[f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn special_values_inside_data_and_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = "function init(c) { c.requireProvider('a'); c.requireProvider('b'); c.requireProvider('c'); }
function onRequest(q, r) { var s = q.getData('sonar'); r.respondEmpty();
  r.setReasonCode([q.asn === -Infinity, s.a === -Infinity, s.b[1] === Infinity, isNaN(s.b[2]), s.c === undefined, 'c' in s,
    q.getData('fusion') === undefined].join(',')); }";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [{"name": "special", "requests": [{
            "request": {"asn": {"$number": "-Infinity"}},
            "data": {"sonar": {"a": {"$number": "-Infinity"}, "b": [1, {"$number": "Infinity"}, {"$number": "NaN"}],
                               "c": {"$undefined": true}},
                     "fusion": {"$undefined": true}},
            "expect": {"reason": "true,true,true,true,true,true,true"}}]}]}),
    );
    let out = run(&[f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn missing_and_unexpected_calls_and_failing_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(
        dir.path(),
        "function onRequest(q, r) { r.respond('a', 'a.example.net'); r.setTTL(20); }",
        serde_json::json!({"tests": [
            {"name": "missing", "requests": [{"expect": {"calls": [
                ["respond", "a", "a.example.net"], ["setTTL", 20], ["setReasonCode", "A"]]}}]},
            {"name": "unexpected", "requests": [{"expect": {"calls": [["respond", "a", "a.example.net"]]}}]},
            {"name": "passes", "requests": [{"expect": {"calls": [["respond", "a", "a.example.net"], ["setTTL", 20]]}}]}
        ]}),
    );
    let out = run(&[f.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "missing: request 1: call 3 missing: expected [\"setReasonCode\",\"A\"], the app made no more calls"
        ),
        "{text}"
    );
    assert!(
        text.contains("unexpected: request 1: call 2 unexpected: got [\"setTTL\",20]"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("1 passed, 2 failed"), "{text}");

    let out = run(&["--json", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(v["passed"], 1);
    assert_eq!(v["failed"], 2);
    assert_eq!(v["tests"][0]["name"], "missing");
    assert_eq!(v["tests"][0]["passed"], false);
    assert!(
        v["tests"][0]["failure"]
            .as_str()
            .unwrap()
            .contains("call 3 missing"),
        "{v}"
    );
    assert_eq!(v["tests"][2]["passed"], true);
    assert!(v["tests"][2].get("failure").is_none(), "{v}");
}

#[test]
fn sidecar_budget_is_used_unless_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let app = "function onRequest(q, r) { var t = Date.now(); while (Date.now() - t < 60) {} r.respondEmpty(); }";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [{"name": "slow", "requests": [{"expect": {"calls": [["respondEmpty"]]}}]}]}),
    );
    std::fs::write(dir.path().join("app.toml"), "budget_ms = 1\n").unwrap();
    let out = run_with_app_budget(&[f.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("onRequest ran past its time budget of 1 ms"),
        "{text}"
    );
    // --budget-ms wins over the sidecar.
    let out = run(&[f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));

    // The sidecar's memory budget too: a few MB, within the default 64 MB.
    let app = "function onRequest(q, r) { var a = []; for (var i = 0; i < 30000; i++) { a.push({i: i, s: 'x' + i}); }
  r.respondEmpty(); r.setReasonCode(String(a.length)); }";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [{"name": "big", "requests": [{"expect": {"reason": "30000"}}]}]}),
    );
    std::fs::remove_file(dir.path().join("app.toml")).unwrap();
    let out = run(&[f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    std::fs::write(dir.path().join("app.toml"), "memory_mb = 2\n").unwrap();
    let text = stdout(&run(&[f.to_str().unwrap()]));
    assert!(
        text.contains("allocated more than its memory budget of 2 MB"),
        "{text}"
    );

    // A sidecar the server would refuse is a broken fixture.
    std::fs::write(dir.path().join("app.toml"), "budget_ms = 0\n").unwrap();
    let text = stdout(&run(&[f.to_str().unwrap()]));
    assert!(
        text.contains("(fixture)") && text.contains("app.toml: budget_ms must be 1..=10000, got 0"),
        "{text}"
    );
}

#[test]
fn expected_ttl_is_what_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, "[[zone]]\nname = \"t.example\"\nttl = 33\n").unwrap();
    let app =
        "function onRequest(q, r) { r.respondEmpty(); if (q.market === 'set') { r.setTTL(30); } }";
    let f = fixture(
        dir.path(),
        app,
        serde_json::json!({"tests": [{"name": "ttl", "requests": [
            {"expect": {"ttl": 0}}, {"request": {"market": "set"}, "expect": {"ttl": 30}}]}]}),
    );
    let cfg = config.to_str().unwrap();
    // Sets the TTL the first request expects.
    let set = |ttl: u32| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        v["tests"][0]["requests"][0]["expect"]["ttl"] = ttl.into();
        std::fs::write(&f, v.to_string()).unwrap();
    };
    // No sidecar: the zone's default.
    set(33);
    let out = run(&["-c", cfg, f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    // `[apps.NAME]` in the config.
    std::fs::write(
        &config,
        "[[zone]]\nname = \"t.example\"\nttl = 33\n[apps.app]\nttl = 44\n",
    )
    .unwrap();
    set(44);
    let out = run(&["-c", cfg, f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    // The sidecar replaces it.
    std::fs::write(dir.path().join("app.toml"), "ttl = 45\n").unwrap();
    set(45);
    let out = run(&["-c", cfg, f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    set(44);
    let text = stdout(&run(&["-c", cfg, f.to_str().unwrap()]));
    assert!(
        text.contains("ttl: expected Some(44), got Some(45)"),
        "{text}"
    );
}

/// Issue #20: what openmixapplib's own tests feed an app runs here. A
/// `getData` value of any JSON type (a bare string for a broken Fusion
/// feed) reaches the app as given; a request field the Openmix API does not
/// define is a plain property of `request` and a warning, not an error; and
/// probe rows of providers the app did not declare are cut, as the server
/// cuts them.
#[test]
fn openmixapplib_style_fixtures_run_with_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let app = "function init(config) { config.requireProvider('a'); config.requireProvider('b'); }
function onRequest(request, response) {
  var fusion = request.getData('fusion');
  response.respond('a', 'a.example.net');
  response.setReasonCode([typeof fusion, typeof fusion === 'string' ? fusion : 'obj',
    request.custom_field, Object.keys(request.getProbe('avail') || {}).join('+')].join('|'));
}";
    let p = fixture(
        dir.path(),
        app,
        serde_json::json!({
            "tests": [{
                "name": "broken feed, extra field, undeclared provider",
                "requests": [{
                    "request": {"market": "EU", "custom_field": "yes"},
                    "probes": {"avail": {"a": {"avail": 90}, "z": {"avail": 100}, "b": {"avail": 80}}},
                    "data": {"fusion": "not json at all"},
                    "expect": {"reason": "string|not json at all|yes|a+b"}
                }, {
                    "request": {"market": "EU"},
                    "data": {"fusion": 42},
                    "expect": {"reason": "number|obj||"}
                }]
            }]
        }),
    );
    let out = run(&[p.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.trim_end().ends_with("1 passed, 0 failed"), "{text}");
    let warn = text
        .lines()
        .find(|l| l.starts_with("warn "))
        .unwrap_or_else(|| panic!("no warning: {text}"));
    assert!(
        warn.contains("\"custom_field\" is not an Openmix request field"),
        "{warn}"
    );
    // The JSON report carries the warning with its test.
    let out = run(&["--json", p.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], 1, "{v}");
    let warnings = v["tests"][0]["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{v}");
}
