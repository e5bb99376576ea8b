//! The decision log on the operations listener (bearer token):
//! `GET /api/decisions/log?app=&reason=&provider=&since=&limit=` lists the
//! entries in memory, newest first; `GET /api/decisions/snapshots/{id}`
//! gives a data snapshot an entry names, while it is kept
//! ([`crate::engine::decision_log`]).

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use super::{HttpResponse, json, json_error, query_pairs, text};
use crate::engine::decision_log::{DecisionLog, Filter, KeptSnapshot, Since};
use crate::report::buckets::parse_time;
use crate::state::State;

/// Entries listed when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// The log's paths: served before the decision reports, whose
/// `/api/decisions/{app}` would take them for app names.
pub fn owns(path: &str) -> bool {
    path == "/api/decisions/log" || path.starts_with("/api/decisions/snapshots/")
}

/// Handles one request for a path [`owns`] accepts.
pub fn handle(state: &State, req: &Request<Incoming>, path: &str) -> HttpResponse {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}", req.method()),
        );
    }
    if let Err(r) = super::auth::authorize(state, req) {
        return r;
    }
    let log = &state.decisions;
    if let Some(id) = path.strip_prefix("/api/decisions/snapshots/") {
        return match log.snapshot(id) {
            Some(data) => json(
                StatusCode::OK,
                &serde_json::to_value(KeptSnapshot {
                    id: id.to_string(),
                    data,
                })
                .unwrap_or_default(),
            ),
            None => json_error(StatusCode::NOT_FOUND, format!("no snapshot '{id}' is kept")),
        };
    }
    let (filter, limit) = match parse_query(log, &query_pairs(req)) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    // Kept serialised: the body is their JSON, joined.
    let entries = log.entries(&filter, limit);
    let mut body = String::from("{\"entries\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.json);
    }
    body.push_str("]}");
    text(StatusCode::OK, "application/json", body)
}

/// The filter and limit of a listing, or what is wrong with them.
fn parse_query(log: &DecisionLog, pairs: &[(String, String)]) -> Result<(Filter, usize), String> {
    let mut filter = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in pairs {
        match k.as_str() {
            "app" => filter.app = Some(v.clone()),
            "reason" => filter.reason = Some(v.clone()),
            "provider" => filter.provider = Some(v.clone()),
            "since" => filter.since = Some(parse_since(log, v)?),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("limit: '{v}' is not a positive whole number"))?;
            }
            other => {
                return Err(format!(
                    "unknown parameter '{other}' (known: app, reason, provider, since, limit)"
                ));
            }
        }
    }
    Ok((filter, limit))
}

/// `since`: unix milliseconds, an RFC 3339 time, or an entry id.
fn parse_since(log: &DecisionLog, v: &str) -> Result<Since, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse()
            .map(Since::Time)
            .map_err(|_| format!("since: '{v}' is too large"));
    }
    if let Some(t) = parse_time(&serde_json::Value::String(v.to_string())) {
        return Ok(Since::Time(t));
    }
    log.sequence_of(v).map(Since::After).ok_or_else(|| {
        format!(
            "since: '{v}' is not unix milliseconds, an RFC 3339 time or an entry id of this node"
        )
    })
}
