//! The inventory and token API on the operations listener (seed 004's
//! `Query`, `Route`, `Shape`, `GenToken`), every endpoint behind the
//! bearer token:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/inventory` | endpoints with their routes, and providers |
//! | `GET /api/inventory/providers[/{id}]` | providers |
//! | `PUT`/`PATCH`/`DELETE /api/inventory/providers/{id}` | set, change, delete one |
//! | `POST /api/inventory/routes` | a new route `{endpoint, selector, weight, strategy}` |
//! | `DELETE /api/inventory/endpoints/{name}/routes/{id}` | delete a route |
//! | `PUT /api/inventory/endpoints/{name}/weights` | set weights together |
//! | `POST`/`GET /api/tokens`, `DELETE /api/tokens/{id}` | issue, list, revoke tokens (admin token only) |
//!
//! Every body is checked whole before anything is written; a change is
//! one transaction, published before the reply.

use std::collections::HashMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use super::{HttpResponse, json, json_error};
use crate::http::auth::{Caller, authorize, forbidden};
use crate::inventory::model::{self, Provider};
use crate::inventory::store::{Change, CommitError, TokenRow};
use crate::inventory::{View, tokens};
use crate::state::State;

/// True for the paths this module answers.
pub fn owns(path: &str) -> bool {
    path == "/api/inventory"
        || path.starts_with("/api/inventory/")
        || path == "/api/tokens"
        || path.starts_with("/api/tokens/")
}

/// Handles one request under [`owns`].
pub async fn handle(state: Arc<State>, req: Request<Incoming>, path: &str) -> HttpResponse {
    let caller = match authorize(&state, &req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["api", "inventory"]) => json(StatusCode::OK, &query(&state)),
        (Method::GET, ["api", "inventory", "providers"]) => {
            let view = state.inventory.view();
            let rates = rates(&state);
            let list: Vec<Value> = view
                .providers
                .iter()
                .map(|p| provider_json(p, &rates))
                .collect();
            json(StatusCode::OK, &json!({ "providers": list }))
        }
        (Method::GET, ["api", "inventory", "providers", id]) => {
            match state.inventory.view().provider(id) {
                Some(p) => json(StatusCode::OK, &provider_json(p, &rates(&state))),
                None => json_error(StatusCode::NOT_FOUND, format!("unknown provider '{id}'")),
            }
        }
        (Method::PUT | Method::PATCH, ["api", "inventory", "providers", id]) => {
            set_provider(&state, req, id, method == Method::PUT).await
        }
        (Method::DELETE, ["api", "inventory", "providers", id]) => {
            delete_provider(&state, id).await
        }
        (Method::POST, ["api", "inventory", "routes"]) => add_route(&state, req).await,
        (Method::DELETE, ["api", "inventory", "endpoints", name, "routes", id]) => {
            let endpoint = match resolve_endpoint(&state, name) {
                Ok(e) => e,
                Err(r) => return r,
            };
            let change = Change::DeleteRoute {
                endpoint: endpoint.clone(),
                id: (*id).to_string(),
            };
            match commit(&state, change).await {
                Ok(_) => {
                    tracing::info!(endpoint, route = id, "route deleted");
                    json(
                        StatusCode::OK,
                        &json!({ "endpoint": endpoint, "deleted": id }),
                    )
                }
                Err(r) => r,
            }
        }
        (Method::PUT, ["api", "inventory", "endpoints", name, "weights"]) => {
            shape(&state, req, name).await
        }
        (_, ["api", "tokens", ..]) if caller != Caller::Admin => {
            forbidden("tokens are managed with the admin api_token only")
        }
        (Method::POST, ["api", "tokens"]) => issue_token(&state, req).await,
        (Method::GET, ["api", "tokens"]) => {
            let admin = admin_fingerprint(&state);
            let list: Vec<Value> = state
                .inventory
                .view()
                .tokens
                .iter()
                .map(|t| token_json(t, &admin))
                .collect();
            json(StatusCode::OK, &json!({ "tokens": list }))
        }
        (Method::DELETE, ["api", "tokens", id]) => {
            match commit(
                &state,
                Change::DeleteToken {
                    id: (*id).to_string(),
                },
            )
            .await
            {
                Ok(_) => {
                    tracing::info!(token = id, "API token revoked");
                    json(StatusCode::OK, &json!({ "revoked": id }))
                }
                Err(r) => r,
            }
        }
        (
            _,
            ["api", "inventory"]
            | ["api", "inventory", "providers", ..]
            | ["api", "inventory", "routes"]
            | ["api", "tokens"]
            | ["api", "tokens", _]
            | ["api", "inventory", "endpoints", _, "weights"]
            | ["api", "inventory", "endpoints", _, "routes", _],
        ) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// Commits, mapping failures to replies.
async fn commit(
    state: &State,
    change: Change,
) -> Result<crate::inventory::store::Committed, HttpResponse> {
    state.inventory.commit(change).await.map_err(|e| match e {
        CommitError::NotFound(m) => json_error(StatusCode::NOT_FOUND, m),
        CommitError::Conflict(m) => json_error(StatusCode::CONFLICT, m),
        CommitError::Db(e) => {
            tracing::error!(error = %e, "inventory change failed in the store");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the inventory store is unavailable; nothing was changed",
            )
        }
    })
}

/// The app an endpoint name means: the app name itself, or one of its DNS
/// names (`foo.<zone>`, `<prefix>.foo.<zone>`, with or without the dot).
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn resolve_endpoint(state: &State, name: &str) -> Result<String, HttpResponse> {
    let apps = state.apps.snapshot();
    let known =
        |n: &str| apps.apps.contains_key(n) || state.inventory.view().routes.contains_key(n);
    if known(name) {
        return Ok(name.to_string());
    }
    let fqdn = name.trim_end_matches('.').to_ascii_lowercase();
    for zone in &state.config.load().zones {
        let zone = zone.name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rest) = fqdn.strip_suffix(&format!(".{zone}"))
            && let Some(app) = rest.rsplit('.').next()
            && known(app)
        {
            return Ok(app.to_string());
        }
    }
    Err(json_error(
        StatusCode::NOT_FOUND,
        format!("unknown endpoint '{name}': no app of that name"),
    ))
}

/// Requests per second by provider: this node's decisions over the last
/// minute's buckets divided by the time they cover (60 to 70 s, less while
/// the node has been up for less), rounded to hundredths.
fn rates(state: &State) -> HashMap<String, f64> {
    let (counts, span_ms) = state.counters.recent_by_provider(60);
    counts
        .into_iter()
        .map(|(p, n)| (p, (n as f64 * 100_000.0 / span_ms as f64).round() / 100.0))
        .collect()
}

fn provider_json(p: &Provider, rates: &HashMap<String, f64>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), p.id.clone().into());
    m.extend(p.fields_json());
    m.insert(
        "requests_per_second".into(),
        json!(rates.get(&p.id).copied().unwrap_or(0.0)),
    );
    m.insert(
        "source".into(),
        serde_json::to_value(p.source).unwrap_or_default(),
    );
    Value::Object(m)
}

fn routes_json(view: &View, endpoint: &str) -> Vec<Value> {
    view.routes
        .get(endpoint)
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    json!({
                        "id": r.route.id,
                        "selector": r.route.selector,
                        "weight": r.route.weight,
                        "strategy": r.route.strategy,
                        "providers": r.providers,
                        "created_at": r.route.created_at,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /api/inventory`: Backplane's `Query`.
fn query(state: &State) -> Value {
    let view = state.inventory.view();
    let apps = state.apps.snapshot();
    let config = state.config.load();
    let mut names: Vec<&String> = apps.apps.keys().chain(view.routes.keys()).collect();
    names.sort();
    names.dedup();
    let endpoints: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let dns: Vec<String> = config
                .zones
                .iter()
                .flat_map(|z| [format!("{name}.{}", z.name), format!("*.{name}.{}", z.name)])
                .collect();
            json!({
                "name": name,
                "names": dns,
                "path": format!("/apps/{name}/decision"),
                "app_loaded": apps.apps.contains_key(name),
                "created_at": view.endpoints.get(name.as_str()),
                "routes": routes_json(&view, name),
            })
        })
        .collect();
    let rates = rates(state);
    let providers: Vec<Value> = view
        .providers
        .iter()
        .map(|p| provider_json(p, &rates))
        .collect();
    json!({ "version": view.version, "endpoints": endpoints, "providers": providers })
}

async fn set_provider(
    state: &State,
    req: Request<Incoming>,
    id: &str,
    replace: bool,
) -> HttpResponse {
    if let Err(e) = model::check_provider_id(id) {
        return json_error(StatusCode::BAD_REQUEST, e.0);
    }
    let body = match super::body::json(req, state.config.load().max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let fields = match model::check_fields(&body, id) {
        Ok(f) => f,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let in_config = state
        .inventory
        .config_providers()
        .iter()
        .any(|p| p.id == id);
    let exists = in_config || state.inventory.view().provider(id).is_some();
    if !replace && !exists {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("unknown provider '{id}' (PUT creates one)"),
        );
    }
    if !exists && state.inventory.view().providers.len() >= model::MAX_PROVIDERS {
        return json_error(
            StatusCode::CONFLICT,
            format!(
                "the inventory holds its most providers ({}); delete one first",
                model::MAX_PROVIDERS
            ),
        );
    }
    let fields = if replace {
        model::full_fields(fields)
    } else {
        fields
    };
    let change = Change::SetProvider {
        id: id.to_string(),
        fields: fields.clone(),
        replace,
        // PATCH of an API provider: it must still be there when we write.
        require_row: !replace && !in_config,
    };
    if let Err(r) = commit(state, change).await {
        return r;
    }
    let view = state.inventory.view();
    let Some(p) = view.provider(id) else {
        return json_error(StatusCode::NOT_FOUND, format!("unknown provider '{id}'"));
    };
    let changed = Value::Object(fields).to_string();
    tracing::info!(
        provider = id,
        state = p.state.as_str(),
        changed = %changed,
        "provider {}",
        if replace { "set" } else { "changed" }
    );
    let status = if replace && !exists {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(status, &provider_json(p, &rates(state)))
}

async fn delete_provider(state: &State, id: &str) -> HttpResponse {
    if state
        .inventory
        .config_providers()
        .iter()
        .any(|p| p.id == id)
    {
        return json_error(
            StatusCode::CONFLICT,
            format!(
                "provider '{id}' is defined in the config: drain it (state draining or down), or remove it from the config"
            ),
        );
    }
    match commit(state, Change::DeleteProvider { id: id.to_string() }).await {
        Ok(_) => {
            tracing::info!(provider = id, "provider deleted");
            json(StatusCode::OK, &json!({ "deleted": id }))
        }
        Err(r) => r,
    }
}

/// `POST /api/inventory/routes`: Backplane's `Route`.
async fn add_route(state: &State, req: Request<Incoming>) -> HttpResponse {
    let body = match super::body::json(req, state.config.load().max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let route = match model::check_new_route(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let endpoint = match resolve_endpoint(state, &route.endpoint) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let change = Change::AddRoute {
        endpoint: endpoint.clone(),
        selector: route.selector.clone(),
        weight: route.weight,
        strategy: route.strategy.clone(),
    };
    let done = match commit(state, change).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let id = done.route_id.unwrap_or_default();
    let view = state.inventory.view();
    let providers = view
        .routes
        .get(&endpoint)
        .and_then(|rs| rs.iter().find(|r| r.route.id == id))
        .map(|r| r.providers.clone())
        .unwrap_or_default();
    tracing::info!(endpoint, route = %id, selector = %route.selector, weight = route.weight, "route added");
    json(
        StatusCode::CREATED,
        &json!({
            "endpoint": endpoint,
            "id": id,
            "selector": route.selector,
            "weight": route.weight,
            "strategy": route.strategy,
            "providers": providers,
        }),
    )
}

/// `PUT /api/inventory/endpoints/{name}/weights`: Backplane's `Shape`.
async fn shape(state: &State, req: Request<Incoming>, name: &str) -> HttpResponse {
    let body = match super::body::json(req, state.config.load().max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let weights = match model::check_shape(&body) {
        Ok(w) => w,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.0),
    };
    let endpoint = match resolve_endpoint(state, name) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let change = Change::Shape {
        endpoint: endpoint.clone(),
        weights: weights.clone(),
    };
    if let Err(r) = commit(state, change).await {
        return r;
    }
    tracing::info!(endpoint, weights = %json!(weights), "endpoint shaped");
    let view = state.inventory.view();
    json(
        StatusCode::OK,
        &json!({ "endpoint": endpoint, "routes": routes_json(&view, &endpoint) }),
    )
}

/// A token as listed; `valid` is false for one issued under an admin
/// token that has since been rotated (it is refused; revoke it to tidy).
fn token_json(t: &TokenRow, admin: &str) -> Value {
    json!({ "id": t.id, "name": t.name, "created_at": t.created_at, "valid": t.admin == admin })
}

/// The fingerprint of the admin token in use (empty with the API off).
fn admin_fingerprint(state: &State) -> String {
    state
        .config
        .load()
        .api_token
        .as_deref()
        .map(tokens::admin_fingerprint)
        .unwrap_or_default()
}

/// `POST /api/tokens {"name": ...}`: Backplane's `GenToken`. The secret is
/// in this reply only.
async fn issue_token(state: &State, req: Request<Incoming>) -> HttpResponse {
    let body = match super::body::json(req, state.config.load().max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = match &body {
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| k.as_str() != "name") {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("'{k}' is not a token field (known: name)"),
                );
            }
            match o.get("name") {
                None => "unnamed".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return json_error(StatusCode::BAD_REQUEST, "name must be a string"),
            }
        }
        _ => return json_error(StatusCode::BAD_REQUEST, "the body must be {\"name\": ...}"),
    };
    if let Err(e) = tokens::check_name(&name) {
        return json_error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if state.inventory.view().tokens.len() >= model::MAX_TOKENS {
        return json_error(
            StatusCode::CONFLICT,
            format!(
                "{} tokens are issued, the most held; revoke some first",
                model::MAX_TOKENS
            ),
        );
    }
    let (id, secret) = match tokens::generate() {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cannot read random bytes for a token");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot generate a token");
        }
    };
    let row = TokenRow {
        id: id.clone(),
        name: name.clone(),
        hash: tokens::hash(&secret),
        created_at: crate::inventory::store::now(),
        admin: admin_fingerprint(state),
    };
    if let Err(r) = commit(state, Change::AddToken(row.clone())).await {
        return r;
    }
    tracing::info!(token = %id, name = %name, "API token issued");
    let mut v = token_json(&row, &row.admin);
    v["token"] = Value::String(secret);
    json(StatusCode::CREATED, &v)
}
