//! `[apps.NAME]` and the sidecar `NAME.toml` beside an app: per-app
//! settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::budget::bounded;
use crate::openmix::decision::{HostError, classify_host};
use crate::openmix::{Answer, Budget};

/// Per-app settings, from `[apps.NAME]` in the config or a sidecar `NAME.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppSettings {
    /// Default TTL of the app's answers.
    pub ttl: Option<u32>,
    /// Fallback answer: a host name or a list of addresses.
    pub fallback: Option<StringOrList>,
    /// Decision time budget override, in ms.
    pub budget_ms: Option<u64>,
    /// Memory budget override, in MB.
    pub memory_mb: Option<u64>,
    /// Provider aliases assigned to the app: it is expected to declare
    /// them, sees them besides those it requires, and
    /// `config.getProviders()` lists only them.
    #[serde(default)]
    pub providers: Vec<String>,
}

/// A TOML value that may be one string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string.
    One(String),
    /// A list.
    Many(Vec<String>),
}

/// Checked per-app settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AppSettings {
    /// Default TTL (else the zone's).
    pub ttl: Option<u32>,
    /// Answer served when the app fails.
    pub fallback: Vec<Answer>,
    /// Budgets for this app.
    pub budget: Budget,
    /// Provider aliases assigned to the app: it is expected to declare
    /// them, sees them besides those it requires, and
    /// `config.getProviders()` lists only them.
    pub providers: Vec<String>,
}

/// Why per-app settings (`[apps.NAME]` or a sidecar) are refused; each
/// message starts with the source and key.
#[derive(Debug, thiserror::Error)]
pub enum AppSettingsError {
    /// A budget override outside its range.
    #[error("{what}: {key} must be 1..={max}, got {value}")]
    OutOfRange {
        /// The source (`apps/foo.toml` or `apps.foo`).
        what: String,
        /// The setting (`budget_ms`, `memory_mb`).
        key: &'static str,
        /// The largest value allowed.
        max: u64,
        /// The value given.
        value: u64,
    },
    /// A fallback that is neither an address nor a host name.
    #[error("{what}: fallback: {error}")]
    Fallback {
        /// The source (`apps/foo.toml` or `apps.foo`).
        what: String,
        /// What is wrong with it.
        error: HostError,
    },
}

impl RawAppSettings {
    /// Checks the settings against the global budget; `what` names the
    /// source for messages (`apps/foo.toml` or `[apps.foo]`).
    pub fn check(&self, base: Budget, what: &str) -> Result<AppSettings, AppSettingsError> {
        let range = |value: u64, max: u64, key: &'static str| {
            bounded(value, max, key).map_err(|_| AppSettingsError::OutOfRange {
                what: what.to_string(),
                key,
                max,
                value,
            })
        };
        let mut budget = base;
        if let Some(ms) = self.budget_ms {
            budget.decision = Duration::from_millis(range(ms, 10_000, "budget_ms")?);
        }
        if let Some(mb) = self.memory_mb {
            budget.memory = (range(mb, 4096, "memory_mb")? as usize) << 20;
        }
        let fallback = match &self.fallback {
            None => Vec::new(),
            Some(StringOrList::One(s)) => vec![parse_fallback(s, what)?],
            Some(StringOrList::Many(v)) => v
                .iter()
                .map(|s| parse_fallback(s, what))
                .collect::<Result<_, _>>()?,
        };
        Ok(AppSettings {
            ttl: self.ttl,
            fallback,
            budget,
            providers: self.providers.clone(),
        })
    }
}

fn parse_fallback(s: &str, what: &str) -> Result<Answer, AppSettingsError> {
    classify_host(s).map_err(|error| AppSettingsError::Fallback {
        what: what.to_string(),
        error,
    })
}

/// A sidecar that exists but cannot be read: reported, because serving
/// the app with the configuration's settings instead would hide it.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot read: {source}", path.display())]
pub struct SidecarError {
    /// The sidecar file.
    pub path: PathBuf,
    /// Why it cannot be read.
    pub source: std::io::Error,
}

/// The sidecar `NAME.toml` beside the app file `app`: its text, or `None`
/// when there is none.
pub fn read_sidecar(app: &Path) -> Result<Option<String>, SidecarError> {
    let path = app.with_extension("toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SidecarError { path, source }),
    }
}
