//! The operations listener: health checks, counters, profiles and the
//! `/api/*` views, as `shared/seeds/002_*` describes them. It listens on
//! its own address so none of it is public by accident.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::{HttpResponse, json, json_error, query_pairs, text};
use crate::server::State;

/// One profile at a time: a second request waits for the first, as the
/// seed says.
static PROFILE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process-wide Prometheus recorder (installed on first use), with
/// every family it exports described once. It holds counters and gauges
/// only: each is one value per label set, so it does not grow between
/// scrapes (decision times are [`crate::metrics`]' own histograms).
pub fn prometheus() -> &'static PrometheusHandle {
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
/// reports (tests/http.rs checks the live output with it).
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

/// Handles one request on the operations listener.
pub async fn handle(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    if let Some(refused) = super::auth::gate_read(&state, &req, &path) {
        return refused;
    }
    if super::stats::owns(&path) {
        return super::stats::handle_request(&state.stats, req).await;
    }
    if super::inventory::owns(&path) {
        return super::inventory::handle(state, req, &path).await;
    }
    if super::reports::owns(&path) {
        return super::reports::handle(state, req, &path, peer).await;
    }
    match (method.clone(), path.as_str()) {
        (Method::GET, "/healthcheck") => health(&state).await,
        (Method::GET, "/deepcheck") => deepcheck(&state).await,
        (Method::GET, "/debug/vars") => json(StatusCode::OK, &vars(&state)),
        (Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(&state),
        ),
        (Method::GET, "/debug/pprof/profile") => profile(&req).await,
        (Method::GET, "/debug/pprof/heap") => heap(&req).await,
        (Method::GET, "/api/applications") => applications(&state, &req),
        (Method::POST, "/api/reload") => {
            if let Err(r) = super::auth::authorize(&state, &req) {
                return r;
            }
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || s.apps.reload()).await;
            json(
                StatusCode::OK,
                &serde_json::json!({ "reloaded": true, "apps": state.apps.snapshot().apps.len() }),
            )
        }
        (Method::DELETE, p) if quarantine_path(p).is_some() => {
            if let Err(r) = super::auth::authorize(&state, &req) {
                return r;
            }
            let app = quarantine_path(p).unwrap_or_default().to_string();
            lift_quarantine(&state, app).await
        }
        (Method::GET, p) if p.starts_with("/api/applications/") => {
            application(&state, &p["/api/applications/".len()..])
        }
        (Method::PUT, p) if p.starts_with("/api/fusion/") => {
            if let Err(r) = super::auth::authorize(&state, &req) {
                return r;
            }
            let alias = p["/api/fusion/".len()..].to_string();
            push_fusion(&state, &alias, req).await
        }
        (Method::GET, "/api/feeds") => json(
            StatusCode::OK,
            &serde_json::to_value(state.hub.feed_status()).unwrap_or_default(),
        ),
        (_, p) if known(p) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {p}"),
        ),
        (_, p) => json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {p}")),
    }
}

/// `PUT /api/fusion/{alias}`: an operator pushes a provider's Fusion data.
async fn push_fusion(state: &State, alias: &str, req: Request<Incoming>) -> HttpResponse {
    use http_body_util::BodyExt;
    if alias.is_empty() || alias.contains('/') {
        return json_error(
            StatusCode::BAD_REQUEST,
            "the path must name one provider: /api/fusion/{alias}",
        );
    }
    let limit = state.config.load().max_body_bytes;
    let body = match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over the limit of {limit} bytes"),
            );
        }
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return json_error(StatusCode::BAD_REQUEST, "the body must be UTF-8 text");
    };
    if let Err(e) = state.hub.set_fusion(alias, text) {
        let status = match e {
            crate::data::FusionRefused::UnknownProvider => StatusCode::NOT_FOUND,
            crate::data::FusionRefused::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        return json_error(status, format!("{alias}: {e}"));
    }
    state
        .hub
        .feed_result(&format!("fusion {alias} (pushed)"), Ok(()));
    json(
        StatusCode::OK,
        &serde_json::json!({ "provider": alias, "stored": true }),
    )
}

/// The app of `/api/apps/{app}/quarantine`.
fn quarantine_path(p: &str) -> Option<&str> {
    p.strip_prefix("/api/apps/")?
        .strip_suffix("/quarantine")
        .filter(|a| !a.is_empty() && !a.contains('/'))
}

/// `DELETE /api/apps/{app}/quarantine`: an operator lifts a quarantine;
/// the app's current version is loaded again and runs.
async fn lift_quarantine(state: &Arc<State>, app: String) -> HttpResponse {
    let Some(entry) = state.quarantine.lift(&app) else {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("app '{app}' is not quarantined"),
        );
    };
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || s.apps.reload()).await;
    let status = state
        .apps
        .snapshot()
        .apps
        .get(&app)
        .map(|a| if a.runnable() { "ok" } else { "error" });
    json(
        StatusCode::OK,
        &serde_json::json!({ "app": app, "lifted": entry, "status": status }),
    )
}

fn known(p: &str) -> bool {
    matches!(
        p,
        "/healthcheck"
            | "/deepcheck"
            | "/debug/vars"
            | "/metrics"
            | "/debug/pprof/profile"
            | "/debug/pprof/heap"
            | "/api/applications"
            | "/api/reload"
            | "/api/feeds"
    ) || p.starts_with("/api/applications/")
        || p.starts_with("/api/fusion/")
        || quarantine_path(p).is_some()
}

fn verdict(ok: Vec<String>, failed: Vec<String>) -> HttpResponse {
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    json(status, &serde_json::json!({ "ok": ok, "failed": failed }))
}

/// `/healthcheck`: the server itself: DNS runtimes beating, the decision
/// listener's accept loop running, JS workers answering.
async fn health(state: &State) -> HttpResponse {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let beats = state.dns_heartbeats();
    let stale = beats
        .iter()
        .filter(|age| **age > Duration::from_secs(3))
        .count();
    if beats.is_empty() {
        failed.push("dns: no listeners".to_string());
    } else if stale > 0 {
        failed.push(format!(
            "dns: {stale} of {} runtimes unresponsive",
            beats.len()
        ));
    } else {
        ok.push(format!("dns: {} runtimes responsive", beats.len()));
    }
    if state
        .http_serving
        .load(std::sync::atomic::Ordering::Acquire)
    {
        ok.push("http: decision listener serving".to_string());
    } else {
        failed.push("http: decision listener not serving".to_string());
    }
    match state.workers.ping(Duration::from_millis(500)).await {
        Ok(took) => ok.push(format!("js workers: responsive ({} µs)", took.as_micros())),
        Err(e) => failed.push(format!("js workers: {e}")),
    }
    verdict(ok, failed)
}

/// `/deepcheck`: dependencies: GeoIP databases, stats store, apps, data feeds.
async fn deepcheck(state: &State) -> HttpResponse {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let config = state.config.load();
    let status = state.geo.status();
    for (what, configured, loaded) in [
        ("city", config.geo_city.as_ref(), status.city.as_ref()),
        ("asn", config.geo_asn.as_ref(), status.asn.as_ref()),
    ] {
        match (configured, loaded) {
            (None, _) => failed.push(format!("geo {what}: no database configured")),
            (Some(p), _) if !p.exists() => {
                failed.push(format!("geo {what}: {} is missing on disk", p.display()))
            }
            (Some(p), None) => failed.push(format!("geo {what}: {} is not loaded", p.display())),
            (Some(_), Some(db)) => ok.push(format!(
                "geo {what}: {} ({})",
                db.path.display(),
                db.database_type
            )),
        }
    }
    if let Some(e) = state.geo.reload_error() {
        failed.push(format!(
            "geo: the last reload failed, the previous databases still serve: {e}"
        ));
    }
    let apps = state.apps.snapshot();
    if apps.errors.is_empty() {
        ok.push(format!("apps: {} loaded", apps.apps.len()));
    }
    for (name, e) in &apps.errors {
        failed.push(format!("app {name}: {e}"));
    }
    match state.stats.store.ping().await {
        Ok(()) => ok.push("stats store: reachable".to_string()),
        Err(e) => failed.push(format!("stats store: {e}")),
    }
    for line in state.feed_checks() {
        match line {
            Ok(s) => ok.push(s),
            Err(s) => failed.push(s),
        }
    }
    verdict(ok, failed)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// `/debug/vars`: every live counter as JSON.
fn vars(state: &State) -> serde_json::Value {
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
        "hits_since_start": crate::openmix::memo::total_hits(),
        "apps": apps,
    })
}

/// `/metrics`: the counters in Prometheus text format, plus the decision
/// latency histograms recorded by the workers.
fn render_metrics(state: &State) -> String {
    let handle = prometheus();
    let c = &state.counters;
    for (proto, rcode, n) in c.dns_responses() {
        metrics::counter!("switchyard_dns_responses_total", "protocol" => proto, "rcode" => rcode)
            .absolute(n);
    }
    for (class, slipped, dropped, would) in state.dns.rrl_counts.get() {
        for (action, n) in [
            ("slipped", slipped),
            ("dropped", dropped),
            ("would_limit", would),
        ] {
            metrics::counter!("switchyard_rrl_responses_total", "class" => class, "action" => action)
                .absolute(n);
        }
    }
    for (result, n) in state.dns.cookie_counts.get() {
        metrics::counter!("switchyard_dns_cookies_total", "result" => result).absolute(n);
    }
    for ((app, provider, reason), n) in c.decisions() {
        metrics::counter!("switchyard_decisions_total", "app" => app, "provider" => provider, "reason" => reason).absolute(n);
    }
    for ((app, kind), n) in c.failures() {
        metrics::counter!("switchyard_app_failures_total", "app" => app, "kind" => kind)
            .absolute(n);
    }
    let (hits, misses) = state.geo.cache_stats();
    metrics::counter!("switchyard_memo_hits_total").absolute(crate::openmix::memo::total_hits());
    metrics::counter!("switchyard_geo_cache_hits_total").absolute(hits);
    metrics::counter!("switchyard_geo_cache_misses_total").absolute(misses);
    metrics::counter!("switchyard_app_reloads_total").absolute(state.apps.reload_count());
    metrics::counter!("switchyard_decisions_overloaded_total").absolute(state.workers.overloaded());
    metrics::counter!("switchyard_decisions_late_total").absolute(state.workers.late());
    metrics::counter!("switchyard_restarts_total").absolute(state.restarts);
    metrics::gauge!("switchyard_quarantined_apps").set(state.quarantine.list().len() as f64);
    for (app, n) in state.quarantine.events() {
        metrics::counter!("switchyard_quarantine_events_total", "app" => app).absolute(n);
    }
    metrics::gauge!("switchyard_uptime_seconds").set(c.uptime_secs() as f64);
    metrics::gauge!("switchyard_resident_memory_bytes").set(rss_bytes() as f64);
    let mut out = handle.render();
    c.render_decision_times(&mut out);
    out
}

/// The `seconds` of a profile request: 30 unless given, 1 to 300.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn profile_seconds(req: &Request<Incoming>) -> Result<u64, HttpResponse> {
    let seconds = query_pairs(req)
        .iter()
        .find(|(k, _)| k == "seconds")
        .map(|(_, v)| v.parse::<u64>())
        .unwrap_or(Ok(30));
    match seconds {
        Ok(s) if (1..=300).contains(&s) => Ok(s),
        _ => Err(json_error(
            StatusCode::BAD_REQUEST,
            "seconds must be a whole number from 1 to 300",
        )),
    }
}

/// The answer of a profile endpoint: the encoded profile, or what failed.
fn profile_response(
    encoded: Result<Result<Vec<u8>, String>, tokio::task::JoinError>,
) -> HttpResponse {
    match encoded {
        Ok(Ok(bytes)) => text(StatusCode::OK, "application/octet-stream", bytes),
        Ok(Err(e)) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profile failed: {e}"),
        ),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profile failed: {e}"),
        ),
    }
}

/// `/debug/pprof/profile?seconds=N`: a CPU profile in pprof's protobuf format.
async fn profile(req: &Request<Incoming>) -> HttpResponse {
    let seconds = match profile_seconds(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let _one_at_a_time = PROFILE_LOCK.lock().await;
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(g) => g,
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the profiler: {e}"),
            );
        }
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        use pprof::protos::Message;
        let report = guard.report().build().map_err(|e| e.to_string())?;
        let profile = report.pprof().map_err(|e| e.to_string())?;
        Ok(profile.encode_to_vec())
    })
    .await;
    profile_response(encoded)
}

/// Samples one heap profile keeps at most: 8 GiB allocated at the sampling
/// rate, in 8.6 MB of slots that become resident only as they fill.
const HEAP_PROFILE_SAMPLES: usize = 16_384;

/// `/debug/pprof/heap?seconds=N`: a sampled profile of the allocations made
/// during the next N seconds, in pprof's protobuf format (`go tool pprof`
/// reads it as `alloc_objects` / `alloc_space`). `?format=json` answers the
/// process's memory totals at once instead.
async fn heap(req: &Request<Incoming>) -> HttpResponse {
    if query_pairs(req)
        .iter()
        .any(|(k, v)| k == "format" && v == "json")
    {
        return json(StatusCode::OK, &memory_totals());
    }
    let seconds = match profile_seconds(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let _one_at_a_time = PROFILE_LOCK.lock().await;
    // Dropped with this future when the client goes away: sampling stops.
    let Some(recording) = crate::openmix::alloc::HeapProfile::start(HEAP_PROFILE_SAMPLES) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a heap profile is already running",
        );
    };
    let started = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let samples = recording.finish();
    let took = started.elapsed().unwrap_or_default();
    if samples.dropped > 0 {
        tracing::warn!(
            dropped = samples.dropped,
            kept = samples.samples.len(),
            "heap profile buffer full: later samples dropped"
        );
    }
    // Symbolising reads debug info from disk: off the async workers.
    let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        use pprof::protos::Message;
        Ok(heap_pprof(&samples, started, took).encode_to_vec())
    })
    .await;
    profile_response(encoded)
}

/// The process's memory totals, from `/proc/self/statm`.
fn memory_totals() -> serde_json::Value {
    serde_json::json!({
        "rss_bytes": rss_bytes(),
        "virtual_bytes": std::fs::read_to_string("/proc/self/statm").ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok()).map_or(0, |p| p * 4096),
    })
}

/// The string table of a pprof profile: index 0 is the empty string.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// True for the frames of the allocator and the sampler itself, which
/// start every stack and say nothing about who allocated.
fn sampler_frame(name: &str) -> bool {
    [
        "backtrace::",
        "_Unwind_",
        "__rust_",
        "__rg_",
        "__rdl_",
        "alloc::alloc::",
        "<alloc::alloc::Global",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || name.contains("openmix::alloc::")
}

/// Builds the pprof profile of heap samples: symbolised stacks with
/// `alloc_objects` and `alloc_space` scaled up from the sampling rate.
fn heap_pprof(
    raw: &crate::openmix::alloc::HeapSamples,
    started: SystemTime,
    took: Duration,
) -> pprof::protos::Profile {
    use pprof::protos::{Function, Line, Location, Profile, Sample, ValueType};
    let rate = crate::openmix::alloc::SAMPLE_RATE as f64;
    // Go's estimator for Poisson sampling: an allocation of s bytes is
    // sampled with probability 1 - e^(-s/rate), so a sample stands for
    // 1 / that many allocations like it.
    let mut stacks: HashMap<&[usize], (f64, f64)> = HashMap::new();
    for s in &raw.samples {
        let size = s.size.max(1) as f64;
        let weight = 1.0 / (1.0 - (-size / rate).exp());
        let e = stacks.entry(s.frames.as_slice()).or_default();
        e.0 += weight;
        e.1 += weight * size;
    }

    let mut strings = Strings::new();
    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: Vec<Location> = Vec::new();
    // Address → (location id, is a sampler frame).
    let mut location_ids: HashMap<usize, (u64, bool)> = HashMap::new();
    let mut samples = Vec::with_capacity(stacks.len());
    for (frames, (objects, bytes)) in stacks {
        let mut ids = Vec::with_capacity(frames.len());
        for &addr in frames {
            let (id, sampler) = *location_ids.entry(addr).or_insert_with(|| {
                let mut lines = Vec::new();
                let mut sampler = false;
                // One symbol per inlined frame, innermost first, as pprof
                // orders a location's lines.
                backtrace::resolve(addr as *mut std::ffi::c_void, |sym| {
                    let name = sym
                        .name()
                        .map_or_else(|| format!("{addr:#x}"), |n| format!("{n:#}"));
                    sampler |= sampler_frame(&name);
                    let file = sym
                        .filename()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default();
                    let key = (name, file);
                    let function_id = match function_ids.get(&key) {
                        Some(&id) => id,
                        None => {
                            let id = functions.len() as u64 + 1;
                            let system_name = sym
                                .name()
                                .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
                                .unwrap_or_else(|| key.0.clone());
                            functions.push(Function {
                                id,
                                name: strings.id(&key.0),
                                system_name: strings.id(&system_name),
                                filename: strings.id(&key.1),
                                ..Function::default()
                            });
                            function_ids.insert(key, id);
                            id
                        }
                    };
                    lines.push(Line {
                        function_id,
                        line: sym.lineno().map_or(0, i64::from),
                    });
                });
                let id = locations.len() as u64 + 1;
                locations.push(Location {
                    id,
                    address: addr as u64,
                    line: lines,
                    ..Location::default()
                });
                (id, sampler)
            });
            // The leading run of sampler frames goes; the rest is the caller.
            if !(sampler && ids.is_empty()) {
                ids.push(id);
            }
        }
        samples.push(Sample {
            location_id: ids,
            value: vec![objects.round() as i64, bytes.round() as i64],
            ..Sample::default()
        });
    }

    let value_type = |strings: &mut Strings, ty: &str, unit: &str| ValueType {
        ty: strings.id(ty),
        unit: strings.id(unit),
    };
    let sample_type = vec![
        value_type(&mut strings, "alloc_objects", "count"),
        value_type(&mut strings, "alloc_space", "bytes"),
    ];
    let period_type = value_type(&mut strings, "space", "bytes");
    let default_sample_type = strings.id("alloc_space");
    let mut comment = Vec::new();
    if raw.dropped > 0 {
        comment.push(strings.id(&format!(
            "{} samples dropped: the buffer of {} was full",
            raw.dropped,
            raw.samples.len()
        )));
    }
    Profile {
        sample_type,
        sample: samples,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos: started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: took.as_nanos() as i64,
        period_type: Some(period_type),
        period: crate::openmix::alloc::SAMPLE_RATE as i64,
        comment,
        default_sample_type,
        ..Profile::default()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `/api/applications[?provider=p]`: every app loaded here or seen in the
/// fleet (registered by a node, or deciding this hour), with version,
/// status, settings and the fleet's view of it; with `provider`, only the
/// apps that declared it (`requireProvider`) or chose it in the fleet this
/// hour.
fn applications(state: &State, req: &Request<Incoming>) -> HttpResponse {
    let set = state.apps.snapshot();
    let fleet = super::reports::FleetApps::read(state);
    let mut names: BTreeSet<String> = set.apps.keys().chain(set.errors.keys()).cloned().collect();
    names.extend(fleet.names());
    if let Some((_, p)) = query_pairs(req).into_iter().find(|(k, _)| k == "provider") {
        names.retain(|n| {
            set.apps
                .get(n)
                .is_some_and(|a| a.meta.providers.contains(&p))
                || fleet.chose(n, &p)
        });
    }
    let list: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let mut v = app_summary(state, n);
            if let (Some(o), serde_json::Value::Object(f)) = (v.as_object_mut(), fleet.app(n)) {
                o.extend(f);
            }
            v
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "applications": list }))
}

fn app_summary(state: &State, name: &str) -> serde_json::Value {
    let set = state.apps.snapshot();
    let app = set.apps.get(name);
    let error = set.errors.get(name);
    let loaded = app.filter(|a| a.load_error.is_none());
    let status = match (app, error) {
        (Some(a), _) if a.quarantine.is_some() => "quarantined",
        (Some(a), _) if a.load_error.is_some() => "error",
        (Some(_), None) => "ok",
        (Some(_), Some(_)) => "error (previous version serving)",
        (None, Some(_)) => "error",
        // Not loaded here: other nodes of the fleet serve it, or it
        // decided somewhere in the fleet this hour.
        (None, None) => "elsewhere",
    };
    serde_json::json!({
        "name": name,
        "status": status,
        "version": loaded.map(|a| a.code.version),
        "loaded_at_ms": loaded.map(|a| unix_ms(a.loaded_at)),
        "file": app.map(|a| a.code.path.display().to_string()),
        "last_error": error.map(|e| serde_json::json!({
            "at": format!("{}{}", e.file.display(), e.line.map(|l| format!(":{l}")).unwrap_or_default()),
            "message": e.message,
            "time_ms": unix_ms(e.at),
        })),
        "quarantine": app.and_then(|a| a.quarantine.as_ref()).map(|q| serde_json::json!({
            "reason": q.reason, "since_ms": q.since_ms, "evidence": q.evidence,
        })),
        "providers": app.map(|a| a.meta.providers.clone()).unwrap_or_default(),
        "cors": app.and_then(|a| a.meta.cors.clone()),
        "proximity": app.is_some_and(|a| a.meta.proximity),
    })
}

/// `/api/applications/{app}`: the summary plus names, settings and recent
/// decision counts per provider.
fn application(state: &State, name: &str) -> HttpResponse {
    let set = state.apps.snapshot();
    let fleet = super::reports::FleetApps::read(state);
    if !set.apps.contains_key(name)
        && !set.errors.contains_key(name)
        && !fleet.names().contains(name)
    {
        return json_error(StatusCode::NOT_FOUND, format!("unknown app '{name}'"));
    }
    let mut v = app_summary(state, name);
    let config = state.config.load();
    let names: Vec<String> = config
        .zones
        .iter()
        .flat_map(|z| [format!("{name}.{}", z.name), format!("*.{name}.{}", z.name)])
        .collect();
    let counts = |secs| {
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((provider, reason), n) in state.counters.recent(name, secs) {
            out.entry(provider).or_default().insert(reason, n);
        }
        out
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("names".into(), names.into());
        if let Some(app) = set.apps.get(name) {
            obj.insert(
                "settings".into(),
                serde_json::json!({
                    "ttl": app.settings.ttl,
                    "fallback": app.settings.fallback,
                    "budget_ms": app.settings.budget.decision.as_millis() as u64,
                    "memory_mb": (app.settings.budget.memory >> 20) as u64,
                    "providers": app.settings.providers,
                    "sidecar": app.sidecar,
                }),
            );
        }
        obj.insert(
            "last_minute".into(),
            serde_json::to_value(counts(60)).unwrap_or_default(),
        );
        obj.insert(
            "last_hour".into(),
            serde_json::to_value(counts(3600)).unwrap_or_default(),
        );
        // The fleet's view (this node's own counts above stay as they were).
        if let serde_json::Value::Object(f) = fleet.app(name) {
            obj.extend(f);
        }
    }
    json(StatusCode::OK, &v)
}
