//! The leaderboard stats API over real HTTP: the `switchyard` binary with
//! its operations listener, once on SQLite and once on PostgreSQL (when
//! `SWITCHYARD_TEST_POSTGRES` holds a URL; the server gets a fresh schema
//! through the URL's `options[search_path]`, so parallel runs never meet).
//! Signed posts go in, hand-computed aggregates come out, and every kind of
//! bad post is refused with nothing stored.

use crate::common;
use common::http::{Reply, Request};
use common::pg::PgSchema;

use std::net::SocketAddr;

use serde_json::{Value, json};

const SECRET: &str = "http-story-secret";
/// Mixed case on purpose: stored lower-case, queried case-insensitively.
const A: &str = "0xAaA0000000000000000000000000000000000001";
const B: &str = "0xbbb0000000000000000000000000000000000002";
/// Only ever in refused posts.
const REJECTED: &str = "0xdead000000000000000000000000000000000003";

fn post_raw(addr: SocketAddr, auth: Option<&str>, body: &[u8]) -> Reply {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    Request::new(addr, "POST", "/api/post_stats")
        .headers(&headers)
        .body(body)
        .send()
}

/// Posts `body` signed with the right secret.
fn post(addr: SocketAddr, body: &str) -> Reply {
    let sig = switchyard::stats::sign(SECRET.as_bytes(), body.as_bytes());
    post_raw(addr, Some(&sig), body.as_bytes())
}

/// A 200 JSON read, with the spec's headers.
#[track_caller]
fn get(addr: SocketAddr, path: &str) -> Value {
    let r = Request::new(addr, "GET", path).send();
    assert_eq!(r.status, 200, "GET {path}: {}{}", r.head, r.body);
    let head = r.head.to_ascii_lowercase();
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(
        head.contains("cache-control: public, max-age=30, stale-while-revalidate=15"),
        "{head}"
    );
    r.json()
}

fn record(orch: &str, region: &str, ts: u64, sr: f64, seg: f64, rtt: f64) -> String {
    json!({
        "region": region, "orchestrator": orch, "timestamp": ts,
        "segments_sent": 10, "segments_received": 10,
        "success_rate": sr, "seg_duration": seg, "round_trip_time": rtt,
        "upload_time": 0.5, "download_time": 0.25, "transcode_time": 0.75,
        "errors": [{"error_code": "timeout", "count": 2}, "refused"],
    })
    .to_string()
}

#[track_caller]
fn close(got: &Value, want: f64, what: &str) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    // The spec gives six digits; its worked values are rounded to about that.
    assert!((g - want).abs() < 1e-5, "{what}: got {g}, want {want}");
}

/// Checks a row against the spec's formulas, under both names of each score.
#[track_caller]
fn row(v: &Value, sr: f64, rts: f64, score: f64, what: &str) {
    let keys: Vec<&String> = v.as_object().expect("row object").keys().collect();
    assert_eq!(
        keys,
        [
            "latency_score",
            "round_trip_score",
            "score",
            "success_rate",
            "total_score"
        ],
        "{what}: the public row's keys, sorted"
    );
    close(&v["success_rate"], sr, &format!("{what} success_rate"));
    close(
        &v["round_trip_score"],
        rts,
        &format!("{what} round_trip_score"),
    );
    close(&v["latency_score"], rts, &format!("{what} latency_score"));
    close(&v["score"], score, &format!("{what} score"));
    close(&v["total_score"], score, &format!("{what} total_score"));
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The whole API story against one running server.
fn story(server: &common::Server) {
    let ops = server.admin.expect("ops listener");
    let now = now();
    let a = A.to_lowercase();
    let b = B.to_lowercase();

    // Known posts. Worked values from the spec: (seg 2.00886, rtt 1.94704,
    // sr 1) → 0.643616; (seg 2.08047, rtt 0.634866, sr 1) → 0.962259.
    let posts = [
        record(A, "FRA", now - 600, 1.0, 2.00886, 1.94704),
        record(A, "mdw", now - 500, 0.8, 2.0, 1.0),
        record(A, "MDW", now - 400, 1.0, 2.0, 3.0),
        record(B, "FRA", now - 300, 1.0, 2.08047, 0.634866),
        // Two days old: outside the default 24 h window.
        record(A, "FRA", now - 2 * 86_400, 0.0, 2.00886, 1.94704),
    ];
    for p in &posts {
        let r = post(ops, p);
        assert_eq!(r.status, 200, "{p}: {}{}", r.head, r.body);
        assert_eq!(r.body, "ok");
    }

    // Default window: the last 24 h.
    let agg = get(ops, "/api/aggregated_stats");
    assert_eq!(keys(&agg), [a.clone(), b.clone()], "{agg}");
    assert_eq!(keys(&agg[&a]), ["FRA", "MDW"], "{agg}");
    assert_eq!(keys(&agg[&b]), ["FRA"], "{agg}");
    row(&agg[&a]["FRA"], 1.0, 0.643616, 0.643616, "A FRA");
    // MDW: sr mean 0.9, seg 2, rtt mean 2 → 1 − e⁻¹ = 0.632121; × 0.9.
    row(&agg[&a]["MDW"], 0.9, 0.632121, 0.568909, "A MDW");
    row(&agg[&b]["FRA"], 1.0, 0.962259, 0.962259, "B FRA");

    // `until` only: everything before it, so the old post counts too:
    // sr (1 + 0)/2, the same seg and rtt means.
    let all = get(ops, &format!("/api/aggregated_stats?until={}", now + 60));
    row(
        &all[&a]["FRA"],
        0.5,
        0.643616,
        0.321808,
        "A FRA, until only",
    );
    row(
        &all[&a]["MDW"],
        0.9,
        0.632121,
        0.568909,
        "A MDW, until only",
    );

    // `since` only: the last MDW post alone: 1 − e^(−2/3) = 0.486583.
    let recent = get(ops, &format!("/api/aggregated_stats?since={}", now - 450));
    assert_eq!(keys(&recent[&a]), ["MDW"], "{recent}");
    row(&recent[&a]["MDW"], 1.0, 0.486583, 0.486583, "A MDW since");
    // Both bounds, inclusive, fractional.
    let exact = get(
        ops,
        &format!(
            "/api/aggregated_stats?since={}.0&until={}.0",
            now - 500,
            now - 500
        ),
    );
    // (sr 0.8, seg 2, rtt 1): 1 − e⁻² = 0.864665; × 0.8.
    row(&exact[&a]["MDW"], 0.8, 0.864665, 0.691732, "A MDW exact");

    // Filters, case-insensitive.
    let only_a = get(
        ops,
        &format!(
            "/api/aggregated_stats?orchestrator={}",
            A.to_uppercase().replace("0X", "0x")
        ),
    );
    assert_eq!(keys(&only_a), std::slice::from_ref(&a), "{only_a}");
    let only_mdw = get(ops, "/api/aggregated_stats?region=mdw");
    assert_eq!(keys(&only_mdw), std::slice::from_ref(&a), "{only_mdw}");
    assert_eq!(keys(&only_mdw[&a]), ["MDW"], "{only_mdw}");
    assert_eq!(
        get(ops, "/api/aggregated_stats?orchestrator=0xnobody"),
        json!({})
    );
    let bad = Request::new(ops, "GET", "/api/aggregated_stats?since=yesterday").send();
    assert!(bad.error(400).contains("since"), "{}", bad.body);

    // Raw records, newest first, per region.
    let raw = get(ops, &format!("/api/raw_stats?orchestrator={A}"));
    assert_eq!(keys(&raw), ["FRA", "MDW"], "{raw}");
    let ts = |v: &Value| -> Vec<f64> {
        v.as_array()
            .expect("records")
            .iter()
            .map(|r| r["timestamp"].as_f64().expect("timestamp"))
            .collect()
    };
    assert_eq!(ts(&raw["FRA"]), [(now - 600) as f64]);
    assert_eq!(ts(&raw["MDW"]), [(now - 400) as f64, (now - 500) as f64]);
    let first = &raw["MDW"][0];
    assert_eq!(first["orchestrator"], a.as_str());
    assert_eq!(first["region"], "MDW");
    close(&first["round_trip_time"], 3.0, "raw round_trip_time");
    close(&first["transcode_time"], 0.75, "raw transcode_time");
    assert_eq!(
        first["errors"],
        json!([{"count": 2, "error_code": "timeout"}, {"count": 1, "error_code": "refused"}])
    );
    let raw_all = get(
        ops,
        &format!("/api/raw_stats?orchestrator={a}&region=fra&until={}", now),
    );
    assert_eq!(keys(&raw_all), ["FRA"]);
    assert_eq!(
        ts(&raw_all["FRA"]),
        [(now - 600) as f64, (now - 2 * 86_400) as f64]
    );
    let missing = Request::new(ops, "GET", "/api/raw_stats").send();
    assert_eq!(missing.error(400), "orchestrator is a required parameter");

    // Regions: the default list.
    let regions = get(ops, "/api/regions");
    let list = regions["regions"].as_array().expect("regions list");
    assert_eq!(list.len(), 22, "{regions}");
    let fra = list.iter().find(|r| r["id"] == "FRA").expect("FRA listed");
    assert_eq!(fra["name"], "Frankfurt");
    close(&fra["lat"], 50.1109, "FRA lat");
    close(&fra["lon"], 8.6821, "FRA lon");

    refusals(ops, now);
    pages_and_retries(ops, now);
}

/// Issue 29 over real HTTP: `/api/raw_stats` pages with `limit` and
/// `cursor`; a post retried with its `Idempotency-Key` is stored once; a
/// body naming a key twice is refused.
fn pages_and_retries(ops: SocketAddr, now: u64) {
    let ts = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap_or_else(|| panic!("records: {v}"))
            .iter()
            .map(|r| r["timestamp"].as_f64().expect("timestamp"))
            .collect()
    };
    let a = A.to_lowercase();
    let first = get(
        ops,
        &format!("/api/raw_stats?orchestrator={a}&region=fra&until={now}&limit=1"),
    );
    assert_eq!(ts(&first["FRA"]), [(now - 600) as f64], "{first}");
    let next = first["next"].as_str().expect("a next cursor").to_string();
    let second = get(
        ops,
        &format!("/api/raw_stats?orchestrator={a}&region=fra&until={now}&limit=1&cursor={next}"),
    );
    assert_eq!(ts(&second["FRA"]), [(now - 2 * 86_400) as f64], "{second}");
    assert!(second.get("next").is_none(), "{second}");

    const C: &str = "0xccc0000000000000000000000000000000000004";
    let body = record(C, "MDW", now - 60, 1.0, 1.0, 1.0);
    let sig = switchyard::stats::sign(SECRET.as_bytes(), body.as_bytes());
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", sig.as_str()),
        ("Idempotency-Key", "client-7-post-42"),
    ];
    for attempt in 0..3 {
        let r = Request::new(ops, "POST", "/api/post_stats")
            .headers(&headers)
            .body(body.as_bytes())
            .send();
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "ok"),
            "attempt {attempt}"
        );
        let replayed = r
            .head
            .to_ascii_lowercase()
            .contains("idempotent-replayed: true");
        assert_eq!(replayed, attempt > 0, "{}", r.head);
    }
    let stored = get(ops, &format!("/api/raw_stats?orchestrator={C}&until={now}"));
    assert_eq!(
        ts(&stored["MDW"]),
        [(now - 60) as f64],
        "stored once: {stored}"
    );

    let dup = body.replacen(
        "\"success_rate\":1.0",
        "\"success_rate\":1.0,\"success_rate\":0.0",
        1,
    );
    assert_ne!(dup, body);
    let sig = switchyard::stats::sign(SECRET.as_bytes(), dup.as_bytes());
    let msg = post_raw(ops, Some(&sig), dup.as_bytes()).error(400);
    assert!(
        msg.contains("success_rate") && msg.contains("twice"),
        "{msg}"
    );
}

/// Every bad post is refused, and nothing it carried is stored.
fn refusals(ops: SocketAddr, now: u64) {
    let everything = format!("/api/aggregated_stats?until={}", now + 3600);
    let raw_rejected = format!(
        "/api/raw_stats?orchestrator={REJECTED}&until={}",
        now + 3600
    );
    let before = get(ops, &everything);
    let good = record(REJECTED, "FRA", now - 10, 1.0, 2.0, 1.0);

    // Signed with another key, unsigned, or not hex.
    let wrong = switchyard::stats::sign(b"not-the-secret", good.as_bytes());
    for auth in [Some(wrong.as_str()), None, Some("zz-not-hex")] {
        let r = post_raw(ops, auth, good.as_bytes());
        assert_eq!(r.error(403), "request can not be authenticated", "{auth:?}");
    }
    // Signed, then altered in flight (same length).
    let sig = switchyard::stats::sign(SECRET.as_bytes(), good.as_bytes());
    let altered = good.replace("\"success_rate\":1.0", "\"success_rate\":0.1");
    assert_ne!(altered, good, "the alteration must change the body");
    assert_eq!(altered.len(), good.len());
    let r = post_raw(ops, Some(&sig), altered.as_bytes());
    assert_eq!(r.error(403), "request can not be authenticated");

    // Signed but bad: JSON, types, fields. Each 400 names the field.
    let signed_400 = |body: String, field: &str| {
        let r = post(ops, &body);
        let msg = r.error(400);
        assert!(msg.contains(field), "{body}: {msg:?} should name {field}");
    };
    signed_400(
        format!("{{\"region\":\"FRA\",\"orchestrator\":\"{REJECTED}\""),
        "JSON",
    );
    signed_400("[1, 2]".into(), "object");
    let mut v: Value = serde_json::from_str(&good).unwrap();
    for field in ["region", "orchestrator"] {
        let mut m = v.clone();
        m.as_object_mut().unwrap().remove(field);
        signed_400(m.to_string(), field);
        let mut blank = v.clone();
        blank[field] = json!("  ");
        signed_400(blank.to_string(), field);
    }
    for (field, bad) in [
        ("region", json!("XYZ")),
        ("region", json!(7)),
        ("orchestrator", json!(["0x1"])),
        ("timestamp", json!("now")),
        ("success_rate", json!(91.5)),
        ("success_rate", json!(-0.1)),
        ("round_trip_time", json!("fast")),
        ("seg_duration", json!(-2.0)),
        ("segments_sent", json!(1.5)),
        ("errors", json!("none")),
        ("errors[0].count", json!([{"error_code": "x", "count": -1}])),
    ] {
        let mut m = v.clone();
        let key = field.split('[').next().unwrap();
        m[key] = bad;
        signed_400(m.to_string(), field);
    }

    // Over 64 KiB: 413, whether declared up front or sent.
    v["padding"] = json!("x".repeat(70 * 1024));
    let big = v.to_string();
    let r = post(ops, &big);
    assert_eq!(r.status, 413, "{}{}", r.head, r.body);
    assert!(r.error(413).contains("larger than"), "{}", r.body);

    // Nothing of the above was stored.
    assert_eq!(
        get(ops, &raw_rejected),
        json!({}),
        "a refused post was stored"
    );
    assert_eq!(
        get(ops, &everything),
        before,
        "a refused post changed the aggregate"
    );

    // The same record, correctly signed (upper-case hex), is accepted:
    // the refusals above were about the posts, not the record.
    let upper = switchyard::stats::sign(SECRET.as_bytes(), good.as_bytes()).to_uppercase();
    let r = post_raw(ops, Some(&upper), good.as_bytes());
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    let raw = get(ops, &raw_rejected);
    assert_eq!(raw["FRA"].as_array().map(Vec::len), Some(1), "{raw}");
}

fn start(env: Vec<(String, String)>) -> common::Server {
    let mut env = env;
    env.push(("SECRET".into(), SECRET.into()));
    common::Server::start_with(common::Options {
        env,
        // No refresher: this test is about the API alone.
        config_edits: vec![("source = \"local\"".into(), "source = \"off\"".into())],
        ..Default::default()
    })
}

#[test]
fn http_story_sqlite() {
    // An empty POSTGRES counts as unset, whatever the environment holds.
    let server = start(vec![("POSTGRES".into(), String::new())]);
    assert!(
        server.logged("stats store: SQLite"),
        "{:?}",
        server.log.lock().unwrap()
    );
    story(&server);
    assert!(
        server.dir.path().join("data/stats.db").exists(),
        "stats.db in the data dir"
    );
}

#[test]
fn http_story_postgres() {
    let Some(pg) = PgSchema::new("HTTP story", "switchyard_http") else {
        return;
    };
    let server = start(pg.env());
    assert!(
        server.logged("stats store: PostgreSQL"),
        "{:?}",
        server.log.lock().unwrap()
    );
    story(&server);
    // The rows really are in the test schema: 5 story posts, 1 accepted at
    // the end of the refusals, 1 posted three times with one idempotency key.
    let counted: i64 = pg
        .rt
        .block_on(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM \"{}\".stats_events",
                pg.schema
            )))
            .fetch_one(&pg.pool),
        )
        .expect("count rows");
    assert_eq!(counted, 7);
}

/// `leaderboard.window_secs` is the default read window, and
/// `leaderboard.extra_regions` extends the default region list.
#[test]
fn window_and_extra_regions_come_from_config() {
    let server = common::Server::start_with(common::Options {
        env: vec![
            ("SECRET".into(), SECRET.into()),
            ("POSTGRES".into(), String::new()),
        ],
        config_edits: vec![
            ("source = \"local\"".into(), "source = \"off\"".into()),
            ("window_secs = 86400".into(), "window_secs = 3600".into()),
        ],
        extra_config: "[[leaderboard.extra_regions]]\ncode = \"waw\"\nname = \"Warsaw\"\n\
                       lat = 52.2297\nlon = 21.0122\nmarkets = [\"EU\"]\ncountries = [\"PL\"]\n"
            .into(),
        ..Default::default()
    });
    let ops = server.admin.expect("ops listener");
    let now = now();

    // 23 regions: the 22 defaults in order, then the extra one, normalised.
    let regions = get(ops, "/api/regions");
    let list = regions["regions"].as_array().expect("regions list");
    assert_eq!(list.len(), 23, "{regions}");
    assert_eq!(list[0]["id"], "GLOBAL");
    assert_eq!(list[22]["id"], "WAW");
    assert_eq!(list[22]["name"], "Warsaw");
    assert_eq!(list[22]["countries"], json!(["PL"]));

    // Posts to the extra region are accepted.
    let old = record(A, "waw", now - 7200, 0.5, 2.0, 1.0);
    let fresh = record(A, "WAW", now - 60, 1.0, 2.0, 1.0);
    for p in [&old, &fresh] {
        let r = post(ops, p);
        assert_eq!(r.status, 200, "{p}: {}{}", r.head, r.body);
    }
    // Default window 1 h: only the fresh post. 1 − e⁻² = 0.864665.
    let a = A.to_lowercase();
    let agg = get(ops, "/api/aggregated_stats");
    assert_eq!(keys(&agg[&a]), ["WAW"], "{agg}");
    row(&agg[&a]["WAW"], 1.0, 0.864665, 0.864665, "WAW, 1 h window");
    // An explicit window still reaches the older one.
    let both = get(
        ops,
        &format!("/api/aggregated_stats?since={}", now - 10_000),
    );
    row(&both[&a]["WAW"], 0.75, 0.864665, 0.648499, "WAW, since");
    let raw = get(ops, &format!("/api/raw_stats?orchestrator={a}"));
    assert_eq!(raw["WAW"].as_array().map(Vec::len), Some(1), "{raw}");
}
