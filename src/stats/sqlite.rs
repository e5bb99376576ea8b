//! The SQLite stats store: `stats.db` in the data directory, the default
//! when no PostgreSQL URL is configured.
//!
//! Besides the events table, a trigger keeps the list of (orchestrator,
//! region) pairs (`stats_pairs`, migration 0002), which aggregated reads
//! walk to avoid SQLite's sort-based GROUP BY.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlSafeStr, Sqlite, SqlitePool};

use super::store::{
    Aggregated, BATCH_ROWS, Filter, IDEMPOTENCY_KEEP_SECS, Idempotent, RawCursor, RawPage,
    StatsStore, StoreError, aggregate_rows, normalise, page_raw, payload,
};
use super::{StatsRecord, Window, unix_now};

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "stats.db";

/// The schema, embedded so the binary needs no migrations folder at run time.
fn migrator() -> Migrator {
    let m = |version, name, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        m(
            1,
            "stats_events",
            include_str!("../../migrations/sqlite/0001_stats_events.sql"),
        ),
        m(
            2,
            "stats_pairs",
            include_str!("../../migrations/sqlite/0002_stats_pairs.sql"),
        ),
        m(
            3,
            "inventory",
            include_str!("../../migrations/sqlite/0003_inventory.sql"),
        ),
        m(
            4,
            "reports",
            include_str!("../../migrations/sqlite/0004_reports.sql"),
        ),
        m(
            5,
            "report_ids",
            include_str!("../../migrations/sqlite/0005_report_ids.sql"),
        ),
        m(
            6,
            "token_admin",
            include_str!("../../migrations/sqlite/0006_token_admin.sql"),
        ),
        m(
            7,
            "stats_idempotency",
            include_str!("../../migrations/sqlite/0007_stats_idempotency.sql"),
        ),
    ])
}

/// Stats in a SQLite file.
///
/// WAL mode lets reads run beside the one writer. `synchronous = NORMAL`
/// (SQLite's advice for WAL): a commit is atomic and survives a crash of
/// this process; only an OS crash or power cut may lose the last few
/// commits, never corrupt the file. `FULL` would cost one fsync per post,
/// a few milliseconds each on ordinary disks.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/stats.db` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
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
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                what: path.display().to_string(),
                source,
            })?;
        migrator().run(&pool).await?;
        Ok(Self { pool, path })
    }

    /// A private in-memory database, for tests. One connection only: each
    /// SQLite connection to `:memory:` would otherwise see its own empty database.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new().in_memory(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                what: ":memory:".into(),
                source,
            })?;
        migrator().run(&pool).await?;
        Ok(Self {
            pool,
            path: PathBuf::from(":memory:"),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying pool (the inventory store shares it).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Columns written per record, in the bind order of [`insert_query`].
const INSERT: &str = "INSERT INTO stats_events (region, orchestrator, ts, received_at, segments_sent, \
     segments_received, success_rate, seg_duration, round_trip_time, upload_time, download_time, \
     transcode_time, payload) ";

/// A multi-row INSERT of `records` with their `payloads` (same length).
fn insert_query(
    records: &[StatsRecord],
    payloads: &[String],
    received_at: f64,
) -> QueryBuilder<Sqlite> {
    let mut qb = QueryBuilder::<Sqlite>::new(INSERT);
    qb.push_values(records.iter().zip(payloads), |mut b, (r, text)| {
        b.push_bind(r.region.as_str())
            .push_bind(r.orchestrator.as_str())
            .push_bind(r.timestamp)
            .push_bind(received_at)
            .push_bind(r.segments_sent)
            .push_bind(r.segments_received)
            .push_bind(r.success_rate)
            .push_bind(r.seg_duration)
            .push_bind(r.round_trip_time)
            .push_bind(r.upload_time)
            .push_bind(r.download_time)
            .push_bind(r.transcode_time)
            .push_bind(text.as_str());
    });
    qb
}

fn push_window(qb: &mut QueryBuilder<Sqlite>, window: &Window) {
    qb.push(" ts <= ").push_bind(window.until);
    if let Some(since) = window.since {
        qb.push(" AND ts >= ").push_bind(since);
    }
}

#[async_trait]
impl StatsStore for SqliteStore {
    async fn insert(&self, record: &StatsRecord) -> Result<(), StoreError> {
        // One statement is its own transaction: the row is stored whole or
        // not at all, and committed when `execute` returns.
        let text = payload(record)?;
        insert_query(
            std::slice::from_ref(record),
            std::slice::from_ref(&text),
            unix_now(),
        )
        .build()
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_batch(&self, records: &[StatsRecord]) -> Result<(), StoreError> {
        let received_at = unix_now();
        let payloads = records.iter().map(payload).collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.pool.begin().await?;
        for (chunk, texts) in records.chunks(BATCH_ROWS).zip(payloads.chunks(BATCH_ROWS)) {
            insert_query(chunk, texts, received_at)
                .build()
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_idempotent(
        &self,
        record: &StatsRecord,
        key: &str,
        body_sha256: &str,
    ) -> Result<Idempotent, StoreError> {
        let text = payload(record)?;
        let now = unix_now();
        let mut tx = self.pool.begin().await?;
        let mut qb = insert_query(
            std::slice::from_ref(record),
            std::slice::from_ref(&text),
            now,
        );
        qb.push(" RETURNING id");
        let id: i64 = qb.build().fetch_one(&mut *tx).await?.try_get(0)?;
        let stored = sqlx::query(
            "INSERT INTO stats_idempotency (key, body_sha256, event_id, created_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(body_sha256)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if stored == 0 {
            // The key is taken (committed, or this waited for the
            // transaction that took it): the event goes with the rollback.
            tx.rollback().await?;
            let first: Option<String> =
                sqlx::query_scalar("SELECT body_sha256 FROM stats_idempotency WHERE key = ?")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
            return Ok(if first.as_deref() == Some(body_sha256) {
                Idempotent::Replayed
            } else {
                Idempotent::Conflict
            });
        }
        // Forget old keys now and then (one post in 64), in the same
        // transaction, so the table holds about a day of keyed posts.
        if id % 64 == 0 {
            sqlx::query("DELETE FROM stats_idempotency WHERE created_at < ?")
                .bind(now - IDEMPOTENCY_KEEP_SECS)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Idempotent::Stored)
    }

    async fn aggregated(&self, filter: &Filter) -> Result<Aggregated, StoreError> {
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
        let rows = qb.build().fetch_all(&self.pool).await?;
        let rows = rows
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
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(aggregate_rows(rows))
    }

    async fn raw(
        &self,
        orchestrator: &str,
        region: Option<&str>,
        window: &Window,
        limit: usize,
        after: Option<RawCursor>,
    ) -> Result<RawPage, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT id, ts, region, payload FROM stats_events WHERE orchestrator = ",
        );
        qb.push_bind(orchestrator.trim().to_lowercase())
            .push(" AND");
        push_window(&mut qb, window);
        if let Some(r) = normalise(region) {
            qb.push(" AND region = ").push_bind(r.to_uppercase());
        }
        if let Some(c) = after {
            qb.push(" AND (ts < ")
                .push_bind(c.ts)
                .push(" OR (ts = ")
                .push_bind(c.ts)
                .push(" AND id < ")
                .push_bind(c.id)
                .push("))");
        }
        qb.push(" ORDER BY ts DESC, id DESC LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1));
        let rows = qb.build().fetch_all(&self.pool).await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        page_raw(rows, limit)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stats_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
