//! The stats store's SQL, one text for both backends; only the aggregated
//! read differs ([`Backend::means`]). The means are taken in SQL (one row
//! per orchestrator and region comes back, not every event); the score
//! math is Rust ([`aggregate_rows`]).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, QueryBuilder, Type};

use super::Db;
use super::backend::{Backend, Column};
use crate::stats::store::{
    Aggregated, BATCH_ROWS, Filter, IDEMPOTENCY_KEEP_SECS, Idempotent, RawCursor, RawPage,
    StatsStore, StoreError, aggregate_rows, normalise, page_raw, payload,
};
use crate::stats::{StatsRecord, Window, unix_now};

/// Columns written per record, in the bind order of [`insert_query`].
const INSERT: &str = "INSERT INTO stats_events (region, orchestrator, ts, received_at, segments_sent, \
     segments_received, success_rate, seg_duration, round_trip_time, upload_time, download_time, \
     transcode_time, payload) ";

/// A multi-row INSERT of `records` with their `payloads` (same length).
fn insert_query<'a, DB: Backend>(
    records: &'a [StatsRecord],
    payloads: &'a [String],
    received_at: f64,
) -> QueryBuilder<DB>
where
    for<'b> &'b str: Encode<'b, DB> + Type<DB>,
    i64: Column<DB>,
    f64: Column<DB>,
{
    let mut qb = QueryBuilder::<DB>::new(INSERT);
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

#[async_trait]
impl<DB: Backend> StatsStore for Db<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
    f64: Column<DB>,
    String: Column<DB>,
{
    async fn insert(&self, record: &StatsRecord) -> Result<(), StoreError> {
        // One statement is its own transaction: the row is stored whole or
        // not at all, and committed when `execute` returns.
        let text = payload(record)?;
        insert_query::<DB>(
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
            insert_query::<DB>(chunk, texts, received_at)
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
        let mut qb = insert_query::<DB>(
            std::slice::from_ref(record),
            std::slice::from_ref(&text),
            now,
        );
        qb.push(" RETURNING id");
        let id: i64 = qb.build_query_scalar().fetch_one(&mut *tx).await?;
        let stored = sqlx::query(
            "INSERT INTO stats_idempotency (key, body_sha256, event_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(body_sha256)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&stored) == 0 {
            // The key is taken (committed, or this waited for the
            // transaction that took it): the event goes with the rollback.
            tx.rollback().await?;
            let first: Option<String> =
                sqlx::query_scalar("SELECT body_sha256 FROM stats_idempotency WHERE key = $1")
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
            sqlx::query("DELETE FROM stats_idempotency WHERE created_at < $1")
                .bind(now - IDEMPOTENCY_KEEP_SECS)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Idempotent::Stored)
    }

    async fn aggregated(&self, filter: &Filter) -> Result<Aggregated, StoreError> {
        Ok(aggregate_rows(DB::means(&self.pool, filter).await?))
    }

    async fn raw(
        &self,
        orchestrator: &str,
        region: Option<&str>,
        window: &Window,
        limit: usize,
        after: Option<RawCursor>,
    ) -> Result<RawPage, StoreError> {
        let mut qb = QueryBuilder::<DB>::new(
            "SELECT id, ts, region, payload FROM stats_events WHERE orchestrator = ",
        );
        qb.push_bind(orchestrator.trim().to_lowercase())
            .push(" AND ts <= ")
            .push_bind(window.until);
        if let Some(since) = window.since {
            qb.push(" AND ts >= ").push_bind(since);
        }
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
        let rows = qb
            .build_query_as::<(i64, f64, String, String)>()
            .fetch_all(&self.pool)
            .await?;
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
        DB::LABEL
    }
}
