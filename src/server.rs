//! `switchyard serve`: binds the listeners, starts the background tasks
//! (app and GeoIP watchers), and runs until SIGTERM or SIGINT.
//!
//! DNS runs on one current-thread tokio runtime per core, each with its own
//! `SO_REUSEPORT` UDP socket and TCP listener on the same address: the
//! kernel spreads queries across them and no runtime waits on another
//! (measured in shared/notes/js-host.md as the fastest hickory-server
//! layout). Decisions run on the JS workers ([`crate::workers`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use arc_swap::ArcSwap;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::apps::AppRegistry;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::data::DataHub;
use crate::dns::{DnsHandler, ZoneSet};
use crate::geo::{Geo, GeoDb, GeoPaths};
use crate::metrics::Counters;
use crate::openmix::DataSnapshot;
use crate::quarantine::{Quarantine, Slots};
use crate::supervisor::Listeners;
use crate::workers::Workers;

/// How long a decision may take before the query gets the fallback.
const HARD_LIMIT: Duration = Duration::from_millis(100);

/// Everything the front ends share.
pub struct State {
    /// The configuration in force.
    pub config: ArcSwap<Config>,
    /// Apps.
    pub apps: Arc<AppRegistry>,
    /// GeoIP.
    pub geo: Arc<Geo>,
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
    pub stats: Arc<crate::stats::StatsApi>,
    /// Restarts of the serving process so far (from the supervisor).
    pub restarts: u64,
    /// Last heartbeat (ms since start) of each DNS runtime.
    heartbeats: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
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

/// Shares one handler between the per-core servers.
#[derive(Clone)]
struct SharedHandler(Arc<DnsHandler>);

#[async_trait::async_trait]
impl RequestHandler for SharedHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        self.0.handle_request::<R, T>(request, handle).await
    }
}

/// The GeoIP paths a configuration names.
pub fn geo_paths(config: &Config) -> GeoPaths {
    GeoPaths {
        city: config.geo_city.clone(),
        asn: config.geo_asn.clone(),
        overrides: config.geo_overrides.clone(),
    }
}

/// Builds the shared state from a configuration (no sockets yet).
pub async fn build_state(config: Config) -> anyhow::Result<Arc<State>> {
    // Installed first, so histogram handles taken by workers are live ones.
    crate::http::ops::prometheus();
    let store = crate::stats::open_store(&config.data_dir, config.leaderboard.postgres.as_deref())
        .await
        .map_err(|e| anyhow!("stats store: {e}"))?;
    let stats = Arc::new(crate::stats::StatsApi::new(
        store,
        config.leaderboard.secret.clone(),
        config.leaderboard.regions.clone(),
    ));
    let geo = Arc::new(Geo::new(GeoDb::open(&geo_paths(&config))?));
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
    let (slots, quarantine) = open_quarantine(&config)?;
    let apps = AppRegistry::open(
        config.clone(),
        data.clone(),
        Some(quarantine.clone()),
        Some(slots.clone()),
    )
    .map_err(|e| anyhow!(e))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = Workers::start(threads, HARD_LIMIT, Some(apps.clone()), Some(slots));
    let counters = Arc::new(Counters::default());
    let zones = ZoneSet::from_config(&config).map_err(|e| anyhow!("{}: {e}", config.source))?;
    let dns = Arc::new(DnsHandler {
        zones: ArcSwap::from_pointee(zones),
        apps: apps.clone(),
        geo: geo.clone(),
        data: data.clone(),
        workers: workers.clone(),
        max_payload: config.max_udp_payload,
        counters: counters.clone(),
    });
    Ok(Arc::new(State {
        config: ArcSwap::from_pointee(config),
        apps,
        geo,
        data,
        hub,
        workers,
        counters,
        dns,
        quarantine,
        stats,
        restarts: std::env::var(crate::supervisor::RESTARTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        heartbeats: std::sync::Mutex::new(Vec::new()),
        started: Instant::now(),
    }))
}

/// Opens the in-flight slots and the quarantine list in the data directory,
/// quarantining the apps that were running when the last process died.
fn open_quarantine(config: &Config) -> anyhow::Result<(Arc<Slots>, Arc<Quarantine>)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let (slots, in_flight) =
        Slots::open(&config.data_dir.join("inflight.slots")).with_context(|| {
            format!(
                "cannot open {}",
                config.data_dir.join("inflight.slots").display()
            )
        })?;
    let quarantine = Quarantine::load(config.data_dir.join("quarantine.json"));
    for (app, hash) in in_flight {
        quarantine.add(&app, hash, "it was running when the serving process died");
    }
    Ok((Arc::new(slots), Arc::new(quarantine)))
}

/// Binds a UDP socket with `SO_REUSEPORT`, so every DNS runtime can have one.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Room for bursts while a runtime is busy (the kernel may cap it).
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds a TCP listener with `SO_REUSEPORT`.
fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The DNS sockets of one address: `copies` UDP sockets and TCP listeners
/// on one port (port 0 picks a free port shared by all of them).
pub fn bind_dns(
    addr: SocketAddr,
    copies: usize,
) -> anyhow::Result<Vec<(std::net::UdpSocket, std::net::TcpListener)>> {
    // With port 0, the first UDP bind picks the port; retry a few times in
    // case its TCP twin is taken.
    for _ in 0..20 {
        let first = udp_socket(addr).with_context(|| format!("cannot bind DNS UDP {addr}"))?;
        let bound = first.local_addr()?;
        let tcp = match tcp_listener(bound) {
            Ok(t) => t,
            Err(_) if addr.port() == 0 => continue,
            Err(e) => return Err(anyhow!("cannot bind DNS TCP {bound}: {e}")),
        };
        let mut out = vec![(first, tcp)];
        for _ in 1..copies {
            let u = udp_socket(bound).with_context(|| format!("cannot bind DNS UDP {bound}"))?;
            let t = tcp_listener(bound).with_context(|| format!("cannot bind DNS TCP {bound}"))?;
            out.push((u, t));
        }
        return Ok(out);
    }
    Err(anyhow!("cannot find a free port for DNS on {addr}"))
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
    for (i, pairs) in per_runtime.into_iter().enumerate() {
        let handler = SharedHandler(state.dns.clone());
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
                    let mut server = Server::new(handler);
                    for (udp, tcp) in pairs {
                        match (
                            tokio::net::UdpSocket::from_std(udp),
                            tokio::net::TcpListener::from_std(tcp),
                        ) {
                            (Ok(u), Ok(t)) => {
                                server.register_socket(u);
                                server.register_listener(t, Duration::from_secs(5), 65_535);
                            }
                            (Err(e), _) | (_, Err(e)) => {
                                tracing::error!(error = %e, "cannot register DNS socket")
                            }
                        }
                    }
                    shutdown.cancelled().await;
                    let _ = server.shutdown_gracefully().await;
                });
            })?;
        threads.push(t);
    }
    Ok(threads)
}

/// `switchyard serve`: the supervisor, or with `--worker` the serving
/// process itself (on the supervisor's sockets when it passed them, else on
/// sockets of its own).
pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    if !args.worker {
        return crate::supervisor::supervise(config);
    }
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
    rt.block_on(run(config, listeners, args.config.clone()))
}

async fn run(
    config: Config,
    listeners: Listeners,
    config_args: crate::cli::ConfigArgs,
) -> anyhow::Result<()> {
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
    let admin_addr = admin_listener.local_addr()?;
    let limits = {
        let c = state.config.load();
        crate::http::Limits {
            max_connections: c.max_connections,
            header_timeout: c.header_timeout,
        }
    };
    let s = state.clone();
    let http_task = tokio::spawn(crate::http::serve(
        http_listener,
        limits,
        shutdown.clone(),
        move |req, peer| crate::http::decision::handle(s.clone(), req, peer),
    ));
    let s = state.clone();
    let admin_task = tokio::spawn(crate::http::serve(
        admin_listener,
        limits,
        shutdown.clone(),
        move |req, peer| crate::http::ops::handle(s.clone(), req, peer),
    ));
    start_feeds(&state, shutdown.clone());
    let _app_watcher = state.apps.watch().map_err(|e| anyhow!(e))?;
    let _geo_watcher = {
        let config = state.config.load();
        match state.geo.watch(geo_paths(&config)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "GeoIP databases are not watched for changes");
                None
            }
        }
    };
    for addr in &bound {
        tracing::info!(%addr, "listening for DNS over UDP");
        tracing::info!(%addr, "listening for DNS over TCP");
    }

    tracing::info!(addr = %http_addr, "listening for HTTP decisions");
    tracing::info!(addr = %admin_addr, "listening for operations");
    tracing::info!(apps = state.apps.snapshot().apps.len(), "switchyard ready");
    wait_for_signals(&state, &config_args).await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = http_task.await;
    let _ = admin_task.await;
    for t in dns_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    Ok(())
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
    tokio::spawn(crate::data::probes::run_leaderboard(
        state.hub.clone(),
        Some(state.stats.store.clone()),
        client,
        config.leaderboard.clone(),
        stop,
    ));
}

/// Waits for SIGTERM/SIGINT; reloads the configuration on SIGHUP.
async fn wait_for_signals(state: &Arc<State>, config_args: &crate::cli::ConfigArgs) {
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
            _ = hup.recv() => reload_config(state, config_args),
        }
    }
}

/// SIGHUP: validate the configuration again and swap it in (listeners
/// excepted); a bad file keeps the current one.
pub fn reload_config(state: &Arc<State>, config_args: &crate::cli::ConfigArgs) {
    let config = match config_args.load() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "config reload failed; keeping the current configuration");
            return;
        }
    };
    let zones = match ZoneSet::from_config(&config) {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!(error = %e, "config reload failed; keeping the current configuration");
            return;
        }
    };
    let old = state.config.load();
    if old.dns != config.dns || old.http != config.http || old.admin != config.admin {
        tracing::warn!("listener addresses changed in the config; they take effect on restart");
    }
    if let Some(p) = &config.static_probes {
        match crate::data::probes::load_static(p) {
            Ok(probes) => state.hub.set_static_probes(probes),
            Err(e) => {
                tracing::warn!(error = %e, "config reload failed; keeping the current configuration");
                return;
            }
        }
    }
    state.dns.zones.store(Arc::new(zones));
    state.hub.set_providers(config.providers.clone());
    state.apps.set_config(config.clone());
    state.config.store(Arc::new(config));
    tracing::info!("configuration reloaded");
}
