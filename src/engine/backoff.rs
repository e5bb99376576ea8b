//! The backoff of apps whose calls run away: after two runaways in a row
//! an app's queries get its fallback at once, without running it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

    /// The time left of the backoff in force, if any, without letting a
    /// probe through (for explaining a decision).
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Acquire);
        let now = clock_ms();
        (until != 0 && now < until).then(|| Duration::from_millis(until - now))
    }

    /// Whether queries get the fallback now (no probe is let through).
    pub fn backing_off(&self) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        until != 0 && clock_ms() < until
    }
}
