//! Probe values: a static JSON file (the Openmix `getProbe` shape) and the
//! leaderboard refresher mapping aggregated stats to per-region probes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::openmix::DataSnapshot;

/// Reads a static probe file.
pub fn load_static(path: &Path) -> Result<crate::openmix::data::ProbeTable, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    DataSnapshot::probes_from_json(&json).map_err(|e| format!("{}: {e}", path.display()))
}

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{DataHub, RegionalProbes};
use crate::config::{Leaderboard, ProbeSource};
use crate::openmix::data::RegionLocator;
use crate::stats::{Filter, RegionSet, StatsStore, Window};

/// The client → region mapping apps' probes use, from the configured regions.
pub fn locator(regions: &RegionSet) -> RegionLocator {
    let mut loc = RegionLocator::default();
    for r in regions.iter() {
        for c in &r.countries {
            loc.by_country
                .entry(c.clone())
                .or_insert_with(|| r.code.clone());
        }
        for m in &r.markets {
            loc.by_market
                .entry(m.clone())
                .or_insert_with(|| r.code.clone());
        }
        if let Some((lat, lon)) = r.coords() {
            loc.points.push((r.code.clone(), lat, lon));
        }
    }
    loc
}

/// Maps aggregated rows (`{orch: {REGION: row}}`) to per-region probes and
/// per-provider fusion strings: `avail` = 100 × success rate, `http_rtt` =
/// mean round-trip time in ms (when the row carries `round_trip_time`).
/// Orchestrators not mapped to a provider are left out.
pub fn map_rows(
    rows: &serde_json::Value,
    orchestrators: &BTreeMap<String, String>,
) -> (RegionalProbes, BTreeMap<String, String>) {
    let mut regional: RegionalProbes = BTreeMap::new();
    let mut fusion = BTreeMap::new();
    let Some(orchs) = rows.as_object() else {
        return (regional, fusion);
    };
    for (orch, regions) in orchs {
        let Some(alias) = orchestrators.get(&orch.to_ascii_lowercase()) else {
            continue;
        };
        let Some(regions) = regions.as_object() else {
            continue;
        };
        fusion.insert(
            alias.clone(),
            serde_json::to_string(regions).unwrap_or_default(),
        );
        for (region, row) in regions {
            let probes = regional.entry(region.to_ascii_uppercase()).or_default();
            if let Some(sr) = row.get("success_rate").and_then(serde_json::Value::as_f64) {
                probes
                    .entry("avail".into())
                    .or_default()
                    .push((alias.clone(), Some((sr * 1000.0).round() / 10.0)));
            }
            if let Some(rtt) = row
                .get("round_trip_time")
                .and_then(serde_json::Value::as_f64)
            {
                probes
                    .entry("http_rtt".into())
                    .or_default()
                    .push((alias.clone(), Some((rtt * 1000.0).round())));
            }
        }
    }
    (regional, fusion)
}

/// The local aggregate as `{orch: {REGION: row}}`, each row with its mean
/// `round_trip_time`, which the public API leaves out but `http_rtt` needs.
fn with_round_trip_time(rows: &crate::stats::Aggregated) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (orch, regions) in rows {
        let mut by_region = serde_json::Map::new();
        for (region, row) in regions {
            let mut v = serde_json::to_value(row).unwrap_or_default();
            if let Some(obj) = v.as_object_mut()
                && row.round_trip_time > 0.0
            {
                obj.insert("round_trip_time".into(), row.round_trip_time.into());
            }
            by_region.insert(region.clone(), v);
        }
        out.insert(orch.clone(), by_region.into());
    }
    out.into()
}

async fn fetch_rows(
    source: &ProbeSource,
    store: Option<&Arc<dyn StatsStore>>,
    client: &reqwest::Client,
    window: Duration,
) -> Result<serde_json::Value, String> {
    let now = crate::stats::unix_now();
    let since = now - window.as_secs_f64();
    match source {
        ProbeSource::Off => Ok(serde_json::Value::Null),
        ProbeSource::Local => {
            let store = store.ok_or("no local stats store")?;
            let filter = Filter {
                orchestrator: None,
                region: None,
                window: Window {
                    since: Some(since),
                    until: now,
                },
            };
            let rows = store.aggregated(&filter).await.map_err(|e| e.to_string())?;
            Ok(with_round_trip_time(&rows))
        }
        ProbeSource::Remote(base) => {
            let url = format!("{base}/api/aggregated_stats?since={since:.0}");
            let resp = client
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("GET {url}: status {}", resp.status()));
            }
            resp.json::<serde_json::Value>()
                .await
                .map_err(|e| format!("GET {url}: {e}"))
        }
    }
}

/// Refreshes the leaderboard probes until `stop`.
pub async fn run_leaderboard(
    hub: Arc<DataHub>,
    store: Option<Arc<dyn StatsStore>>,
    client: reqwest::Client,
    lb: Leaderboard,
    stop: CancellationToken,
) {
    if lb.source == ProbeSource::Off {
        return;
    }
    let name = "leaderboard probes".to_string();
    hub.register_feed(&name);
    loop {
        match fetch_rows(&lb.source, store.as_ref(), &client, lb.window).await {
            Ok(rows) => {
                let (regional, fusion) = map_rows(&rows, &lb.orchestrators);
                hub.set_leaderboard(regional, fusion);
                hub.feed_result(&name, Ok(()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "leaderboard refresh failed; keeping the last values");
                hub.feed_result(&name, Err(e));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(lb.refresh) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_to_probes() {
        let rows = serde_json::json!({
            "0xAbC": {"FRA": {"success_rate": 0.995, "round_trip_time": 0.0421, "score": 0.9}},
            "0xunmapped": {"FRA": {"success_rate": 1.0}}
        });
        let map: BTreeMap<String, String> = [("0xabc".to_string(), "cdn_a".to_string())].into();
        let (regional, fusion) = map_rows(&rows, &map);
        assert_eq!(
            regional["FRA"]["avail"],
            vec![("cdn_a".to_string(), Some(99.5))]
        );
        assert_eq!(
            regional["FRA"]["http_rtt"],
            vec![("cdn_a".to_string(), Some(42.0))]
        );
        assert!(fusion["cdn_a"].contains("\"FRA\""));
        assert_eq!(fusion.len(), 1);
    }
}
