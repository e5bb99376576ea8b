//! The background tasks that keep the data fresh: the Fusion feeds, the
//! Sonar checks, the inventory poller, the leaderboard probes, and the
//! GeoIP file watcher.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::geo::{Geo, GeoPaths, GeoWatcher};
use crate::state::State;

/// Starts watching the GeoIP files; a failure only costs reloads on change, so it is
/// logged, not fatal.
pub fn watch_geo(geo: &Arc<Geo>, paths: GeoPaths) -> Option<GeoWatcher> {
    match geo.watch(paths) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "GeoIP databases are not watched for changes");
            None
        }
    }
}

/// Starts the Fusion and Sonar tasks of the configuration, the inventory
/// poller and the leaderboard probe refresher.
pub fn start(state: &Arc<State>, stop: CancellationToken) {
    let config = state.config.load();
    let client = crate::data::http_client();
    for feed in &config.fusion {
        tokio::spawn(crate::data::fusion::run(
            state.hub.clone(),
            client.clone(),
            feed.clone(),
            stop.clone(),
        ));
    }
    for check in &config.sonar {
        tokio::spawn(crate::data::sonar::run(
            state.hub.clone(),
            client.clone(),
            check.clone(),
            stop.clone(),
        ));
    }
    tokio::spawn(state.inventory.clone().run_poller(stop.clone()));
    tokio::spawn(crate::data::probes::run_leaderboard(
        state.hub.clone(),
        Some(state.stats.store.clone()),
        client,
        config.leaderboard.clone(),
        stop,
    ));
}
