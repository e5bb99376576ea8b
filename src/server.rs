//! The serving process of `switchyard serve` (whose flags the command line
//! reads): binds the listeners, starts the background tasks (app and GeoIP
//! watchers), and runs until SIGTERM or SIGINT.
//!
//! DNS runs on one current-thread tokio runtime per core, each with its own
//! `SO_REUSEPORT` UDP socket and TCP listener on the same address: the
//! kernel spreads queries across them and no runtime waits on another
//! (shared/notes/js-host.md measured one runtime per core as the faster
//! layout). Decisions that need an app run on the JS workers
//! ([`crate::engine::workers`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigSource};
use crate::data::DataHub;
use crate::dns::{DnsHandler, ZoneSet};
use crate::engine::apps::AppRegistry;
use crate::engine::quarantine::{Quarantine, Slots};
use crate::engine::workers::Workers;
use crate::geo::{Geo, GeoDb, GeoPaths, GeoWatcher};
use crate::inventory::tokens;
use crate::metrics::Counters;
use crate::openmix::DataSnapshot;
use crate::supervisor::Listeners;

/// Everything the front ends share.
pub struct State {
    /// The configuration in force.
    pub config: ArcSwap<Config>,
    /// Apps.
    pub apps: Arc<AppRegistry>,
    /// GeoIP.
    pub geo: Arc<Geo>,
    /// Watches the GeoIP files in use (replaced when SIGHUP changes their paths).
    geo_watcher: std::sync::Mutex<Option<GeoWatcher>>,
    /// Data apps read.
    pub data: Arc<ArcSwap<DataSnapshot>>,
    /// Where the data feeds publish.
    pub hub: Arc<DataHub>,
    /// JS workers.
    pub workers: Arc<Workers>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// DNS handler (zones live in it).
    pub dns: Arc<DnsHandler>,
    /// Quarantined app versions.
    pub quarantine: Arc<Quarantine>,
    /// The leaderboard stats store and its HTTP API.
    pub stats: Arc<crate::http::stats::StatsApi>,
    /// The provider inventory and its routes.
    pub inventory: Arc<crate::inventory::Inventory>,
    /// Decision reports: the fleet's buckets and nodes.
    pub reports: Arc<crate::report::Reports>,
    /// Restarts of the serving process so far (from the supervisor).
    pub restarts: u64,
    /// Last heartbeat (ms since start) of each DNS runtime.
    heartbeats: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
    /// True while the public HTTP decision listener's accept loop runs.
    pub http_serving: Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
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

/// Builds the shared state from a configuration (no sockets yet).
pub async fn build_state(config: Config) -> anyhow::Result<Arc<State>> {
    // Installed first, so histogram handles taken by workers are live ones.
    crate::http::ops::prometheus();
    let crate::db::Stores {
        stats: store,
        inventory: inventory_store,
        reports: report_store,
    } = crate::db::open(&config.data_dir, config.leaderboard.postgres.as_deref())
        .await
        .map_err(|e| anyhow!("stats store: {e}"))?;
    let stats = Arc::new(
        crate::http::stats::StatsApi::new(
            store,
            config.leaderboard.secret.clone(),
            config.leaderboard.regions.clone(),
        )
        .with_default_window(config.leaderboard.window),
    );
    let geo = Arc::new(Geo::new(GeoDb::open(&config.geo_paths())?));
    let static_probes = match &config.static_probes {
        Some(p) => crate::data::probes::load_static(p).map_err(|e| anyhow!("data.probes: {e}"))?,
        None => Default::default(),
    };
    let data = Arc::new(ArcSwap::from_pointee(DataSnapshot {
        version: 1,
        providers: config.providers.clone(),
        probes: static_probes,
        regions: Arc::new(crate::data::probes::locator(&config.leaderboard.regions)),
        ..DataSnapshot::default()
    }));
    let hub = DataHub::new(data.clone(), config.stale_after);
    let inventory = crate::inventory::Inventory::open(
        inventory_store,
        hub.clone(),
        config.inventory_providers.clone(),
    )
    .await
    .map_err(|e| anyhow!("inventory: {e}"))?;
    if let Some(token) = &config.api_token
        && let Err(e) = inventory
            .bind_unbound_tokens(&tokens::admin_fingerprint(token))
            .await
    {
        tracing::warn!(error = %e, "cannot bind the issued API tokens to the admin token; tokens from before the upgrade are refused until it succeeds");
    }
    let (slots, quarantine) = open_quarantine(&config)?;
    let apps = AppRegistry::open(
        config.clone(),
        data.clone(),
        Some(quarantine.clone()),
        Some(slots.clone()),
    )
    .map_err(|e| anyhow!(e))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let counters = Arc::new(Counters::default());
    let workers = Workers::start(
        threads,
        config.hard_limit,
        Some(apps.clone()),
        Some(slots),
        counters.clone(),
    );
    let pool = Arc::downgrade(&workers);
    apps.on_loader_cap(Box::new(move || {
        tracing::error!(
            "too many abandoned app loads still running; restarting the serving process"
        );
        // Their slots stay busy: the next process quarantines their apps.
        if let Some(pool) = pool.upgrade() {
            pool.release_healthy_slots();
        }
        std::process::exit(70);
    }));
    let zones = ZoneSet::from_config(&config).map_err(|e| anyhow!("{}: {e}", config.source))?;
    let dns = Arc::new(DnsHandler {
        zones: ArcSwap::from_pointee(zones),
        apps: apps.clone(),
        geo: geo.clone(),
        data: data.clone(),
        workers: workers.clone(),
        max_payload: config.max_udp_payload,
        counters: counters.clone(),
        shield: ArcSwap::from_pointee(crate::dns::Shield::from_config(&config, None)),
        rrl_counts: Default::default(),
        cookie_counts: Default::default(),
    });
    Ok(Arc::new(State {
        config: ArcSwap::from_pointee(config),
        apps,
        geo,
        geo_watcher: std::sync::Mutex::new(None),
        data,
        hub,
        workers,
        counters,
        dns,
        quarantine,
        stats,
        inventory,
        reports: Arc::new(crate::report::Reports::new(report_store)),
        restarts: std::env::var(crate::supervisor::RESTARTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        heartbeats: std::sync::Mutex::new(Vec::new()),
        http_serving: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        started: Instant::now(),
    }))
}

/// Opens the in-flight slots and the quarantine list in the data directory,
/// quarantining the apps the last process's abnormal exit has evidence against
/// ([`crate::engine::quarantine::after_abnormal_exit`]), and starts the slots'
/// heartbeat.
fn open_quarantine(config: &Config) -> anyhow::Result<(Arc<Slots>, Arc<Quarantine>)> {
    crate::startup::create_data_dir(config)?;
    let slots_path = config.data_dir.join(crate::supervisor::slots_file());
    let (slots, in_flight) = Slots::open(&slots_path)
        .with_context(|| format!("cannot open {}", slots_path.display()))?;
    let quarantine = Quarantine::load(config.data_dir.join("quarantine.json"));
    crate::engine::quarantine::after_abnormal_exit(&in_flight, &quarantine);
    let slots = Arc::new(slots);
    slots.start_heartbeat();
    slots.watch_allocation_failures();
    slots.watch_crashes();
    Ok((slots, Arc::new(quarantine)))
}

/// Starts the DNS servers on their own threads; returns the bound addresses.
pub fn start_dns(
    state: &Arc<State>,
    sockets: Vec<Vec<(std::net::UdpSocket, std::net::TcpListener)>>,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let copies = sockets.first().map_or(0, Vec::len);
    // Regroup: runtime i gets copy i of every address.
    let mut per_runtime: Vec<Vec<(std::net::UdpSocket, std::net::TcpListener)>> =
        (0..copies).map(|_| Vec::new()).collect();
    for addr_sockets in sockets {
        for (i, pair) in addr_sockets.into_iter().enumerate() {
            per_runtime[i].push(pair);
        }
    }
    let mut threads = Vec::new();
    // One count per client network across every runtime's copy of a
    // TCP listener, so a client cannot hold its share once per copy.
    let tcp_clients = crate::clients::ClientSlots::new(state.config.load().per_client);
    for (i, pairs) in per_runtime.into_iter().enumerate() {
        let handler = state.dns.clone();
        let tcp_clients = tcp_clients.clone();
        let shutdown = shutdown.clone();
        let beat = Arc::new(AtomicU64::new(state.started.elapsed().as_millis() as u64));
        if let Ok(mut v) = state.heartbeats.lock() {
            v.push(beat.clone());
        }
        let started = state.started;
        let t = std::thread::Builder::new()
            .name(format!("dns-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start DNS runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    // The heartbeat shows /healthcheck that this runtime still runs tasks.
                    tokio::spawn(async move {
                        loop {
                            beat.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    });
                    let mut served = tokio::task::JoinSet::new();
                    for (udp, tcp) in pairs {
                        match (
                            tokio::net::UdpSocket::from_std(udp),
                            tokio::net::TcpListener::from_std(tcp),
                        ) {
                            (Ok(u), Ok(t)) => {
                                served.spawn(crate::dns::udp::serve(
                                    u,
                                    handler.clone(),
                                    shutdown.clone(),
                                ));
                                served.spawn(crate::dns::tcp::serve(
                                    t,
                                    handler.clone(),
                                    tcp_clients.clone(),
                                    shutdown.clone(),
                                ));
                            }
                            (Err(e), _) | (_, Err(e)) => {
                                tracing::error!(error = %e, "cannot register DNS socket")
                            }
                        }
                    }
                    shutdown.cancelled().await;
                    while served.join_next().await.is_some() {}
                });
            })?;
        threads.push(t);
    }
    Ok(threads)
}

/// The serving process: everything that fails here fails before it is
/// ready. `source` is read now and again on every SIGHUP.
pub fn serve_worker(source: ConfigSource) -> anyhow::Result<()> {
    crate::logging::log_panics();
    let mut config = source.load()?;
    crate::startup::resolve_api_token(&mut config)?;
    crate::startup::resolve_cookie_secret(&mut config)?;
    let listeners = match Listeners::from_env()? {
        Some(l) => l,
        None => Listeners::bind(
            &config,
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run(config, listeners, source))
}

async fn run(config: Config, listeners: Listeners, source: ConfigSource) -> anyhow::Result<()> {
    let state = build_state(config).await?;
    let sockets = listeners.dns;
    let bound: Vec<SocketAddr> = sockets
        .iter()
        .filter_map(|s| s.first())
        .filter_map(|(u, _)| u.local_addr().ok())
        .collect();
    let shutdown = CancellationToken::new();
    let dns_threads = start_dns(&state, sockets, shutdown.clone())?;

    let http_listener = tokio::net::TcpListener::from_std(listeners.http)?;
    let admin_listener = tokio::net::TcpListener::from_std(listeners.admin)?;
    let http_addr = http_listener.local_addr()?;
    let shutdown_http = shutdown.clone();
    let admin_addr = admin_listener.local_addr()?;
    let limits = {
        let c = state.config.load();
        crate::http::Limits {
            max_connections: c.max_connections,
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            per_client: c.per_client,
            request_timeout: c.request_timeout,
        }
    };
    let s = state.clone();
    let serving = crate::http::ServingFlag::raise(state.http_serving.clone());
    let http_task = tokio::spawn(async move {
        // Lowered when the loop ends, returning or panicking.
        let _serving = serving;
        crate::http::serve(
            http_listener,
            limits,
            &[],
            shutdown_http,
            move |req, peer| crate::http::decision::handle(s.clone(), req, peer),
        )
        .await
    });
    let s = state.clone();
    let admin_task = tokio::spawn(crate::http::serve(
        admin_listener,
        limits,
        &["/healthcheck", "/metrics"],
        shutdown.clone(),
        move |req, peer| crate::http::ops::handle(s.clone(), req, peer),
    ));
    start_feeds(&state, shutdown.clone());
    // Stopped only once DNS and HTTP have drained (see below).
    let report_stop = CancellationToken::new();
    let report_task = tokio::spawn(crate::report::run(state.clone(), report_stop.clone()));
    let _app_watcher = state.apps.watch()?;
    *state
        .geo_watcher
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
        watch_geo(&state.geo, state.config.load().geo_paths());
    for addr in &bound {
        tracing::info!(%addr, "listening for DNS over UDP");
        tracing::info!(%addr, "listening for DNS over TCP");
    }

    tracing::info!(addr = %http_addr, "listening for HTTP decisions");
    tracing::info!(addr = %admin_addr, "listening for operations");
    tracing::info!(apps = state.apps.snapshot().apps.len(), "switchyard ready");
    crate::supervisor::notify_ready();
    wait_for_signals(&state, &source).await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = http_task.await;
    for t in dns_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    // Every query in flight has been answered and counted: the last bucket
    // is reported now (bounded: a lost database must not hold up a stop).
    report_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), report_task).await;
    let _ = admin_task.await;
    // A graceful stop is no crash: nothing in flight now is quarantined.
    state.workers.release_all_slots();
    Ok(())
}

/// Starts watching the GeoIP files; a failure only costs reloads on change, so it is
/// logged, not fatal.
fn watch_geo(geo: &Arc<Geo>, paths: GeoPaths) -> Option<GeoWatcher> {
    match geo.watch(paths) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "GeoIP databases are not watched for changes");
            None
        }
    }
}

/// The HTTP client the feeds use (rustls with the ring provider).
pub fn feed_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Starts the Fusion and Sonar tasks of the configuration.
fn start_feeds(state: &Arc<State>, stop: CancellationToken) {
    let config = state.config.load();
    let client = feed_client();
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

/// Waits for SIGTERM/SIGINT; reloads the configuration on SIGHUP.
async fn wait_for_signals(state: &Arc<State>, source: &ConfigSource) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping on ctrl-c only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => reload_config(state, source).await,
        }
    }
}

/// SIGHUP: validate the configuration again and swap it in; a bad file keeps the current
/// one. Zones, providers, static probes, app settings and budgets, GeoIP paths and the
/// per-request HTTP settings apply at once; each changed key that is only read at startup
/// gets a warning (see [`restart_only_changes`]).
pub async fn reload_config(state: &Arc<State>, source: &ConfigSource) {
    let fail = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "config reload failed; keeping the current configuration");
    };
    let mut config = match source.load() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Err(e) = crate::startup::resolve_api_token(&mut config)
        .and(crate::startup::resolve_cookie_secret(&mut config))
    {
        return fail(&e);
    }
    let zones = match ZoneSet::from_config(&config) {
        Ok(z) => z,
        Err(e) => return fail(&e),
    };
    let probes = match &config.static_probes {
        Some(p) => match crate::data::probes::load_static(p) {
            Ok(probes) => probes,
            Err(e) => return fail(&e),
        },
        None => Default::default(),
    };
    let old = state.config.load_full();
    let paths = config.geo_paths();
    let geo = if paths == old.geo_paths() {
        None
    } else {
        match GeoDb::open(&paths) {
            Ok(db) => Some(db),
            Err(e) => return fail(&e),
        }
    };

    for key in restart_only_changes(&old, &config) {
        tracing::warn!(
            key,
            "{key} changed in the config; takes effect after a restart"
        );
    }
    if let Some(db) = geo {
        // Stop the old watcher first: a change event it is handling would otherwise load
        // the old files over the new ones.
        let mut watcher = state
            .geo_watcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(watcher.take());
        state.geo.replace(db);
        *watcher = watch_geo(&state.geo, paths);
    }
    state.hub.set_static_probes(probes);
    state.dns.zones.store(Arc::new(zones));
    let shield = crate::dns::Shield::from_config(&config, Some(&state.dns.shield.load()));
    state.dns.shield.store(Arc::new(shield));
    state.hub.set_providers(config.providers.clone());
    state
        .inventory
        .set_config(config.inventory_providers.clone())
        .await;
    state.apps.set_config(config.clone());
    state.config.store(Arc::new(config));
    tracing::info!("configuration reloaded");
}

/// The configuration keys that differ between `old` and `new` but are read only at
/// startup: the listeners (held by the supervisor), the directories, the DNS payload size
/// and HTTP connection limits, the process memory cap, and the data feeds with their
/// staleness age and the leaderboard (their tasks start once).
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("server.dns", old.dns != new.dns),
        ("server.http", old.http != new.http),
        ("server.admin", old.admin != new.admin),
        ("server.apps", old.apps_dir != new.apps_dir),
        ("server.data_dir", old.data_dir != new.data_dir),
        (
            "server.max_udp_payload",
            old.max_udp_payload != new.max_udp_payload,
        ),
        (
            "server.max_connections",
            old.max_connections != new.max_connections,
        ),
        (
            "server.header_timeout_ms",
            old.header_timeout != new.header_timeout,
        ),
        (
            "server.connections_per_client",
            old.per_client != new.per_client,
        ),
        (
            "server.idle_timeout_ms",
            old.idle_timeout != new.idle_timeout,
        ),
        (
            "server.request_timeout_ms",
            old.request_timeout != new.request_timeout,
        ),
        (
            "server.memory_limit_mb",
            old.memory_limit != new.memory_limit,
        ),
        ("server.hard_limit_ms", old.hard_limit != new.hard_limit),
        ("data.stale_secs", old.stale_after != new.stale_after),
        ("fusion", old.fusion != new.fusion),
        ("sonar", old.sonar != new.sonar),
        ("leaderboard", old.leaderboard != new.leaderboard),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn parse(text: &str) -> Config {
        Config::parse(text, "test.toml", &Overrides::default()).unwrap()
    }

    #[test]
    fn restart_only_keys_are_named() {
        let old = parse(crate::config::DEFAULT_CONFIG);
        assert!(restart_only_changes(&old, &old.clone()).is_empty());
        let text = crate::config::DEFAULT_CONFIG
            .replacen("max_udp_payload = 1232", "max_udp_payload = 1400", 1)
            .replacen("max_connections = 1024", "max_connections = 10", 1)
            .replacen("stale_secs = 120", "stale_secs = 60", 1)
            .replacen("refresh_secs = 10", "refresh_secs = 20", 1)
            .replacen("ttl = 20 ", "ttl = 30 ", 1);
        let new = parse(&format!(
            "{text}\n[[sonar]]\nprovider = \"cdn_a\"\ntcp = \"192.0.2.1:443\"\n"
        ));
        assert_eq!(
            restart_only_changes(&old, &new),
            [
                "server.max_udp_payload",
                "server.max_connections",
                "data.stale_secs",
                "sonar",
                "leaderboard"
            ]
        );
    }
}
