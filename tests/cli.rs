//! The `switchyard` binary's one-shot commands: `decide` for every example
//! app and branch, `check`, `geo`, and their errors.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "error")
        .output()
        .expect("runs")
}

fn decide(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["decide"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Checks provider, reason, ttl and the answer values of one decision.
fn expect(args: &[&str], provider: &str, reason: &str, answers: &[&str]) -> serde_json::Value {
    let v = decide(args);
    assert_eq!(v["provider"], provider, "{args:?}: {v}");
    assert_eq!(v["reason"], reason, "{args:?}: {v}");
    assert_eq!(v["ttl"], 20, "{args:?}: {v}");
    let got: Vec<String> = v["answers"]
        .as_array()
        .expect("answers")
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["type"].as_str().unwrap(),
                a["value"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got, answers, "{args:?}: {v}");
    v
}

const P: &str = "examples/data/probes.json";

#[test]
fn best_rtt_branches() {
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--country",
            "DE",
            "--probe",
            P,
        ],
        "cdn_a",
        "A",
        &["CNAME cdn-a.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--country",
            "DE",
            "--probe",
            "examples/data/probes-cdn-a-down.json",
        ],
        "cdn_b",
        "A",
        &["CNAME cdn-b.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "SA",
            "--country",
            "BR",
            "--probe",
            "examples/data/probes-cdn-c-up.json",
        ],
        "cdn_c",
        "B",
        &["CNAME cdn-c.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "AS",
            "--country",
            "JP",
            "--probe",
            P,
        ],
        "cdn_b",
        "A",
        &["CNAME cdn-b.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--probe",
            "examples/data/probes-all-down.json",
        ],
        "origin",
        "C",
        &["CNAME origin.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--probe",
            "examples/data/probes-no-rtt.json",
        ],
        "cdn_b",
        "D",
        &["CNAME cdn-b.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--probe",
            "examples/data/no-probes.json",
        ],
        "origin",
        "E",
        &["CNAME origin.example.net"],
    );
    // Without --probe, the config's static probes, as the server uses them.
    expect(
        &["--app", "best-rtt", "--market", "EU"],
        "cdn_a",
        "A",
        &["CNAME cdn-a.example.net"],
    );
}

#[test]
fn geo_map_branches() {
    expect(
        &[
            "--app",
            "geo-map",
            "--asn",
            "64500",
            "--market",
            "NA",
            "--country",
            "US",
        ],
        "cdn_b",
        "A",
        &["A 198.51.100.20", "A 198.51.100.21"],
    );
    expect(
        &[
            "--app",
            "geo-map",
            "--market",
            "AS",
            "--country",
            "JP",
            "--qtype",
            "AAAA",
        ],
        "cdn_c",
        "B",
        &["AAAA 2001:db8::c:30"],
    );
    expect(
        &["--app", "geo-map", "--market", "EU", "--country", "IT"],
        "cdn_b",
        "C",
        &["A 198.51.100.20", "A 198.51.100.21"],
    );
    expect(
        &["--app", "geo-map", "--market", "SA", "--country", "BR"],
        "cdn_a",
        "D",
        &["A 192.0.2.10", "A 192.0.2.11"],
    );
}

#[test]
fn fusion_budget_branches() {
    let base = [
        "--app",
        "fusion-budget",
        "--market",
        "EU",
        "--country",
        "DE",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    expect(
        &with(&[
            "--probe",
            P,
            "--fusion",
            "examples/data/fusion.json",
            "--sonar",
            "examples/data/sonar.json",
        ]),
        "cdn_a",
        "A",
        &["CNAME cdn-a.example.net"],
    );
    expect(
        &with(&[
            "--probe",
            P,
            "--fusion",
            "examples/data/fusion.json",
            "--sonar",
            "examples/data/sonar-all-up.json",
        ]),
        "cdn_c",
        "A",
        &["CNAME cdn-c.example.net"],
    );
    expect(
        &with(&[
            "--probe",
            P,
            "--fusion",
            "examples/data/fusion-cdn-a-over.json",
            "--sonar",
            "examples/data/sonar.json",
        ]),
        "origin",
        "C",
        &["CNAME origin.example.net"],
    );
    expect(
        &with(&[
            "--probe",
            "examples/data/probes-no-rtt.json",
            "--fusion",
            "examples/data/fusion.json",
            "--sonar",
            "examples/data/sonar.json",
        ]),
        "cdn_a",
        "B",
        &["CNAME cdn-a.example.net"],
    );
}

#[test]
fn http_hosts_branches() {
    let v = expect(
        &[
            "--app",
            "http-hosts",
            "--market",
            "EU",
            "--country",
            "GB",
            "--probe",
            P,
        ],
        "cdn_a",
        "A",
        &["CNAME cdn-a.example.net"],
    );
    assert_eq!(v["status"], 200);
    assert_eq!(
        v["headers"],
        serde_json::json!([["X-Switchyard-App", "http-hosts"]])
    );
    assert_eq!(v["providers"][0]["provider"], "cdn_a");
    assert_eq!(v["providers"][0]["custom"]["http_rtt"], 38);
    assert_eq!(v["providers"][1]["provider"], "cdn_b");
    let v = expect(
        &[
            "--app",
            "http-hosts",
            "--market",
            "EU",
            "--country",
            "GB",
            "--probe",
            P,
            "--query",
            "fail=1",
        ],
        "denied",
        "C",
        &[],
    );
    assert_eq!(v["status"], 403);
    assert_eq!(v["providers"][0]["custom"]["blocked_by"], "query");
    let v = expect(
        &[
            "--app",
            "http-hosts",
            "--market",
            "EU",
            "--probe",
            P,
            "--header",
            "X-Block: yes",
        ],
        "denied",
        "C",
        &[],
    );
    assert_eq!(v["providers"][0]["custom"]["blocked_by"], "header");
    expect(
        &[
            "--app",
            "http-hosts",
            "--market",
            "EU",
            "--probe",
            "examples/data/probes-all-down.json",
        ],
        "origin",
        "B",
        &["CNAME origin.example.net"],
    );
}

#[test]
fn decide_uses_geo_from_ip_and_ecs() {
    let v = decide(&["--app", "geo-map", "--ip", "203.0.113.10"]);
    assert_eq!(v["request"]["ip_address"], "203.0.113.10");
    assert_eq!(
        v["request"]["client"]["market"],
        v["request"]["resolver"]["market"]
    );
    let v = decide(&[
        "--app",
        "geo-map",
        "--ip",
        "192.0.2.1",
        "--ecs",
        "198.51.100.0/24",
    ]);
    assert_eq!(v["request"]["ip_address"], "198.51.100.0");
    assert_eq!(v["request"]["resolver_ip_address"], "192.0.2.1");
}

#[test]
fn decide_serves_the_fallback_when_the_app_fails() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("broken.js");
    std::fs::write(
        &app,
        "function onRequest(q, r) {\n  throw new Error('nope');\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "fallback = [\"192.0.2.250\"]\nttl = 7\n",
    )
    .unwrap();
    let v = decide(&["--app", app.to_str().unwrap()]);
    assert_eq!(v["reason"], "fallback");
    assert_eq!(v["ttl"], 7);
    assert_eq!(v["answers"][0]["value"], "192.0.2.250");
    assert!(v["error"].as_str().unwrap().contains("broken.js:2"), "{v}");

    std::fs::remove_file(dir.path().join("broken.toml")).unwrap();
    let out = run(&["decide", "--app", app.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no fallback") && err.contains("nope"), "{err}");
}

#[test]
fn decide_errors_are_one_line_and_nonzero() {
    for (args, needle) in [
        (vec!["decide", "--app", "no-such-app"], "no such app file"),
        (
            vec!["decide", "--app", "best-rtt", "--probe", "Cargo.toml"],
            "invalid JSON",
        ),
        (
            vec!["decide", "--app", "best-rtt", "--qtype", "MX"],
            "--qtype",
        ),
        (
            vec![
                "decide",
                "--app",
                "best-rtt",
                "--config",
                "/nonexistent.toml",
            ],
            "cannot read",
        ),
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn check_reports_ok_warnings_and_errors() {
    let out = run(&[
        "check",
        "apps/best-rtt.js",
        "apps/geo-map.js",
        "apps/fusion-budget.js",
        "apps/http-hosts.js",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": ok").count(), 4, "{text}");
    assert!(
        text.contains("http-hosts.js: ok (providers: cdn_a, cdn_b, cdn_c, origin; cors: *"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.js");
    std::fs::write(&bad, "function onRequest(q, r) {\n  r.respond('a',\n}\n").unwrap();
    let warn = dir.path().join("warn.js");
    std::fs::write(&warn, "function onRequest(request, r) {\n  var t = request.query_type();\n  r.respondEmpty();\n}\n").unwrap();
    let out = run(&["check", bad.to_str().unwrap(), warn.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.js") && err.contains("line 3"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warn.js:2: warning: request.query_type is a string property"),
        "{text}"
    );
}
