//! SQLite: `stats.db` in the data directory, the default when no
//! PostgreSQL URL is configured, and the queries only SQLite runs.
//!
//! Besides the events table, a trigger keeps the list of (orchestrator,
//! region) pairs (`stats_pairs`, migration 0002), which aggregated reads
//! walk to avoid SQLite's sort-based GROUP BY. Bucket ids are
//! AUTOINCREMENT (migration 0005), so a pruned row's id is never handed
//! out again; SQLite has one writer at a time, so ids also grow in commit
//! order. One node owns the file: there is nobody to wake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Db;
use super::backend::Backend;
use super::migrate::{Dialect, migrator};
use crate::inventory::model::Route;
use crate::inventory::store::{LoadError, Stored, TokenRow, parse_body};
use crate::report::store::BucketReport;
use crate::stats::store::MeanRow;
use crate::stats::{Filter, StoreError};

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "stats.db";

/// Opens (creating if needed) `data_dir/stats.db` and migrates it.
///
/// WAL mode lets reads run beside the one writer. `synchronous = NORMAL`
/// (SQLite's advice for WAL): a commit is atomic and survives a crash of
/// this process; only an OS crash or power cut may lose the last few
/// commits, never corrupt the file. `FULL` would cost one fsync per post,
/// a few milliseconds each on ordinary disks.
pub async fn open(data_dir: &Path) -> Result<Db<Sqlite>, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(FILE_NAME);
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // Writers queue on SQLite's lock instead of failing with SQLITE_BUSY.
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new().max_connections(8);
    connect(pool, options, path).await
}

/// Opens `data_dir/stats.db` read-only and runs `SELECT 1`, when the file
/// exists (a missing one is made at start): whether the store [`open`]
/// would use can be read (`switchyard check`). Creates nothing.
pub async fn probe(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(FILE_NAME);
    if !path.exists() {
        return Ok(());
    }
    let options = SqliteConnectOptions::new().filename(&path).read_only(true);
    let mut conn = sqlx::ConnectOptions::connect(&options)
        .await
        .map_err(|source| StoreError::Connect {
            what: path.display().to_string(),
            source,
        })?;
    sqlx::query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}

/// A private in-memory database, for tests. One connection only: each
/// SQLite connection to `:memory:` would otherwise see its own empty database.
pub async fn open_in_memory() -> Result<Db<Sqlite>, StoreError> {
    let options = SqliteConnectOptions::new().in_memory(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None);
    connect(pool, options, PathBuf::from(":memory:")).await
}

async fn connect(
    pool: SqlitePoolOptions,
    options: SqliteConnectOptions,
    path: PathBuf,
) -> Result<Db<Sqlite>, StoreError> {
    let label = path.display().to_string();
    let pool = pool
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Connect {
            what: label.clone(),
            source,
        })?;
    migrator(Dialect::Sqlite).run(&pool).await?;
    Ok(Db::new(pool, label))
}

#[async_trait]
impl Backend for Sqlite {
    const LABEL: &'static str = "sqlite";

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn notify(_: &mut SqliteConnection, _: &str, _: &str) -> sqlx::Result<()> {
        Ok(())
    }

    async fn listen(
        _: &SqlitePool,
        _: &'static str,
        stop: CancellationToken,
        _: Arc<Notify>,
        _: Option<String>,
    ) {
        stop.cancelled().await;
    }

    async fn means(pool: &SqlitePool, filter: &Filter) -> sqlx::Result<Vec<MeanRow>> {
        // Pairs in key order, each joined to its window in the covering
        // index `stats_events_pair_ts`: the rows arrive grouped, so SQLite
        // needs no sort (see migrations/sqlite/0002_stats_pairs.sql).
        // CROSS JOIN pins that loop order; the planner would otherwise
        // scan the ts index and sort.
        let w = &filter.window;
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT p.orchestrator, p.region, AVG(e.success_rate), AVG(e.seg_duration), AVG(e.round_trip_time) \
             FROM stats_pairs p CROSS JOIN stats_events e \
             ON e.orchestrator = p.orchestrator AND e.region = p.region \
             WHERE p.first_ts <= ",
        );
        qb.push_bind(w.until)
            .push(" AND e.ts <= ")
            .push_bind(w.until);
        if let Some(since) = w.since {
            qb.push(" AND p.last_ts >= ")
                .push_bind(since)
                .push(" AND e.ts >= ")
                .push_bind(since);
        }
        if let Some(o) = &filter.orchestrator {
            qb.push(" AND p.orchestrator = ").push_bind(o.as_str());
        }
        if let Some(r) = &filter.region {
            qb.push(" AND p.region = ").push_bind(r.as_str());
        }
        qb.push(" GROUP BY p.orchestrator, p.region");
        qb.build()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                ))
            })
            .collect()
    }

    async fn insert_bucket(
        conn: &mut SqliteConnection,
        b: &BucketReport,
        counts: &str,
        now: i64,
    ) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO report_buckets (fleet, node, start_ms, stop_ms, received_at, counts) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&b.fleet)
        .bind(&b.node)
        .bind(b.start)
        .bind(b.stop)
        .bind(now)
        .bind(counts)
        .fetch_one(conn)
        .await
    }

    async fn load_inventory(pool: &SqlitePool) -> Result<Stored, LoadError> {
        let mut tx = pool.begin().await?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM inventory_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let mut out = Stored {
            version,
            ..Stored::default()
        };
        for row in sqlx::query("SELECT id, body FROM inventory_providers ORDER BY id")
            .fetch_all(&mut *tx)
            .await?
        {
            let id: String = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            if let Some(m) = parse_body(&id, &body) {
                out.providers.push((id, m));
            }
        }
        for row in sqlx::query("SELECT name, created_at FROM inventory_endpoints ORDER BY name")
            .fetch_all(&mut *tx)
            .await?
        {
            out.endpoints.push((row.try_get(0)?, row.try_get(1)?));
        }
        for row in sqlx::query(
            "SELECT endpoint, id, selector, weight, strategy, created_at FROM inventory_routes \
             ORDER BY endpoint, id",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let weight: i64 = row.try_get(3)?;
            out.routes.push((
                row.try_get(0)?,
                Route {
                    id: row.try_get(1)?,
                    selector: row.try_get(2)?,
                    weight: weight.max(0) as u64,
                    strategy: row.try_get(4)?,
                    created_at: row.try_get(5)?,
                },
            ));
        }
        for row in sqlx::query(
            "SELECT id, name, hash, created_at, admin FROM inventory_tokens ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            out.tokens.push(TokenRow {
                id: row.try_get(0)?,
                name: row.try_get(1)?,
                hash: row.try_get(2)?,
                created_at: row.try_get(3)?,
                admin: row.try_get(4)?,
            });
        }
        tx.commit().await?;
        Ok(out)
    }
}
