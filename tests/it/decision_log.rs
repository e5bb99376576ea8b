//! The decision log over real DNS and HTTP (issue 25): sampled decisions
//! and every fallback appear in `GET /api/decisions/log` with the app,
//! provider and request they were made for, the filters and `since` work,
//! the JSON-lines file rotates with a snapshot line at the head of every
//! file, the snapshot an entry names is served, and the endpoints refuse
//! a missing token (401) and bad parameters (400).
//!
//! geo-map from 127.0.0.1 (no geo) answers its default branch: `cdn_a`,
//! reason D, A records 192.0.2.10 and 192.0.2.11.

use crate::common;
use crate::common::dnsclient;
use crate::common::http::Request;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::Value;

const TOKEN: &str = "change-me";

/// The example config's sample line, which tests edit.
const SAMPLE_LINE: &str = "decisions_sample = 0.01";

/// Throws on every request; its sidecar gives it a fallback.
const THROWER: &str = "function onRequest(request, response) {\n  throw new Error('boom');\n}\n";

/// Draws one random number and answers with it.
const DICE: &str = "function onRequest(request, response) {\n  response.respond('d', '203.0.113.' + Math.floor(Math.random() * 200 + 1));\n}\n";

fn ask(dns: SocketAddr, name: &str, id: u16) -> dnsclient::Reply {
    let sock = dnsclient::socket(Duration::from_secs(3));
    dnsclient::query(&sock, dns, name, RecordType::A, id).expect("an answer")
}

/// `GET path` on the operations listener with the token: (status, JSON).
fn api(admin: SocketAddr, path: &str) -> (u16, Value) {
    let r = Request::new(admin, "GET", path).token(Some(TOKEN)).send();
    (r.status, r.json_or_null())
}

/// The entries `query` lists, waiting up to 5 s for at least `n`.
fn entries(admin: SocketAddr, query: &str, n: usize) -> Vec<Value> {
    let mut last = Vec::new();
    common::wait::wait_for(Duration::from_secs(5), || {
        let (status, v) = api(admin, &format!("/api/decisions/log{query}"));
        assert_eq!(status, 200, "{v}");
        last = v["entries"].as_array().cloned().unwrap_or_default();
        last.len() >= n
    });
    last
}

fn with_apps(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut apps = common::apps::shipped_with_budget();
    apps.extend(extra.iter().map(|(f, t)| (f.to_string(), t.to_string())));
    apps
}

/// A server logging `sample` of the decisions; `file`: the file's size
/// limit in MB and the files kept, when it writes one.
fn server(sample: &str, file: Option<(&str, &str)>, apps: &[(&str, &str)]) -> common::Server {
    let mut edits = vec![(
        SAMPLE_LINE.to_string(),
        format!("decisions_sample = {sample}"),
    )];
    if let Some((max_mb, keep)) = file {
        edits.push(("# decisions_file = ".into(), "decisions_file = ".into()));
        edits.push((
            "decisions_file_max_mb = 64".into(),
            format!("decisions_file_max_mb = {max_mb}"),
        ));
        edits.push((
            "decisions_file_keep = 5".into(),
            format!("decisions_file_keep = {keep}"),
        ));
    }
    common::Server::start_with(common::Options {
        apps: Some(with_apps(apps)),
        config_edits: edits,
        ..Default::default()
    })
}

#[test]
fn every_decision_is_logged_at_sample_one_with_its_request_and_answer() {
    let s = server("1.0", None, &[("dice.js", DICE)]);
    let admin = s.admin.expect("operations listener");
    let reply = ask(s.dns, "www.geo-map.switchyard.test.", 7);
    assert_eq!(reply.answers, ["192.0.2.10", "192.0.2.11"]);
    let dice = ask(s.dns, "dice.switchyard.test.", 8);

    let http = s.http.expect("decision listener");
    let r = common::http::get(http, "/apps/geo-map/decision?q=1");
    assert_eq!(r.status, 200, "{}", r.body);

    let all = entries(admin, "", 3);
    let dns = all
        .iter()
        .find(|e| e["app"] == "geo-map" && e["transport"] == "dns")
        .unwrap_or_else(|| panic!("no DNS entry for geo-map: {all:?}"));
    assert_eq!(dns["decision"]["provider"], "cdn_a", "{dns}");
    assert_eq!(dns["decision"]["reason"], "D", "{dns}");
    assert_eq!(
        dns["decision"]["answers"][0]["value"], "192.0.2.10",
        "{dns}"
    );
    assert_eq!(dns["request"]["hostname_prefix"], "www", "{dns}");
    assert_eq!(dns["request"]["query_type"], "A", "{dns}");
    assert!(
        dns["how"]["kind"] == "ran" || dns["how"]["kind"] == "memo",
        "{dns}"
    );
    assert!(dns["id"].as_str().is_some_and(|id| !id.is_empty()), "{dns}");
    assert!(
        dns["version"]["hash"]
            .as_str()
            .is_some_and(|h| h.len() == 16),
        "{dns}"
    );
    if dns["how"]["kind"] == "ran" {
        let sources: Vec<&str> = dns["reads"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["source"].as_str())
            .collect();
        assert!(sources.iter().any(|s| s.starts_with("request.")), "{dns}");
    }

    let web = all
        .iter()
        .find(|e| e["app"] == "geo-map" && e["transport"] == "http")
        .unwrap_or_else(|| panic!("no HTTP entry for geo-map: {all:?}"));
    assert_eq!(
        web["request"]["query"],
        serde_json::json!([["q", "1"]]),
        "{web}"
    );
    assert_eq!(web["request"]["query_type"], "", "{web}");

    // The draw is recorded, and it is the one that made the answer.
    let d = all
        .iter()
        .find(|e| e["app"] == "dice")
        .unwrap_or_else(|| panic!("no dice entry: {all:?}"));
    let draw = d["draws"][0]
        .as_f64()
        .unwrap_or_else(|| panic!("no draw: {d}"));
    let expect = format!("203.0.113.{}", (draw * 200.0 + 1.0).floor());
    assert_eq!(d["decision"]["answers"][0]["value"], expect.as_str(), "{d}");
    assert_eq!(dice.answers, [expect]);

    // Newest first; filters.
    let times: Vec<i64> = all.iter().map(|e| e["time_ms"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let only = entries(admin, "?app=dice", 1);
    assert!(only.iter().all(|e| e["app"] == "dice"), "{only:?}");
    let by_provider = entries(admin, "?provider=cdn_a&reason=D", 1);
    assert!(!by_provider.is_empty());
    assert!(
        by_provider
            .iter()
            .all(|e| e["decision"]["provider"] == "cdn_a"),
        "{by_provider:?}"
    );
    let (_, none) = api(admin, "/api/decisions/log?provider=nobody");
    assert_eq!(none["entries"], serde_json::json!([]));
    let (_, one) = api(admin, "/api/decisions/log?limit=1");
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);

    // `since` an entry id: only what came after it.
    let newest = all[0]["id"].as_str().unwrap().to_string();
    let (status, after) = api(admin, &format!("/api/decisions/log?since={newest}"));
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["entries"], serde_json::json!([]));
    ask(s.dns, "geo-map.switchyard.test.", 9);
    let later = entries(admin, &format!("?since={newest}"), 1);
    assert!(
        later.iter().all(|e| e["id"] != newest.as_str()),
        "{later:?}"
    );
    let (_, future) = api(admin, "/api/decisions/log?since=2999-01-01T00:00:00Z");
    assert_eq!(future["entries"], serde_json::json!([]));

    // The snapshot an entry names is kept.
    let id = dns["snapshot"].as_str().unwrap();
    let (status, snap) = api(admin, &format!("/api/decisions/snapshots/{id}"));
    assert_eq!(status, 200, "{snap}");
    assert_eq!(snap["id"], id);
    assert!(snap["data"]["version"].is_u64(), "{snap}");
    let (status, _) = api(admin, "/api/decisions/snapshots/nope");
    assert_eq!(status, 404);
}

#[test]
fn fallbacks_are_logged_at_sample_zero_and_the_endpoints_check_their_input() {
    let s = server(
        "0.0",
        None,
        &[
            ("thrower.js", THROWER),
            ("thrower.toml", "fallback = \"192.0.2.99\"\n"),
        ],
    );
    let admin = s.admin.expect("operations listener");
    for i in 0..5 {
        assert_eq!(
            ask(s.dns, "geo-map.switchyard.test.", 20 + i).answers.len(),
            2
        );
    }
    assert_eq!(
        ask(s.dns, "thrower.switchyard.test.", 30).answers,
        ["192.0.2.99"]
    );

    let all = entries(admin, "", 1);
    assert!(
        all.iter().all(|e| e["app"] == "thrower"),
        "only the fallback: {all:?}"
    );
    let e = &all[0];
    assert_eq!(e["how"]["kind"], "fallback", "{e}");
    assert_eq!(e["how"]["error"], "error", "{e}");
    assert!(
        e["how"]["message"].as_str().unwrap().contains("boom"),
        "{e}"
    );
    assert_eq!(e["decision"]["reason"], "fallback", "{e}");
    assert_eq!(e["decision"]["answers"][0]["value"], "192.0.2.99", "{e}");
    let reason = entries(admin, "?reason=fallback", 1);
    assert_eq!(reason.len(), all.len());

    // No token: 401; bad parameters: 400 with a JSON error.
    let r = Request::new(admin, "GET", "/api/decisions/log").send();
    assert_eq!(r.status, 401, "{}", r.body);
    let r = Request::new(admin, "GET", "/api/decisions/snapshots/x").send();
    assert_eq!(r.status, 401, "{}", r.body);
    for bad in [
        "since=yesterday",
        "limit=0",
        "limit=x",
        "colour=red",
        "since=other-node-00000000-1",
    ] {
        let r = Request::new(admin, "GET", &format!("/api/decisions/log?{bad}"))
            .token(Some(TOKEN))
            .send();
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{bad}: {}", r.body);
    }
    let r = Request::new(admin, "POST", "/api/decisions/log")
        .token(Some(TOKEN))
        .send();
    assert_eq!(r.status, 405, "{}", r.body);

    let metrics = common::http::get(admin, "/metrics").body;
    let logged = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_decision_log_entries_total"))
        .unwrap_or_else(|| panic!("no entries counter:\n{metrics}"));
    assert!(!logged.ends_with(" 0"), "{logged}");
    assert!(
        metrics.contains("switchyard_decision_log_dropped_total"),
        "{metrics}"
    );
}

#[test]
fn the_default_sample_logs_a_few_decisions_and_every_fallback() {
    let s = server(
        "0.01",
        None,
        &[
            ("thrower.js", THROWER),
            ("thrower.toml", "fallback = \"192.0.2.99\"\n"),
        ],
    );
    let admin = s.admin.expect("operations listener");
    let sock = dnsclient::socket(Duration::from_secs(3));
    for i in 0..400u16 {
        dnsclient::query(&sock, s.dns, "geo-map.switchyard.test.", RecordType::A, i)
            .expect("an answer");
    }
    for i in 0..3u16 {
        ask(s.dns, "thrower.switchyard.test.", 1000 + i);
    }
    let thrown = entries(admin, "?app=thrower", 3);
    assert_eq!(thrown.len(), 3, "{thrown:?}");
    let (_, sampled) = api(admin, "/api/decisions/log?app=geo-map&limit=1000");
    let n = sampled["entries"].as_array().unwrap().len();
    // 1 % of 400: a few; all 400 would mean no sampling at all.
    assert!(n < 40, "{n} of 400 decisions logged at 1 %");
}

#[test]
fn the_log_file_rotates_and_every_file_carries_its_snapshots() {
    let s = server("1.0", Some(("0.004", "3")), &[]);
    let admin = s.admin.expect("operations listener");
    let sock = dnsclient::socket(Duration::from_secs(3));
    for i in 0..60u16 {
        dnsclient::query(&sock, s.dns, "geo-map.switchyard.test.", RecordType::A, i)
            .expect("an answer");
    }
    let data = s.dir.path().join("data");
    let files: Vec<_> = ["decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"]
        .iter()
        .map(|f| data.join(f))
        .collect();
    assert!(
        common::wait::wait_for(Duration::from_secs(5), || files.iter().all(|f| f.exists())),
        "rotated files missing: {:?}",
        std::fs::read_dir(&data).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    // The writer thread appends and rotates after the answers went out:
    // read the files once it has stopped changing them.
    let sizes = || {
        files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).ok())
            .collect::<Vec<_>>()
    };
    let mut last = sizes();
    assert!(
        common::wait::wait_for(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(200));
            let now = sizes();
            let settled = now == last && now.iter().all(Option::is_some);
            last = now;
            settled
        }),
        "the log files kept changing"
    );
    assert!(
        !data.join("decisions.jsonl.3").exists(),
        "more files than decisions_file_keep"
    );
    let entry_ids: Vec<Value> = entries(admin, "?limit=1", 1);
    let snapshot_id = entry_ids[0]["snapshot"].as_str().unwrap().to_string();
    for f in &files[1..] {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.len() >= 2, "{}: {text}", f.display());
        assert!(
            lines[0]["snapshot"].is_object(),
            "{} starts with {}",
            f.display(),
            lines[0]
        );
        let mut known = std::collections::HashMap::new();
        for line in &lines {
            if let Some(id) = line["snapshot"]["id"].as_str() {
                known.insert(id.to_string(), line["snapshot"]["data"].clone());
            } else {
                let id = line["snapshot"]
                    .as_str()
                    .expect("an entry names its snapshot");
                assert!(
                    known.contains_key(id),
                    "{}: entry before its snapshot",
                    f.display()
                );
                assert_eq!(line["app"], "geo-map");
            }
        }
        // What the endpoint serves is what the file holds.
        if let Some(data) = known.get(&snapshot_id) {
            let (status, snap) = api(admin, &format!("/api/decisions/snapshots/{snapshot_id}"));
            assert_eq!(status, 200);
            assert_eq!(&snap["data"], data, "{}", f.display());
        }
        assert!(
            text.len() < 64 * 1024,
            "{} grew past its limit",
            f.display()
        );
    }
}
