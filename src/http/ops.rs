//! The operations listener's router: health checks, counters, profiles
//! and the `/api/*` views, as `shared/seeds/002_*` describes them. It
//! listens on its own address so none of it is public by accident; each
//! job is its own module ([`super::health`], [`super::vars`],
//! [`super::pprof`], [`super::apps`], [`super::explain`], [`super::stats`],
//! [`super::inventory`], [`super::decision_log`], [`super::reports`],
//! [`super::shadow`]).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use super::apps::{application, applications, lift_quarantine, push_fusion, quarantine_path};
use super::explain::{explain, explain_path};
use super::health::{deepcheck, health};
use super::pprof::{heap, profile};
use super::vars::{render_metrics, vars};
use super::{HttpResponse, json, json_error, text};
use crate::state::State;

/// Handles one request on the operations listener.
pub async fn handle(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    if let Some(refused) = super::auth::gate_read(&state, &req, &path) {
        return refused;
    }
    if super::stats::owns(&path) {
        return super::stats::handle_request(&state.stats, req).await;
    }
    if super::inventory::owns(&path) {
        return super::inventory::handle(state, req, &path).await;
    }
    if super::decision_log::owns(&path) {
        return super::decision_log::handle(&state, &req, &path);
    }
    if super::reports::owns(&path) {
        return super::reports::handle(state, req, &path, peer).await;
    }
    if let Some(app) = super::shadow::shadow_path(&path) {
        let app = app.to_string();
        return super::shadow::handle(state, req, app).await;
    }
    match (method.clone(), path.as_str()) {
        (Method::GET, "/healthcheck") => health(&state).await,
        (Method::GET, "/deepcheck") => deepcheck(&state).await,
        (Method::GET, "/debug/vars") => json(StatusCode::OK, &vars(&state)),
        (Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(&state),
        ),
        (Method::GET, "/debug/pprof/profile") => profile(&req).await,
        (Method::GET, "/debug/pprof/heap") => heap(&req).await,
        (Method::GET, "/api/applications") => applications(&state, &req),
        (Method::POST, "/api/reload") => {
            if let Err(r) = super::auth::authorize(&state, &req) {
                return r;
            }
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || s.apps.reload()).await;
            json(
                StatusCode::OK,
                &serde_json::json!({ "reloaded": true, "apps": state.apps.snapshot().apps.len() }),
            )
        }
        (Method::DELETE, p) if quarantine_path(p).is_some() => {
            if let Err(r) = super::auth::authorize(&state, &req) {
                return r;
            }
            let app = quarantine_path(p).unwrap_or_default().to_string();
            lift_quarantine(&state, app).await
        }
        (Method::GET, p) if explain_path(p).is_some() => {
            if let Err(r) = super::auth::authorize(&state, &req) {
                return r;
            }
            let pairs = super::query_pairs(&req);
            explain(&state, explain_path(p).unwrap_or_default(), &pairs).await
        }
        (Method::GET, p) if p.starts_with("/api/applications/") => {
            application(&state, &p["/api/applications/".len()..])
        }
        (Method::PUT, p) if p.starts_with("/api/fusion/") => {
            if let Err(r) = super::auth::authorize(&state, &req) {
                return r;
            }
            let alias = p["/api/fusion/".len()..].to_string();
            push_fusion(&state, &alias, req).await
        }
        (Method::GET, "/api/feeds") => json(
            StatusCode::OK,
            &serde_json::to_value(state.hub.feed_status()).unwrap_or_default(),
        ),
        (_, p) if known(p) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {p}"),
        ),
        (_, p) => json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {p}")),
    }
}

fn known(p: &str) -> bool {
    matches!(
        p,
        "/healthcheck"
            | "/deepcheck"
            | "/debug/vars"
            | "/metrics"
            | "/debug/pprof/profile"
            | "/debug/pprof/heap"
            | "/api/applications"
            | "/api/reload"
            | "/api/feeds"
    ) || p.starts_with("/api/applications/")
        || p.starts_with("/api/fusion/")
        || quarantine_path(p).is_some()
        || explain_path(p).is_some()
}
