//! The schema of both backends, embedded so the binary needs no
//! migrations folder at run time: one table, one row per version, so the
//! two backends cannot skip a version the other has.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One schema version: its name and SQL per backend (the names differ
/// where the backends keep different helper tables).
struct Version {
    sqlite: (&'static str, &'static str),
    postgres: (&'static str, &'static str),
}

/// A version whose files are `migrations/{sqlite,postgres}/FILE`; the
/// name stored by sqlx is the file's, less its number and `.sql`.
macro_rules! version {
    ($sqlite:literal, $postgres:literal) => {
        Version {
            sqlite: (
                $sqlite,
                include_str!(concat!("../../migrations/sqlite/", $sqlite)),
            ),
            postgres: (
                $postgres,
                include_str!(concat!("../../migrations/postgres/", $postgres)),
            ),
        }
    };
}

/// Every version, oldest first (version = position + 1).
const VERSIONS: [Version; 7] = [
    version!("0001_stats_events.sql", "0001_stats_events.sql"),
    version!("0002_stats_pairs.sql", "0002_stats_hourly.sql"),
    version!("0003_inventory.sql", "0003_inventory.sql"),
    version!("0004_reports.sql", "0004_reports.sql"),
    version!("0005_report_ids.sql", "0005_report_ids.sql"),
    version!("0006_token_admin.sql", "0006_token_admin.sql"),
    version!("0007_stats_idempotency.sql", "0007_stats_idempotency.sql"),
];

/// Which backend's files.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dialect {
    /// `migrations/sqlite`.
    Sqlite,
    /// `migrations/postgres`.
    Postgres,
}

/// The migrator of one backend.
pub(super) fn migrator(dialect: Dialect) -> Migrator {
    let migrations = VERSIONS
        .iter()
        .zip(1..)
        .map(|(v, version)| {
            let (file, sql) = match dialect {
                Dialect::Sqlite => v.sqlite,
                Dialect::Postgres => v.postgres,
            };
            let name = file
                .trim_end_matches(".sql")
                .split_once('_')
                .map_or(file, |(_, name)| name);
            Migration::new(
                version,
                Cow::Borrowed(name),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_are_the_files() {
        let m = migrator(Dialect::Postgres);
        let got: Vec<(i64, &str)> = m
            .iter()
            .map(|m| (m.version, m.description.as_ref()))
            .collect();
        assert_eq!(got[1], (2, "stats_hourly"));
        assert_eq!(got[6], (7, "stats_idempotency"));
        assert_eq!(
            migrator(Dialect::Sqlite).iter().nth(1).unwrap().description,
            "stats_pairs"
        );
    }
}
