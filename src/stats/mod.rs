//! The leaderboard stats API (`shared/spec/leaderboard.md`): stream testers
//! post one record per test of an orchestrator from a region; readers get
//! per-orchestrator, per-region scores or the raw records.
//!
//! - this file: the domain, free of sqlx and hyper: [`StatsRecord`] and its
//!   checked parser [`parse_post`], the post signature [`verify_hmac`], the
//!   query [`Window`], and the score math ([`AggRow`]);
//! - [`regions`]: the configured [`RegionSet`];
//! - [`store`]: the [`StatsStore`] trait (its SQLite and PostgreSQL
//!   implementation is the database layer's, `crate::db`);

// Everything public here is the lead's and the probe refresher's API: keep it documented.
#![warn(missing_docs)]

pub mod regions;
pub mod service;
pub mod store;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

pub use regions::{GLOBAL, Region, RegionError, RegionSet};
pub use service::StatsApi;
pub use store::{
    Aggregated, Filter, Idempotent, RawCursor, RawPage, RawRecords, StatsStore, StoreError,
};

/// One test result, as posted and as stored (normalised: region upper-case,
/// orchestrator lower-case, timestamp filled in).
///
/// Every numeric field is optional on the wire and defaults to 0, as in the
/// service being replaced (a Go struct's zero values), so readers see the
/// same numbers they saw there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRecord {
    /// Test region code, upper-case, one of the configured regions.
    pub region: String,
    /// Orchestrator address, lower-case (addresses are hex; testers differ in case).
    pub orchestrator: String,
    /// Start of the test, unix seconds (fractional allowed).
    pub timestamp: f64,
    /// Segments sent to the orchestrator.
    pub segments_sent: i64,
    /// Segments that came back transcoded.
    pub segments_received: i64,
    /// Fraction 0–1 of the expected segments received.
    pub success_rate: f64,
    /// Source segment duration, seconds.
    pub seg_duration: f64,
    /// Upload + transcode + download of a segment, seconds.
    pub round_trip_time: f64,
    /// Upload time, seconds.
    pub upload_time: f64,
    /// Download time, seconds.
    pub download_time: f64,
    /// Transcode time, seconds.
    pub transcode_time: f64,
    /// Errors seen during the test.
    pub errors: Vec<ErrorCount>,
}

/// One kind of error a test saw, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    /// The error's code or message, as the tester reported it.
    pub error_code: String,
    /// How many times it happened.
    pub count: u64,
}

/// Why a post was refused: each is a 400 whose message names the field, so
/// the operator of a misbehaving tester can fix it from the reply alone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PostError {
    /// The body is not JSON (or not UTF-8, or a number overflows f64).
    #[error("body is not valid JSON: {0}")]
    BadJson(String),
    /// An object of the body names one key twice: JSON parsers disagree on
    /// which value wins (serde_json takes the last, others the first), so
    /// what was signed is ambiguous.
    #[error("body names the key {0:?} twice in one object")]
    DuplicateKey(String),
    /// The body is JSON but not an object.
    #[error("body must be a JSON object")]
    NotAnObject,
    /// A required field is absent, null or empty.
    #[error("{0} is a required field")]
    Missing(&'static str),
    /// A field has the wrong type or an out-of-range value.
    #[error("{field} must be {expected}")]
    Invalid {
        /// The field, with an index for entries of `errors` (`errors[2].count`).
        field: String,
        /// What the field must be.
        expected: &'static str,
    },
    /// `region` is not one of the configured regions.
    #[error("region {0:?} is not a configured region")]
    UnknownRegion(String),
}

impl PostError {
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::BadJson(_) | Self::NotAnObject => None,
            Self::DuplicateKey(k) => Some(k),
            Self::Missing(f) => Some(f),
            Self::Invalid { field, .. } => Some(field),
            Self::UnknownRegion(_) => Some("region"),
        }
    }
}

/// The first key named twice in one object of `body` (valid JSON), if any.
fn duplicate_key(body: &[u8]) -> Option<String> {
    struct Unique;
    struct Visitor;
    const MARK: &str = "\u{0}duplicate key:";
    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
            d.deserialize_any(Visitor)
        }
    }
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Unique;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
            while a.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = a.next_key::<String>()? {
                a.next_value::<Unique>()?;
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!("{MARK}{key}")));
                }
            }
            Ok(Unique)
        }
    }
    match serde_json::from_slice::<Unique>(body) {
        Ok(Unique) => None,
        Err(e) => {
            let text = e.to_string();
            let rest = text.split_once(MARK)?.1;
            // serde_json appends " at line L column C".
            let key = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
            Some(key.to_string())
        }
    }
}

/// Longest orchestrator accepted: addresses are 42 characters; the slack
/// allows other identifiers without letting one post fill a page of rows.
const MAX_ORCHESTRATOR_LEN: usize = 256;

/// Parses and checks one posted body. `now` (unix seconds) stands in for a
/// missing or zero `timestamp`. Unknown fields are ignored, so testers may
/// send more than this server stores.
pub fn parse_post(body: &[u8], regions: &RegionSet, now: f64) -> Result<StatsRecord, PostError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PostError::BadJson(e.to_string()))?;
    if let Some(key) = duplicate_key(body) {
        return Err(PostError::DuplicateKey(truncate(&key, 64)));
    }
    let Value::Object(obj) = value else {
        return Err(PostError::NotAnObject);
    };

    let region = required_str(&obj, "region")?;
    let region = match regions.get(&region) {
        Some(r) => r.code.clone(),
        None => return Err(PostError::UnknownRegion(truncate(&region, 64))),
    };
    let orchestrator = required_str(&obj, "orchestrator")?.to_lowercase();
    if orchestrator.chars().count() > MAX_ORCHESTRATOR_LEN
        || orchestrator.chars().any(char::is_control)
    {
        return Err(PostError::Invalid {
            field: "orchestrator".into(),
            expected: "at most 256 printable characters",
        });
    }

    let timestamp = non_negative(&obj, "timestamp")?;
    let timestamp = if timestamp == 0.0 { now } else { timestamp };
    let success_rate = non_negative(&obj, "success_rate")?;
    if success_rate > 1.0 {
        // A fraction, not a percentage: the README's 91.5 would otherwise
        // push every score built on it past 1.
        return Err(invalid("success_rate", "a fraction between 0 and 1"));
    }

    Ok(StatsRecord {
        region,
        orchestrator,
        timestamp,
        segments_sent: count(&obj, "segments_sent")?,
        segments_received: count(&obj, "segments_received")?,
        success_rate,
        seg_duration: non_negative(&obj, "seg_duration")?,
        round_trip_time: non_negative(&obj, "round_trip_time")?,
        upload_time: non_negative(&obj, "upload_time")?,
        download_time: non_negative(&obj, "download_time")?,
        transcode_time: non_negative(&obj, "transcode_time")?,
        errors: errors(obj.get("errors"))?,
    })
}

fn invalid(field: &str, expected: &'static str) -> PostError {
    PostError::Invalid {
        field: field.into(),
        expected,
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A string field that must be present and non-blank; returned trimmed.
fn required_str(obj: &Map<String, Value>, field: &'static str) -> Result<String, PostError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(PostError::Missing(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(PostError::Missing(field)),
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(_) => Err(invalid(field, "a string")),
    }
}

/// An optional finite number ≥ 0; absent or null is 0.
fn non_negative(obj: &Map<String, Value>, field: &'static str) -> Result<f64, PostError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(invalid(field, "a finite number ≥ 0")),
        },
        Some(_) => Err(invalid(field, "a number")),
    }
}

/// An optional whole number ≥ 0; absent or null is 0. `10.0` is accepted
/// as 10, since some JSON encoders write every number as a float.
fn count(obj: &Map<String, Value>, field: &'static str) -> Result<i64, PostError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => whole(v).ok_or_else(|| invalid(field, "a whole number ≥ 0")),
    }
}

fn whole(v: &Value) -> Option<i64> {
    let Value::Number(n) = v else { return None };
    if let Some(i) = n.as_i64() {
        return (i >= 0).then_some(i);
    }
    let x = n.as_f64()?;
    // Beyond 2^53 an f64 no longer holds whole numbers exactly; no test sends that many segments.
    (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 9_007_199_254_740_992.0)
        .then_some(x as i64)
}

/// `errors`: an array of `{error_code, count}` objects or plain strings
/// (count 1), as both generations of the tester send one or the other.
fn errors(v: Option<&Value>) -> Result<Vec<ErrorCount>, PostError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("errors", "an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let e = match item {
            Value::String(s) => ErrorCount {
                error_code: s.clone(),
                count: 1,
            },
            Value::Object(o) => {
                let error_code = match o.get("error_code") {
                    Some(Value::String(s)) => s.clone(),
                    // Some testers send numeric codes (HTTP statuses).
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        return Err(PostError::Invalid {
                            field: format!("errors[{i}].error_code"),
                            expected: "a string",
                        });
                    }
                };
                let count = match o.get("count") {
                    None | Some(Value::Null) => 1,
                    Some(c) => whole(c).ok_or_else(|| PostError::Invalid {
                        field: format!("errors[{i}].count"),
                        expected: "a whole number ≥ 0",
                    })? as u64,
                };
                ErrorCount { error_code, count }
            }
            _ => {
                return Err(PostError::Invalid {
                    field: format!("errors[{i}]"),
                    expected: "a string or an {error_code, count} object",
                });
            }
        };
        out.push(e);
    }
    Ok(out)
}

type HmacSha256 = Hmac<Sha256>;

/// Whether `header` (the `Authorization` value) is the hex HMAC-SHA256 of
/// the raw `body` keyed with `secret`. Either hex case is accepted; the
/// comparison is constant-time (`Mac::verify_slice`), so a forger learns
/// nothing from how long a wrong guess took.
pub fn verify_hmac(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(given) = header.map(str::trim) else {
        return false;
    };
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The lower-case hex HMAC-SHA256 of `body`: what a tester puts in
/// `Authorization`. Used by tests and the load bench.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps it panic-free anyway.
    match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The current time in unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The span of posted `timestamp`s a read covers, bounds inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Earliest timestamp; `None` means from the beginning.
    pub since: Option<f64>,
    /// Latest timestamp.
    pub until: f64,
}

/// A `since` or `until` that is not a number: 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param} must be a number of unix seconds, got {value:?}")]
pub struct WindowError {
    /// `since` or `until`.
    pub param: &'static str,
    /// What was given (at most 64 characters of it).
    pub value: String,
}

impl Window {
    /// The spec's rules: neither bound → the last `default_span`; `until`
    /// only → everything up to `until` (the README's rule); `since` only →
    /// `since` … `now`. Empty values count as absent (`?since=` is what a
    /// form with a blank field sends).
    pub fn from_params(
        since: Option<&str>,
        until: Option<&str>,
        now: f64,
        default_span: Duration,
    ) -> Result<Self, WindowError> {
        let since = parse_bound("since", since)?;
        let until = parse_bound("until", until)?;
        Ok(match (since, until) {
            (None, None) => Window {
                since: Some(now - default_span.as_secs_f64()),
                until: now,
            },
            (None, Some(u)) => Window {
                since: None,
                until: u,
            },
            (Some(s), None) => Window {
                since: Some(s),
                until: now,
            },
            (Some(s), Some(u)) => Window {
                since: Some(s),
                until: u,
            },
        })
    }

    /// Whether `ts` lies inside.
    pub fn contains(&self, ts: f64) -> bool {
        self.since.is_none_or(|s| ts >= s) && ts <= self.until
    }
}

fn parse_bound(param: &'static str, v: Option<&str>) -> Result<Option<f64>, WindowError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    // f64's parser also takes "inf" and "NaN"; neither is a time.
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(WindowError {
            param,
            value: truncate(v, 64),
        }),
    }
}

/// One orchestrator's scores in one region over a window. Fields are in
/// alphabetical order so the JSON keys come out sorted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AggRow {
    /// The README's name for `round_trip_score`.
    pub latency_score: f64,
    /// `1 − exp(−seg / rtt)`: near 1 when a segment comes back much faster than real time.
    pub round_trip_score: f64,
    /// Mean round-trip time in seconds. Not part of the public
    /// `aggregated_stats` row (the spec fixes its keys) unless a reader asks
    /// with `include=round_trip_time` ([`aggregated_json`]): the probe
    /// refresher does, locally or from a remote Switchyard, for `getProbe('http_rtt')`.
    #[serde(skip)]
    pub round_trip_time: f64,
    /// `success_rate × round_trip_score`.
    pub score: f64,
    /// Mean success rate, 0–1.
    pub success_rate: f64,
    /// The README's name for `score`.
    pub total_score: f64,
}

impl AggRow {
    /// The scores from the plain means of the window's events.
    pub fn from_means(success_rate: f64, seg_duration: f64, round_trip_time: f64) -> Self {
        let sr = if success_rate.is_finite() {
            success_rate
        } else {
            0.0
        };
        let rts = round_trip_score(seg_duration, round_trip_time);
        let score = finite_or_zero(sr * rts);
        AggRow {
            latency_score: rts,
            round_trip_score: rts,
            round_trip_time: if round_trip_time.is_finite() {
                round_trip_time
            } else {
                0.0
            },
            score,
            success_rate: sr,
            total_score: score,
        }
    }
}

/// `1 − exp(−seg / rtt)`, 0 when `rtt` is 0 (no timing measured) and never
/// NaN, since consumers' JSON parsers reject NaN.
pub fn round_trip_score(seg_duration: f64, round_trip_time: f64) -> f64 {
    if round_trip_time.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        || !seg_duration.is_finite()
        || !round_trip_time.is_finite()
    {
        return 0.0;
    }
    finite_or_zero(1.0 - (-seg_duration / round_trip_time).exp())
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// The `include` value of `GET /api/aggregated_stats` that adds each row's
/// mean `round_trip_time` (seconds). The spec's public row leaves it out;
/// a Switchyard reading another one as its remote probe source asks for it,
/// since `getProbe('http_rtt')` is that mean and no public score gives it back.
pub const INCLUDE_ROUND_TRIP_TIME: &str = "round_trip_time";

/// The aggregate as `{orch: {REGION: row}}` JSON. With `with_round_trip_time`
/// each row also carries its mean `round_trip_time` in seconds (left out
/// when no post of the window measured one, as `http_rtt` would then be 0 ms).
pub fn aggregated_json(rows: &Aggregated, with_round_trip_time: bool) -> Value {
    let mut out = serde_json::Map::new();
    for (orch, regions) in rows {
        let mut by_region = serde_json::Map::new();
        for (region, row) in regions {
            // An AggRow is plain finite numbers; encoding it cannot fail.
            let mut v = serde_json::to_value(row).unwrap_or_default();
            if with_round_trip_time
                && row.round_trip_time > 0.0
                && let Some(obj) = v.as_object_mut()
            {
                obj.insert(INCLUDE_ROUND_TRIP_TIME.into(), row.round_trip_time.into());
            }
            by_region.insert(region.clone(), v);
        }
        out.insert(orch.clone(), by_region.into());
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_700_000_000.0;

    fn parse(body: &str) -> Result<StatsRecord, PostError> {
        parse_post(body.as_bytes(), &RegionSet::default(), NOW)
    }

    /// The spec's worked values. It quotes six decimals computed from
    /// means it also rounds to six figures (2.00886 / 1.94704 gives
    /// 0.6436175 exactly), so agreement holds to that rounding, 5e-6.
    #[test]
    fn worked_values() {
        const TOL: f64 = 5e-6;
        let a = AggRow::from_means(1.0, 2.00886, 1.94704);
        assert!((a.round_trip_score - 0.643616).abs() < TOL, "{a:?}");
        assert!((a.score - 0.643616).abs() < TOL);
        assert_eq!(a.latency_score, a.round_trip_score);
        assert_eq!(a.total_score, a.score);
        let b = AggRow::from_means(1.0, 2.08047, 0.634866);
        assert!((b.round_trip_score - 0.962259).abs() < TOL, "{b:?}");
        assert!((b.score - 0.962259).abs() < TOL);
        let half = AggRow::from_means(0.5, 2.08047, 0.634866);
        assert!((half.score - 0.5 * b.score).abs() < 1e-12);
    }

    #[test]
    fn never_nan() {
        for (sr, seg, rtt) in [
            (1.0, 2.0, 0.0),
            (1.0, 0.0, 0.0),
            (f64::NAN, 1.0, 1.0),
            (1.0, f64::NAN, 1.0),
            (1.0, 1.0, f64::INFINITY),
            (1.0, f64::INFINITY, 1.0),
            (1.0, 1.0, -1.0),
        ] {
            let r = AggRow::from_means(sr, seg, rtt);
            for x in [r.success_rate, r.round_trip_score, r.score] {
                assert!(x.is_finite(), "{sr} {seg} {rtt} → {r:?}");
            }
        }
        assert_eq!(round_trip_score(2.0, 0.0), 0.0);
    }

    #[test]
    fn reference_hmac_vector() {
        // `printf '{"a":1}' | openssl dgst -sha256 -hmac secret-key`
        let want = "b55a81137d0df4a3c2585b246e9dbc7e957811e4fd6613fdab592f15687ec523";
        let got = sign(b"secret-key", br#"{"a":1}"#);
        assert_eq!(got, want);
        assert!(verify_hmac(b"secret-key", br#"{"a":1}"#, Some(&got)));
        assert!(verify_hmac(
            b"secret-key",
            br#"{"a":1}"#,
            Some(&got.to_uppercase())
        ));
        assert!(verify_hmac(
            b"secret-key",
            br#"{"a":1}"#,
            Some(&format!(" {got} "))
        ));
        assert!(!verify_hmac(b"secret-key", br#"{"a":2}"#, Some(&got)));
        assert!(!verify_hmac(b"other", br#"{"a":1}"#, Some(&got)));
        assert!(!verify_hmac(b"secret-key", br#"{"a":1}"#, None));
        assert!(!verify_hmac(b"secret-key", br#"{"a":1}"#, Some("zz")));
        assert!(!verify_hmac(b"secret-key", br#"{"a":1}"#, Some(&got[..62])));
        assert!(!verify_hmac(b"secret-key", br#"{"a":1}"#, Some("")));
    }

    #[test]
    fn parses_and_normalises() {
        let r = parse(
            r#"{"region":"fra","orchestrator":"0xABCdef","timestamp":1699999000.5,"segments_sent":10,
                "segments_received":9.0,"success_rate":0.9,"seg_duration":2,"round_trip_time":1.5,
                "upload_time":0.5,"download_time":0.25,"transcode_time":0.75,
                "errors":["boom",{"error_code":"E1","count":3},{"error_code":500}],"extra":true}"#,
        )
        .unwrap();
        assert_eq!(r.region, "FRA");
        assert_eq!(r.orchestrator, "0xabcdef");
        assert_eq!(r.timestamp, 1699999000.5);
        assert_eq!((r.segments_sent, r.segments_received), (10, 9));
        assert_eq!(r.seg_duration, 2.0);
        assert_eq!(
            r.errors,
            vec![
                ErrorCount {
                    error_code: "boom".into(),
                    count: 1
                },
                ErrorCount {
                    error_code: "E1".into(),
                    count: 3
                },
                ErrorCount {
                    error_code: "500".into(),
                    count: 1
                },
            ]
        );
        let min = parse(r#"{"region":"SIN","orchestrator":"0x1"}"#).unwrap();
        assert_eq!(min.timestamp, NOW);
        assert_eq!(min.success_rate, 0.0);
        assert!(min.errors.is_empty());
        assert_eq!(
            parse(r#"{"region":"SIN","orchestrator":"0x1","timestamp":0}"#)
                .unwrap()
                .timestamp,
            NOW
        );
    }

    #[test]
    fn rejects_naming_the_field() {
        let field = |body: &str| parse(body).unwrap_err().field().map(str::to_owned);
        assert!(matches!(parse("{"), Err(PostError::BadJson(_))));
        assert!(matches!(parse(""), Err(PostError::BadJson(_))));
        assert_eq!(parse("[1]"), Err(PostError::NotAnObject));
        assert!(matches!(
            parse(r#"{"region":"FRA","orchestrator":"0x1","seg_duration":1e999}"#),
            Err(PostError::BadJson(_))
        ));
        assert_eq!(
            parse(r#"{"orchestrator":"0x1"}"#),
            Err(PostError::Missing("region"))
        );
        assert_eq!(
            parse(r#"{"region":"FRA"}"#),
            Err(PostError::Missing("orchestrator"))
        );
        assert_eq!(
            parse(r#"{"region":"FRA","orchestrator":"  "}"#),
            Err(PostError::Missing("orchestrator"))
        );
        assert_eq!(
            parse(r#"{"region":"FRA","orchestrator":null}"#),
            Err(PostError::Missing("orchestrator"))
        );
        assert_eq!(
            parse(r#"{"region":"XYZ","orchestrator":"0x1"}"#),
            Err(PostError::UnknownRegion("XYZ".into()))
        );
        for (body, f) in [
            (r#"{"region":1,"orchestrator":"0x1"}"#, "region"),
            (r#"{"region":"FRA","orchestrator":7}"#, "orchestrator"),
            (
                r#"{"region":"FRA","orchestrator":"0x1","timestamp":"now"}"#,
                "timestamp",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","timestamp":-1}"#,
                "timestamp",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","success_rate":1.5}"#,
                "success_rate",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","success_rate":-0.1}"#,
                "success_rate",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","round_trip_time":-2}"#,
                "round_trip_time",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","upload_time":true}"#,
                "upload_time",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","segments_sent":1.5}"#,
                "segments_sent",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","segments_received":-3}"#,
                "segments_received",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","errors":"boom"}"#,
                "errors",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","errors":[1]}"#,
                "errors[0]",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","errors":["a",{"count":1}]}"#,
                "errors[1].error_code",
            ),
            (
                r#"{"region":"FRA","orchestrator":"0x1","errors":[{"error_code":"a","count":-1}]}"#,
                "errors[0].count",
            ),
        ] {
            assert_eq!(field(body).as_deref(), Some(f), "{body}");
            assert!(parse(body).unwrap_err().to_string().contains(f), "{body}");
        }
    }

    #[test]
    fn windows() {
        let day = Duration::from_secs(86_400);
        let w = |s: Option<&str>, u: Option<&str>| Window::from_params(s, u, NOW, day);
        assert_eq!(
            w(None, None),
            Ok(Window {
                since: Some(NOW - 86_400.0),
                until: NOW
            })
        );
        assert_eq!(
            w(None, Some("100")),
            Ok(Window {
                since: None,
                until: 100.0
            })
        );
        assert_eq!(
            w(Some("100.5"), None),
            Ok(Window {
                since: Some(100.5),
                until: NOW
            })
        );
        assert_eq!(
            w(Some("1"), Some("2")),
            Ok(Window {
                since: Some(1.0),
                until: 2.0
            })
        );
        assert_eq!(w(Some(""), Some(" ")), w(None, None));
        for bad in ["abc", "NaN", "inf", "1e999", "0x10", "1,5"] {
            assert_eq!(w(Some(bad), None).unwrap_err().param, "since", "{bad}");
            assert_eq!(w(None, Some(bad)).unwrap_err().param, "until", "{bad}");
        }
        let win = Window {
            since: Some(10.0),
            until: 20.0,
        };
        assert!(
            win.contains(10.0) && win.contains(20.0) && !win.contains(20.001) && !win.contains(9.9)
        );
        assert!(
            Window {
                since: None,
                until: 5.0
            }
            .contains(-1e12)
        );
    }
}
