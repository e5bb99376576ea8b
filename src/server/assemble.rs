//! The shared [`State`] built from a configuration, before any socket is
//! served: the stores, GeoIP, the data snapshot, the inventory, the
//! quarantine, the app registry, the JS workers and the DNS handler.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::ServeError;
use super::startup::StartupError;
use crate::config::Config;
use crate::data::DataHub;
use crate::dns::{DnsHandler, ZoneSet};
use crate::dnssec::sign::Signers;
use crate::engine::apps::AppRegistry;
use crate::engine::decision_log::DecisionLog;
use crate::engine::quarantine::{Quarantine, Slots};
use crate::engine::workers::Workers;
use crate::geo::{Geo, GeoDb};
use crate::inventory::tokens;
use crate::metrics::Counters;
use crate::openmix::DataSnapshot;
use crate::state::State;

/// Builds the shared state from a configuration (no sockets yet).
pub async fn build_state(config: Config) -> Result<Arc<State>, ServeError> {
    // Installed first, so histogram handles taken by workers are live ones.
    crate::metrics::prometheus::recorder();
    let crate::db::Stores {
        stats: store,
        inventory: inventory_store,
        reports: report_store,
    } = crate::db::open(&config.data_dir, config.leaderboard.postgres.as_deref())
        .await
        .map_err(ServeError::Store)?;
    let stats = Arc::new(
        crate::stats::StatsApi::new(
            store,
            config.leaderboard.secret.clone(),
            config.leaderboard.regions.clone(),
        )
        .with_default_window(config.leaderboard.window),
    );
    let geo = Arc::new(Geo::new(GeoDb::open(&config.geo_paths())?));
    let static_probes = match &config.static_probes {
        Some(p) => crate::data::probes::load_static(p).map_err(StartupError::Probes)?,
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
    .map_err(ServeError::Inventory)?;
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
    )?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let counters = Arc::new(Counters::default());
    let decisions = DecisionLog::new(&config.log, &config.reports.node, &config.data_dir);
    let workers = Workers::start(
        threads,
        config.hard_limit,
        Some(apps.clone()),
        Some(slots),
        counters.clone(),
        Some(decisions.clone()),
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
    let signers = Signers::load(&config).map_err(StartupError::DnssecKeys)?;
    let zones = ZoneSet::from_config(&config, &signers).map_err(|error| StartupError::Zones {
        file: config.source.clone(),
        error,
    })?;
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
        decisions,
        dns,
        signers: ArcSwap::from_pointee(signers),
        key_watchers: std::sync::Mutex::new(Vec::new()),
        quarantine,
        stats,
        inventory,
        reports: Arc::new(crate::report::Reports::new(report_store)),
        restarts: std::env::var(super::supervisor::RESTARTS_ENV)
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
fn open_quarantine(config: &Config) -> Result<(Arc<Slots>, Arc<Quarantine>), ServeError> {
    super::startup::create_data_dir(config)?;
    let slots_path = config.data_dir.join(super::supervisor::slots_file());
    let (slots, in_flight) = Slots::open(&slots_path).map_err(|source| ServeError::Slots {
        path: slots_path.clone(),
        source,
    })?;
    let quarantine = Quarantine::load(config.data_dir.join("quarantine.json"));
    crate::engine::quarantine::after_abnormal_exit(&in_flight, &quarantine);
    let slots = Arc::new(slots);
    slots.start_heartbeat();
    slots.watch_allocation_failures();
    slots.watch_crashes();
    Ok((slots, Arc::new(quarantine)))
}
