//! The serving process of `switchyard serve` (whose flags the command line
//! reads): binds the listeners, starts the background tasks (app and GeoIP
//! watchers), and runs until SIGTERM or SIGINT.
//!
//! - [`preflight`]: the one validation of a whole configuration, which
//!   `switchyard check`, `serve` and SIGHUP reloads share.
//! - [`startup`]: what `serve` resolves before serving (the data
//!   directory, the admin token, the DNS cookie secret).
//! - [`assemble`]: the shared [`crate::state::State`] built from a configuration.
//! - [`dns_threads`]: the DNS runtimes, one per core.
//! - [`feeds`]: the data feeds' tasks and the GeoIP watcher.
//! - [`reporting`]: the decision-report loop (register, write, poll).
//! - [`reload`]: signals, and SIGHUP's configuration reload.
//! - [`supervisor`]: `serve`'s parent process that owns the sockets,
//!   restarts the server from the binary it started from, and upgrades it
//!   on SIGUSR2.
//! - [`logging`]: one line per event on stderr.
//!
//! DNS runs on one current-thread tokio runtime per core, each with its own
//! `SO_REUSEPORT` UDP socket and TCP listener on the same address: the
//! kernel spreads queries across them and no runtime waits on another
//! (shared/notes/js-host.md measured one runtime per core as the faster
//! layout). Decisions that need an app run on the JS workers
//! ([`crate::engine::workers`]).

pub mod assemble;
pub mod dns_threads;
pub mod feeds;
pub mod logging;
pub mod preflight;
pub mod reload;
pub mod reporting;
pub mod startup;
pub mod supervisor;

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ConfigSource};
use startup::StartupError;
use supervisor::{Listeners, SupervisorError};

/// Why the serving process cannot start, or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot be read or is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file, token or secret `serve` checks or resolves before serving.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The listeners: handed over by the supervisor, or bound here.
    #[error(transparent)]
    Listeners(#[from] SupervisorError),
    /// The database behind the stats, inventory and report stores.
    #[error("stats store: {0}")]
    Store(#[source] crate::stats::StoreError),
    /// A GeoIP database or the override table.
    #[error(transparent)]
    Geo(#[from] crate::geo::GeoError),
    /// The inventory store cannot be read.
    #[error("inventory: {0}")]
    Inventory(#[source] crate::inventory::store::LoadError),
    /// The apps directory is missing.
    #[error(transparent)]
    Apps(#[from] crate::engine::apps::NoAppsDir),
    /// The apps directory cannot be watched.
    #[error(transparent)]
    AppWatch(#[from] crate::engine::apps::WatchError),
    /// The in-flight slots file the quarantine's evidence lives in.
    #[error("cannot open {}", path.display())]
    Slots {
        /// The slots file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An operating-system resource: the runtime, a thread, a socket.
    #[error("{what}")]
    Io {
        /// What could not be had.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    fn io(what: &'static str, source: std::io::Error) -> ServeError {
        ServeError::Io { what, source }
    }
}

/// The serving process: everything that fails here fails before it is
/// ready. `source` is read now and again on every SIGHUP.
pub fn serve_worker(source: ConfigSource) -> Result<(), ServeError> {
    logging::log_panics();
    let mut config = source.load()?;
    startup::resolve_api_token(&mut config)?;
    startup::resolve_cookie_secret(&mut config)?;
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
        .build()
        .map_err(|e| ServeError::io("cannot start the runtime", e))?;
    rt.block_on(run(config, listeners, source))
}

async fn run(config: Config, listeners: Listeners, source: ConfigSource) -> Result<(), ServeError> {
    let state = assemble::build_state(config).await?;
    let sockets = listeners.dns;
    let bound: Vec<SocketAddr> = sockets
        .iter()
        .filter_map(|s| s.first())
        .filter_map(|(u, _)| u.local_addr().ok())
        .collect();
    let shutdown = CancellationToken::new();
    let dns_threads = dns_threads::start(&state, sockets, shutdown.clone())
        .map_err(|e| ServeError::io("cannot start a DNS thread", e))?;

    let listener = |l| {
        tokio::net::TcpListener::from_std(l)
            .map_err(|e| ServeError::io("cannot register an HTTP listener", e))
    };
    let http_listener = listener(listeners.http)?;
    let admin_listener = listener(listeners.admin)?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| ServeError::io("HTTP listener", e))?;
    let shutdown_http = shutdown.clone();
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| ServeError::io("operations listener", e))?;
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
    let http_counters = state.counters.clone();
    let serving = crate::http::ServingFlag::raise(state.http_serving.clone());
    let http_task = tokio::spawn(async move {
        // Lowered when the loop ends, returning or panicking.
        let _serving = serving;
        crate::http::serve(
            http_listener,
            limits,
            &[],
            shutdown_http,
            (http_counters, crate::metrics::Listener::Decision),
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
        (state.counters.clone(), crate::metrics::Listener::Ops),
        move |req, peer| crate::http::ops::handle(s.clone(), req, peer),
    ));
    feeds::start(&state, shutdown.clone());
    // Stopped only once DNS and HTTP have drained (see below).
    let report_stop = CancellationToken::new();
    let report_task = tokio::spawn(reporting::run(state.clone(), report_stop.clone()));
    let _app_watcher = state.apps.watch()?;
    *state
        .geo_watcher
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
        feeds::watch_geo(&state.geo, state.config.load().geo_paths());
    *state
        .key_watchers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
        crate::dnssec::watch::watch_all(&state.config.load(), &state.signers.load());
    for addr in &bound {
        tracing::info!(%addr, "listening for DNS over UDP");
        tracing::info!(%addr, "listening for DNS over TCP");
    }

    tracing::info!(addr = %http_addr, "listening for HTTP decisions");
    tracing::info!(addr = %admin_addr, "listening for operations");
    tracing::info!(apps = state.apps.snapshot().apps.len(), "switchyard ready");
    supervisor::notify_ready();
    reload::wait_for_signals(&state, &source).await;
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
