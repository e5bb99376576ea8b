//! The inventory in SQLite, sharing the stats store's database file.

use async_trait::async_trait;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::model::{MAX_ROUTES, Route, route_id};
use super::store::{
    Change, CommitError, Committed, InventoryStore, LoadError, Stored, TokenRow, merge, now,
    parse_body,
};

/// The inventory tables of a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteInventory {
    pool: SqlitePool,
}

impl SqliteInventory {
    /// Over a pool whose database has been migrated by the stats store.
    pub fn new(pool: SqlitePool) -> Self {
        SqliteInventory { pool }
    }
}

#[async_trait]
impl InventoryStore for SqliteInventory {
    async fn load(&self) -> Result<Stored, LoadError> {
        let mut tx = self.pool.begin().await?;
        let version: i64 = sqlx::query("SELECT version FROM inventory_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
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
        tx.commit().await?;
        Ok(Committed { version, route_id })
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

async fn apply(
    tx: &mut Transaction<'_, Sqlite>,
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
                sqlx::query_scalar("SELECT body FROM inventory_providers WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
            if old.is_none() && *require_row {
                return Err(CommitError::NotFound(format!("unknown provider '{id}'")));
            }
            let body = merge(old.and_then(|t| parse_body(id, &t)), fields, *replace);
            sqlx::query(
                "INSERT INTO inventory_providers (id, body, updated_at) VALUES (?, ?, ?) \
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
            let n = sqlx::query("DELETE FROM inventory_providers WHERE id = ?")
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
                "INSERT INTO inventory_endpoints (name, next_route, created_at) VALUES (?, 0, ?) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(endpoint)
            .bind(t)
            .execute(&mut **tx)
            .await?;
            let count: i64 =
                sqlx::query_scalar("SELECT count(*) FROM inventory_routes WHERE endpoint = ?")
                    .bind(endpoint)
                    .fetch_one(&mut **tx)
                    .await?;
            if count as usize >= MAX_ROUTES {
                return Err(CommitError::Conflict(format!(
                    "endpoint '{endpoint}' has {count} routes (at most {MAX_ROUTES})"
                )));
            }
            let next: i64 = sqlx::query_scalar(
                "UPDATE inventory_endpoints SET next_route = next_route + 1 WHERE name = ? \
                 RETURNING next_route - 1",
            )
            .bind(endpoint)
            .fetch_one(&mut **tx)
            .await?;
            let id = route_id(next.max(0) as u64);
            sqlx::query(
                "INSERT INTO inventory_routes (endpoint, id, selector, weight, strategy, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
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
            let n = sqlx::query("DELETE FROM inventory_routes WHERE endpoint = ? AND id = ?")
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
                    "UPDATE inventory_routes SET weight = ? WHERE endpoint = ? AND id = ?",
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
                "INSERT INTO inventory_tokens (id, name, hash, created_at, admin) VALUES (?, ?, ?, ?, ?)",
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
            sqlx::query("UPDATE inventory_tokens SET admin = ? WHERE admin = ''")
                .bind(admin)
                .execute(&mut **tx)
                .await?;
            Ok(None)
        }
        Change::DeleteToken { id } => {
            let n = sqlx::query("DELETE FROM inventory_tokens WHERE id = ?")
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
