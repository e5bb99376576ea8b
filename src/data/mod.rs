//! Live data for apps: probes, Fusion feeds and Sonar checks, merged into
//! one immutable [`DataSnapshot`] that the query path reads lock-free.
//!
//! Each source is a background task ([`fusion`], [`sonar`], [`probes`])
//! that writes its part into the [`DataHub`]; the hub rebuilds and swaps
//! the snapshot when a part changes. A source that fails keeps its last
//! good value and reports itself (stale after a configured age) for
//! `/deepcheck`. No feed I/O ever happens on the query path.

pub mod fusion;
pub mod probes;
pub mod settings;
pub mod sonar;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::openmix::{DataSnapshot, ProviderInfo};

/// Probe values by region: region code → probe name → (alias, value).
pub type RegionalProbes = BTreeMap<String, crate::openmix::data::ProbeTable>;

/// The parts the snapshot is made of, each written by one source.
#[derive(Debug, Default, Clone)]
struct Parts {
    providers: Vec<(String, ProviderInfo)>,
    static_probes: BTreeMap<String, Vec<(String, Option<f64>)>>,
    regional: RegionalProbes,
    leaderboard_fusion: BTreeMap<String, String>,
    fusion: BTreeMap<String, String>,
    sonar: BTreeMap<String, String>,
    inventory: InventoryPart,
}

/// Most bytes of Fusion data (aliases and values) held at once.
pub const MAX_FUSION_BYTES: usize = 16 << 20;

/// Why Fusion data was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FusionRefused {
    /// The alias is no configured or inventory provider.
    #[error("no such provider: Fusion data is taken for configured or inventory providers only")]
    UnknownProvider,
    /// All Fusion data together would pass [`MAX_FUSION_BYTES`].
    #[error(
        "Fusion data would pass its limit of {} bytes in all",
        MAX_FUSION_BYTES
    )]
    TooLarge,
}

/// What the provider inventory contributes to the snapshot.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InventoryPart {
    /// Provider alias → inventory record as JSON text (`getData('inventory')`).
    pub providers: Vec<(String, String)>,
    /// Endpoint → route id → route JSON text (`getData('weights')`).
    pub weights: BTreeMap<String, Vec<(String, String)>>,
    /// Endpoint → the providers its routes name, sorted and unique (what
    /// the endpoint's app sees besides those it declared).
    pub routed: BTreeMap<String, Vec<String>>,
    /// Providers that are `down` or `draining`: they read as Sonar
    /// `{"avail":0}` and `getProbe('avail')` 0 whatever the feeds say, so
    /// unmodified Openmix apps steer away from them.
    pub unavailable: std::collections::BTreeSet<String>,
    /// Provider alias → (latitude, longitude): what `proximity_dist`
    /// measures to, over the configured coordinates.
    pub locations: BTreeMap<String, (f64, f64)>,
}

/// Sets `avail` to 0 for every unavailable provider in `table`; with
/// `create`, adds the `avail` probe when the table has none.
fn force_unavailable(
    table: &mut crate::openmix::data::ProbeTable,
    unavailable: &std::collections::BTreeSet<String>,
    create: bool,
) {
    if unavailable.is_empty() || (!create && !table.contains_key("avail")) {
        return;
    }
    let rows = table.entry("avail".to_string()).or_default();
    for alias in unavailable {
        match rows.iter_mut().find(|(a, _)| a == alias) {
            Some(row) => row.1 = Some(0.0),
            None => rows.push((alias.clone(), Some(0.0))),
        }
    }
}

/// A source of data, named in `/deepcheck` by its [`std::fmt::Display`]
/// and exported on `/metrics` by its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// A `[[fusion]]` feed of a provider.
    Fusion(String),
    /// A provider's Fusion data pushed through the API.
    FusionPush(String),
    /// A `[[sonar]]` check of a provider.
    Sonar(String),
    /// The leaderboard probe refresher.
    Leaderboard,
}

impl std::fmt::Display for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Feed::Fusion(alias) => write!(f, "fusion {alias}"),
            Feed::FusionPush(alias) => write!(f, "fusion {alias} (pushed)"),
            Feed::Sonar(alias) => write!(f, "sonar {alias}"),
            Feed::Leaderboard => f.write_str("leaderboard probes"),
        }
    }
}

/// How one feed is doing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedStatus {
    /// Which feed.
    #[serde(skip)]
    pub feed: Feed,
    /// Time since the last good value (None: never).
    #[serde(skip)]
    pub age: Option<Duration>,
    /// Seconds since the last good value (None: never).
    pub last_ok_secs: Option<u64>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Attempts that failed since the start.
    pub errors: u64,
    /// No good value within the stale age.
    pub stale: bool,
}

struct FeedState {
    feed: Feed,
    last_ok: Option<Instant>,
    last_error: Option<String>,
    errors: u64,
}

impl FeedState {
    fn new(feed: &Feed) -> FeedState {
        FeedState {
            feed: feed.clone(),
            last_ok: None,
            last_error: None,
            errors: 0,
        }
    }
}

/// How one Sonar check is doing, for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckStatus {
    /// The provider checked.
    pub provider: String,
    /// The verdict after rise and fall.
    pub up: bool,
    /// Whether the last check passed.
    pub last_ok: bool,
    /// Checks failed in a row, up to the last one.
    pub consecutive_failures: u64,
    /// Time since the last check finished.
    pub age: Duration,
}

struct CheckState {
    up: bool,
    last_ok: bool,
    consecutive_failures: u64,
    at: Instant,
}

/// Owns the snapshot and its parts.
pub struct DataHub {
    snapshot: Arc<ArcSwap<DataSnapshot>>,
    parts: Mutex<Parts>,
    version: AtomicU64,
    feeds: Mutex<BTreeMap<String, FeedState>>,
    checks: Mutex<BTreeMap<String, CheckState>>,
    leaderboard_rows: AtomicU64,
    stale_after: Mutex<Duration>,
}

impl DataHub {
    /// A hub publishing into `snapshot`, starting from its providers.
    pub fn new(snapshot: Arc<ArcSwap<DataSnapshot>>, stale_after: Duration) -> Arc<DataHub> {
        let first = snapshot.load_full();
        let parts = Parts {
            providers: first.providers.clone(),
            static_probes: first.probes.clone(),
            ..Parts::default()
        };
        Arc::new(DataHub {
            version: AtomicU64::new(first.version),
            snapshot,
            parts: Mutex::new(parts),
            feeds: Mutex::new(BTreeMap::new()),
            checks: Mutex::new(BTreeMap::new()),
            leaderboard_rows: AtomicU64::new(0),
            stale_after: Mutex::new(stale_after),
        })
    }

    /// The snapshot the query path reads.
    pub fn snapshot(&self) -> Arc<ArcSwap<DataSnapshot>> {
        self.snapshot.clone()
    }

    /// Applies `f` to the parts and publishes a new snapshot when it says
    /// something changed.
    fn update(&self, f: impl FnOnce(&mut Parts) -> bool) {
        let Ok(mut parts) = self.parts.lock() else {
            return;
        };
        if !f(&mut parts) {
            return;
        }
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fusion = parts.leaderboard_fusion.clone();
        fusion.extend(parts.fusion.iter().map(|(k, v)| (k.clone(), v.clone())));
        let inv = &parts.inventory;
        let mut sonar = parts.sonar.clone();
        for alias in &inv.unavailable {
            sonar.insert(alias.clone(), "{\"avail\":0}".to_string());
        }
        let mut probes = parts.static_probes.clone();
        force_unavailable(&mut probes, &inv.unavailable, true);
        let mut regional = parts.regional.clone();
        for table in regional.values_mut() {
            force_unavailable(table, &inv.unavailable, false);
        }
        let mut providers = parts.providers.clone();
        for (alias, info) in &mut providers {
            if let Some(&(lat, lon)) = inv.locations.get(alias) {
                info.latitude = Some(lat);
                info.longitude = Some(lon);
            }
        }
        for (alias, &(lat, lon)) in &inv.locations {
            if !providers.iter().any(|(a, _)| a == alias) {
                providers.push((
                    alias.clone(),
                    ProviderInfo {
                        latitude: Some(lat),
                        longitude: Some(lon),
                        ..ProviderInfo::default()
                    },
                ));
            }
        }
        let snap = DataSnapshot {
            version,
            probes,
            regional,
            fusion: fusion.into_iter().collect(),
            sonar: sonar.into_iter().collect(),
            providers,
            regions: self.snapshot.load().regions.clone(),
            inventory: inv.providers.clone(),
            weights: inv.weights.clone(),
            routed: inv.routed.clone(),
        };
        self.snapshot.store(Arc::new(snap));
    }

    /// Replaces the configured providers (SIGHUP).
    pub fn set_providers(&self, providers: Vec<(String, ProviderInfo)>) {
        self.update(|p| {
            let changed = p.providers != providers;
            p.providers = providers;
            changed
        });
    }

    /// Replaces what the provider inventory contributes.
    pub fn set_inventory(&self, part: InventoryPart) {
        self.update(|p| {
            let changed = p.inventory != part;
            p.inventory = part;
            changed
        });
    }

    /// Replaces the static probe values.
    pub fn set_static_probes(&self, probes: BTreeMap<String, Vec<(String, Option<f64>)>>) {
        self.update(|p| {
            let changed = p.static_probes != probes;
            p.static_probes = probes;
            changed
        });
    }

    /// Replaces the leaderboard-derived probes and fusion rows.
    pub fn set_leaderboard(&self, regional: RegionalProbes, fusion: BTreeMap<String, String>) {
        let rows: usize = regional
            .values()
            .map(|table| {
                let mut aliases: Vec<&str> = table
                    .values()
                    .flat_map(|rows| rows.iter().map(|(alias, _)| alias.as_str()))
                    .collect();
                aliases.sort_unstable();
                aliases.dedup();
                aliases.len()
            })
            .sum();
        self.leaderboard_rows.store(rows as u64, Ordering::Relaxed);
        self.update(|p| {
            let changed = p.regional != regional || p.leaderboard_fusion != fusion;
            p.regional = regional;
            p.leaderboard_fusion = fusion;
            changed
        });
    }

    /// Sets one provider's Fusion data (a feed fetch or a push). Only a
    /// known provider's (configured, or in the inventory), and only while
    /// all Fusion data together stays within [`MAX_FUSION_BYTES`]: a push
    /// API that takes any alias without bound lets one client fill memory.
    pub fn set_fusion(&self, alias: &str, body: String) -> Result<(), FusionRefused> {
        let mut refused = None;
        self.update(|p| {
            let known = p.providers.iter().any(|(a, _)| a == alias)
                || p.inventory.providers.iter().any(|(a, _)| a == alias);
            if !known {
                refused = Some(FusionRefused::UnknownProvider);
                return false;
            }
            let held: usize = p
                .fusion
                .iter()
                .filter(|(a, _)| a.as_str() != alias)
                .map(|(a, v)| a.len() + v.len())
                .sum();
            if held + alias.len() + body.len() > MAX_FUSION_BYTES {
                refused = Some(FusionRefused::TooLarge);
                return false;
            }
            if p.fusion.get(alias) == Some(&body) {
                return false;
            }
            p.fusion.insert(alias.to_string(), body);
            true
        });
        refused.map_or(Ok(()), Err)
    }

    /// Sets one provider's Sonar verdict.
    pub fn set_sonar(&self, alias: &str, up: bool) {
        let value = format!("{{\"avail\":{}}}", u8::from(up));
        self.update(|p| {
            if p.sonar.get(alias) == Some(&value) {
                return false;
            }
            p.sonar.insert(alias.to_string(), value);
            true
        });
    }

    /// Leaderboard rows (provider and region pairs) the probes were last
    /// built from.
    pub fn leaderboard_rows(&self) -> u64 {
        self.leaderboard_rows.load(Ordering::Relaxed)
    }

    /// Records one Sonar check of `alias`: whether it `passed`, and the
    /// verdict `up` after rise and fall (published to apps).
    pub fn sonar_checked(&self, alias: &str, passed: bool, up: bool) {
        self.set_sonar(alias, up);
        if let Ok(mut checks) = self.checks.lock() {
            let c = checks.entry(alias.to_string()).or_insert(CheckState {
                up,
                last_ok: passed,
                consecutive_failures: 0,
                at: Instant::now(),
            });
            c.up = up;
            c.last_ok = passed;
            c.consecutive_failures = if passed {
                0
            } else {
                c.consecutive_failures + 1
            };
            c.at = Instant::now();
        }
    }

    /// Every Sonar check that ran at least once.
    pub fn sonar_checks(&self) -> Vec<CheckStatus> {
        let Ok(checks) = self.checks.lock() else {
            return Vec::new();
        };
        checks
            .iter()
            .map(|(provider, c)| CheckStatus {
                provider: provider.clone(),
                up: c.up,
                last_ok: c.last_ok,
                consecutive_failures: c.consecutive_failures,
                age: c.at.elapsed(),
            })
            .collect()
    }

    /// Records a feed's attempt: `Ok` refreshes it, `Err` keeps its last value.
    pub fn feed_result(&self, feed: &Feed, result: Result<(), String>) {
        if let Ok(mut feeds) = self.feeds.lock() {
            let f = feeds
                .entry(feed.to_string())
                .or_insert_with(|| FeedState::new(feed));
            match result {
                Ok(()) => {
                    f.last_ok = Some(Instant::now());
                    f.last_error = None;
                }
                Err(e) => {
                    f.last_error = Some(e);
                    f.errors += 1;
                }
            }
        }
    }

    /// Registers a feed so that it shows as stale until its first success.
    pub fn register_feed(&self, feed: &Feed) {
        if let Ok(mut feeds) = self.feeds.lock() {
            feeds
                .entry(feed.to_string())
                .or_insert_with(|| FeedState::new(feed));
        }
    }

    /// Every feed's status.
    pub fn feed_status(&self) -> BTreeMap<String, FeedStatus> {
        let stale_after = self
            .stale_after
            .lock()
            .map_or(Duration::from_secs(120), |d| *d);
        let Ok(feeds) = self.feeds.lock() else {
            return BTreeMap::new();
        };
        feeds
            .iter()
            .map(|(name, f)| {
                let age = f.last_ok.map(|t| t.elapsed());
                let status = FeedStatus {
                    feed: f.feed.clone(),
                    age,
                    last_ok_secs: age.map(|a| a.as_secs()),
                    last_error: f.last_error.clone(),
                    errors: f.errors,
                    stale: age.is_none_or(|a| a > stale_after),
                };
                (name.clone(), status)
            })
            .collect()
    }
}

/// The HTTP client the feeds use, and the report pushes and the API
/// commands with them (rustls with the ring provider).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(providers: usize) -> Arc<DataHub> {
        let snapshot = DataSnapshot {
            providers: (0..providers)
                .map(|i| (format!("p{i}"), ProviderInfo::default()))
                .collect(),
            ..DataSnapshot::default()
        };
        DataHub::new(
            Arc::new(ArcSwap::from_pointee(snapshot)),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn sonar_checks_count_failures_in_a_row_and_publish_the_verdict() {
        let hub = hub(1);
        hub.sonar_checked("p0", true, true);
        hub.sonar_checked("p0", false, true);
        hub.sonar_checked("p0", false, false);
        let checks = hub.sonar_checks();
        assert_eq!(checks.len(), 1);
        let c = &checks[0];
        assert_eq!(
            (c.provider.as_str(), c.up, c.last_ok, c.consecutive_failures),
            ("p0", false, false, 2)
        );
        assert_eq!(
            hub.snapshot.load().sonar,
            vec![("p0".to_string(), "{\"avail\":0}".to_string())]
        );
        hub.sonar_checked("p0", true, true);
        assert_eq!(hub.sonar_checks()[0].consecutive_failures, 0);
    }

    #[test]
    fn feed_errors_are_counted_and_feeds_keep_their_kind() {
        let hub = hub(1);
        let feed = Feed::Fusion("p0".into());
        hub.register_feed(&feed);
        hub.feed_result(&feed, Err("down".into()));
        hub.feed_result(&feed, Err("down".into()));
        hub.feed_result(&feed, Ok(()));
        let status = &hub.feed_status()["fusion p0"];
        assert_eq!(status.feed, feed);
        assert_eq!(status.errors, 2);
        assert!(!status.stale && status.age.is_some() && status.last_error.is_none());
    }

    #[test]
    fn fusion_is_taken_for_known_providers_only() {
        let hub = hub(2);
        assert_eq!(hub.set_fusion("p1", "{}".into()), Ok(()));
        assert_eq!(
            hub.set_fusion("nobody", "{}".into()),
            Err(FusionRefused::UnknownProvider)
        );
        let fusion = &hub.snapshot.load().fusion;
        assert_eq!(fusion, &vec![("p1".to_string(), "{}".to_string())]);
    }

    #[test]
    fn fusion_data_is_bounded_in_all_and_a_value_may_be_replaced() {
        let hub = hub(400);
        let value = "x".repeat(64 * 1024);
        let mut taken = 0;
        for i in 0..400 {
            match hub.set_fusion(&format!("p{i}"), value.clone()) {
                Ok(()) => taken += 1,
                Err(e) => {
                    assert_eq!(e, FusionRefused::TooLarge);
                    break;
                }
            }
        }
        assert!(
            taken * (value.len() + 4) <= MAX_FUSION_BYTES && taken >= 200,
            "{taken} values taken"
        );
        // Replacing a held value with one of the same size still fits.
        assert_eq!(hub.set_fusion("p0", "y".repeat(64 * 1024)), Ok(()));
    }
}
