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
        "switchyard_dns_responses_by_qtype_total",
        "DNS responses sent, by transport protocol and query type (A, AAAA, CNAME, SOA, NS, TXT, MX, SRV, PTR, HTTPS, ANY; other for the rest and queries without a question)."
    );
    describe_counter!(
        "switchyard_http_responses_total",
        "HTTP responses sent, by listener (decision, ops) and status code (other for a code outside the fixed set)."
    );
    describe_gauge!(
        "switchyard_sonar_up",
        "Sonar verdict of a provider's health check after rise and fall: 1 up, 0 down."
    );
    describe_gauge!(
        "switchyard_sonar_last_check_success",
        "Result of a provider's last Sonar check: 1 passed, 0 failed."
    );
    describe_gauge!(
        "switchyard_sonar_consecutive_failures",
        "Sonar checks of a provider failed in a row, up to the last one."
    );
    describe_gauge!(
        "switchyard_sonar_last_check_age_seconds",
        Unit::Seconds,
        "Seconds since a provider's last Sonar check finished."
    );
    describe_gauge!(
        "switchyard_fusion_age_seconds",
        Unit::Seconds,
        "Seconds since a provider's Fusion data was last taken, by provider and source (fetch: a [[fusion]] feed; push: the API); absent before the first."
    );
    describe_gauge!(
        "switchyard_fusion_stale",
        "1 when a provider's Fusion data is older than the stale age (or never came), else 0."
    );
    describe_counter!(
        "switchyard_fusion_errors_total",
        "Fusion fetches that failed or whose value was refused, by provider and source."
    );
    describe_gauge!(
        "switchyard_leaderboard_age_seconds",
        Unit::Seconds,
        "Seconds since the leaderboard probe refresher last read the leaderboard; absent before the first read."
    );
    describe_gauge!(
        "switchyard_leaderboard_stale",
        "1 when the leaderboard probes are older than the stale age (or never came), else 0."
    );
    describe_counter!(
        "switchyard_leaderboard_errors_total",
        "Leaderboard refreshes that failed."
    );
    describe_gauge!(
        "switchyard_leaderboard_rows",
        "Leaderboard rows (provider and region pairs) the probes were last built from."
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
        "switchyard_decision_log_entries_total",
        "Decisions added to the decision log (sampled ones, and every fallback and failure)."
    );
    describe_counter!(
        "switchyard_decision_log_dropped_total",
        "Decision log entries not written to the decision log file (its writer's queue was full, or the write failed)."
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
    describe_counter!(
        "switchyard_dnssec_signatures_total",
        "DNSSEC signatures made (one per RRset and signing key), by zone."
    );
    describe_counter!(
        "switchyard_dnssec_cache_hits_total",
        "Signed RRsets whose signatures came from the signature cache, by zone."
    );
    describe_gauge!(
        "switchyard_dnssec_keys",
        "DNSSEC keys loaded, by zone, key tag, role (csk, ksk, zsk) and state (created, published, active, inactive, removed): 1 per key."
    );
    describe_gauge!(
        "switchyard_dnssec_signature_expiry_seconds",
        Unit::Seconds,
        "Seconds until the signatures a zone serves now expire (its earliest signature expiration); absent before the first signed answer."
    );
}

/// One Sonar check as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSeries {
    /// The provider checked.
    pub provider: String,
    /// The verdict after rise and fall.
    pub up: bool,
    /// Whether the last check passed.
    pub last_ok: bool,
    /// Checks failed in a row.
    pub consecutive_failures: u64,
    /// Seconds since the last check finished.
    pub age_secs: f64,
}

/// One data feed (a Fusion provider, or the leaderboard) as a scrape
/// sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSeries {
    /// Seconds since its last good value (`None`: never).
    pub age_secs: Option<f64>,
    /// No good value within the stale age.
    pub stale: bool,
    /// Attempts that failed.
    pub errors: u64,
}

/// One signed zone as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningSeries {
    /// The zone's name.
    pub zone: String,
    /// Signatures made.
    pub made: u64,
    /// Signature cache hits.
    pub hits: u64,
    /// Seconds until the served signatures expire (`None`: none served).
    pub expires_in: Option<f64>,
    /// Each key of the zone.
    pub keys: Vec<KeySeries>,
}

/// One DNSSEC key as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySeries {
    /// The key tag.
    pub tag: u16,
    /// Its role's name.
    pub role: &'static str,
    /// Every state a key can be in, and whether this one is in it (a
    /// series each: a state left shows as 0 rather than a stale 1).
    pub states: Vec<(&'static str, bool)>,
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
    /// Sonar checks.
    pub checks: Vec<CheckSeries>,
    /// Fusion data by (provider, source: `fetch` or `push`).
    pub fusion: Vec<(String, &'static str, FeedSeries)>,
    /// The leaderboard probe refresher and its rows, when it runs.
    pub leaderboard: Option<(FeedSeries, u64)>,
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
    /// Decision log entries logged.
    pub decisions_logged: u64,
    /// Decision log entries the file did not get.
    pub decisions_log_dropped: u64,
    /// Restarts of the serving process by the supervisor.
    pub restarts: u64,
    /// Apps quarantined now.
    pub quarantined: usize,
    /// Times each app was quarantined.
    pub quarantine_events: std::collections::BTreeMap<String, u64>,
    /// Resident set size of the process.
    pub resident_bytes: u64,
    /// Signed zones.
    pub dnssec: Vec<SigningSeries>,
}

/// The Prometheus text of a scrape, plus the decision latency histograms
/// and memo hits the engine recorded.
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
    for (proto, qtype, n) in c.dns_responses_by_qtype() {
        metrics::counter!("switchyard_dns_responses_by_qtype_total", "protocol" => proto, "qtype" => qtype)
            .absolute(n);
    }
    for (listener, code, n) in c.http_responses() {
        metrics::counter!("switchyard_http_responses_total", "listener" => listener, "code" => code)
            .absolute(n);
    }
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    for check in &s.checks {
        let p = check.provider.clone();
        metrics::gauge!("switchyard_sonar_up", "provider" => p.clone()).set(flag(check.up));
        metrics::gauge!("switchyard_sonar_last_check_success", "provider" => p.clone())
            .set(flag(check.last_ok));
        metrics::gauge!("switchyard_sonar_consecutive_failures", "provider" => p.clone())
            .set(check.consecutive_failures as f64);
        metrics::gauge!("switchyard_sonar_last_check_age_seconds", "provider" => p)
            .set(check.age_secs);
    }
    for (provider, source, feed) in &s.fusion {
        let labels = [
            ("provider", provider.clone()),
            ("source", source.to_string()),
        ];
        if let Some(age) = feed.age_secs {
            metrics::gauge!("switchyard_fusion_age_seconds", &labels).set(age);
        }
        metrics::gauge!("switchyard_fusion_stale", &labels).set(flag(feed.stale));
        metrics::counter!("switchyard_fusion_errors_total", &labels).absolute(feed.errors);
    }
    if let Some((feed, rows)) = &s.leaderboard {
        if let Some(age) = feed.age_secs {
            metrics::gauge!("switchyard_leaderboard_age_seconds").set(age);
        }
        metrics::gauge!("switchyard_leaderboard_stale").set(flag(feed.stale));
        metrics::counter!("switchyard_leaderboard_errors_total").absolute(feed.errors);
        metrics::gauge!("switchyard_leaderboard_rows").set(*rows as f64);
    }
    metrics::counter!("switchyard_geo_cache_hits_total").absolute(s.geo_cache_hits);
    metrics::counter!("switchyard_geo_cache_misses_total").absolute(s.geo_cache_misses);
    metrics::counter!("switchyard_app_reloads_total").absolute(s.app_reloads);
    metrics::counter!("switchyard_decisions_overloaded_total").absolute(s.overloaded);
    metrics::counter!("switchyard_decisions_late_total").absolute(s.late);
    metrics::counter!("switchyard_decision_log_entries_total").absolute(s.decisions_logged);
    metrics::counter!("switchyard_decision_log_dropped_total").absolute(s.decisions_log_dropped);
    metrics::counter!("switchyard_restarts_total").absolute(s.restarts);
    metrics::gauge!("switchyard_quarantined_apps").set(s.quarantined as f64);
    for (app, n) in &s.quarantine_events {
        metrics::counter!("switchyard_quarantine_events_total", "app" => app.clone()).absolute(*n);
    }
    for z in &s.dnssec {
        let zone = z.zone.clone();
        metrics::counter!("switchyard_dnssec_signatures_total", "zone" => zone.clone())
            .absolute(z.made);
        metrics::counter!("switchyard_dnssec_cache_hits_total", "zone" => zone.clone())
            .absolute(z.hits);
        if let Some(secs) = z.expires_in {
            metrics::gauge!("switchyard_dnssec_signature_expiry_seconds", "zone" => zone.clone())
                .set(secs);
        }
        for key in &z.keys {
            for &(st, is) in &key.states {
                let labels = [
                    ("zone", zone.clone()),
                    ("tag", key.tag.to_string()),
                    ("role", key.role.to_string()),
                    ("state", st.to_string()),
                ];
                metrics::gauge!("switchyard_dnssec_keys", &labels).set(flag(is));
            }
        }
    }
    metrics::gauge!("switchyard_uptime_seconds").set(c.uptime_secs() as f64);
    metrics::gauge!("switchyard_resident_memory_bytes").set(s.resident_bytes as f64);
    let mut out = handle.render();
    c.render_decision_times(&mut out);
    out
}
