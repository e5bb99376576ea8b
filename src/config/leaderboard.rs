//! `[leaderboard]`: the stats store and where probe values come from.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::env::Env;
use crate::data::settings::{Leaderboard, ProbeSource};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeaderboard {
    secret: Option<String>,
    postgres: Option<String>,
    source: Option<String>,
    refresh_secs: Option<u64>,
    window_secs: Option<u64>,
    #[serde(default)]
    orchestrators: BTreeMap<String, String>,
    regions: Option<Vec<crate::stats::Region>>,
    #[serde(default)]
    extra_regions: Vec<crate::stats::Region>,
}

pub(super) fn check(lb: RawLeaderboard, env: &Env) -> Result<Leaderboard, String> {
    // `extra_regions` extends the list (the defaults unless `regions`
    // replaces them), so adding one region does not mean copying 22.
    let regions = match (lb.regions, lb.extra_regions.is_empty()) {
        (Some(list), true) => {
            crate::stats::RegionSet::new(list).map_err(|e| format!("leaderboard.regions: {e}"))?
        }
        (None, true) => crate::stats::RegionSet::default(),
        (base, false) => {
            let which = if base.is_some() {
                "leaderboard.regions + extra_regions"
            } else {
                "leaderboard.extra_regions"
            };
            let mut list = base
                .unwrap_or_else(|| crate::stats::RegionSet::default().iter().cloned().collect());
            list.extend(lb.extra_regions);
            crate::stats::RegionSet::new(list).map_err(|e| format!("{which}: {e}"))?
        }
    };
    let source = match lb.source.as_deref().map(str::trim) {
        None | Some("") | Some("off") => ProbeSource::Off,
        Some("local") => ProbeSource::Local,
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            ProbeSource::Remote(u.trim_end_matches('/').to_string())
        }
        Some(other) => {
            return Err(format!(
                "leaderboard.source: '{other}' is not off, local or an http(s) URL"
            ));
        }
    };
    for (orch, alias) in &lb.orchestrators {
        if alias.is_empty() || orch.is_empty() {
            return Err(format!(
                "leaderboard.orchestrators: '{orch}' = '{alias}' must both be non-empty"
            ));
        }
    }
    Ok(Leaderboard {
        secret: env.secret.clone().or(lb.secret).filter(|s| !s.is_empty()),
        postgres: env
            .postgres
            .clone()
            .or(lb.postgres)
            .filter(|s| !s.is_empty()),
        source,
        refresh: Duration::from_secs(lb.refresh_secs.unwrap_or(10).max(1)),
        window: Duration::from_secs(lb.window_secs.unwrap_or(86_400).max(1)),
        orchestrators: lb
            .orchestrators
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        regions,
    })
}
