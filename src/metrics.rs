//! Live counters of the server: DNS responses by protocol and rcode,
//! decisions by app, provider and reason, app failures by kind.
//!
//! One type holds them all, so every front end counts the same way and the
//! operations endpoints read one place.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hickory_proto::op::ResponseCode;

use crate::apps::LoadedApp;
use crate::report::buckets::Counts;
use crate::report::counters::Tally;
use crate::shard::Counter;
use crate::steer::{Outcome, Steered};

/// Key of a decision count: app, provider, reason.
pub type DecisionKey = (String, String, String);

/// Width of one time bucket of decision counts.
pub const BUCKET_SECS: u64 = 10;
/// Buckets kept: one hour.
const BUCKETS_KEPT: usize = 360;

/// Decision counts of one 10-second bucket, keyed by its stop time.
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    /// Unix seconds at which the bucket ends.
    pub stop: u64,
    /// Counts in the bucket.
    pub counts: HashMap<DecisionKey, u64>,
}

/// The server's counters.
///
/// DNS responses are atomics. Decisions go to per-thread counters
/// ([`crate::report::counters::Tally`]) that [`Counters::merge`] folds
/// into the merged views below; only the merger (a task every second) and
/// readers take the `merged` lock, never two query threads.
pub struct Counters {
    started: Instant,
    /// [udp, tcp] × rcode (0..=23, the rest folded into 23).
    /// Bumped by every DNS thread for every reply: sharded.
    dns: [[Counter; 24]; 2],
    dns_panics: AtomicU64,
    tally: Tally,
    merged: Mutex<Merged>,
}

#[derive(Default)]
struct Merged {
    decisions: HashMap<DecisionKey, u64>,
    buckets: std::collections::VecDeque<Bucket>,
    failures: HashMap<(String, &'static str), u64>,
    /// Counts not yet reported, and since when (unix ms).
    pending: Counts,
    pending_start: i64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            started: Instant::now(),
            dns: std::array::from_fn(|_| std::array::from_fn(|_| Counter::new())),
            dns_panics: AtomicU64::new(0),
            tally: Tally::default(),
            merged: Mutex::new(Merged {
                pending_start: crate::report::buckets::now_ms(),
                ..Merged::default()
            }),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The name reports use for an empty provider or reason.
pub const NONE: &str = "(none)";

fn or_none(s: String) -> String {
    if s.is_empty() { NONE.to_string() } else { s }
}

impl Counters {
    /// Counts a query whose handling panicked (it got no reply).
    pub fn dns_panic(&self) {
        self.dns_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Queries whose handling panicked.
    pub fn dns_panics(&self) -> u64 {
        self.dns_panics.load(Ordering::Relaxed)
    }

    /// Counts one DNS response.
    pub fn dns_response(&self, tcp: bool, rcode: ResponseCode) {
        let p = usize::from(tcp);
        let code = (u16::from(rcode) as usize).min(23);
        self.dns[p][code].add(1);
    }

    /// Counts one decision and, when the app failed, the failure, on the
    /// calling thread's own counters. Always, `[reports] enabled = false`
    /// included: that only stops reporting to the store and the fleet, and
    /// failures and overruns are health signals besides.
    pub fn decision(&self, app: &LoadedApp, s: &Steered) {
        let failure = match &s.outcome {
            Outcome::Fallback(e) | Outcome::Failed(e) => Some(e.kind()),
            _ => None,
        };
        self.tally.record(
            &app.code.name,
            app.code.version,
            s.decision.provider.as_deref().unwrap_or(""),
            &s.reason,
            failure,
        );
    }

    /// Folds every thread's counts into the merged views: totals, this
    /// node's 10-second buckets and the counts not yet reported.
    pub fn merge(&self) {
        let (drained, failures) = self.tally.drain();
        if drained.is_empty() && failures.is_empty() {
            return;
        }
        let Ok(mut m) = self.merged.lock() else {
            return;
        };
        let stop = (unix_now() / BUCKET_SECS + 1) * BUCKET_SECS;
        if m.buckets.back().is_none_or(|last| last.stop != stop) {
            m.buckets.push_back(Bucket {
                stop,
                counts: HashMap::new(),
            });
            while m.buckets.len() > BUCKETS_KEPT {
                m.buckets.pop_front();
            }
        }
        for d in drained {
            let key = (d.app, or_none(d.provider), or_none(d.reason));
            if let Some(last) = m.buckets.back_mut() {
                *last.counts.entry(key.clone()).or_default() += d.n;
            }
            *m.pending
                .entry(key.0.clone())
                .or_default()
                .entry(key.1.clone())
                .or_default()
                .entry(key.2.clone())
                .or_default() += d.n;
            *m.decisions.entry(key).or_default() += d.n;
        }
        for (app, kind, n) in failures {
            *m.failures.entry((app, kind)).or_default() += n;
        }
    }

    /// Takes the counts not yet reported: (start, stop, counts), stop
    /// being now (unix ms). The next bucket starts at this stop.
    pub fn take_pending(&self) -> (i64, i64, Counts) {
        self.merge();
        let now = crate::report::buckets::now_ms();
        let Ok(mut m) = self.merged.lock() else {
            return (now, now, Counts::new());
        };
        let start = std::mem::replace(&mut m.pending_start, now);
        (start, now, std::mem::take(&mut m.pending))
    }

    /// Puts back counts whose report failed, to go with the next one.
    pub fn restore_pending(&self, start: i64, counts: &Counts) {
        if let Ok(mut m) = self.merged.lock() {
            m.pending_start = m.pending_start.min(start);
            crate::report::buckets::add_counts(&mut m.pending, counts);
        }
    }

    /// DNS responses as (protocol, rcode name, count), non-zero only.
    pub fn dns_responses(&self) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for (p, row) in self.dns.iter().enumerate() {
            for (code, n) in row.iter().enumerate() {
                let n = n.get();
                if n > 0 {
                    let name = ResponseCode::from(0, code as u8).to_string();
                    out.push((if p == 0 { "udp" } else { "tcp" }, name, n));
                }
            }
        }
        out
    }

    /// Decision counts.
    pub fn decisions(&self) -> HashMap<DecisionKey, u64> {
        self.merge();
        self.merged
            .lock()
            .map(|m| m.decisions.clone())
            .unwrap_or_default()
    }

    /// Decision counts of `app` by (provider, reason) over the buckets that
    /// ended within the last `secs` seconds (plus the current one).
    pub fn recent(&self, app: &str, secs: u64) -> HashMap<(String, String), u64> {
        self.merge();
        let since = unix_now().saturating_sub(secs);
        let mut out = HashMap::new();
        if let Ok(m) = self.merged.lock() {
            for bucket in m.buckets.iter().filter(|b| b.stop > since) {
                for ((a, p, r), n) in &bucket.counts {
                    if a == app {
                        *out.entry((p.clone(), r.clone())).or_default() += n;
                    }
                }
            }
        }
        out
    }

    /// Decisions per provider, every app together, over the buckets that
    /// ended within the last `secs` seconds (plus the current one), and the
    /// milliseconds they cover (see [`crate::report::buckets::recent_span_ms`]).
    pub fn recent_by_provider(&self, secs: u64) -> (HashMap<String, u64>, i64) {
        self.merge();
        let now = crate::report::buckets::now_ms();
        let since = (now / 1000) as u64 - secs.min((now / 1000) as u64);
        let mut out = HashMap::new();
        if let Ok(m) = self.merged.lock() {
            for bucket in m.buckets.iter().filter(|b| b.stop > since) {
                for ((_, p, _), n) in &bucket.counts {
                    *out.entry(p.clone()).or_default() += n;
                }
            }
        }
        let span = crate::report::buckets::recent_span_ms(
            now,
            secs as i64,
            BUCKET_SECS as i64,
            self.started.elapsed().as_millis() as i64,
        );
        (out, span)
    }

    /// App failure counts by (app, kind).
    pub fn failures(&self) -> HashMap<(String, &'static str), u64> {
        self.merge();
        self.merged
            .lock()
            .map(|m| m.failures.clone())
            .unwrap_or_default()
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
