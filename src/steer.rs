//! One decision with the product's rules around it: run the app, and when
//! it fails, serve its fallback (reason `fallback`) or report failure.
//!
//! Every front end (`decide`, DNS, HTTP) calls [`steer`], so the rules are
//! written once: TTL is `setTTL`, else the app's default, else the zone's;
//! an app error is logged once per app version, with its line.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::apps::LoadedApp;
use crate::openmix::memo::View;
use crate::openmix::{AppError, CallOptions, DataSnapshot, Decision, Request, runtime};

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

/// A decision ready for a front end.
#[derive(Debug, Clone)]
pub struct Steered {
    /// What to answer.
    pub decision: Decision,
    /// Effective TTL.
    pub ttl: u32,
    /// Effective reason code (empty when the app set none).
    pub reason: String,
    /// App, fallback or failure.
    pub outcome: Outcome,
}

/// Whether an app version's first error was logged. It lives in the
/// version ([`LoadedApp::error_logged`]) and goes with it: a process-wide
/// set of logged versions grew by one entry per reload of a failing app.
#[derive(Debug, Default)]
pub struct ErrorLogged(AtomicBool);

/// Logs an app error once per app version.
fn log_once(app: &LoadedApp, err: &AppError) {
    if !app.error_logged.0.swap(true, Ordering::Relaxed) {
        tracing::warn!(app = %app.code.name, version = app.code.version, kind = err.kind(), error = %err,
            "app failed; serving its fallback (logged once per app version)");
    }
}

/// Runs `app` for `request` and applies the fallback rules.
pub fn steer(
    app: &LoadedApp,
    request: Request,
    data: &Arc<DataSnapshot>,
    zone_ttl: u32,
) -> Steered {
    let default_ttl = app.settings.ttl.unwrap_or(zone_ttl);
    if app.quarantine.is_some() {
        return quarantined(app, default_ttl);
    }
    if let Some(message) = &app.load_error {
        return not_loaded(app, message, default_ttl);
    }
    if let Some(hit) = memoised(app, &request, data, default_ttl) {
        return hit;
    }
    let options = CallOptions {
        log_reads: app.memo.is_some(),
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
            Steered {
                decision: out.decision,
                ttl,
                reason,
                outcome: Outcome::App,
            }
        }
        Err(err) => {
            log_once(app, &err);
            if err.ran_away() {
                app.runaway.strike();
            }
            fallback(app, err, default_ttl)
        }
    }
}

/// The backoff of an app whose calls run away.
///
/// A call stopped by its budget poisons its instance, and the next call
/// rebuilds it (the top level and `init` run again) and is a first call
/// with ten times the budget: an app that runs away on every query would
/// cost that on every query, holding a worker for it. So from the second
/// runaway in a row (stopped by a budget or the watchdog) its queries get
/// the fallback at once, without running it, for a backoff that doubles
/// from 250 ms up to 2 s; when it ends one query (and only one) runs the
/// app again as a probe. A decision the app makes ends the backoff.
#[derive(Debug, Default)]
pub struct Runaway {
    /// Runaways in a row.
    strikes: AtomicU32,
    /// Until when queries get the fallback (ms on [`clock_ms`]); 0: none.
    until_ms: AtomicU64,
}

/// First backoff, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Milliseconds on a process-wide monotonic clock (never 0).
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl Runaway {
    fn backoff(strikes: u32) -> Duration {
        let doublings = strikes.saturating_sub(2).min(8);
        (BACKOFF_FIRST * (1 << doublings)).min(BACKOFF_MAX)
    }

    /// Records a call that ran away.
    pub fn strike(&self) {
        let strikes = self.strikes.fetch_add(1, Ordering::AcqRel) + 1;
        if strikes >= 2 {
            let until = clock_ms() + Self::backoff(strikes).as_millis() as u64;
            self.until_ms.store(until, Ordering::Release);
        }
    }

    /// Records a decision the app made: no backoff.
    pub fn clear(&self) {
        if self.strikes.load(Ordering::Relaxed) != 0 {
            self.strikes.store(0, Ordering::Release);
            self.until_ms.store(0, Ordering::Release);
        }
    }

    /// While backing off, the backoff (its queries get the fallback).
    /// When a backoff has ended, the first caller gets `None` and runs the
    /// app as the probe; the others keep getting the fallback until the
    /// probe's outcome (or one more backoff) is known.
    pub fn check(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = clock_ms();
        let backoff = Self::backoff(self.strikes.load(Ordering::Acquire));
        if now < until {
            return Some(backoff);
        }
        let probe = now + backoff.as_millis() as u64;
        match self
            .until_ms
            .compare_exchange(until, probe, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => None,
            Err(_) => Some(backoff),
        }
    }

    /// Whether queries get the fallback now (no probe is let through).
    pub fn backing_off(&self) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        until != 0 && clock_ms() < until
    }
}

/// The answer for an app backing off after runaways ([`Runaway`]), if it is.
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
    let view = View {
        request,
        data,
        scope: data.scope(&app.code.name, &app.declared),
        proximity: app.meta.proximity,
    };
    let decision = memo.lookup(&view)?;
    let decision = Decision::clone(&decision);
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
            decision: Decision::default(),
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
        decision,
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
            decision: Decision::default(),
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
        decision,
        ttl,
        reason: FALLBACK_REASON.into(),
        outcome: Outcome::Fallback(err),
    }
}

/// The request fields of a GeoIP result.
pub fn location(g: crate::geo::ClientGeo) -> crate::openmix::Location {
    crate::openmix::Location {
        asn: g.asn,
        market: g.market,
        country: g.country,
        region: g.region,
        state: g.state,
        latitude: g.latitude,
        longitude: g.longitude,
    }
}
