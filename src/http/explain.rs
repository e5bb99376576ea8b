//! `GET /api/apps/{app}/explain`: why a client gets the provider it gets.
//! The request is described by query parameters named as `switchyard
//! decide`'s flags ([`crate::engine::request::RequestInputs::from_pairs`]);
//! the decision runs on the JS workers under the same budgets as a real
//! one, without changing anything the server keeps, and the report is
//! [`crate::engine::explain::Explanation`].

use std::time::Instant;

use hyper::StatusCode;

use super::{HttpResponse, json, json_error};
use crate::engine::explain::{self, Inputs};
use crate::engine::request::{self, RequestInputs};
use crate::state::State;

/// The app of `/api/apps/{app}/explain`.
pub(super) fn explain_path(p: &str) -> Option<&str> {
    p.strip_prefix("/api/apps/")?
        .strip_suffix("/explain")
        .filter(|a| !a.is_empty() && !a.contains('/'))
}

/// Explains the decision of `app` for the request the query's `pairs`
/// describe: 404 for an unknown app, 400 for inputs that describe no
/// request.
pub(super) async fn explain(state: &State, app: &str, pairs: &[(String, String)]) -> HttpResponse {
    let Some(loaded) = state.apps.get(&app.to_ascii_lowercase()) else {
        return json_error(StatusCode::NOT_FOUND, format!("unknown app '{app}'"));
    };
    let built = match RequestInputs::from_pairs(pairs)
        .and_then(|inputs| request::build(&inputs, &|ip| state.geo.lookup_traced(ip)))
    {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let data = state.data.load_full();
    let zone_ttl = state.config.load().default_ttl();
    let started = Instant::now();
    let (steered, insight) = state
        .workers
        .explain(
            loaded.clone(),
            built.request.clone(),
            data.clone(),
            zone_ttl,
        )
        .await;
    let report = explain::explain(Inputs {
        app: &loaded,
        built,
        data: &data,
        feeds: state.hub.feed_status(),
        steered,
        insight,
        elapsed: started.elapsed(),
    });
    match serde_json::to_value(&report) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => {
            tracing::error!(app, error = %e, "explain report does not serialise");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the report could not be built",
            )
        }
    }
}
