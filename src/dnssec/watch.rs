//! Reloads a signed zone's keys when its key files change: a new key
//! dropped in (a rollover's next key), `dnssec-settime` rewriting the
//! timing, a key removed. The same as the GeoIP watcher
//! ([`crate::geo::Geo::watch`]): the directory is watched, not the files,
//! events are debounced (300 ms), and a key set that fails to load keeps
//! the one in use, with a warning.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_proto::rr::Name;
use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::files::{self, KeyFileError};
use super::keydir::{key_dir, zone_name};
use super::keys::KeySet;
use super::sign::{Signers, ZoneSigner};
use crate::config::Config;

/// Keeps a key directory watched; dropping it stops the watch.
pub struct KeyWatcher {
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
}

impl std::fmt::Debug for KeyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyWatcher").finish_non_exhaustive()
    }
}

impl Drop for KeyWatcher {
    fn drop(&mut self) {
        if let Some(d) = self.debouncer.take() {
            d.stop();
        }
    }
}

/// Watches `dir` for changes to `zone`'s key files and gives `signer`
/// the keys loaded again after each.
pub fn watch_keys(
    signer: &Arc<ZoneSigner>,
    dir: PathBuf,
    zone: Name,
) -> Result<KeyWatcher, KeyFileError> {
    let weak: Weak<ZoneSigner> = Arc::downgrade(signer);
    let (watched, name) = (dir.clone(), zone.clone());
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let relevant = events.iter().any(|e| {
                crate::geo::is_change(&e.kind)
                    && e.paths.iter().any(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| files::parse_base_name(n, &name).is_some())
                    })
            });
            let Some(signer) = weak.upgrade().filter(|_| relevant) else {
                return;
            };
            match KeySet::load(&watched, &name) {
                Ok(keys) => {
                    tracing::info!(
                        zone = %files::zone_text(&name),
                        keys = keys.keys.len(),
                        "DNSSEC key files changed; keys reloaded"
                    );
                    signer.set_keys(keys);
                }
                Err(e) => tracing::warn!(
                    zone = %files::zone_text(&name),
                    error = %e,
                    "DNSSEC key files changed but do not load; keeping the keys in use"
                ),
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "DNSSEC key directory watch error");
            }
        }
    };
    let mut debouncer = new_debouncer(Duration::from_millis(300), None, handler)
        .map_err(|e| KeyFileError::new(&dir, e))?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| KeyFileError::new(&dir, format!("cannot watch: {e}")))?;
    Ok(KeyWatcher {
        debouncer: Some(debouncer),
    })
}

/// Watches the key directory of every signed zone of `config` that has a
/// signer; a directory that cannot be watched costs only live reloads
/// (SIGHUP still reloads), so it is logged.
pub fn watch_all(config: &Config, signers: &Signers) -> Vec<KeyWatcher> {
    let mut out = Vec::new();
    for zone in &config.zones {
        let Some(signer) = signers.zones.get(&zone.name) else {
            continue;
        };
        let dir = key_dir(config, zone);
        match zone_name(&zone.name).and_then(|name| watch_keys(signer, dir, name)) {
            Ok(w) => out.push(w),
            Err(e) => tracing::warn!(
                zone = %zone.name,
                error = %e,
                "DNSSEC key directory is not watched; SIGHUP reloads its keys"
            ),
        }
    }
    out
}
