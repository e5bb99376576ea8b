//! The storage seam: [`StatsStore`], implemented over SQLite and
//! PostgreSQL by the database layer (`crate::db`).
//!
//! The trait speaks domain types only ([`StatsRecord`], [`Window`],
//! [`AggRow`]); queries stay in the database layer. The means are taken in
//! SQL (one row per orchestrator and region comes back, not every event);
//! the score math is Rust, shared by both backends ([`aggregate_rows`]), so
//! the two cannot drift apart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::Value;

use super::{AggRow, StatsRecord, Window};

/// `{ orchestrator: { REGION: scores } }`, both levels sorted.
pub type Aggregated = BTreeMap<String, BTreeMap<String, AggRow>>;

/// `{ REGION: [record, newest first] }`.
pub type RawRecords = BTreeMap<String, Vec<Value>>;

/// Where a page of raw records starts: after the row with this timestamp
/// and id (rows are ordered newest first, ties by id). An opaque
/// `TS_ID` string to clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawCursor {
    /// The timestamp of the last row of the previous page.
    pub ts: f64,
    /// Its row id.
    pub id: i64,
}

impl RawCursor {
    /// The cursor as clients see it.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.ts, self.id)
    }

    /// Parses what [`Self::encode`] gave; `None` for anything else.
    pub fn parse(s: &str) -> Option<RawCursor> {
        let (ts, id) = s.split_once('_')?;
        let ts: f64 = ts.parse().ok()?;
        Some(RawCursor {
            ts: ts.is_finite().then_some(ts)?,
            id: id.parse().ok()?,
        })
    }
}

/// One page of a raw read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawPage {
    /// The page's records per region, newest first.
    pub records: RawRecords,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<RawCursor>,
}

/// What a post with an idempotency key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    /// First use of the key: the record is stored.
    Stored,
    /// The key was stored before with the same body: nothing new stored.
    Replayed,
    /// The key was stored before with another body: nothing stored.
    Conflict,
}

/// How long an idempotency key is remembered (seconds).
pub const IDEMPOTENCY_KEEP_SECS: f64 = 24.0 * 3600.0;

/// What an aggregated read selects. Build it with [`Filter::new`], which
/// normalises case the way posts are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Only this orchestrator (lower-case); `None` for all.
    pub orchestrator: Option<String>,
    /// Only this region (upper-case); `None` for all.
    pub region: Option<String>,
    /// The span of posted timestamps.
    pub window: Window,
}

impl Filter {
    /// A filter; blank names count as absent, and case is normalised
    /// (orchestrators are stored lower-case, regions upper-case), which is
    /// what makes the query parameters case-insensitive.
    pub fn new(orchestrator: Option<&str>, region: Option<&str>, window: Window) -> Self {
        Filter {
            orchestrator: normalise(orchestrator).map(|o| o.to_lowercase()),
            region: normalise(region).map(|r| r.to_uppercase()),
            window,
        }
    }
}

pub(crate) fn normalise(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Why the store failed. Connection strings in these messages have their
/// passwords redacted (`crate::db::postgres::redact_url`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PostgreSQL URL does not parse (the URL itself is left out: it may hold a password).
    #[error("invalid PostgreSQL URL {url}: {reason}")]
    BadUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A schema name that is not a plain lower-case identifier.
    #[error("invalid PostgreSQL schema name {0:?}: use lower-case letters, digits and '_'")]
    BadSchema(String),
    /// The database could not be opened or reached at startup.
    #[error("cannot open {what}: {source}")]
    Connect {
        /// The file, or the URL with its password redacted.
        what: String,
        /// Why.
        source: sqlx::Error,
    },
    /// Creating or upgrading the schema failed.
    #[error("stats schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("stats database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored payload is not JSON (someone edited the table by hand).
    #[error("stored stats record {id} is not valid JSON: {source}")]
    Corrupt {
        /// The row id.
        id: i64,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A record could not be encoded (cannot happen for finite numbers; kept typed rather than unwrapped).
    #[error("cannot encode stats record: {0}")]
    Encode(serde_json::Error),
}

/// Where posted stats live.
///
/// Implementations must store a record whole or not at all, and must
/// return from [`insert`](Self::insert) only once the row is committed: the
/// API answers 200 only after that.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Stores one record; `received_at` is stamped by the store.
    async fn insert(&self, record: &StatsRecord) -> Result<(), StoreError>;

    /// Stores many records in one transaction (all or none). Used to load
    /// history in bulk; the default inserts them one by one.
    async fn insert_batch(&self, records: &[StatsRecord]) -> Result<(), StoreError> {
        for r in records {
            self.insert(r).await?;
        }
        Ok(())
    }

    /// Scores per orchestrator and region over the filter's window; only
    /// pairs with rows appear.
    async fn aggregated(&self, filter: &Filter) -> Result<Aggregated, StoreError>;

    /// Stores `record` once per idempotency `key`: in one transaction with
    /// the key and the SHA-256 of the posted body (`body_sha256`), unless
    /// the key is already stored (then nothing is, and the stored hash says
    /// whether this is a retry of the same post).
    async fn insert_idempotent(
        &self,
        record: &StatsRecord,
        key: &str,
        body_sha256: &str,
    ) -> Result<Idempotent, StoreError>;

    /// One orchestrator's records per region, newest first (ties by row
    /// id), at most `limit` of them after `after`.
    /// `orchestrator` and `region` are matched case-insensitively.
    async fn raw(
        &self,
        orchestrator: &str,
        region: Option<&str>,
        window: &Window,
        limit: usize,
        after: Option<RawCursor>,
    ) -> Result<RawPage, StoreError>;

    /// A round trip to the database, for `/deepcheck`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// How many records are stored.
    async fn count(&self) -> Result<u64, StoreError>;

    /// `"sqlite"` or `"postgres"`, for logs and `/deepcheck`.
    fn backend(&self) -> &'static str;
}

/// One row of the aggregate query: orchestrator, region and the three means.
pub type MeanRow = (String, String, f64, f64, f64);

/// Turns per-(orchestrator, region) means into the response shape.
pub(crate) fn aggregate_rows(rows: impl IntoIterator<Item = MeanRow>) -> Aggregated {
    let mut out = Aggregated::new();
    for (orch, region, sr, seg, rtt) in rows {
        out.entry(orch)
            .or_default()
            .insert(region, AggRow::from_means(sr, seg, rtt));
    }
    out
}

/// Groups `(id, ts, region, payload)` rows, already newest first, by
/// region: a page of `limit` rows, from a query that asked for one more to
/// know whether another page follows.
pub(crate) fn page_raw(
    rows: Vec<(i64, f64, String, String)>,
    limit: usize,
) -> Result<RawPage, StoreError> {
    let more = rows.len() > limit;
    let mut page = RawPage::default();
    for (id, ts, region, payload) in rows.into_iter().take(limit) {
        let v: Value =
            serde_json::from_str(&payload).map_err(|source| StoreError::Corrupt { id, source })?;
        page.records.entry(region).or_default().push(v);
        page.next = Some(RawCursor { ts, id });
    }
    if !more {
        page.next = None;
    }
    Ok(page)
}

/// The JSON kept in `payload`.
pub(crate) fn payload(record: &StatsRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(StoreError::Encode)
}

/// Rows per multi-row INSERT in [`StatsStore::insert_batch`]: 13 binds a
/// row keeps a statement under SQLite's 32 766 and PostgreSQL's 65 535
/// parameter limits.
pub(crate) const BATCH_ROWS: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_normalises() {
        let w = Window {
            since: None,
            until: 1.0,
        };
        let f = Filter::new(Some(" 0xABC "), Some("fra"), w);
        assert_eq!(f.orchestrator.as_deref(), Some("0xabc"));
        assert_eq!(f.region.as_deref(), Some("FRA"));
        assert_eq!(Filter::new(Some(""), Some("  "), w).orchestrator, None);
    }
}
