//! The apps and feeds views of the operations listener:
//! `/api/applications[/{app}]`, `DELETE /api/apps/{app}/quarantine`, and
//! `PUT /api/fusion/{alias}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::{HttpResponse, json, json_error, query_pairs};

/// Milliseconds since the Unix epoch of `t` (0 before it).
fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
use crate::state::State;

/// `PUT /api/fusion/{alias}`: an operator pushes a provider's Fusion data.
pub(super) async fn push_fusion(
    state: &State,
    alias: &str,
    req: Request<Incoming>,
) -> HttpResponse {
    if alias.is_empty() || alias.contains('/') {
        return json_error(
            StatusCode::BAD_REQUEST,
            "the path must name one provider: /api/fusion/{alias}",
        );
    }
    let (parts, body) = req.into_parts();
    let body =
        match super::body::read(&parts.headers, body, state.config.load().max_body_bytes).await {
            Ok(b) => b,
            Err(e) => return e.response(),
        };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return json_error(StatusCode::BAD_REQUEST, "the body must be UTF-8 text");
    };
    if let Err(e) = state.hub.set_fusion(alias, text) {
        let status = match e {
            crate::data::FusionRefused::UnknownProvider => StatusCode::NOT_FOUND,
            crate::data::FusionRefused::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        return json_error(status, format!("{alias}: {e}"));
    }
    state
        .hub
        .feed_result(&crate::data::Feed::FusionPush(alias.to_string()), Ok(()));
    json(
        StatusCode::OK,
        &serde_json::json!({ "provider": alias, "stored": true }),
    )
}

/// The app of `/api/apps/{app}/quarantine`.
pub(super) fn quarantine_path(p: &str) -> Option<&str> {
    p.strip_prefix("/api/apps/")?
        .strip_suffix("/quarantine")
        .filter(|a| !a.is_empty() && !a.contains('/'))
}

/// `DELETE /api/apps/{app}/quarantine`: an operator lifts a quarantine;
/// the app's current version is loaded again and runs.
pub(super) async fn lift_quarantine(state: &Arc<State>, app: String) -> HttpResponse {
    let Some(entry) = state.quarantine.lift(&app) else {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("app '{app}' is not quarantined"),
        );
    };
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || s.apps.reload()).await;
    let status = state
        .apps
        .snapshot()
        .apps
        .get(&app)
        .map(|a| if a.runnable() { "ok" } else { "error" });
    json(
        StatusCode::OK,
        &serde_json::json!({ "app": app, "lifted": entry, "status": status }),
    )
}

/// `/api/applications[?provider=p]`: every app loaded here or seen in the
/// fleet (registered by a node, or deciding this hour), with version,
/// status, settings and the fleet's view of it; with `provider`, only the
/// apps that declared it (`requireProvider`) or chose it in the fleet this
/// hour.
pub(super) fn applications(state: &State, req: &Request<Incoming>) -> HttpResponse {
    let set = state.apps.snapshot();
    let fleet = super::reports::FleetApps::read(state);
    let mut names: BTreeSet<String> = set.apps.keys().chain(set.errors.keys()).cloned().collect();
    names.extend(fleet.names());
    if let Some((_, p)) = query_pairs(req).into_iter().find(|(k, _)| k == "provider") {
        names.retain(|n| {
            set.apps
                .get(n)
                .is_some_and(|a| a.meta.providers.contains(&p))
                || fleet.chose(n, &p)
        });
    }
    let list: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let mut v = app_summary(state, n);
            if let (Some(o), serde_json::Value::Object(f)) = (v.as_object_mut(), fleet.app(n)) {
                o.extend(f);
            }
            v
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "applications": list }))
}

fn app_summary(state: &State, name: &str) -> serde_json::Value {
    let set = state.apps.snapshot();
    let app = set.apps.get(name);
    let error = set.errors.get(name);
    let loaded = app.filter(|a| a.load_error.is_none());
    let status = match (app, error) {
        (Some(a), _) if a.quarantine.is_some() => "quarantined",
        (Some(a), _) if a.load_error.is_some() => "error",
        (Some(_), None) => "ok",
        (Some(_), Some(_)) => "error (previous version serving)",
        (None, Some(_)) => "error",
        // Not loaded here: other nodes of the fleet serve it, or it
        // decided somewhere in the fleet this hour.
        (None, None) => "elsewhere",
    };
    serde_json::json!({
        "name": name,
        "status": status,
        "version": loaded.map(|a| a.code.version),
        "loaded_at_ms": loaded.map(|a| unix_ms(a.loaded_at)),
        "file": app.map(|a| a.code.path.display().to_string()),
        "last_error": error.map(|e| serde_json::json!({
            "at": format!("{}{}", e.file.display(), e.line.map(|l| format!(":{l}")).unwrap_or_default()),
            "message": e.message,
            "time_ms": unix_ms(e.at),
        })),
        "quarantine": app.and_then(|a| a.quarantine.as_ref()).map(|q| serde_json::json!({
            "reason": q.reason, "since_ms": q.since_ms, "evidence": q.evidence,
        })),
        "providers": app.map(|a| a.meta.providers.clone()).unwrap_or_default(),
        "cors": app.and_then(|a| a.meta.cors.clone()),
        "proximity": app.is_some_and(|a| a.meta.proximity),
    })
}

/// `/api/applications/{app}`: the summary plus names, settings and recent
/// decision counts per provider.
pub(super) fn application(state: &State, name: &str) -> HttpResponse {
    let set = state.apps.snapshot();
    let fleet = super::reports::FleetApps::read(state);
    if !set.apps.contains_key(name)
        && !set.errors.contains_key(name)
        && !fleet.names().contains(name)
    {
        return json_error(StatusCode::NOT_FOUND, format!("unknown app '{name}'"));
    }
    let mut v = app_summary(state, name);
    let config = state.config.load();
    let names: Vec<String> = config
        .zones
        .iter()
        .flat_map(|z| [format!("{name}.{}", z.name), format!("*.{name}.{}", z.name)])
        .collect();
    let counts = |secs| {
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((provider, reason), n) in state.counters.recent(name, secs) {
            out.entry(provider).or_default().insert(reason, n);
        }
        out
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("names".into(), names.into());
        if let Some(app) = set.apps.get(name) {
            obj.insert(
                "settings".into(),
                serde_json::json!({
                    "ttl": app.settings.ttl,
                    "fallback": app.settings.fallback,
                    "budget_ms": app.settings.budget.decision.as_millis() as u64,
                    "memory_mb": (app.settings.budget.memory >> 20) as u64,
                    "providers": app.settings.providers,
                    "sidecar": app.sidecar,
                }),
            );
        }
        obj.insert(
            "last_minute".into(),
            serde_json::to_value(counts(60)).unwrap_or_default(),
        );
        obj.insert(
            "last_hour".into(),
            serde_json::to_value(counts(3600)).unwrap_or_default(),
        );
        // The fleet's view (this node's own counts above stay as they were).
        if let serde_json::Value::Object(f) = fleet.app(name) {
            obj.extend(f);
        }
    }
    json(StatusCode::OK, &v)
}
