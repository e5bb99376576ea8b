//! [`Geo::watch`]: reload the databases when their files change.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify_debouncer_full::notify::event::ModifyKind;
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::{Geo, GeoError, GeoPaths};

impl Geo {
    /// Reloads `paths` whenever one of those files is created, written, renamed or removed.
    ///
    /// Watches the files' parent directories, not the files: replacing a file by renaming
    /// a new one over it (the safe way to update) ends a watch on the old file's inode.
    /// Events are debounced for 300 ms so a file being copied in is read once it is quiet; a
    /// reload that fails (half-written file, bad TOML) keeps the old set and logs a warning,
    /// and the next change tries again. Access events are ignored: our own reads produce
    /// them, and reacting would reload forever. Dropping the returned [`GeoWatcher`] stops it.
    pub fn watch(self: &Arc<Self>, paths: GeoPaths) -> Result<GeoWatcher, GeoError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut files: HashSet<PathBuf> = HashSet::new();
        for file in [&paths.city, &paths.asn, &paths.overrides]
            .into_iter()
            .flatten()
        {
            let watch_err = |reason: String| GeoError::Watch {
                path: file.clone(),
                reason,
            };
            let name = file
                .file_name()
                .ok_or_else(|| watch_err("not a file name".to_owned()))?;
            let parent = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            // Events carry the watched directory's path joined with the file name;
            // canonicalizing makes `geo/x` and `./geo/x` compare equal.
            let dir = parent
                .canonicalize()
                .map_err(|e| watch_err(format!("directory {}: {e}", parent.display())))?;
            files.insert(dir.join(name));
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }

        let geo: Weak<Geo> = Arc::downgrade(self);
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                let relevant = events
                    .iter()
                    .any(|e| is_change(&e.kind) && e.paths.iter().any(|p| files.contains(p)));
                if !relevant {
                    return;
                }
                let Some(geo) = geo.upgrade() else { return };
                if let Err(e) = geo.reload(&paths) {
                    tracing::error!("geo reload failed, keeping the previous databases: {e}");
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!("geo watch error: {e}");
                }
            }
        };
        let mut debouncer =
            new_debouncer(Duration::from_millis(300), None, handler).map_err(|e| {
                GeoError::Watch {
                    path: dirs.first().cloned().unwrap_or_default(),
                    reason: e.to_string(),
                }
            })?;
        for dir in &dirs {
            debouncer
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| GeoError::Watch {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(GeoWatcher {
            debouncer: Some(debouncer),
        })
    }
}

/// Whether an event can mean new file contents. Access (our own reads) and metadata-only
/// changes (atime, chmod) cannot; reacting to them would make every reload trigger another.
/// (The DNSSEC key directory watch asks the same.)
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Keeps a [`Geo::watch`] running; dropping it stops watching and waits for an in-flight
/// reload to finish, so nothing reloads after the drop returns.
pub struct GeoWatcher {
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
}

impl fmt::Debug for GeoWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoWatcher").finish_non_exhaustive()
    }
}

impl Drop for GeoWatcher {
    fn drop(&mut self) {
        if let Some(debouncer) = self.debouncer.take() {
            debouncer.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_kinds() {
        use notify_debouncer_full::notify::event::{
            AccessKind, CreateKind, MetadataKind, RenameMode,
        };
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::Both
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Any)));
        assert!(!is_change(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Any
        ))));
    }
}
