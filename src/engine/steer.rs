//! One decision with the product's rules around it: run the app, and when
//! it fails, serve its fallback (reason `fallback`) or report failure.
//!
//! Every front end (`decide`, DNS, HTTP) goes through here, so the rules are
//! written once: [`without_running`] gives the answers that need no call
//! (quarantined, never loaded, memoised, backing off) and [`run`] makes the
//! call. The JS workers run only what [`without_running`] left, so a memo
//! miss is looked up once. TTL is `setTTL`, else the app's default, else
//! the zone's; an app error is logged once per app version, with its line.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::apps::LoadedApp;
use crate::openmix::memo::Inputs;
use crate::openmix::{
    AppError, CallOptions, DataSnapshot, Decision, RandomMode, Request, Trace, runtime,
};

/// The reason code of a fallback answer.
pub const FALLBACK_REASON: &str = "fallback";

/// How a decision came about.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The app decided.
    App,
    /// The app failed; its configured fallback answered.
    Fallback(AppError),
    /// The app failed and has no fallback: the front end reports an error
    /// (SERVFAIL, HTTP 503).
    Failed(AppError),
    /// The app version is quarantined (it was running when the serving
    /// process died); its fallback answered without running it.
    Quarantined,
}

/// How an answer came about, as explain, the decision log and replay
/// report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum How {
    /// A memoised decision of the app (it did not run).
    Memo,
    /// The app ran and decided.
    Ran,
    /// The app failed; its fallback answered.
    Fallback {
        /// The failure's kind (`error`, `timeout`, `memory`, …).
        error: String,
        /// What went wrong.
        message: String,
    },
    /// The app failed and had no fallback: SERVFAIL or HTTP 503.
    Failed {
        /// The failure's kind.
        error: String,
        /// What went wrong.
        message: String,
    },
    /// The app version is quarantined; its fallback answered.
    Quarantined,
    /// The app is backing off after runaways; its fallback answered.
    BackingOff,
}

impl How {
    /// How `outcome` came about; `memo`: an app's answer that did not run
    /// it.
    pub fn of(outcome: &Outcome, memo: bool) -> How {
        let err = |e: &AppError| (e.kind().to_string(), e.to_string());
        match outcome {
            Outcome::App if memo => How::Memo,
            Outcome::App => How::Ran,
            Outcome::Fallback(AppError::Backoff { .. }) => How::BackingOff,
            Outcome::Fallback(e) => {
                let (error, message) = err(e);
                How::Fallback { error, message }
            }
            Outcome::Failed(e) => {
                let (error, message) = err(e);
                How::Failed { error, message }
            }
            Outcome::Quarantined => How::Quarantined,
        }
    }
}

/// A decision ready for a front end.
#[derive(Debug, Clone)]
pub struct Steered {
    /// What to answer: shared with the memo on a hit (a hit is not a copy
    /// of the answers).
    pub decision: Arc<Decision>,
    /// Effective TTL.
    pub ttl: u32,
    /// Effective reason code (empty when the app set none).
    pub reason: String,
    /// App, fallback or failure.
    pub outcome: Outcome,
}

impl Steered {
    /// This decision of `app`, for [`crate::metrics::Counters::decision`].
    pub fn counted<'a>(&'a self, app: &'a LoadedApp) -> crate::metrics::Decided<'a> {
        let failure = match &self.outcome {
            Outcome::Fallback(e) | Outcome::Failed(e) => Some(e.kind()),
            _ => None,
        };
        crate::metrics::Decided {
            app: &app.code.name,
            version: app.code.version,
            provider: self.decision.provider.as_deref().unwrap_or(""),
            reason: &self.reason,
            failure,
        }
    }
}

/// Logs an app error once per app version.
fn log_once(app: &LoadedApp, err: &AppError) {
    if app.error_logged.first() {
        tracing::warn!(app = %app.code.name, version = app.code.version, kind = err.kind(), error = %err,
            "app failed; serving its fallback (logged once per app version)");
    }
}

/// The TTL of an app's answers that set none: the app's `ttl`, else the
/// zone's.
pub fn default_ttl(app: &LoadedApp, zone_ttl: u32) -> u32 {
    app.settings.ttl.unwrap_or(zone_ttl)
}

/// Decides for `request` on the calling thread: [`without_running`], else
/// [`run`]. For one-off decisions (`switchyard decide`, tests); the
/// servers split the two across the JS workers ([`super::Workers`]).
pub fn decide(
    app: &LoadedApp,
    request: Request,
    data: &Arc<DataSnapshot>,
    zone_ttl: u32,
) -> Steered {
    let default_ttl = default_ttl(app, zone_ttl);
    without_running(app, &request, data, default_ttl)
        .unwrap_or_else(|| run(app, request, data, default_ttl))
}

/// The answer that needs no call of the app: a quarantined or never-loaded
/// app's fallback, a memoised decision, or the fallback of an app backing
/// off after runaways. `None`: the app must run ([`run`]).
pub fn without_running(
    app: &LoadedApp,
    request: &Request,
    data: &DataSnapshot,
    default_ttl: u32,
) -> Option<Steered> {
    if app.quarantine.is_some() {
        return Some(quarantined(app, default_ttl));
    }
    if let Some(message) = &app.load_error {
        return Some(not_loaded(app, message, default_ttl));
    }
    memoised(app, request, data, default_ttl).or_else(|| backing_off(app, default_ttl))
}

/// Runs `app` for `request` (after [`without_running`] said it must) and
/// applies the fallback rules; a decision is stored in the memo.
pub fn run(
    app: &LoadedApp,
    request: Request,
    data: &Arc<DataSnapshot>,
    default_ttl: u32,
) -> Steered {
    run_traced(app, request, data, default_ttl, false).steered
}

/// A decision [`run_traced`] made, with what the decision log keeps of a
/// sampled one.
#[derive(Debug)]
pub struct Ran {
    /// The answer.
    pub steered: Steered,
    /// Every value the app read, in order (sampled runs that decided).
    pub trace: Option<Trace>,
    /// Its `Math.random` draws (sampled runs that decided).
    pub draws: Vec<f64>,
}

/// [`run`]; a `sampled` call also records every value the app read (the
/// trace explain shows) and the `Math.random` draws it made, for the
/// decision log.
pub fn run_traced(
    app: &LoadedApp,
    request: Request,
    data: &Arc<DataSnapshot>,
    default_ttl: u32,
    sampled: bool,
) -> Ran {
    let options = CallOptions {
        log_reads: app.memo.is_some(),
        trace: sampled,
        random: if sampled {
            RandomMode::Record
        } else {
            RandomMode::Live
        },
        ..CallOptions::default()
    };
    match runtime::decide(&app.code, request, data, options) {
        Ok(out) => {
            app.runaway.clear();
            if let (Some(memo), Some(reads)) = (&app.memo, out.reads) {
                memo.store(data, reads, &out.decision);
            }
            let ttl = out.decision.ttl.unwrap_or(default_ttl);
            let reason = out.decision.reason.clone().unwrap_or_default();
            Ran {
                steered: Steered {
                    decision: Arc::new(out.decision),
                    ttl,
                    reason,
                    outcome: Outcome::App,
                },
                trace: out.trace,
                draws: out.draws,
            }
        }
        Err(err) => {
            log_once(app, &err);
            if err.ran_away() {
                app.runaway.strike();
            }
            Ran {
                steered: fallback(app, err, default_ttl),
                trace: None,
                draws: Vec::new(),
            }
        }
    }
}

/// What explaining a decision learnt beside its answer.
#[derive(Debug, Clone, Default)]
pub struct Insight {
    /// The memo holds a decision for this request: the server would have
    /// answered from it without running the app.
    pub memo_hit: bool,
    /// Every value the app read, in order (when it ran and decided).
    pub trace: Option<Trace>,
    /// The decision called `Math.random` or `console.log`: a memo never
    /// stores such a decision.
    pub impure: bool,
}

/// Decides for `request` as the server would, to explain the decision,
/// without changing anything the server keeps: the memo is looked up but
/// neither counted nor stored into, a failure is neither logged nor struck
/// against the app's backoff. The app runs (under its budgets) unless the
/// server would not run it (quarantined, never loaded, backing off), also
/// on a memo hit, so that its reads can be shown.
pub fn explain(
    app: &LoadedApp,
    request: Request,
    data: &Arc<DataSnapshot>,
    default_ttl: u32,
) -> (Steered, Insight) {
    if app.quarantine.is_some() {
        return (quarantined(app, default_ttl), Insight::default());
    }
    if let Some(message) = &app.load_error {
        return (not_loaded(app, message, default_ttl), Insight::default());
    }
    let memo_hit = app.memo.as_ref().is_some_and(|memo| {
        let view = Inputs {
            request: &request,
            data,
            scope: data.scope(&app.code.name, &app.declared),
            proximity: app.meta.proximity,
        };
        memo.peek(&view).is_some()
    });
    if !memo_hit && let Some(left) = app.runaway.remaining() {
        let err = AppError::Backoff {
            backoff_ms: left.as_millis() as u64,
        };
        return (fallback(app, err, default_ttl), Insight::default());
    }
    let options = CallOptions {
        log_reads: app.memo.is_some(),
        trace: true,
        ..CallOptions::default()
    };
    match runtime::decide(&app.code, request, data, options) {
        Ok(out) => {
            let ttl = out.decision.ttl.unwrap_or(default_ttl);
            let reason = out.decision.reason.clone().unwrap_or_default();
            let insight = Insight {
                memo_hit,
                trace: out.trace,
                impure: out.reads.is_some_and(|r| r.impure),
            };
            let steered = Steered {
                decision: Arc::new(out.decision),
                ttl,
                reason,
                outcome: Outcome::App,
            };
            (steered, insight)
        }
        Err(err) => (fallback(app, err, default_ttl), Insight::default()),
    }
}

/// The answer for an app backing off after runaways
/// ([`super::backoff::Runaway`]), if it is.
pub fn backing_off(app: &LoadedApp, ttl: u32) -> Option<Steered> {
    let backoff = app.runaway.check()?;
    let err = AppError::Backoff {
        backoff_ms: backoff.as_millis() as u64,
    };
    Some(fallback(app, err, ttl))
}

/// The memoised decision of `app` for `request`, if it has one.
pub fn memoised(
    app: &LoadedApp,
    request: &Request,
    data: &DataSnapshot,
    default_ttl: u32,
) -> Option<Steered> {
    let memo = app.memo.as_ref()?;
    let view = Inputs {
        request,
        data,
        scope: data.scope(&app.code.name, &app.declared),
        proximity: app.meta.proximity,
    };
    let decision = memo.lookup(&view)?;
    Some(Steered {
        ttl: decision.ttl.unwrap_or(default_ttl),
        reason: decision.reason.clone().unwrap_or_default(),
        decision,
        outcome: Outcome::App,
    })
}

/// The reason code of an answer for a quarantined app.
pub const QUARANTINED_REASON: &str = "quarantined";

/// The answer for a quarantined app: its fallback, reason `quarantined`
/// (no fallback: a failure, SERVFAIL or 503).
pub fn quarantined(app: &LoadedApp, ttl: u32) -> Steered {
    if app.settings.fallback.is_empty() {
        return Steered {
            decision: Arc::default(),
            ttl,
            reason: QUARANTINED_REASON.into(),
            outcome: Outcome::Failed(AppError::NoDecision),
        };
    }
    let decision = Decision {
        provider: Some(FALLBACK_REASON.to_string()),
        answers: app.settings.fallback.clone(),
        ttl: Some(ttl),
        reason: Some(QUARANTINED_REASON.to_string()),
        ..Decision::default()
    };
    Steered {
        decision: Arc::new(decision),
        ttl,
        reason: QUARANTINED_REASON.into(),
        outcome: Outcome::Quarantined,
    }
}

/// The answer for an app none of whose versions loaded: its fallback
/// (reason `fallback`), or a failure without one.
pub fn not_loaded(app: &LoadedApp, message: &str, ttl: u32) -> Steered {
    let err = AppError::NotLoaded {
        message: message.to_string(),
    };
    fallback(app, err, ttl)
}

/// The fallback answer of `app` for error `err`.
pub fn fallback(app: &LoadedApp, err: AppError, ttl: u32) -> Steered {
    if app.settings.fallback.is_empty() {
        return Steered {
            decision: Arc::default(),
            ttl,
            reason: "error".into(),
            outcome: Outcome::Failed(err),
        };
    }
    let decision = Decision {
        provider: Some(FALLBACK_REASON.to_string()),
        answers: app.settings.fallback.clone(),
        ttl: Some(ttl),
        reason: Some(FALLBACK_REASON.to_string()),
        ..Decision::default()
    };
    Steered {
        decision: Arc::new(decision),
        ttl,
        reason: FALLBACK_REASON.into(),
        outcome: Outcome::Fallback(err),
    }
}

#[cfg(test)]
mod memo_tests {
    //! Memoised decisions against fresh ones, over random requests and
    //! snapshots, on the shipped apps and the real runtime.

    use std::path::Path;
    use std::sync::Arc;

    use proptest::prelude::*;

    use crate::config::{Config, Overrides};
    use crate::openmix::{CallOptions, DataSnapshot, Location, Request, runtime};

    const MARKETS: [&str; 7] = ["EU", "NA", "SA", "AS", "OC", "AF", ""];
    const COUNTRIES: [&str; 6] = ["DE", "US", "BR", "JP", "AU", ""];
    const CDNS: [&str; 4] = ["cdn_a", "cdn_b", "cdn_c", "origin"];

    fn request(market: usize, country: usize, asn: u32, prefix: bool, aaaa: bool) -> Request {
        Request {
            client: std::sync::Arc::new(Location {
                market: MARKETS[market].into(),
                country: COUNTRIES[country].into(),
                asn,
                ..Location::default()
            }),
            hostname_prefix: if prefix { "www".into() } else { String::new() },
            query_type: if aaaa { "AAAA".into() } else { "A".into() },
            ..Request::default()
        }
    }

    /// A snapshot whose probe values come from a small domain, so that
    /// ties (Math.random) and missing values both happen.
    fn snapshot(version: u64, avail: &[Option<u8>], rtt: &[Option<u8>]) -> DataSnapshot {
        let rows = |vals: &[Option<u8>], scale: f64| {
            CDNS.iter()
                .zip(vals)
                .filter_map(|(a, v)| v.map(|v| (a.to_string(), Some(f64::from(v) * scale))))
                .collect::<Vec<_>>()
        };
        let mut data = DataSnapshot {
            version,
            ..DataSnapshot::default()
        };
        data.probes.insert("avail".into(), rows(avail, 10.0));
        data.probes.insert("http_rtt".into(), rows(rtt, 20.0));
        data
    }

    type Req = (usize, usize, u32, bool, bool);

    fn requests() -> impl Strategy<Value = Vec<Req>> {
        prop::collection::vec(
            (0..7usize, 0..6usize, 0..3u32, any::<bool>(), any::<bool>()),
            1..60,
        )
    }

    fn values() -> impl Strategy<Value = Vec<Option<u8>>> {
        prop::collection::vec(prop::option::weighted(0.8, 7..11u8), 4)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn memoised_decisions_equal_fresh_ones(
            reqs in requests(),
            snaps in prop::collection::vec((values(), values()), 1..4),
        ) {
            let config = Config::load(None, &Overrides::default()).unwrap();
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps");
            let mut hits = 0;
            for app_name in ["best-rtt", "geo-map"] {
                let path = dir.join(format!("{app_name}.js"));
                let source = std::fs::read_to_string(&path).unwrap();
                let sidecar = crate::config::read_sidecar(&path).unwrap();
                let first = Arc::new(snapshot(1, &snaps[0].0, &snaps[0].1));
                let mut app = super::super::apps::load_app(app_name, &path, &source, sidecar.as_deref(), &config, &first, 1).unwrap();
                // The test compares answers, not speed: a loaded machine
                // must not turn a fresh decision into a timeout.
                app.code.budget.decision = std::time::Duration::from_secs(2);
                prop_assert!(app.memo.is_some(), "{} not memoised: {:?}", app_name, app.memo_off);
                for (v, (avail, rtt)) in snaps.iter().enumerate() {
                    let data = Arc::new(snapshot(v as u64 + 1, avail, rtt));
                    // Twice over, so the second pass finds what the first stored.
                    for (m, c, asn, prefix, aaaa) in reqs.iter().chain(reqs.iter()) {
                        let req = request(*m, *c, *asn, *prefix, *aaaa);
                        let memo = super::memoised(&app, &req, &data, 20);
                        let fresh = runtime::decide(&app.code, req.clone(), &data, CallOptions::default());
                        if let Some(hit) = memo {
                            hits += 1;
                            let fresh = fresh.expect("a memoised decision's app must decide");
                            prop_assert_eq!(&*hit.decision, &fresh.decision, "{} {:?}", app_name, req);
                        }
                        super::decide(&app, req, &data, 20);
                    }
                }
                prop_assert!(!app.memo.as_ref().unwrap().stats().disabled);
            }
            prop_assert!(hits > 0, "no decision was ever memoised");
        }
    }
}
