//! The reports' payloads, their validation, and the storage seam
//! [`ReportStore`], implemented over SQLite and PostgreSQL by the
//! database layer (`crate::db`), in the stats store's database (tables
//! from migrations `0004_reports.sql` and `0005_report_ids.sql`).
//!
//! A payload is checked whole before anything is written, and each write
//! is one transaction: a bad or half-sent payload stores nothing.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::buckets::{Counts, StoredBucket, parse_time};

/// Longest fleet, node, app, provider, reason or version string.
pub const MAX_NAME: usize = 200;

/// `POST /api/nodes/register`.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// Fleet name.
    pub fleet: String,
    /// Node id.
    pub node: String,
    /// (app, version: content hash).
    pub apps: Vec<(String, String)>,
    /// Unix ms the node started.
    pub started: i64,
    /// How often the node reports.
    pub interval_ms: i64,
    /// Hash of the node's configuration (optional).
    pub config_hash: Option<String>,
    /// The node's Switchyard version (optional).
    pub version: Option<String>,
    /// Data snapshot versions and ages the node publishes (optional).
    pub snapshots: Map<String, Value>,
}

/// `POST /api/decisions`.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketReport {
    /// Fleet name.
    pub fleet: String,
    /// Node id.
    pub node: String,
    /// Unix ms.
    pub start: i64,
    /// Unix ms.
    pub stop: i64,
    /// The counts.
    pub counts: Counts,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Fleet.
    pub fleet: String,
    /// Node id.
    pub node: String,
    /// Address it registered from, when known.
    pub ip: Option<String>,
    /// The registration's fields.
    pub apps: Vec<(String, String)>,
    /// Unix ms.
    pub started: i64,
    /// Report interval.
    pub interval_ms: i64,
    /// Config hash.
    pub config_hash: Option<String>,
    /// Switchyard version.
    pub version: Option<String>,
    /// Published snapshot versions and ages.
    pub snapshots: Map<String, Value>,
    /// First registration, unix ms.
    pub created_at: i64,
    /// Last registration or bucket, unix ms.
    pub last_seen: i64,
    /// Last bucket received, unix ms.
    pub last_push: Option<i64>,
}

/// The store failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The database failed.
    #[error("reports database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Where registrations and buckets live.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Stores (or refreshes) a node's registration.
    async fn register(
        &self,
        r: &Registration,
        ip: Option<&str>,
        now: i64,
    ) -> Result<(), ReportError>;
    /// Stores one bucket (and marks the node seen) in one transaction.
    async fn insert_bucket(&self, b: &BucketReport, now: i64) -> Result<i64, ReportError>;
    /// The fleet's buckets with an id above `after_id` that stopped after
    /// `stop_after` (unix ms), by id. Ids grow in commit order and are
    /// never reused, so a reader that asks for the rows after the largest
    /// id it has read misses none.
    async fn buckets_after(
        &self,
        fleet: &str,
        after_id: i64,
        stop_after: i64,
    ) -> Result<Vec<StoredBucket>, ReportError>;
    /// Every node of the fleet.
    async fn nodes(&self, fleet: &str) -> Result<Vec<NodeRow>, ReportError>;
    /// Deletes buckets that stopped before `buckets_before` and nodes not
    /// seen since `nodes_before`.
    async fn prune(&self, buckets_before: i64, nodes_before: i64) -> Result<(), ReportError>;
    /// Until `stop`, wakes `wake` when another node of `fleet` may have
    /// written a bucket (PostgreSQL: LISTEN/NOTIFY). The default never
    /// wakes: a SQLite store has one node, and polling stays the record.
    async fn listen(&self, fleet: String, wake: Arc<Notify>, stop: CancellationToken) {
        let _ = (fleet, wake);
        stop.cancelled().await;
    }
}

/// Apps as stored: a JSON list of `{name, version}`.
pub fn apps_json(apps: &[(String, String)]) -> String {
    Value::Array(
        apps.iter()
            .map(|(n, v)| serde_json::json!({ "name": n, "version": v }))
            .collect(),
    )
    .to_string()
}

/// Reads [`apps_json`] back (a row edited into garbage reads as none).
pub fn parse_apps(text: &str) -> Vec<(String, String)> {
    serde_json::from_str::<Vec<Map<String, Value>>>(text)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            Some((
                m.get("name")?.as_str()?.to_string(),
                m.get("version")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Reads stored counts (garbage reads as empty).
pub fn parse_counts(text: &str) -> Counts {
    serde_json::from_str(text).unwrap_or_default()
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} must be a JSON object"))
}

fn name(m: &Map<String, Value>, key: &str, what: &str) -> Result<String, String> {
    match m.get(key) {
        None | Some(Value::Null) => Err(format!("{what}{key} is missing")),
        Some(Value::String(s)) => check_name(s, &format!("{what}{key}")).map(|s| s.to_string()),
        Some(_) => Err(format!("{what}{key} must be a string")),
    }
}

fn check_name<'a>(s: &'a str, what: &str) -> Result<&'a str, String> {
    if s.trim().is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if s.len() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be at most {MAX_NAME} bytes of printable text"
        ));
    }
    Ok(s)
}

fn time(m: &Map<String, Value>, key: &str, what: &str) -> Result<i64, String> {
    match m.get(key) {
        None | Some(Value::Null) => Err(format!("{what}{key} is missing")),
        Some(v) => parse_time(v).ok_or_else(|| {
            format!("{what}{key}: {v} is not an RFC 3339 time or unix milliseconds")
        }),
    }
}

/// Checks a registration; the error names the field.
pub fn parse_registration(v: &Value) -> Result<Registration, String> {
    let m = obj(v, "the body")?;
    let fleet = name(m, "fleet", "")?;
    let node = name(m, "node", "")?;
    let apps = match m.get("apps") {
        None | Some(Value::Null) => return Err("apps is missing".into()),
        Some(Value::Array(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, a) in list.iter().enumerate() {
                let what = format!("apps[{i}].");
                let a = obj(a, &format!("apps[{i}]"))?;
                out.push((name(a, "name", &what)?, name(a, "version", &what)?));
            }
            out
        }
        Some(_) => return Err("apps must be a list of {name, version}".into()),
    };
    let started = time(m, "started", "")?;
    let interval_ms = match m.get("interval_ms") {
        None | Some(Value::Null) => return Err("interval_ms is missing".into()),
        Some(v) => v
            .as_i64()
            .filter(|n| (1..=86_400_000).contains(n))
            .ok_or_else(|| format!("interval_ms: {v} must be an integer from 1 to 86400000"))?,
    };
    let config_hash = match m.get("config_hash") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(check_name(s, "config_hash")?.to_string()),
        Some(_) => return Err("config_hash must be a string".into()),
    };
    let version = match m.get("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(check_name(s, "version")?.to_string()),
        Some(_) => return Err("version must be a string".into()),
    };
    let snapshots = match m.get("snapshots") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err("snapshots must be a JSON object".into()),
    };
    Ok(Registration {
        fleet,
        node,
        apps,
        started,
        interval_ms,
        config_hash,
        version,
        snapshots,
    })
}

/// Checks a bucket; the error names the field.
pub fn parse_bucket(v: &Value) -> Result<BucketReport, String> {
    let m = obj(v, "the body")?;
    let fleet = name(m, "fleet", "")?;
    let node = name(m, "node", "")?;
    let b = match m.get("bucket") {
        None | Some(Value::Null) => return Err("bucket is missing".into()),
        Some(b) => obj(b, "bucket")?,
    };
    let start = time(b, "start", "bucket.")?;
    let stop = time(b, "stop", "bucket.")?;
    if stop < start {
        return Err("bucket.stop is before bucket.start".into());
    }
    let apps = match b.get("apps") {
        None | Some(Value::Null) => return Err("bucket.apps is missing".into()),
        Some(a) => obj(a, "bucket.apps")?,
    };
    let mut counts = Counts::new();
    for (app, providers) in apps {
        let what = format!("bucket.apps.{app}");
        check_name(app, "bucket.apps: an app name")?;
        for (provider, reasons) in obj(providers, &what)? {
            let what = format!("{what}.{provider}");
            check_name(provider, &format!("{what}: the provider name"))?;
            for (reason, n) in obj(reasons, &what)? {
                let what = format!("{what}.{reason}");
                check_name(reason, &format!("{what}: the reason"))?;
                let n = n
                    .as_u64()
                    .ok_or_else(|| format!("{what}: {n} must be a non-negative integer count"))?;
                counts
                    .entry(app.clone())
                    .or_default()
                    .entry(provider.clone())
                    .or_default()
                    .insert(reason.clone(), n);
            }
        }
    }
    Ok(BucketReport {
        fleet,
        node,
        start,
        stop,
        counts,
    })
}

/// The JSON of a registration (what a pushing node sends).
pub fn registration_json(r: &Registration) -> Value {
    serde_json::json!({
        "fleet": r.fleet,
        "node": r.node,
        "apps": r.apps.iter().map(|(n, v)| serde_json::json!({"name": n, "version": v})).collect::<Vec<_>>(),
        "started": super::buckets::format_time(r.started),
        "interval_ms": r.interval_ms,
        "config_hash": r.config_hash,
        "version": r.version,
        "snapshots": r.snapshots,
    })
}

/// The JSON of a bucket (what a pushing node sends).
pub fn bucket_json(b: &BucketReport) -> Value {
    serde_json::json!({
        "fleet": b.fleet,
        "node": b.node,
        "bucket": {
            "start": super::buckets::format_time(b.start),
            "stop": super::buckets::format_time(b.stop),
            "apps": b.counts,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"fleet": "f", "node": "n", "bucket": {"start": "2026-01-01T00:00:00Z",
            "stop": "2026-01-01T00:00:10Z", "apps": {"www": {"cdn_a": {"A": 3, "fallback": 0}}}}})
    }

    #[test]
    fn buckets_round_trip_and_bad_fields_are_named() {
        let b = parse_bucket(&good()).unwrap();
        assert_eq!(b.counts["www"]["cdn_a"]["A"], 3);
        assert_eq!(parse_bucket(&bucket_json(&b)).unwrap(), b);
        let cases: Vec<(&str, Value)> = vec![
            ("fleet", json!({"node": "n", "bucket": good()["bucket"]})),
            (
                "node",
                json!({"fleet": "f", "node": "", "bucket": good()["bucket"]}),
            ),
            ("bucket is missing", json!({"fleet": "f", "node": "n"})),
            (
                "bucket.start",
                json!({"fleet": "f", "node": "n", "bucket": {"start": "soon", "stop": 5, "apps": {}}}),
            ),
            (
                "before",
                json!({"fleet": "f", "node": "n", "bucket": {"start": 10, "stop": 5, "apps": {}}}),
            ),
            (
                "bucket.apps.www.cdn_a.A",
                json!({"fleet": "f", "node": "n", "bucket": {"start": 1, "stop": 5, "apps": {"www": {"cdn_a": {"A": -1}}}}}),
            ),
            (
                "bucket.apps.www",
                json!({"fleet": "f", "node": "n", "bucket": {"start": 1, "stop": 5, "apps": {"www": 3}}}),
            ),
        ];
        for (needle, v) in cases {
            let e = parse_bucket(&v).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn registrations_check_every_field() {
        let r = json!({"fleet": "f", "node": "n", "apps": [{"name": "www", "version": "abc"}],
            "started": "2026-01-01T00:00:00Z", "interval_ms": 10000});
        let got = parse_registration(&r).unwrap();
        assert_eq!(got.apps, vec![("www".into(), "abc".into())]);
        assert_eq!(parse_registration(&registration_json(&got)).unwrap(), got);
        let mut bad = r.clone();
        bad["interval_ms"] = json!(0);
        assert!(
            parse_registration(&bad)
                .unwrap_err()
                .contains("interval_ms")
        );
        let mut bad = r.clone();
        bad["apps"] = json!([{"name": "www"}]);
        assert!(
            parse_registration(&bad)
                .unwrap_err()
                .contains("apps[0].version")
        );
        let mut bad = r;
        bad["started"] = json!("noon");
        assert!(parse_registration(&bad).unwrap_err().contains("started"));
    }
}
