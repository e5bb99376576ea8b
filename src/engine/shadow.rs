//! Shadow mode: a candidate version of an app decides beside the live one
//! on a share of its live decisions, and the differences go to a
//! [`Diff`], without ever touching an answer.
//!
//! Which live decisions are shadowed is chosen on the path that makes
//! them ([`super::Workers`]: memo hits on the DNS threads included), but
//! all that path does is one relaxed atomic load when no shadow is active
//! and, for a chosen decision, a clone of its request and a `try_send` to
//! a bounded queue. One thread of its own, at the lowest nice level, runs
//! the candidate on the same request and data snapshot under the app's
//! budgets; a full queue drops the job (counted) instead of waiting.
//!
//! The candidate never enters the memo, its decisions are not counted in
//! the decision metrics, and its failures strike no backoff and mark no
//! in-flight slot, so it can neither quarantine nor slow the live app. It
//! is keyed by the app's name, so a reload of the live app keeps it: it
//! compares with whatever version is live.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use serde::Serialize;

use crate::config::Config;
use crate::engine::apps::{LoadFailure, LoadedApp, load_app};
use crate::engine::diff::{Diff, Failure, Picked, Report, Summary};
use crate::engine::steer::{self, Steered};
use crate::openmix::{AppError, CallOptions, DataSnapshot, Request, runtime};

/// Most shadow decisions waiting for the shadow thread; past it they are
/// dropped (and counted).
const QUEUE_DEPTH: usize = 1024;

/// The share of live decisions a shadow takes when the operator names none.
pub const DEFAULT_PERCENT: f64 = 10.0;

/// Version numbers of candidates, far above the registry's: the shadow
/// thread keys its instances by app name and version, and a new candidate
/// must never be taken for an old one.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1 << 48);

/// One candidate running beside an app.
pub struct Shadow {
    /// The candidate, compiled and initialised as a new version would be,
    /// with its own (unused) memo dropped.
    candidate: LoadedApp,
    /// Share of live decisions taken, in millionths.
    per_million: u64,
    percent: f64,
    started: SystemTime,
    /// Live decisions seen (the sampling counter).
    seen: AtomicU64,
    decided: AtomicU64,
    dropped: AtomicU64,
    ended: AtomicBool,
    diff: Mutex<Diff>,
}

impl Shadow {
    /// Compiles `source` and runs its `init` as a new version of `live`
    /// would be loaded (its sidecar and budgets), on this thread: the
    /// error, with its line, when it does not load.
    pub fn load(
        live: &LoadedApp,
        source: &str,
        percent: f64,
        config: &Config,
        data: &Arc<DataSnapshot>,
    ) -> Result<Shadow, LoadFailure> {
        let name = &live.code.name;
        let path = Path::new("shadow").join(format!("{name}.js"));
        let version = NEXT_VERSION.fetch_add(1, Ordering::Relaxed);
        let mut candidate = load_app(
            name,
            &path,
            source,
            live.sidecar.as_deref(),
            config,
            data,
            version,
        )?;
        // The loader leaves this thread's instance behind.
        runtime::clear();
        candidate.memo = None;
        Ok(Shadow {
            candidate,
            per_million: (percent * 10_000.0).round().clamp(0.0, 1e6) as u64,
            percent,
            started: SystemTime::now(),
            seen: AtomicU64::new(0),
            decided: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            diff: Mutex::new(Diff::default()),
        })
    }

    /// Whether the next live decision is shadowed: spread evenly, so 10 %
    /// is one decision in ten, not bursts.
    fn take(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        let pm = self.per_million;
        (n + 1) * pm / 1_000_000 > n * pm / 1_000_000
    }

    /// What `GET /api/apps/{app}/shadow` shows.
    pub fn status(&self) -> Status {
        Status {
            active: !self.ended.load(Ordering::Relaxed),
            percent: self.percent,
            started_ms: self
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            candidate_hash: format!("{:016x}", self.candidate.hash),
            decided: self.decided.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            diff: self.diff.lock().map(|d| d.report()).ok(),
        }
    }

    /// Runs the candidate for one shadowed decision and records the pair.
    fn run(&self, job: Job) {
        let summary = Summary::of(&job.request);
        // One thread runs shadows: nothing else counts this up meanwhile.
        let id = self.decided.load(Ordering::Relaxed) + 1;
        let code = &self.candidate.code;
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime::decide(code, job.request, &job.data, CallOptions::default())
        }));
        let (result, panicked) = match called {
            Ok(r) => (r, false),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_string());
                (Err(AppError::Panic { message }), true)
            }
        };
        let (to, failure) = match result {
            Ok(out) => {
                let reason = out.decision.reason.clone().unwrap_or_default();
                (Picked::of_decision(&out.decision, &reason), None)
            }
            Err(e) => {
                let failure = Failure {
                    kind: e.kind().to_string(),
                    message: e.to_string(),
                };
                // The candidate's own fallback rules: what it would answer.
                (
                    Picked::of(&steer::fallback(&self.candidate, e, 0)),
                    Some(failure),
                )
            }
        };
        if let Ok(mut d) = self.diff.lock() {
            d.record(&id.to_string(), &summary, &job.live, &to, failure.as_ref());
        }
        // Counted once recorded, so a status never shows a decision its
        // diff lacks.
        self.decided.store(id, Ordering::Relaxed);
        if panicked {
            // This thread's engine state can no longer be trusted.
            std::panic::resume_unwind(Box::new("a shadow candidate panicked"));
        }
    }
}

/// The state of a shadow, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// False once ended.
    pub active: bool,
    /// Share of live decisions shadowed.
    pub percent: f64,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Hash of the candidate's source and the sidecar.
    pub candidate_hash: String,
    /// Shadow decisions run.
    pub decided: u64,
    /// Shadow decisions dropped because the queue was full.
    pub dropped: u64,
    /// What changes.
    pub diff: Option<Report>,
}

/// A shadowed live decision, waiting for the candidate.
struct Job {
    shadow: Arc<Shadow>,
    request: Request,
    data: Arc<DataSnapshot>,
    live: Picked,
}

/// A live decision chosen for the shadow: its request and snapshot, until
/// the live answer is known ([`Shadows::submit`]).
pub struct Chosen {
    shadow: Arc<Shadow>,
    request: Request,
    data: Arc<DataSnapshot>,
}

/// The active shadows (one per app at most) and the thread that runs them.
pub struct Shadows {
    /// Whether any shadow is active: all the live path reads when none is.
    any: AtomicBool,
    by_app: ArcSwap<BTreeMap<String, Arc<Shadow>>>,
    /// One change of the set at a time.
    changing: Mutex<()>,
    tx: Sender<Job>,
}

impl Shadows {
    /// No shadows yet, and the shadow thread waiting for some.
    pub fn start() -> Arc<Shadows> {
        let (tx, rx) = bounded(QUEUE_DEPTH);
        let shadows = Arc::new(Shadows {
            any: AtomicBool::new(false),
            by_app: ArcSwap::from_pointee(BTreeMap::new()),
            changing: Mutex::new(()),
            tx,
        });
        spawn_thread(Arc::downgrade(&shadows), rx);
        shadows
    }

    /// Starts `shadow` for its app, ending one already running.
    pub fn begin(&self, shadow: Shadow) -> Arc<Shadow> {
        let _one = self.changing.lock();
        let shadow = Arc::new(shadow);
        let mut next = (**self.by_app.load()).clone();
        if let Some(old) = next.insert(shadow.candidate.code.name.clone(), shadow.clone()) {
            old.ended.store(true, Ordering::Relaxed);
        }
        self.by_app.store(Arc::new(next));
        self.any.store(true, Ordering::Release);
        tracing::info!(app = %shadow.candidate.code.name, percent = shadow.percent,
            candidate = %format!("{:016x}", shadow.candidate.hash), "shadow started");
        shadow
    }

    /// Ends the shadow of `app`: its last status, `None` when it has none.
    pub fn end(&self, app: &str) -> Option<Status> {
        let _one = self.changing.lock();
        let mut next = (**self.by_app.load()).clone();
        let old = next.remove(app)?;
        old.ended.store(true, Ordering::Relaxed);
        self.any.store(!next.is_empty(), Ordering::Release);
        self.by_app.store(Arc::new(next));
        tracing::info!(
            app,
            decided = old.decided.load(Ordering::Relaxed),
            "shadow ended"
        );
        Some(old.status())
    }

    /// The shadow of `app`, if one runs.
    pub fn get(&self, app: &str) -> Option<Arc<Shadow>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.by_app.load().get(app).cloned()
    }

    /// Whether this live decision of `app` is shadowed: the request and
    /// snapshot to hand over once its answer is known. A single atomic
    /// load when no shadow is active.
    pub fn choose(
        &self,
        app: &LoadedApp,
        request: &Request,
        data: &Arc<DataSnapshot>,
    ) -> Option<Chosen> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let shadow = self.by_app.load().get(&app.code.name).cloned()?;
        shadow.take().then(|| Chosen {
            shadow,
            request: request.clone(),
            data: data.clone(),
        })
    }

    /// Hands a chosen decision, answered `live`, to the shadow thread;
    /// never waits (a full queue drops it).
    pub fn submit(&self, chosen: Chosen, live: &Steered) {
        let job = Job {
            live: Picked::of(live),
            shadow: chosen.shadow,
            request: chosen.request,
            data: chosen.data,
        };
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            self.tx.try_send(job)
        {
            job.shadow.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the shadow thread serving `rx`; after a candidate panicked, a
/// fresh one takes its place (the old one's engine state is dropped with
/// it).
fn spawn_thread(shadows: std::sync::Weak<Shadows>, rx: Receiver<Job>) {
    let spawned = std::thread::Builder::new()
        .name("js-shadow".into())
        .stack_size(crate::openmix::guards::JS_STACK_SIZE)
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            super::priority::lowest_nice(unsafe { libc::gettid() });
            loop {
                let job = match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        // Drop the instances of shadows that ended.
                        let Some(all) = shadows.upgrade() else { break };
                        let live = all.by_app.load();
                        runtime::retain_apps(&|name| live.contains_key(name));
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                if job.shadow.ended.load(Ordering::Relaxed) {
                    continue;
                }
                let shadow = job.shadow.clone();
                if std::panic::catch_unwind(AssertUnwindSafe(|| shadow.run(job))).is_err() {
                    tracing::error!(app = %shadow.candidate.code.name,
                        "a shadow candidate panicked; a fresh shadow thread replaces this one");
                    spawn_thread(shadows, rx);
                    return;
                }
            }
            runtime::clear();
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the shadow thread; shadows will drop every decision");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn live(source: &str) -> (LoadedApp, Config, Arc<DataSnapshot>) {
        let config = Config::load(None, &Overrides::default()).unwrap();
        let data = Arc::new(DataSnapshot::default());
        let app = load_app("app", Path::new("app.js"), source, None, &config, &data, 1).unwrap();
        (app, config, data)
    }

    #[test]
    fn sampling_spreads_the_share_evenly() {
        let (app, config, data) =
            live("function onRequest(q, r) { r.respond('a', 'a.example.net'); }");
        let s = Shadow::load(&app, &app.code.source, 10.0, &config, &data).unwrap();
        let taken: Vec<bool> = (0..20).map(|_| s.take()).collect();
        assert_eq!(taken.iter().filter(|t| **t).count(), 2);
        assert!(taken[9] && taken[19], "{taken:?}");
        let all = Shadow::load(&app, &app.code.source, 100.0, &config, &data).unwrap();
        assert!((0..5).all(|_| all.take()));
    }

    #[test]
    fn a_candidate_that_does_not_load_names_its_line() {
        let (app, config, data) =
            live("function onRequest(q, r) { r.respond('a', 'a.example.net'); }");
        let err = Shadow::load(&app, "var x = ;\n", 10.0, &config, &data)
            .err()
            .expect("a syntax error");
        assert_eq!(err.line, Some(1), "{err}");
    }
}
