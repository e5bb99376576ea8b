//! JS worker threads: where decisions run for the servers.
//!
//! Why a pool and not inline on the DNS reactor threads: a decision may
//! take up to its time budget (5 ms by default), and an app can escape the
//! budget inside a native callback (shared/notes/js-budget.md). Run inline,
//! such a call would stall every query queued behind it on that reactor.
//! Here the reactors only parse, look up and encode; decisions go through
//! one shared queue to `n` threads, each keeping its own boa contexts
//! (contexts are `!Send`). A slow app holds one worker while the others
//! keep draining the queue, and the waiting query is answered from the
//! app's fallback once the hard limit passes.
//!
//! The watchdog answers a waiting query from the app's fallback once its
//! decision has run for the hard limit, counted from when a worker took it
//! (building the app's instance included), and retires a worker whose call
//! runs on past its own, longer limit (the hard limit, plus the load budget
//! while it builds an instance): a fresh thread takes its place on the
//! queue and the stuck one is left to finish (its CPU cannot be
//! reclaimed). Past a cap of retired threads the serving process exits,
//! the supervisor starts a new one, and the app that was in flight is
//! quarantined ([`crate::engine::quarantine`]).
//!
//! So that building an instance is rarely on a query's path, each worker
//! builds every runnable app when it starts and after each reload, and
//! rebuilds an instance its call poisoned right after answering (unless the
//! app is backing off after runaways, [`crate::engine::backoff::Runaway`]). A panic
//! in a call is caught: the query gets the fallback and a fresh worker
//! replaces the thread, whose engine state cannot be trusted any more.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use tokio::sync::oneshot;

use crate::engine::apps::{AppRegistry, LoadedApp};
use crate::engine::decision_log::{DecisionLog, Logged};
use crate::engine::quarantine::Slots;
use crate::engine::shadow::Shadows;
use crate::engine::steer::{self, Steered};
use crate::metrics::{Counters, Frontend};
use crate::openmix::{AppError, DataSnapshot, Phase, Request, runtime};

/// Most decisions waiting for a worker; past this, queries get the fallback.
const QUEUE_DEPTH: usize = 8192;

/// Threads retired within a minute before the serving process restarts.
pub const RETIRED_CAP: u64 = 8;

// The decide variant carries the whole request; jobs are moved, not copied,
// and boxing would add an allocation per decision.
#[allow(clippy::large_enum_variant)]
enum Job {
    Decide {
        app: Arc<LoadedApp>,
        request: Request,
        data: Arc<DataSnapshot>,
        zone_ttl: u32,
        queued: Instant,
        reply: oneshot::Sender<Steered>,
        /// Set for a decision being explained ([`Workers::explain`]): it
        /// runs through [`steer::explain`], which changes no server state,
        /// and what it learnt goes here (before the answer).
        explain: Option<oneshot::Sender<steer::Insight>>,
    },
    Ping(oneshot::Sender<()>),
}

/// The query a worker is deciding, so the watchdog can answer it from the
/// fallback the moment it retires the worker.
struct Waiting {
    reply: oneshot::Sender<Steered>,
    app: Arc<LoadedApp>,
    ttl: u32,
    /// When (ms since the pool started) the watchdog answers it.
    answer_at: u64,
}

/// One worker thread's state, watched by the watchdog.
struct Worker {
    /// Milliseconds since the pool started when the current call began; 0 idle.
    busy_since: AtomicU64,
    /// Hard limit of the current call, in ms: past it the worker is retired.
    limit_ms: AtomicU64,
    /// When (ms since the pool started) the waiting query is answered from
    /// the fallback if the call has not answered it; 0: no query waits.
    /// (A hint for the watchdog's sleep; [`Waiting::answer_at`] decides.)
    answer_at: AtomicU64,
    retired: AtomicBool,
    app: Mutex<String>,
    pending: Mutex<Option<Waiting>>,
    /// Kernel thread id, to lower a retired thread's priority.
    tid: std::sync::atomic::AtomicI32,
    /// In-flight slot index.
    slot: usize,
}

impl Worker {
    /// Retired by the watchdog and still inside the call it was stuck in.
    fn is_stuck(&self) -> bool {
        self.retired.load(Ordering::Acquire) && self.busy_since.load(Ordering::Acquire) != 0
    }

    /// Retired and finished: nothing refers to its thread or slot any more.
    fn is_gone(&self) -> bool {
        self.retired.load(Ordering::Acquire) && !self.is_stuck()
    }
}

/// Why [`Workers::ping`] found no worker picking up work.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// The job queue is full or closed.
    #[error("queue full or closed")]
    Queue,
    /// No worker answered in time.
    #[error("no worker answered within {limit_ms} ms")]
    NoAnswer {
        /// The time allowed, in ms.
        limit_ms: u128,
    },
}

/// The pool of JS worker threads.
pub struct Workers {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    hard_limit: Duration,
    overloaded: AtomicU64,
    late: AtomicU64,
    retired: AtomicU64,
    panics: AtomicU64,
    apps: Option<Arc<AppRegistry>>,
    slots: Option<Arc<Slots>>,
    /// Where decision times are recorded.
    counters: Arc<Counters>,
    /// Where sampled decisions, fallbacks and failures are logged.
    log: Option<Arc<DecisionLog>>,
    workers: Mutex<Vec<Arc<Worker>>>,
    /// Threads retired so far, by the app they were stuck in.
    retired_by_app: Mutex<std::collections::BTreeMap<String, u64>>,
    /// When recent retirements happened (the cap counts the last minute).
    recent_retirements: Mutex<std::collections::VecDeque<Instant>>,
    /// The slot (plus one) of the worker building reloaded apps now, 0
    /// when none: one worker at a time builds them, so an app with a slow
    /// top level stalls one worker while the others keep answering.
    warming: AtomicUsize,
    epoch: Instant,
    /// Candidates deciding beside live apps ([`super::shadow`]).
    shadows: Arc<Shadows>,
}

impl Workers {
    /// Starts `n` worker threads and the watchdog. A decision not answered
    /// within `hard_limit` is answered from the app's fallback, and its
    /// thread is retired. Instances of apps removed from `apps` are dropped
    /// after each reload; `slots` records what each worker runs; decision
    /// times go to `counters`, logged decisions to `log`.
    pub fn start(
        n: usize,
        hard_limit: Duration,
        apps: Option<Arc<AppRegistry>>,
        slots: Option<Arc<Slots>>,
        counters: Arc<Counters>,
        log: Option<Arc<DecisionLog>>,
    ) -> Arc<Workers> {
        let (tx, rx) = bounded::<Job>(QUEUE_DEPTH);
        let pool = Arc::new(Workers {
            tx,
            rx,
            hard_limit,
            overloaded: AtomicU64::new(0),
            late: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            apps,
            slots,
            counters,
            log,
            workers: Mutex::new(Vec::new()),
            retired_by_app: Mutex::new(std::collections::BTreeMap::new()),
            recent_retirements: Mutex::new(std::collections::VecDeque::new()),
            warming: AtomicUsize::new(0),
            epoch: Instant::now(),
            shadows: Shadows::start(),
        });
        for _ in 0..n.max(1) {
            pool.spawn_worker();
        }
        let watched = Arc::downgrade(&pool);
        let _ = std::thread::Builder::new()
            .name("js-watchdog".into())
            .spawn(move || {
                while let Some(pool) = watched.upgrade() {
                    pool.watch();
                    let wake = pool.next_wake();
                    drop(pool);
                    std::thread::sleep(wake);
                }
            });
        pool
    }

    /// The lowest in-flight slot no worker holds, retired ones still in
    /// their call included: a reused slot would clear a stuck thread's
    /// busy mark and let its app escape quarantine after a crash.
    fn free_slot(&self) -> Option<usize> {
        let held: Vec<usize> = self
            .workers
            .lock()
            .map(|w| w.iter().map(|x| x.slot).collect())
            .unwrap_or_default();
        (0..crate::engine::quarantine::LOADER_SLOT).find(|i| !held.contains(i))
    }

    /// Marks the slots of workers that are not stuck idle, so that only the
    /// apps of stuck calls are quarantined by the next process. Called
    /// before the process exits, by a restart or a graceful stop.
    pub fn release_healthy_slots(&self) {
        if let (Some(slots), Ok(all)) = (&self.slots, self.workers.lock()) {
            for x in all.iter().filter(|x| !x.retired.load(Ordering::Acquire)) {
                slots.leave(x.slot);
            }
        }
    }

    /// Marks every in-flight slot idle, stuck threads' included: for a
    /// graceful stop, which crashed nothing.
    pub fn release_all_slots(&self) {
        if let Some(slots) = &self.slots {
            slots.leave_all();
        }
    }

    /// Retired threads still running their call.
    fn stuck_count(&self) -> u64 {
        self.workers
            .lock()
            .map(|w| w.iter().filter(|x| x.is_stuck()).count() as u64)
            .unwrap_or(0)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn spawn_worker(self: &Arc<Self>) {
        let Some(slot) = self.free_slot() else {
            // Every slot is held by a live or stuck worker: the retirement
            // cap restarts the process long before this.
            tracing::error!(
                "no free in-flight slot for a new JS worker; restarting the serving process"
            );
            self.release_healthy_slots();
            std::process::exit(70);
        };
        let me = Arc::new(Worker {
            busy_since: AtomicU64::new(0),
            limit_ms: AtomicU64::new(0),
            answer_at: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            app: Mutex::new(String::new()),
            pending: Mutex::new(None),
            tid: std::sync::atomic::AtomicI32::new(0),
            slot,
        });
        if let Ok(mut w) = self.workers.lock() {
            w.push(me.clone());
        }
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("js-worker-{slot}"))
            .stack_size(crate::openmix::guards::JS_STACK_SIZE)
            .spawn(move || pool.work(&me, slot));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start JS worker thread");
        }
    }

    fn work(self: &Arc<Self>, me: &Arc<Worker>, slot: usize) {
        // SAFETY: gettid has no preconditions.
        me.tid.store(unsafe { libc::gettid() }, Ordering::Release);
        let mut seen_reloads = 0;
        loop {
            if me.retired.load(Ordering::Acquire) {
                tracing::warn!(slot, "retired JS worker finished its call and exits");
                break;
            }
            if let Some(apps) = &self.apps {
                let reloads = apps.reload_count();
                // A new worker (at start, or replacing a retired one)
                // builds every app at once; reloads are built by one
                // worker at a time.
                let starting = seen_reloads == 0;
                if reloads != seen_reloads && (starting || self.take_warming(slot)) {
                    seen_reloads = reloads;
                    runtime::retain_apps(&|name| apps.get(name).is_some());
                    let data = apps.data();
                    let mut healthy = true;
                    for app in apps.snapshot().apps.values() {
                        if !self.warm(me, slot, app, &data) {
                            healthy = false;
                            break;
                        }
                        if me.retired.load(Ordering::Acquire) {
                            break;
                        }
                    }
                    let _ = self.warming.compare_exchange(
                        slot + 1,
                        0,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    if !healthy {
                        return;
                    }
                    continue;
                }
            }
            // Idle workers wake up now and then to build reloaded apps.
            let job = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match job {
                Job::Decide {
                    app,
                    request,
                    data,
                    zone_ttl,
                    queued,
                    reply,
                    explain,
                } => {
                    let ttl = app.settings.ttl.unwrap_or(zone_ttl);
                    let explaining = explain.is_some();
                    let frontend = frontend_of(&request);
                    let start = self.now_ms();
                    let answer_at = start + self.limit_for(&app).as_millis() as u64;
                    if let Ok(mut p) = me.pending.lock() {
                        *p = Some(Waiting {
                            reply,
                            app: app.clone(),
                            ttl,
                            answer_at,
                        });
                    }
                    me.answer_at.store(answer_at, Ordering::Release);
                    let decided = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        self.run_job(me, slot, &app, request, &data, zone_ttl, start, explain)
                    }));
                    me.answer_at.store(0, Ordering::Release);
                    // An explained decision is not one the server made.
                    if !explaining {
                        self.counters.decision_time(
                            &app.code.name,
                            frontend,
                            queued.elapsed(),
                            false,
                        );
                    }
                    let out = match decided {
                        Ok(out) => out,
                        Err(panic) => {
                            self.panicked(me, slot, &app, &*panic);
                            return;
                        }
                    };
                    // The watchdog may have answered already (and retired us).
                    if let Some(p) = me.pending.lock().ok().and_then(|mut p| p.take()) {
                        let _ = p.reply.send(out);
                    }
                    // An instance the call poisoned is rebuilt now, off the
                    // next query's path (not while the app backs off).
                    if !me.retired.load(Ordering::Acquire)
                        && !app.runaway.backing_off()
                        && !self.warm(me, slot, &app, &data)
                    {
                        return;
                    }
                }
                Job::Ping(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        runtime::clear();
    }

    /// Whether the worker in `slot` may build reloaded apps now: no other
    /// worker is building them, or the one that was has been retired (a
    /// stuck thread never gives the turn back).
    fn take_warming(&self, slot: usize) -> bool {
        let me = slot + 1;
        match self
            .warming
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(holder) if holder == me => true,
            Err(holder) => {
                let abandoned = self.workers.lock().is_ok_and(|w| {
                    !w.iter()
                        .any(|x| x.slot + 1 == holder && !x.retired.load(Ordering::Acquire))
                });
                abandoned
                    && self
                        .warming
                        .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            }
        }
    }

    /// One decision on this worker: builds `app`'s instance if this thread
    /// has none (watched with the load budget on top of the hard limit),
    /// then runs it (watched with its own limit); a decision being
    /// explained runs through [`steer::explain`] and sends what it learnt
    /// to `explain`.
    #[allow(clippy::too_many_arguments)]
    fn run_job(
        &self,
        me: &Worker,
        slot: usize,
        app: &Arc<LoadedApp>,
        request: Request,
        data: &Arc<DataSnapshot>,
        zone_ttl: u32,
        start: u64,
        explain: Option<oneshot::Sender<steer::Insight>>,
    ) -> Steered {
        let mut limit = self.limit_for(app);
        if app.runnable() && !runtime::is_current(&app.code) {
            let budget = app.settings.budget.load;
            self.busy(me, slot, app, budget, limit + budget, start);
            if let Ok(true) = runtime::warm(&app.code, data) {
                // A fresh instance's first call may compile more.
                limit += app.settings.budget.first_call();
            }
        }
        let budget = app.settings.budget.decision;
        self.busy(me, slot, app, budget, limit, self.now_ms());
        let default_ttl = steer::default_ttl(app, zone_ttl);
        if let Some(tx) = explain {
            // Explaining changes nothing the server keeps: not logged.
            let (out, insight) = steer::explain(app, request, data, default_ttl);
            self.idle(me, slot);
            let _ = tx.send(insight);
            return out;
        }
        // Sampled before the call, so only a sampled call records its
        // reads and draws. The log needs the request of any fallback too:
        // a copy is two reference counts and a short string, next to a
        // call of microseconds.
        let sampled = self.log.as_ref().is_some_and(|l| l.sample());
        let kept = self.log.as_ref().map(|_| request.clone());
        let started = Instant::now();
        let ran = steer::run_traced(app, request, data, default_ttl, sampled);
        self.idle(me, slot);
        if let (Some(log), Some(request)) = (&self.log, kept)
            && DecisionLog::wants(sampled, &ran.steered.outcome)
        {
            log.record(Logged {
                app,
                request,
                data,
                steered: &ran.steered,
                inline: false,
                reads: ran.trace.map(|t| t.reads).unwrap_or_default(),
                draws: ran.draws,
                default_ttl,
                took: started.elapsed(),
            });
        }
        ran.steered
    }

    /// Marks this worker busy with `app` since `since` (ms on the pool's
    /// clock): the in-flight slot that survives a crash records the app
    /// and its `budget`, and the watchdog answers from the fallback once
    /// `limit` has passed.
    fn busy(
        &self,
        me: &Worker,
        slot: usize,
        app: &LoadedApp,
        budget: Duration,
        limit: Duration,
        since: u64,
    ) {
        if let Ok(mut a) = me.app.lock() {
            a.clone_from(&app.code.name);
        }
        if let Some(s) = &self.slots {
            s.enter(slot, &app.code.name, app.hash, budget);
        }
        me.limit_ms
            .store(limit.as_millis() as u64, Ordering::Release);
        me.busy_since.store(since, Ordering::Release);
    }

    /// The worker's call or build has returned.
    fn idle(&self, me: &Worker, slot: usize) {
        me.busy_since.store(0, Ordering::Release);
        if let Some(s) = &self.slots {
            s.leave(slot);
        }
    }

    /// Builds this thread's instance of `app` if it is runnable and has
    /// none, watched like a call (load budget on top of the hard limit).
    /// False when it panicked (the thread must end).
    fn warm(
        self: &Arc<Self>,
        me: &Arc<Worker>,
        slot: usize,
        app: &Arc<LoadedApp>,
        data: &Arc<DataSnapshot>,
    ) -> bool {
        if !app.runnable() || app.runaway.backing_off() || runtime::is_current(&app.code) {
            return true;
        }
        let budget = app.settings.budget.load;
        let limit = self.limit_for(app) + budget;
        self.busy(me, slot, app, budget, limit, self.now_ms());
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| runtime::warm(&app.code, data)));
        self.idle(me, slot);
        match built {
            Ok(_) => true,
            Err(panic) => {
                self.panicked(me, slot, app, &*panic);
                false
            }
        }
    }

    /// A call on this worker panicked: its query gets the fallback, the
    /// thread is retired and replaced, and (its engine state no longer to
    /// be trusted) ends without running apps again.
    fn panicked(
        self: &Arc<Self>,
        me: &Arc<Worker>,
        slot: usize,
        app: &Arc<LoadedApp>,
        panic: &(dyn std::any::Any + Send),
    ) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        tracing::error!(app = %app.code.name, slot, panic = %message,
            "a JS worker panicked; its query gets the fallback and a fresh worker replaces it");
        me.busy_since.store(0, Ordering::Release);
        me.retired.store(true, Ordering::Release);
        if let Some(s) = &self.slots {
            s.leave(slot);
        }
        self.panics.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switchyard_worker_panics_total", "app" => app.code.name.clone())
            .increment(1);
        app.runaway.strike();
        if let Some(p) = me.pending.lock().ok().and_then(|mut p| p.take()) {
            let err = AppError::Panic { message };
            let _ = p.reply.send(steer::fallback(&p.app, err, p.ttl));
        }
        if let Ok(mut all) = self.workers.lock() {
            all.retain(|x| !x.is_gone());
        }
        self.spawn_worker();
    }

    /// The hard limit of one decision of `app`: the pool's, or more for an
    /// app whose own budget is longer.
    fn limit_for(&self, app: &LoadedApp) -> Duration {
        self.hard_limit.max(app.settings.budget.decision * 2)
    }

    /// How long the watchdog sleeps: 10 ms, or until the next query must
    /// be answered if that is sooner, so answers are not up to 10 ms late.
    fn next_wake(&self) -> Duration {
        let now = self.now_ms();
        let soonest = self
            .workers
            .lock()
            .ok()
            .and_then(|w| {
                w.iter()
                    .map(|x| x.answer_at.load(Ordering::Acquire))
                    .filter(|at| *at != 0)
                    .min()
            })
            .map_or(10, |at| at.saturating_sub(now).clamp(1, 10));
        Duration::from_millis(soonest)
    }

    /// One watchdog pass: answer queries whose decision has run for the
    /// hard limit, and retire workers stuck past their own limit.
    fn watch(self: &Arc<Self>) {
        let now = self.now_ms();
        let all: Vec<Arc<Worker>> = self.workers.lock().map(|w| w.clone()).unwrap_or_default();
        for w in &all {
            let at = w.answer_at.load(Ordering::Acquire);
            if at == 0 || now < at {
                continue;
            }
            // Under the lock: the worker may have moved on to a new query.
            let due = w.pending.lock().ok().and_then(|mut p| {
                if p.as_ref().is_some_and(|p| p.answer_at <= now) {
                    p.take()
                } else {
                    None
                }
            });
            if let Some(p) = &due {
                // Unless a new query's deadline replaced it meanwhile.
                let _ = w.answer_at.compare_exchange(
                    p.answer_at,
                    0,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            if let Some(p) = due {
                p.app.runaway.strike();
                let err = AppError::Watchdog {
                    limit_ms: self.limit_for(&p.app).as_millis() as u64,
                };
                let _ = p.reply.send(steer::fallback(&p.app, err, p.ttl));
                self.late.fetch_add(1, Ordering::Relaxed);
            }
        }
        let stuck: Vec<Arc<Worker>> = match self.workers.lock() {
            Ok(w) => w
                .iter()
                .filter(|w| !w.retired.load(Ordering::Acquire))
                .filter(|w| {
                    let since = w.busy_since.load(Ordering::Acquire);
                    since != 0 && now.saturating_sub(since) > w.limit_ms.load(Ordering::Acquire)
                })
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for w in stuck {
            w.retired.store(true, Ordering::Release);
            let limit = w.limit_ms.load(Ordering::Acquire);
            // Answer the waiting query from the fallback at once.
            if let Some(p) = w.pending.lock().ok().and_then(|mut p| p.take()) {
                let err = AppError::Watchdog { limit_ms: limit };
                let _ = p.reply.send(steer::fallback(&p.app, err, p.ttl));
                self.late.fetch_add(1, Ordering::Relaxed);
            }
            self.retired.fetch_add(1, Ordering::Relaxed);
            let n = match self.recent_retirements.lock() {
                Ok(mut r) => {
                    let now = Instant::now();
                    r.push_back(now);
                    while r
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
                    {
                        r.pop_front();
                    }
                    r.len() as u64
                }
                Err(_) => 0,
            };
            // Retirements in the last minute, or threads still stuck (slow
            // retirements must not pile up without limit either).
            let n = n.max(self.stuck_count());
            let app = w.app.lock().map(|a| a.clone()).unwrap_or_default();
            metrics::counter!("switchyard_workers_retired_total", "app" => app.clone())
                .increment(1);
            if let Ok(mut by_app) = self.retired_by_app.lock() {
                *by_app.entry(app.clone()).or_default() += 1;
            }
            // The stuck thread keeps its CPU until its call ends: let it run
            // only when nothing else wants the CPU, so healthy workers are
            // not starved by it.
            super::priority::lower_priority(w.tid.load(Ordering::Acquire));
            if n > RETIRED_CAP {
                tracing::error!(retired_last_minute = n, app = %app, "too many stuck JS workers; restarting the serving process");
                // Only stuck calls count as in flight: bystanders on healthy
                // workers must not be quarantined with the culprit.
                self.release_healthy_slots();
                // The stuck calls' slots stay marked busy: the next process
                // quarantines their apps.
                std::process::exit(70);
            }
            tracing::warn!(app = %app, limit_ms = limit, retired = n, "JS worker stuck past the hard limit; retiring it and starting a fresh one");
            // Forget retired threads that have finished first, so their
            // slots are free for the new worker.
            if let Ok(mut all) = self.workers.lock() {
                all.retain(|x| !x.is_gone());
            }
            self.spawn_worker();
        }
    }

    /// Decides for `request`: answered at once when [`Workers::decide_inline`]
    /// can, else on a worker.
    pub async fn decide(
        &self,
        app: Arc<LoadedApp>,
        request: Request,
        data: Arc<DataSnapshot>,
        zone_ttl: u32,
    ) -> Steered {
        if let Some(now) = self.decide_inline(&app, &request, &data, zone_ttl) {
            return now;
        }
        self.decide_on_worker(app, request, data, zone_ttl).await
    }

    /// The answer that needs no worker, on the calling thread
    /// ([`steer::without_running`]); a memo hit's time is recorded, and
    /// the hit counted. A shadow of the app gets the decision too (the
    /// snapshot is an `Arc` so that it can keep it).
    /// `None`: the app must run ([`Workers::decide_on_worker`]).
    pub fn decide_inline(
        &self,
        app: &LoadedApp,
        request: &Request,
        data: &Arc<DataSnapshot>,
        zone_ttl: u32,
    ) -> Option<Steered> {
        let started = std::time::Instant::now();
        let default_ttl = steer::default_ttl(app, zone_ttl);
        let answer = steer::without_running(app, request, data, default_ttl)?;
        // A memo hit is sampled like a call; the other answers given
        // without running (quarantined, not loaded, backing off) are all
        // logged.
        if let Some(log) = &self.log
            && DecisionLog::wants(
                answer.outcome == steer::Outcome::App && log.sample(),
                &answer.outcome,
            )
        {
            log.record(Logged {
                app,
                request: request.clone(),
                data,
                steered: &answer,
                inline: true,
                reads: Vec::new(),
                draws: Vec::new(),
                default_ttl,
                took: started.elapsed(),
            });
        }
        // An app's answer that needed no worker is a memo hit.
        if answer.outcome == steer::Outcome::App {
            self.counters.decision_time(
                &app.code.name,
                frontend_of(request),
                started.elapsed(),
                true,
            );
        }
        if let Some(chosen) = self.shadows.choose(app, request, data) {
            self.shadows.submit(chosen, &answer);
        }
        Some(answer)
    }

    /// The candidates deciding beside live apps.
    pub fn shadows(&self) -> &Arc<Shadows> {
        &self.shadows
    }

    /// Runs `app` for `request` on a worker (after [`Workers::decide_inline`]
    /// said it must) and waits for the answer (the app's fallback if none
    /// comes by the hard limit).
    pub async fn decide_on_worker(
        &self,
        app: Arc<LoadedApp>,
        request: Request,
        data: Arc<DataSnapshot>,
        zone_ttl: u32,
    ) -> Steered {
        // Chosen now, handed over once answered: the request moves to
        // the worker.
        let shadowed = self.shadows.choose(&app, &request, &data);
        let answer = self.submit(app, request, data, zone_ttl, None).await;
        if let Some(chosen) = shadowed {
            self.shadows.submit(chosen, &answer);
        }
        answer
    }

    /// Explains the decision for `request`: runs it on a worker through
    /// [`steer::explain`], under the same budgets, watchdog and hard limit
    /// as a real decision, but without changing what the server keeps (the
    /// memo, decision times, the backoff). The insight is empty when the
    /// watchdog or the queue answered instead of the app.
    pub async fn explain(
        &self,
        app: Arc<LoadedApp>,
        request: Request,
        data: Arc<DataSnapshot>,
        zone_ttl: u32,
    ) -> (Steered, steer::Insight) {
        let (tx, mut rx) = oneshot::channel();
        let steered = self.submit(app, request, data, zone_ttl, Some(tx)).await;
        // Sent before the answer, when the app's call returned at all.
        (steered, rx.try_recv().unwrap_or_default())
    }

    /// Queues one decision and waits for its answer.
    async fn submit(
        &self,
        app: Arc<LoadedApp>,
        request: Request,
        data: Arc<DataSnapshot>,
        zone_ttl: u32,
        explain: Option<oneshot::Sender<steer::Insight>>,
    ) -> Steered {
        let default_ttl = steer::default_ttl(&app, zone_ttl);
        let explaining = explain.is_some();
        let (reply, rx) = oneshot::channel();
        let job = Job::Decide {
            app: app.clone(),
            request,
            data,
            zone_ttl,
            queued: Instant::now(),
            reply,
            explain,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                let answer = steer::fallback(&app, AppError::Overloaded, default_ttl);
                if explaining {
                    return answer;
                }
                self.overloaded.fetch_add(1, Ordering::Relaxed);
                if let (Some(log), Job::Decide { request, data, .. }) = (&self.log, job) {
                    log.record(Logged {
                        app: &app,
                        request,
                        data: &data,
                        steered: &answer,
                        inline: false,
                        reads: Vec::new(),
                        draws: Vec::new(),
                        default_ttl,
                        took: Duration::ZERO,
                    });
                }
                return answer;
            }
        }
        // The watchdog answers a stuck call from the fallback at its hard
        // limit; this timeout is only the safety net behind it (a first call
        // on a worker may also compile the app, within the load budget).
        let net = self.limit_for(&app) + app.settings.budget.load + Duration::from_millis(50);
        match tokio::time::timeout(net, rx).await {
            Ok(Ok(out)) => out,
            _ => {
                if !explaining {
                    self.late.fetch_add(1, Ordering::Relaxed);
                }
                let err = AppError::Timeout {
                    phase: Phase::OnRequest,
                    budget_ms: net.as_millis() as u64,
                };
                steer::fallback(&app, err, default_ttl)
            }
        }
    }

    /// Checks that a worker picks up work: the round trip, or why not.
    pub async fn ping(&self, limit: Duration) -> Result<Duration, PingError> {
        let start = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job::Ping(reply))
            .map_err(|_| PingError::Queue)?;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(())) => Ok(start.elapsed()),
            _ => Err(PingError::NoAnswer {
                limit_ms: limit.as_millis(),
            }),
        }
    }

    /// Decisions refused because the queue was full.
    pub fn overloaded(&self) -> u64 {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Decisions answered from the fallback because no worker answered in time.
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// Worker threads retired by the watchdog.
    pub fn retired(&self) -> u64 {
        self.retired.load(Ordering::Relaxed)
    }

    /// Worker threads replaced after a panic in a call.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Worker threads retired by the watchdog, by app.
    pub fn retired_by_app(&self) -> std::collections::BTreeMap<String, u64> {
        self.retired_by_app
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// The front end `request` came through: an HTTP decision has no query
/// type ([`Request::query_type`]).
fn frontend_of(request: &Request) -> Frontend {
    if request.query_type.is_empty() {
        Frontend::Http
    } else {
        Frontend::Dns
    }
}
