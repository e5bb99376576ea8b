//! [`StatsApi`]: what the leaderboard's stats endpoints serve from — the
//! store, the posting secret, the regions and the limits. The HTTP
//! handlers over it live in `crate::http::stats`.

use std::sync::Arc;
use std::time::Duration;

use super::{RegionSet, StatsStore};

/// Largest accepted post body (the spec's 64 KiB); larger → 413.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// The window of a read with neither `since` nor `until`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Everything the endpoints need.
pub struct StatsApi {
    /// Where records go and come from.
    pub store: Arc<dyn StatsStore>,
    /// HMAC key for posts (`SECRET` env or config); `None` turns posting off.
    pub secret: Option<String>,
    /// The regions a post may name, listed by `/api/regions`.
    pub regions: RegionSet,
    /// Largest post body in bytes.
    pub max_body: usize,
    /// The window of a read with neither `since` nor `until`.
    pub default_window: Duration,
}

impl std::fmt::Debug for StatsApi {
    // By hand: the secret must never be printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsApi")
            .field("store", &self.store.backend())
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("regions", &self.regions.len())
            .field("max_body", &self.max_body)
            .field("default_window", &self.default_window)
            .finish()
    }
}

impl StatsApi {
    /// An API with the spec's defaults (64 KiB bodies, 24 h window). An
    /// empty secret counts as none. Without one, posting is off, and this
    /// logs it once, here, rather than on every refused post.
    pub fn new(store: Arc<dyn StatsStore>, secret: Option<String>, regions: RegionSet) -> Self {
        let secret = secret.filter(|s| !s.is_empty());
        if secret.is_none() {
            tracing::warn!(
                "stats posting is off: no SECRET configured; every POST /api/post_stats gets 403"
            );
        }
        StatsApi {
            store,
            secret,
            regions,
            max_body: DEFAULT_MAX_BODY,
            default_window: DEFAULT_WINDOW,
        }
    }

    /// Sets the window of a read with neither `since` nor `until` (the
    /// spec's "last 24 h (configurable)"; config `leaderboard.window_secs`).
    pub fn with_default_window(mut self, window: Duration) -> Self {
        self.default_window = window;
        self
    }
}
