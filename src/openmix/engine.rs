//! One app loaded in one boa `Context`, and the budgeted calls into it.
//!
//! boa cannot interrupt a script (shared/notes/js-budget.md), so every call
//! (top level, `init`, `onRequest`, `onFusion`) runs as a pre-parsed `Script`
//! through `evaluate_async_with_budget`, polled by hand: between slices the
//! host checks the deadline and this thread's allocation count and abandons
//! the call when either budget is spent. An abandoned call leaves frames on
//! the VM stack, so its instance is marked poisoned and rebuilt; a plain JS
//! error (including boa's `RuntimeLimits`) leaves the context usable.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use boa_engine::{Context, JsError, JsObject, JsString, JsValue, Script, Source};

use super::alloc::thread_net_bytes;
use super::budget::Budget;
use super::data::DataSnapshot;
use super::decision::Decision;
use super::host::{
    self, AppMeta, CONFIG_GLOBAL, CallState, FixtureRequest, InitState, REQUEST_GLOBAL,
    RESPONSE_GLOBAL, RecordedCall,
};
use super::request::Request;

/// Cost units per slice of `evaluate_async_with_budget` (boa charges 1–8
/// per opcode). Small, so that a doubling string concatenation (`s = s + s`,
/// about 15 units per step) is seen by the memory check after one or two
/// doublings, before it can reach an allocation that aborts the process.
const SLICE_BUDGET: u32 = 48;

/// The clock is read every this many slices; the memory check (a
/// thread-local read) runs after every slice.
const CLOCK_EVERY: u32 = 4;

/// An app's source at one version: what every thread compiles.
#[derive(Debug, Clone)]
pub struct AppCode {
    /// App name (file stem).
    pub name: String,
    /// File the source came from (used in error positions).
    pub path: PathBuf,
    /// JavaScript source.
    pub source: Arc<str>,
    /// Registry-wide version number; a thread rebuilds when it changes.
    pub version: u64,
    /// Budgets for calls into this app.
    pub budget: Budget,
    /// Fixture scripts run around the app source (tests).
    pub setup: Option<TestScripts>,
    /// The app is proven never to write to an object it did not create in
    /// the same function ([`super::purity`]), so the inner objects of
    /// `getProbe` results (`{avail: 99}` per provider) can be built once
    /// per data snapshot and shared by its decisions, frozen.
    pub shared_data: bool,
    /// The providers the app's settings list (sidecar `providers`): with
    /// those it requires, what it sees ([`super::ProviderScope`]).
    pub providers: Arc<[String]>,
}

/// The providers an app declared: those it required in `init`, in call
/// order, then those its settings list that it did not require.
pub fn declared_providers(meta: &AppMeta, settings: &[String]) -> Arc<[String]> {
    let mut all = meta.providers.clone();
    for p in settings {
        if !all.contains(p) {
            all.push(p.clone());
        }
    }
    all.into()
}

/// Scripts `switchyard test` runs around an app's source. Each is its own
/// script, so the app's own directives (a file-level `'use strict'`) and
/// line numbers are untouched.
#[derive(Debug, Clone, Default)]
pub struct TestScripts {
    /// Run before the app source, so its top level sees it (pins of
    /// `Math.random` and `Date`).
    pub before: Option<Arc<str>>,
    /// Run after the app source and before `init` (the fixture's `setup`).
    pub after: Option<Arc<str>>,
}

/// Which call into the app failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Evaluating the app's top level.
    Load,
    /// The fixture setup script.
    Setup,
    /// `init(config)`.
    Init,
    /// `onRequest(request, response)`.
    OnRequest,
    /// `onFusion(provider, data)`.
    OnFusion,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Load => "load",
            Phase::Setup => "setup",
            Phase::Init => "init",
            Phase::OnRequest => "onRequest",
            Phase::OnFusion => "onFusion",
        })
    }
}

/// Why a call into an app produced no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The source does not parse.
    #[error("syntax error: {message}")]
    Syntax {
        /// Message with file:line:column.
        message: String,
    },
    /// The app threw (or hit boa's loop/recursion limits).
    #[error("{phase} threw {message}")]
    Thrown {
        /// Where it threw.
        phase: Phase,
        /// The error and its position (file:line:column).
        message: String,
    },
    /// The call ran past its time budget.
    #[error("{phase} ran past its time budget of {budget_ms} ms")]
    Timeout {
        /// Which call.
        phase: Phase,
        /// The budget.
        budget_ms: u64,
    },
    /// The call allocated past its memory budget.
    #[error("{phase} allocated more than its memory budget of {budget_mb} MB")]
    Memory {
        /// Which call.
        phase: Phase,
        /// The budget.
        budget_mb: u64,
    },
    /// The call was still running at the worker's hard limit: the
    /// watchdog answered its query and retired the thread.
    #[error(
        "the call was still running at the hard limit of {limit_ms} ms; its worker was retired"
    )]
    Watchdog {
        /// The hard limit.
        limit_ms: u64,
    },
    /// No worker could take the decision: the queue was full.
    #[error("no JS worker could take the decision (queue full)")]
    Overloaded,
    /// The app's recent calls ran away (stopped by a budget or the
    /// watchdog); its queries get the fallback without running it until
    /// the backoff ends.
    #[error("the app's recent calls ran away; its fallback answers for {backoff_ms} ms")]
    Backoff {
        /// Length of the backoff.
        backoff_ms: u64,
    },
    /// The worker thread panicked during the call.
    #[error("the call panicked: {message}")]
    Panic {
        /// The panic message.
        message: String,
    },
    /// The app has no `onRequest` function.
    #[error("app defines no onRequest function")]
    NoOnRequest,
    /// `onRequest` returned without choosing anything.
    #[error("onRequest made no decision")]
    NoDecision,
    /// No version of the app ever loaded (its first version failed to
    /// compile or `init`): nothing can run, the fallback answers.
    #[error("the app has no version that loaded: {message}")]
    NotLoaded {
        /// The load error.
        message: String,
    },
}

impl AppError {
    /// A short label for counters: `error`, `timeout`, `memory`, `limits`,
    /// `watchdog`, `overloaded`, `backoff`, `panic`, `no_decision`,
    /// `not_loaded`.
    pub fn kind(&self) -> &'static str {
        match self {
            AppError::Timeout { .. } => "timeout",
            AppError::Watchdog { .. } => "watchdog",
            AppError::Overloaded => "overloaded",
            AppError::Backoff { .. } => "backoff",
            AppError::Panic { .. } => "panic",
            AppError::Memory { .. } => "memory",
            AppError::Thrown { message, .. } if message.starts_with("RuntimeLimit") => "limits",
            AppError::NoDecision => "no_decision",
            AppError::NotLoaded { .. } => "not_loaded",
            _ => "error",
        }
    }

    /// Whether the call was stopped mid-run (a budget, or the watchdog):
    /// the app ran away, as opposed to throwing or deciding nothing.
    pub fn ran_away(&self) -> bool {
        matches!(
            self,
            AppError::Timeout { .. } | AppError::Memory { .. } | AppError::Watchdog { .. }
        )
    }

    /// The first `file:line` position in the message, if any.
    pub fn line(&self) -> Option<u32> {
        let msg = match self {
            AppError::Syntax { message } | AppError::Thrown { message, .. } => message,
            _ => return None,
        };
        find_line(msg)
    }
}

/// Finds the line in an error message: `:LINE:COL` after a `.js` path
/// (runtime errors) or `at line N` (boa's syntax errors).
fn find_line(msg: &str) -> Option<u32> {
    let rest = match msg.find(".js:") {
        Some(idx) => &msg[idx + 4..],
        None => &msg[msg.find("at line ")? + 8..],
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Options for one `onRequest` call.
#[derive(Debug, Default)]
pub struct CallOptions {
    /// Record every response method call (for `switchyard test`).
    pub record: bool,
    /// Fixture values replacing the request's.
    pub fixture: Option<FixtureRequest>,
    /// Run `onRequest` without the time and memory checks (one plain
    /// evaluation): only for measuring what the budget costs
    /// (`benches/decide.rs`). A runaway would hang the thread.
    pub unbudgeted: bool,
    /// Record what the app reads, so the decision can be memoised.
    pub log_reads: bool,
    /// Record every value the app reads, in order, so the decision can be
    /// explained ([`super::trace`]); off, it costs one check per read.
    pub trace: bool,
    /// What `Math.random` answers: live draws (the default, at no cost),
    /// live draws recorded in [`CallOutcome::draws`], or the draws of a
    /// logged decision given back in order, so it can be decided again.
    pub random: RandomMode,
}

/// What `Math.random` answers during one call ([`CallOptions::random`]).
#[derive(Debug, Clone, Default)]
pub enum RandomMode {
    /// Live draws, not kept.
    #[default]
    Live,
    /// Live draws, kept in order in [`CallOutcome::draws`].
    Record,
    /// These draws, in order; past the end, live draws again, and
    /// [`CallOutcome::ran_out_of_draws`] says so.
    Replay(Arc<[f64]>),
}

/// The result of one successful `onRequest` call.
#[derive(Debug)]
pub struct CallOutcome {
    /// The decision.
    pub decision: Decision,
    /// Recorded response calls (empty unless asked for).
    pub calls: Vec<RecordedCall>,
    /// What the app read (when asked for).
    pub reads: Option<super::reads::ReadLog>,
    /// Every value the app read, in order (when asked for).
    pub trace: Option<super::trace::Trace>,
    /// The `Math.random` draws, in order ([`RandomMode::Record`]; empty
    /// otherwise).
    pub draws: Vec<f64>,
    /// [`RandomMode::Replay`] ran out of draws and drew live: the
    /// decision may differ from the logged one for that reason alone.
    pub ran_out_of_draws: bool,
}

enum Stop {
    Js(JsError),
    Timeout,
    Memory,
}

/// Runs `script` under the deadline and memory budget, polling boa's
/// budgeted evaluation by hand.
fn run_budgeted(
    script: &Script,
    ctx: &mut Context,
    deadline: Instant,
    memory: usize,
) -> Result<JsValue, Stop> {
    let start_bytes = thread_net_bytes();
    let fut = script.evaluate_async_with_budget(ctx, SLICE_BUDGET);
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(Waker::noop());
    let mut slices = 0u32;
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => return r.map_err(Stop::Js),
            Poll::Pending => {
                if thread_net_bytes().saturating_sub(start_bytes) > memory as isize {
                    return Err(Stop::Memory);
                }
                slices = slices.wrapping_add(1);
                if slices.is_multiple_of(CLOCK_EVERY) && Instant::now() >= deadline {
                    return Err(Stop::Timeout);
                }
            }
        }
    }
}

/// Turns a boa error into a one-line message with its position.
fn describe(err: &JsError, ctx: &mut Context) -> String {
    let mut text = err.to_string();
    // Opaque throws (`throw new Error('x')`) display as the object; prefer
    // "Name: message" when the value is an Error.
    if let Some(obj) = err.as_opaque().and_then(JsValue::as_object) {
        let name = obj.get(JsString::from("name"), ctx).ok();
        let message = obj.get(JsString::from("message"), ctx).ok();
        if let (Some(n), Some(m)) = (name, message)
            && let (Some(n), Some(m)) = (n.as_string(), m.as_string())
        {
            let pos = text
                .find("\n    at ")
                .map(|i| text[i..].to_string())
                .unwrap_or_default();
            text = format!(
                "{}: {}{}",
                n.to_std_string_escaped(),
                m.to_std_string_escaped(),
                pos
            );
        }
    }
    // Keep the first line and the innermost position in an app file;
    // positions inside our own call scripts (no path) are noise.
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or_default().to_string();
    for noise in [" (unknown at :", " (native)"] {
        if let Some(i) = first.find(noise) {
            first.truncate(i);
        }
    }
    match lines.find_map(|l| {
        l.trim()
            .strip_prefix("at ")
            .filter(|at| at.contains(".js:"))
    }) {
        Some(at) if !first.contains(".js:") => format!("{first} (at {at})"),
        _ => first,
    }
}

/// One app version compiled and initialised in its own context.
pub struct AppInstance {
    ctx: Context,
    /// App name: its endpoint, for `getData('weights')`.
    name: Arc<str>,
    version: u64,
    budget: Budget,
    meta: AppMeta,
    /// `meta.providers`, shared with every call's state.
    declared: Arc<[String]>,
    on_request: Script,
    on_fusion: Option<Script>,
    /// Fusion values this instance has been told about, with the snapshot version.
    fusion_seen: Option<(u64, Vec<(String, String)>)>,
    poisoned: bool,
    /// `onRequest` calls made so far; the first pays for compiling the
    /// app's functions and gets the load budget.
    calls: u64,
    /// `onFusion` calls made so far (the same rule).
    fusion_calls: u64,
    /// Shared `getProbe` inner objects, when the app may share them.
    probes: Option<host::ProbeCache>,
}

impl AppInstance {
    /// Builds a context, evaluates the app, runs `init` and prepares the
    /// per-call scripts. `providers_override` replaces `config.getProviders()`.
    pub fn load(
        code: &AppCode,
        data: &Arc<DataSnapshot>,
        providers_override: Option<serde_json::Value>,
    ) -> Result<(AppInstance, AppMeta), AppError> {
        let mut ctx = super::guards::new_context(&code.budget);
        host::take_random_at_load();
        {
            let limits = ctx.runtime_limits_mut();
            limits.set_loop_iteration_limit(1_000_000);
            limits.set_recursion_limit(400);
            limits.set_stack_size_limit(64 * 1024);
        }
        install_host(&mut ctx, &code.budget);

        let deadline = Instant::now() + code.budget.load;
        let tests = code.setup.clone().unwrap_or_default();
        let scripts = [
            (
                tests.before,
                code.path.with_extension("pins.js"),
                Phase::Setup,
            ),
            (Some(code.source.clone()), code.path.clone(), Phase::Load),
            (
                tests.after,
                code.path.with_extension("setup.js"),
                Phase::Setup,
            ),
        ];
        for (js, path, phase) in scripts {
            let Some(js) = js else { continue };
            super::guards::check_source(&js).map_err(|message| AppError::Syntax {
                message: format!("{}: {message}", path.display()),
            })?;
            let src = Source::from_bytes(js.as_bytes()).with_path(&path);
            let script = Script::parse(src, None, &mut ctx).map_err(|e| AppError::Syntax {
                message: describe(&e, &mut ctx),
            })?;
            run_phase(&script, &mut ctx, deadline, code.budget, phase)?;
        }

        let has = |ctx: &mut Context, name: &str| -> bool {
            ctx.global_object()
                .get(JsString::from(name), ctx)
                .map(|v| v.is_callable())
                .unwrap_or(false)
        };
        if !has(&mut ctx, "onRequest") {
            return Err(AppError::NoOnRequest);
        }
        host::begin_init(InitState {
            meta: AppMeta::default(),
            data: data.clone(),
            assigned: code.providers.clone(),
            providers_override,
        });
        let init_result = if has(&mut ctx, "init") {
            let s = internal_script(&mut ctx, &format!("init({CONFIG_GLOBAL});"));
            run_phase(
                &s,
                &mut ctx,
                Instant::now() + code.budget.load,
                code.budget,
                Phase::Init,
            )
        } else {
            Ok(())
        };
        let meta = host::end_init().map(|s| s.meta).unwrap_or_default();
        init_result?;

        let on_request = internal_script(
            &mut ctx,
            &format!("onRequest({REQUEST_GLOBAL}, {RESPONSE_GLOBAL});"),
        );
        let on_fusion = has(&mut ctx, "onFusion").then(|| {
            internal_script(
                &mut ctx,
                "onFusion(__switchyard_fusion[0], __switchyard_fusion[1]);",
            )
        });
        let instance = AppInstance {
            ctx,
            name: code.name.as_str().into(),
            version: code.version,
            budget: code.budget,
            declared: declared_providers(&meta, &code.providers),
            meta: meta.clone(),
            on_request,
            on_fusion,
            fusion_seen: None,
            poisoned: false,
            calls: 0,
            fusion_calls: 0,
            probes: code.shared_data.then(host::ProbeCache::default),
        };
        Ok((instance, meta))
    }

    /// The version this instance was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// What `init` declared.
    pub fn meta(&self) -> &AppMeta {
        &self.meta
    }

    /// True once a call was abandoned: the context must not be used again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Delivers changed Fusion values to `onFusion`, then runs `onRequest`.
    pub fn decide(
        &mut self,
        request: Request,
        data: &Arc<DataSnapshot>,
        options: CallOptions,
    ) -> Result<CallOutcome, AppError> {
        if self.on_fusion.is_some() {
            self.deliver_fusion(data)?;
        }
        let extra = match &options.fixture {
            Some(fx) => self.add_fixture_fields(fx)?,
            None => Vec::new(),
        };
        host::begin_call(CallState {
            request,
            app: self.name.clone(),
            data: data.clone(),
            decision: Decision::default(),
            proximity: self.meta.proximity,
            declared: self.declared.clone(),
            calls: options.record.then(Vec::new),
            reads: (options.log_reads && options.fixture.is_none())
                .then(super::reads::ReadLog::default),
            trace: (options.trace && options.fixture.is_none()).then(super::trace::Trace::default),
            fixture: options.fixture,
            probes: self.probes.take(),
            random: host::RandomState::new(options.random),
        });
        let deadline = Instant::now() + self.call_budget();
        self.calls += 1;
        let result = if options.unbudgeted {
            self.on_request.evaluate(&mut self.ctx).map_err(Stop::Js)
        } else {
            run_budgeted(
                &self.on_request,
                &mut self.ctx,
                deadline,
                self.budget.memory,
            )
        };
        let state = host::end_call();
        self.remove_fixture_fields(&extra);
        let (decision, calls, reads, trace, random) = match state {
            Some(s) => {
                self.probes = s.probes;
                (
                    s.decision,
                    s.calls.unwrap_or_default(),
                    s.reads,
                    s.trace,
                    s.random,
                )
            }
            None => (Decision::default(), Vec::new(), None, None, None),
        };
        self.check(result, Phase::OnRequest)?;
        if !decision.is_decided() {
            return Err(AppError::NoDecision);
        }
        let (draws, ran_out_of_draws) = random.map(host::RandomState::finish).unwrap_or_default();
        Ok(CallOutcome {
            decision,
            calls,
            reads,
            trace,
            draws,
            ran_out_of_draws,
        })
    }

    /// Sets the fields of a fixture request that the Openmix API does not
    /// define as plain properties of the `request` object (openmixapplib's
    /// own tests feed such fields); returns their names, for
    /// [`Self::remove_fixture_fields`].
    fn add_fixture_fields(&mut self, fx: &FixtureRequest) -> Result<Vec<JsString>, AppError> {
        let mut names = Vec::new();
        let mut extra = fx
            .fields
            .iter()
            .filter(|(k, _)| !host::REQUEST_FIELDS.contains(&k.as_str()))
            .peekable();
        if extra.peek().is_none() {
            return Ok(names);
        }
        let request = self.request_object();
        for (name, value) in extra {
            let key = JsString::from(name.as_str());
            let set = super::fixture_value(value, &mut self.ctx)
                .and_then(|v| request.create_data_property_or_throw(key.clone(), v, &mut self.ctx));
            set.map_err(|e| AppError::Thrown {
                phase: Phase::OnRequest,
                message: format!("request field \"{name}\": {}", describe(&e, &mut self.ctx)),
            })?;
            names.push(key);
        }
        Ok(names)
    }

    /// Takes the fields [`Self::add_fixture_fields`] set off the `request`
    /// object again, so the next request of a fixture starts clean.
    fn remove_fixture_fields(&mut self, names: &[JsString]) {
        if names.is_empty() {
            return;
        }
        let request = self.request_object();
        for name in names {
            let _ = request.delete_property_or_throw(name.clone(), &mut self.ctx);
        }
    }

    /// The reusable `request` object every call is given.
    fn request_object(&mut self) -> JsObject {
        let global = self.ctx.global_object();
        global
            .get(JsString::from(REQUEST_GLOBAL), &mut self.ctx)
            .ok()
            .and_then(|v| v.as_object())
            .unwrap_or_else(|| global.clone())
    }

    /// Runs `onFusion` for each Fusion value that changed since this
    /// instance last saw the data. Each context keeps its own JS state, so
    /// each is told on its own next decision: what a decision sees is the
    /// same as if it had been told the moment the value changed. An app
    /// error in `onFusion` is logged and the decision goes on (the value
    /// counts as delivered); a call stopped by its budget poisons the
    /// instance and fails the decision, as it must be rebuilt, and the value
    /// is skipped by every instance from then on
    /// ([`super::fusion_skip`]).
    fn deliver_fusion(&mut self, data: &Arc<DataSnapshot>) -> Result<(), AppError> {
        if matches!(&self.fusion_seen, Some((v, _)) if *v == data.version) {
            return Ok(());
        }
        let Some(script) = self.on_fusion.clone() else {
            return Ok(());
        };
        let previous = self.fusion_seen.take().map(|(_, f)| f).unwrap_or_default();
        // Only the providers the app sees, as `getData('fusion')` shows them.
        let declared = self.declared.clone();
        let scope = data.scope(&self.name, &declared);
        for (alias, body) in &data.fusion {
            if !scope.sees(alias)
                || previous.iter().any(|(a, b)| a == alias && b == body)
                || super::fusion_skip::contains(&self.name, self.version, alias, body)
            {
                continue;
            }
            let args = boa_engine::object::builtins::JsArray::from_iter(
                [
                    JsValue::from(JsString::from(alias.as_str())),
                    JsValue::from(JsString::from(body.as_str())),
                ],
                &mut self.ctx,
            );
            let global = self.ctx.global_object();
            let _ = global.set(
                JsString::from("__switchyard_fusion"),
                args,
                false,
                &mut self.ctx,
            );
            let budget = if self.fusion_calls == 0 {
                self.budget.first_call()
            } else {
                self.budget.decision
            };
            let deadline = Instant::now() + budget;
            self.fusion_calls += 1;
            let r = run_budgeted(&script, &mut self.ctx, deadline, self.budget.memory);
            match self.check(r, Phase::OnFusion) {
                Ok(()) => {}
                Err(e) => {
                    metrics::counter!("switchyard_on_fusion_errors_total", "app" => self.name.to_string())
                        .increment(1);
                    if self.poisoned {
                        // Counted as delivered, so that no rebuilt
                        // instance runs it again (see fusion_skip).
                        super::fusion_skip::record(&self.name, self.version, alias, body);
                        tracing::warn!(app = %self.name, version = self.version, provider = %alias, error = %e,
                            "onFusion ran away; this value is skipped from now on");
                        return Err(e);
                    }
                    tracing::warn!(version = self.version, provider = %alias, error = %e,
                        "onFusion failed; the decision goes on without it");
                }
            }
        }
        self.fusion_seen = Some((data.version, data.fusion.clone()));
        Ok(())
    }

    /// The time budget of the next call: the first call on a fresh
    /// instance compiles the app's functions, so it gets the load budget.
    fn call_budget(&self) -> Duration {
        if self.calls == 0 {
            self.budget.first_call()
        } else {
            self.budget.decision
        }
    }

    fn check(&mut self, r: Result<JsValue, Stop>, phase: Phase) -> Result<(), AppError> {
        match r {
            Ok(_) => Ok(()),
            Err(Stop::Js(e)) => Err(AppError::Thrown {
                phase,
                message: describe(&e, &mut self.ctx),
            }),
            Err(Stop::Timeout) => {
                self.poisoned = true;
                Err(AppError::Timeout {
                    phase,
                    budget_ms: self.budget.decision.as_millis() as u64,
                })
            }
            Err(Stop::Memory) => {
                self.poisoned = true;
                Err(AppError::Memory {
                    phase,
                    budget_mb: (self.budget.memory >> 20) as u64,
                })
            }
        }
    }
}

fn run_phase(
    script: &Script,
    ctx: &mut Context,
    deadline: Instant,
    budget: Budget,
    phase: Phase,
) -> Result<(), AppError> {
    match run_budgeted(script, ctx, deadline, budget.memory) {
        Ok(_) => Ok(()),
        Err(Stop::Js(e)) => Err(AppError::Thrown {
            phase,
            message: describe(&e, ctx),
        }),
        Err(Stop::Timeout) => Err(AppError::Timeout {
            phase,
            budget_ms: budget.load.as_millis() as u64,
        }),
        Err(Stop::Memory) => Err(AppError::Memory {
            phase,
            budget_mb: (budget.memory >> 20) as u64,
        }),
    }
}

/// Parses a trusted one-line script of our own.
fn internal_script(ctx: &mut Context, code: &str) -> Script {
    // Our own fixed source always parses; a failure here is a bug, reported
    // as a script that throws rather than a panic.
    match Script::parse(Source::from_bytes(code.as_bytes()), None, ctx) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "internal script failed to parse");
            Script::parse(
                Source::from_bytes(b"throw new Error('internal')"),
                None,
                ctx,
            )
            .expect("constant script parses")
        }
    }
}

/// Installs the host objects, `console` and the prelude's guards.
fn install_host(ctx: &mut Context, budget: &Budget) {
    let request = host::build_request(ctx);
    let response = host::build_response(ctx);
    let config = host::build_config(ctx);
    let console = host::build_console(ctx);
    let _ = host::register_global(ctx, REQUEST_GLOBAL, request);
    let _ = host::register_global(ctx, RESPONSE_GLOBAL, response);
    let _ = host::register_global(ctx, CONFIG_GLOBAL, config);
    let _ = ctx.register_global_property(
        JsString::from("console"),
        console,
        boa_engine::property::Attribute::WRITABLE | boa_engine::property::Attribute::CONFIGURABLE,
    );
    let _ = ctx.register_global_property(
        JsString::from("__switchyard_fusion"),
        JsValue::undefined(),
        boa_engine::property::Attribute::WRITABLE,
    );
    super::guards::install(ctx, budget);
    watch_math_random(ctx);
}

/// Wraps `Math.random` so that a call is noticed: a decision that reads
/// randomness must not be memoised; a logged one records its draws, and
/// one decided again gets them back ([`RandomMode`]).
fn watch_math_random(ctx: &mut Context) {
    let math = ctx
        .global_object()
        .get(JsString::from("Math"), ctx)
        .ok()
        .and_then(|m| m.as_object());
    let Some(math) = math else { return };
    let Some(original) = math
        .get(JsString::from("random"), ctx)
        .ok()
        .and_then(|f| f.as_object())
    else {
        return;
    };
    let f = boa_engine::NativeFunction::from_copy_closure_with_captures(
        |this, args, original: &JsObject, ctx| {
            if let Some(v) = host::mark_random() {
                return Ok(JsValue::from(v));
            }
            let v = original.call(this, args, ctx)?;
            if let Some(n) = v.as_number() {
                host::record_draw(n);
            }
            Ok(v)
        },
        original,
    );
    let wrapped = boa_engine::object::FunctionObjectBuilder::new(ctx.realm(), f)
        .name(JsString::from("random"))
        .length(0)
        .build();
    let _ = math.set(JsString::from("random"), wrapped, false, ctx);
}

#[cfg(test)]
mod tests {
    use super::find_line;

    #[test]
    fn finds_line() {
        assert_eq!(find_line("TypeError: x at apps/a.js:12:5"), Some(12));
        assert_eq!(find_line("no position"), None);
        assert_eq!(
            find_line("SyntaxError: expected ',' at line 3, col 1"),
            Some(3)
        );
    }
}
