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

/// Why a registration or bucket payload is refused; the message names the
/// field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// A value that must be a JSON object is not one.
    #[error("{0} must be a JSON object")]
    NotObject(String),
    /// A required field is absent or null.
    #[error("{0} is missing")]
    Missing(String),
    /// A field that must be a string is not one.
    #[error("{0} must be a string")]
    NotString(String),
    /// A name that is empty or blank.
    #[error("{0} must not be empty")]
    Empty(String),
    /// A name longer than [`MAX_NAME`] bytes or with control characters.
    #[error("{0} must be at most {MAX_NAME} bytes of printable text")]
    NotPrintable(String),
    /// A time that is neither RFC 3339 nor unix milliseconds.
    #[error("{field}: {value} is not an RFC 3339 time or unix milliseconds")]
    Time {
        /// The field.
        field: String,
        /// The value given.
        value: Value,
    },
    /// `apps` is not a list.
    #[error("apps must be a list of {{name, version}}")]
    AppsNotList,
    /// `interval_ms` is not an integer in range.
    #[error("interval_ms: {0} must be an integer from 1 to 86400000")]
    Interval(Value),
    /// The bucket ends before it starts.
    #[error("bucket.stop is before bucket.start")]
    StopBeforeStart,
    /// A count that is not a non-negative integer.
    #[error("{field}: {value} must be a non-negative integer count")]
    Count {
        /// The field (`bucket.apps.APP.PROVIDER.REASON`).
        field: String,
        /// The value given.
        value: Value,
    },
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, PayloadError> {
    v.as_object()
        .ok_or_else(|| PayloadError::NotObject(what.to_string()))
}

fn name(m: &Map<String, Value>, key: &str, what: &str) -> Result<String, PayloadError> {
    match m.get(key) {
        None | Some(Value::Null) => Err(PayloadError::Missing(format!("{what}{key}"))),
        Some(Value::String(s)) => check_name(s, &format!("{what}{key}")).map(|s| s.to_string()),
        Some(_) => Err(PayloadError::NotString(format!("{what}{key}"))),
    }
}

fn check_name<'a>(s: &'a str, what: &str) -> Result<&'a str, PayloadError> {
    if s.trim().is_empty() {
        return Err(PayloadError::Empty(what.to_string()));
    }
    if s.len() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(PayloadError::NotPrintable(what.to_string()));
    }
    Ok(s)
}

fn time(m: &Map<String, Value>, key: &str, what: &str) -> Result<i64, PayloadError> {
    match m.get(key) {
        None | Some(Value::Null) => Err(PayloadError::Missing(format!("{what}{key}"))),
        Some(v) => parse_time(v).ok_or_else(|| PayloadError::Time {
            field: format!("{what}{key}"),
            value: v.clone(),
        }),
    }
}

/// Checks a registration; the error names the field.
pub fn parse_registration(v: &Value) -> Result<Registration, PayloadError> {
    let m = obj(v, "the body")?;
    let fleet = name(m, "fleet", "")?;
    let node = name(m, "node", "")?;
    let apps = match m.get("apps") {
        None | Some(Value::Null) => return Err(PayloadError::Missing("apps".into())),
        Some(Value::Array(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, a) in list.iter().enumerate() {
                let what = format!("apps[{i}].");
                let a = obj(a, &format!("apps[{i}]"))?;
                out.push((name(a, "name", &what)?, name(a, "version", &what)?));
            }
            out
        }
        Some(_) => return Err(PayloadError::AppsNotList),
    };
    let started = time(m, "started", "")?;
    let interval_ms = match m.get("interval_ms") {
        None | Some(Value::Null) => return Err(PayloadError::Missing("interval_ms".into())),
        Some(v) => v
            .as_i64()
            .filter(|n| (1..=86_400_000).contains(n))
            .ok_or_else(|| PayloadError::Interval(v.clone()))?,
    };
    let config_hash = match m.get("config_hash") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(check_name(s, "config_hash")?.to_string()),
        Some(_) => return Err(PayloadError::NotString("config_hash".into())),
    };
    let version = match m.get("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(check_name(s, "version")?.to_string()),
        Some(_) => return Err(PayloadError::NotString("version".into())),
    };
    let snapshots = match m.get("snapshots") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(PayloadError::NotObject("snapshots".into())),
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
pub fn parse_bucket(v: &Value) -> Result<BucketReport, PayloadError> {
    let m = obj(v, "the body")?;
    let fleet = name(m, "fleet", "")?;
    let node = name(m, "node", "")?;
    let b = match m.get("bucket") {
        None | Some(Value::Null) => return Err(PayloadError::Missing("bucket".into())),
        Some(b) => obj(b, "bucket")?,
    };
    let start = time(b, "start", "bucket.")?;
    let stop = time(b, "stop", "bucket.")?;
    if stop < start {
        return Err(PayloadError::StopBeforeStart);
    }
    let apps = match b.get("apps") {
        None | Some(Value::Null) => return Err(PayloadError::Missing("bucket.apps".into())),
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
                let n = n.as_u64().ok_or_else(|| PayloadError::Count {
                    field: what.clone(),
                    value: n.clone(),
                })?;
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
            let e = parse_bucket(&v).unwrap_err().to_string();
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
                .to_string()
                .contains("interval_ms")
        );
        let mut bad = r.clone();
        bad["apps"] = json!([{"name": "www"}]);
        assert!(
            parse_registration(&bad)
                .unwrap_err()
                .to_string()
                .contains("apps[0].version")
        );
        let mut bad = r;
        bad["started"] = json!("noon");
        assert_eq!(
            parse_registration(&bad).unwrap_err().to_string(),
            "started: \"noon\" is not an RFC 3339 time or unix milliseconds"
        );
        let mut bad = json!({"fleet": "f", "node": "n", "apps": {}});
        assert_eq!(
            parse_registration(&bad).unwrap_err().to_string(),
            "apps must be a list of {name, version}"
        );
        bad["apps"] = json!([]);
        bad["started"] = json!(1);
        bad["interval_ms"] = json!(-3);
        assert_eq!(
            parse_registration(&bad).unwrap_err().to_string(),
            "interval_ms: -3 must be an integer from 1 to 86400000"
        );
    }
}
