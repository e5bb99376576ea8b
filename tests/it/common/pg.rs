//! PostgreSQL for tests: the server under test (or a store) gets a fresh
//! schema per test in the database `SWITCHYARD_TEST_POSTGRES` names, so
//! parallel runs never meet; without that variable the PostgreSQL tests
//! skip, loudly.

use std::io::Write;

/// The test database's URL; `None`, after a loud SKIPPED line naming
/// `what`, when none is configured.
pub fn url_or_skip(what: &str) -> Option<String> {
    let url = std::env::var("SWITCHYARD_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        let _ = std::io::stderr().write_all(
            format!("\n*** SKIPPED: PostgreSQL {what} (set SWITCHYARD_TEST_POSTGRES) ***\n\n")
                .as_bytes(),
        );
    }
    url
}

/// A name no other test run uses: `prefix`, the process id and the time.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A PostgreSQL schema for one test, dropped on drop (a failing test's
/// too: drop runs while a panic unwinds).
pub struct PgSchema {
    /// The test database's URL (`SWITCHYARD_TEST_POSTGRES`).
    pub database: String,
    /// The schema's name.
    pub schema: String,
    /// A runtime for queries the test makes itself.
    pub rt: tokio::runtime::Runtime,
    /// A pool on the test database (not limited to the schema).
    pub pool: sqlx::PgPool,
}

impl PgSchema {
    /// A fresh schema named from `prefix`; `None` (after a loud SKIPPED
    /// line naming `what`) when no PostgreSQL is configured.
    pub fn new(what: &str, prefix: &str) -> Option<PgSchema> {
        let url = url_or_skip(what)?;
        let schema = unique(prefix);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pool = rt
            .block_on(sqlx::PgPool::connect(&url))
            .expect("connect to SWITCHYARD_TEST_POSTGRES");
        rt.block_on(
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                .execute(&pool),
        )
        .expect("create schema");
        Some(PgSchema {
            database: url,
            schema,
            rt,
            pool,
        })
    }

    /// The URL for a server whose store lives in the schema: the server
    /// opens its store with no schema of its own, and the URL's
    /// search_path puts its tables (and sqlx's bookkeeping) in ours.
    pub fn url(&self) -> String {
        let sep = if self.database.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}options[search_path]={}", self.database, self.schema)
    }

    /// The server's environment: `POSTGRES` set to [`PgSchema::url`].
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("POSTGRES".into(), self.url())]
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = self.rt.block_on(
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{}\" CASCADE",
                self.schema
            )))
            .execute(&self.pool),
        );
    }
}
