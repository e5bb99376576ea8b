//! The inventory tables' SQL (migration `0003_inventory.sql`), one text
//! for both backends; only the full read differs
//! ([`Backend::load_inventory`]). Every commit wakes the other nodes
//! ([`CHANNEL`], detail: the new version), which reload at once rather
//! than at their next poll.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, Transaction, Type};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Db;
use super::backend::{Backend, Column};
use crate::inventory::model::{MAX_ROUTES, route_id};
use crate::inventory::store::{
    Change, CommitError, Committed, InventoryStore, LoadError, Stored, merge, now, parse_body,
};

/// The wake-up channel of inventory commits (detail: the version).
pub const CHANNEL: &str = "switchyard_inventory";

#[async_trait]
impl<DB: Backend> InventoryStore for Db<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
    f64: Column<DB>,
    String: Column<DB>,
{
    async fn load(&self) -> Result<Stored, LoadError> {
        DB::load_inventory(&self.pool).await
    }

    async fn version(&self) -> Result<i64, LoadError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM inventory_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn commit(&self, change: &Change) -> Result<Committed, CommitError> {
        let mut tx = self.pool.begin().await?;
        // Written first: the transaction takes the write lock here, so
        // the checks below see what the change applies to.
        let version: i64 = sqlx::query_scalar(
            "UPDATE inventory_version SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await?;
        let route_id = apply(&mut tx, change).await?;
        DB::notify(&mut tx, CHANNEL, &version.to_string()).await?;
        tx.commit().await?;
        Ok(Committed { version, route_id })
    }

    fn backend(&self) -> &'static str {
        DB::LABEL
    }

    async fn listen(&self, wake: Arc<Notify>, stop: CancellationToken) {
        DB::listen(&self.pool, CHANNEL, stop, wake, None).await;
    }
}

/// Applies `change` in `tx`; the new route's id for [`Change::AddRoute`].
async fn apply<DB: Backend>(
    tx: &mut Transaction<'_, DB>,
    change: &Change,
) -> Result<Option<String>, CommitError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
    f64: Column<DB>,
    String: Column<DB>,
{
    let not_found = |n: u64, what: String| {
        if n == 0 {
            Err(CommitError::NotFound(what))
        } else {
            Ok(None)
        }
    };
    match change {
        Change::SetProvider {
            id,
            fields,
            replace,
            require_row,
        } => {
            let old: Option<String> =
                sqlx::query_scalar("SELECT body FROM inventory_providers WHERE id = $1")
                    .bind(id.as_str())
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
            .bind(id.as_str())
            .bind(serde_json::Value::Object(body).to_string())
            .bind(now())
            .execute(&mut **tx)
            .await?;
            Ok(None)
        }
        Change::DeleteProvider { id } => {
            let r = sqlx::query("DELETE FROM inventory_providers WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
            not_found(DB::rows_affected(&r), format!("unknown provider '{id}'"))
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
            .bind(endpoint.as_str())
            .bind(t)
            .execute(&mut **tx)
            .await?;
            let count: i64 =
                sqlx::query_scalar("SELECT count(*) FROM inventory_routes WHERE endpoint = $1")
                    .bind(endpoint.as_str())
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
            .bind(endpoint.as_str())
            .fetch_one(&mut **tx)
            .await?;
            let id = route_id(next.max(0) as u64);
            sqlx::query(
                "INSERT INTO inventory_routes (endpoint, id, selector, weight, strategy, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(endpoint.as_str())
            .bind(id.as_str())
            .bind(selector.as_str())
            .bind(*weight as i64)
            .bind(strategy.as_str())
            .bind(t)
            .execute(&mut **tx)
            .await?;
            Ok(Some(id))
        }
        Change::DeleteRoute { endpoint, id } => {
            let r = sqlx::query("DELETE FROM inventory_routes WHERE endpoint = $1 AND id = $2")
                .bind(endpoint.as_str())
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
            not_found(
                DB::rows_affected(&r),
                format!("unknown route '{id}' of endpoint '{endpoint}'"),
            )
        }
        Change::Shape { endpoint, weights } => {
            for (id, w) in weights {
                let r = sqlx::query(
                    "UPDATE inventory_routes SET weight = $1 WHERE endpoint = $2 AND id = $3",
                )
                .bind(*w as i64)
                .bind(endpoint.as_str())
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
                // Dropping the transaction rolls back the weights set so far.
                not_found(
                    DB::rows_affected(&r),
                    format!("unknown route '{id}' of endpoint '{endpoint}'"),
                )?;
            }
            Ok(None)
        }
        Change::AddToken(t) => {
            sqlx::query(
                "INSERT INTO inventory_tokens (id, name, hash, created_at, admin) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(t.id.as_str())
            .bind(t.name.as_str())
            .bind(t.hash.as_str())
            .bind(t.created_at)
            .bind(t.admin.as_str())
            .execute(&mut **tx)
            .await?;
            Ok(None)
        }
        Change::BindUnboundTokens { admin } => {
            sqlx::query("UPDATE inventory_tokens SET admin = $1 WHERE admin = ''")
                .bind(admin.as_str())
                .execute(&mut **tx)
                .await?;
            Ok(None)
        }
        Change::DeleteToken { id } => {
            let r = sqlx::query("DELETE FROM inventory_tokens WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
            not_found(DB::rows_affected(&r), format!("unknown token '{id}'"))
        }
    }
}
