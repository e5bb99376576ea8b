//! Issue 27: what `/metrics` says about Sonar checks, Fusion feeds, the
//! leaderboard refresher, decisions per app and front end, memo hits, and
//! DNS and HTTP responses, read from a real server driven over real
//! sockets (`dig` for DNS, UDP and TCP); and the Grafana dashboard in
//! `contrib/grafana/`, whose every query must name metrics the server
//! exports.

use crate::common;
use crate::common::http::{Request, TOKEN, get};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// A stateless app: its repeated decisions come from the memo.
const PURE: &str = "function onRequest(request, response) {\n  'use strict';\n  response.addARecord('192.0.2.1');\n}\n";

/// An app that always fails: its decisions are fallbacks and failures.
const THROWS: &str =
    "function onRequest(request, response) {\n  'use strict';\n  throw new Error('boom');\n}\n";

const SECRET: &str = "metrics-test-secret";

/// A local HTTP server for the feeds: `/health` answers the status set
/// (Sonar), `/usage` a JSON body (a Fusion feed), anything else 404.
struct Upstream {
    addr: SocketAddr,
    health: Arc<AtomicU16>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let up = Upstream {
            addr: listener.local_addr().expect("upstream address"),
            health: Arc::new(AtomicU16::new(200)),
        };
        let health = up.health.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/health" => (health.load(Ordering::SeqCst), "ok"),
                    "/usage" => (200, r#"{"gb":12}"#),
                    _ => (404, "no"),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        up
    }
}

/// A server with a Sonar check of cdn_c against `upstream`, a working
/// Fusion feed of cdn_a, a failing one of cdn_b, the leaderboard refresher
/// every second, and apps that memoise (`pure`) and fail (`throws`).
fn start(upstream: &Upstream) -> common::Server {
    let mut apps = common::apps::shipped();
    apps.extend([
        ("pure.js".to_string(), PURE.to_string()),
        ("throws.js".to_string(), THROWS.to_string()),
        (
            "throws.toml".to_string(),
            "fallback = \"fallback.example.net\"\n".to_string(),
        ),
    ]);
    let a = upstream.addr;
    common::Server::start_with(common::Options {
        apps: Some(apps),
        env: vec![("SECRET".into(), SECRET.into())],
        config_edits: vec![("refresh_secs = 10".into(), "refresh_secs = 1".into())],
        extra_config: format!(
            "[[sonar]]\nprovider = \"cdn_c\"\nurl = \"http://{a}/health\"\ninterval_secs = 1\ntimeout_ms = 500\nrise = 1\nfall = 1\n\n\
             [[fusion]]\nprovider = \"cdn_a\"\nurl = \"http://{a}/usage\"\ninterval_secs = 1\ntimeout_ms = 500\n\n\
             [[fusion]]\nprovider = \"cdn_b\"\nurl = \"http://{a}/missing\"\ninterval_secs = 1\ntimeout_ms = 500\n\n\
             [[zone]]\nname = \"signed.test.\"\nns = [\"ns1.signed.test.\"]\ndnssec = true\n\
             soa = {{ rname = \"hostmaster.signed.test.\", serial = 1, refresh = 3600, retry = 600, expire = 604800, minimum = 60 }}\n"
        ),
        ..Default::default()
    })
}

fn admin(s: &common::Server) -> SocketAddr {
    s.admin.expect("operations listener")
}

fn public(s: &common::Server) -> SocketAddr {
    s.http.expect("decision listener")
}

/// One sample of a scrape.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text page (label values without escapes,
/// which these tests do not use).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// A scrape of `/metrics`: its text and samples.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn take(s: &common::Server) -> Scrape {
        let r = get(admin(s), "/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        Scrape {
            samples: parse(&r.body),
            text: r.body,
        }
    }

    /// The value of the one series of `name` with `labels` (and maybe
    /// others); `None` when there is none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<_> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches several series: {found:?}"
        );
        found.first().map(|s| s.value)
    }

    /// Like [`Scrape::get`], 0 when there is no such series (a counter
    /// not yet counted).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The metric families the page has a `# TYPE` line for.
    fn families(&self) -> BTreeSet<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect()
    }
}

/// Scrapes until `done` holds; panics with the last page after `limit`.
fn until(
    s: &common::Server,
    limit: Duration,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let start = Instant::now();
    loop {
        let m = Scrape::take(s);
        if done(&m) {
            return m;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not so within {limit:?}:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `dig` for `name` and `qtype`, over TCP when `tcp`; its rcode.
fn dig(dns: SocketAddr, name: &str, qtype: &str, tcp: bool) -> String {
    let mut cmd = std::process::Command::new("dig");
    cmd.arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string()])
        .args(["+tries=1", "+time=3", "+noall", "+comments"]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.args([name, qtype]).output().expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "dig {name} {qtype}: {text}");
    text.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("dig {name} {qtype}: no status in {text}"))
        .to_string()
}

/// Posts one LON stat for cdn_a's orchestrator to the leaderboard.
fn post_stat(s: &common::Server) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let body = format!(
        r#"{{"region":"LON","orchestrator":"0x00000000000000000000000000000000000000a1","timestamp":{now},"segments_sent":10,"segments_received":10,"success_rate":0.99,"seg_duration":2.0,"round_trip_time":0.05}}"#
    );
    let sig = switchyard::stats::sign(SECRET.as_bytes(), body.as_bytes());
    let r = Request::new(admin(s), "POST", "/api/post_stats")
        .header("Authorization", &sig)
        .json(body.as_bytes())
        .send();
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Waits until the feeds and the check have run: cdn_c checked up,
/// cdn_a's Fusion data taken, cdn_b's feed failed, and the leaderboard
/// read with the row posted.
fn wait_for_feeds(s: &common::Server) -> Scrape {
    post_stat(s);
    until(s, Duration::from_secs(20), "feeds and checks", |m| {
        m.get("switchyard_sonar_up", &[("provider", "cdn_c")]) == Some(1.0)
            && m.get(
                "switchyard_fusion_stale",
                &[("provider", "cdn_a"), ("source", "fetch")],
            ) == Some(0.0)
            && m.count(
                "switchyard_fusion_errors_total",
                &[("provider", "cdn_b"), ("source", "fetch")],
            ) >= 1.0
            && m.get("switchyard_leaderboard_rows", &[]) >= Some(1.0)
    })
}

#[test]
fn checks_feeds_decisions_and_responses_are_exported() {
    let upstream = Upstream::start();
    let s = start(&upstream);

    // Sonar up, Fusion fresh and failing, the leaderboard read.
    let m = wait_for_feeds(&s);
    let c = [("provider", "cdn_c")];
    assert_eq!(m.get("switchyard_sonar_last_check_success", &c), Some(1.0));
    assert_eq!(
        m.get("switchyard_sonar_consecutive_failures", &c),
        Some(0.0)
    );
    let age = m
        .get("switchyard_sonar_last_check_age_seconds", &c)
        .expect("check age");
    assert!((0.0..5.0).contains(&age), "check age {age}");
    let a = [("provider", "cdn_a"), ("source", "fetch")];
    let age = m
        .get("switchyard_fusion_age_seconds", &a)
        .expect("feed age");
    assert!((0.0..5.0).contains(&age), "feed age {age}");
    assert_eq!(m.get("switchyard_fusion_errors_total", &a), Some(0.0));
    let b = [("provider", "cdn_b"), ("source", "fetch")];
    assert_eq!(m.get("switchyard_fusion_stale", &b), Some(1.0));
    assert_eq!(
        m.get("switchyard_fusion_age_seconds", &b),
        None,
        "a feed that never succeeded has no age"
    );
    assert_eq!(m.get("switchyard_leaderboard_stale", &[]), Some(0.0));
    assert_eq!(m.get("switchyard_leaderboard_errors_total", &[]), Some(0.0));
    let age = m
        .get("switchyard_leaderboard_age_seconds", &[])
        .expect("leaderboard age");
    assert!((0.0..5.0).contains(&age), "leaderboard age {age}");
    assert_eq!(
        m.get("switchyard_leaderboard_rows", &[]),
        Some(1.0),
        "one posted row: cdn_a in LON"
    );

    // The check fails: down after `fall` (1), failures counted in a row.
    upstream.health.store(500, Ordering::SeqCst);
    let m = until(&s, Duration::from_secs(10), "cdn_c down", |m| {
        m.get("switchyard_sonar_up", &c) == Some(0.0)
            && m.get("switchyard_sonar_consecutive_failures", &c) >= Some(2.0)
    });
    assert_eq!(m.get("switchyard_sonar_last_check_success", &c), Some(0.0));
    // And back: the failures in a row start again from 0.
    upstream.health.store(200, Ordering::SeqCst);
    until(&s, Duration::from_secs(10), "cdn_c up again", |m| {
        m.get("switchyard_sonar_up", &c) == Some(1.0)
            && m.get("switchyard_sonar_consecutive_failures", &c) == Some(0.0)
            && m.get("switchyard_sonar_last_check_success", &c) == Some(1.0)
    });

    // Pushed Fusion data is its own source.
    let r = Request::new(admin(&s), "PUT", "/api/fusion/cdn_c")
        .token(Some(TOKEN))
        .json(br#"{"gb":1}"#)
        .send();
    assert_eq!(r.status, 200, "{}", r.body);

    // DNS over UDP and TCP, several query types; counted from a baseline.
    let before = Scrape::take(&s);
    let zone = "switchyard.test.";
    let name = "pure.switchyard.test.";
    let asked: &[(&str, &str, bool, usize)] = &[
        (name, "A", false, 10),
        (name, "AAAA", false, 2),
        (name, "TXT", false, 1),
        (name, "CAA", false, 1),
        (zone, "SOA", false, 1),
        (zone, "NS", false, 1),
        (name, "A", true, 3),
        (zone, "SOA", true, 1),
    ];
    for &(qname, qtype, tcp, n) in asked {
        for _ in 0..n {
            dig(s.dns, qname, qtype, tcp);
        }
    }
    assert_eq!(dig(s.dns, "nope.switchyard.test.", "A", false), "NXDOMAIN");
    // HTTP: decisions (200), an unknown app (404), a push with no token (401).
    for _ in 0..3 {
        assert_eq!(get(public(&s), "/apps/pure/decision").status, 200);
    }
    assert_eq!(get(public(&s), "/apps/throws/decision").status, 200);
    assert_eq!(get(public(&s), "/apps/nobody/decision").status, 404);
    let r = Request::new(admin(&s), "PUT", "/api/fusion/cdn_c")
        .json(b"{}")
        .send();
    assert_eq!(r.status, 401, "{}", r.body);

    let after = until(&s, Duration::from_secs(5), "decisions merged", |m| {
        m.count("switchyard_decisions_total", &[("app", "throws")]) >= 1.0
    });
    let diff = |name: &str, labels: &[(&str, &str)]| {
        after.count(name, labels) - before.count(name, labels)
    };
    let qt = "switchyard_dns_responses_by_qtype_total";
    for (proto, qtype, want) in [
        ("udp", "A", 11.0),
        ("udp", "AAAA", 2.0),
        ("udp", "TXT", 1.0),
        ("udp", "other", 1.0),
        ("udp", "SOA", 1.0),
        ("udp", "NS", 1.0),
        ("tcp", "A", 3.0),
        ("tcp", "SOA", 1.0),
        ("tcp", "AAAA", 0.0),
    ] {
        assert_eq!(
            diff(qt, &[("protocol", proto), ("qtype", qtype)]),
            want,
            "{proto} {qtype}:\n{}",
            after.text
        );
    }
    assert_eq!(
        diff(
            "switchyard_dns_responses_total",
            &[("protocol", "udp"), ("rcode", "Non-Existent Domain")]
        ),
        1.0
    );
    let tcp_total: f64 = after
        .samples
        .iter()
        .filter(|x| {
            x.name == "switchyard_dns_responses_total"
                && x.labels.get("protocol").map(String::as_str) == Some("tcp")
        })
        .map(|x| x.value)
        .sum();
    assert_eq!(tcp_total, 4.0, "every TCP response counted once");
    assert!(after.count("switchyard_dns_cookies_total", &[("result", "client_only")]) >= 1.0);

    let http = "switchyard_http_responses_total";
    assert_eq!(
        diff(http, &[("listener", "decision"), ("code", "200")]),
        4.0
    );
    assert_eq!(
        diff(http, &[("listener", "decision"), ("code", "404")]),
        1.0
    );
    assert_eq!(diff(http, &[("listener", "ops"), ("code", "401")]), 1.0);
    assert!(
        diff(http, &[("listener", "ops"), ("code", "200")]) >= 1.0,
        "the scrapes themselves"
    );

    // Decisions: timed per front end; the memo answered repeats.
    let pure = |f: &str| {
        diff(
            "switchyard_decision_seconds_count",
            &[("app", "pure"), ("frontend", f)],
        )
    };
    assert_eq!(pure("dns"), 15.0, "every A and AAAA decision of pure timed");
    assert_eq!(pure("http"), 3.0, "every HTTP decision of pure timed");
    let hits = diff("switchyard_memo_hits_total", &[("app", "pure")]);
    let decisions: f64 = after
        .samples
        .iter()
        .filter(|x| {
            x.name == "switchyard_decisions_total"
                && x.labels.get("app").map(String::as_str) == Some("pure")
        })
        .map(|x| x.value)
        .sum();
    assert!(
        hits >= 12.0 && hits <= decisions,
        "memo hits {hits} of {decisions} decisions:\n{}",
        after.text
    );
    assert_eq!(
        after.get(
            "switchyard_decision_seconds_bucket",
            &[("app", "pure"), ("frontend", "dns"), ("le", "+Inf")]
        ),
        after.get(
            "switchyard_decision_seconds_count",
            &[("app", "pure"), ("frontend", "dns")]
        )
    );
    assert!(
        after.count(
            "switchyard_app_failures_total",
            &[("app", "throws"), ("kind", "error")]
        ) >= 1.0,
        "{}",
        after.text
    );
    let pushed = [("provider", "cdn_c"), ("source", "push")];
    assert_eq!(after.get("switchyard_fusion_stale", &pushed), Some(0.0));

    common::promtool::check_metrics(&after.text);
}

/// Every `switchyard_` metric a PromQL expression names, histogram series
/// suffixes stripped to the family.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("switchyard_") {
        let start = i + at;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            let name = &expr[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_string());
        }
        i = end;
    }
    out
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        "sum(rate(switchyard_a_total{x=\"switchyard_not\"}[5m])) / histogram_quantile(0.5, rate(switchyard_decision_seconds_bucket[1m])) + my_switchyard_b",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "switchyard_a_total",
            "switchyard_decision_seconds",
            "switchyard_not"
        ]
    );
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in panels {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(all_panels(inner));
        }
    }
    out
}

#[test]
fn grafana_dashboard_queries_name_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/switchyard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert!(
        dash["schemaVersion"].as_u64() >= Some(36),
        "{}",
        dash["schemaVersion"]
    );
    let ds = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let panels = all_panels(dash["panels"].as_array().expect("panels"));
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for area in [
        "DNS",
        "Decisions",
        "Health checks",
        "Feeds",
        "HTTP",
        "Process",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with(area)),
            "no {area} row in {rows:?}"
        );
    }
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().expect("a panel title").to_string();
        assert!(
            ids.insert(p["id"].as_u64().expect("an id")),
            "{title}: id taken"
        );
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        for t in targets {
            let expr = t["expr"].as_str().expect("an expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} names no metric");
            for n in names {
                wanted.entry(n).or_default().push(title.clone());
            }
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["definition"].as_str() {
            for n in metric_names(q) {
                wanted
                    .entry(n)
                    .or_default()
                    .push(format!("variable {}", v["name"]));
            }
        }
    }

    // A server on which every family the dashboard shows appears.
    let upstream = Upstream::start();
    let s = start(&upstream);
    wait_for_feeds(&s);
    for (qtype, tcp) in [("A", false), ("AAAA", false), ("A", true)] {
        dig(s.dns, "pure.switchyard.test.", qtype, tcp);
    }
    get(public(&s), "/apps/pure/decision");
    get(public(&s), "/apps/throws/decision");
    // A signed answer, for the DNSSEC families.
    let signed = std::process::Command::new("dig")
        .arg(format!("@{}", s.dns.ip()))
        .args([
            "-p",
            &s.dns.port().to_string(),
            "+dnssec",
            "+tries=1",
            "+time=3",
        ])
        .args(["signed.test.", "SOA"])
        .output()
        .expect("run dig");
    assert!(String::from_utf8_lossy(&signed.stdout).contains("RRSIG"));
    let start = Instant::now();
    loop {
        let have = Scrape::take(&s).families();
        let missing: Vec<_> = wanted.iter().filter(|(n, _)| !have.contains(*n)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "on the dashboard, not exported (metric, panels): {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        wanted.len() >= 25,
        "{} metrics on the dashboard",
        wanted.len()
    );
}
