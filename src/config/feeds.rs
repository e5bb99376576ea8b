//! `[data]`, `[[fusion]]` and `[[sonar]]`: the data feeds apps read.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawData {
    probes: Option<PathBuf>,
    stale_secs: Option<u64>,
}

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

/// The checked `[data]` section.
pub(super) struct Data {
    pub(super) static_probes: Option<PathBuf>,
    pub(super) stale_after: Duration,
}

pub(super) fn check_data(raw: RawData) -> Data {
    Data {
        static_probes: raw.probes,
        stale_after: Duration::from_secs(raw.stale_secs.unwrap_or(120).max(1)),
    }
}

fn is_http(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

pub(super) fn check_fusion(fusion: &[FusionFeed]) -> Result<(), String> {
    for (i, f) in fusion.iter().enumerate() {
        if f.url.is_some() == f.file.is_some() {
            return Err(format!("fusion[{i}]: give exactly one of url and file"));
        }
        if let Some(u) = &f.url
            && !is_http(u)
        {
            return Err(format!("fusion[{i}].url: '{u}' is not an http(s) URL"));
        }
        if f.interval_secs == 0 || f.timeout_ms == 0 {
            return Err(format!(
                "fusion[{i}]: interval_secs and timeout_ms must be positive"
            ));
        }
    }
    Ok(())
}

pub(super) fn check_sonar(sonar: &[SonarCheck]) -> Result<(), String> {
    for (i, c) in sonar.iter().enumerate() {
        if c.url.is_some() == c.tcp.is_some() {
            return Err(format!("sonar[{i}]: give exactly one of url and tcp"));
        }
        if let Some(u) = &c.url
            && !is_http(u)
        {
            return Err(format!("sonar[{i}].url: '{u}' is not an http(s) URL"));
        }
        if c.interval_secs == 0 || c.timeout_ms == 0 || c.rise == 0 || c.fall == 0 {
            return Err(format!(
                "sonar[{i}]: interval_secs, timeout_ms, rise and fall must be positive"
            ));
        }
    }
    Ok(())
}
