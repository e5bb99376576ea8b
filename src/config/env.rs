//! The environment variables that win over the file, read in one place so
//! that a deployment's overrides are all listed here.

/// `SECRET`, `POSTGRES`, `SWITCHYARD_NODE` and `SWITCHYARD_FLEET`, each
/// `None` when unset or empty.
#[derive(Debug, Default, Clone)]
pub(super) struct Env {
    /// `SECRET`: the leaderboard's HMAC key.
    pub(super) secret: Option<String>,
    /// `POSTGRES`: the stats store's PostgreSQL URL.
    pub(super) postgres: Option<String>,
    /// `SWITCHYARD_NODE`: this node's id in the fleet.
    pub(super) node: Option<String>,
    /// `SWITCHYARD_FLEET`: the fleet's name.
    pub(super) fleet: Option<String>,
}

impl Env {
    /// Reads the process's environment.
    pub(super) fn read() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            secret: var("SECRET"),
            postgres: var("POSTGRES"),
            node: var("SWITCHYARD_NODE"),
            fleet: var("SWITCHYARD_FLEET"),
        }
    }
}
