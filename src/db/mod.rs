//! The one database layer: [`open`] opens SQLite or PostgreSQL, owns the
//! pool and runs the migrations, and hands out the stats, report and
//! inventory stores, which all share that pool.
//!
//! - [`Db`]: a migrated database; it implements every store trait, with
//!   the SQL written once for both backends ([`stats`], [`reports`],
//!   [`inventory`]);
//! - [`backend`]: the [`Backend`](backend::Backend) trait, what differs
//!   between the two;
//! - [`sqlite`], [`postgres`]: opening each, and its own queries;
//!   [`hourly`] is PostgreSQL's stats read and [`notify`] its wake-ups
//!   between nodes (LISTEN/NOTIFY);
//! - [`migrate`]: the schema of both.

pub mod backend;
mod hourly;
mod inventory;
mod migrate;
pub mod notify;
pub mod postgres;
mod reports;
pub mod sqlite;
mod stats;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sqlx::{Database, Pool};

use crate::inventory::store::InventoryStore;
use crate::report::store::ReportStore;
use crate::stats::{StatsStore, StoreError};

/// A migrated database and its pool.
pub struct Db<DB: Database> {
    pool: Pool<DB>,
    /// For Debug and logs: the file, or the URL with its password redacted.
    label: String,
}

impl<DB: Database> Db<DB> {
    fn new(pool: Pool<DB>, label: String) -> Self {
        Db { pool, label }
    }

    /// The underlying pool (tests use it to drop their schema).
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

impl<DB: Database> fmt::Debug for Db<DB> {
    // By hand: the pool's options would print a PostgreSQL password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("backend", &DB::NAME)
            .field("at", &self.label)
            .finish()
    }
}

/// The stores over one database.
#[derive(Clone)]
pub struct Stores {
    /// Leaderboard stats.
    pub stats: Arc<dyn StatsStore>,
    /// Providers, routes, weights and tokens set through the API.
    pub inventory: Arc<dyn InventoryStore>,
    /// Decision reports, nodes and fleets.
    pub reports: Arc<dyn ReportStore>,
}

impl<DB: Database> Db<DB>
where
    Self: StatsStore + InventoryStore + ReportStore,
{
    /// Every store, over this database's pool.
    pub fn stores(self) -> Stores {
        let db = Arc::new(self);
        Stores {
            stats: db.clone(),
            inventory: db.clone(),
            reports: db,
        }
    }
}

/// Opens the stats, inventory and report stores over one database:
/// PostgreSQL when `postgres_url` is given (the caller takes it from env
/// `POSTGRES` or the config), else SQLite in `data_dir/stats.db` (the
/// directory is created if needed). Either way the schema is created or
/// upgraded before this returns.
pub async fn open(data_dir: &Path, postgres_url: Option<&str>) -> Result<Stores, StoreError> {
    match postgres_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => {
            let db = postgres::open(url, None).await?;
            tracing::info!(url = %db.label, "stats store: PostgreSQL");
            Ok(db.stores())
        }
        None => {
            let db = sqlite::open(data_dir).await?;
            tracing::info!(path = %db.label, "stats store: SQLite");
            Ok(db.stores())
        }
    }
}

/// Whether the database [`open`] would use answers, touching nothing:
/// PostgreSQL at `postgres_url` when given, else `data_dir/stats.db` when
/// it exists. `switchyard check` runs it (bounded by its own timeout).
pub async fn probe(data_dir: &Path, postgres_url: Option<&str>) -> Result<(), StoreError> {
    match postgres_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => postgres::probe(url).await,
        None => sqlite::probe(data_dir).await,
    }
}
