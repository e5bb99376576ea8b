//! Probe values: a static JSON file (the Openmix `getProbe` shape) and the
//! leaderboard refresher mapping aggregated stats to per-region probes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::openmix::DataSnapshot;
use crate::openmix::data::ProbeDataError;

/// Why a static probe file cannot be used; the message starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFileError {
    /// The file cannot be read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The probe file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{}: {error}", path.display())]
    Json {
        /// The probe file.
        path: PathBuf,
        /// Where and why.
        error: serde_json::Error,
    },
    /// The JSON is not probe data.
    #[error("{}: {error}", path.display())]
    Probes {
        /// The probe file.
        path: PathBuf,
        /// What is wrong.
        error: ProbeDataError,
    },
}

/// Reads a static probe file.
pub fn load_static(path: &Path) -> Result<crate::openmix::data::ProbeTable, ProbeFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| ProbeFileError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| ProbeFileError::Json {
            path: path.to_path_buf(),
            error,
        })?;
    DataSnapshot::probes_from_json(&json).map_err(|error| ProbeFileError::Probes {
        path: path.to_path_buf(),
        error,
    })
}

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::settings::{Leaderboard, ProbeSource};
use super::{DataHub, RegionalProbes};
use crate::openmix::data::{RegionLocator, RegionPoint};
use crate::stats::{Filter, RegionSet, StatsStore, Window};

/// The client → region mapping apps' probes use, from the configured
/// regions: every region serving a country or market is a candidate for
/// it, so the query path can pick the nearest (see [`RegionLocator`]).
pub fn locator(regions: &RegionSet) -> RegionLocator {
    let mut loc = RegionLocator::default();
    for r in regions.iter() {
        let point = RegionPoint::new(&r.code, r.coords());
        for c in &r.countries {
            loc.by_country
                .entry(c.clone())
                .or_default()
                .push(point.clone());
        }
        for m in &r.markets {
            loc.by_market
                .entry(m.clone())
                .or_default()
                .push(point.clone());
        }
        if r.coords().is_some() {
            loc.points.push(point);
        }
    }
    loc
}

/// Maps aggregated rows (`{orch: {REGION: row}}`) to per-region probes and
/// per-provider fusion strings: `avail` = 100 × success rate, `http_rtt` =
/// mean round-trip time in ms: the row's `round_trip_time` when it has one
/// (the local store, or a remote Switchyard), else estimated from its
/// `round_trip_score` ([`rtt_from_score`]). Orchestrators not mapped to a
/// provider are left out.
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
            let rtt = row
                .get("round_trip_time")
                .and_then(serde_json::Value::as_f64)
                .or_else(|| {
                    row.get("round_trip_score")
                        .and_then(serde_json::Value::as_f64)
                        .and_then(rtt_from_score)
                });
            if let Some(rtt) = rtt {
                probes
                    .entry("http_rtt".into())
                    .or_default()
                    .push((alias.clone(), Some((rtt * 1000.0).round())));
            }
        }
    }
    (regional, fusion)
}

/// The segment duration stream testers use (the leaderboard's own posts
/// average 2.0–2.1 s), assumed when only a score is known.
const ASSUMED_SEG_DURATION: f64 = 2.0;

/// Mean round-trip time (s) from a public `round_trip_score`, for a remote
/// leaderboard that does not send `round_trip_time`: the score is
/// `1 − exp(−seg / rtt)` of the window's means, so `rtt = −seg / ln(1 − score)`.
/// The mean segment duration is not public; [`ASSUMED_SEG_DURATION`] stands
/// in, which is within a few per cent for real testers. A score of 0 (no
/// timing measured) or 1 (rtt rounded to nothing) gives no estimate.
pub fn rtt_from_score(score: f64) -> Option<f64> {
    if !(score > 0.0 && score < 1.0) {
        return None;
    }
    let rtt = -ASSUMED_SEG_DURATION / (1.0 - score).ln();
    rtt.is_finite().then_some(rtt)
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
            Ok(crate::stats::aggregated_json(&rows, true))
        }
        ProbeSource::Remote(base) => {
            // `include` is Switchyard's opt-in for the mean round-trip time;
            // other leaderboards ignore it, and `map_rows` estimates instead.
            let url = format!(
                "{base}/api/aggregated_stats?since={since:.0}&include={}",
                crate::stats::INCLUDE_ROUND_TRIP_TIME
            );
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
    let name = super::Feed::Leaderboard;
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

    fn region(code: &str, lat: f64, lon: f64, countries: &[&str]) -> crate::stats::Region {
        crate::stats::Region {
            code: code.into(),
            name: code.into(),
            lat: Some(lat),
            lon: Some(lon),
            markets: vec!["NA".into()],
            countries: countries.iter().map(|c| (*c).into()).collect(),
        }
    }

    #[test]
    fn nearest_region_within_a_country() {
        // Two US regions, the east one listed first.
        let set = RegionSet::new(vec![
            region("NYC", 40.7128, -74.0060, &["US"]),
            region("LAX", 34.0522, -118.2437, &["US"]),
            region("TOR", 43.6532, -79.3832, &["CA"]),
        ])
        .unwrap();
        let loc = locator(&set);
        // Boston and Miami: east; Seattle and San Diego: west.
        assert_eq!(loc.locate("NA", "US", Some(42.36), Some(-71.06)), "NYC");
        assert_eq!(loc.locate("NA", "US", Some(25.76), Some(-80.19)), "NYC");
        assert_eq!(loc.locate("NA", "US", Some(47.61), Some(-122.33)), "LAX");
        assert_eq!(loc.locate("NA", "US", Some(32.72), Some(-117.16)), "LAX");
        // The country wins over distance: Vancouver (CA) goes to TOR, its
        // only region, though LAX is nearer.
        assert_eq!(loc.locate("NA", "CA", Some(49.28), Some(-123.12)), "TOR");
        // No coordinates: the first region listed for the country.
        assert_eq!(loc.locate("NA", "US", None, None), "NYC");
        // Unlisted country: its market, nearest inside it (Mexico City → LAX).
        assert_eq!(loc.locate("NA", "MX", Some(19.43), Some(-99.13)), "LAX");
        // Nothing listed: nearest overall, then GLOBAL.
        assert_eq!(loc.locate("EU", "DE", Some(50.1), Some(8.7)), "NYC");
        assert_eq!(loc.locate("EU", "DE", None, None), "GLOBAL");
        assert_eq!(loc.locate("NA", "US", Some(f64::NAN), Some(0.0)), "NYC");
    }

    #[test]
    fn locator_agrees_with_the_region_set() {
        // The query path's locator and the stats module's rules pick the
        // same default region for clients all over the map.
        let set = RegionSet::default();
        let loc = locator(&set);
        let clients = [
            ("NA", "US", Some((47.6, -122.3))),
            ("NA", "US", Some((41.9, -87.7))),
            ("NA", "US", Some((29.8, -95.4))),
            ("NA", "US", Some((42.4, -71.1))),
            ("NA", "US", Some((37.3, -121.9))),
            ("NA", "US", None),
            ("EU", "DE", Some((52.5, 13.4))),
            ("EU", "XX", Some((48.2, 16.4))),
            ("", "", Some((-1.3, 36.8))),
            ("AS", "JP", None),
            ("", "", None),
        ];
        for (market, country, here) in clients {
            let (lat, lon) = (here.map(|h| h.0), here.map(|h| h.1));
            assert_eq!(
                loc.locate(market, country, lat, lon),
                set.for_client(market, country, lat, lon).code,
                "{market} {country} {here:?}"
            );
        }
    }

    #[test]
    fn rtt_estimated_from_the_public_score() {
        // A public row (another leaderboard): rtt 0.5 s with 2 s segments
        // scores 1 − e⁻⁴ = 0.981684; the estimate inverts that to 500 ms.
        let rows = serde_json::json!({
            "0xabc": {"MDW": {"success_rate": 1.0, "round_trip_score": 0.981684, "score": 0.981684}},
            "0xdef": {"MDW": {"success_rate": 1.0, "round_trip_score": 0.0, "score": 0.0}}
        });
        let map: BTreeMap<String, String> = [
            ("0xabc".to_string(), "cdn_a".to_string()),
            ("0xdef".to_string(), "cdn_b".to_string()),
        ]
        .into();
        let (regional, _) = map_rows(&rows, &map);
        assert_eq!(
            regional["MDW"]["http_rtt"],
            vec![("cdn_a".to_string(), Some(500.0))],
            "no estimate from a zero score"
        );
        // The worked value: seg 2.00886, rtt 1.94704 → 0.643616; with 2 s
        // assumed the estimate is within 1 % of the true 1.947 s.
        let est = rtt_from_score(0.643616).unwrap();
        assert!((est - 1.94704).abs() / 1.94704 < 0.01, "{est}");
        assert_eq!(rtt_from_score(1.0), None);
        assert_eq!(rtt_from_score(f64::NAN), None);
    }
}
