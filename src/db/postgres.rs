//! PostgreSQL, used when a URL is configured (env `POSTGRES` or the config
//! key), as in the service being replaced, and the queries only
//! PostgreSQL runs: stats means from hourly sums ([`super::hourly`]),
//! bucket ids from `report_seq` (migration 0005), the inventory in one
//! statement, and wake-ups between the nodes sharing the database
//! ([`super::notify`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row};
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

/// Most pooled connections: enough for concurrent posts to share WAL
/// flushes (PostgreSQL commits waiting together fsync once), few enough
/// to leave room under the server's default `max_connections` of 100.
const MAX_CONNECTIONS: u32 = 16;

/// Everything the inventory holds, each table as a JSON list of rows.
const LOAD: &str = "SELECT \
    (SELECT version FROM inventory_version WHERE id = 1), \
    (SELECT COALESCE(json_agg(json_build_array(id, body) ORDER BY id), '[]') \
        FROM inventory_providers)::text, \
    (SELECT COALESCE(json_agg(json_build_array(name, created_at) ORDER BY name), '[]') \
        FROM inventory_endpoints)::text, \
    (SELECT COALESCE(json_agg(json_build_array(endpoint, id, selector, weight, strategy, \
        created_at) ORDER BY endpoint, id), '[]') FROM inventory_routes)::text, \
    (SELECT COALESCE(json_agg(json_build_array(id, name, hash, created_at, admin) ORDER BY id), '[]') \
        FROM inventory_tokens)::text";

/// Connects to `url` and migrates. With `schema`, everything (the tables
/// and sqlx's migration bookkeeping) lives in that schema, created if
/// needed: tests use a fresh one per run so parallel runs on one database
/// never meet. `None` uses the server's `search_path` (normally `public`).
pub async fn open(url: &str, schema: Option<&str>) -> Result<Db<Postgres>, StoreError> {
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
    migrator(Dialect::Postgres).run(&pool).await?;
    let label = match schema {
        Some(s) => format!("{redacted} schema {s}"),
        None => redacted,
    };
    Ok(Db::new(pool, label))
}

/// Connects once to `url` and runs `SELECT 1`, creating and migrating
/// nothing: whether the store [`open`] would use answers (`switchyard check`).
pub async fn probe(url: &str) -> Result<(), StoreError> {
    let redacted = redact_url(url);
    let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
        url: redacted.clone(),
        reason: e.to_string(),
    })?;
    let mut conn = sqlx::ConnectOptions::connect(&options)
        .await
        .map_err(|source| StoreError::Connect {
            what: redacted,
            source,
        })?;
    sqlx::query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}

/// The URL with any password (in the userinfo or a `password=` query
/// parameter) replaced by `REDACTED`, for logs and error messages. A URL
/// that does not parse is not echoed at all, since it may still hold one.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "<unparseable URL>".to_owned();
    };
    if u.password().is_some() {
        // Fails only for URLs that cannot have credentials, and those have no password to hide.
        let _ = u.set_password(Some("REDACTED"));
    }
    if u.query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "REDACTED".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[async_trait]
impl Backend for Postgres {
    const LABEL: &'static str = "postgres";

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn notify(conn: &mut PgConnection, channel: &str, detail: &str) -> sqlx::Result<()> {
        super::notify::notify(conn, channel, detail).await
    }

    async fn listen(
        pool: &PgPool,
        channel: &'static str,
        stop: CancellationToken,
        wake: Arc<Notify>,
        filter: Option<String>,
    ) {
        super::notify::listen(pool.clone(), channel, stop, move |detail| {
            if detail.is_none_or(|d| filter.as_deref().is_none_or(|f| f == d)) {
                wake.notify_one();
            }
        })
        .await;
    }

    async fn means(pool: &PgPool, filter: &Filter) -> sqlx::Result<Vec<MeanRow>> {
        super::hourly::means(pool, filter).await
    }

    async fn insert_bucket(
        conn: &mut PgConnection,
        b: &BucketReport,
        counts: &str,
        now: i64,
    ) -> sqlx::Result<i64> {
        // Taken first: the row lock orders writers, so ids commit in order.
        let id: i64 = sqlx::query_scalar(
            "UPDATE report_seq SET last_id = last_id + 1 WHERE id = 1 RETURNING last_id",
        )
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO report_buckets (id, fleet, node, start_ms, stop_ms, received_at, counts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(&b.fleet)
        .bind(&b.node)
        .bind(b.start)
        .bind(b.stop)
        .bind(now)
        .bind(counts)
        .execute(conn)
        .await?;
        Ok(id)
    }

    async fn load_inventory(pool: &PgPool) -> Result<Stored, LoadError> {
        // One statement: one snapshot of every table, and one round trip
        // (a loaded node answers each round trip late; a change is live on
        // the writer only once this read returns).
        let row = sqlx::query(LOAD).fetch_one(pool).await?;
        let version: i64 = row.try_get(0)?;
        let list = |i: usize| -> Result<Vec<Vec<Value>>, LoadError> {
            let text: String = row.try_get(i)?;
            serde_json::from_str(&text).map_err(|e| {
                LoadError::Db(sqlx::Error::Decode(
                    format!("inventory load, column {i}: {e}").into(),
                ))
            })
        };
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let f = |v: Option<&Value>| v.and_then(Value::as_f64).unwrap_or_default();
        let mut out = Stored {
            version,
            ..Stored::default()
        };
        for r in list(1)? {
            let id = s(r.first());
            if let Some(m) = parse_body(&id, r.get(1).and_then(Value::as_str).unwrap_or_default()) {
                out.providers.push((id, m));
            }
        }
        for r in list(2)? {
            out.endpoints.push((s(r.first()), f(r.get(1))));
        }
        for r in list(3)? {
            out.routes.push((
                s(r.first()),
                Route {
                    id: s(r.get(1)),
                    selector: s(r.get(2)),
                    weight: r.get(3).and_then(Value::as_i64).unwrap_or_default().max(0) as u64,
                    strategy: s(r.get(4)),
                    created_at: f(r.get(5)),
                },
            ));
        }
        for r in list(4)? {
            out.tokens.push(TokenRow {
                id: s(r.first()),
                name: s(r.get(1)),
                hash: s(r.get(2)),
                created_at: f(r.get(3)),
                admin: s(r.get(4)),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:REDACTED@db:5432/x"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        let q = redact_url("postgres://db/x?user=u&password=hunter2&sslmode=require");
        assert!(
            !q.contains("hunter2")
                && q.contains("password=REDACTED")
                && q.contains("sslmode=require"),
            "{q}"
        );
        assert!(!redact_url("not a url hunter2").contains("hunter2"));
    }
}
