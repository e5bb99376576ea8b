//! Decision reports on the operations listener (issue 12): nodes register
//! and post buckets, and the fleet-wide views read them back; `/` is the
//! dashboard, a client of these same endpoints.
//!
//! Reads answer from the node's in-memory view of the fleet
//! ([`crate::report::Reports`]); they never touch the database. Every GET
//! takes `?now=` (unix ms or RFC 3339) to place the windows at another
//! instant: a testing aid, documented as such in the README.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use super::{HttpResponse, json, json_error, query_pairs, text};
use crate::report::buckets::{
    Counts, HOUR_MS, MINUTE_MS, StoredBucket, format_time, now_ms, parse_time,
};
use crate::report::store::{NodeRow, parse_bucket, parse_registration};
use crate::state::State;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// True for the paths this module answers.
pub fn owns(path: &str) -> bool {
    path.is_empty()
        || path == "/index.html"
        || path.starts_with("/dashboard/")
        || path == "/api/decisions"
        || path.starts_with("/api/decisions/")
        || path == "/api/nodes"
        || path.starts_with("/api/nodes/")
}

/// Handles one request for a path [`owns`] accepts.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    path: &str,
    peer: SocketAddr,
) -> HttpResponse {
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    match path {
        "" | "/index.html" if get => page("text/html; charset=utf-8", INDEX_HTML),
        "/dashboard/app.js" if get => page("text/javascript; charset=utf-8", APP_JS),
        "/dashboard/style.css" if get => page("text/css; charset=utf-8", STYLE_CSS),
        "/api/nodes/register" if method == Method::POST => register(state, req, peer).await,
        "/api/decisions" if method == Method::POST => decisions_post(state, req).await,
        _ if get => {
            let now = match now_param(&req) {
                Ok(n) => n,
                Err(r) => return r,
            };
            match path {
                "/api/decisions" => json(StatusCode::OK, &windows(&state, None, now)),
                "/api/decisions/seen" => json(StatusCode::OK, &seen(&state, now)),
                "/api/nodes" => json(StatusCode::OK, &nodes(&state, now)),
                p if p.starts_with("/api/decisions/") => {
                    let rest = &p["/api/decisions/".len()..];
                    let (app, series) = match rest.strip_suffix("/buckets") {
                        Some(a) => (a, true),
                        None => (rest, false),
                    };
                    if app.is_empty() || app.contains('/') {
                        return json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {p}"));
                    }
                    if !known_app(&state, app, now) {
                        return json_error(StatusCode::NOT_FOUND, format!("unknown app '{app}'"));
                    }
                    if series {
                        json(StatusCode::OK, &buckets(&state, app, now))
                    } else {
                        json(StatusCode::OK, &windows(&state, Some(app), now))
                    }
                }
                p => json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {p}")),
            }
        }
        p if matches!(p, "/api/decisions" | "/api/nodes/register") || p.is_empty() => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not allowed on {}",
                if p.is_empty() { "/" } else { p }
            ),
        ),
        p if p.starts_with("/api/decisions/") || p == "/api/nodes" => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {p}"),
        ),
        p => json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {p}")),
    }
}

fn page(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut r = text(StatusCode::OK, content_type, body);
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// `?now=`: the instant the windows end at (default: the clock).
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn now_param(req: &Request<Incoming>) -> Result<i64, HttpResponse> {
    match query_pairs(req).into_iter().find(|(k, _)| k == "now") {
        None => Ok(now_ms()),
        Some((_, v)) => {
            let parsed = match v.parse::<i64>() {
                Ok(n) => parse_time(&json!(n)),
                Err(_) => parse_time(&json!(v)),
            };
            parsed.ok_or_else(|| {
                json_error(
                    StatusCode::BAD_REQUEST,
                    format!("now: '{v}' is not an RFC 3339 time or unix milliseconds"),
                )
            })
        }
    }
}

fn fleet(state: &State) -> String {
    state.config.load().reports.fleet.clone()
}

/// `POST /api/nodes/register`.
async fn register(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    if let Err(r) = super::auth::authorize(&state, &req) {
        return r;
    }
    let body = match super::body::json(req, state.config.load().max_body_bytes).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let reg = match parse_registration(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let ip = peer.ip().to_string();
    if let Err(e) = state
        .reports
        .store
        .register(&reg, Some(&ip), now_ms())
        .await
    {
        return store_failed(e);
    }
    if reg.fleet == fleet(&state)
        && let Err(e) = state.reports.refresh(&reg.fleet).await
    {
        tracing::warn!(error = %e, "reading the fleet's reports failed");
    }
    json(
        StatusCode::ACCEPTED,
        &json!({"stored": true, "fleet": reg.fleet, "node": reg.node}),
    )
}

/// `POST /api/decisions`.
async fn decisions_post(state: Arc<State>, req: Request<Incoming>) -> HttpResponse {
    if let Err(r) = super::auth::authorize(&state, &req) {
        return r;
    }
    let body = match super::body::json(req, state.config.load().max_body_bytes).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let b = match parse_bucket(&body) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let id = match state.reports.store.insert_bucket(&b, now_ms()).await {
        Ok(id) => id,
        Err(e) => return store_failed(e),
    };
    if b.fleet == fleet(&state) {
        // Visible here at once; the refresh also lists a node that pushed
        // before it registered.
        state.reports.add_local(StoredBucket {
            id,
            node: b.node.clone(),
            start: b.start,
            stop: b.stop,
            counts: b.counts.clone(),
        });
        if let Err(e) = state.reports.refresh(&b.fleet).await {
            tracing::warn!(error = %e, "reading the fleet's reports failed");
        }
    }
    json(
        StatusCode::ACCEPTED,
        &json!({"stored": true, "fleet": b.fleet, "node": b.node, "decisions": crate::report::buckets::total(&b.counts)}),
    )
}

fn store_failed(e: crate::report::store::ReportError) -> HttpResponse {
    tracing::error!(error = %e, "storing a report failed");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the reports store is unavailable",
    )
}

/// An app is known when it is loaded here or has fleet decisions this hour.
fn known_app(state: &State, app: &str, now: i64) -> bool {
    let set = state.apps.snapshot();
    set.apps.contains_key(app)
        || set.errors.contains_key(app)
        || state
            .reports
            .with_buckets(|b| !b.sum_app(app, now, HOUR_MS).is_empty())
}

/// `{"lastMinute": …, "lastHour": …}` for the fleet or one app.
pub fn windows(state: &State, app: Option<&str>, now: i64) -> Value {
    state.reports.with_buckets(|b| match app {
        None => json!({
            "fleet": fleet(state),
            "now": format_time(now),
            "lastMinute": b.sum(now, MINUTE_MS),
            "lastHour": b.sum(now, HOUR_MS),
        }),
        Some(app) => json!({
            "fleet": fleet(state),
            "app": app,
            "now": format_time(now),
            "lastMinute": b.sum_app(app, now, MINUTE_MS),
            "lastHour": b.sum_app(app, now, HOUR_MS),
        }),
    })
}

fn seen(state: &State, now: i64) -> Value {
    let list: Vec<Value> = state.reports.with_buckets(|b| {
        b.seen(now)
            .into_iter()
            .map(|(app, providers, reasons, n)| {
                json!({"app": app, "providers": providers, "reasons": reasons, "decisions": n})
            })
            .collect()
    });
    Value::Array(list)
}

fn buckets(state: &State, app: &str, now: i64) -> Value {
    let (series, providers, reasons) = state.reports.with_buckets(|b| {
        let series = b.series(app, now);
        let providers: BTreeSet<String> = series.iter().flat_map(|s| s.1.keys().cloned()).collect();
        let reasons: BTreeSet<String> = series.iter().flat_map(|s| s.2.keys().cloned()).collect();
        (series, providers, reasons)
    });
    let list: Vec<Value> = series
        .into_iter()
        .map(|(stop, p, r)| json!({"stop": stop, "providers": p, "reasons": r}))
        .collect();
    json!({
        "app": app,
        "step_ms": crate::report::buckets::SLOT_MS,
        "providers": providers,
        "reasons": reasons,
        "buckets": list,
    })
}

fn nodes(state: &State, now: i64) -> Value {
    let last_push = state.reports.with_buckets(|b| b.last_push());
    let mut v = crate::report::nodes_json(&state.reports.nodes(), &last_push, now);
    let rc = &state.config.load().reports;
    if let Some(o) = v.as_object_mut() {
        o.insert("fleet".into(), json!(rc.fleet));
        o.insert("self".into(), json!(rc.node));
    }
    v
}

/// The fleet's apps as this node last read them, for `/api/applications`:
/// the node list and the minute and hour sums, taken once per request.
pub struct FleetApps {
    now: i64,
    own: String,
    nodes: Vec<NodeRow>,
    minute: Counts,
    hour: Counts,
}

impl FleetApps {
    /// Reads the in-memory fleet view as of now.
    pub fn read(state: &State) -> FleetApps {
        let now = now_ms();
        let (minute, hour) = state
            .reports
            .with_buckets(|b| (b.sum(now, MINUTE_MS), b.sum(now, HOUR_MS)));
        FleetApps {
            now,
            own: state.config.load().reports.node.clone(),
            nodes: state.reports.nodes(),
            minute,
            hour,
        }
    }

    /// Every app another node of the fleet registered (nodes are kept two
    /// days) or that has decisions in the fleet this hour. This node's own
    /// registration is left out: its app registry is fresher.
    pub fn names(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|n| n.node != self.own)
            .flat_map(|n| n.apps.iter().map(|(a, _)| a.clone()))
            .chain(self.hour.keys().cloned())
            .collect()
    }

    /// True when `app` chose `provider` somewhere in the fleet this hour.
    pub fn chose(&self, app: &str, provider: &str) -> bool {
        self.hour.get(app).is_some_and(|p| p.contains_key(provider))
    }

    /// One app's fleet view: the nodes serving it (newest first), the
    /// providers seen this hour, and its `lastMinute` / `lastHour`.
    pub fn app(&self, app: &str) -> Value {
        let mut nodes: Vec<(&NodeRow, &String)> = self
            .nodes
            .iter()
            .filter_map(|n| Some((n, &n.apps.iter().find(|(a, _)| a == app)?.1)))
            .collect();
        nodes.sort_by_key(|(n, _)| std::cmp::Reverse(n.last_seen));
        let list: Vec<Value> = nodes
            .into_iter()
            .map(|(n, version)| {
                json!({
                    "node": n.node,
                    "ip": n.ip,
                    "version": version,
                    "live": crate::report::is_live(n, self.now),
                    "lastSeen": format_time(n.last_seen),
                    "createdAt": format_time(n.created_at),
                })
            })
            .collect();
        let hour = self.hour.get(app).cloned().unwrap_or_default();
        let seen: Vec<&String> = hour.keys().collect();
        json!({
            "nodes": list,
            "seen_providers": seen,
            "lastMinute": self.minute.get(app).cloned().unwrap_or_default(),
            "lastHour": hour,
        })
    }
}
