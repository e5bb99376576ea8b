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
use hickory_server::net::xfer::Protocol;

use crate::apps::LoadedApp;
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
pub struct Counters {
    started: Instant,
    /// [udp, tcp] × rcode (0..=23, the rest folded into 23).
    dns: [[AtomicU64; 24]; 2],
    decisions: Mutex<HashMap<DecisionKey, u64>>,
    buckets: Mutex<std::collections::VecDeque<Bucket>>,
    failures: Mutex<HashMap<(String, &'static str), u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            started: Instant::now(),
            dns: Default::default(),
            decisions: Mutex::new(HashMap::new()),
            buckets: Mutex::new(std::collections::VecDeque::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Counters {
    /// Counts one DNS response.
    pub fn dns_response(&self, protocol: Protocol, rcode: ResponseCode) {
        let p = usize::from(protocol != Protocol::Udp);
        let code = (u16::from(rcode) as usize).min(23);
        self.dns[p][code].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one decision and, when the app failed, the failure.
    pub fn decision(&self, app: &LoadedApp, s: &Steered) {
        let provider = s.decision.provider.clone().unwrap_or_default();
        let key = (app.code.name.clone(), provider, s.reason.clone());
        let now = unix_now();
        let stop = (now / BUCKET_SECS + 1) * BUCKET_SECS;
        if let Ok(mut b) = self.buckets.lock() {
            if b.back().is_none_or(|last| last.stop != stop) {
                b.push_back(Bucket {
                    stop,
                    counts: HashMap::new(),
                });
                while b.len() > BUCKETS_KEPT {
                    b.pop_front();
                }
            }
            if let Some(last) = b.back_mut() {
                *last.counts.entry(key.clone()).or_default() += 1;
            }
        }
        if let Ok(mut m) = self.decisions.lock() {
            *m.entry(key).or_default() += 1;
        }
        if let Outcome::Fallback(e) | Outcome::Failed(e) = &s.outcome
            && let Ok(mut m) = self.failures.lock()
        {
            *m.entry((app.code.name.clone(), e.kind())).or_default() += 1;
        }
    }

    /// DNS responses as (protocol, rcode name, count), non-zero only.
    pub fn dns_responses(&self) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for (p, row) in self.dns.iter().enumerate() {
            for (code, n) in row.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
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
        self.decisions.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Decision counts of `app` by (provider, reason) over the buckets that
    /// ended within the last `secs` seconds (plus the current one).
    pub fn recent(&self, app: &str, secs: u64) -> HashMap<(String, String), u64> {
        let since = unix_now().saturating_sub(secs);
        let mut out = HashMap::new();
        if let Ok(b) = self.buckets.lock() {
            for bucket in b.iter().filter(|b| b.stop > since) {
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
    /// ended within the last `secs` seconds (plus the current one).
    pub fn recent_by_provider(&self, secs: u64) -> HashMap<String, u64> {
        let since = unix_now().saturating_sub(secs);
        let mut out = HashMap::new();
        if let Ok(b) = self.buckets.lock() {
            for bucket in b.iter().filter(|b| b.stop > since) {
                for ((_, p, _), n) in &bucket.counts {
                    *out.entry(p.clone()).or_default() += n;
                }
            }
        }
        out
    }

    /// App failure counts by (app, kind).
    pub fn failures(&self) -> HashMap<(String, &'static str), u64> {
        self.failures.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
