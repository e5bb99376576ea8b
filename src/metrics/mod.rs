//! Live counters of the server: DNS responses by protocol and rcode and
//! by protocol and query type, HTTP responses by listener and status,
//! decisions by app, provider and reason, app failures by kind, and
//! decision times and memo hits by app.
//!
//! One type holds them all, so every front end counts the same way and the
//! operations endpoints read one place. Everything here has a fixed size
//! or a bound that does not depend on traffic, and nothing waits for a
//! reader to be trimmed: a node nobody scrapes holds as much as one
//! scraped every second.

pub mod counter;
pub mod prometheus;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::metrics::counter::Counter;
use crate::report::buckets::Counts;
use crate::report::counters::Tally;

/// Key of a decision count: app, provider, reason.
pub type DecisionKey = (String, String, String);

/// Width of one time bucket of decision counts.
pub const BUCKET_SECS: u64 = 10;
/// Buckets kept: one hour.
const BUCKETS_KEPT: usize = 360;

/// Distinct (provider, reason) pairs counted per app. Both are strings the
/// app chooses, and an app may choose them from what the client sent (a
/// reason code carrying a query parameter): past this many, new pairs are
/// counted under ([`OTHER`], [`OTHER`]), so the totals, the buckets, the
/// pending report and the `/metrics` series stay bounded.
pub const MAX_PAIRS_PER_APP: usize = 256;

/// The provider and reason that pairs past [`MAX_PAIRS_PER_APP`] count under.
pub const OTHER: &str = "(other)";

/// The query types DNS responses are counted by, with their label; the
/// last counts every other type and queries without a question. A fixed
/// set keeps the count a sharded-counter add on the hot path and the
/// series bounded whatever clients ask.
pub const QTYPES: [(&str, Option<RecordType>); 12] = [
    ("A", Some(RecordType::A)),
    ("AAAA", Some(RecordType::AAAA)),
    ("CNAME", Some(RecordType::CNAME)),
    ("SOA", Some(RecordType::SOA)),
    ("NS", Some(RecordType::NS)),
    ("TXT", Some(RecordType::TXT)),
    ("MX", Some(RecordType::MX)),
    ("SRV", Some(RecordType::SRV)),
    ("PTR", Some(RecordType::PTR)),
    ("HTTPS", Some(RecordType::HTTPS)),
    ("ANY", Some(RecordType::ANY)),
    ("other", None),
];

/// The [`QTYPES`] slot of a query type.
fn qtype_slot(qtype: Option<RecordType>) -> usize {
    match qtype {
        Some(RecordType::A) => 0,
        Some(RecordType::AAAA) => 1,
        Some(RecordType::CNAME) => 2,
        Some(RecordType::SOA) => 3,
        Some(RecordType::NS) => 4,
        Some(RecordType::TXT) => 5,
        Some(RecordType::MX) => 6,
        Some(RecordType::SRV) => 7,
        Some(RecordType::PTR) => 8,
        Some(RecordType::HTTPS) => 9,
        Some(RecordType::ANY) => 10,
        _ => 11,
    }
}

/// The HTTP statuses responses are counted by; any other counts as
/// `other`. These are the statuses the listeners send.
pub const HTTP_CODES: [u16; 17] = [
    200, 201, 202, 204, 302, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 500, 503,
];

/// Which HTTP listener answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The public decision listener.
    Decision = 0,
    /// The operations listener.
    Ops = 1,
}

impl Listener {
    /// The listener's label on `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Decision => "decision",
            Listener::Ops => "ops",
        }
    }
}

/// The front end a decision was asked through: decision times are
/// counted apart, since a DNS answer and an HTTP one differ in cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// A DNS query.
    Dns = 0,
    /// An HTTP decision request.
    Http = 1,
}

impl Frontend {
    /// The front end's label on `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Frontend::Dns => "dns",
            Frontend::Http => "http",
        }
    }
}

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
    /// [udp, tcp] × [`QTYPES`] (the last: any other, or no question).
    dns_qtypes: [[Counter; QTYPES.len()]; 2],
    /// [`Listener`] × [`HTTP_CODES`] (the last: any other status).
    http: [[Counter; HTTP_CODES.len() + 1]; 2],
    dns_panics: AtomicU64,
    tally: Tally,
    merged: Mutex<Merged>,
    times: DecisionTimes,
}

/// One decision as the counters see it (built by
/// the engine: `Steered::counted`).
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    /// The app.
    pub app: &'a str,
    /// Its version.
    pub version: u64,
    /// The provider answered (empty for none).
    pub provider: &'a str,
    /// The reason code.
    pub reason: &'a str,
    /// The failure kind, when the app failed.
    pub failure: Option<&'static str>,
}

#[derive(Default)]
struct Merged {
    decisions: HashMap<DecisionKey, u64>,
    /// Distinct (provider, reason) pairs in `decisions`, by app.
    pairs: HashMap<String, usize>,
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
            dns_qtypes: std::array::from_fn(|_| std::array::from_fn(|_| Counter::new())),
            http: std::array::from_fn(|_| std::array::from_fn(|_| Counter::new())),
            dns_panics: AtomicU64::new(0),
            tally: Tally::default(),
            merged: Mutex::new(Merged {
                pending_start: crate::report::buckets::now_ms(),
                ..Merged::default()
            }),
            times: DecisionTimes::default(),
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

    /// Counts one DNS response to a query of `qtype` (`None`: the query
    /// had no readable question).
    pub fn dns_response(&self, tcp: bool, rcode: ResponseCode, qtype: Option<RecordType>) {
        let p = usize::from(tcp);
        let code = (u16::from(rcode) as usize).min(23);
        self.dns[p][code].add(1);
        self.dns_qtypes[p][qtype_slot(qtype)].add(1);
    }

    /// Counts one HTTP response of `listener`.
    pub fn http_response(&self, listener: Listener, status: u16) {
        let slot = HTTP_CODES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(HTTP_CODES.len());
        self.http[listener as usize][slot].add(1);
    }

    /// Counts one decision and, when the app failed, the failure, on the
    /// calling thread's own counters. Always, `[reports] enabled = false`
    /// included: that only stops reporting to the store and the fleet, and
    /// failures and overruns are health signals besides.
    pub fn decision(&self, d: Decided<'_>) {
        self.tally
            .record(d.app, d.version, d.provider, d.reason, d.failure);
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
            let mut key = (d.app, or_none(d.provider), or_none(d.reason));
            if !m.decisions.contains_key(&key) {
                let pairs = m.pairs.entry(key.0.clone()).or_default();
                if *pairs < MAX_PAIRS_PER_APP {
                    *pairs += 1;
                } else {
                    key = (key.0, OTHER.to_string(), OTHER.to_string());
                    if !m.decisions.contains_key(&key) {
                        tracing::warn!(app = %key.0, limit = MAX_PAIRS_PER_APP,
                            "an app chose too many distinct provider and reason pairs; further ones are counted as (other)");
                    }
                }
            }
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

    /// DNS responses as (protocol, query type, count), non-zero only.
    pub fn dns_responses_by_qtype(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (p, row) in self.dns_qtypes.iter().enumerate() {
            for (slot, n) in row.iter().enumerate() {
                let n = n.get();
                if n > 0 {
                    out.push((if p == 0 { "udp" } else { "tcp" }, QTYPES[slot].0, n));
                }
            }
        }
        out
    }

    /// HTTP responses as (listener, status code, count), non-zero only;
    /// a status outside [`HTTP_CODES`] is named `other`.
    pub fn http_responses(&self) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for (listener, row) in [Listener::Decision, Listener::Ops]
            .into_iter()
            .zip(&self.http)
        {
            for (slot, n) in row.iter().enumerate() {
                let n = n.get();
                if n > 0 {
                    let code = HTTP_CODES
                        .get(slot)
                        .map_or_else(|| "other".to_string(), ToString::to_string);
                    out.push((listener.name(), code, n));
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

    /// Records how long one decision of `app` asked through `frontend`
    /// took, and whether the memo answered it, on the calling thread's own
    /// histogram.
    pub fn decision_time(&self, app: &str, frontend: Frontend, took: Duration, memo_hit: bool) {
        self.times.record(app, frontend, took, memo_hit);
    }

    /// Memo hits since start, every app together (the apps' own memos
    /// start over when an app is reloaded; this does not).
    pub fn memo_hits(&self) -> u64 {
        self.times.totals().values().map(|t| t.memo_hits).sum()
    }

    /// Appends the decision-time histograms and the memo hits by app to
    /// `out`, in Prometheus text format.
    pub fn render_decision_times(&self, out: &mut String) {
        self.times.render(out);
    }
}

/// Upper bounds of the decision-time histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05,
    0.1,
];

/// [`LATENCY_BUCKETS`] in nanoseconds, for the hot path.
const BOUNDS_NS: [u64; 12] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

/// The decision-time histogram's name on `/metrics`.
const TIMES_NAME: &str = "switchyard_decision_seconds";

/// The memo-hit counter's name on `/metrics`.
const MEMO_HITS_NAME: &str = "switchyard_memo_hits_total";

/// One thread's decision times of one app: per [`Frontend`], a count per
/// bucket (the last is +Inf) and the sum in nanoseconds; and its memo
/// hits. Only its thread writes it, so a record is loads and stores, no
/// read-modify-write; the renderer reads it concurrently and may see a
/// record half done (bucket counted, sum not yet), which the next render
/// shows whole.
#[derive(Default)]
struct Times {
    buckets: [[AtomicU64; BOUNDS_NS.len() + 1]; 2],
    sum_ns: [AtomicU64; 2],
    memo_hits: AtomicU64,
}

/// A histogram's totals, per [`Frontend`], and the memo hits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    buckets: [[u64; BOUNDS_NS.len() + 1]; 2],
    sum_ns: [u64; 2],
    memo_hits: u64,
}

impl Times {
    fn record(&self, frontend: Frontend, ns: u64, memo_hit: bool) {
        let f = frontend as usize;
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        let bump =
            |a: &AtomicU64, n: u64| a.store(a.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        bump(&self.buckets[f][i], 1);
        bump(&self.sum_ns[f], ns);
        if memo_hit {
            bump(&self.memo_hits, 1);
        }
    }

    fn add_to(&self, t: &mut Totals) {
        for f in 0..2 {
            for (sum, b) in t.buckets[f].iter_mut().zip(&self.buckets[f]) {
                *sum += b.load(Ordering::Relaxed);
            }
            t.sum_ns[f] += self.sum_ns[f].load(Ordering::Relaxed);
        }
        t.memo_hits += self.memo_hits.load(Ordering::Relaxed);
    }
}

static NEXT_TIMES_ID: AtomicU64 = AtomicU64::new(1);

/// One thread's histograms of one [`DecisionTimes`], by app.
type MyTimes = hashbrown::HashMap<String, Arc<Times>>;

thread_local! {
    /// This thread's histograms, by the [`DecisionTimes`] they belong to
    /// and the app: found without a lock or an allocation.
    static MY_TIMES: RefCell<Vec<(u64, MyTimes)>> =
        const { RefCell::new(Vec::new()) };
}

/// Decision times by app, in fixed-size histograms ([`LATENCY_BUCKETS`]),
/// one per thread and app, summed when rendered.
///
/// This replaced a histogram of the `metrics` crate, whose exporter kept
/// every observation until a scrape rendered it: ~12 bytes per decision
/// on a node nobody scraped (issue #31). A record here is a table lookup
/// and two plain stores, 3-7 times cheaper than the crate's; a histogram
/// shared by every thread of an app (atomic adds) measured the same on 2
/// cores (BENCHMARKS.md, 2026-12-07), and per-thread ones never pass a
/// cache line between cores as more cores would. Memory is one histogram
/// per (thread, app); a thread's histograms are folded into `ended` when
/// the thread ends.
struct DecisionTimes {
    id: u64,
    /// Every live thread's histograms, by app.
    live: Mutex<Vec<(String, Arc<Times>)>>,
    /// Totals of the threads that have ended, by app.
    ended: Mutex<BTreeMap<String, Totals>>,
}

impl Default for DecisionTimes {
    fn default() -> Self {
        DecisionTimes {
            id: NEXT_TIMES_ID.fetch_add(1, Ordering::Relaxed),
            live: Mutex::new(Vec::new()),
            ended: Mutex::new(BTreeMap::new()),
        }
    }
}

impl DecisionTimes {
    fn record(&self, app: &str, frontend: Frontend, took: Duration, memo_hit: bool) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        MY_TIMES.with_borrow_mut(|mine| {
            let i = match mine.iter().position(|(id, _)| *id == self.id) {
                Some(i) => i,
                None => {
                    mine.push((self.id, MyTimes::new()));
                    mine.len() - 1
                }
            };
            let by_app = &mut mine[i].1;
            if let Some(t) = by_app.get(app) {
                t.record(frontend, ns, memo_hit);
                return;
            }
            let t = Arc::new(Times::default());
            t.record(frontend, ns, memo_hit);
            if let Ok(mut live) = self.live.lock() {
                live.push((app.to_string(), t.clone()));
            }
            by_app.insert(app.to_string(), t);
        });
    }

    /// Totals by app: the live threads' histograms plus the ended ones'.
    /// Histograms only the registry still holds belong to threads that
    /// have ended: they are folded into `ended` and forgotten.
    fn totals(&self) -> BTreeMap<String, Totals> {
        let (Ok(mut live), Ok(mut ended)) = (self.live.lock(), self.ended.lock()) else {
            return BTreeMap::new();
        };
        live.retain(|(app, t)| {
            if Arc::strong_count(t) > 1 {
                return true;
            }
            // Pairs with the Release of the thread's drop of its handle:
            // every record it made is visible here.
            std::sync::atomic::fence(Ordering::Acquire);
            t.add_to(ended.entry(app.clone()).or_default());
            false
        });
        let mut out = ended.clone();
        for (app, t) in live.iter() {
            t.add_to(out.entry(app.clone()).or_default());
        }
        out
    }

    /// The histograms (by app and front end, one the app was asked
    /// through at least once) and the memo hits by app, in Prometheus
    /// text format with HELP and TYPE; nothing when no decision was timed
    /// yet.
    fn render(&self, out: &mut String) {
        let totals = self.totals();
        if totals.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP {TIMES_NAME} Time from a decision's arrival at the engine to its answer, memo hits included, by app and front end (dns, http)."
        );
        let _ = writeln!(out, "# TYPE {TIMES_NAME} histogram");
        for (app, t) in &totals {
            let app = escape_label(app);
            for frontend in [Frontend::Dns, Frontend::Http] {
                let f = frontend as usize;
                if t.buckets[f].iter().all(|&n| n == 0) {
                    continue;
                }
                let labels = format!("app=\"{app}\",frontend=\"{}\"", frontend.name());
                let mut cumulative = 0;
                for (i, n) in t.buckets[f].iter().enumerate() {
                    cumulative += n;
                    let le = LATENCY_BUCKETS
                        .get(i)
                        .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                    let _ = writeln!(
                        out,
                        "{TIMES_NAME}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "{TIMES_NAME}_sum{{{labels}}} {}",
                    t.sum_ns[f] as f64 / 1e9
                );
                let _ = writeln!(out, "{TIMES_NAME}_count{{{labels}}} {cumulative}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP {MEMO_HITS_NAME} Decisions answered from the decision memo, by app; the hit ratio is this over switchyard_decisions_total summed by app."
        );
        let _ = writeln!(out, "# TYPE {MEMO_HITS_NAME} counter");
        for (app, t) in &totals {
            let _ = writeln!(
                out,
                "{MEMO_HITS_NAME}{{app=\"{}\"}} {}",
                escape_label(app),
                t.memo_hits
            );
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and
/// line feed escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_nanoseconds_match_the_buckets() {
        for (ns, secs) in BOUNDS_NS.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(*ns, (secs * 1e9).round() as u64);
        }
    }

    #[test]
    fn responses_count_by_qtype_and_http_status_in_fixed_slots() {
        let c = Counters::default();
        for (qtype, n) in [
            (Some(RecordType::A), 3),
            (Some(RecordType::AAAA), 1),
            (Some(RecordType::CAA), 2),
            (None, 1),
        ] {
            for _ in 0..n {
                c.dns_response(false, ResponseCode::NoError, qtype);
            }
        }
        c.dns_response(true, ResponseCode::NXDomain, Some(RecordType::A));
        let mut by_qtype = c.dns_responses_by_qtype();
        by_qtype.sort();
        assert_eq!(
            by_qtype,
            [
                ("tcp", "A", 1),
                ("udp", "A", 3),
                ("udp", "AAAA", 1),
                ("udp", "other", 3)
            ]
        );
        for (slot, (_, t)) in QTYPES.iter().enumerate() {
            assert_eq!(qtype_slot(*t), slot, "{t:?}");
        }
        c.http_response(Listener::Decision, 200);
        c.http_response(Listener::Decision, 200);
        c.http_response(Listener::Ops, 401);
        c.http_response(Listener::Ops, 418);
        let mut http = c.http_responses();
        http.sort();
        assert_eq!(
            http,
            [
                ("decision", "200".to_string(), 2),
                ("ops", "401".to_string(), 1),
                ("ops", "other".to_string(), 1)
            ]
        );
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
    }

    #[test]
    fn decision_times_add_up_over_threads_that_ended() {
        let c = Arc::new(Counters::default());
        let mut empty = String::new();
        c.render_decision_times(&mut empty);
        assert_eq!(empty, "", "nothing timed, nothing rendered");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        c.decision_time("www", Frontend::Dns, Duration::from_micros(30), true);
                    }
                    c.decision_time("www", Frontend::Dns, Duration::from_secs(1), false);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.decision_time("www", Frontend::Dns, Duration::from_nanos(10_000), false);
        c.decision_time("www", Frontend::Http, Duration::from_millis(2), false);
        c.decision_time("q\"uo\\te", Frontend::Http, Duration::ZERO, true);
        let mut text = String::new();
        c.render_decision_times(&mut text);
        assert!(
            text.starts_with("# HELP switchyard_decision_seconds "),
            "{text}"
        );
        assert!(text.contains("# TYPE switchyard_decision_seconds histogram\n"));
        let b = |le: &str| {
            line(
                &text,
                &format!("switchyard_decision_seconds_bucket{{app=\"www\",frontend=\"dns\",le=\"{le}\"}} "),
            )
            .to_string()
        };
        assert!(
            b("0.00001").ends_with(" 1"),
            "10 µs is in the 10 µs bucket: {text}"
        );
        assert!(b("0.000025").ends_with(" 1"), "{text}");
        assert!(b("0.00005").ends_with(" 401"), "{text}");
        assert!(b("0.1").ends_with(" 401"), "{text}");
        assert!(b("+Inf").ends_with(" 405"), "{text}");
        assert!(
            line(
                &text,
                "switchyard_decision_seconds_count{app=\"www\",frontend=\"dns\"}"
            )
            .ends_with(" 405")
        );
        let sum: f64 = line(
            &text,
            "switchyard_decision_seconds_sum{app=\"www\",frontend=\"dns\"}",
        )
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
        assert!((sum - (4.0 + 400.0 * 30e-6 + 10e-6)).abs() < 1e-9, "{sum}");
        assert!(
            text.contains("{app=\"q\\\"uo\\\\te\",frontend=\"http\",le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            line(
                &text,
                "switchyard_decision_seconds_count{app=\"www\",frontend=\"http\"}"
            )
            .ends_with(" 1"),
            "{text}"
        );
        assert!(
            !text.contains("{app=\"q\\\"uo\\\\te\",frontend=\"dns\""),
            "a front end an app was never asked through has no series: {text}"
        );
        assert!(text.contains("# TYPE switchyard_memo_hits_total counter\n"));
        assert!(
            line(&text, "switchyard_memo_hits_total{app=\"www\"}").ends_with(" 400"),
            "{text}"
        );
        assert!(
            line(&text, "switchyard_memo_hits_total{app=\"q\\\"uo\\\\te\"}").ends_with(" 1"),
            "{text}"
        );
        // The ended threads' histograms were folded: only this thread's
        // two remain, and a second render says the same.
        assert_eq!(c.times.live.lock().unwrap().len(), 2);
        let mut again = String::new();
        c.render_decision_times(&mut again);
        assert_eq!(text, again);
    }

    #[test]
    fn provider_and_reason_pairs_are_bounded_per_app() {
        let c = Counters::default();
        // An app that puts what the client sent into its reason code.
        for i in 0..MAX_PAIRS_PER_APP + 100 {
            c.tally
                .record("echo", 1, "cdn_a", &format!("client-{i}"), None);
            c.tally.record("plain", 2, "cdn_b", "R", None);
            if i + 1 == MAX_PAIRS_PER_APP {
                c.merge();
            }
        }
        c.tally.record("echo", 1, "cdn_a", "client-0", None);
        c.tally.record("echo", 1, "cdn_a", "client-999999", None);
        let d = c.decisions();
        let echo: Vec<_> = d.iter().filter(|((a, _, _), _)| a == "echo").collect();
        assert_eq!(
            echo.len(),
            MAX_PAIRS_PER_APP + 1,
            "the pairs seen first, and (other)"
        );
        let other = ("echo".to_string(), OTHER.to_string(), OTHER.to_string());
        assert_eq!(d[&other], 101, "past the bound, counted as (other)");
        let first = (
            "echo".to_string(),
            "cdn_a".to_string(),
            "client-0".to_string(),
        );
        assert_eq!(d[&first], 2, "a pair counted before keeps counting");
        let total: u64 = echo.iter().map(|(_, n)| **n).sum();
        assert_eq!(total, MAX_PAIRS_PER_APP as u64 + 102, "nothing lost");
        let plain = ("plain".to_string(), "cdn_b".to_string(), "R".to_string());
        assert_eq!(
            d[&plain],
            MAX_PAIRS_PER_APP as u64 + 100,
            "other apps unaffected"
        );
        let (_, _, pending) = c.take_pending();
        assert_eq!(
            pending["echo"].values().map(BTreeMap::len).sum::<usize>(),
            MAX_PAIRS_PER_APP + 1
        );
        assert!(
            c.recent("echo", 60).len() <= MAX_PAIRS_PER_APP + 1,
            "the buckets hold the folded pairs too"
        );
    }
}
