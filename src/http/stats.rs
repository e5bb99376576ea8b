//! The stats endpoints over [`crate::stats`], as plain async functions, so
//! the server's router, the tests and the load bench all call the same
//! code without a socket:
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/api/post_stats` | HMAC-signed record → 200 `ok`; optional `Idempotency-Key` header |
//! | GET | `/api/aggregated_stats` | `orchestrator`, `region`, `since`, `until` |
//! | GET | `/api/raw_stats` | `orchestrator` (required), `region`, `since`, `until`, `limit`, `cursor` → plus `next` |
//! | GET | `/api/regions` | the configured regions |
//!
//! Wiring: for a path where [`owns`] is true, either call
//! [`handle_request`] with the hyper request (it enforces the body limit
//! while reading), or collect the body yourself with a limit of
//! `max_body + 1` bytes and call [`handle`], which rejects anything over
//! `max_body` (by `Content-Length` and by the bytes it is given).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::HttpResponse;
use crate::stats::store::{Filter, Idempotent, RawCursor, StoreError, normalise};
use crate::stats::{
    INCLUDE_ROUND_TRIP_TIME, StatsApi, Window, aggregated_json, parse_post, unix_now, verify_hmac,
};

/// Paths this module answers.
pub const PATHS: [&str; 4] = [
    "/api/post_stats",
    "/api/aggregated_stats",
    "/api/raw_stats",
    "/api/regions",
];

/// The reply to a post that is unsigned, wrongly signed, or sent while
/// posting is off: the same words in every case, so a prober cannot tell them apart.
pub const UNAUTHENTICATED: &str = "request can not be authenticated";

/// Records per `/api/raw_stats` page when the request gives no `limit`.
pub const RAW_DEFAULT_LIMIT: usize = 1000;

/// The largest `limit` of a `/api/raw_stats` page.
pub const RAW_MAX_LIMIT: usize = 10_000;

/// The header a post may carry so that a retry is stored once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Reads may be cached briefly by browsers and CDNs: scores move on the
/// scale of test rounds (minutes), not seconds.
const READ_CACHE: &str = "public, max-age=30, stale-while-revalidate=15";

/// Whether `path` (trailing `/` ignored) is a stats endpoint.
pub fn owns(path: &str) -> bool {
    PATHS.contains(&trim_path(path))
}

fn trim_path(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    }
}

/// Answers a stats request, or `None` when `path` is not a stats endpoint.
///
/// `query` is the raw query string (no `?`); `body` the request body, which
/// the caller collected with a limit of at least `max_body + 1` bytes.
pub async fn handle(
    api: &StatsApi,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<HttpResponse> {
    let path = trim_path(path);
    if !owns(path) {
        return None;
    }
    let read = *method == Method::GET || *method == Method::HEAD;
    Some(match path {
        "/api/post_stats" if *method == Method::POST => post(api, headers, &body).await,
        "/api/aggregated_stats" if read => aggregated(api, query).await,
        "/api/raw_stats" if read => raw(api, query).await,
        "/api/regions" if read => regions(api),
        _ if *method == Method::OPTIONS => preflight(path),
        _ => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed(path)));
            r
        }
    })
}

/// Answers a hyper request for a path where [`owns`] is true (anything
/// else gets 404). Reads at most `max_body` bytes of the body: a declared
/// `Content-Length` over it is refused before reading, and a chunked body
/// is cut off as soon as it passes it; both are 413.
pub async fn handle_request<B>(api: &StatsApi, req: Request<B>) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if !owns(path) {
        return error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"));
    }
    let bytes = if parts.method == Method::POST {
        match super::body::read(&parts.headers, body, api.max_body).await {
            Ok(b) => b,
            Err(e) => return error(e.status(), e.to_string()),
        }
    } else {
        // Reads take no body; leaving it unread costs nothing (hyper drains or closes).
        Bytes::new()
    };
    match handle(
        api,
        &parts.method,
        path,
        parts.uri.query(),
        &parts.headers,
        bytes,
    )
    .await
    {
        Some(r) => r,
        None => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

fn too_large(api: &StatsApi) -> HttpResponse {
    let e = super::body::BodyError::TooLarge(api.max_body);
    error(e.status(), e.to_string())
}

/// `POST /api/post_stats`. Checks run cheapest first, and nothing is stored
/// unless all pass: posting on, size, signature, then the fields.
async fn post(api: &StatsApi, headers: &HeaderMap, body: &Bytes) -> HttpResponse {
    let Some(secret) = api.secret.as_deref() else {
        return error(StatusCode::FORBIDDEN, UNAUTHENTICATED);
    };
    if super::body::declared_too_large(headers, api.max_body) || body.len() > api.max_body {
        return too_large(api);
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !verify_hmac(secret.as_bytes(), body, auth) {
        tracing::debug!(
            signed = auth.is_some(),
            "stats post refused: bad or missing signature"
        );
        return error(StatusCode::FORBIDDEN, UNAUTHENTICATED);
    }
    let key = match idempotency_key(headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let record = match parse_post(body, &api.regions, unix_now()) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "stats post refused");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let Some(key) = key else {
        return match api.store.insert(&record).await {
            Ok(()) => stored(false),
            Err(e) => internal(&e),
        };
    };
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(body))
    };
    match api.store.insert_idempotent(&record, key, &hash).await {
        Ok(Idempotent::Stored) => stored(false),
        // A retry: answered as the first post was, and stored once.
        Ok(Idempotent::Replayed) => stored(true),
        Ok(Idempotent::Conflict) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was already used with a different body",
        ),
        Err(e) => internal(&e),
    }
}

/// The reply to a stored post (the spec's literal `ok`: producers check
/// only the status). A replayed one says so in `Idempotent-Replayed`.
fn stored(replayed: bool) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// The post's `Idempotency-Key`, if it has one: 1 to 255 visible ASCII
/// characters, given once.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, HttpResponse> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        error(
            StatusCode::BAD_REQUEST,
            format!(
                "Idempotency-Key must be given once, as 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ),
        )
    };
    if values.next().is_some() {
        return Err(bad());
    }
    match v.to_str() {
        Ok(k)
            if (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k))
        }
        _ => Err(bad()),
    }
}

/// The query parameters that matter; the first of a repeated name wins.
#[derive(Default)]
struct Params {
    orchestrator: Option<String>,
    region: Option<String>,
    since: Option<String>,
    until: Option<String>,
    include: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn params(query: Option<&str>) -> Params {
    let mut p = Params::default();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "orchestrator" => &mut p.orchestrator,
            "region" => &mut p.region,
            "since" => &mut p.since,
            "until" => &mut p.until,
            "include" => &mut p.include,
            "limit" => &mut p.limit,
            "cursor" => &mut p.cursor,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    p
}

#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn window(api: &StatsApi, p: &Params) -> Result<Window, HttpResponse> {
    Window::from_params(
        p.since.as_deref(),
        p.until.as_deref(),
        unix_now(),
        api.default_window,
    )
    .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// `GET /api/aggregated_stats`.
async fn aggregated(api: &StatsApi, query: Option<&str>) -> HttpResponse {
    let p = params(query);
    let w = match window(api, &p) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let filter = Filter::new(p.orchestrator.as_deref(), p.region.as_deref(), w);
    let with_rtt = p
        .include
        .as_deref()
        .is_some_and(|v| v.split(',').any(|x| x.trim() == INCLUDE_ROUND_TRIP_TIME));
    match api.store.aggregated(&filter).await {
        Ok(agg) => read_ok(aggregated_json(&agg, with_rtt)),
        Err(e) => internal(&e),
    }
}

/// `GET /api/raw_stats`: `{REGION: [records, newest first]}` of one page,
/// plus `"next": CURSOR` when another page follows (ask again with
/// `cursor=CURSOR`; keyset paging, so rows posted meanwhile never shift a
/// page). A page holds at most `limit` records ([`RAW_DEFAULT_LIMIT`],
/// at most [`RAW_MAX_LIMIT`]).
async fn raw(api: &StatsApi, query: Option<&str>) -> HttpResponse {
    let p = params(query);
    let Some(orchestrator) = normalise(p.orchestrator.as_deref()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "orchestrator is a required parameter",
        );
    };
    let w = match window(api, &p) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let limit = match p.limit.as_deref().map(str::parse::<usize>) {
        None => RAW_DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=RAW_MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a whole number from 1 to {RAW_MAX_LIMIT}"),
            );
        }
    };
    let after = match p.cursor.as_deref().map(RawCursor::parse) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "cursor must be the `next` value of a previous page",
            );
        }
    };
    match api
        .store
        .raw(orchestrator, p.region.as_deref(), &w, limit, after)
        .await
    {
        Ok(page) => match serde_json::to_value(page.records) {
            Ok(mut v) => {
                if let (Some(next), Some(obj)) = (page.next, v.as_object_mut()) {
                    obj.insert("next".into(), next.encode().into());
                }
                read_ok(v)
            }
            Err(e) => internal(&StoreError::Encode(e)),
        },
        Err(e) => internal(&e),
    }
}

/// `GET /api/regions`: `{"regions": [{id, name, type, lat, lon, markets,
/// countries}]}` in configured order. `id`, `name` and `type` are the
/// shape the public service's consumers read; every region here is a
/// transcoding test region.
fn regions(api: &StatsApi) -> HttpResponse {
    let list: Vec<Value> = api
        .regions
        .iter()
        .map(|r| {
            json!({
                "id": r.code,
                "name": r.name,
                "type": "transcoding",
                "lat": r.lat,
                "lon": r.lon,
                "markets": r.markets,
                "countries": r.countries,
            })
        })
        .collect();
    read_ok(json!({ "regions": list }))
}

fn allowed(path: &str) -> &'static str {
    if path == "/api/post_stats" {
        "POST, OPTIONS"
    } else {
        "GET, HEAD, OPTIONS"
    }
}

/// CORS preflight: browsers may read from anywhere; posting needs the
/// signature header, which no browser page holds, but allowing it costs nothing.
fn preflight(path: &str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allowed(path)),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, idempotency-key"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// A 200 read: JSON with sorted keys, CORS open, briefly cacheable.
fn read_ok(v: Value) -> HttpResponse {
    let mut r = json_response(StatusCode::OK, &sorted(v));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(READ_CACHE));
    r
}

/// `{"error": message}`; never cached, so a fixed problem shows at once.
fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    let mut r = json_response(status, &json!({ "error": message.into() }));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A store failure: the detail goes to the log, the client gets a generic 500.
fn internal(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "stats store failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// [`super::json`], readable from any origin (the stats API is public).
fn json_response(status: StatusCode, v: &Value) -> HttpResponse {
    let mut r = super::json(status, v);
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// `v` with every object's keys sorted. The crate builds serde_json with
/// `preserve_order`, so maps keep insertion order unless sorted here.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_nested_keys() {
        let v = sorted(json!({"b": {"z": 1, "a": [{"y": 1, "x": 2}]}, "a": 0}));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a":0,"b":{"a":[{"x":2,"y":1}],"z":1}}"#
        );
    }

    #[test]
    fn params_first_wins_and_decodes() {
        let p = params(Some(
            "orchestrator=0xA%42&orchestrator=x&region=fra&since=1.5&foo=bar",
        ));
        assert_eq!(p.orchestrator.as_deref(), Some("0xAB"));
        assert_eq!(p.region.as_deref(), Some("fra"));
        assert_eq!(p.since.as_deref(), Some("1.5"));
        assert_eq!(p.until, None);
    }

    #[test]
    fn path_ownership() {
        assert!(owns("/api/post_stats") && owns("/api/regions/") && owns("/api/raw_stats"));
        assert!(!owns("/api/applications") && !owns("/") && !owns("/api/post_stats/x"));
    }
}
