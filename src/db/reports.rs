//! The report tables' SQL (migrations `0004_reports.sql` and
//! `0005_report_ids.sql`), one text for both backends; only how a bucket
//! gets its id differs ([`Backend::insert_bucket`]). Every bucket wakes
//! the fleet's other nodes ([`CHANNEL`]), which read it at once rather
//! than at their next poll.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, Row, Type};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Db;
use super::backend::{Backend, Column};
use crate::report::buckets::StoredBucket;
use crate::report::store::{
    BucketReport, NodeRow, Registration, ReportError, ReportStore, apps_json, parse_apps,
    parse_counts,
};

/// The wake-up channel of new buckets (detail: the fleet).
pub const CHANNEL: &str = "switchyard_reports";

#[async_trait]
impl<DB: Backend> ReportStore for Db<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    Option<i64>: Column<DB>,
{
    async fn register(
        &self,
        r: &Registration,
        ip: Option<&str>,
        now: i64,
    ) -> Result<(), ReportError> {
        sqlx::query(
            "INSERT INTO report_nodes (fleet, node, ip, apps, started, interval_ms, config_hash, \
             snapshots, created_at, last_seen, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (fleet, node) DO UPDATE SET ip = COALESCE(excluded.ip, report_nodes.ip), \
             apps = excluded.apps, started = excluded.started, interval_ms = excluded.interval_ms, \
             config_hash = excluded.config_hash, snapshots = excluded.snapshots, \
             last_seen = excluded.last_seen, version = excluded.version",
        )
        .bind(r.fleet.as_str())
        .bind(r.node.as_str())
        .bind(ip.map(str::to_owned))
        .bind(apps_json(&r.apps))
        .bind(r.started)
        .bind(r.interval_ms)
        .bind(r.config_hash.clone())
        .bind(serde_json::Value::Object(r.snapshots.clone()).to_string())
        .bind(now)
        .bind(now)
        .bind(r.version.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_bucket(&self, b: &BucketReport, now: i64) -> Result<i64, ReportError> {
        let counts = serde_json::to_string(&b.counts).unwrap_or_else(|_| "{}".into());
        let mut tx = self.pool.begin().await?;
        let id = DB::insert_bucket(&mut tx, b, &counts, now).await?;
        // A node that pushes before it registers is still listed.
        sqlx::query(
            "INSERT INTO report_nodes (fleet, node, apps, started, interval_ms, snapshots, \
             created_at, last_seen, last_push) VALUES ($1, $2, '[]', $3, 10000, '{}', $4, $5, $6) \
             ON CONFLICT (fleet, node) DO UPDATE SET last_seen = excluded.last_seen, \
             last_push = excluded.last_push",
        )
        .bind(b.fleet.as_str())
        .bind(b.node.as_str())
        .bind(b.start)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        DB::notify(&mut tx, CHANNEL, &b.fleet).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn buckets_after(
        &self,
        fleet: &str,
        after_id: i64,
        stop_after: i64,
    ) -> Result<Vec<StoredBucket>, ReportError> {
        let rows = sqlx::query(
            "SELECT id, node, start_ms, stop_ms, counts FROM report_buckets \
             WHERE fleet = $1 AND id > $2 AND stop_ms > $3 ORDER BY id",
        )
        .bind(fleet)
        .bind(after_id)
        .bind(stop_after)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredBucket {
                    id: r.try_get(0)?,
                    node: r.try_get(1)?,
                    start: r.try_get(2)?,
                    stop: r.try_get(3)?,
                    counts: parse_counts(&r.try_get::<String, _>(4)?),
                })
            })
            .collect()
    }

    async fn nodes(&self, fleet: &str) -> Result<Vec<NodeRow>, ReportError> {
        let rows = sqlx::query(
            "SELECT fleet, node, ip, apps, started, interval_ms, config_hash, snapshots, \
             created_at, last_seen, last_push, version FROM report_nodes WHERE fleet = $1 \
             ORDER BY last_seen DESC, node",
        )
        .bind(fleet)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(NodeRow {
                    fleet: r.try_get(0)?,
                    node: r.try_get(1)?,
                    ip: r.try_get(2)?,
                    apps: parse_apps(&r.try_get::<String, _>(3)?),
                    started: r.try_get(4)?,
                    interval_ms: r.try_get(5)?,
                    config_hash: r.try_get(6)?,
                    snapshots: serde_json::from_str(&r.try_get::<String, _>(7)?)
                        .unwrap_or_default(),
                    created_at: r.try_get(8)?,
                    last_seen: r.try_get(9)?,
                    last_push: r.try_get(10)?,
                    version: r.try_get(11)?,
                })
            })
            .collect()
    }

    async fn prune(&self, buckets_before: i64, nodes_before: i64) -> Result<(), ReportError> {
        sqlx::query("DELETE FROM report_buckets WHERE stop_ms < $1")
            .bind(buckets_before)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM report_nodes WHERE last_seen < $1")
            .bind(nodes_before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self, fleet: String, wake: Arc<Notify>, stop: CancellationToken) {
        DB::listen(&self.pool, CHANNEL, stop, wake, Some(fleet)).await;
    }
}
