//! The inventory in PostgreSQL, sharing the stats store's database (and its schema).
//!
//! Every commit notifies [`CHANNEL`] with the new version, so the other
//! nodes of the fleet reload at once rather than at their next poll.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::model::{MAX_ROUTES, Route, route_id};
use super::store::{
    Change, CommitError, Committed, InventoryStore, LoadError, Stored, TokenRow, merge, now,
    parse_body,
};

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

/// The LISTEN/NOTIFY channel of inventory commits (detail: the version).
pub const CHANNEL: &str = "switchyard_inventory";

/// The inventory tables of a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgInventory {
    pool: PgPool,
}

impl PgInventory {
    /// Over a pool whose database has been migrated by the stats store.
    pub fn new(pool: PgPool) -> Self {
        PgInventory { pool }
    }
}

#[async_trait]
impl InventoryStore for PgInventory {
    async fn load(&self) -> Result<Stored, LoadError> {
        // One statement: one snapshot of every table, and one round trip
        // (a loaded node answers each round trip late; a change is live on
        // the writer only once this read returns).
        let row = sqlx::query(LOAD).fetch_one(&self.pool).await?;
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

    async fn version(&self) -> Result<i64, LoadError> {
        Ok(
            sqlx::query("SELECT version FROM inventory_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    async fn commit(&self, change: &Change) -> Result<Committed, CommitError> {
        let mut tx = self.pool.begin().await?;
        // Written first: the transaction takes the write lock here, so
        // the checks below see what the change applies to.
        let version: i64 = sqlx::query(
            "UPDATE inventory_version SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let route_id = apply(&mut tx, change).await?;
        crate::stats::notify::notify(&mut tx, CHANNEL, &version.to_string()).await?;
        tx.commit().await?;
        Ok(Committed { version, route_id })
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn listen(&self, wake: Arc<Notify>, stop: CancellationToken) {
        crate::stats::notify::listen(self.pool.clone(), CHANNEL, stop, move |_| wake.notify_one())
            .await;
    }
}

async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    change: &Change,
) -> Result<Option<String>, CommitError> {
    match change {
        Change::SetProvider {
            id,
            fields,
            replace,
            require_row,
        } => {
            let old: Option<String> =
                sqlx::query_scalar("SELECT body FROM inventory_providers WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
            if old.is_none() && *require_row {
                return Err(CommitError::NotFound(format!("unknown provider '{id}'")));
            }
            let body = merge(old.and_then(|t| parse_body(id, &t)), fields, *replace);
            sqlx::query(
                "INSERT INTO inventory_providers (id, body, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            )
            .bind(id)
            .bind(serde_json::Value::Object(body).to_string())
            .bind(now())
            .execute(&mut **tx)
            .await?;
            Ok(None)
        }
        Change::DeleteProvider { id } => {
            let n = sqlx::query("DELETE FROM inventory_providers WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(CommitError::NotFound(format!("unknown provider '{id}'")));
            }
            Ok(None)
        }
        Change::AddRoute {
            endpoint,
            selector,
            weight,
            strategy,
        } => {
            let t = now();
            sqlx::query(
                "INSERT INTO inventory_endpoints (name, next_route, created_at) VALUES ($1, 0, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(endpoint)
            .bind(t)
            .execute(&mut **tx)
            .await?;
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*)::BIGINT FROM inventory_routes WHERE endpoint = $1",
            )
            .bind(endpoint)
            .fetch_one(&mut **tx)
            .await?;
            if count as usize >= MAX_ROUTES {
                return Err(CommitError::Conflict(format!(
                    "endpoint '{endpoint}' has {count} routes (at most {MAX_ROUTES})"
                )));
            }
            let next: i64 = sqlx::query_scalar(
                "UPDATE inventory_endpoints SET next_route = next_route + 1 WHERE name = $1 \
                 RETURNING next_route - 1",
            )
            .bind(endpoint)
            .fetch_one(&mut **tx)
            .await?;
            let id = route_id(next.max(0) as u64);
            sqlx::query(
                "INSERT INTO inventory_routes (endpoint, id, selector, weight, strategy, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(endpoint)
            .bind(&id)
            .bind(selector)
            .bind(*weight as i64)
            .bind(strategy)
            .bind(t)
            .execute(&mut **tx)
            .await?;
            Ok(Some(id))
        }
        Change::DeleteRoute { endpoint, id } => {
            let n = sqlx::query("DELETE FROM inventory_routes WHERE endpoint = $1 AND id = $2")
                .bind(endpoint)
                .bind(id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(CommitError::NotFound(format!(
                    "unknown route '{id}' of endpoint '{endpoint}'"
                )));
            }
            Ok(None)
        }
        Change::Shape { endpoint, weights } => {
            for (id, w) in weights {
                let n = sqlx::query(
                    "UPDATE inventory_routes SET weight = $1 WHERE endpoint = $2 AND id = $3",
                )
                .bind(*w as i64)
                .bind(endpoint)
                .bind(id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if n == 0 {
                    // Dropping the transaction rolls back the weights set so far.
                    return Err(CommitError::NotFound(format!(
                        "unknown route '{id}' of endpoint '{endpoint}'"
                    )));
                }
            }
            Ok(None)
        }
        Change::AddToken(t) => {
            sqlx::query(
                "INSERT INTO inventory_tokens (id, name, hash, created_at, admin) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.hash)
            .bind(t.created_at)
            .bind(&t.admin)
            .execute(&mut **tx)
            .await?;
            Ok(None)
        }
        Change::BindUnboundTokens { admin } => {
            sqlx::query("UPDATE inventory_tokens SET admin = $1 WHERE admin = ''")
                .bind(admin)
                .execute(&mut **tx)
                .await?;
            Ok(None)
        }
        Change::DeleteToken { id } => {
            let n = sqlx::query("DELETE FROM inventory_tokens WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(CommitError::NotFound(format!("unknown token '{id}'")));
            }
            Ok(None)
        }
    }
}
