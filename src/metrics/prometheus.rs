//! Prometheus text for `/metrics`: the process-wide recorder, the HELP
//! text of every family, and the rendering of one scrape. The `/metrics`
//! handler (`crate::http::ops`) gathers a [`Scrape`] from the serving
//! state; the names and their meaning live here.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::Counters;

/// The process-wide Prometheus recorder (installed on first use), with
/// every family it exports described once. It holds counters and gauges
/// only: each is one value per label set, so it does not grow between
/// scrapes (decision times are [`super::Counters`]' own histograms).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
        describe_metrics();
        handle
    })
}

/// HELP text (and unit) of every family the exporter renders. A family
/// missing here gets no `# HELP` line, which `promtool check metrics`
/// reports (`tests/it/http.rs` checks the live output with it).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        "switchyard_dns_responses_total",
        "DNS responses sent, by transport protocol and response code."
    );
    describe_counter!(
        "switchyard_rrl_responses_total",
        "UDP replies response rate limiting limited, by class (answer, nxdomain, error, refused) and action (slipped: sent truncated; dropped; would_limit: dry_run)."
    );
    describe_counter!(
        "switchyard_dns_cookies_total",
        "Queries carrying a DNS COOKIE option, by result (client_only, valid, invalid, malformed, badcookie_sent)."
    );
    describe_counter!(
        "switchyard_decisions_total",
        "Decisions answered, by app, provider and reason code (fallbacks included)."
    );
    describe_counter!(
        "switchyard_app_failures_total",
        "Decisions whose app failed (error, timeout, memory, limits, watchdog, ...), by app and kind."
    );
    describe_counter!(
        "switchyard_memo_hits_total",
        "Decisions answered from the decision memo, every app together."
    );
    describe_counter!(
        "switchyard_geo_cache_hits_total",
        "GeoIP lookups answered from the cache."
    );
    describe_counter!(
        "switchyard_geo_cache_misses_total",
        "GeoIP lookups that read the database."
    );
    describe_counter!(
        "switchyard_app_reloads_total",
        "Reloads of the apps directory."
    );
    describe_counter!(
        "switchyard_decisions_overloaded_total",
        "Decisions answered from the fallback because every JS worker was busy and the queue full."
    );
    describe_counter!(
        "switchyard_decisions_late_total",
        "Decisions answered from the fallback by the watchdog because the app ran past its hard limit."
    );
    describe_counter!(
        "switchyard_restarts_total",
        "Restarts of the serving process by the supervisor."
    );
    describe_gauge!(
        "switchyard_quarantined_apps",
        "Apps quarantined now (not run until changed or released)."
    );
    describe_counter!(
        "switchyard_quarantine_events_total",
        "Times an app was quarantined, by app."
    );
    describe_gauge!(
        "switchyard_uptime_seconds",
        Unit::Seconds,
        "Seconds since the serving process started."
    );
    describe_gauge!(
        "switchyard_resident_memory_bytes",
        Unit::Bytes,
        "Resident set size of the serving process, in bytes."
    );
    describe_counter!(
        "switchyard_worker_panics_total",
        "JS worker threads that panicked, by the app they ran."
    );
    describe_counter!(
        "switchyard_workers_retired_total",
        "JS worker threads retired by the watchdog, stuck past the hard limit, by the app they ran."
    );
    describe_counter!(
        "switchyard_on_fusion_errors_total",
        "onFusion calls that failed, by app."
    );
}

/// What one scrape exports besides the [`Counters`], gathered from the
/// serving state by the `/metrics` handler.
pub struct Scrape<'a> {
    /// The server's counters (DNS responses, decisions, failures, times).
    pub counters: &'a Counters,
    /// Response rate limiting per class: (class, slipped, dropped, would limit).
    pub rrl: Vec<(&'static str, u64, u64, u64)>,
    /// DNS cookies per result.
    pub cookies: Vec<(&'static str, u64)>,
    /// Decisions answered from the memo.
    pub memo_hits: u64,
    /// GeoIP lookups answered from the cache.
    pub geo_cache_hits: u64,
    /// GeoIP lookups that read the database.
    pub geo_cache_misses: u64,
    /// Reloads of the apps directory.
    pub app_reloads: u64,
    /// Decisions answered from the fallback with every worker busy.
    pub overloaded: u64,
    /// Decisions the watchdog answered past the hard limit.
    pub late: u64,
    /// Restarts of the serving process by the supervisor.
    pub restarts: u64,
    /// Apps quarantined now.
    pub quarantined: usize,
    /// Times each app was quarantined.
    pub quarantine_events: std::collections::BTreeMap<String, u64>,
    /// Resident set size of the process.
    pub resident_bytes: u64,
}

/// The Prometheus text of a scrape, plus the decision latency histograms
/// the workers recorded.
pub fn render(s: &Scrape) -> String {
    let handle = recorder();
    let c = s.counters;
    for (proto, rcode, n) in c.dns_responses() {
        metrics::counter!("switchyard_dns_responses_total", "protocol" => proto, "rcode" => rcode)
            .absolute(n);
    }
    for &(class, slipped, dropped, would) in &s.rrl {
        for (action, n) in [
            ("slipped", slipped),
            ("dropped", dropped),
            ("would_limit", would),
        ] {
            metrics::counter!("switchyard_rrl_responses_total", "class" => class, "action" => action)
                .absolute(n);
        }
    }
    for &(result, n) in &s.cookies {
        metrics::counter!("switchyard_dns_cookies_total", "result" => result).absolute(n);
    }
    for ((app, provider, reason), n) in c.decisions() {
        metrics::counter!("switchyard_decisions_total", "app" => app, "provider" => provider, "reason" => reason).absolute(n);
    }
    for ((app, kind), n) in c.failures() {
        metrics::counter!("switchyard_app_failures_total", "app" => app, "kind" => kind)
            .absolute(n);
    }
    metrics::counter!("switchyard_memo_hits_total").absolute(s.memo_hits);
    metrics::counter!("switchyard_geo_cache_hits_total").absolute(s.geo_cache_hits);
    metrics::counter!("switchyard_geo_cache_misses_total").absolute(s.geo_cache_misses);
    metrics::counter!("switchyard_app_reloads_total").absolute(s.app_reloads);
    metrics::counter!("switchyard_decisions_overloaded_total").absolute(s.overloaded);
    metrics::counter!("switchyard_decisions_late_total").absolute(s.late);
    metrics::counter!("switchyard_restarts_total").absolute(s.restarts);
    metrics::gauge!("switchyard_quarantined_apps").set(s.quarantined as f64);
    for (app, n) in &s.quarantine_events {
        metrics::counter!("switchyard_quarantine_events_total", "app" => app.clone()).absolute(*n);
    }
    metrics::gauge!("switchyard_uptime_seconds").set(c.uptime_secs() as f64);
    metrics::gauge!("switchyard_resident_memory_bytes").set(s.resident_bytes as f64);
    let mut out = handle.render();
    c.render_decision_times(&mut out);
    out
}
