//! `switchyard replay` on a decision log a running server wrote: real DNS
//! and HTTP decisions of the shipped apps, logged with
//! `decisions_sample = 1.0`, decided again by the real binary. The version
//! that made them reproduces every one (the apps that break ties with
//! `Math.random` too, on their recorded draws); candidates that change in
//! a known way show exactly that change.
//!
//! HTTP clients get their market from `X-Forwarded-For` (the test config
//! trusts 127.0.0.1): 198.51.100.7 is GB/EU, 203.0.113.5 is JP/AS.

use crate::common;
use crate::common::{Options, Server, dnsclient};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::Value;

const APPS: [&str; 5] = [
    "best-rtt",
    "fusion-budget",
    "geo-map",
    "http-hosts",
    "weighted",
];

/// A server logging every decision to `data/decisions.jsonl`.
fn start() -> Server {
    Server::start_with(Options {
        apps: Some(common::apps::shipped_with_budget()),
        config_edits: vec![
            (
                "trusted_proxies = []".into(),
                r#"trusted_proxies = ["127.0.0.1"]"#.into(),
            ),
            (
                "decisions_sample = 0.01".into(),
                "decisions_sample = 1.0".into(),
            ),
            (
                "# decisions_file = \"decisions.jsonl\"".into(),
                "decisions_file = \"decisions.jsonl\"".into(),
            ),
        ],
        ..Options::default()
    })
}

/// Decisions of every shipped app over DNS and HTTP, from three places;
/// the number sent.
fn traffic(s: &Server) -> usize {
    let http = s.http.expect("a public listener");
    let sock = dnsclient::socket(Duration::from_secs(3));
    let mut sent = 0;
    for (n, app) in APPS.iter().enumerate() {
        for i in 0..3u16 {
            let name = format!("{app}.switchyard.test.");
            let id = (n as u16) * 100 + i + 1;
            assert!(
                dnsclient::query(&sock, s.dns, &name, RecordType::A, id).is_some(),
                "no DNS answer for {app}"
            );
            sent += 1;
        }
        for ip in ["198.51.100.7", "203.0.113.5", "127.0.0.1"] {
            for _ in 0..2 {
                let path = format!("/apps/{app}/decision");
                let r = common::http::Request::new(http, "GET", &path)
                    .header("X-Forwarded-For", ip)
                    .send();
                assert!(r.status != 0, "no HTTP answer for {app}");
                sent += 1;
            }
        }
    }
    sent
}

/// The log file once it holds at least `n` entries; its entries.
fn logged(s: &Server, n: usize) -> (PathBuf, Vec<Value>) {
    let file = s.dir.path().join("data").join("decisions.jsonl");
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("id").is_some())
            .collect()
    };
    let mut entries = Vec::new();
    // At least `n`, and no more arriving (retried probes are logged too).
    let done = common::wait::wait_for(Duration::from_secs(20), || {
        let before = entries.len();
        entries = read();
        entries.len() >= n && entries.len() == before
    });
    assert!(done, "{} of {n} entries logged", entries.len());
    (file, entries)
}

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("replay")
        .args(args)
        .output()
        .expect("run switchyard replay")
}

/// `replay --json` of `app` (a file) on `log`: the diff.
fn replay_json(config: &Path, app: &Path, extra: &[&str], log: &Path) -> Value {
    let mut args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "--app".to_string(),
        app.display().to_string(),
        "--json".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(log.display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = replay(&argv);
    assert!(
        out.status.success(),
        "replay {argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay --json prints JSON")
}

fn entries_of<'a>(entries: &'a [Value], app: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["app"] == app).collect()
}

#[test]
fn replay_reproduces_logged_decisions_and_shows_known_changes() {
    let s = start();
    assert!(
        common::wait::wait_for(Duration::from_secs(10), || {
            let sock = dnsclient::socket(Duration::from_secs(2));
            dnsclient::query(&sock, s.dns, "geo-map.switchyard.test.", RecordType::A, 9)
                .is_some_and(|r| !r.answers.is_empty())
        }),
        "the server never answered"
    );
    let sent = traffic(&s) + 1;
    let (log, entries) = logged(&s, sent);
    let config = s.dir.path().join("switchyard.toml");

    // The versions that made them: nothing changes.
    for app in APPS {
        let n = entries_of(&entries, app).len() as u64;
        assert!(n >= 9, "{app}: {n} entries");
        let v = replay_json(&config, &s.apps.join(format!("{app}.js")), &[], &log);
        let d = &v["diff"];
        assert_eq!(d["total"], n, "{app}: {v}");
        assert_eq!(d["changed"], 0, "{app} changed on replay: {v}");
        assert_eq!(d["failed"], 0, "{app}: {v}");
        assert_eq!(v["read"]["ran_out_of_draws"], 0, "{app}: {v}");
    }

    // A best-rtt that always picks cdn_b: every row goes to cdn_b, and
    // exactly the entries that were not cdn_b change.
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string(s.apps.join("best-rtt.js")).unwrap();
    let sidecar = std::fs::read_to_string(s.apps.join("best-rtt.toml")).unwrap();
    let always_b = dir.path().join("best-rtt.js");
    let anchor = "        if (decisionProvider === undefined) {";
    assert!(source.contains(anchor));
    std::fs::write(
        &always_b,
        source.replacen(
            anchor,
            &format!("        decisionProvider = 'cdn_b';\n{anchor}"),
            1,
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("best-rtt.toml"), &sidecar).unwrap();
    let best = entries_of(&entries, "best-rtt");
    let not_b = best
        .iter()
        .filter(|e| e["decision"]["provider"] != "cdn_b")
        .count();
    assert!(
        not_b > 0,
        "every logged best-rtt decision was cdn_b already"
    );
    let v = replay_json(&config, &always_b, &["--examples", "3"], &log);
    let d = &v["diff"];
    assert_eq!(d["total"], best.len(), "{v}");
    assert_eq!(d["changed"], not_b, "{v}");
    for m in d["providers"]["rows"].as_array().unwrap() {
        assert_eq!(m["to"], "cdn_b", "{m}");
    }
    assert_eq!(
        d["examples"].as_array().map(Vec::len),
        Some(3.min(not_b)),
        "{d}"
    );
    assert!(
        d["examples"][0]["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );

    // One that throws in EU, under another file name (--for): the EU
    // entries fail to its fallback, the rest are unchanged.
    let no_eu = dir.path().join("candidate.js");
    let anchor = "    this.handle_request = function(request, response) {\n";
    assert!(source.contains(anchor));
    std::fs::write(
        &no_eu,
        source.replacen(
            anchor,
            &format!("{anchor}        if (request.market === 'EU') {{ throw new Error('no EU plan'); }}\n"),
            1,
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("candidate.toml"), &sidecar).unwrap();
    let eu = best
        .iter()
        .filter(|e| e["request"]["client"]["market"] == "EU")
        .count();
    assert!(eu >= 2, "EU entries: {eu}");
    let v = replay_json(&config, &no_eu, &["--for", "best-rtt"], &log);
    let d = &v["diff"];
    assert_eq!(
        (d["failed"].clone(), d["changed"].clone()),
        (eu.into(), eu.into()),
        "{v}"
    );
    let f = &d["failures"]["rows"][0];
    assert!(f["message"].as_str().unwrap().contains("no EU plan"), "{f}");
    for m in d["markets"]["rows"].as_array().unwrap() {
        assert_eq!(
            (m["place"].as_str(), m["to"].as_str()),
            (Some("EU"), Some("fallback")),
            "{m}"
        );
    }
    for m in d["countries"]["rows"].as_array().unwrap() {
        assert_eq!(m["place"], "GB", "{m}");
    }

    // The readable form says the same.
    let out = replay(&[
        "--config",
        config.to_str().unwrap(),
        "--app",
        no_eu.to_str().unwrap(),
        "--for",
        "best-rtt",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("changed: {eu} of {}", best.len())),
        "{text}"
    );
    assert!(
        text.contains("no EU plan") && text.contains("by market"),
        "{text}"
    );
}

#[test]
fn replay_skips_bad_lines_and_fails_only_on_real_errors() {
    let s = start();
    let http = s.http.expect("a public listener");
    assert!(common::wait::wait_for(Duration::from_secs(10), || {
        common::http::get(http, "/apps/geo-map/decision").status == 200
    }));
    let (log, _) = logged(&s, 1);
    let config = s.dir.path().join("switchyard.toml");
    let dir = tempfile::tempdir().unwrap();
    // A copy with a broken line in the middle.
    let text = std::fs::read_to_string(&log).unwrap();
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, format!("{text}{{not json\n{text}")).unwrap();
    let bad_at = text.lines().count() + 1;
    let app = s.apps.join("geo-map.js");
    let out = replay(&[
        "--config",
        config.to_str().unwrap(),
        "--app",
        app.to_str().unwrap(),
        "--json",
        broken.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:{bad_at}:", broken.display())),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = 2 * text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["app"] == "geo-map")
        .count();
    assert_eq!(v["diff"]["total"], n, "{v}");
    assert_eq!(v["read"]["bad_lines"], 1, "{v}");

    // An unreadable file, a candidate that does not compile: exit 1, one line.
    let missing = dir.path().join("missing.jsonl");
    let out = replay(&["--app", app.to_str().unwrap(), missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.jsonl") && err.trim().lines().count() == 1,
        "{err}"
    );
    let bad = dir.path().join("geo-map.js");
    std::fs::write(&bad, "function onRequest(q, r) {\n  r.respond(;\n}\n").unwrap();
    let out = replay(&["--app", bad.to_str().unwrap(), log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("geo-map.js:2"), "{err}");
}
