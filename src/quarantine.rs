//! Crash containment across restarts: which app was running when the
//! serving process died, and the quarantine that keeps it from killing the
//! next process too.
//!
//! Each JS worker owns one slot in a small memory-mapped file in the data
//! directory. Before a decision it writes the app's name and source hash
//! and marks the slot busy; after, idle. Stores to a shared mapping reach
//! the page cache at once, so they survive an abort or an OOM kill. On
//! start, a slot still marked busy names an app that was in flight when the
//! previous process died: it is quarantined (its queries get the fallback,
//! reason `quarantined`) until a different version of it is saved.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::Digest;

/// Slots in the file (workers plus replacements of retired ones).
pub const SLOTS: usize = 64;
/// The slot of the thread that loads apps (top level and `init`).
pub const LOADER_SLOT: usize = SLOTS - 1;
/// Words per slot: state, hash, then 64 bytes of name.
const WORDS: usize = 10;
const NAME_BYTES: usize = 64;

/// A short, stable hash of an app version (source and sidecar).
pub fn version_hash(source: &str, sidecar: Option<&str>) -> u64 {
    let mut h = sha2::Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(sidecar.unwrap_or("").as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b).max(1)
}

/// The memory-mapped in-flight slots.
pub struct Slots {
    _map: memmap2::MmapMut,
    words: *const AtomicU64,
}

// SAFETY: the mapping is only accessed through `AtomicU64`s, which are Sync.
unsafe impl Send for Slots {}
// SAFETY: as above.
unsafe impl Sync for Slots {}

impl Slots {
    /// Opens (creating) the slot file; returns it with the apps that were
    /// in flight when the previous process died, then clears them.
    pub fn open(path: &Path) -> std::io::Result<(Slots, Vec<(String, u64)>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = (SLOTS * WORDS * 8) as u64;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
        // SAFETY: the file is ours (in our data directory) and sized above;
        // it is only accessed through atomics below.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
        let words = map.as_mut_ptr() as *const AtomicU64;
        let slots = Slots { _map: map, words };
        let mut in_flight = Vec::new();
        for i in 0..SLOTS {
            if slots.word(i, 0).load(Ordering::Acquire) == 1 {
                let hash = slots.word(i, 1).load(Ordering::Acquire);
                let mut name = Vec::with_capacity(NAME_BYTES);
                for w in 0..NAME_BYTES / 8 {
                    name.extend_from_slice(
                        &slots.word(i, 2 + w).load(Ordering::Acquire).to_le_bytes(),
                    );
                }
                let name = String::from_utf8_lossy(&name)
                    .trim_end_matches('\0')
                    .to_string();
                if !name.is_empty() {
                    in_flight.push((name, hash));
                }
            }
            slots.word(i, 0).store(0, Ordering::Release);
        }
        in_flight.sort();
        in_flight.dedup();
        Ok((slots, in_flight))
    }

    fn word(&self, slot: usize, w: usize) -> &AtomicU64 {
        // SAFETY: slot < SLOTS and w < WORDS (callers), inside the mapping;
        // the mapping is page-aligned, so every word is 8-byte aligned.
        unsafe { &*self.words.add(slot % SLOTS * WORDS + w) }
    }

    /// Marks `slot` busy running `app` at `hash`. The name is written every
    /// time: two apps may share a version hash (the same source under two
    /// names), so an unchanged hash does not mean an unchanged app.
    pub fn enter(&self, slot: usize, app: &str, hash: u64) {
        let mut bytes = [0u8; NAME_BYTES];
        let n = app.len().min(NAME_BYTES);
        bytes[..n].copy_from_slice(&app.as_bytes()[..n]);
        for (w, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            self.word(slot, 2 + w)
                .store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        self.word(slot, 1).store(hash, Ordering::Relaxed);
        self.word(slot, 0).store(1, Ordering::Release);
    }

    /// Marks `slot` idle.
    pub fn leave(&self, slot: usize) {
        self.word(slot, 0).store(0, Ordering::Release);
    }

    /// Marks every slot idle: a graceful stop crashed nothing, so the next
    /// process must quarantine nothing.
    pub fn leave_all(&self) {
        for slot in 0..SLOTS {
            self.leave(slot);
        }
    }
}

/// Why and since when an app version is quarantined.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Version hash that crashed.
    pub hash: u64,
    /// When it was quarantined (unix ms).
    pub since_ms: u64,
    /// Why.
    pub reason: String,
}

/// The quarantined app versions, persisted in the data directory so a
/// crash loop cannot lift them.
pub struct Quarantine {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl Quarantine {
    /// Loads the list (empty when the file is missing or unreadable).
    pub fn load(path: PathBuf) -> Quarantine {
        let entries = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Quarantine {
            path,
            entries: Mutex::new(entries),
        }
    }

    fn save(&self, entries: &BTreeMap<String, Entry>) {
        let tmp = self.path.with_extension("tmp");
        let ok = serde_json::to_vec_pretty(entries)
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|()| std::fs::rename(&tmp, &self.path).ok());
        if ok.is_none() {
            tracing::warn!(file = %self.path.display(), "cannot save the quarantine list");
        }
    }

    /// Quarantines `app` at `hash`.
    pub fn add(&self, app: &str, hash: u64, reason: &str) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        let since_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        e.insert(
            app.to_string(),
            Entry {
                hash,
                since_ms,
                reason: reason.to_string(),
            },
        );
        tracing::error!(
            app,
            reason,
            "app quarantined: its queries get the fallback until a new version is saved"
        );
        self.save(&e);
    }

    /// The quarantine of `app` at `hash`, if any. A different hash (a new
    /// version was saved) lifts the quarantine.
    pub fn check(&self, app: &str, hash: u64) -> Option<Entry> {
        let Ok(mut e) = self.entries.lock() else {
            return None;
        };
        match e.get(app) {
            Some(entry) if entry.hash == hash => Some(entry.clone()),
            Some(_) => {
                e.remove(app);
                tracing::info!(app, "new version saved; quarantine lifted");
                self.save(&e);
                None
            }
            None => None,
        }
    }

    /// Every quarantined app.
    pub fn list(&self) -> BTreeMap<String, Entry> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_reused_by_another_app_of_the_same_version_names_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inflight");
        let (slots, none) = Slots::open(&path).unwrap();
        assert!(none.is_empty());
        let hash = version_hash("same source", None);
        slots.enter(3, "first", hash);
        slots.leave(3);
        slots.enter(3, "second", hash);
        slots.enter(LOADER_SLOT, "loading", 7);
        drop(slots);
        let (slots, in_flight) = Slots::open(&path).unwrap();
        assert_eq!(
            in_flight,
            vec![("loading".to_string(), 7), ("second".to_string(), hash)]
        );
        drop(slots);
        let (_, after) = Slots::open(&path).unwrap();
        assert!(after.is_empty(), "open clears what it reported: {after:?}");
    }
}
