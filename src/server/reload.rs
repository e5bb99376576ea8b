//! Signals: SIGTERM and SIGINT stop the server; SIGHUP reloads the
//! configuration, applying what can change live and warning about what
//! needs a restart.

use std::sync::Arc;

use crate::config::{Config, ConfigSource};
use crate::dns::ZoneSet;
use crate::dnssec::sign::Signers;
use crate::geo::GeoDb;
use crate::state::State;

/// Waits for SIGTERM/SIGINT; reloads the configuration on SIGHUP.
pub async fn wait_for_signals(state: &Arc<State>, source: &ConfigSource) {
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

/// SIGHUP: validate the configuration again as `serve` and `check` do
/// ([`super::preflight::check_config`]) and swap it in; a configuration with a fatal
/// problem keeps the current one, and each problem is logged on a line of its own.
/// Zones, providers, static probes, app settings and budgets, GeoIP paths and the
/// per-request HTTP settings apply at once; each changed key that is only read at startup
/// gets a warning (see [`restart_only_changes`]).
pub async fn reload_config(state: &Arc<State>, source: &ConfigSource) {
    let fail = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "config reload failed; keeping the current configuration");
    };
    let old = state.config.load_full();
    let mut config = match super::preflight::check_config(source, Some(&old)).ready() {
        Ok((config, problems)) => {
            for p in problems
                .iter()
                .filter(|p| p.severity != super::preflight::Severity::Note)
            {
                tracing::warn!(problem = %p, "configuration problem; reloading anyway");
            }
            config
        }
        Err(refused) => {
            for p in &refused.0 {
                fail(p);
            }
            return;
        }
    };
    if let Err(e) = super::startup::resolve_api_token(&mut config)
        .and(super::startup::resolve_cookie_secret(&mut config))
    {
        return fail(&e);
    }
    let signers = match Signers::reload(&config, &state.signers.load()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let zones = match ZoneSet::from_config(&config, &signers) {
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
        *watcher = super::feeds::watch_geo(&state.geo, paths);
    }
    state.hub.set_static_probes(probes);
    state.dns.zones.store(Arc::new(zones));
    {
        // The old watchers go first: one reloading now would give a
        // signer the keys of a directory no longer configured.
        let mut watchers = state
            .key_watchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        watchers.clear();
        *watchers = crate::dnssec::watch::watch_all(&config, &signers);
    }
    state.signers.store(Arc::new(signers));
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
