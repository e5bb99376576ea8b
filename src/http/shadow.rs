//! `/api/apps/{app}/shadow` on the operations listener: start a candidate
//! version beside a live app (`POST`, bearer token), see what it would
//! change (`GET`), end it (`DELETE`, bearer token). The shadow itself is
//! [`crate::engine::shadow`].

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use super::{HttpResponse, json, json_error};
use crate::engine::shadow::{DEFAULT_PERCENT, Shadow, Status};
use crate::state::State;

/// The app of `/api/apps/{app}/shadow`.
pub(super) fn shadow_path(p: &str) -> Option<&str> {
    p.strip_prefix("/api/apps/")?
        .strip_suffix("/shadow")
        .filter(|a| !a.is_empty() && !a.contains('/'))
}

/// Handles `/api/apps/{app}/shadow` (`path` is one, see [`shadow_path`]).
pub(super) async fn handle(state: Arc<State>, req: Request<Incoming>, app: String) -> HttpResponse {
    let method = req.method().clone();
    if method != Method::GET
        && let Err(r) = super::auth::authorize(&state, &req)
    {
        return r;
    }
    let Some(live) = state.apps.get(&app) else {
        return json_error(StatusCode::NOT_FOUND, format!("unknown app '{app}'"));
    };
    let shadows = state.workers.shadows();
    match method {
        Method::GET => match shadows.get(&app) {
            Some(s) => reply(StatusCode::OK, &app, &s.status()),
            None => json(
                StatusCode::OK,
                &serde_json::json!({ "app": app, "active": false }),
            ),
        },
        Method::DELETE => match shadows.end(&app) {
            Some(last) => reply(StatusCode::OK, &app, &last),
            None => json_error(
                StatusCode::NOT_FOUND,
                format!("app '{app}' has no shadow running"),
            ),
        },
        Method::POST => {
            let limit = state.config.load().max_body_bytes;
            let body = match super::body::json(req, limit).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(source) = body["source"].as_str().map(str::to_string) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "the body must be {\"source\": \"<candidate JavaScript>\", \"percent\": 10}",
                );
            };
            let percent = match &body["percent"] {
                serde_json::Value::Null => DEFAULT_PERCENT,
                v => match v.as_f64() {
                    Some(p) if p > 0.0 && p <= 100.0 => p,
                    _ => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            format!("percent must be a number above 0 and at most 100, not {v}"),
                        );
                    }
                },
            };
            if !live.runnable() {
                return json_error(
                    StatusCode::CONFLICT,
                    format!("app '{app}' has no live version running to compare with"),
                );
            }
            let config = state.config.load_full();
            // Loading runs the candidate's top level and init: off the
            // async threads, and not waited for past a few load budgets.
            let wait = config.budget.load * 4 + Duration::from_millis(500);
            let data = state.data.load_full();
            let loading = tokio::task::spawn_blocking(move || {
                Shadow::load(&live, &source, percent, &config, &data)
            });
            match tokio::time::timeout(wait, loading).await {
                Ok(Ok(Ok(shadow))) => {
                    let started = shadows.begin(shadow);
                    reply(StatusCode::CREATED, &app, &started.status())
                }
                Ok(Ok(Err(fail))) => json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({
                        "error": format!("the candidate does not load: {}", fail.message),
                        "line": fail.line,
                    }),
                ),
                Ok(Err(_)) => json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "loading the candidate failed",
                ),
                Err(_) => json_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the candidate did not load within {} ms (a runaway top level or init)",
                        wait.as_millis()
                    ),
                ),
            }
        }
        _ => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on /api/apps/{app}/shadow"),
        ),
    }
}

/// A shadow's status with its app's name.
fn reply(status: StatusCode, app: &str, s: &Status) -> HttpResponse {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("app".into(), app.into());
    }
    json(status, &v)
}
