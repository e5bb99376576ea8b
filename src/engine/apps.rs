//! The app registry: every `apps/*.js` file compiled, initialised and
//! published as one immutable [`AppSet`], with hot reload.
//!
//! A new version of a file is loaded (compiled, top level run, `init` run,
//! all under the load budget) on the watcher's thread before it is
//! published; only then is the set swapped, so a query sees either the old
//! version or the new one, never half of one. A version that fails keeps
//! the previous one serving and records the error for `/api/applications`.
//! Query threads compare the version number of the app they hold with the
//! published one and rebuild lazily (see [`crate::openmix::runtime`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::EventKind;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use crate::config::{AppSettings, Config, RawAppSettings};
use crate::openmix::memo::Memo;
use crate::openmix::{AppCode, AppInstance, AppMeta, DataSnapshot};

/// Whether an app version's first error was logged. It lives in the
/// version ([`LoadedApp::error_logged`]) and goes with it: a process-wide
/// set of logged versions grew by one entry per reload of a failing app.
#[derive(Debug, Default)]
pub struct ErrorLogged(std::sync::atomic::AtomicBool);

impl ErrorLogged {
    /// True the first time it is called for this version.
    pub fn first(&self) -> bool {
        !self.0.swap(true, std::sync::atomic::Ordering::Relaxed)
    }
}

/// One app version that compiled and passed `init`.
#[derive(Debug)]
pub struct LoadedApp {
    /// Source and version, what query threads compile.
    pub code: AppCode,
    /// Sidecar / config settings.
    pub settings: AppSettings,
    /// What `init` declared.
    pub meta: AppMeta,
    /// The providers it declared: required in `init` or listed by its
    /// settings ([`crate::openmix::engine::declared_providers`]); the memo
    /// reads probes through them as the app's calls do.
    pub declared: Arc<[String]>,
    /// When this version was published.
    pub loaded_at: SystemTime,
    /// Sidecar file text, if any (to notice changes).
    pub sidecar: Option<String>,
    /// Hash of source and sidecar (quarantine is keyed by it).
    pub hash: u64,
    /// Set when this version is quarantined: it is not run.
    pub quarantine: Option<crate::engine::quarantine::Entry>,
    /// The decision memo, when this version is proven stateless and did not
    /// call `Math.random` while loading (see [`crate::openmix::memo`]).
    pub memo: Option<Arc<Memo>>,
    /// Why this version is not memoised, when it is not.
    pub memo_off: Option<String>,
    /// Set when no version of the app ever loaded: this entry only carries
    /// the settings (fallback, TTL), so its names answer with the fallback
    /// (or SERVFAIL / 503 without one) instead of as unknown names.
    pub load_error: Option<String>,
    /// The backoff of this version after runaways.
    pub runaway: super::backoff::Runaway,
    /// Set once this version's first error is logged.
    pub error_logged: ErrorLogged,
}

impl LoadedApp {
    /// The entry for an app whose first version failed to load: the
    /// sidecar's settings when the sidecar itself parses, else the
    /// configuration's, and nothing that can run.
    pub fn unloadable(
        name: &str,
        path: &Path,
        source: &str,
        sidecar: Option<&str>,
        config: &Config,
        version: u64,
        failure: &LoadFailure,
    ) -> LoadedApp {
        let side_path = path.with_extension("toml");
        let settings = sidecar
            .and_then(|text| {
                sidecar_settings(text, &side_path, config)
                    .inspect_err(|error| {
                        tracing::warn!(file = %side_path.display(), error = %error, "app sidecar is invalid; using the configuration's settings for the app");
                    })
                    .ok()
            })
            .unwrap_or_else(|| config.app_settings(name));
        LoadedApp {
            code: AppCode {
                name: name.to_string(),
                path: path.to_path_buf(),
                source: Arc::from(source),
                version,
                budget: settings.budget,
                setup: None,
                shared_data: false,
                providers: settings.providers.clone().into(),
            },
            settings,
            meta: AppMeta::default(),
            declared: Arc::from([]),
            loaded_at: SystemTime::now(),
            sidecar: sidecar.map(str::to_string),
            hash: failure.hash,
            quarantine: None,
            memo: None,
            memo_off: Some("not loaded".into()),
            load_error: Some(failure.to_string()),
            runaway: Default::default(),
            error_logged: Default::default(),
        }
    }

    /// Whether this entry can run (it loaded and is not quarantined).
    pub fn runnable(&self) -> bool {
        self.quarantine.is_none() && self.load_error.is_none()
    }
}

/// Why a file could not be loaded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadFailure {
    /// The file.
    pub file: PathBuf,
    /// Line of the error, when known.
    pub line: Option<u32>,
    /// The error.
    pub message: String,
    /// When it happened.
    #[serde(with = "unix_ms")]
    pub at: SystemTime,
    /// Hash of the source and sidecar that failed (0: unknown), so an
    /// unchanged failing file is not loaded again on every reload.
    #[serde(skip)]
    pub hash: u64,
}

mod unix_ms {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        s.serialize_u64(ms)
    }
}

impl LoadFailure {
    /// A failure of `file` now.
    fn new(file: &Path, line: Option<u32>, message: String, hash: u64) -> LoadFailure {
        LoadFailure {
            file: file.to_path_buf(),
            line,
            message,
            at: SystemTime::now(),
            hash,
        }
    }
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The published apps and the last error of each file that failed.
#[derive(Debug, Default)]
pub struct AppSet {
    /// Serving apps by name.
    pub apps: BTreeMap<String, Arc<LoadedApp>>,
    /// Files whose latest version failed (the previous version, if any, serves).
    pub errors: BTreeMap<String, LoadFailure>,
}

/// Loads one app from source: compiles it and runs `init` on this thread.
pub fn load_app(
    name: &str,
    path: &Path,
    source: &str,
    sidecar: Option<&str>,
    config: &Config,
    data: &Arc<DataSnapshot>,
    version: u64,
) -> Result<LoadedApp, LoadFailure> {
    load_app_checked(name, path, source, sidecar, config, data, version, None)
}

/// Why a sidecar's settings are refused: what is wrong, and its line when
/// the TOML parser knows it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SidecarInvalid {
    /// The line in the sidecar, when known.
    pub line: Option<u32>,
    /// What is wrong.
    pub message: String,
}

/// The settings a sidecar's `text` (the file `side_path`) gives, checked
/// against the configuration's budget: what the loader and the start-up
/// checks ([`crate::server::preflight`]) both read.
pub fn sidecar_settings(
    text: &str,
    side_path: &Path,
    config: &Config,
) -> Result<AppSettings, SidecarInvalid> {
    let raw: RawAppSettings =
        toml::from_str(text).map_err(|e: toml::de::Error| SidecarInvalid {
            line: e
                .span()
                .map(|s| crate::config::lines::line_at(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
    raw.check(config.budget, &side_path.display().to_string())
        .map_err(|e| SidecarInvalid {
            line: None,
            message: e.to_string(),
        })
}

/// [`load_app`], first consulting the quarantine: a quarantined version is
/// not run at all (not even its `init`), only published with its fallback.
#[allow(clippy::too_many_arguments)]
pub fn load_app_checked(
    name: &str,
    path: &Path,
    source: &str,
    sidecar: Option<&str>,
    config: &Config,
    data: &Arc<DataSnapshot>,
    version: u64,
    quarantine: Option<&crate::engine::quarantine::Quarantine>,
) -> Result<LoadedApp, LoadFailure> {
    let hash = crate::engine::quarantine::version_hash(source, sidecar);
    let fail = |line: Option<u32>, message: String| LoadFailure::new(path, line, message, hash);
    let mut settings = config.app_settings(name);
    if let Some(text) = sidecar {
        let side_path = path.with_extension("toml");
        settings = sidecar_settings(text, &side_path, config)
            .map_err(|e| LoadFailure::new(&side_path, e.line, e.message, hash))?;
    }
    // The proof that the app never changes state that outlives a decision
    // lets it share the snapshot's probe objects, and (unless memoisation
    // is off or the app drew randomness while loading) memoises it.
    let proof = crate::openmix::purity::analyse(source);
    let code = AppCode {
        name: name.to_string(),
        path: path.to_path_buf(),
        source: Arc::from(source),
        version,
        budget: settings.budget,
        setup: None,
        shared_data: proof.is_ok(),
        providers: settings.providers.clone().into(),
    };
    if let Some(entry) = quarantine.and_then(|q| q.check(name, hash)) {
        tracing::warn!(app = name, reason = %entry.reason, "app version is quarantined; serving its fallback");
        return Ok(LoadedApp {
            code,
            settings,
            meta: AppMeta::default(),
            declared: Arc::from([]),
            loaded_at: SystemTime::now(),
            sidecar: sidecar.map(str::to_string),
            hash,
            quarantine: Some(entry),
            memo: None,
            memo_off: Some("quarantined".into()),
            load_error: None,
            runaway: Default::default(),
            error_logged: Default::default(),
        });
    }
    let (_, meta) =
        AppInstance::load(&code, data, None).map_err(|e| fail(e.line(), e.to_string()))?;
    let random_at_load = crate::openmix::host::take_random_at_load();
    let memo_off = if !config.memoise {
        Some("memoisation is off (server.memoise)".to_string())
    } else if random_at_load {
        Some("its top level or init calls Math.random".to_string())
    } else {
        proof.err().map(|e| e.to_string())
    };
    match &memo_off {
        None => tracing::debug!(
            app = name,
            "app proven stateless: its decisions are memoised"
        ),
        Some(why) => tracing::debug!(app = name, reason = %why, "app decisions are not memoised"),
    }
    for expected in &settings.providers {
        if !meta.providers.contains(expected) {
            tracing::warn!(app = name, provider = %expected, "sidecar expects a provider the app does not declare with requireProvider");
        }
    }
    Ok(LoadedApp {
        declared: crate::openmix::engine::declared_providers(&meta, &settings.providers),
        code,
        settings,
        meta,
        loaded_at: SystemTime::now(),
        sidecar: sidecar.map(str::to_string),
        hash,
        quarantine: None,
        memo: memo_off.is_none().then(|| Arc::new(Memo::new())),
        memo_off,
        load_error: None,
        runaway: Default::default(),
        error_logged: Default::default(),
    })
}

/// App name for a path: the file stem of a `.js` file, when it is a valid
/// DNS label (so it can be answered as `<name>.<zone>`).
pub fn app_name(path: &Path) -> Option<String> {
    if path.extension()? != "js" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let ok = !stem.is_empty()
        && stem.len() <= 63
        && !stem.starts_with('.')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| stem.to_ascii_lowercase())
}

/// The registry: the published [`AppSet`] and what is needed to reload it.
pub struct AppRegistry {
    dir: PathBuf,
    config: ArcSwap<Config>,
    data: Arc<ArcSwap<DataSnapshot>>,
    current: ArcSwap<AppSet>,
    next_version: AtomicU64,
    reloads: AtomicU64,
    quarantine: Option<Arc<crate::engine::quarantine::Quarantine>>,
    slots: Option<Arc<crate::engine::quarantine::Slots>>,
    retrying: std::sync::atomic::AtomicBool,
    /// One reload at a time (watcher, retry thread, API, SIGHUP).
    reload_lock: std::sync::Mutex<()>,
    /// Loader slots held by loader threads still running.
    loader_slots: Arc<LoaderSlots>,
    /// What to do when abandoned loads hold every loader slot (the server
    /// restarts the serving process).
    on_loader_cap: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// The start of the error of a load refused because abandoned loads hold
/// every loader slot (retried later).
const LOADER_BUSY: &str = "not loaded yet: the loader is at its cap of abandoned loads";

/// Whether a failed load is retried although its file did not change: it
/// ran out of time (a busy machine), or the loader was at its cap.
fn retryable(e: &LoadFailure) -> bool {
    e.message.contains("time budget") || e.message.starts_with(LOADER_BUSY)
}

/// Which loader slots ([`crate::engine::quarantine::LOADER_SLOT`] onwards) a
/// loader thread holds, as a bit mask.
#[derive(Default)]
struct LoaderSlots(AtomicU64);

impl LoaderSlots {
    /// A free loader slot, now held; none when every one is.
    fn take(&self) -> Option<usize> {
        let mut held = self.0.load(Ordering::Acquire);
        loop {
            let i = (0..crate::engine::quarantine::LOADER_SLOTS).find(|i| held & (1 << i) == 0)?;
            match self.0.compare_exchange(
                held,
                held | (1 << i),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(crate::engine::quarantine::LOADER_SLOT + i),
                Err(now) => held = now,
            }
        }
    }

    /// Releases `slot`.
    fn free(&self, slot: usize) {
        let i = slot - crate::engine::quarantine::LOADER_SLOT;
        self.0.fetch_and(!(1 << i), Ordering::AcqRel);
    }
}

impl AppRegistry {
    /// Loads every app in the configured apps directory. A missing
    /// directory is an error; a broken app is recorded, not fatal.
    pub fn open(
        config: Config,
        data: Arc<ArcSwap<DataSnapshot>>,
        quarantine: Option<Arc<crate::engine::quarantine::Quarantine>>,
        slots: Option<Arc<crate::engine::quarantine::Slots>>,
    ) -> Result<Arc<AppRegistry>, NoAppsDir> {
        let dir = config.apps_dir.clone();
        if !dir.is_dir() {
            return Err(NoAppsDir(dir));
        }
        let reg = Arc::new(AppRegistry {
            dir,
            config: ArcSwap::from_pointee(config),
            data,
            current: ArcSwap::from_pointee(AppSet::default()),
            next_version: AtomicU64::new(1),
            reloads: AtomicU64::new(0),
            quarantine,
            slots,
            retrying: std::sync::atomic::AtomicBool::new(false),
            reload_lock: std::sync::Mutex::new(()),
            loader_slots: Arc::new(LoaderSlots::default()),
            on_loader_cap: std::sync::OnceLock::new(),
        });
        reg.reload();
        Ok(reg)
    }

    /// The published set (lock-free).
    pub fn snapshot(&self) -> Arc<AppSet> {
        self.current.load_full()
    }

    /// The serving apps, without cloning the set: what the DNS query path
    /// holds while it plans an answer.
    pub fn current(&self) -> arc_swap::Guard<Arc<AppSet>> {
        self.current.load()
    }

    /// One published app.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedApp>> {
        self.current.load().apps.get(name).cloned()
    }

    /// Sets what happens when abandoned loads still running hold every
    /// loader slot: the server restarts the serving process, whose
    /// successor quarantines those apps (their loads ran past the load
    /// budget). Without it, such a load fails and is retried later.
    pub fn on_loader_cap(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_loader_cap.set(f);
    }

    /// The current data snapshot (what apps are built and decide with).
    pub fn data(&self) -> Arc<DataSnapshot> {
        self.data.load_full()
    }

    /// The apps directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of reloads that changed the set.
    pub fn reload_count(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Replaces the configuration (SIGHUP) and reloads every app with it.
    pub fn set_config(&self, config: Config) {
        self.config.store(Arc::new(config));
        self.reload_with(true);
    }

    /// Rescans the directory and publishes what changed.
    pub fn reload(&self) {
        self.reload_with(false);
    }

    /// Retries the unchanged files whose last load ran out of time (a busy
    /// machine); everything else as [`Self::reload`].
    fn retry_timeouts(&self) {
        let _one = self.reload_lock.lock();
        self.retrying.store(true, Ordering::Relaxed);
        self.reload_inner(false);
        self.retrying.store(false, Ordering::Relaxed);
    }

    fn reload_with(&self, force: bool) {
        let _one = self.reload_lock.lock();
        self.reload_inner(force);
    }

    fn reload_inner(&self, force: bool) {
        let config = self.config.load_full();
        let data = self.data.load_full();
        let old = self.current.load_full();
        let mut next = AppSet {
            apps: BTreeMap::new(),
            errors: old.errors.clone(),
        };
        let mut changed = force;
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let p = e.path();
                    if let Some(name) = app_name(&p)
                        && p.is_file()
                    {
                        files.insert(name, p);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read apps directory; keeping current apps");
                return;
            }
        }
        for (name, path) in &files {
            let source = match std::fs::read_to_string(path) {
                Ok(s) => s,
                Err(e) => {
                    // Vanished between listing and reading: the next event handles it.
                    tracing::debug!(file = %path.display(), error = %e, "cannot read app file");
                    if let Some(prev) = old.apps.get(name) {
                        next.apps.insert(name.clone(), prev.clone());
                    }
                    continue;
                }
            };
            // A sidecar that is there but cannot be read fails the load: serving
            // the app with the configuration's settings instead would hide it.
            let (sidecar, unreadable) = match crate::config::read_sidecar(path) {
                Ok(text) => (text, None),
                Err(e) => (None, Some(e)),
            };
            // A quarantine an operator lifted loads the same file again.
            let lifted = old.apps.get(name).is_some_and(|prev| {
                prev.quarantine.is_some()
                    && self
                        .quarantine
                        .as_ref()
                        .is_some_and(|q| !q.holds(name, prev.hash))
            });
            if let Some(prev) = old.apps.get(name)
                && !force
                && !lifted
                && unreadable.is_none()
                && prev.load_error.is_none()
                && *prev.code.source == *source
                && prev.sidecar == sidecar
            {
                next.apps.insert(name.clone(), prev.clone());
                if next
                    .errors
                    .get(name)
                    .is_some_and(|e| e.file == *path || e.file == path.with_extension("toml"))
                {
                    // The file is back to the serving version: the error is stale.
                    next.errors.remove(name);
                    changed = true;
                }
                continue;
            }
            // An unreadable sidecar's failure is keyed by its error, so that it
            // is reported once, not confused with a failure of the source alone.
            let hash = match &unreadable {
                None => crate::engine::quarantine::version_hash(&source, sidecar.as_deref()),
                Some(e) => crate::engine::quarantine::version_hash(&source, Some(&e.to_string())),
            };
            // An unchanged file that failed would fail the same way again:
            // do not run its init again (it would slow every other edit).
            // Only the retry thread retries loads that ran out of time.
            let retry = self.retrying.load(Ordering::Relaxed);
            if !force
                && let Some(e) = old.errors.get(name)
                && e.hash == hash
                && !(retry && retryable(e))
            {
                if let Some(prev) = old.apps.get(name) {
                    next.apps.insert(name.clone(), prev.clone());
                }
                continue;
            }
            let version = self.next_version.fetch_add(1, Ordering::Relaxed);
            let loaded = match &unreadable {
                Some(e) => Err(LoadFailure::new(
                    &e.path,
                    None,
                    format!("cannot read: {}", e.source),
                    hash,
                )),
                None => self.load_bounded(
                    name,
                    path,
                    &source,
                    sidecar.as_deref(),
                    &config,
                    &data,
                    version,
                    hash,
                ),
            };
            match loaded {
                Ok(app) => {
                    tracing::info!(app = %name, version, providers = ?app.meta.providers, "app loaded");
                    next.apps.insert(name.clone(), Arc::new(app));
                    next.errors.remove(name);
                    changed = true;
                }
                Err(fail) => {
                    let same = old
                        .errors
                        .get(name)
                        .is_some_and(|e| e.message == fail.message && e.line == fail.line);
                    let serving = old.apps.get(name).is_some_and(|p| p.load_error.is_none());
                    if !same {
                        changed = true;
                        match &unreadable {
                            Some(e) => {
                                tracing::warn!(app = %name, file = %e.path.display(), error = %e.source, serving, "cannot read the app's sidecar: the app fails to load");
                            }
                            None if serving => {
                                tracing::warn!(app = %name, error = %fail, "app failed to load; previous version keeps serving");
                            }
                            None => {
                                tracing::warn!(app = %name, error = %fail, "app failed to load and has no version that loaded; its names get its fallback");
                            }
                        }
                    }
                    match old.apps.get(name) {
                        Some(prev) if prev.load_error.is_none() => {
                            next.apps.insert(name.clone(), prev.clone());
                        }
                        _ => {
                            // Nothing ever loaded: publish the settings alone,
                            // so the app's names get its fallback.
                            let entry = LoadedApp::unloadable(
                                name,
                                path,
                                &source,
                                sidecar.as_deref(),
                                &config,
                                version,
                                &fail,
                            );
                            next.apps.insert(name.clone(), Arc::new(entry));
                            changed = true;
                        }
                    }
                    if !same {
                        next.errors.insert(name.clone(), fail);
                    }
                }
            }
        }
        for name in old.apps.keys() {
            if !files.contains_key(name) {
                tracing::info!(app = %name, "app removed");
                changed = true;
            }
        }
        next.errors.retain(|name, _| files.contains_key(name));
        if next.errors.len() != old.errors.len() {
            changed = true;
        }
        if changed {
            self.current.store(Arc::new(next));
            self.reloads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Loads one app on a thread of its own, waiting at most a few load
    /// budgets: a top level or `init` that escapes the budget (a callback
    /// loop the loop limit cannot see, a ReDoS) must not block the loader
    /// and with it every later edit. An abandoned load's thread is moved to
    /// `SCHED_IDLE` and left to finish.
    ///
    /// The loader thread records the app in a loader slot of its own for as
    /// long as it runs the app, abandoned or not, so that a crash it causes
    /// later still names the app (and the next process does not load it
    /// again, crash-looping). Abandoned loads still running are capped by
    /// the loader slots: when they hold every one, the server restarts the
    /// serving process ([`Self::on_loader_cap`]) and its successor
    /// quarantines their apps.
    #[allow(clippy::too_many_arguments)]
    fn load_bounded(
        &self,
        name: &str,
        path: &Path,
        source: &str,
        sidecar: Option<&str>,
        config: &Arc<Config>,
        data: &Arc<DataSnapshot>,
        version: u64,
        hash: u64,
    ) -> Result<LoadedApp, LoadFailure> {
        let Some(slot) = self.loader_slots.take() else {
            tracing::error!(
                abandoned = crate::engine::quarantine::LOADER_SLOTS,
                "abandoned app loads still running hold every loader slot"
            );
            if let Some(restart) = self.on_loader_cap.get() {
                restart();
            }
            return Err(LoadFailure::new(
                path,
                None,
                format!(
                    "{LOADER_BUSY}: {} abandoned loads are still running",
                    crate::engine::quarantine::LOADER_SLOTS
                ),
                hash,
            ));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let limit = config.budget.load * 4 + Duration::from_millis(500);
        let (n, p, src, side, cfg, d, q) = (
            name.to_string(),
            path.to_path_buf(),
            source.to_string(),
            sidecar.map(str::to_string),
            config.clone(),
            data.clone(),
            self.quarantine.clone(),
        );
        let (slots, loader_slots, budget) = (
            self.slots.clone(),
            self.loader_slots.clone(),
            config.budget.load,
        );
        let spawned = std::thread::Builder::new()
            .name(format!("app-load-{name}"))
            .stack_size(crate::openmix::guards::JS_STACK_SIZE)
            .spawn(move || {
                // Loading runs the app's top level and init: record it in
                // this thread's slot, so a crash here quarantines the app.
                if let Some(s) = &slots {
                    s.enter(slot, &n, hash, budget);
                }
                // SAFETY: gettid has no preconditions.
                let _ = tx.send(Err(unsafe { libc::gettid() }));
                let r = load_app_checked(
                    &n,
                    &p,
                    &src,
                    side.as_deref(),
                    &cfg,
                    &d,
                    version,
                    q.as_deref(),
                );
                crate::openmix::runtime::clear();
                if let Some(s) = &slots {
                    s.leave(slot);
                }
                loader_slots.free(slot);
                let _ = tx.send(Ok(r));
            });
        if let Err(e) = spawned {
            self.loader_slots.free(slot);
            return Err(LoadFailure::new(
                path,
                None,
                format!("cannot start a loader thread: {e}"),
                hash,
            ));
        }
        let tid = match rx.recv_timeout(limit) {
            Ok(Err(tid)) => tid,
            Ok(Ok(r)) => return r,
            Err(_) => 0,
        };
        match rx.recv_timeout(limit) {
            Ok(Ok(r)) => r,
            _ => {
                super::priority::lower_priority(tid);
                Err(LoadFailure::new(
                    path,
                    None,
                    format!(
                        "load did not finish within {} ms (a runaway top level or init); abandoned",
                        limit.as_millis()
                    ),
                    hash,
                ))
            }
        }
    }

    /// Watches the apps directory and reloads after each burst of changes
    /// (300 ms debounce). Returns the guard that keeps watching.
    pub fn watch(self: &Arc<Self>) -> Result<AppWatcher, WatchError> {
        let weak = Arc::downgrade(self);
        let mut debouncer = new_debouncer(
            Duration::from_millis(300),
            None,
            move |res: DebounceEventResult| {
                let Some(reg) = weak.upgrade() else { return };
                match res {
                    Ok(events) => {
                        // notify 8 also reports file opens (our own reads):
                        // react only to what changes content or names.
                        let relevant = events.iter().any(|e| {
                            matches!(
                                e.kind,
                                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                            ) && e.paths.iter().any(|p| {
                                matches!(
                                    p.extension().and_then(|x| x.to_str()),
                                    Some("js" | "toml")
                                )
                            })
                        });
                        if relevant {
                            reg.reload();
                        }
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(error = %e, "apps watcher error");
                        }
                    }
                }
            },
        )
        .map_err(|error| WatchError {
            dir: self.dir.clone(),
            error,
        })?;
        debouncer
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|error| WatchError {
                dir: self.dir.clone(),
                error,
            })?;
        // A save between the first scan and the watch starting would be
        // missed: scan once more now that the watch is on.
        self.reload();
        // A load that ran out of time (a busy machine) is retried: the
        // file did not change, so no event would ever retry it.
        let weak = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("apps-retry".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    let Some(reg) = weak.upgrade() else { return };
                    if reg.current.load().errors.values().any(retryable) {
                        reg.retry_timeouts();
                    }
                }
            });
        Ok(AppWatcher {
            _debouncer: Box::new(debouncer),
        })
    }
}

/// The configured apps directory is not a directory.
#[derive(Debug, thiserror::Error)]
#[error("apps directory {} does not exist", .0.display())]
pub struct NoAppsDir(pub PathBuf);

/// Why the apps directory cannot be watched for changes.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {error}", dir.display())]
pub struct WatchError {
    /// The apps directory.
    pub dir: PathBuf,
    /// What the file watcher reported.
    pub error: notify::Error,
}

/// Keeps the apps directory watched while alive.
pub struct AppWatcher {
    _debouncer: Box<dyn std::any::Any + Send>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arc_swap::ArcSwap;

    use super::AppRegistry;
    use crate::config::{Config, Overrides};
    use crate::openmix::DataSnapshot;

    const APP: &str = "function onRequest(q, r) { r.respondEmpty(); }";

    fn open(dir: &std::path::Path) -> Arc<AppRegistry> {
        let mut config = Config::load(None, &Overrides::default()).unwrap();
        config.apps_dir = dir.to_path_buf();
        let data = Arc::new(ArcSwap::from_pointee(DataSnapshot::default()));
        AppRegistry::open(config, data, None, None).unwrap()
    }

    #[test]
    fn an_unreadable_sidecar_fails_the_load_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("first.js"), APP).unwrap();
        // A directory where the sidecar goes: reading it fails, and not
        // with NotFound.
        let side = dir.path().join("first.toml");
        std::fs::create_dir(&side).unwrap();
        let reg = open(dir.path());
        let set = reg.snapshot();
        let app = set
            .apps
            .get("first")
            .expect("an entry carrying the settings");
        assert!(!app.runnable());
        let error = app.load_error.as_deref().expect("a load error");
        assert!(
            error.starts_with(&format!("{}: cannot read: ", side.display())),
            "{error}"
        );
        let failure = set.errors.get("first").expect("a recorded failure");
        assert_eq!(failure.file, side);
        assert_eq!(failure.to_string(), error);

        // A version that loaded keeps serving, and the failure is reported.
        std::fs::remove_dir(&side).unwrap();
        reg.reload();
        let set = reg.snapshot();
        assert!(set.apps["first"].runnable() && !set.errors.contains_key("first"));
        std::fs::create_dir(&side).unwrap();
        reg.reload();
        let set = reg.snapshot();
        assert!(
            set.apps["first"].runnable(),
            "the loaded version keeps serving"
        );
        assert_eq!(set.errors.get("first").map(|f| &f.file), Some(&side));
        // Reported once: a rescan finds the same failure and publishes nothing.
        let reloads = reg.reload_count();
        reg.reload();
        assert_eq!(reg.reload_count(), reloads);
    }
}
