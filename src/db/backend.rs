//! What differs between SQLite and PostgreSQL: the [`Backend`] trait. The
//! stores' SQL is written once against it ([`super::stats`],
//! [`super::reports`], [`super::inventory`]); each backend file implements
//! it with the few queries that cannot be shared (a different schema for
//! speed, a different way to number rows) and the PostgreSQL-only
//! wake-ups between nodes.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Database, Decode, Encode, IntoArguments, Pool, Type};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::inventory::store::{LoadError, Stored};
use crate::report::store::BucketReport;
use crate::stats::Filter;
use crate::stats::store::MeanRow;

/// A value type both stored and read back: the shared SQL binds and reads
/// `i64`, `f64` and `String` columns only, whichever the backend.
pub trait Column<DB: Database>:
    for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB> + Send + Sync
{
}

impl<DB: Database, T> Column<DB> for T where
    T: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB> + Send + Sync
{
}

/// One SQL backend. Shared queries use `$1`-style parameters, which
/// SQLite reads as well as PostgreSQL.
#[async_trait]
pub trait Backend: Database<Arguments: IntoArguments<Self>> {
    /// `"sqlite"` or `"postgres"`, for logs and `/deepcheck`.
    const LABEL: &'static str;

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Queues a wake-up on `channel` for the other nodes, sent when the
    /// transaction on `conn` commits. Nothing on a backend with one node.
    async fn notify(conn: &mut Self::Connection, channel: &str, detail: &str) -> sqlx::Result<()>;

    /// Until `stop`, wakes `wake` when another node may have written on
    /// `channel`; `filter` sees each wake-up's detail (`None`: anything may
    /// have changed). Never wakes on a backend with one node.
    async fn listen(
        pool: &Pool<Self>,
        channel: &'static str,
        stop: CancellationToken,
        wake: Arc<Notify>,
        filter: Option<String>,
    );

    /// The stats means per orchestrator and region within `filter`.
    async fn means(pool: &Pool<Self>, filter: &Filter) -> sqlx::Result<Vec<MeanRow>>;

    /// Inserts a bucket row in the transaction on `conn` and returns its
    /// id: ids grow in commit order and are never reused.
    async fn insert_bucket(
        conn: &mut Self::Connection,
        b: &BucketReport,
        counts: &str,
        now: i64,
    ) -> sqlx::Result<i64>;

    /// Everything the inventory holds, consistent as of one version.
    async fn load_inventory(pool: &Pool<Self>) -> Result<Stored, LoadError>;
}
