//! What the data feeds are configured with: the `[[fusion]]` feeds, the
//! `[[sonar]]` checks and the `[leaderboard]` probe refresher. The types
//! live here, beside the feeds that run on them; `crate::config` parses and
//! checks the TOML into them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A Fusion feed: a provider's data fetched from a URL or read from a file.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FusionFeed {
    /// Provider alias the data is for.
    pub provider: String,
    /// HTTP(S) URL to GET.
    pub url: Option<String>,
    /// File to read.
    pub file: Option<PathBuf>,
    /// Seconds between fetches.
    #[serde(default = "default_fusion_interval")]
    pub interval_secs: u64,
    /// Fetch timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// A Sonar health check of one provider.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SonarCheck {
    /// Provider alias.
    pub provider: String,
    /// HTTP(S) URL to GET.
    pub url: Option<String>,
    /// Expected HTTP status (default 200).
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// `host:port` to connect to over TCP, instead of a URL.
    pub tcp: Option<String>,
    /// Seconds between checks.
    #[serde(default = "default_sonar_interval")]
    pub interval_secs: u64,
    /// Check timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes before a down provider is up again.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures before an up provider is down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_fusion_interval() -> u64 {
    30
}
fn default_sonar_interval() -> u64 {
    5
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_status() -> u16 {
    200
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// Where the probe refresher reads aggregated stats.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeSource {
    /// No refresher.
    Off,
    /// This node's own stats store.
    Local,
    /// Another leaderboard's base URL (`…/api/aggregated_stats` is appended).
    Remote(String),
}

/// The leaderboard stats store and the probe mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaderboard {
    /// HMAC key of `POST /api/post_stats` (env `SECRET` wins); `None`: posting off.
    pub secret: Option<String>,
    /// PostgreSQL URL (env `POSTGRES` wins); `None`: SQLite in the data dir.
    pub postgres: Option<String>,
    /// Where probe values come from.
    pub source: ProbeSource,
    /// Seconds between refreshes.
    pub refresh: Duration,
    /// Window of the aggregated query: the probe refresher's, and the
    /// stats API's default for a read with neither `since` nor `until`, so
    /// a plain `GET /api/aggregated_stats` shows what apps' probes are built from.
    pub window: Duration,
    /// Orchestrator address (lower-case) → provider alias.
    pub orchestrators: BTreeMap<String, String>,
    /// Configured regions: `regions` (or the defaults), then `extra_regions`.
    pub regions: crate::stats::RegionSet,
}
