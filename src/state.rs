//! The state every front end shares: the configuration in force, the
//! decision engine, GeoIP, the data feeds' snapshot, the stores and the
//! counters. The server builds it once (`crate::server`) and hands an
//! `Arc<State>` to the DNS and HTTP front ends and the report loop; they
//! read it, and nothing here reaches back into them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::data::DataHub;
use crate::dns::DnsHandler;
use crate::engine::apps::AppRegistry;
use crate::engine::quarantine::Quarantine;
use crate::engine::workers::Workers;
use crate::geo::{Geo, GeoWatcher};
use crate::metrics::Counters;
use crate::openmix::DataSnapshot;

/// Everything the front ends share.
pub struct State {
    /// The configuration in force.
    pub config: ArcSwap<Config>,
    /// Apps.
    pub apps: Arc<AppRegistry>,
    /// GeoIP.
    pub geo: Arc<Geo>,
    /// Watches the GeoIP files in use (replaced when SIGHUP changes their paths).
    pub(crate) geo_watcher: std::sync::Mutex<Option<GeoWatcher>>,
    /// Data apps read.
    pub data: Arc<ArcSwap<DataSnapshot>>,
    /// Where the data feeds publish.
    pub hub: Arc<DataHub>,
    /// JS workers.
    pub workers: Arc<Workers>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// The sampled decision log and the snapshots its entries name.
    pub decisions: Arc<crate::engine::decision_log::DecisionLog>,
    /// DNS handler (zones live in it).
    pub dns: Arc<DnsHandler>,
    /// The signers of the signed zones (kept across reloads, so their
    /// signature caches survive).
    pub signers: ArcSwap<crate::dnssec::sign::Signers>,
    /// Watches the signed zones' key directories (replaced on SIGHUP).
    pub(crate) key_watchers: std::sync::Mutex<Vec<crate::dnssec::watch::KeyWatcher>>,
    /// Quarantined app versions.
    pub quarantine: Arc<Quarantine>,
    /// The leaderboard stats store and its HTTP API.
    pub stats: Arc<crate::stats::StatsApi>,
    /// The provider inventory and its routes.
    pub inventory: Arc<crate::inventory::Inventory>,
    /// Decision reports: the fleet's buckets and nodes.
    pub reports: Arc<crate::report::Reports>,
    /// Restarts of the serving process so far (from the supervisor).
    pub restarts: u64,
    /// Last heartbeat (ms since start) of each DNS runtime.
    pub(crate) heartbeats: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
    /// True while the public HTTP decision listener's accept loop runs.
    pub http_serving: Arc<std::sync::atomic::AtomicBool>,
    /// When the serving process started: heartbeats count from it.
    pub(crate) started: Instant,
}

impl State {
    /// Time since each DNS runtime last showed it was running.
    pub fn dns_heartbeats(&self) -> Vec<Duration> {
        let now = self.started.elapsed().as_millis() as u64;
        self.heartbeats
            .lock()
            .map(|v| {
                v.iter()
                    .map(|b| Duration::from_millis(now.saturating_sub(b.load(Ordering::Relaxed))))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Freshness of the data feeds: `Ok` lines pass, `Err` lines fail.
    pub fn feed_checks(&self) -> Vec<Result<String, String>> {
        let mut out = vec![Ok(format!(
            "data: snapshot version {}",
            self.data.load().version
        ))];
        for (name, f) in self.hub.feed_status() {
            let age = f
                .last_ok_secs
                .map_or("never".to_string(), |s| format!("{s} s ago"));
            let line = format!(
                "{name}: last good value {age}{}",
                f.last_error
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            );
            out.push(if f.stale {
                Err(format!("{line} (stale)"))
            } else {
                Ok(line)
            });
        }
        out
    }
}
