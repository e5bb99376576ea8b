//! Issue 12: decision reports and the fleet, end to end over real HTTP and
//! DNS against the real server: the endpoints with hand-computed window
//! sums on SQLite and on PostgreSQL (`SWITCHYARD_TEST_POSTGRES`, a fresh
//! schema per test), every bad payload refused with nothing stored, DNS
//! and HTTP decisions reaching the API and `/metrics`, a node pushing to
//! another over HTTP, counting switched off, a fleet of three nodes on
//! one PostgreSQL (totals, SIGKILL, drift), and the dashboard in headless
//! Chromium driven over WebDriver (chromedriver).
//!
//! Windows are placed with `GET …?now=` (the documented testing aid) and
//! buckets with explicit times in `POST /api/decisions`.

use crate::common;
use crate::common::dnsclient;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{Reply, TOKEN, request};
use common::pg::{PgSchema, unique};
use common::{Options, Server};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use switchyard::report::Reports;
use switchyard::report::store::{BucketReport, Registration, ReportStore};

/// Steers by the name's prefix: `b.mix` → cdn_b (reason B), else cdn_a (A).
const MIX_APP: &str = r#"
function init(config) {
    config.requireProvider('cdn_a');
    config.requireProvider('cdn_b');
}
function onRequest(request, response) {
    if (request.hostname_prefix === 'b') {
        response.respond('cdn_b', 'cdn-b.example.net');
        response.setReasonCode('B');
    } else {
        response.respond('cdn_a', 'cdn-a.example.net');
        response.setReasonCode('A');
    }
}
"#;

fn admin(s: &Server) -> SocketAddr {
    s.admin.expect("admin listener")
}

fn get(s: &Server, path: &str) -> Value {
    request(admin(s), "GET", path, None, b"").ok()
}

fn post(s: &Server, path: &str, body: &Value) -> Reply {
    request(
        admin(s),
        "POST",
        path,
        Some(TOKEN),
        body.to_string().as_bytes(),
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap()
}

/// A node: the mix app (optionally edited), its own fleet and node id,
/// `postgres` or SQLite, reporting every `interval_ms` (`None`: the
/// default, 10 s).
fn node(
    fleet: &str,
    id: &str,
    postgres: Option<&str>,
    interval_ms: Option<u64>,
    mix: &str,
) -> Server {
    Server::start_with(node_options(fleet, id, postgres, interval_ms, mix))
}

/// The options `node` starts a node with.
fn node_options(
    fleet: &str,
    id: &str,
    postgres: Option<&str>,
    interval_ms: Option<u64>,
    mix: &str,
) -> Options {
    Options {
        apps: Some(vec![("mix.js".into(), mix.into())]),
        env: vec![
            ("POSTGRES".into(), postgres.unwrap_or("").into()),
            ("SWITCHYARD_FLEET".into(), fleet.into()),
            ("SWITCHYARD_NODE".into(), id.into()),
        ],
        extra_config: interval_ms
            .map(|ms| format!("[reports]\ninterval_ms = {ms}\n"))
            .unwrap_or_default(),
        ..Options::default()
    }
}

/// Node `edge` of `fleet` on SQLite, serving MIX_APP and pushing its
/// reports to `hub` over HTTP every `interval_ms`.
fn edge_pushing_to(hub: &Server, fleet: &str, interval_ms: u64) -> Server {
    let mut options = node_options(fleet, "edge", None, Some(interval_ms), MIX_APP);
    options
        .extra_config
        .push_str(&format!("push_url = \"http://{}\"\n", admin(hub)));
    Server::start_with(options)
}

/// Sends `n` queries for `prefix.mix` and checks each answered.
fn queries(s: &Server, prefix: &str, n: usize) {
    let sock = dnsclient::socket(Duration::from_secs(5));
    let name = format!("{prefix}.mix.switchyard.test.");
    for i in 0..n {
        let r = dnsclient::query(&sock, s.dns, &name, RecordType::A, i as u16 + 1)
            .unwrap_or_else(|| panic!("no DNS reply for {name}"));
        assert!(!r.answers.is_empty(), "{name}: {r:?}");
    }
}

fn total(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::Object(m) => m.values().map(total).sum(),
        _ => 0,
    }
}

/// Waits (≤ `limit`) until `f` holds, returning how long it took.
#[track_caller]
fn wait_for(what: &str, limit: Duration, f: &mut dyn FnMut() -> bool) -> Duration {
    let start = Instant::now();
    assert!(
        common::wait::wait_for(limit, f),
        "{what}: not within {limit:?}"
    );
    start.elapsed()
}

fn bucket(fleet: &str, node: &str, stop: i64, apps: Value) -> Value {
    json!({"fleet": fleet, "node": node, "bucket": {"start": stop - 10_000, "stop": stop, "apps": apps}})
}

/// The report tables' rows as the database holds them, read past the
/// server and its in-memory view: every bucket and every node, in a
/// stable order, one line each.
fn db_rows(s: &Server, pg: Option<&PgSchema>) -> Vec<String> {
    let queries = |prefix: &str| {
        [
            format!(
                "SELECT CAST(id AS TEXT) || ' ' || fleet || ' ' || node || ' ' || \
                 CAST(start_ms AS TEXT) || ' ' || CAST(stop_ms AS TEXT) || ' ' || counts \
                 FROM {prefix}report_buckets ORDER BY id"
            ),
            format!(
                "SELECT fleet || ' ' || node || ' ' || COALESCE(ip, '') || ' ' || apps || ' ' || \
                 CAST(last_seen AS TEXT) || ' ' || COALESCE(CAST(last_push AS TEXT), '') \
                 FROM {prefix}report_nodes ORDER BY fleet, node"
            ),
        ]
    };
    match pg {
        Some(pg) => queries(&format!("\"{}\".", pg.schema))
            .into_iter()
            .flat_map(|q| {
                pg.rt
                    .block_on(
                        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q)).fetch_all(&pg.pool),
                    )
                    .expect("read the report tables")
            })
            .collect(),
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(s.dir.path().join("data/stats.db"))
                .read_only(true);
            let pool = rt
                .block_on(sqlx::SqlitePool::connect_with(options))
                .expect("open the server's SQLite file");
            queries("")
                .into_iter()
                .flat_map(|q| {
                    rt.block_on(
                        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q)).fetch_all(&pool),
                    )
                    .expect("read the report tables")
                })
                .collect()
        }
    }
}

/// The endpoint story, on whichever store the server has.
fn story(pg: Option<&PgSchema>) {
    let fleet = unique("fleet");
    let url = pg.map(PgSchema::url);
    let s = node(&fleet, "self", url.as_deref(), Some(3_600_000), MIX_APP);
    let t = now_ms() / 1000 * 1000;
    // edge-1 also serves "remote", an app this node does not have.
    let reg = json!({"fleet": fleet, "node": "edge-1",
        "apps": [{"name": "mix", "version": "v1"}, {"name": "remote", "version": "r1"}],
        "started": "2026-01-01T00:00:00Z", "interval_ms": 10000});
    assert_eq!(post(&s, "/api/nodes/register", &reg).status, 202);
    // Hand-placed buckets (stop relative to t):
    //   -5 s: mix cdn_a A 3          -50 s: mix cdn_b B 4
    //   -70 s: mix cdn_a A 5, api origin fallback 2     -3500 s: mix cdn_b B 6
    let placed = [
        bucket(
            &fleet,
            "edge-1",
            t - 5_000,
            json!({"mix": {"cdn_a": {"A": 3}}}),
        ),
        bucket(
            &fleet,
            "edge-1",
            t - 50_000,
            json!({"mix": {"cdn_b": {"B": 4}}}),
        ),
        bucket(
            &fleet,
            "edge-2",
            t - 70_000,
            json!({"mix": {"cdn_a": {"A": 5}}, "api": {"origin": {"fallback": 2}}}),
        ),
        bucket(
            &fleet,
            "edge-1",
            t - 3_500_000,
            json!({"mix": {"cdn_b": {"B": 6}}}),
        ),
    ];
    for b in &placed {
        let r = post(&s, "/api/decisions", b);
        assert_eq!(r.status, 202, "{}", r.body);
    }
    // At t: the minute holds the -5 s and -50 s buckets, the hour all four.
    let d = get(&s, &format!("/api/decisions?now={t}"));
    assert_eq!(
        d["lastMinute"],
        json!({"mix": {"cdn_a": {"A": 3}, "cdn_b": {"B": 4}}})
    );
    assert_eq!(
        d["lastHour"],
        json!({"api": {"origin": {"fallback": 2}}, "mix": {"cdn_a": {"A": 8}, "cdn_b": {"B": 10}}})
    );
    // 15 s later the -50 s bucket has left the minute (its stop is t−45 s or before).
    let d = get(&s, &format!("/api/decisions?now={}", t + 15_000));
    assert_eq!(d["lastMinute"], json!({"mix": {"cdn_a": {"A": 3}}}));
    // 10 s earlier the -5 s bucket had not entered yet, the -70 s one is
    // exactly on the edge (stop = now − 60 s): out.
    let d = get(&s, &format!("/api/decisions?now={}", t - 10_000));
    assert_eq!(d["lastMinute"], json!({"mix": {"cdn_b": {"B": 4}}}));
    // 200 s later the -3500 s bucket has left the hour.
    let d = get(&s, &format!("/api/decisions?now={}", t + 200_000));
    assert_eq!(
        d["lastHour"],
        json!({"api": {"origin": {"fallback": 2}}, "mix": {"cdn_a": {"A": 8}, "cdn_b": {"B": 4}}})
    );
    // RFC 3339 works for now= too.
    let iso = get(&s, &format!("/api/decisions?now={t}"))["now"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&s, &format!("/api/decisions?now={iso}"))["lastHour"],
        get(&s, &format!("/api/decisions?now={t}"))["lastHour"]
    );

    // One app; an app that is neither loaded nor seen is 404.
    let d = get(&s, &format!("/api/decisions/mix?now={t}"));
    assert_eq!(
        d["lastMinute"],
        json!({"cdn_a": {"A": 3}, "cdn_b": {"B": 4}})
    );
    assert_eq!(
        d["lastHour"],
        json!({"cdn_a": {"A": 8}, "cdn_b": {"B": 10}})
    );
    assert_eq!(
        get(&s, &format!("/api/decisions/api?now={t}"))["lastHour"],
        json!({"origin": {"fallback": 2}})
    );
    assert_eq!(
        request(admin(&s), "GET", "/api/decisions/nope", None, b"").status,
        404
    );
    let seen = get(&s, &format!("/api/decisions/seen?now={t}"));
    assert_eq!(
        seen,
        json!([
            {"app": "api", "providers": ["origin"], "reasons": ["fallback"], "decisions": 2},
            {"app": "mix", "providers": ["cdn_a", "cdn_b"], "reasons": ["A", "B"], "decisions": 18},
        ])
    );
    let series = get(&s, &format!("/api/decisions/mix/buckets?now={t}"));
    let list = series["buckets"].as_array().unwrap();
    assert_eq!(list.len(), 360);
    assert_eq!(series["providers"], json!(["cdn_a", "cdn_b"]));
    assert_eq!(list.iter().map(|b| total(&b["providers"])).sum::<u64>(), 18);
    // Slots end on multiples of 10 s and hold the buckets stopping in
    // (slot − 10 s, slot]: the -5 s bucket's slot holds it alone.
    let slot = (t - 5_000 + 9_999).div_euclid(10_000) * 10_000;
    let at = list
        .iter()
        .find(|b| b["stop"] == json!(slot))
        .expect("the -5 s bucket's slot");
    assert_eq!(at["providers"], json!({"cdn_a": 3}));
    assert_eq!(at["reasons"], json!({"A": 3}));
    assert!(
        list.last().unwrap()["stop"].as_i64().unwrap() >= t,
        "the last slot holds now"
    );

    // Every bad payload: 400 naming the field, nothing stored (checked in
    // the database itself, and in the view).
    let rows_before = db_rows(&s, pg);
    assert!(
        rows_before.iter().any(|r| r.contains(" edge-2 ")),
        "the database is read: {rows_before:?}"
    );
    let before = get(&s, &format!("/api/decisions?now={t}"));
    let nodes_before = get(&s, "/api/nodes")["nodes"].as_array().unwrap().len();
    let good = bucket(
        &fleet,
        "bad-node",
        t - 1_000,
        json!({"mix": {"cdn_a": {"A": 1}}}),
    );
    let with = |path: &[&str], v: Value| {
        let mut g = good.clone();
        let mut at = &mut g;
        for k in &path[..path.len() - 1] {
            at = &mut at[*k];
        }
        match v {
            Value::Null => {
                at.as_object_mut().unwrap().remove(path[path.len() - 1]);
            }
            v => at[path[path.len() - 1]] = v,
        }
        g
    };
    let bad_buckets = [
        ("fleet", with(&["fleet"], Value::Null)),
        ("node", with(&["node"], json!(""))),
        ("node", with(&["node"], json!(7))),
        ("bucket", with(&["bucket"], Value::Null)),
        (
            "bucket.start",
            with(&["bucket", "start"], json!("last tuesday")),
        ),
        ("bucket.stop", with(&["bucket", "stop"], Value::Null)),
        (
            "bucket.stop",
            with(&["bucket", "stop"], json!("2026-02-30T25:00:00Z")),
        ),
        (
            "bucket.stop is before bucket.start",
            with(&["bucket", "stop"], json!(t - 20_000)),
        ),
        ("bucket.apps", with(&["bucket", "apps"], Value::Null)),
        ("bucket.apps", with(&["bucket", "apps"], json!([1]))),
        (
            "bucket.apps.mix",
            with(&["bucket", "apps"], json!({"mix": 5})),
        ),
        (
            "bucket.apps.mix.cdn_a",
            with(&["bucket", "apps"], json!({"mix": {"cdn_a": 5}})),
        ),
        (
            "bucket.apps.mix.cdn_a.A",
            with(&["bucket", "apps"], json!({"mix": {"cdn_a": {"A": -1}}})),
        ),
        // A good app beside a bad one: the good part is not stored either.
        (
            "bucket.apps.mix.cdn_b.B",
            with(
                &["bucket", "apps"],
                json!({"api": {"x": {"y": 1}}, "mix": {"cdn_a": {"A": 1}, "cdn_b": {"B": 1.5}}}),
            ),
        ),
        ("the body", json!([good.clone()])),
    ];
    for (needle, body) in &bad_buckets {
        let e = post(&s, "/api/decisions", body).error(400);
        assert!(e.contains(needle), "{needle}: {e}");
    }
    assert!(
        request(
            admin(&s),
            "POST",
            "/api/decisions",
            Some(TOKEN),
            b"{not json"
        )
        .error(400)
        .contains("JSON")
    );
    let bad_regs = [
        (
            "fleet",
            json!({"node": "n", "apps": [], "started": 0, "interval_ms": 1}),
        ),
        (
            "apps",
            json!({"fleet": fleet, "node": "bad-node", "started": 0, "interval_ms": 1}),
        ),
        (
            "apps[0].version",
            json!({"fleet": fleet, "node": "bad-node", "apps": [{"name": "mix"}], "started": 0, "interval_ms": 1}),
        ),
        (
            "started",
            json!({"fleet": fleet, "node": "bad-node", "apps": [], "started": "noon", "interval_ms": 1}),
        ),
        (
            "interval_ms",
            json!({"fleet": fleet, "node": "bad-node", "apps": [], "started": 0, "interval_ms": -3}),
        ),
        (
            "interval_ms",
            json!({"fleet": fleet, "node": "bad-node", "apps": [], "started": 0}),
        ),
    ];
    for (needle, body) in &bad_regs {
        let e = post(&s, "/api/nodes/register", body).error(400);
        assert!(e.contains(needle), "{needle}: {e}");
    }
    // Over the body limit: 413. No token, or a wrong one: 401 (RFC 6750).
    let huge = json!({"fleet": fleet, "node": "bad-node", "bucket": {"start": 0, "stop": 1,
        "apps": {"mix": {"cdn_a": {"x".repeat(70_000): 1}}}}});
    assert_eq!(post(&s, "/api/decisions", &huge).status, 413);
    let body = good.to_string();
    assert_eq!(
        request(admin(&s), "POST", "/api/decisions", None, body.as_bytes()).status,
        401
    );
    assert_eq!(
        request(
            admin(&s),
            "POST",
            "/api/decisions",
            Some("nope"),
            body.as_bytes()
        )
        .status,
        401
    );
    assert_eq!(
        request(
            admin(&s),
            "POST",
            "/api/nodes/register",
            None,
            reg.to_string().as_bytes()
        )
        .status,
        401
    );
    assert_eq!(
        request(admin(&s), "DELETE", "/api/decisions", Some(TOKEN), b"").status,
        405
    );
    let rows_after = db_rows(&s, pg);
    assert_eq!(
        rows_after, rows_before,
        "a refused payload reached the database"
    );
    assert!(!rows_after.iter().any(|r| r.contains("bad-node")));
    assert_eq!(
        get(&s, &format!("/api/decisions?now={t}")),
        before,
        "a refused payload stored something"
    );
    let nodes = get(&s, "/api/nodes");
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), nodes_before);
    assert!(!nodes.to_string().contains("bad-node"));

    // Nodes: this one, edge-1 (registered and pushed), edge-2 (pushed only).
    let names: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    for n in ["self", "edge-1", "edge-2"] {
        assert!(names.contains(&n), "{n} missing: {nodes}");
    }
    let edge1 = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "edge-1")
        .unwrap();
    assert_eq!(edge1["ip"], "127.0.0.1");
    assert!(edge1["lastPush"].is_string(), "{edge1}");
    // edge-1 says mix is "v1", this node serves another version: drift.
    assert!(
        nodes["drift"]["mix"]
            .as_array()
            .is_some_and(|v| v.len() == 2),
        "{nodes}"
    );

    // Applications: fleet view, nodes newest first, provider filter.
    let app = get(&s, "/api/applications/mix");
    let app_nodes: Vec<&str> = app["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert!(
        app_nodes.contains(&"self") && app_nodes.contains(&"edge-1"),
        "{app}"
    );
    assert_eq!(app["seen_providers"], json!(["cdn_a", "cdn_b"]));
    assert!(
        app["last_minute"].is_object(),
        "the node's own view is kept: {app}"
    );
    let by = |p: &str| -> Vec<String> {
        get(&s, &format!("/api/applications?provider={p}"))["applications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(by("cdn_b"), vec!["mix"], "declared with requireProvider");
    assert_eq!(by("origin"), vec!["api"], "chosen in the fleet only");
    assert!(by("cdn_c").is_empty());
    // Apps only other nodes serve are listed: "api" (decisions pushed by
    // edge-2, which never registered) and "remote" (registered by edge-1).
    let all = get(&s, "/api/applications");
    let list = all["applications"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "mix", "remote"], "{all}");
    let api = &list[0];
    assert_eq!(api["status"], "elsewhere", "{api}");
    assert_eq!(api["version"], Value::Null);
    assert_eq!(api["seen_providers"], json!(["origin"]));
    assert_eq!(api["lastHour"], json!({"origin": {"fallback": 2}}));
    assert_eq!(api["lastMinute"], json!({}), "its bucket is 70 s old");
    assert_eq!(list[1]["status"], "ok");
    assert_eq!(
        list[1]["lastHour"],
        json!({"cdn_a": {"A": 8}, "cdn_b": {"B": 10}})
    );
    let remote = get(&s, "/api/applications/remote");
    assert_eq!(remote["status"], "elsewhere", "{remote}");
    assert_eq!(remote["nodes"].as_array().unwrap().len(), 1, "{remote}");
    assert_eq!(remote["nodes"][0]["node"], "edge-1");
    assert_eq!(remote["nodes"][0]["version"], "r1");
    assert_eq!(remote["nodes"][0]["ip"], "127.0.0.1");
    assert_eq!(remote["lastHour"], json!({}));
    let api = get(&s, "/api/applications/api");
    assert_eq!(api["nodes"], json!([]), "edge-2 never registered: {api}");
    assert_eq!(api["lastHour"], json!({"origin": {"fallback": 2}}));
    assert_eq!(
        request(admin(&s), "GET", "/api/applications/nope", None, b"").status,
        404
    );
}

#[test]
fn endpoints_on_sqlite() {
    story(None);
}

#[test]
fn endpoints_on_postgres() {
    let Some(pg) = PgSchema::new("reports endpoints", "switchyard_rep") else {
        return;
    };
    story(Some(&pg));
}

/// Answers without setting a reason code.
const PLAIN_APP: &str = r#"
function init(config) { config.requireProvider('cdn_a'); }
function onRequest(request, response) { response.respond('cdn_a', 'cdn-a.example.net'); }
"#;

#[test]
fn dns_decisions_reach_the_api_and_metrics() {
    let fleet = unique("fleet");
    let s = Server::start_with(Options {
        apps: Some(vec![
            ("mix.js".into(), MIX_APP.into()),
            ("plain.js".into(), PLAIN_APP.into()),
        ]),
        env: vec![
            ("POSTGRES".into(), String::new()),
            ("SWITCHYARD_FLEET".into(), fleet),
            ("SWITCHYARD_NODE".into(), "solo".into()),
        ],
        extra_config: "[reports]\ninterval_ms = 500\n".into(),
        ..Options::default()
    });
    queries(&s, "a", 11);
    queries(&s, "b", 5);
    let sock = dnsclient::socket(Duration::from_secs(5));
    for i in 0..3 {
        dnsclient::query(&sock, s.dns, "plain.switchyard.test.", RecordType::A, i)
            .expect("plain answers");
    }
    // HTTP decisions count too.
    let r = request(
        s.http.expect("http listener"),
        "GET",
        "/apps/mix/decision",
        None,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let took = wait_for(
        "decisions in /api/decisions",
        Duration::from_secs(25),
        &mut || {
            get(&s, "/api/decisions")["lastMinute"]["mix"]
                == json!({"cdn_a": {"A": 12}, "cdn_b": {"B": 5}})
        },
    );
    eprintln!("reports: DNS decisions visible after {took:?}");
    let metrics = request(admin(&s), "GET", "/metrics", None, b"").body;
    let line = |p: &str, r: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("switchyard_decisions_total{")
                    && l.contains("app=\"mix\"")
                    && l.contains(&format!("provider=\"{p}\""))
                    && l.contains(&format!("reason=\"{r}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(line("cdn_a", "A").as_deref(), Some("12"), "{metrics}");
    assert_eq!(line("cdn_b", "B").as_deref(), Some("5"));
    // No reason code reads "(none)" in /metrics as in the API.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_decisions_total{")
                && l.contains("app=\"plain\"")
                && l.contains("reason=\"(none)\"")
                && l.ends_with(" 3")),
        "{metrics}"
    );
    assert!(!metrics.contains("reason=\"\""), "{metrics}");
    wait_for(
        "plain in /api/decisions",
        Duration::from_secs(25),
        &mut || get(&s, "/api/decisions")["lastMinute"]["plain"] == json!({"cdn_a": {"(none)": 3}}),
    );
    assert_eq!(
        get(&s, "/api/applications/plain")["last_minute"],
        json!({"cdn_a": {"(none)": 3}})
    );
    let app = get(&s, "/api/applications/mix");
    assert_eq!(
        app["last_minute"],
        json!({"cdn_a": {"A": 12}, "cdn_b": {"B": 5}})
    );
    assert_eq!(
        app["lastHour"],
        json!({"cdn_a": {"A": 12}, "cdn_b": {"B": 5}})
    );
    assert_eq!(app["nodes"][0]["node"], "solo");
    let nodes = get(&s, "/api/nodes");
    assert_eq!(nodes["self"], "solo");
    assert_eq!(nodes["nodes"][0]["live"], true);
    assert_eq!(nodes["nodes"][0]["drift"], false);
}

/// `[reports] enabled = false`: nothing is written to or read from the
/// store, but the node still counts its own decisions (`/metrics`, and the
/// inventory's `requests_per_second`).
#[test]
fn reporting_off_writes_no_reports_but_counts_locally() {
    let s = Server::start_with(Options {
        apps: Some(vec![("mix.js".into(), MIX_APP.into())]),
        env: vec![
            ("POSTGRES".into(), String::new()),
            ("SWITCHYARD_FLEET".into(), unique("fleet")),
        ],
        extra_config: "[reports]\nenabled = false\ninterval_ms = 200\n".into(),
        ..Options::default()
    });
    queries(&s, "a", 5);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(&s, "/api/decisions")["lastHour"], json!({}));
    assert!(
        get(&s, "/api/nodes")["nodes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(db_rows(&s, None).is_empty(), "nothing in the database");
    let metrics = request(admin(&s), "GET", "/metrics", None, b"").body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_decisions_total{")
                && l.contains("app=\"mix\"")
                && l.ends_with(" 5")),
        "{metrics}"
    );
}

#[test]
fn a_node_pushes_to_another_over_http() {
    let fleet = unique("fleet");
    let hub = node(&fleet, "hub", None, Some(3_600_000), MIX_APP);
    let edge = edge_pushing_to(&hub, &fleet, 300);
    queries(&edge, "b", 9);
    wait_for(
        "pushed decisions on the hub",
        Duration::from_secs(25),
        &mut || get(&hub, "/api/decisions")["lastMinute"]["mix"] == json!({"cdn_b": {"B": 9}}),
    );
    let nodes = get(&hub, "/api/nodes");
    assert!(
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node"] == "edge" && n["live"] == true),
        "{nodes}"
    );
}

/// Three nodes on one PostgreSQL, reporting at the default 10 s: queries
/// go to each over DNS at once, then every node is watched at the same
/// time, each timed from when its own queries were answered, and must show
/// the exact fleet total within 25 s. Then drift and SIGKILL.
#[test]
fn fleet_of_three_on_postgres() {
    let Some(pg) = PgSchema::new("reports fleet", "switchyard_rep") else {
        return;
    };
    let fleet = unique("fleet");
    let url = pg.url();
    let edited = format!("{MIX_APP}\n// edited on node c only\n");
    let a = node(&fleet, "node-a", Some(&url), None, MIX_APP);
    let b = node(&fleet, "node-b", Some(&url), None, MIX_APP);
    let c = node(&fleet, "node-c", Some(&url), None, &edited);
    let nodes = [("a", &a, "a", 10), ("b", &b, "b", 20), ("c", &c, "a", 30)];
    let want = json!({"cdn_a": {"A": 40}, "cdn_b": {"B": 20}});
    let limit = Duration::from_secs(25);
    let took: Vec<(&str, Duration)> = std::thread::scope(|scope| {
        let watchers: Vec<_> = nodes
            .iter()
            .map(|&(name, s, prefix, n)| {
                let want = &want;
                scope.spawn(move || {
                    queries(s, prefix, n);
                    let sent = Instant::now();
                    loop {
                        if get(s, "/api/decisions")["lastMinute"]["mix"] == *want {
                            return (name, sent.elapsed());
                        }
                        assert!(
                            sent.elapsed() < limit,
                            "node {name} did not show the fleet total within {limit:?}: {}",
                            get(s, "/api/decisions")
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();
        watchers
            .into_iter()
            .map(|w| w.join().expect("a node never showed the fleet total"))
            .collect()
    });
    for (name, t) in &took {
        eprintln!(
            "fleet (10 s interval): node {name} showed the fleet total {t:?} after its queries"
        );
    }
    // Drift: node c serves an edited mix.
    wait_for("drift flagged", limit, &mut || {
        let n = get(&a, "/api/nodes");
        n["drift"]["mix"].as_array().is_some_and(|v| v.len() == 2)
            && n["nodes"].as_array().unwrap().iter().any(|x| {
                x["node"] == "node-c" && x["drift"] == true && x["apps"][0]["drift"] == true
            })
            && n["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["node"] == "node-a" && x["drift"] == false)
    });
    // SIGKILL: what c pushed stays; what it had not pushed may be lost, no more.
    queries(&c, "b", 15);
    wait_for("c's second batch", limit, &mut || {
        total(&get(&a, "/api/decisions")["lastHour"]["mix"]) == 75
    });
    queries(&c, "b", 7);
    kill_node(&c);
    std::thread::sleep(Duration::from_secs(3));
    let after = total(&get(&a, "/api/decisions")["lastHour"]["mix"]);
    assert!((75..=82).contains(&after), "after SIGKILL: {after}");
    wait_for("a and b agree", Duration::from_secs(5), &mut || {
        total(&get(&b, "/api/decisions")["lastHour"]["mix"]) == after
    });
    eprintln!("fleet: after SIGKILL the fleet kept {after} of 82 (75 pushed before)");
}

/// A graceful stop reports the last bucket once DNS has drained: a node
/// that reports only when it starts and stops (interval 1 h) pushes to a
/// hub; a client streams queries at it while it is stopped, and the hub
/// ends up with every answered query, and no more than were sent.
#[test]
fn graceful_stop_reports_every_answered_query() {
    let fleet = unique("fleet");
    let hub = node(&fleet, "hub", None, Some(3_600_000), MIX_APP);
    let edge = edge_pushing_to(&hub, &fleet, 3_600_000);
    wait_for("the edge registered", Duration::from_secs(10), &mut || {
        get(&hub, "/api/nodes").to_string().contains("\"edge\"")
    });
    let dns = edge.dns;
    let client = std::thread::spawn(move || {
        let sock = dnsclient::socket(Duration::from_millis(300));
        let (mut sent, mut answered, mut misses) = (0u64, 0u64, 0);
        // Until the stopped server has not answered for a while.
        while misses < 5 {
            sent += 1;
            match dnsclient::query(
                &sock,
                dns,
                "a.mix.switchyard.test.",
                RecordType::A,
                sent as u16,
            ) {
                Some(r) if !r.answers.is_empty() => {
                    answered += 1;
                    misses = 0;
                }
                _ => misses += 1,
            }
        }
        (sent, answered)
    });
    std::thread::sleep(Duration::from_millis(700));
    edge.signal("TERM");
    let (sent, answered) = client.join().unwrap();
    assert!(answered > 20, "the client was streaming ({answered})");
    let mut counted = 0;
    wait_for(
        "the last bucket at the hub",
        Duration::from_secs(15),
        &mut || {
            counted = total(&get(&hub, "/api/decisions")["lastHour"]["mix"]);
            counted >= answered
        },
    );
    eprintln!("graceful stop: {sent} sent, {answered} answered, {counted} counted by the hub");
    assert!(counted <= sent, "{counted} counted of {sent} sent");
}

/// Buckets are kept an hour and nodes two days: the store's prune, driven
/// through `Reports::prune` with an injected clock. A pruned row's id is
/// never handed out again, and a poll after the last id read sees exactly
/// the rows written since.
fn prune_story(store: Arc<dyn ReportStore>, rt: &tokio::runtime::Runtime) {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 86_400_000;
    let now: i64 = 1_900_000_000_000;
    let fleet = unique("fleet");
    let bucket = |node: &str, stop: i64| BucketReport {
        fleet: fleet.clone(),
        node: node.into(),
        start: stop - 10_000,
        stop,
        counts: serde_json::from_value(json!({"mix": {"cdn_a": {"A": 1}}})).unwrap(),
    };
    let reg = |node: &str| Registration {
        fleet: fleet.clone(),
        node: node.into(),
        apps: vec![("mix".into(), "v1".into())],
        started: now - 3 * DAY,
        interval_ms: 10_000,
        config_hash: None,
        version: None,
        snapshots: Default::default(),
    };
    rt.block_on(async {
        let kept = store
            .insert_bucket(&bucket("edge", now - HOUR + 1), now)
            .await
            .unwrap();
        // The newest row, and the one pruned.
        let old = store
            .insert_bucket(&bucket("edge", now - HOUR - 1), now)
            .await
            .unwrap();
        assert!(old > kept);
        store
            .register(&reg("fresh"), None, now - 2 * DAY + 1)
            .await
            .unwrap();
        store
            .register(&reg("stale"), None, now - 2 * DAY - 1)
            .await
            .unwrap();
        Reports::new(store.clone()).prune(now).await.unwrap();
        let left: Vec<i64> = store
            .buckets_after(&fleet, 0, 0)
            .await
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(left, [kept], "the bucket an hour and 1 ms old is gone");
        let nodes: Vec<String> = store
            .nodes(&fleet)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.node)
            .collect();
        assert_eq!(
            nodes,
            ["edge", "fresh"],
            "the node unseen for 2 days and 1 ms is gone"
        );
        let next = store
            .insert_bucket(&bucket("edge", now), now)
            .await
            .unwrap();
        assert!(next > old, "pruned id {old} handed out again as {next}");
        let polled: Vec<i64> = store
            .buckets_after(&fleet, kept, now - HOUR)
            .await
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(polled, [next]);
    });
}

#[test]
fn prune_keeps_an_hour_and_two_days_sqlite() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(switchyard::db::sqlite::open(dir.path()))
        .unwrap();
    prune_story(store.stores().reports, &rt);
}

#[test]
fn prune_keeps_an_hour_and_two_days_postgres() {
    let Some(pg) = PgSchema::new("reports prune", "switchyard_rep") else {
        return;
    };
    let store = pg
        .rt
        .block_on(switchyard::db::postgres::open(
            &pg.database,
            Some(&pg.schema),
        ))
        .unwrap();
    prune_story(store.stores().reports, &pg.rt);
}

/// SIGKILLs a node: the supervisor first (so it restarts nothing), then
/// the serving process it ran, which would otherwise live on.
fn kill_node(s: &Server) {
    let pid = s.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    s.signal("KILL");
    for child in children.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", child])
            .status();
    }
    for child in children.split_whitespace() {
        wait_for(
            "the serving process to die",
            Duration::from_secs(5),
            &mut || {
                std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .map_or(true, |st| st.split_whitespace().nth(2) == Some("Z"))
            },
        );
    }
}

/// Finds Debian's chromium (or CHROMIUM).
fn chromium() -> Option<String> {
    let candidates = [
        std::env::var("CHROMIUM").unwrap_or_default(),
        "/usr/bin/chromium".into(),
        "/usr/bin/chromium-browser".into(),
    ];
    candidates
        .into_iter()
        .find(|c| !c.is_empty() && std::path::Path::new(c).exists())
}

/// The dashboard in a real browser: headless Chromium, driven over the
/// W3C WebDriver protocol by chromedriver, loads the page from a server
/// that has answered queries; the rendered page must chart both providers
/// and list the node, the feeds and the Sonar verdicts. The screenshot is
/// saved as `target/dashboard.png`.
#[test]
fn dashboard_in_headless_chromium() {
    let Some(browser) = chromium().filter(|_| std::path::Path::new(&chromedriver()).exists())
    else {
        let _ = std::io::stderr().write_all(
            b"\n*** SKIPPED: dashboard in a browser (no chromium or chromedriver; .ci/run installs both) ***\n\n",
        );
        return;
    };
    let s = Server::start_with(Options {
        apps: Some(vec![("mix.js".into(), MIX_APP.into())]),
        env: vec![
            ("POSTGRES".into(), String::new()),
            ("SWITCHYARD_FLEET".into(), unique("fleet")),
            ("SWITCHYARD_NODE".into(), "dash-node".into()),
        ],
        // A Sonar check on a closed port: cdn_b shows as down.
        extra_config: "[[sonar]]\nprovider = \"cdn_b\"\ntcp = \"127.0.0.1:9\"\ninterval_secs = 1\ntimeout_ms = 200\nfall = 1\n\n[reports]\ninterval_ms = 500\n".into(),
        ..Options::default()
    });
    queries(&s, "a", 8);
    queries(&s, "b", 4);
    wait_for("decisions reported", Duration::from_secs(25), &mut || {
        total(&get(&s, "/api/decisions")["lastMinute"]) == 12
    });
    // The page itself is served from the binary, with nothing external.
    let page = request(admin(&s), "GET", "/", None, b"");
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "external reference in the page"
    );
    let js = request(admin(&s), "GET", "/dashboard/app.js", None, b"").body;
    // The SVG namespace is a name, not a fetch.
    let js = js.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !js.contains("http://") && !js.contains("https://"),
        "external reference in app.js"
    );
    let css = request(admin(&s), "GET", "/dashboard/style.css", None, b"").body;
    assert!(!css.contains("url("), "external reference in style.css");
    let url = format!("http://{}/?app=mix", admin(&s));
    let profile = s.dir.path().join("chromium-profile");
    let driver = WebDriver::start(&browser, &profile);
    driver.call("POST", "/url", json!({ "url": url }));
    // The page fetches the API and renders; wait for its loaded mark.
    let deadline = Instant::now() + Duration::from_secs(20);
    let dom = loop {
        let dom = driver.call("GET", "/source", Value::Null);
        let dom = dom.as_str().unwrap_or_default().to_string();
        if dom.contains("data-loaded=\"1\"") && dom.contains("data-provider=\"cdn_b\"") {
            break dom;
        }
        assert!(
            Instant::now() < deadline,
            "the page never loaded its data: {dom}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let title = driver.call("GET", "/title", Value::Null);
    assert!(
        title.as_str().is_some_and(|t| !t.is_empty()),
        "no page title: {title}"
    );
    // The chart itself (not the legend) draws each provider: SVG rects of
    // non-zero height inside the chart, whose counts add up to what each
    // provider was chosen for.
    let bars = driver.call(
        "POST",
        "/execute/sync",
        json!({"script": "return Array.from(document.querySelectorAll('#chart-svg rect')).map(r => \
            [r.getAttribute('data-provider'), parseFloat(r.getAttribute('height')), \
             r.querySelector('title').textContent]);", "args": []}),
    );
    let bars = bars.as_array().expect("the chart's rects");
    for (p, want) in [("cdn_a", 8), ("cdn_b", 4)] {
        let mine: Vec<&Value> = bars.iter().filter(|b| b[0] == p).collect();
        assert!(!mine.is_empty(), "no bar for {p} in the chart: {bars:?}");
        assert!(
            mine.iter().all(|b| b[1].as_f64().is_some_and(|h| h > 0.0)),
            "a bar of {p} has no height: {mine:?}"
        );
        let charted: u64 = mine
            .iter()
            .filter_map(|b| {
                b[2].as_str()?
                    .split(": ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert_eq!(charted, want, "{p}'s bars: {mine:?}");
        assert!(
            dom.contains("<li style=\"--c:") && dom.contains(&format!("\">{p}</li>")),
            "the legend lacks {p}"
        );
    }
    assert!(dom.contains("data-node=\"dash-node\""), "node list: {dom}");
    assert!(
        dom.contains("id=\"feeds\"") && dom.contains("data-feed="),
        "feed list: {dom}"
    );
    assert!(
        dom.contains("<td>A</td>") && dom.contains("<td>B</td>"),
        "reason table: {dom}"
    );
    assert!(
        dom.contains("<td>cdn_b</td><td class=\"bad\">down</td>"),
        "sonar verdicts: {dom}"
    );
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let png = base64_decode(
        driver
            .call("GET", "/screenshot", Value::Null)
            .as_str()
            .expect("a screenshot"),
    );
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    std::fs::write(&shot, png).expect("write the screenshot");
    eprintln!("dashboard screenshot: {}", shot.display());
}

/// A W3C WebDriver session on a `chromedriver` started for one test
/// (Debian's `chromium-driver`, which `.ci/run` installs), spoken to over
/// its HTTP protocol; ended and stopped on drop.
struct WebDriver {
    child: std::process::Child,
    addr: SocketAddr,
    session: String,
}

impl WebDriver {
    fn start(browser: &str, profile: &std::path::Path) -> WebDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        } } });
        let mut driver = WebDriver {
            child,
            addr,
            session: String::new(),
        };
        let r = driver.raw("POST", "/session", &caps);
        driver.session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        driver
    }

    /// One HTTP exchange with chromedriver, which keeps connections open:
    /// the body is read by its Content-Length.
    fn raw(&self, method: &str, path: &str, body: &Value) -> Value {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let mut s = TcpStream::connect(self.addr).expect("connect to chromedriver");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            bytes.len()
        );
        s.write_all(head.as_bytes()).expect("send to chromedriver");
        s.write_all(&bytes).expect("send to chromedriver");
        let mut reader = std::io::BufReader::new(s);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).expect("chromedriver reply");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut out = vec![0u8; length];
        reader
            .read_exact(&mut out)
            .expect("chromedriver reply body");
        let text = String::from_utf8_lossy(&out);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {text}"))
    }

    /// A command of this session; its `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let v = self.raw(method, &format!("/session/{}{path}", self.session), &body);
        assert!(
            v["value"].get("error").is_none(),
            "WebDriver {method} {path}: {v}"
        );
        v["value"].clone()
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.raw(
                    "DELETE",
                    &format!("/session/{}", self.session),
                    &Value::Null,
                )
            }));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// Standard base64 (the screenshot WebDriver returns).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
