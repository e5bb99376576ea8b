//! The inventory's domain types and the checks every change passes before
//! anything is written: providers (Backplane's backends), routes, shapes.
//!
//! Bodies are parsed by hand from `serde_json::Value` rather than derived,
//! so every error names the field (`labels.tier`, `weights.route003`) and
//! unknown fields are refused instead of silently ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::selector::{Selector, check_key, check_value};
use crate::openmix::ProviderInfo;

/// Largest route weight.
pub const MAX_WEIGHT: u64 = 1_000_000;
/// Most routes one endpoint may have.
pub const MAX_ROUTES: usize = 256;
/// Most providers the inventory holds (configured and added).
pub const MAX_PROVIDERS: usize = 1024;
/// Most issued tokens held (revoked ones are deleted).
pub const MAX_TOKENS: usize = 1000;
/// Most labels on one provider.
pub const MAX_LABELS: usize = 64;
/// Longest location text field.
const MAX_TEXT: usize = 100;

/// How a route picks among its providers once it is chosen.
pub const STRATEGIES: [&str; 3] = ["random", "first", "least_load"];

/// Whether a provider takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderState {
    /// Taking traffic.
    #[default]
    Up,
    /// Out of service (failed, or taken out by an operator).
    Down,
    /// Being emptied before maintenance: apps steer new requests away.
    Draining,
}

impl ProviderState {
    /// Parses `up`, `down` or `draining`.
    pub fn parse(s: &str) -> Option<ProviderState> {
        match s {
            "up" => Some(ProviderState::Up),
            "down" => Some(ProviderState::Down),
            "draining" => Some(ProviderState::Draining),
            _ => None,
        }
    }

    /// The name as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Up => "up",
            ProviderState::Down => "down",
            ProviderState::Draining => "draining",
        }
    }

    /// True when apps should send it traffic.
    pub fn is_up(self) -> bool {
        self == ProviderState::Up
    }
}

/// Where a provider is (Backplane's `Location`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Degrees north; `proximity_dist` measures to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Degrees east.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// City name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city_name: Option<String>,
    /// ISO country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Country name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_name: Option<String>,
    /// Continent code (the Openmix market: `EU`, `NA`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent_code: Option<String>,
    /// Continent name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent_name: Option<String>,
    /// Region code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_code: Option<String>,
    /// Region name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_name: Option<String>,
}

const LOCATION_TEXT: [&str; 7] = [
    "city_name",
    "country_code",
    "country_name",
    "continent_code",
    "continent_name",
    "region_code",
    "region_name",
];

/// Where a provider's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[providers.<id>]` in the config, possibly changed through the API.
    Config,
    /// Created through the API.
    Api,
}

/// A provider as the inventory holds it (Backplane's `Backend`).
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// The alias apps use.
    pub id: String,
    /// What `respond` usually gives (a host name or an address).
    pub host: Option<String>,
    /// `k=v` labels routes select on.
    pub labels: BTreeMap<String, String>,
    /// Where it is.
    pub location: Location,
    /// Whether it takes traffic.
    pub state: ProviderState,
    /// Operator- or agent-reported load (a number the operator defines).
    pub load: u64,
    /// Config or API.
    pub source: Source,
}

impl Provider {
    /// The provider's fields as JSON (no `id`, `source` or counters):
    /// what is stored, and what `getData('inventory')` gives apps.
    pub fn fields_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "host".into(),
            self.host.clone().map_or(Value::Null, Value::String),
        );
        m.insert(
            "labels".into(),
            serde_json::to_value(&self.labels).unwrap_or_default(),
        );
        m.insert(
            "location".into(),
            serde_json::to_value(&self.location).unwrap_or_default(),
        );
        m.insert("state".into(), Value::String(self.state.as_str().into()));
        m.insert("load".into(), Value::from(self.load));
        m
    }

    /// A provider with only an id: up, no labels, nowhere.
    pub fn bare(id: &str, source: Source) -> Provider {
        Provider {
            id: id.to_string(),
            host: None,
            labels: BTreeMap::new(),
            location: Location::default(),
            state: ProviderState::Up,
            load: 0,
            source,
        }
    }

    /// Applies checked fields (see [`check_fields`]) over this provider.
    pub fn apply(&mut self, fields: &Map<String, Value>) {
        for (k, v) in fields {
            match k.as_str() {
                "host" => self.host = v.as_str().map(str::to_string),
                "labels" => {
                    self.labels = serde_json::from_value(v.clone()).unwrap_or_default();
                }
                "location" => {
                    self.location = serde_json::from_value(v.clone()).unwrap_or_default();
                }
                "state" => {
                    if let Some(s) = v.as_str().and_then(ProviderState::parse) {
                        self.state = s;
                    }
                }
                "load" => self.load = v.as_u64().unwrap_or(0),
                _ => {}
            }
        }
    }
}

/// A checking error, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Checks a provider id: 1–63 of `a-z A-Z 0-9 _ -`, the alias apps use.
pub fn check_provider_id(id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "provider id '{id}' must be 1-63 letters, digits, '_' or '-'"
        )))
    }
}

/// Checks a host: a DNS name, an IP address, or an http(s) URL.
pub fn check_host(host: &str) -> Result<(), Invalid> {
    if host.starts_with("http://") || host.starts_with("https://") {
        return url::Url::parse(host)
            .map(|_| ())
            .map_err(|e| invalid(format!("host: '{host}' is not a valid URL: {e}")));
    }
    crate::openmix::decision::classify_host(host)
        .map(|_| ())
        .map_err(|e| invalid(format!("host: {e}")))
}

/// Checks a labels object (`{"tier": "edge"}`); `field` names it in errors.
fn check_labels(v: &Value, field: &str) -> Result<BTreeMap<String, String>, Invalid> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(format!("{field} must be an object of label → string")))?;
    if obj.len() > MAX_LABELS {
        return Err(invalid(format!(
            "{field}: {} labels (at most {MAX_LABELS})",
            obj.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        check_key(k).map_err(|e| invalid(format!("{field}: {e}")))?;
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(invalid(format!("{field}.{k} must be a string"))),
        };
        check_value(&s).map_err(|e| invalid(format!("{field}.{k}: {e}")))?;
        out.insert(k.clone(), s);
    }
    Ok(out)
}

/// Checks a location object; `field` names it in errors.
fn check_location(v: &Value, field: &str) -> Result<Location, Invalid> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(format!("{field} must be an object")))?;
    let mut loc = Location::default();
    for (k, v) in obj {
        match k.as_str() {
            "latitude" | "longitude" => {
                let n = v
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| invalid(format!("{field}.{k} must be a number")))?;
                let limit = if k == "latitude" { 90.0 } else { 180.0 };
                if n.abs() > limit {
                    return Err(invalid(format!(
                        "{field}.{k}: {n} is out of range (±{limit})"
                    )));
                }
                if k == "latitude" {
                    loc.latitude = Some(n);
                } else {
                    loc.longitude = Some(n);
                }
            }
            name if LOCATION_TEXT.contains(&name) => {
                if v.is_null() {
                    continue;
                }
                let s = v
                    .as_str()
                    .ok_or_else(|| invalid(format!("{field}.{k} must be a string")))?;
                if s.chars().count() > MAX_TEXT || s.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "{field}.{k} must be at most {MAX_TEXT} printable characters"
                    )));
                }
                let slot = match name {
                    "city_name" => &mut loc.city_name,
                    "country_code" => &mut loc.country_code,
                    "country_name" => &mut loc.country_name,
                    "continent_code" => &mut loc.continent_code,
                    "continent_name" => &mut loc.continent_name,
                    "region_code" => &mut loc.region_code,
                    _ => &mut loc.region_name,
                };
                *slot = Some(s.to_string());
            }
            other => {
                return Err(invalid(format!(
                    "{field}.{other} is not a location field (known: latitude, longitude, {})",
                    LOCATION_TEXT.join(", ")
                )));
            }
        }
    }
    if loc.latitude.is_some() != loc.longitude.is_some() {
        return Err(invalid(format!(
            "{field}: give both latitude and longitude, or neither"
        )));
    }
    Ok(loc)
}

/// Checks provider fields from an API body (`PUT`/`PATCH`) or the config,
/// and returns them normalised (labels as strings, location checked).
/// Unknown fields are refused, naming them; `id` may be given if it
/// equals `id`.
pub fn check_fields(body: &Value, id: &str) -> Result<Map<String, Value>, Invalid> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object of provider fields"))?;
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "id" => {
                if v.as_str() != Some(id) {
                    return Err(invalid(format!("id: the body says {v}, the path '{id}'")));
                }
            }
            "host" => match v {
                Value::Null => {
                    out.insert("host".into(), Value::Null);
                }
                Value::String(h) => {
                    check_host(h)?;
                    out.insert("host".into(), v.clone());
                }
                _ => return Err(invalid("host must be a string or null")),
            },
            "labels" => {
                let labels = check_labels(v, "labels")?;
                out.insert(
                    "labels".into(),
                    serde_json::to_value(labels).unwrap_or_default(),
                );
            }
            "location" => {
                let loc = check_location(v, "location")?;
                out.insert(
                    "location".into(),
                    serde_json::to_value(loc).unwrap_or_default(),
                );
            }
            "state" => {
                let s = v.as_str().and_then(ProviderState::parse).ok_or_else(|| {
                    invalid(format!("state: {v} is not one of up, down, draining"))
                })?;
                out.insert("state".into(), Value::String(s.as_str().into()));
            }
            "load" => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| invalid(format!("load: {v} is not a whole number ≥ 0")))?;
                out.insert("load".into(), Value::from(n));
            }
            // Read-only fields a client may echo back from a GET.
            "source" | "requests_per_second" => {}
            other => {
                return Err(invalid(format!(
                    "'{other}' is not a provider field (known: host, labels, location, state, load)"
                )));
            }
        }
    }
    Ok(out)
}

/// A `PUT` body: every field, those left out at their defaults.
pub fn full_fields(fields: Map<String, Value>) -> Map<String, Value> {
    let mut p = Provider::bare("", Source::Api);
    p.apply(&fields);
    p.fields_json()
}

/// The inventory fields of a configured provider: `host` (else its
/// `cname`), `labels`, `state`, `load`, a `location` table, and the
/// top-level `latitude`/`longitude` apps already use for proximity.
pub fn from_config(id: &str, info: &ProviderInfo) -> Result<Provider, Invalid> {
    check_provider_id(id).map_err(|e| invalid(format!("providers.{id}: {e}")))?;
    let s = &info.settings;
    let mut body = Map::new();
    // `host` wins over `cname`; both are checked (apps read `cname` too),
    // and a bad one is an error naming its key, never silently dropped.
    for key in ["cname", "host"] {
        let Some(v) = s.get(key) else { continue };
        let h = v
            .as_str()
            .ok_or_else(|| invalid(format!("providers.{id}.{key}: {v} is not a string")))?;
        check_host(h).map_err(|e| {
            let why = e.0.strip_prefix("host: ").unwrap_or(&e.0).to_string();
            invalid(format!("providers.{id}.{key}: {why}"))
        })?;
        body.insert("host".into(), Value::String(h.into()));
    }
    for key in ["labels", "state", "load"] {
        if let Some(v) = s.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
    let mut location = s
        .get("location")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(obj) = location.as_object_mut() {
        for (k, v) in [("latitude", info.latitude), ("longitude", info.longitude)] {
            if let Some(v) = v {
                if let Some(other) = obj.get(k).and_then(Value::as_f64)
                    && other != v
                {
                    return Err(invalid(format!(
                        "providers.{id}: {k} = {v} and location.{k} = {other} disagree"
                    )));
                }
                obj.insert(k.into(), Value::from(v));
            }
        }
    }
    body.insert("location".into(), location);
    let fields = check_fields(&Value::Object(body), id)
        .map_err(|e| invalid(format!("providers.{id}.{e}")))?;
    let mut p = Provider::bare(id, Source::Config);
    p.apply(&fields);
    Ok(p)
}

/// A route as stored: which providers of an endpoint get how much traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// `route000`, `route001`, ... within its endpoint.
    pub id: String,
    /// The label selector, canonical form.
    pub selector: String,
    /// Share of the endpoint's traffic, relative to its other routes.
    pub weight: u64,
    /// How the route picks among its providers ([`STRATEGIES`]).
    pub strategy: String,
    /// Unix seconds.
    pub created_at: f64,
}

/// A checked `POST /api/inventory/routes` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRoute {
    /// Endpoint (app) name as given.
    pub endpoint: String,
    /// Canonical selector.
    pub selector: String,
    /// Weight.
    pub weight: u64,
    /// Strategy.
    pub strategy: String,
}

/// Checks a weight value; `field` names it in errors.
pub fn check_weight(v: &Value, field: &str) -> Result<u64, Invalid> {
    match v.as_u64() {
        Some(n) if n <= MAX_WEIGHT => Ok(n),
        Some(n) => Err(invalid(format!("{field}: {n} is over {MAX_WEIGHT}"))),
        None if v.as_i64().is_some_and(|n| n < 0) || v.as_f64().is_some_and(|n| n < 0.0) => {
            Err(invalid(format!("{field}: {v} is negative")))
        }
        None => Err(invalid(format!(
            "{field}: {v} is not a whole number from 0 to {MAX_WEIGHT}"
        ))),
    }
}

/// Checks a route body.
pub fn check_new_route(body: &Value) -> Result<NewRoute, Invalid> {
    let obj = body.as_object().ok_or_else(|| {
        invalid("the body must be a JSON object {endpoint, selector, weight, strategy}")
    })?;
    for k in obj.keys() {
        if !["endpoint", "selector", "weight", "strategy"].contains(&k.as_str()) {
            return Err(invalid(format!(
                "'{k}' is not a route field (known: endpoint, selector, weight, strategy)"
            )));
        }
    }
    let endpoint = obj
        .get("endpoint")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("endpoint: required, the app name"))?
        .to_string();
    let selector = obj
        .get("selector")
        .ok_or_else(|| invalid("selector: required, e.g. \"tier=edge\""))?;
    let selector = selector
        .as_str()
        .ok_or_else(|| invalid("selector must be a string"))?;
    let selector = Selector::parse(selector)
        .map_err(|e| invalid(format!("selector: {e}")))?
        .to_string();
    let weight = match obj.get("weight") {
        None => 1,
        Some(v) => check_weight(v, "weight")?,
    };
    let strategy = match obj.get("strategy") {
        None | Some(Value::Null) => "random".to_string(),
        Some(Value::String(s)) if STRATEGIES.contains(&s.as_str()) => s.clone(),
        Some(v) => {
            return Err(invalid(format!(
                "strategy: {v} is not one of {}",
                STRATEGIES.join(", ")
            )));
        }
    };
    Ok(NewRoute {
        endpoint,
        selector,
        weight,
        strategy,
    })
}

/// Checks a shape body `{"route000": 80, ...}`: at least one route, each
/// weight whole and in range. Route ids are checked against the store.
pub fn check_shape(body: &Value) -> Result<BTreeMap<String, u64>, Invalid> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object of route id → weight"))?;
    if obj.is_empty() {
        return Err(invalid("no weights given"));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        if !is_route_id(k) {
            return Err(invalid(format!(
                "'{k}' is not a route id (route000, route001, ...)"
            )));
        }
        out.insert(k.clone(), check_weight(v, k)?);
    }
    Ok(out)
}

/// True for `route` followed by three or more digits.
pub fn is_route_id(s: &str) -> bool {
    s.strip_prefix("route")
        .is_some_and(|d| d.len() >= 3 && d.len() <= 9 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The id of the `n`th route of an endpoint.
pub fn route_id(n: u64) -> String {
    format!("route{n:03}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_checked_and_named() {
        let ok = check_fields(
            &json!({"host": "cdn-a.example.net", "labels": {"tier": "edge", "n": 3},
                    "state": "draining", "load": 5,
                    "location": {"latitude": 1.5, "longitude": 2.5, "city_name": "Paris"}}),
            "cdn_a",
        )
        .unwrap();
        assert_eq!(ok["labels"]["n"], "3");
        for (body, needle) in [
            (json!({"state": "sleeping"}), "state"),
            (json!({"labels": {"bad key": "x"}}), "labels"),
            (json!({"labels": {"tier": "a b"}}), "labels.tier"),
            (json!({"labels": "tier=edge"}), "labels must be"),
            (json!({"load": -1}), "load"),
            (json!({"host": "not a host!"}), "host"),
            (
                json!({"location": {"latitude": 91, "longitude": 0}}),
                "location.latitude",
            ),
            (json!({"location": {"latitude": 1}}), "both"),
            (json!({"location": {"altitude": 1}}), "location.altitude"),
            (json!({"colour": "red"}), "'colour'"),
            (json!({"id": "other"}), "id"),
            (json!([1]), "object"),
        ] {
            let e = check_fields(&body, "cdn_a").expect_err(&body.to_string()).0;
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn config_hosts_are_checked_and_named() {
        let info = |v: Value| crate::openmix::ProviderInfo {
            settings: v.as_object().unwrap().clone(),
            ..Default::default()
        };
        let p = from_config("a", &info(json!({"cname": "a.example.net"}))).unwrap();
        assert_eq!(p.host.as_deref(), Some("a.example.net"));
        let p = from_config(
            "a",
            &info(json!({"cname": "a.example.net", "host": "192.0.2.1"})),
        )
        .unwrap();
        assert_eq!(p.host.as_deref(), Some("192.0.2.1"), "host wins");
        for (v, needle) in [
            (json!({"cname": "not a host!"}), "providers.a.cname: "),
            (json!({"host": "bad_host!"}), "providers.a.host: "),
            (json!({"host": 7}), "providers.a.host: 7 is not a string"),
            (
                json!({"host": "192.0.2.1", "cname": "x y"}),
                "providers.a.cname",
            ),
        ] {
            let e = from_config("a", &info(v.clone()))
                .expect_err(&v.to_string())
                .0;
            assert!(e.contains(needle), "{v}: {e}");
        }
    }

    #[test]
    fn routes_and_shapes() {
        let r = check_new_route(
            &json!({"endpoint": "weighted", "selector": "tier = edge", "weight": 80}),
        )
        .unwrap();
        assert_eq!(
            (r.selector.as_str(), r.weight, r.strategy.as_str()),
            ("tier=edge", 80, "random")
        );
        for (body, needle) in [
            (json!({"endpoint": "w", "selector": "tier"}), "selector"),
            (
                json!({"endpoint": "w", "selector": "a=b", "weight": -5}),
                "negative",
            ),
            (
                json!({"endpoint": "w", "selector": "a=b", "weight": 1.5}),
                "whole",
            ),
            (
                json!({"endpoint": "w", "selector": "a=b", "strategy": "fastest"}),
                "strategy",
            ),
            (json!({"selector": "a=b"}), "endpoint"),
            (
                json!({"endpoint": "w", "selector": "a=b", "extra": 1}),
                "'extra'",
            ),
        ] {
            let e = check_new_route(&body).expect_err(&body.to_string()).0;
            assert!(e.contains(needle), "{body}: {e}");
        }
        assert_eq!(
            check_shape(&json!({"route000": 80, "route001": 20}))
                .unwrap()
                .len(),
            2
        );
        assert!(
            check_shape(&json!({"route000": -1}))
                .unwrap_err()
                .0
                .contains("route000")
        );
        assert!(
            check_shape(&json!({"r0": 1}))
                .unwrap_err()
                .0
                .contains("'r0'")
        );
        assert!(check_shape(&json!({})).is_err());
        assert_eq!(route_id(7), "route007");
        assert!(is_route_id("route1000") && !is_route_id("route01") && !is_route_id("routeabc"));
    }

    #[test]
    fn config_providers() {
        let info: ProviderInfo = serde_json::from_value(json!({
            "cname": "cdn-a.example.net", "latitude": 37.77, "longitude": -122.42,
            "labels": {"tier": "edge"}, "location": {"city_name": "San Francisco"}
        }))
        .unwrap();
        let p = from_config("cdn_a", &info).unwrap();
        assert_eq!(p.host.as_deref(), Some("cdn-a.example.net"));
        assert_eq!(p.location.latitude, Some(37.77));
        assert_eq!(p.location.city_name.as_deref(), Some("San Francisco"));
        assert_eq!(p.labels["tier"], "edge");
        let bad: ProviderInfo = serde_json::from_value(json!({"state": "sideways"})).unwrap();
        assert!(
            from_config("x", &bad)
                .unwrap_err()
                .0
                .contains("providers.x.state")
        );
    }
}
