//! `/debug/vars` (every live counter as JSON) and the gathering of a
//! `/metrics` scrape (rendered by [`crate::metrics::prometheus`]).

use std::collections::BTreeMap;

use crate::data::Feed;
use crate::dnssec::keys::KeyState;
use crate::metrics::prometheus::{CheckSeries, FeedSeries, KeySeries, Scrape, SigningSeries};
use crate::state::State;

/// Resident set size of this process, from `/proc/self/statm`.
pub(super) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// `/debug/vars`: every live counter as JSON.
pub(super) fn vars(state: &State) -> serde_json::Value {
    let c = &state.counters;
    let mut queries: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (proto, rcode, n) in c.dns_responses() {
        queries
            .entry(proto.to_string())
            .or_default()
            .insert(rcode, n);
    }
    let mut decisions: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>> = BTreeMap::new();
    let mut fallbacks = 0;
    for ((app, provider, reason), n) in c.decisions() {
        if reason == crate::engine::steer::FALLBACK_REASON {
            fallbacks += n;
        }
        *decisions
            .entry(app)
            .or_default()
            .entry(provider)
            .or_default()
            .entry(reason)
            .or_default() += n;
    }
    let mut failures: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    for ((app, kind), n) in c.failures() {
        failures.entry(app).or_default().insert(kind, n);
    }
    let (hits, misses) = state.geo.cache_stats();
    let js_errors: u64 = failures
        .values()
        .flat_map(|m| m.iter())
        .filter(|(k, _)| **k == "error")
        .map(|(_, n)| n)
        .sum();
    let overruns: u64 = failures
        .values()
        .flat_map(|m| m.iter())
        .filter(|(k, _)| matches!(**k, "timeout" | "memory" | "limits" | "watchdog"))
        .map(|(_, n)| n)
        .sum();
    serde_json::json!({
        "uptime_seconds": c.uptime_secs(),
        "queries": queries,
        "dns_panics": c.dns_panics(),
        "decisions": decisions,
        "fallbacks": fallbacks,
        "js_errors": js_errors,
        "budget_overruns": overruns,
        "app_failures": failures,
        "workers": {
            "overloaded": state.workers.overloaded(),
            "late": state.workers.late(),
            "retired": state.workers.retired(),
            "panics": state.workers.panics(),
            "retired_by_app": state.workers.retired_by_app(),
        },
        "restarts": state.restarts,
        "quarantined": state.quarantine.list(),
        "quarantines": state.quarantine.list().len(),
        "quarantine_events": state.quarantine.events(),
        "geo_cache": {
            "hits": hits,
            "misses": misses,
            "hit_rate": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
        },
        "reloads": state.apps.reload_count(),
        "memory": { "rss_bytes": rss_bytes() },
        "memo": memo_vars(state),
        "rrl": rrl_vars(state),
        "cookies": state.dns.cookie_counts.get().into_iter().collect::<BTreeMap<_, _>>(),
    })
}

/// Response rate limiting: its settings in force, what it limited per
/// class, and the source prefixes it limited most.
fn rrl_vars(state: &State) -> serde_json::Value {
    let shield = state.dns.shield.load();
    let mut limited = serde_json::Map::new();
    for (class, slipped, dropped, would) in state.dns.rrl_counts.get() {
        limited.insert(
            class.to_string(),
            serde_json::json!({ "slipped": slipped, "dropped": dropped, "would_limit": would }),
        );
    }
    let (settings, top) = match &shield.rrl {
        Some(l) => {
            let s = l.settings();
            let top: Vec<_> = l
                .top_limited(10)
                .into_iter()
                .map(|(prefix, n)| serde_json::json!({ "prefix": prefix, "limited": n }))
                .collect();
            (
                serde_json::json!({
                    "responses_per_second": s.responses_per_second,
                    "nxdomains_per_second": s.nxdomains_per_second,
                    "errors_per_second": s.errors_per_second,
                    "slip": s.slip,
                    "window_secs": s.window_secs,
                    "dry_run": s.dry_run,
                    "exempt": s.exempt.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
                top,
            )
        }
        None => (serde_json::Value::Null, Vec::new()),
    };
    serde_json::json!({
        "enabled": shield.rrl.is_some(),
        "settings": settings,
        "limited": limited,
        "top_limited_prefixes": top,
    })
}

/// The decision memo: total hits, and per app whether it is memoised (or
/// why not) with its counters.
fn memo_vars(state: &State) -> serde_json::Value {
    let set = state.apps.snapshot();
    let mut apps = serde_json::Map::new();
    let mut hits = 0;
    for (name, app) in &set.apps {
        let v = match &app.memo {
            Some(memo) => {
                let s = memo.stats();
                hits += s.hits;
                serde_json::json!({ "memoised": true, "stats": s })
            }
            None => serde_json::json!({ "memoised": false, "why_not": app.memo_off }),
        };
        apps.insert(name.clone(), v);
    }
    serde_json::json!({
        "hits": hits,
        "hits_since_start": state.counters.memo_hits(),
        "apps": apps,
    })
}

/// The signed zones' series: signing counts, signature expiry and keys.
fn signing_series(zones: &crate::dns::ZoneSet) -> Vec<SigningSeries> {
    let now = crate::dnssec::keydir::unix_now();
    zones
        .signed()
        .map(|(zone, signer)| {
            let stats = signer.stats();
            SigningSeries {
                zone: zone.to_string(),
                made: stats.made(),
                hits: stats.hits(),
                expires_in: stats
                    .earliest_expiration()
                    .map(|e| e.saturating_sub(now) as f64),
                keys: signer
                    .keys()
                    .keys
                    .iter()
                    .map(|k| {
                        let state = k.timing.state(now);
                        KeySeries {
                            tag: k.tag,
                            role: k.role.name(),
                            states: KeyState::ALL.map(|s| (s.name(), s == state)).to_vec(),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// `/metrics`: what the serving state counts, rendered by
/// [`crate::metrics::prometheus`].
pub(super) fn render_metrics(state: &State) -> String {
    let (geo_cache_hits, geo_cache_misses) = state.geo.cache_stats();
    let mut fusion = Vec::new();
    let mut leaderboard = None;
    for status in state.hub.feed_status().into_values() {
        let series = FeedSeries {
            age_secs: status.age.map(|a| a.as_secs_f64()),
            stale: status.stale,
            errors: status.errors,
        };
        match status.feed {
            Feed::Fusion(alias) => fusion.push((alias, "fetch", series)),
            Feed::FusionPush(alias) => fusion.push((alias, "push", series)),
            Feed::Leaderboard => leaderboard = Some((series, state.hub.leaderboard_rows())),
            // Sonar checks have series of their own, below.
            Feed::Sonar(_) => {}
        }
    }
    let checks = state
        .hub
        .sonar_checks()
        .into_iter()
        .map(|c| CheckSeries {
            provider: c.provider,
            up: c.up,
            last_ok: c.last_ok,
            consecutive_failures: c.consecutive_failures,
            age_secs: c.age.as_secs_f64(),
        })
        .collect();
    crate::metrics::prometheus::render(&Scrape {
        counters: &state.counters,
        rrl: state.dns.rrl_counts.get(),
        cookies: state.dns.cookie_counts.get(),
        checks,
        fusion,
        leaderboard,
        geo_cache_hits,
        geo_cache_misses,
        app_reloads: state.apps.reload_count(),
        overloaded: state.workers.overloaded(),
        late: state.workers.late(),
        decisions_logged: state.decisions.logged(),
        decisions_log_dropped: state.decisions.dropped(),
        restarts: state.restarts,
        quarantined: state.quarantine.list().len(),
        quarantine_events: state.quarantine.events(),
        resident_bytes: rss_bytes(),
        dnssec: signing_series(&state.dns.zones.load()),
    })
}
