//! The PostgreSQL stats store, used when a URL is configured (env
//! `POSTGRES` or the config key), as in the service being replaced.
//!
//! Besides the events table, a trigger keeps hourly sums per orchestrator
//! and region (`stats_hourly`, migration 0002), and aggregated reads add
//! the sums of the whole hours in the window to the events of its partial
//! edge hours: the same plain means, from ~3× fewer rows.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row, SqlSafeStr};

use super::store::{
    Aggregated, BATCH_ROWS, Filter, IDEMPOTENCY_KEEP_SECS, Idempotent, RawCursor, RawPage,
    StatsStore, StoreError, aggregate_rows, normalise, page_raw, payload, redact_url,
};
use super::{StatsRecord, Window, unix_now};

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
            include_str!("../../migrations/postgres/0001_stats_events.sql"),
        ),
        m(
            2,
            "stats_hourly",
            include_str!("../../migrations/postgres/0002_stats_hourly.sql"),
        ),
        m(
            3,
            "inventory",
            include_str!("../../migrations/postgres/0003_inventory.sql"),
        ),
        m(
            4,
            "reports",
            include_str!("../../migrations/postgres/0004_reports.sql"),
        ),
        m(
            5,
            "report_ids",
            include_str!("../../migrations/postgres/0005_report_ids.sql"),
        ),
        m(
            6,
            "token_admin",
            include_str!("../../migrations/postgres/0006_token_admin.sql"),
        ),
        m(
            7,
            "stats_idempotency",
            include_str!("../../migrations/postgres/0007_stats_idempotency.sql"),
        ),
    ])
}

/// Seconds per `stats_hourly` bucket.
const HOUR: f64 = 3600.0;

/// The bucket of `ts`: the h with h·3600 ≤ ts < (h+1)·3600, computed
/// exactly as the trigger in `0002_stats_hourly.sql` does.
fn hour_of(ts: f64) -> i64 {
    let h = (ts / HOUR).floor();
    (if h * HOUR > ts { h - 1.0 } else { h }) as i64
}

/// The first bucket starting at or after `since`.
fn first_full_hour(since: f64) -> i64 {
    let h = hour_of(since);
    if (h as f64) * HOUR >= since { h } else { h + 1 }
}

/// A window cut into the whole hours it holds, read from `stats_hourly`,
/// and the partial hours at its edges, read from the events. The three
/// parts are disjoint and together cover the window exactly.
#[derive(Debug, PartialEq)]
struct Split {
    /// Buckets `[first, end)`; `first` is `None` when the window has no start.
    hours: Option<(Option<i64>, i64)>,
    /// Events with `since <= ts < first·3600`.
    head: Option<(f64, f64)>,
    /// Events with `start <= ts <= until` (`start` = end·3600, or the
    /// window's own start when it holds no whole hour).
    tail: (Option<f64>, f64),
}

fn split(window: &Window) -> Split {
    // Bucket h is whole when h·3600 >= since and (h+1)·3600 <= until.
    // hour_of(until)·3600 <= until, so every bucket below it ends in time.
    let end = hour_of(window.until);
    let first = window.since.map(first_full_hour);
    match (window.since, first) {
        (Some(since), Some(first)) if first < end => Split {
            hours: Some((Some(first), end)),
            head: Some((since, first as f64 * HOUR)),
            tail: (Some(end as f64 * HOUR), window.until),
        },
        (Some(since), _) => Split {
            hours: None,
            head: None,
            tail: (Some(since), window.until),
        },
        (None, _) => Split {
            hours: Some((None, end)),
            head: None,
            tail: (Some(end as f64 * HOUR), window.until),
        },
    }
}

/// Most pooled connections: enough for concurrent posts to share WAL
/// flushes (PostgreSQL commits waiting together fsync once), few enough
/// to leave room under the server's default `max_connections` of 100.
const MAX_CONNECTIONS: u32 = 16;

/// Stats in PostgreSQL.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// For Debug and logs: the URL with its password redacted.
    redacted: String,
    schema: Option<String>,
}

impl fmt::Debug for PostgresStore {
    // By hand, so the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.redacted)
            .field("schema", &self.schema)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` and migrates. With `schema`, everything (the
    /// table and sqlx's migration bookkeeping) lives in that schema,
    /// created if needed: tests use a fresh one per run so parallel runs
    /// on one database never meet. `None` uses the server's `search_path`
    /// (normally `public`).
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let redacted = redact_url(url);
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl {
                url: redacted.clone(),
                reason: e.to_string(),
            })?
            .application_name("switchyard");
        if let Some(s) = schema {
            let ok = !s.is_empty()
                && s.len() <= 63
                && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(StoreError::BadSchema(s.to_owned()));
            }
            options = options.options([("search_path", s)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                what: redacted.clone(),
                source,
            })?;
        if let Some(s) = schema {
            // Checked above to be a plain lower-case identifier, so quoting it is enough.
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{s}\""
            )))
            .execute(&pool)
            .await?;
        }
        migrator().run(&pool).await?;
        Ok(Self {
            pool,
            redacted,
            schema: schema.map(str::to_owned),
        })
    }

    /// The underlying pool (tests use it to drop their schema).
    pub fn pool(&self) -> &PgPool {
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
) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::<Postgres>::new(INSERT);
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

fn push_pair_filter(qb: &mut QueryBuilder<Postgres>, filter: &Filter) {
    if let Some(o) = &filter.orchestrator {
        qb.push(" AND orchestrator = ").push_bind(o.clone());
    }
    if let Some(r) = &filter.region {
        qb.push(" AND region = ").push_bind(r.clone());
    }
}

fn push_window(qb: &mut QueryBuilder<Postgres>, window: &Window) {
    qb.push(" ts <= ").push_bind(window.until);
    if let Some(since) = window.since {
        qb.push(" AND ts >= ").push_bind(since);
    }
}

#[async_trait]
impl StatsStore for PostgresStore {
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
             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
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
        // Whole hours come from `stats_hourly`, the partial hours at the
        // edges from the events; the sums of both are added per pair.
        // The three parts cover the window exactly once (see `split`).
        let parts = split(&filter.window);
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT orchestrator, region, SUM(n)::float8, SUM(sr), SUM(seg), SUM(rtt) FROM (",
        );
        let mut union = false;
        if let Some((first, end)) = parts.hours {
            qb.push(
                "SELECT orchestrator, region, n, sum_success_rate AS sr, sum_seg_duration AS seg, \
                 sum_round_trip_time AS rtt FROM stats_hourly WHERE hour < ",
            )
            .push_bind(end);
            if let Some(first) = first {
                qb.push(" AND hour >= ").push_bind(first);
            }
            push_pair_filter(&mut qb, filter);
            union = true;
        }
        let mut events = |qb: &mut QueryBuilder<Postgres>,
                          lo: Option<f64>,
                          hi: f64,
                          hi_inclusive: bool| {
            if union {
                qb.push(" UNION ALL ");
            }
            union = true;
            qb.push(
                "SELECT orchestrator, region, 1::bigint AS n, success_rate AS sr, seg_duration AS seg, round_trip_time AS rtt \
                 FROM stats_events WHERE ts ",
            )
            .push(if hi_inclusive { "<= " } else { "< " })
            .push_bind(hi);
            if let Some(lo) = lo {
                qb.push(" AND ts >= ").push_bind(lo);
            }
            push_pair_filter(qb, filter);
        };
        if let Some((lo, hi)) = parts.head {
            events(&mut qb, Some(lo), hi, false);
        }
        events(&mut qb, parts.tail.0, parts.tail.1, true);
        qb.push(") t GROUP BY orchestrator, region");
        let rows = qb.build().fetch_all(&self.pool).await?;
        let rows = rows
            .iter()
            .map(|row| {
                let n: f64 = row.try_get(2)?;
                let mean = |i| row.try_get::<f64, _>(i).map(|sum| sum / n);
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    mean(3)?,
                    mean(4)?,
                    mean(5)?,
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
        let mut qb = QueryBuilder::<Postgres>::new(
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
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_match_their_definition() {
        for ts in [
            0.0,
            3599.999,
            3600.0,
            7_199.5,
            1_700_000_000.0,
            1_700_002_800.0,
            -1.0,
            -3600.0,
        ] {
            let h = hour_of(ts) as f64;
            assert!(h * HOUR <= ts && ts < (h + 1.0) * HOUR, "{ts}");
        }
        // One ulp below an hour boundary: floor(ts / 3600) rounds up; the bucket must not.
        let b = 472_222.0 * HOUR;
        let below = f64::from_bits(b.to_bits() - 1);
        assert_eq!(hour_of(below), 472_221);
        assert_eq!(hour_of(b), 472_222);
        assert_eq!(first_full_hour(b), 472_222);
        assert_eq!(first_full_hour(below), 472_222);
        assert_eq!(first_full_hour(b + 0.5), 472_223);
    }

    #[test]
    fn splits_cover_the_window_once() {
        let h = |n: f64| n * HOUR;
        // A day, not aligned: 23 whole hours and two partial ones.
        let w = Window {
            since: Some(h(10.0) + 1800.0),
            until: h(34.0) + 1800.0,
        };
        assert_eq!(
            split(&w),
            Split {
                hours: Some((Some(11), 34)),
                head: Some((h(10.0) + 1800.0, h(11.0))),
                tail: (Some(h(34.0)), w.until)
            }
        );
        // Aligned: no head events, the tail is just `until` itself.
        let w = Window {
            since: Some(h(10.0)),
            until: h(12.0),
        };
        assert_eq!(
            split(&w),
            Split {
                hours: Some((Some(10), 12)),
                head: Some((h(10.0), h(10.0))),
                tail: (Some(h(12.0)), h(12.0))
            }
        );
        // Under an hour: events only.
        let w = Window {
            since: Some(h(10.0) + 1.0),
            until: h(11.0) + 1.0,
        };
        assert_eq!(
            split(&w),
            Split {
                hours: None,
                head: None,
                tail: (w.since, w.until)
            }
        );
        // No start: every bucket before until's.
        let w = Window {
            since: None,
            until: h(5.0) + 7.0,
        };
        assert_eq!(
            split(&w),
            Split {
                hours: Some((None, 5)),
                head: None,
                tail: (Some(h(5.0)), w.until)
            }
        );
        // since > until: nothing anywhere.
        let w = Window {
            since: Some(h(9.0)),
            until: h(2.0),
        };
        assert_eq!(
            split(&w),
            Split {
                hours: None,
                head: None,
                tail: (w.since, w.until)
            }
        );
    }
}
