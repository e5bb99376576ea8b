//! Crash containment across restarts: which app was running when the
//! serving process died, and the quarantine that keeps it from killing the
//! next process too.
//!
//! Each thread that runs apps (a JS worker, a loader) owns one slot in a
//! small memory-mapped file in the data directory. Before a call it writes
//! the app's name and source hash, the call's budget and its start time,
//! and marks the slot busy; after, idle. A heartbeat in the file's header
//! is renewed every 10 ms while the process lives. Stores to a shared
//! mapping reach the page cache at once, so they survive an abort or an OOM
//! kill. On start, a slot still marked busy names an app that was in flight
//! when the previous process died abnormally (a graceful stop clears every
//! slot). It is quarantined only on evidence against its own call:
//!
//! - a runaway: its call had run for at least its budget by the last
//!   heartbeat (such as the stuck calls a watchdog restart leaves behind);
//! - a failed allocation: the counting allocator marks the slot of a thread
//!   whose request of 1 MiB or more fails (the abort under a memory cap);
//! - a crash in its call: a fault (SIGSEGV, SIGBUS, SIGILL, SIGFPE) raised
//!   by the kernel on the thread while it ran the call, or an `abort()` the
//!   thread called itself (a panic that cannot unwind, Rust's stack
//!   overflow handler); a signal handler marks the slot before the process
//!   dies ([`Slots::watch_crashes`]).
//!
//! Nothing else counts. A process killed from outside (`kill -9`, the OOM
//! killer, a signal sent by another process) leaves no mark, so a healthy
//! app that happened to be in flight — on a busy server there always is
//! one — is never quarantined, however often that happens.
//!
//! A quarantined app's queries get the fallback (reason `quarantined`)
//! until a different version of it is saved or an operator lifts the
//! quarantine (`DELETE /api/apps/{app}/quarantine`,
//! `switchyard quarantine lift APP`); so the same app crashing again
//! crash-loops the server at most twice.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::Digest;

/// Slots in the file (workers plus replacements of retired ones, then the
/// loaders).
pub const SLOTS: usize = 64;
/// The first of the slots of loader threads (top level and `init`); the
/// workers use the slots below it.
pub const LOADER_SLOT: usize = SLOTS - LOADER_SLOTS;
/// Slots of loader threads: one for the load in progress, the rest for
/// loads abandoned while their thread still runs the app.
pub const LOADER_SLOTS: usize = 8;
/// A failed allocation at least this big marks its call the culprit.
const CULPRIT_BYTES: usize = 1 << 20;
/// Words per slot: state, hash, started (unix ms), budget (ms), flags,
/// the crash signal, then 64 bytes of name.
const WORDS: usize = 14;
const NAME_BYTES: usize = 64;
/// Header words before the slots: magic, heartbeat (unix ms).
const HEADER: usize = 2;
/// Marks the file layout; a file without it is cleared.
const MAGIC: u64 = 0x5357_5953_4c4f_5402;
/// The slot's call failed to allocate.
const FLAG_CULPRIT: u64 = 1;
/// The slot's thread crashed during the call (the signal is in word 5).
const FLAG_CRASHED: u64 = 2;
/// The signals that mean a crash when the kernel raises them on a thread
/// (a fault) or the thread raises them itself (`abort()`).
const CRASH_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An app that was in flight when the previous process died.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InFlight {
    /// App name.
    pub app: String,
    /// Version hash.
    pub hash: u64,
    /// How long its call had run by the last heartbeat (ms).
    pub ran_ms: u64,
    /// The call's budget (ms).
    pub budget_ms: u64,
    /// An allocation of the call failed (see [`Slots::watch_allocation_failures`]).
    pub culprit: bool,
    /// The signal its thread crashed with during the call, if it did (see
    /// [`Slots::watch_crashes`]).
    pub crashed: Option<i32>,
}

impl InFlight {
    /// Its call had run for its whole budget: a runaway.
    pub fn ran_away(&self) -> bool {
        self.ran_ms >= self.budget_ms
    }

    /// The evidence against its call, if any.
    pub fn evidence(&self) -> Option<Evidence> {
        let kind = if self.crashed.is_some() {
            EvidenceKind::CrashInCall
        } else if self.culprit {
            EvidenceKind::FailedAllocation
        } else if self.ran_away() {
            EvidenceKind::Runaway
        } else {
            return None;
        };
        Some(Evidence {
            kind,
            ran_ms: self.ran_ms,
            budget_ms: self.budget_ms,
            signal: self.crashed,
        })
    }
}

/// What kind of evidence quarantined an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// Its call had run past its budget when the process died.
    Runaway,
    /// An allocation of its call failed (the process aborted).
    FailedAllocation,
    /// Its call's thread crashed (a fault, or an abort it called).
    CrashInCall,
}

/// The evidence against a quarantined app's call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Evidence {
    /// What happened.
    pub kind: EvidenceKind,
    /// How long the call had run by the last heartbeat (ms).
    pub ran_ms: u64,
    /// The call's budget (ms).
    pub budget_ms: u64,
    /// The crash signal, for [`EvidenceKind::CrashInCall`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
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

thread_local! {
    /// The slot of the app call this thread is running (`usize::MAX`: none).
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The slots the allocator marks when an allocation fails.
static WATCHED: AtomicPtr<Slots> = AtomicPtr::new(std::ptr::null_mut());

/// Called by the counting allocator when a request fails (the process is
/// about to abort): marks the calling thread's call the culprit. Must not
/// allocate.
fn allocation_failed(size: usize) {
    if size < CULPRIT_BYTES {
        return;
    }
    let slots = WATCHED.load(Ordering::Acquire);
    let slot = THREAD_SLOT.try_with(Cell::get).unwrap_or(usize::MAX);
    if slots.is_null() || slot == usize::MAX {
        return;
    }
    // SAFETY: WATCHED only ever holds a leaked `Arc<Slots>`, never freed.
    let slots = unsafe { &*slots };
    if slots.word(slot, 0).load(Ordering::Acquire) == 1 {
        slots.word(slot, 4).fetch_or(FLAG_CULPRIT, Ordering::AcqRel);
    }
}

/// The actions the crash handler replaced, restored before it returns.
static PREVIOUS: std::sync::OnceLock<Vec<(libc::c_int, libc::sigaction)>> =
    std::sync::OnceLock::new();

/// The crash handler: marks the calling thread's busy slot crashed when
/// the signal is evidence against its call (raised by the kernel for this
/// thread, or by this process itself: `abort()`), then restores the
/// previous action and lets it run. A signal sent from outside is no
/// evidence. Async-signal-safe: atomics and a const thread-local only.
extern "C" fn on_crash_signal(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, sender) = unsafe { ((*info).si_code, (*info).si_pid()) };
    // SAFETY: getpid has no preconditions.
    let own = sender == unsafe { libc::getpid() };
    let kernel_fault = code > 0;
    if kernel_fault || own {
        let slots = WATCHED.load(Ordering::Acquire);
        let slot = THREAD_SLOT.try_with(Cell::get).unwrap_or(usize::MAX);
        if !slots.is_null() && slot != usize::MAX {
            // SAFETY: WATCHED only ever holds a leaked `Arc<Slots>`.
            let slots = unsafe { &*slots };
            if slots.word(slot, 0).load(Ordering::Acquire) == 1 {
                slots.word(slot, 5).store(sig as u64, Ordering::Release);
                slots.word(slot, 4).fetch_or(FLAG_CRASHED, Ordering::AcqRel);
            }
        }
    }
    if let Some(previous) = PREVIOUS.get()
        && let Some((_, action)) = previous.iter().find(|(s, _)| *s == sig)
    {
        // SAFETY: restoring an action sigaction returned earlier.
        unsafe { libc::sigaction(sig, action, std::ptr::null_mut()) };
    }
    if !kernel_fault {
        // Sent, not faulted: returning would not raise it again. It is
        // blocked while this handler runs, so it arrives (under the
        // previous action) as soon as the handler returns. A fault needs
        // nothing: its instruction faults again.
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
}

impl Slots {
    /// Opens (creating) the slot file; returns it with the apps that were
    /// in flight when the previous process died, then clears them. A file
    /// of another layout (an older version) is cleared first.
    pub fn open(path: &Path) -> std::io::Result<(Slots, Vec<InFlight>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = ((HEADER + SLOTS * WORDS) * 8) as u64;
        if file.metadata()?.len() != len {
            file.set_len(0)?;
            file.set_len(len)?;
        }
        // SAFETY: the file is ours (in our data directory) and sized above;
        // it is only accessed through atomics below.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file)? };
        let words = map.as_mut_ptr() as *const AtomicU64;
        let slots = Slots { _map: map, words };
        let mut in_flight = Vec::new();
        let magic = slots.header(0).load(Ordering::Acquire) == MAGIC;
        let heartbeat = slots.header(1).load(Ordering::Acquire);
        for i in 0..SLOTS {
            if magic && slots.word(i, 0).load(Ordering::Acquire) == 1 {
                let name = slots.name(i);
                if !name.is_empty() {
                    let started = slots.word(i, 2).load(Ordering::Acquire);
                    in_flight.push(InFlight {
                        app: name,
                        hash: slots.word(i, 1).load(Ordering::Acquire),
                        ran_ms: heartbeat.max(started) - started,
                        budget_ms: slots.word(i, 3).load(Ordering::Acquire),
                        culprit: slots.word(i, 4).load(Ordering::Acquire) & FLAG_CULPRIT != 0,
                        crashed: (slots.word(i, 4).load(Ordering::Acquire) & FLAG_CRASHED != 0)
                            .then(|| slots.word(i, 5).load(Ordering::Acquire) as i32),
                    });
                }
            }
            for w in 0..WORDS {
                slots.word(i, w).store(0, Ordering::Release);
            }
        }
        slots.header(0).store(MAGIC, Ordering::Release);
        slots.heartbeat();
        in_flight.sort();
        in_flight.dedup_by(|a, b| {
            a.app == b.app && a.hash == b.hash && {
                b.ran_ms = b.ran_ms.max(a.ran_ms);
                b.culprit |= a.culprit;
                b.crashed = b.crashed.or(a.crashed);
                true
            }
        });
        Ok((slots, in_flight))
    }

    fn header(&self, w: usize) -> &AtomicU64 {
        // SAFETY: w < HEADER (callers), inside the mapping, 8-byte aligned.
        unsafe { &*self.words.add(w % HEADER) }
    }

    fn word(&self, slot: usize, w: usize) -> &AtomicU64 {
        // SAFETY: slot < SLOTS and w < WORDS (callers), inside the mapping;
        // the mapping is page-aligned, so every word is 8-byte aligned.
        unsafe { &*self.words.add(HEADER + slot % SLOTS * WORDS + w % WORDS) }
    }

    fn name(&self, slot: usize) -> String {
        let mut name = Vec::with_capacity(NAME_BYTES);
        for w in 0..NAME_BYTES / 8 {
            name.extend_from_slice(&self.word(slot, 6 + w).load(Ordering::Acquire).to_le_bytes());
        }
        String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string()
    }

    /// Marks `slot` busy running `app` at `hash` from now, with `budget`
    /// for the call, and makes it this thread's slot (see
    /// [`Self::watch_allocation_failures`]). The name is written every
    /// time: two apps may share a version hash (the same source under two
    /// names), so an unchanged hash does not mean an unchanged app.
    pub fn enter(&self, slot: usize, app: &str, hash: u64, budget: Duration) {
        let mut bytes = [0u8; NAME_BYTES];
        let n = app.len().min(NAME_BYTES);
        bytes[..n].copy_from_slice(&app.as_bytes()[..n]);
        for (w, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            self.word(slot, 6 + w)
                .store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        self.word(slot, 1).store(hash, Ordering::Relaxed);
        self.word(slot, 2).store(unix_ms(), Ordering::Relaxed);
        self.word(slot, 3)
            .store(budget.as_millis() as u64, Ordering::Relaxed);
        self.word(slot, 4).store(0, Ordering::Relaxed);
        self.word(slot, 5).store(0, Ordering::Relaxed);
        self.word(slot, 0).store(1, Ordering::Release);
        let _ = THREAD_SLOT.try_with(|s| s.set(slot));
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

    /// Renews the heartbeat: the process is alive now.
    pub fn heartbeat(&self) {
        self.header(1).store(unix_ms(), Ordering::Release);
    }

    /// Renews the heartbeat every 10 ms for as long as the process lives,
    /// so that the next process can tell how long an in-flight call had
    /// run when this one died.
    pub fn start_heartbeat(self: &Arc<Self>) {
        let slots = self.clone();
        let spawned = std::thread::Builder::new()
            .name("slots-heartbeat".into())
            .spawn(move || {
                loop {
                    slots.heartbeat();
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the in-flight heartbeat");
        }
    }

    /// From now on, an allocation of 1 MiB or more that fails on a thread
    /// running an app call marks that call the culprit (the process aborts
    /// right after). Keeps these slots alive for the rest of the process.
    pub fn watch_allocation_failures(self: &Arc<Self>) {
        self.publish();
        crate::openmix::alloc::on_allocation_failure(allocation_failed);
    }

    /// From now on, a crash of a thread running an app call marks that
    /// call crashed: a fault the kernel raises on the thread (SIGSEGV,
    /// SIGBUS, SIGILL, SIGFPE) or an abort it calls itself (SIGABRT). The
    /// previous handlers (Rust's stack overflow report) still run after.
    /// Keeps these slots alive for the rest of the process.
    pub fn watch_crashes(self: &Arc<Self>) {
        self.publish();
        let mut previous = Vec::new();
        for sig in CRASH_SIGNALS {
            // SAFETY: reading the current action into a zeroed struct.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0 {
                    previous.push((sig, old));
                }
            }
        }
        if PREVIOUS.set(previous).is_err() {
            return; // Already installed.
        }
        for (sig, _) in PREVIOUS.get().into_iter().flatten() {
            // SAFETY: a zeroed sigaction plus our handler and flags is a
            // valid action; the handler only touches atomics and a const
            // thread-local.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_crash_signal as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(*sig, &action, std::ptr::null_mut()) != 0 {
                    tracing::warn!(signal = sig, error = %std::io::Error::last_os_error(),
                        "cannot watch for crashes in app calls");
                }
            }
        }
    }

    /// Makes these slots the ones the allocator and the crash handler mark.
    fn publish(self: &Arc<Self>) {
        let leaked = Arc::into_raw(self.clone()) as *mut Slots;
        let set = WATCHED.compare_exchange(
            std::ptr::null_mut(),
            leaked,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if set.is_err() {
            // Already watching other slots (only ever one set per process).
            // SAFETY: `leaked` came from Arc::into_raw just above and was
            // never published.
            drop(unsafe { Arc::from_raw(leaked) });
        }
    }
}

/// What the next process does about the apps in flight when the last one
/// died abnormally: quarantines those with evidence against their call
/// ([`InFlight::evidence`]); the others were bystanders and stay in service.
pub fn after_abnormal_exit(in_flight: &[InFlight], quarantine: &Quarantine) {
    for f in in_flight {
        let Some(evidence) = f.evidence() else {
            tracing::info!(app = %f.app, ran_ms = f.ran_ms, budget_ms = f.budget_ms,
                "app was in flight when the serving process died, with no evidence against its call; not quarantined");
            continue;
        };
        let reason = match evidence.kind {
            EvidenceKind::FailedAllocation => "it was running when the serving process died: an allocation of its call failed (out of memory)".to_string(),
            EvidenceKind::Runaway => format!(
                "it was running when the serving process died: its call had run {} ms, past its {} ms budget",
                f.ran_ms, f.budget_ms
            ),
            EvidenceKind::CrashInCall => format!(
                "the serving process crashed in its call (signal {})",
                evidence.signal.unwrap_or(0)
            ),
        };
        quarantine.add(&f.app, f.hash, &reason, Some(evidence));
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
    /// The evidence against the call (absent in lists written before it
    /// was recorded).
    #[serde(default)]
    pub evidence: Option<Evidence>,
}

/// The quarantined app versions, persisted in the data directory so a
/// crash loop cannot lift them.
pub struct Quarantine {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Apps quarantined by this process, and how often.
    events: Mutex<BTreeMap<String, u64>>,
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
            events: Mutex::new(BTreeMap::new()),
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
    pub fn add(&self, app: &str, hash: u64, reason: &str, evidence: Option<Evidence>) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        let since_ms = unix_ms();
        if let Ok(mut events) = self.events.lock() {
            *events.entry(app.to_string()).or_default() += 1;
        }
        e.insert(
            app.to_string(),
            Entry {
                hash,
                since_ms,
                reason: reason.to_string(),
                evidence,
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

    /// Lifts the quarantine of `app` (an operator's decision): its current
    /// version runs again once the apps are reloaded. Returns the entry
    /// lifted, `None` when the app was not quarantined.
    pub fn lift(&self, app: &str) -> Option<Entry> {
        let mut e = self.entries.lock().ok()?;
        let entry = e.remove(app)?;
        tracing::warn!(app, reason = %entry.reason, "quarantine lifted by an operator");
        self.save(&e);
        Some(entry)
    }

    /// Whether `app` at `hash` is quarantined (without lifting anything).
    pub fn holds(&self, app: &str, hash: u64) -> bool {
        self.entries
            .lock()
            .is_ok_and(|e| e.get(app).is_some_and(|x| x.hash == hash))
    }

    /// Every quarantined app.
    pub fn list(&self) -> BTreeMap<String, Entry> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Quarantine events in this process, by app (the current quarantines
    /// are [`Self::list`]).
    pub fn events(&self) -> BTreeMap<String, u64> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_millis(5);

    #[test]
    fn a_slot_reused_by_another_app_of_the_same_version_names_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inflight");
        let (slots, none) = Slots::open(&path).unwrap();
        assert!(none.is_empty());
        let hash = version_hash("same source", None);
        slots.enter(3, "first", hash, BUDGET);
        slots.leave(3);
        slots.enter(3, "second", hash, BUDGET);
        slots.enter(LOADER_SLOT, "loading", 7, Duration::from_millis(250));
        drop(slots);
        let (slots, in_flight) = Slots::open(&path).unwrap();
        let names: Vec<(String, u64)> = in_flight.iter().map(|f| (f.app.clone(), f.hash)).collect();
        assert_eq!(
            names,
            vec![("loading".to_string(), 7), ("second".to_string(), hash)]
        );
        assert!(
            in_flight.iter().all(|f| !f.ran_away() && !f.culprit),
            "{in_flight:?}"
        );
        drop(slots);
        let (_, after) = Slots::open(&path).unwrap();
        assert!(after.is_empty(), "open clears what it reported: {after:?}");
    }

    #[test]
    fn a_call_that_ran_its_budget_by_the_last_heartbeat_is_a_runaway() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inflight");
        let (slots, _) = Slots::open(&path).unwrap();
        slots.enter(0, "stuck", 1, BUDGET);
        slots.enter(1, "short", 2, Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(30));
        slots.heartbeat();
        drop(slots);
        let (_, in_flight) = Slots::open(&path).unwrap();
        let stuck = in_flight.iter().find(|f| f.app == "stuck").unwrap();
        let short = in_flight.iter().find(|f| f.app == "short").unwrap();
        assert!(stuck.ran_away() && stuck.ran_ms >= 30, "{stuck:?}");
        assert!(!short.ran_away(), "{short:?}");
    }

    #[test]
    fn a_file_of_another_layout_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inflight");
        std::fs::write(&path, vec![1u8; 64 * 10 * 8]).unwrap();
        let (_, in_flight) = Slots::open(&path).unwrap();
        assert!(in_flight.is_empty(), "{in_flight:?}");
    }

    fn flight(app: &str, ran_ms: u64, culprit: bool) -> InFlight {
        InFlight {
            app: app.into(),
            hash: 9,
            ran_ms,
            budget_ms: 5,
            culprit,
            crashed: None,
        }
    }

    #[test]
    fn only_evidence_quarantines() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::load(dir.path().join("q.json"));
        let crashed = InFlight {
            crashed: Some(libc::SIGSEGV),
            ..flight("crashed", 1, false)
        };
        after_abnormal_exit(
            &[
                flight("runaway", 120, false),
                flight("leak", 1, true),
                crashed,
                flight("beside", 1, false),
            ],
            &q,
        );
        let kind = |app| q.check(app, 9).and_then(|e| e.evidence).map(|e| e.kind);
        assert_eq!(kind("runaway"), Some(EvidenceKind::Runaway));
        assert_eq!(kind("leak"), Some(EvidenceKind::FailedAllocation));
        assert_eq!(kind("crashed"), Some(EvidenceKind::CrashInCall));
        assert!(q.check("beside", 9).is_none());
        // A short call in flight at every abnormal exit is never evidence.
        for _ in 0..10 {
            after_abnormal_exit(&[flight("short", 2, false)], &q);
        }
        assert!(q.check("short", 9).is_none());
        assert_eq!(q.events().get("runaway"), Some(&1));
    }

    #[test]
    fn an_operator_lifts_a_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.json");
        let q = Quarantine::load(path.clone());
        after_abnormal_exit(&[flight("runaway", 120, false)], &q);
        assert!(q.holds("runaway", 9));
        assert!(q.lift("runaway").is_some());
        assert!(q.lift("runaway").is_none());
        assert!(!q.holds("runaway", 9));
        assert!(
            Quarantine::load(path).list().is_empty(),
            "the lift is saved"
        );
    }

    #[test]
    fn a_crash_signal_raised_by_the_thread_in_its_call_marks_the_slot() {
        // In a child process: the test process must survive the abort.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inflight");
        // SAFETY: fork in a test; the child only runs the code below and
        // exits by the signal.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let (slots, _) = Slots::open(&path).unwrap();
            let slots = Arc::new(slots);
            slots.watch_crashes();
            slots.enter(2, "crasher", 5, BUDGET);
            slots.enter(3, "bystander", 6, BUDGET);
            // Back to slot 2 on this thread: slot 3 is another thread's.
            slots.enter(2, "crasher", 5, BUDGET);
            std::process::abort();
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFSIGNALED(status), "status {status}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGABRT);
        let (_, in_flight) = Slots::open(&path).unwrap();
        let crasher = in_flight.iter().find(|f| f.app == "crasher").unwrap();
        let bystander = in_flight.iter().find(|f| f.app == "bystander").unwrap();
        assert_eq!(crasher.crashed, Some(libc::SIGABRT), "{crasher:?}");
        assert_eq!(bystander.crashed, None, "{bystander:?}");
    }

    #[test]
    fn a_signal_sent_from_outside_is_no_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inflight");
        // SAFETY: as above.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let (slots, _) = Slots::open(&path).unwrap();
            let slots = Arc::new(slots);
            slots.watch_crashes();
            slots.enter(2, "busy", 5, Duration::from_secs(60));
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child, then waiting for it.
        let mut status = 0;
        unsafe {
            libc::kill(pid, libc::SIGABRT);
            libc::waitpid(pid, &mut status, 0);
        }
        assert!(libc::WIFSIGNALED(status), "status {status}");
        let (_, in_flight) = Slots::open(&path).unwrap();
        let busy = in_flight.iter().find(|f| f.app == "busy").unwrap();
        assert_eq!(busy.crashed, None, "{busy:?}");
        assert!(busy.evidence().is_none());
    }
}
