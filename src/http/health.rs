//! `/healthcheck` (the server itself) and `/deepcheck` (what it depends
//! on): a list of passing and failing lines, 200 or 503.

use std::time::Duration;

use hyper::StatusCode;

use super::{HttpResponse, json};
use crate::state::State;

fn verdict(ok: Vec<String>, failed: Vec<String>) -> HttpResponse {
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    json(status, &serde_json::json!({ "ok": ok, "failed": failed }))
}

/// `/healthcheck`: the server itself: DNS runtimes beating, the decision
/// listener's accept loop running, JS workers answering.
pub(super) async fn health(state: &State) -> HttpResponse {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let beats = state.dns_heartbeats();
    let stale = beats
        .iter()
        .filter(|age| **age > Duration::from_secs(3))
        .count();
    if beats.is_empty() {
        failed.push("dns: no listeners".to_string());
    } else if stale > 0 {
        failed.push(format!(
            "dns: {stale} of {} runtimes unresponsive",
            beats.len()
        ));
    } else {
        ok.push(format!("dns: {} runtimes responsive", beats.len()));
    }
    if state
        .http_serving
        .load(std::sync::atomic::Ordering::Acquire)
    {
        ok.push("http: decision listener serving".to_string());
    } else {
        failed.push("http: decision listener not serving".to_string());
    }
    match state.workers.ping(Duration::from_millis(500)).await {
        Ok(took) => ok.push(format!("js workers: responsive ({} µs)", took.as_micros())),
        Err(e) => failed.push(format!("js workers: {e}")),
    }
    verdict(ok, failed)
}

/// `/deepcheck`: dependencies: GeoIP databases, stats store, apps, data feeds.
pub(super) async fn deepcheck(state: &State) -> HttpResponse {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let config = state.config.load();
    let status = state.geo.status();
    for (what, configured, loaded) in [
        ("city", config.geo_city.as_ref(), status.city.as_ref()),
        ("asn", config.geo_asn.as_ref(), status.asn.as_ref()),
    ] {
        match (configured, loaded) {
            (None, _) => failed.push(format!("geo {what}: no database configured")),
            (Some(p), _) if !p.exists() => {
                failed.push(format!("geo {what}: {} is missing on disk", p.display()))
            }
            (Some(p), None) => failed.push(format!("geo {what}: {} is not loaded", p.display())),
            (Some(_), Some(db)) => ok.push(format!(
                "geo {what}: {} ({})",
                db.path.display(),
                db.database_type
            )),
        }
    }
    if let Some(e) = state.geo.reload_error() {
        failed.push(format!(
            "geo: the last reload failed, the previous databases still serve: {e}"
        ));
    }
    let apps = state.apps.snapshot();
    if apps.errors.is_empty() {
        ok.push(format!("apps: {} loaded", apps.apps.len()));
    }
    for (name, e) in &apps.errors {
        failed.push(format!("app {name}: {e}"));
    }
    match state.stats.store.ping().await {
        Ok(()) => ok.push("stats store: reachable".to_string()),
        Err(e) => failed.push(format!("stats store: {e}")),
    }
    for line in state.feed_checks() {
        match line {
            Ok(s) => ok.push(s),
            Err(s) => failed.push(s),
        }
    }
    verdict(ok, failed)
}
