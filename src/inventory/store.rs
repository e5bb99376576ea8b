//! The storage seam of the inventory: [`InventoryStore`], implemented
//! over SQLite and PostgreSQL by the database layer (`crate::db`), in the
//! same database as the stats store (tables from `0003_inventory.sql`).
//!
//! Every change is one [`Change`] committed in one transaction that first
//! bumps the inventory version: that row lock serialises writers across a
//! fleet, so two concurrent changes apply one after the other, each whole,
//! and the reference checks (unknown route, unknown provider) inside the
//! transaction see the state the change applies to. Nodes reload when the
//! version ([`InventoryStore::version`]) moves: woken at once by the store
//! ([`InventoryStore::listen`]), with a poll as the safety net.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::model::Route;

/// An issued API token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    /// Public id (`tok_…`), used to list and revoke.
    pub id: String,
    /// What the operator called it.
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// Unix seconds.
    pub created_at: f64,
    /// [`super::tokens::admin_fingerprint`] of the admin token it was
    /// issued with; empty for a token issued before tokens were bound
    /// (see [`Change::BindUnboundTokens`]).
    pub admin: String,
}

/// Everything the store holds, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// The inventory version: moves on every committed change.
    pub version: i64,
    /// Provider id → the fields set through the API (over the config's).
    pub providers: Vec<(String, Map<String, Value>)>,
    /// Endpoints with routes: name → created (unix seconds).
    pub endpoints: Vec<(String, f64)>,
    /// (endpoint, route), by endpoint then id.
    pub routes: Vec<(String, Route)>,
    /// Issued tokens.
    pub tokens: Vec<TokenRow>,
}

/// One change, committed whole or not at all.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Sets provider fields: `replace` drops the fields stored before
    /// (`PUT`), else the given ones are laid over them (`PATCH`).
    /// `require_row`: the provider exists only in the store, so a missing
    /// row is [`CommitError::NotFound`].
    SetProvider {
        /// Provider id.
        id: String,
        /// Checked fields.
        fields: Map<String, Value>,
        /// `PUT` rather than `PATCH`.
        replace: bool,
        /// See above.
        require_row: bool,
    },
    /// Deletes an API-created provider.
    DeleteProvider {
        /// Provider id.
        id: String,
    },
    /// Adds a route; the id is the endpoint's next one.
    AddRoute {
        /// Endpoint (app) name.
        endpoint: String,
        /// Canonical selector.
        selector: String,
        /// Weight.
        weight: u64,
        /// Strategy.
        strategy: String,
    },
    /// Deletes a route.
    DeleteRoute {
        /// Endpoint name.
        endpoint: String,
        /// Route id.
        id: String,
    },
    /// Sets several weights of one endpoint's routes together.
    Shape {
        /// Endpoint name.
        endpoint: String,
        /// Route id → weight.
        weights: BTreeMap<String, u64>,
    },
    /// Stores a new token.
    AddToken(TokenRow),
    /// Revokes a token.
    DeleteToken {
        /// Token id.
        id: String,
    },
    /// Binds the tokens issued before tokens were bound to an admin token
    /// (those with an empty `admin`) to this admin fingerprint.
    BindUnboundTokens {
        /// The current admin token's fingerprint.
        admin: String,
    },
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The version after the change.
    pub version: i64,
    /// The new route's id, for [`Change::AddRoute`].
    pub route_id: Option<String>,
}

/// Why a commit failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A referenced thing does not exist (the message names it).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the state (the message says how).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("inventory database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Reading failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The database failed.
    #[error("inventory database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Where the inventory's API changes live.
#[async_trait]
pub trait InventoryStore: Send + Sync {
    /// Everything, consistent as of one version.
    async fn load(&self) -> Result<Stored, LoadError>;
    /// The current version (cheap: nodes poll it).
    async fn version(&self) -> Result<i64, LoadError>;
    /// Commits one change in one transaction.
    async fn commit(&self, change: &Change) -> Result<Committed, CommitError>;
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    /// Until `stop`, wakes `wake` when another node may have committed a
    /// change (PostgreSQL: LISTEN/NOTIFY). The default never wakes: a
    /// SQLite store has one node, and the version poll stays the record.
    async fn listen(&self, wake: Arc<Notify>, stop: CancellationToken) {
        let _ = wake;
        stop.cancelled().await;
    }
}

/// Lays `fields` over `base` (top-level keys replace).
pub fn merge(
    base: Option<Map<String, Value>>,
    fields: &Map<String, Value>,
    replace: bool,
) -> Map<String, Value> {
    let mut out = if replace {
        Map::new()
    } else {
        base.unwrap_or_default()
    };
    for (k, v) in fields {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Parses a stored provider body; a row edited by hand into something
/// else is skipped with a warning rather than failing every load.
pub fn parse_body(id: &str, text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => match super::model::check_fields(&Value::Object(m), id) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(provider = id, error = %e, "stored provider fields are invalid; ignored");
                None
            }
        },
        _ => {
            tracing::warn!(
                provider = id,
                "stored provider fields are not a JSON object; ignored"
            );
            None
        }
    }
}

/// Unix seconds now.
pub fn now() -> f64 {
    crate::stats::unix_now()
}
