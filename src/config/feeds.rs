//! `[data]`, `[[fusion]]` and `[[sonar]]`: the data feeds apps read.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::data::settings::{FusionFeed, SonarCheck};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawData {
    probes: Option<PathBuf>,
    stale_secs: Option<u64>,
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
