//! Hostile apps against the real server over DNS (issue 14).
//!
//! Each test starts `switchyard serve` (the supervisor and its serving
//! process) with a well-behaved app, `good` (A 192.0.2.1, fallback
//! 192.0.2.251), and hostile apps `h_<name>` whose sidecar sets the
//! fallback 192.0.2.250. `good` calls `Math.random` (for a tie-break that
//! does not change its answer), so it is never memoised: every query of it
//! runs on a JS worker, next to the hostile calls. A background thread
//! queries `good` over UDP all along and counts answers, wrong answers,
//! the good app's fallbacks, lost queries and the worst latency: no wrong
//! answer and no fallback of the good app is tolerated outside a process
//! restart. Every hostile query must get the fallback (SERVFAIL for the
//! apps without one) within the hard limit (100 ms) plus a scheduling
//! tolerance of 30 ms ([`ANSWER_WITHIN`]): the watchdog polls every 10 ms,
//! and the machine's two cores are shared with builds.
//!
//! The runaways are grouped by what is expected to stop them, one server
//! per group, so that the retired workers of one group cannot restart the
//! process under another group's assertions:
//!
//! * [`STOPPED`]: the time budget, the memory budget, the recursion limit
//!   or the prelude's guards stop them inside the call;
//! * [`CALLBACK`]: runaways inside callbacks from native code; only boa's
//!   loop limit stops them (about 20 ms in a release build, about 2 s in a
//!   debug build, so here the watchdog answers at the hard limit and
//!   retires the thread, which later ends with the loop-limit error);
//! * [`NEVER_ENDING`]: nothing in-process stops them in time; the watchdog
//!   answers at the hard limit and retires the thread, past the cap the
//!   process restarts and the apps in flight are quarantined until a new
//!   version is saved.
//!
//! Each group runs in `onRequest` and in `init` (an app whose `init` fails
//! never loads: its name answers with its fallback and
//! `/api/applications` shows the error). A never-ending `init` is abandoned by the bounded loader
//! (`init_that_never_ends_does_not_block_loading`).
//!
//! The tests after those guard containment holes this suite found (each
//! says what failed before it was fixed).
//!
//! Run: `cargo test --release --test it hostile:: -- --nocapture` (prints
//! latencies and how each runaway was contained). The tests run one at a
//! time (a lock): the timings are about the server, not about tests
//! competing for CPU.

use crate::common;
use crate::common::dnsclient;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::http::{Request, TOKEN, http_json};
use common::wait::wait_for;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;

const ZONE: &str = "switchyard.test.";
/// What `good` answers.
const GOOD: &str = "192.0.2.1";
/// What `good` answers after the canary edit.
const GOOD_V2: &str = "192.0.2.2";
/// `good`'s fallback: seeing it means the good app failed.
const GOOD_FALLBACK: &str = "192.0.2.251";
/// The hostile apps' fallback.
const FALLBACK: &str = "192.0.2.250";
/// What a hostile app answers if its runaway ever returns.
const FINISHED: &str = "192.0.2.99";
/// What a fixed (new) version of a hostile app answers.
const FIXED: &str = "192.0.2.77";
/// The hard limit of a decision (`server.hard_limit_ms`, 100 ms, counted
/// from when a worker takes the query, building the app's instance
/// included).
const HARD_LIMIT: Duration = Duration::from_millis(100);
/// Scheduling tolerance on top of the hard limit: the watchdog polls
/// every 10 ms, and the suite shares two cores with builds.
const SCHEDULING_TOLERANCE: Duration = Duration::from_millis(30);
/// Every hostile answer arrives within the hard limit plus the tolerance.
const ANSWER_WITHIN: Duration = HARD_LIMIT.saturating_add(SCHEDULING_TOLERANCE);
/// The watchdog's cap of retired threads (src/workers.rs).
const RETIRED_CAP: u64 = 8;

/// Runaways stopped inside the call: the 5 ms time budget or boa's loop
/// limit, whichever comes first (`while`, nested loops: the limit counts
/// iterations per call frame, so a fast machine reaches 1M of them inside
/// a first call's or an init's longer budget), the time budget alone
/// (1000 calls of a 1e6 loop: no frame passes the limit), the recursion limit, the
/// 64 MB memory budget (`s += s`) or whichever of time and memory comes
/// first (push bombs), and the prelude's guards (`fill`, `repeat`).
const STOPPED: &[(&str, &str)] = &[
    ("while_true", "while (true) {}"),
    (
        "nested",
        "for (var i = 0; i < 1e6; i++) { for (var j = 0; j < 1e6; j++) {} }",
    ),
    (
        "calls_1e6",
        "function f() { for (var i = 0; i < 1e6; i++) {} } for (var k = 0; k < 1000; k++) { f(); }",
    ),
    ("recursion", "function r(n) { return r(n + 1) + 1; } r(0);"),
    ("concat", "var s = 'x'; while (true) { s += s; }"),
    (
        "push",
        "var a = []; while (true) { a.push(new Array(100000)); }",
    ),
    (
        "push_objects",
        "var a = []; while (true) { a.push({ a: 1, b: 'x', c: [1, 2, 3] }); }",
    ),
    ("fill", "new Array(1e9).fill(0);"),
    ("repeat", "'x'.repeat(2 ** 29);"),
];

/// Runaways in callbacks from native code, stopped only by the loop limit.
const CALLBACK: &[(&str, &str)] = &[
    (
        "foreach_forever",
        "[1, 2, 3].forEach(function () { while (true) {} });",
    ),
    (
        "sort_comparator",
        "[3, 1, 2].sort(function (a, b) { while (true) {} });",
    ),
    ("getter", "var o = { get x() { while (true) {} } }; o.x;"),
    (
        "value_of",
        "var o = { valueOf: function () { while (true) {} } }; o + 1;",
    ),
    ("eval", "eval('while (true) {}');"),
    (
        "proxy",
        "var p = new Proxy({}, { get: function () { while (true) {} } }); p.x;",
    ),
];

/// Runaways nothing in-process stops in time: 1000 callbacks each just
/// under the loop limit, a ReDoS regex, a comparator sort of 3e5 shuffled
/// elements (5M comparisons, each looping a little: seconds in one native
/// call).
const NEVER_ENDING: &[(&str, &str)] = &[
    (
        "foreach_under",
        "new Array(1000).fill(0).forEach(function () { for (var i = 0; i < 900000; i++) {} });",
    ),
    (
        "redos",
        "/^(a+)+$/.test('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!');",
    ),
    (
        "sort_huge",
        // Shuffled by native code (a presorted array is one run: the sort
        // would end after n comparisons).
        "Array.from({ length: 300000 }, function (_, i) { return (i * 2654435761) % 1000003; }).sort(function (x, y) { for (var k = 0; k < 50; k++) {} return x - y; });",
    ),
];

/// The entries of `list` named `names`.
fn pick(
    list: &[(&'static str, &'static str)],
    names: &[&str],
) -> Vec<(&'static str, &'static str)> {
    names
        .iter()
        .map(|n| *list.iter().find(|(m, _)| m == n).expect("known body"))
        .collect()
}

// ---------------------------------------------------------------- apps

fn on_request_app(body: &str) -> String {
    format!(
        "function onRequest(request, response) {{\n  {body}\n  response.addARecord('{FINISHED}');\n}}\n"
    )
}

fn init_app(body: &str) -> String {
    format!(
        "function init(config) {{\n  {body}\n}}\n\nfunction onRequest(request, response) {{\n  response.addARecord('{FINISHED}');\n}}\n"
    )
}

fn answering(addr: &str) -> String {
    format!("function onRequest(request, response) {{\n  response.addARecord('{addr}');\n}}\n")
}

/// The good app answering `addr`: it draws a random tie-break that never
/// changes the answer, so it is never memoised and every query of it runs
/// on a JS worker.
fn good_app(addr: &str) -> String {
    format!(
        "function onRequest(request, response) {{\n  var tie = Math.random();\n  response.addARecord(tie < 2 ? '{addr}' : '192.0.2.254');\n}}\n"
    )
}

fn sidecar(fallback: &str) -> String {
    format!("fallback = [\"{fallback}\"]\n")
}

/// `good.js` and its sidecar.
fn good_files() -> Vec<(String, String)> {
    vec![
        ("good.js".into(), good_app(GOOD)),
        ("good.toml".into(), sidecar(GOOD_FALLBACK)),
    ]
}

/// `<prefix><name>.js` made by `make` from each body, each with a sidecar
/// setting the hostile fallback.
fn hostile_files(
    prefix: &str,
    list: &[(&str, &str)],
    make: fn(&str) -> String,
) -> Vec<(String, String)> {
    list.iter()
        .flat_map(|(n, b)| {
            [
                (format!("{prefix}{n}.js"), make(b)),
                (format!("{prefix}{n}.toml"), sidecar(FALLBACK)),
            ]
        })
        .collect()
}

fn qname(app: &str) -> String {
    format!("{app}.{ZONE}")
}

// -------------------------------------------------------------- server

/// One test at a time: the suite measures latencies.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A process: pid and start time (clock ticks since boot), so that a pid
/// reused by another process is never mistaken for it.
type Proc = (u32, u64);

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name; starttime is field 22 (index 19 here).
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Every process descended from `pid`.
fn descendants(pid: u32) -> Vec<Proc> {
    descendant_pids(pid)
        .into_iter()
        .filter_map(|p| Some((p, start_time(p)?)))
        .collect()
}

fn descendant_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            for c in text
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// Still running (not a zombie) and still the same process.
fn alive(&(pid, started): &Proc) -> bool {
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false);
    running && start_time(pid) == Some(started)
}

/// Kills the processes this test started that are still running, by pid.
fn kill_leftovers(procs: &[Proc]) {
    for p in procs {
        let pid = p.0;
        if alive(p) {
            eprintln!("note: serving process {pid} outlived its supervisor's shutdown; killing it");
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A server under test. On drop it stops the supervisor and then kills
/// any serving process that did not exit with it: a serving process whose
/// app watcher is stuck in a runaway `init` never finishes its graceful
/// shutdown, and the harness only knows the supervisor.
struct Running {
    server: Option<common::Server>,
}

impl Running {
    fn start(apps: Vec<(String, String)>) -> Running {
        Running::start_with(apps, Vec::new())
    }

    fn start_with(apps: Vec<(String, String)>, config_edits: Vec<(String, String)>) -> Running {
        Running::start_with_options(common::Options {
            apps: Some(apps),
            config_edits,
            ..Default::default()
        })
    }

    fn start_with_options(options: common::Options) -> Running {
        Running {
            server: Some(common::Server::start_with(options)),
        }
    }

    fn s(&self) -> &common::Server {
        self.server.as_ref().expect("server")
    }

    fn dns(&self) -> SocketAddr {
        self.s().dns
    }

    fn admin(&self) -> SocketAddr {
        self.s().admin.expect("operations address")
    }

    fn log(&self) -> Vec<String> {
        self.s().log.lock().unwrap().clone()
    }

    /// `/debug/vars`.
    fn vars(&self) -> Value {
        http_json(self.admin(), "/debug/vars").1
    }

    /// `/api/applications/<name>`: status code and body.
    fn app(&self, name: &str) -> (u16, Value) {
        http_json(self.admin(), &format!("/api/applications/{name}"))
    }

    fn write_app(&self, file: &str, text: &str) {
        std::fs::write(self.s().apps.join(file), text).expect("write app");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        if std::thread::panicking() || std::env::var_os("HOSTILE_LOG").is_some() {
            eprintln!("---- server log (warnings and app events) ----");
            for l in server.log.lock().unwrap().iter() {
                if !l.contains(" query:") && !l.contains(" request:") {
                    eprintln!("{l}");
                }
            }
        }
        let children = descendants(server.pid());
        drop(server);
        kill_leftovers(&children);
    }
}

// ------------------------------------------------------------- queries

static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);

/// One UDP query with a 1 s timeout: the reply (None: lost) and latency.
fn ask(dns: SocketAddr, name: &str) -> (Option<dnsclient::Reply>, Duration) {
    let sock = dnsclient::socket(Duration::from_secs(1));
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let t = Instant::now();
    let r = dnsclient::query(&sock, dns, name, RecordType::A, id);
    (r, t.elapsed())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// NOERROR with the hostile fallback.
    Fallback,
    /// SERVFAIL (no fallback configured).
    ServFail,
}

fn matches(r: &dnsclient::Reply, want: Want) -> bool {
    match want {
        Want::Fallback => r.rcode == ResponseCode::NoError && r.answers == [FALLBACK],
        Want::ServFail => r.rcode == ResponseCode::ServFail,
    }
}

/// Queries hostile `app` once and asserts the answer and its latency.
fn expect(dns: SocketAddr, app: &str, want: Want) -> Duration {
    let (r, took) = ask(dns, &qname(app));
    let r = r.unwrap_or_else(|| panic!("{app}: no answer within 1 s (wanted {want:?})"));
    assert!(
        matches(&r, want),
        "{app}: wanted {want:?}, got {r:?} after {took:?}"
    );
    assert!(
        took < ANSWER_WITHIN,
        "{app}: {want:?} took {took:?} (limit {ANSWER_WITHIN:?})"
    );
    took
}

/// Waits until `name` answers `want` (first answer); how long it took.
fn until_answer(dns: SocketAddr, name: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let (Some(r), _) = ask(dns, name)
            && r.rcode == ResponseCode::NoError
            && r.answers.first().map(String::as_str) == Some(want)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{name} did not answer {want} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --------------------------------------------------------- good stream

struct Sample {
    sent: Instant,
    latency: Duration,
    reply: Option<dnsclient::Reply>,
}

/// Queries `good` every 5 ms (1 s timeout) until finished.
struct GoodStream {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoodStream {
    fn start(dns: SocketAddr) -> GoodStream {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (st, sa) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            let sock = dnsclient::socket(Duration::from_secs(1));
            let name = qname("good");
            let mut id = 40_000u16;
            while !st.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let sent = Instant::now();
                let reply = dnsclient::query(&sock, dns, &name, RecordType::A, id);
                sa.lock().unwrap().push(Sample {
                    sent,
                    latency: sent.elapsed(),
                    reply,
                });
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        GoodStream {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("good stream");
        }
        Summary::of(std::mem::take(&mut *self.samples.lock().unwrap()))
    }
}

/// What the good stream saw.
struct Summary {
    samples: Vec<Sample>,
}

impl Summary {
    fn of(samples: Vec<Sample>) -> Summary {
        Summary { samples }
    }

    fn total(&self) -> usize {
        self.samples.len()
    }

    /// Answered with one of `ok`.
    fn correct(&self, ok: &[&str]) -> usize {
        self.samples.iter().filter(|s| is_ok(s, ok)).count()
    }

    /// Answered, but not with one of `ok`: answer text → count.
    fn wrong(&self, ok: &[&str]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for s in &self.samples {
            if let Some(r) = &s.reply
                && !is_ok(s, ok)
            {
                *out.entry(format!("{} {:?}", r.rcode, r.answers))
                    .or_default() += 1;
            }
        }
        out
    }

    fn lost(&self) -> usize {
        self.samples.iter().filter(|s| s.reply.is_none()).count()
    }

    /// Worst latency of an answered query, and where it was.
    fn worst(&self) -> Duration {
        self.samples
            .iter()
            .filter(|s| s.reply.is_some())
            .map(|s| s.latency)
            .max()
            .unwrap_or_default()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut l: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.reply.is_some())
            .map(|s| s.latency)
            .collect();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() - 1) as f64 * p).round() as usize]
    }

    /// Periods with no answer: from the first lost query to the next
    /// answered one (or the end).
    fn outages(&self) -> Vec<Duration> {
        let mut out = Vec::new();
        let mut since: Option<Instant> = None;
        for s in &self.samples {
            match (&s.reply, since) {
                (None, None) => since = Some(s.sent),
                (Some(_), Some(t)) => {
                    out.push(s.sent.duration_since(t));
                    since = None;
                }
                _ => {}
            }
        }
        if let (Some(t), Some(last)) = (since, self.samples.last()) {
            out.push(last.sent.duration_since(t) + Duration::from_secs(1));
        }
        out
    }

    fn print(&self, what: &str, ok: &[&str]) {
        eprintln!(
            "[{what}] good app: {} queries, {} answered correctly, wrong {:?}, {} lost, worst latency {:?} (p50 {:?}, p99 {:?}), outages {:?}",
            self.total(),
            self.correct(ok),
            self.wrong(ok),
            self.lost(),
            self.worst(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.outages()
        );
    }

    /// Answers from the good app's fallback to queries sent outside
    /// `windows` (periods around a process restart).
    fn fallbacks_outside(&self, windows: &[(Instant, Instant)]) -> usize {
        self.samples
            .iter()
            .filter(|s| {
                s.reply
                    .as_ref()
                    .is_some_and(|r| r.answers.iter().any(|a| a == GOOD_FALLBACK))
            })
            .filter(|s| !windows.iter().any(|(a, b)| *a <= s.sent && s.sent <= *b))
            .count()
    }

    /// Windows around each outage (a restart): from 1 s before its first
    /// lost query to 2 s after the next answer.
    fn restart_windows(&self) -> Vec<(Instant, Instant)> {
        let mut out = Vec::new();
        let mut since: Option<Instant> = None;
        for s in &self.samples {
            match (&s.reply, since) {
                (None, None) => since = Some(s.sent),
                (Some(_), Some(t)) => {
                    out.push((t - Duration::from_secs(1), s.sent + Duration::from_secs(2)));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(t) = since {
            out.push((t - Duration::from_secs(1), Instant::now()));
        }
        out
    }

    /// Across process restarts: every query answered by one of `ok` or the
    /// good app's fallback, never wrongly, and the fallback only inside
    /// `windows` (around the restarts); at most `lost` queries lost (the
    /// ones read by a dying process).
    fn assert_across_restarts(
        &self,
        what: &str,
        ok: &[&str],
        windows: &[(Instant, Instant)],
        lost: usize,
    ) {
        self.print(what, ok);
        let mut with_fallback = ok.to_vec();
        with_fallback.push(GOOD_FALLBACK);
        assert!(
            self.wrong(&with_fallback).is_empty(),
            "[{what}] good queries answered wrongly: {:?}",
            self.wrong(ok)
        );
        assert!(
            self.lost() <= lost,
            "[{what}] {} good queries lost (at most {lost}: the ones being read at each restart)",
            self.lost()
        );
        let outside = self.fallbacks_outside(windows);
        assert_eq!(
            outside, 0,
            "[{what}] the good app got its fallback {outside} times outside the restarts"
        );
    }

    /// Every query answered with one of `ok`.
    fn assert_all_correct(&self, what: &str, ok: &[&str]) {
        self.print(what, ok);
        assert!(
            self.total() >= 50,
            "[{what}] too few good queries: {}",
            self.total()
        );
        assert_eq!(
            self.lost(),
            0,
            "[{what}] good queries went unanswered (the DNS socket stopped answering)"
        );
        assert!(
            self.wrong(ok).is_empty(),
            "[{what}] good queries answered wrongly: {:?}",
            self.wrong(ok)
        );
        assert_eq!(self.correct(ok), self.total());
    }
}

fn is_ok(s: &Sample, ok: &[&str]) -> bool {
    s.reply.as_ref().is_some_and(|r| {
        r.rcode == ResponseCode::NoError
            && r.answers.len() == 1
            && ok.contains(&r.answers[0].as_str())
    })
}

// ----------------------------------------------------- log inspection

/// The `key=value` tokens of a log line (values may be quoted).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[i..];
    if let Some(q) = rest.strip_prefix('"') {
        return q.split('"').next();
    }
    Some(rest.split_whitespace().next().unwrap_or(""))
}

fn about(line: &str, app: &str) -> bool {
    field(line, "app") == Some(app)
}

/// Workers the watchdog retired while running `app`.
fn retired_for(log: &[String], app: &str) -> usize {
    log.iter()
        .filter(|l| l.contains("JS worker stuck past the hard limit") && about(l, app))
        .count()
}

/// The error a call of `app` ended with, as logged by the worker
/// (`kind`, message), once the call has returned.
fn call_error(log: &[String], app: &str) -> Option<(String, String)> {
    let line = log
        .iter()
        .find(|l| l.contains("app failed; serving its fallback") && about(l, app))?;
    let kind = field(line, "kind").unwrap_or("?").to_string();
    let error = line.split(" error=").nth(1).unwrap_or("").to_string();
    Some((kind, error))
}

/// One line on how `app`'s runaway was contained.
fn containment(log: &[String], app: &str) -> String {
    let retired = retired_for(log, app);
    let ended = match call_error(log, app) {
        Some((kind, error)) => format!("the call ended with {kind}: {}", short(&error)),
        None => "the call has not returned (thread still running or process restarted)".to_string(),
    };
    let quarantined = log
        .iter()
        .any(|l| l.contains("app quarantined") && about(l, app));
    let mut s = if retired > 0 {
        format!("watchdog: answered at the hard limit, {retired} worker(s) retired; {ended}")
    } else {
        format!("stopped inside the call; {ended}")
    };
    if quarantined {
        s.push_str("; quarantined after the restart");
    }
    s
}

fn short(s: &str) -> String {
    let s = s.split(" (at ").next().unwrap_or(s);
    if s.len() > 110 {
        format!("{}…", &s[..110])
    } else {
        s.to_string()
    }
}

/// Threads of process `pid` whose name starts with `prefix`, with their
/// scheduling policy (`/proc/.../stat` field 41; 5 is `SCHED_IDLE`).
fn thread_policies(pid: u32, prefix: &str) -> Vec<(String, u32)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_string();
            // Fields after the name start at field 3; policy is field 41.
            let policy = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(38)?
                .parse()
                .ok()?;
            name.starts_with(prefix).then_some((name, policy))
        })
        .collect()
}

const SCHED_IDLE: u32 = 5;

/// The serving process (the supervisor's child).
fn serving_pid(r: &Running) -> u32 {
    descendants(r.s().pid())
        .first()
        .expect("a serving process")
        .0
}

/// The good app must run on the JS workers: `/debug/vars` shows that no
/// decision of it was stored in, or answered from, the memo (its calls to
/// `Math.random` make every decision impure).
fn assert_never_memoised(r: &Running, app: &str) {
    let memo = &r.vars()["memo"]["apps"][app];
    let from_memo =
        memo["memoised"] == true && (memo["stats"]["hits"] != 0 || memo["stats"]["stored"] != 0);
    assert!(!from_memo, "{app} was answered from the memo: {memo}");
}

/// `/api/applications/<app>` `last_minute`: provider → reason → count.
fn reasons(r: &Running, app: &str) -> Value {
    r.app(app).1["last_minute"].clone()
}

// ================================================================ tests

/// How a `STOPPED` runaway's call may end (`kind` in the worker's log).
fn stopped_kinds(name: &str) -> &'static [&'static str] {
    match name {
        "while_true" | "nested" => &["timeout", "limits"],
        "calls_1e6" => &["timeout"],
        "recursion" => &["limits"],
        // Whichever budget runs out first.
        "concat" | "push" | "push_objects" => &["memory", "timeout"],
        // The prelude's RangeError.
        _ => &["error"],
    }
}

/// How a `CALLBACK` runaway's call may end: the loop limit today; the time
/// budget if boa learns to interrupt a callback.
fn callback_kinds(_: &str) -> &'static [&'static str] {
    &["limits", "timeout"]
}

/// One server: the good app queried all along, and each of `bodies` in
/// `onRequest` queried once, one at a time (the next once the previous
/// call has ended, so that runaways do not pile up on two cores; for what
/// piling up does, see `stuck_threads_run_at_idle_priority`). Each
/// query must get the fallback in time and end the way `kinds` says; the
/// apps of `without_fallback` must answer SERVFAIL; no restart.
///
/// The good app (never memoised): no query lost, no wrong answer, no
/// fallback.
fn on_request_chunk(
    label: &str,
    bodies: &[(&str, &str)],
    without_fallback: &[(&str, &str)],
    kinds: fn(&str) -> &'static [&'static str],
    end_within: Duration,
) -> Summary {
    let mut apps = good_files();
    apps.extend(hostile_files("h_", bodies, on_request_app));
    for (n, b) in without_fallback {
        apps.push((format!("nf_{n}.js"), on_request_app(b)));
    }
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));

    let mut took = BTreeMap::new();
    for (n, _) in bodies {
        let app = format!("h_{n}");
        took.insert(app.clone(), expect(r.dns(), &app, Want::Fallback));
        let ended = wait_for(end_within, || call_error(&r.log(), &app).is_some());
        assert!(
            ended,
            "[{label}] {app}: the call did not end within {end_within:?}: {}",
            containment(&r.log(), &app)
        );
    }
    for (n, _) in without_fallback {
        let app = format!("nf_{n}");
        for _ in 0..3 {
            took.insert(app.clone(), expect(r.dns(), &app, Want::ServFail));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let summary = stream.finish();

    let log = r.log();
    for (app, t) in &took {
        eprintln!(
            "[{label}] {app}: answered in {t:?}; {}",
            containment(&log, app)
        );
    }
    for (n, _) in bodies {
        let app = format!("h_{n}");
        assert_eq!(
            reasons(&r, &app),
            serde_json::json!({ "fallback": { "fallback": 1 } }),
            "{app}: decision reasons"
        );
        let (kind, error) = call_error(&log, &app).expect("ended");
        let expected = kinds(n);
        assert!(
            expected.contains(&kind.as_str()),
            "{app}: ended with {kind} ({error}), expected one of {expected:?}"
        );
    }
    let vars = r.vars();
    assert_eq!(vars["restarts"], 0, "[{label}] no restart expected: {vars}");
    assert_eq!(
        vars["quarantined"],
        serde_json::json!({}),
        "[{label}] {vars}"
    );

    let replaced = bodies
        .iter()
        .map(|(n, _)| retired_for(&log, &format!("h_{n}")))
        .sum::<usize>();
    eprintln!(
        "[{label}] {replaced} workers replaced; worst good-app latency {:?}",
        summary.worst()
    );
    assert_never_memoised(&r, "good");
    summary.assert_all_correct(label, &[GOOD]);
    summary
}

/// `onRequest` runaways that the budgets, the recursion limit and the
/// prelude stop: every query gets the fallback in time, the good app keeps
/// answering, no restart. (One query each: today each of these retires a
/// worker, see `runaway_stopped_by_the_budget_retires_no_worker`; three
/// per server, so that collateral retirements cannot reach the cap.)
#[test]
fn on_request_runaways_stopped_in_the_call() {
    let _one = serial();
    let by = |names: &[&str]| pick(STOPPED, names);
    let wait = Duration::from_secs(10);
    let mut worst = Duration::ZERO;
    for (i, (chunk, without_fallback)) in [
        (
            by(&["while_true", "recursion", "fill", "repeat"]),
            by(&["recursion", "repeat"]),
        ),
        (by(&["nested", "calls_1e6", "concat"]), vec![]),
        (by(&["push", "push_objects"]), vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let s = on_request_chunk(
            &format!("stopped {}", i + 1),
            &chunk,
            &without_fallback,
            stopped_kinds,
            wait,
        );
        worst = worst.max(s.worst());
    }
    eprintln!("[stopped] worst good-app latency over all servers: {worst:?}");
}

/// `onRequest` runaways inside native callbacks (forEach, sort comparator,
/// getter, valueOf, eval, Proxy trap): the query gets the fallback at the
/// hard limit, the thread is retired (debug build: boa's loop limit takes
/// ~2 s; release ~20 ms) and later ends with the loop-limit error; the
/// good app keeps answering, no restart.
#[test]
fn on_request_runaways_in_native_callbacks() {
    let _one = serial();
    let mut worst = Duration::ZERO;
    for (i, chunk) in CALLBACK.chunks(3).enumerate() {
        let s = on_request_chunk(
            &format!("callback {}", i + 1),
            chunk,
            &[],
            callback_kinds,
            Duration::from_secs(20),
        );
        worst = worst.max(s.worst());
    }
    eprintln!("[callback] worst good-app latency over all servers: {worst:?}");
}

/// Runaways nothing in-process stops: each query gets the fallback at the
/// hard limit and retires a thread (or, while the app backs off after
/// runaways in a row, at once without running it); past the cap the
/// serving process exits, the supervisor restarts it, the apps that were
/// running are quarantined (fallback, reason `quarantined`) and a new
/// saved version of one of them is served at once.
#[test]
fn never_ending_runaways_restart_the_process_and_are_quarantined() {
    let _one = serial();
    let mut apps = good_files();
    apps.extend(hostile_files("h_", NEVER_ENDING, on_request_app));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));

    // Round robin until the process restarts.
    let started = Instant::now();
    let mut answered = Vec::new();
    let mut lost = 0;
    let mut sent = 0;
    while r.vars()["restarts"] == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no restart after {sent} runaway queries in 30 s"
        );
        let (n, _) = NEVER_ENDING[sent % NEVER_ENDING.len()];
        let app = format!("h_{n}");
        let (reply, took) = ask(r.dns(), &qname(&app));
        sent += 1;
        match reply {
            Some(reply) => {
                assert!(matches(&reply, Want::Fallback), "{app}: {reply:?}");
                assert!(took < ANSWER_WITHIN, "{app}: fallback after {took:?}");
                answered.push((app, took));
            }
            // Read by the serving process as it exited.
            None => lost += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let restart_at = Instant::now();
    let restart_seen = started.elapsed();
    eprintln!(
        "[never-ending] restart after {sent} runaway queries, {restart_seen:?}; {lost} runaway queries lost in the restart"
    );
    for (app, took) in &answered {
        eprintln!("[never-ending] {app}: fallback in {took:?}");
    }
    assert!(
        lost <= 1,
        "{lost} runaway queries lost; at most the one in flight at the restart may be"
    );
    assert!(
        r.s().wait_log(
            "serving process died; restarting it",
            Duration::from_secs(1)
        ),
        "the supervisor did not log the restart"
    );
    let exit = r
        .log()
        .into_iter()
        .find(|l| l.contains("too many stuck JS workers"))
        .expect("the retired cap was the cause");
    eprintln!("[never-ending] {exit}");

    // The new process: the runaways that were still running when the old
    // one exited (all of them today) are quarantined and answered at once.
    let log = r.log();
    let names: Vec<String> = NEVER_ENDING
        .iter()
        .map(|(n, _)| format!("h_{n}"))
        .filter(|app| retired_for(&log, app) > 0 && call_error(&log, app).is_none())
        .collect();
    assert!(
        names.contains(&"h_redos".to_string()),
        "a ReDoS call that cannot end was not seen stuck: {names:?}"
    );
    for app in &names {
        let t = expect(r.dns(), app, Want::Fallback);
        let (status, info) = r.app(app);
        assert_eq!(status, 200);
        assert_eq!(info["status"], "quarantined", "{app}: {info}");
        assert!(
            info["quarantine"]["reason"]
                .as_str()
                .is_some_and(|s| s.contains("running when the serving process died")),
            "{app}: {info}"
        );
        assert_eq!(
            info["last_minute"],
            serde_json::json!({ "fallback": { "quarantined": 1 } }),
            "{app}: {info}"
        );
        eprintln!(
            "[never-ending] {app}: quarantined, fallback in {t:?}; {}",
            containment(&r.log(), app)
        );
    }
    let vars = r.vars();
    assert_eq!(vars["restarts"], 1, "exactly one restart: {vars}");
    for app in &names {
        assert!(
            vars["quarantined"].get(app).is_some(),
            "{app} not in /debug/vars quarantined: {vars}"
        );
    }
    assert_eq!(
        vars["workers"]["retired"], 0,
        "the quarantined apps must not run again: {vars}"
    );

    // The restarted process answers before it watches the apps directory
    // (see `a_save_right_after_a_restart_is_loaded`): save once it is ready.
    assert!(
        wait_for(Duration::from_secs(5), || r
            .log()
            .iter()
            .filter(|l| l.contains("switchyard ready"))
            .count()
            >= 2),
        "the restarted serving process never became ready"
    );

    // Only the runaways (see `a_restart_quarantines_only_the_runaways`).
    assert!(
        vars["quarantined"].get("good").is_none(),
        "the good app was quarantined too: {}",
        vars["quarantined"]
    );

    // A new saved version lifts the quarantine of that app only.
    let fixed = "h_redos";
    r.write_app(&format!("{fixed}.js"), &answering(FIXED));
    let t = until_answer(r.dns(), &qname(fixed), FIXED, Duration::from_secs(2));
    eprintln!("[never-ending] new version of {fixed} served {t:?} after the save");
    assert_eq!(r.app(fixed).1["status"], "ok");
    assert!(r.vars()["quarantined"].get(fixed).is_none());
    for app in names.iter().filter(|a| *a != fixed) {
        expect(r.dns(), app, Want::Fallback);
        assert_eq!(r.app(app).1["status"], "quarantined", "{app}");
    }
    // The stream waits 1 s for a query lost in the restart: let it send
    // fresh ones after that.
    std::thread::sleep(Duration::from_millis(1300));
    let summary = stream.finish();

    // The good app: answered all along by its own code but for the
    // restart (at most the query read by the dying process is lost).
    let mut windows = summary.restart_windows();
    windows.push((
        restart_at - Duration::from_secs(3),
        restart_at + Duration::from_secs(2),
    ));
    summary.assert_across_restarts("never-ending", &[GOOD], &windows, 1);
    let outages = summary.outages();
    assert!(
        outages.len() <= 1,
        "the good app stopped answering more than once (one restart): {outages:?}"
    );
    for o in &outages {
        assert!(
            *o <= Duration::from_millis(2500),
            "the DNS socket did not answer again within ~2 s of the restart: {o:?}"
        );
    }
    // After the restart (and the lift, if needed) the good app is served by
    // its own code again.
    let tail: Vec<&Sample> = summary.samples.iter().rev().take(20).collect();
    assert!(
        tail.iter().all(|s| is_ok(s, &[GOOD])),
        "the good app does not answer normally at the end"
    );
}

/// `init` runaways that the load budget, the recursion limit, the memory
/// budget and the prelude stop: present at startup and added later, the
/// app never loads (its fallback answers, error in `/api/applications`) and the good
/// app keeps answering; the loader is free again afterwards.
#[test]
fn init_runaways_stopped_by_the_load_budget() {
    let _one = serial();
    let mut apps = good_files();
    apps.extend(hostile_files("h_init_", STOPPED, init_app));
    let started = Instant::now();
    let r = Running::start(apps);
    eprintln!(
        "[init-stopped] ready {:?} after start with {} runaway inits",
        started.elapsed(),
        STOPPED.len()
    );
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));

    let check = |prefix: &str| {
        for (n, _) in STOPPED {
            let app = format!("{prefix}{n}");
            let t = expect(r.dns(), &app, Want::Fallback);
            let (status, info) = r.app(&app);
            assert_eq!(status, 200, "{app}: {info}");
            assert_eq!(info["status"], "error", "{app}: {info}");
            let msg = info["last_error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let expected: &[&str] = match *n {
                "while_true" | "nested" => &[
                    "init ran past its time budget",
                    "RuntimeLimitError: reached the maximum number of iteration loops",
                ],
                "calls_1e6" => &["init ran past its time budget"],
                "recursion" => &["RuntimeLimitError"],
                "concat" | "push" | "push_objects" => &[
                    "init allocated more than its memory budget",
                    "init ran past its time budget",
                ],
                _ => &["RangeError"],
            };
            assert!(
                expected.iter().any(|e| msg.contains(e)),
                "{app}: expected one of {expected:?} in {msg:?}"
            );
            eprintln!(
                "[init-stopped] {app}: fallback in {t:?}; load error: {}",
                short(&msg)
            );
        }
    };
    check("h_init_");

    // The same runaways added while the good app is queried.
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));
    let added = Instant::now();
    for (file, text) in hostile_files("h_init2_", STOPPED, init_app) {
        r.write_app(&file, &text);
    }
    let loaded = wait_for(Duration::from_secs(30), || {
        let list = http_json(r.admin(), "/api/applications").1;
        let errors = list["applications"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|x| {
                    x["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("h_init2_"))
                        && x["status"] == "error"
                })
                .count()
        });
        errors == STOPPED.len()
    });
    assert!(
        loaded,
        "the added runaway inits were not all reported within 30 s"
    );
    eprintln!(
        "[init-stopped] {} runaway inits added: all load errors reported after {:?}",
        STOPPED.len(),
        added.elapsed()
    );
    check("h_init2_");

    // The loader is free again: an edit of the good app is served (late:
    // see `broken_apps_do_not_slow_later_reloads`).
    r.write_app("good.js", &good_app(GOOD_V2));
    let t = until_answer(r.dns(), &qname("good"), GOOD_V2, Duration::from_secs(30));
    eprintln!(
        "[init-stopped] edit of the good app served after {t:?} ({} broken apps present)",
        2 * STOPPED.len()
    );
    std::thread::sleep(Duration::from_millis(200));
    let summary = stream.finish();
    summary.assert_all_correct("init-stopped", &[GOOD, GOOD_V2]);
    assert_eq!(r.vars()["restarts"], 0);
}

/// `init` runaways inside native callbacks: the loader runs each until the
/// loop limit stops it, then records the error; the app never loads, the
/// good app keeps answering and later edits still load.
#[test]
fn init_runaways_in_native_callbacks() {
    let _one = serial();
    let r = Running::start(good_files());
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));

    let added = Instant::now();
    for (file, text) in hostile_files("h_init_", CALLBACK, init_app) {
        r.write_app(&file, &text);
    }
    let reported = wait_for(Duration::from_secs(60), || {
        CALLBACK
            .iter()
            .all(|(n, _)| r.app(&format!("h_init_{n}")).1["status"] == "error")
    });
    let loader_time = added.elapsed();
    assert!(
        reported,
        "the runaway inits were not all reported within 60 s"
    );
    eprintln!(
        "[init-callback] {} runaway inits: all load errors reported after {loader_time:?} (the loop limit or the bounded loader stops each)",
        CALLBACK.len()
    );
    for (n, _) in CALLBACK {
        let app = format!("h_init_{n}");
        let t = expect(r.dns(), &app, Want::Fallback);
        let info = r.app(&app).1;
        let msg = info["last_error"]["message"].as_str().unwrap_or_default();
        // The loop limit (release: ~20 ms), or the bounded loader gives up
        // first (a loaded debug build can take more than its 1.5 s).
        assert!(
            msg.contains("RuntimeLimitError") || msg.contains("load did not finish"),
            "{app}: {msg}"
        );
        eprintln!(
            "[init-callback] {app}: fallback in {t:?}; load error: {}",
            short(msg)
        );
    }
    // The loader is free again: an edit of the good app is served (late:
    // see `broken_apps_do_not_slow_later_reloads`).
    r.write_app("good.js", &good_app(GOOD_V2));
    let t = until_answer(r.dns(), &qname("good"), GOOD_V2, Duration::from_secs(60));
    eprintln!(
        "[init-callback] edit of the good app served after {t:?} ({} broken apps present)",
        CALLBACK.len()
    );
    std::thread::sleep(Duration::from_millis(200));
    let summary = stream.finish();
    // The loader thread spins at normal priority while each runaway runs
    // (debug build: ~1 s each), on the same two cores as the workers.
    summary.assert_all_correct("init-callback", &[GOOD, GOOD_V2]);
    assert_eq!(r.vars()["restarts"], 0);
}

// ================================================ holes found (guards)

/// A runaway the budget stops must cost its budget, not a worker, however
/// often it is queried. (Found as a hole: every call after an abandoned
/// one runs on a rebuilt instance, whose first call got the load budget,
/// 250 ms, past the 100 ms hard limit: every query retired a worker and
/// nine queries of a plain `while (true)` restarted the serving process.
/// Now a first call gets ten decision budgets, at most the load budget.)
#[test]
fn runaway_stopped_by_the_budget_retires_no_worker() {
    let _one = serial();
    let mut apps = good_files();
    apps.extend(hostile_files("h_", &STOPPED[..1], on_request_app));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    let mut took = Vec::new();
    let mut answered = 0;
    for _ in 0..(RETIRED_CAP + 4) {
        let (reply, t) = ask(r.dns(), &qname("h_while_true"));
        took.push(t);
        answered += usize::from(reply.is_some_and(|x| matches(&x, Want::Fallback)));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let summary = stream.finish();
    let vars = r.vars();
    let retired = retired_for(&r.log(), "h_while_true");
    eprintln!(
        "[budget-retire] latencies {took:?}; {answered} fallbacks; {retired} workers retired; restarts {}",
        vars["restarts"]
    );
    assert_eq!(
        vars["restarts"], 0,
        "a `while (true)` app restarted the serving process ({retired} workers retired)"
    );
    assert_eq!(retired, 0, "a budget-stopped runaway retired workers");
    assert_eq!(answered, took.len(), "every query gets the fallback");
    assert!(took.iter().all(|t| *t < ANSWER_WITHIN), "{took:?}");
    summary.assert_all_correct("budget-retire", &[GOOD]);
}

/// After a restart only the apps that caused it are quarantined, not a
/// healthy app that happened to be deciding on another worker. (Found as
/// a hole: every app in flight at `exit(70)` was quarantined and then
/// answered its fallback until someone saved a new version of it; seen
/// with the plain good app in about a third of the crash runs.)
#[test]
fn a_restart_quarantines_only_the_runaways() {
    let _one = serial();
    let mut apps = good_files();
    // A legitimate app that takes 30 ms of its 80 ms budget: almost
    // always in flight while queried from two threads.
    apps.push((
        "busy.js".into(),
        "function onRequest(request, response) {\n  var t = Date.now();\n  while (Date.now() - t < 30) {}\n  response.addARecord('192.0.2.3');\n}\n".into(),
    ));
    apps.push((
        "busy.toml".into(),
        "fallback = [\"192.0.2.252\"]\nbudget_ms = 80\n".into(),
    ));
    apps.extend(hostile_files("h_", &NEVER_ENDING[1..2], on_request_app));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("busy"), "192.0.2.3", Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (stop, dns) = (stop.clone(), r.dns());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = ask(dns, &qname("busy"));
                }
            })
        })
        .collect();
    // One runaway app backs off after its second runaway in a row (up to
    // 2 s between probes), so its stuck threads reach the cap in ~10 s.
    let started = Instant::now();
    while r.vars()["restarts"] == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no restart in 30 s"
        );
        let _ = ask(r.dns(), &qname("h_redos"));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        let _ = t.join();
    }
    let vars = r.vars();
    eprintln!(
        "[bystander] quarantined after the restart: {}",
        vars["quarantined"]
    );
    let quarantined: BTreeSet<String> = vars["quarantined"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(
        quarantined,
        BTreeSet::from(["h_redos".to_string()]),
        "only the runaway should be quarantined"
    );
    until_answer(r.dns(), &qname("busy"), "192.0.2.3", Duration::from_secs(1));
}

/// The hard limit (100 ms) applies to a decision, not to building the
/// app's instance on a worker, which has the load budget (250 ms): every
/// worker builds an app on its first query for it (and again after a
/// reload or an abandoned call). An app whose top level takes longer than
/// the hard limit (here 150 ms precomputing a table, within its load
/// budget) must be answered by its code and retire no worker. (Found as a
/// hole: the watchdog counted the build against the hard limit, so such an
/// app was only ever answered from its fallback and each query retired a
/// worker, nine and a restart; fixed by building the instance under the
/// load budget before the decision, `runtime::warm`.)
#[test]
fn a_fresh_worker_is_not_retired_for_building_an_app() {
    let _one = serial();
    let slow_top_level = "var TABLE = [];\nvar t0 = Date.now();\nwhile (Date.now() - t0 < 150) { TABLE.push(TABLE.length % 250); if (TABLE.length > 1000) { TABLE = []; } }\n\nfunction onRequest(request, response) {\n  response.addARecord('192.0.2.2');\n}\n";
    let mut apps = good_files();
    apps.push(("big.js".into(), slow_top_level.into()));
    apps.push(("big.toml".into(), "fallback = [\"192.0.2.253\"]\n".into()));
    let r = Running::start(apps);
    let info = r.app("big").1;
    assert_eq!(
        info["status"], "ok",
        "premise: the app loads within its load budget: {info}"
    );
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (reply, t) = ask(r.dns(), &qname("big"));
        seen.push((reply.map(|x| x.answers), t));
        std::thread::sleep(Duration::from_millis(200));
    }
    let vars = r.vars();
    eprintln!(
        "[fresh-worker] answers {seen:?}; workers {}; restarts {}",
        vars["workers"], vars["restarts"]
    );
    assert!(
        seen.iter()
            .all(|(a, _)| a.as_deref() == Some(&["192.0.2.2".to_string()][..])),
        "the app was answered from its fallback: {seen:?}"
    );
    assert_eq!(
        vars["workers"]["retired"], 0,
        "workers were retired for building a healthy app"
    );
}

/// A reloaded app whose top level takes a while (150 ms, within its load
/// budget) is built by one worker at a time, so the other workers keep
/// answering every other app meanwhile. (Found as a flake: every worker built it at
/// once, and every app's queries waited for the slowest top level, 217 ms
/// once on two busy cores.)
#[test]
fn a_slow_reload_stalls_one_worker_not_all() {
    let _one = serial();
    let slow = |addr: &str| {
        format!(
            "var TABLE = [];\nvar t0 = Date.now();\nwhile (Date.now() - t0 < 150) {{ TABLE.push(TABLE.length % 250); if (TABLE.length > 1000) {{ TABLE = []; }} }}\n{}",
            answering(addr)
        )
    };
    let mut apps = good_files();
    apps.push(("slow.js".into(), slow("192.0.2.2")));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(300));
    for round in 3..6 {
        let addr = format!("192.0.2.{round}");
        let loaded = |log: &[String]| {
            log.iter()
                .filter(|l| l.contains("app loaded") && about(l, "slow"))
                .count()
        };
        let before = loaded(&r.log());
        r.write_app("slow.js", &slow(&addr));
        assert!(
            wait_for(Duration::from_secs(5), || loaded(&r.log()) > before),
            "the new version was not loaded"
        );
        // Every worker builds it, one at a time; the slow app itself is
        // asked only then (a query for it on a worker without the new
        // version waits for that worker's build, like a first query).
        std::thread::sleep(Duration::from_millis(700));
        until_answer(r.dns(), &qname("slow"), &addr, Duration::from_secs(5));
    }
    let summary = stream.finish();
    summary.print("slow-reload", &[GOOD]);
    assert!(
        summary.worst() < ANSWER_WITHIN,
        "a reload stalled the good app for {:?}",
        summary.worst()
    );
}

/// Retired threads keep running (their CPU cannot be reclaimed), so they
/// must not compete with the healthy workers: the watchdog moves them to
/// `SCHED_IDLE`. (Found as a hole: they ran at the same priority, and on
/// two cores a handful of them made healthy decisions late, answered from
/// the fallback, and got healthy workers retired, which brought the
/// restart closer and, with the bystander hole, quarantined the good app.)
/// The good app is then checked under six stuck threads, after a
/// baseline on the same server. A wall-clock limit cannot tell the stuck
/// threads from other load on the machine (this suite shares two cores
/// with builds), so up to three late answers are tolerated and reported;
/// six stuck threads of one kind showed no difference from the baseline.
#[test]
fn stuck_threads_run_at_idle_priority() {
    let _one = serial();
    let mut apps = good_files();
    // Two copies of each runaway, each asked once: an app's second runaway
    // in a row would put it in backoff (its query answered without running
    // it), and when that starts depends on when its first stuck call ends.
    apps.extend(hostile_files("h_", NEVER_ENDING, on_request_app));
    apps.extend(hostile_files("i_", NEVER_ENDING, on_request_app));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let baseline = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_secs(2));
    baseline.finish().print("idle-priority baseline", &[GOOD]);
    // Six stuck threads, below the cap (their latencies are not the point
    // here).
    for i in 0..6 {
        let (n, _) = NEVER_ENDING[i % NEVER_ENDING.len()];
        let app = format!("{}{n}", if i < NEVER_ENDING.len() { "h_" } else { "i_" });
        let (reply, t) = ask(r.dns(), &qname(&app));
        assert!(
            reply.is_some_and(|x| matches(&x, Want::Fallback)),
            "{app}: no fallback ({t:?})"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    let retired_ok = wait_for(Duration::from_secs(2), || {
        r.vars()["workers"]["retired"] == 6
    });
    let policies = thread_policies(serving_pid(&r), "js-worker");
    let idle = policies.iter().filter(|(_, p)| *p == SCHED_IDLE).count();
    eprintln!("[idle-priority] JS worker threads (name, policy): {policies:?}");
    assert!(
        retired_ok,
        "six runaways should have retired six workers: {}",
        r.vars()["workers"]
    );
    // Every retired thread still running is at SCHED_IDLE: only the two
    // live workers are not. (A runaway may have ended by now, its thread
    // with it.)
    assert_eq!(
        policies.len() - idle,
        2,
        "only the two live workers may run at normal priority: {policies:?}"
    );
    assert!(
        idle >= 4,
        "the stuck threads should run at SCHED_IDLE: {policies:?}"
    );

    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_secs(4));
    let summary = stream.finish();
    let log = r.log();
    let vars = r.vars();
    eprintln!(
        "[idle-priority] {} good workers retired",
        retired_for(&log, "good")
    );
    assert_eq!(vars["restarts"], 0);
    summary.assert_all_correct("idle-priority", &[GOOD]);
}

/// An `init` that never ends (1000 callbacks each under the loop limit, a
/// ReDoS regex) is abandoned by the bounded loader: the app fails to load
/// (its fallback answers, error shown), its thread is left at `SCHED_IDLE`, and later
/// edits of other apps still load. (Found as a hole: the app watcher's
/// own thread ran it for minutes or forever, and no later edit of any app
/// was loaded meanwhile: no new version, no quarantine lifted.)
#[test]
fn init_that_never_ends_does_not_block_loading() {
    let _one = serial();
    let r = Running::start(good_files());
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    for (file, text) in hostile_files("h_init_", &NEVER_ENDING[..2], init_app) {
        r.write_app(&file, &text);
    }
    std::thread::sleep(Duration::from_secs(1));
    r.write_app("good.js", &good_app(GOOD_V2));
    let served = wait_for(Duration::from_secs(3), || {
        ask(r.dns(), &qname("good"))
            .0
            .is_some_and(|x| x.answers.first().map(String::as_str) == Some(GOOD_V2))
    });
    let summary = stream.finish();
    for (n, _) in &NEVER_ENDING[..2] {
        let app = format!("h_init_{n}");
        let (_, t) = ask(r.dns(), &qname(&app));
        eprintln!(
            "[init-never-ending] {app}: answered in {t:?}; /api/applications: {}",
            r.app(&app).1
        );
    }
    assert!(
        served,
        "an edit of another app was not loaded within 3 s: the loader is stuck in a runaway init"
    );
    for (n, _) in &NEVER_ENDING[..2] {
        let app = format!("h_init_{n}");
        let reported = wait_for(Duration::from_secs(5), || {
            r.app(&app).1["status"] == "error"
        });
        assert!(reported, "{app} should fail to load: {}", r.app(&app).1);
        expect(r.dns(), &app, Want::Fallback);
    }
    let loaders = thread_policies(serving_pid(&r), "app-load-");
    eprintln!("[init-never-ending] loader threads (name, policy): {loaders:?}");
    assert!(
        loaders.iter().filter(|(_, p)| *p == SCHED_IDLE).count() >= 2,
        "the abandoned loads should run on at SCHED_IDLE: {loaders:?}"
    );
    summary.assert_all_correct("init-never-ending", &[GOOD, GOOD_V2]);
}

/// The same at startup (and so after every restart): a server whose apps
/// directory holds an app with a never-ending `init` still becomes ready.
/// (Found as a hole: it never did, and the supervisor could not notice,
/// the serving process being alive; queries waited in the socket buffers.)
#[test]
fn startup_with_an_init_that_never_ends_becomes_ready() {
    let _one = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let apps = dir.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    for (file, text) in
        good_files()
            .into_iter()
            .chain(hostile_files("h_init_", &NEVER_ENDING[1..2], init_app))
    {
        std::fs::write(apps.join(file), text).unwrap();
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let config = dir.path().join("switchyard.toml");
    std::fs::copy(format!("{root}/examples/switchyard.toml"), &config).unwrap();
    let mut child = common::server::serve_command(
        Path::new(env!("CARGO_BIN_EXE_switchyard")),
        &config,
        "127.0.0.1:0",
        &dir.path().join("data"),
    )
    .arg("--apps")
    .arg(&apps)
    .spawn()
    .expect("start switchyard");
    let (_, rx) = common::server::follow_stderr(&mut child);
    let start = Instant::now();
    let mut ready = false;
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && line.contains("switchyard ready")
        {
            ready = true;
            break;
        }
    }
    eprintln!("[startup] ready: {ready} after {:?}", start.elapsed());
    let pids = descendants(child.id());
    common::server::stop(&mut child);
    kill_leftovers(&pids);
    assert!(
        ready,
        "the server did not become ready within 10 s with a never-ending init in its apps directory"
    );
}

/// A version saved right after a restart is loaded (it is how an operator
/// lifts a quarantine). (Found as a hole: the restarted serving process
/// answered DNS and HTTP before it installed its apps-directory watcher,
/// and nothing rescanned once the watcher was up: a save in that window
/// was never loaded, until some later change triggered a reload; 3 of 3
/// runs, and the intermittent failure of the quarantine-lift step.)
#[test]
fn a_save_right_after_a_restart_is_loaded() {
    let _one = serial();
    let r = Running::start(good_files());
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let child = descendants(r.s().pid())[0].0;
    let _ = Command::new("kill")
        .args(["-s", "KILL", &child.to_string()])
        .status();
    let killed = Instant::now();
    // Save as soon as the new serving process answers.
    let sock = dnsclient::socket(Duration::from_millis(2));
    while dnsclient::query(
        &sock,
        r.dns(),
        &qname("good"),
        RecordType::A,
        NEXT_ID.fetch_add(1, Ordering::Relaxed),
    )
    .is_none()
    {
        assert!(killed.elapsed() < Duration::from_secs(5), "no restart");
    }
    r.write_app("good.js", &good_app(GOOD_V2));
    eprintln!(
        "[save-after-restart] saved {:?} after the crash, on the new process's first answer",
        killed.elapsed()
    );
    let served = wait_for(Duration::from_secs(3), || {
        ask(r.dns(), &qname("good"))
            .0
            .is_some_and(|x| x.answers == [GOOD_V2])
    });
    assert!(
        served,
        "a version saved right after a restart was not loaded within 3 s"
    );
}

/// A runaway's query must get its fallback within the hard limit even when
/// its instance has to be built first, and a runaway must not hold a worker
/// for a rebuild on every query. (Found as a hole: every abandoned call
/// poisons the instance, so a runaway app was rebuilt on every query, the
/// build watched under the load budget on top of the hard limit and the
/// first call given 50 ms more: an app whose top level takes 200 ms and
/// whose `onRequest` runs away was answered from its fallback after
/// ~260 ms every time, and three clients asking for it in a loop kept both
/// workers busy: ~30 good answers in 3 s instead of ~600, worst ~300 ms.
/// Now the query is answered at the hard limit counted from when a worker
/// took it, the build included; and from its second runaway in a row the
/// app backs off: its queries get the fallback at once, one probe at a
/// time runs it, see `engine::backoff::Runaway`.)
#[test]
fn a_runaway_rebuilt_on_every_query_is_answered_at_the_hard_limit() {
    let _one = serial();
    let app = "var TABLE = [];\nvar t0 = Date.now();\nwhile (Date.now() - t0 < 200) { TABLE.push(1); if (TABLE.length > 1000) { TABLE = []; } }\n\nfunction onRequest(request, response) {\n  while (true) {}\n}\n";
    let mut apps = good_files();
    apps.push(("h_slow_top.js".into(), app.into()));
    apps.push(("h_slow_top.toml".into(), sidecar(FALLBACK)));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let mut took = Vec::new();
    for _ in 0..5 {
        let (reply, t) = ask(r.dns(), &qname("h_slow_top"));
        assert!(
            reply.is_some_and(|x| matches(&x, Want::Fallback)),
            "no fallback ({t:?})"
        );
        took.push(t);
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "[rebuild-every-query] fallback latencies {took:?}; workers {}",
        r.vars()["workers"]
    );

    // Three clients asking for it in a loop, while the good app is queried.
    let stream = GoodStream::start(r.dns());
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..3)
        .map(|_| {
            let (stop, dns) = (stop.clone(), r.dns());
            std::thread::spawn(move || {
                // (answers, not the fallback, worst latency)
                let mut seen = (0usize, 0usize, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let (reply, t) = ask(dns, &qname("h_slow_top"));
                    seen.0 += 1;
                    seen.1 += usize::from(!reply.is_some_and(|x| matches(&x, Want::Fallback)));
                    seen.2 = seen.2.max(t);
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (mut flooded, mut bad, mut flood_worst) = (0, 0, Duration::ZERO);
    for t in flood {
        let (n, b, w) = t.join().expect("flood client");
        flooded += n;
        bad += b;
        flood_worst = flood_worst.max(w);
    }
    let summary = stream.finish();
    summary.print("rebuild-every-query flood", &[GOOD]);
    let vars = r.vars();
    eprintln!(
        "[rebuild-every-query] flood: {flooded} queries, {bad} not the fallback, worst {flood_worst:?}; failures {}; workers {}",
        vars["app_failures"]["h_slow_top"], vars["workers"]
    );
    assert_eq!(bad, 0, "flood queries not answered from the fallback");
    assert!(
        flood_worst < ANSWER_WITHIN,
        "a flood query took {flood_worst:?}"
    );
    assert_eq!(
        vars["workers"]["retired"], 0,
        "a budget-stopped runaway retired workers"
    );

    assert!(
        took.iter().all(|t| *t < ANSWER_WITHIN),
        "fallbacks later than the hard limit + tolerance ({ANSWER_WITHIN:?}): {took:?}"
    );
    assert_never_memoised(&r, "good");
    assert!(
        summary.wrong(&[GOOD]).is_empty(),
        "three clients of a runaway app made the good app answer from its fallback: {:?}",
        summary.wrong(&[GOOD])
    );
    assert!(
        summary.worst() < Duration::from_millis(100),
        "three clients of a runaway app delayed the good app past the hard limit: worst {:?} over {} queries in 3 s",
        summary.worst(),
        summary.total()
    );
}

/// An app whose `init` fails should cost its load budget once per saved
/// version, not on every later edit of another app. Every reload used to
/// load again every app without a serving version; now an unchanged file
/// is skipped unless it failed on the time budget (retried, in case the
/// machine was only busy). So each unchanged `while (true)`-in-`init` app
/// still adds its 250 ms to every later edit of any app, in series: three
/// such apps make an edit of a healthy app take ~1.2 s instead of ~0.35 s,
/// twenty would make it ~5 s.
#[test]
fn broken_apps_do_not_slow_later_reloads() {
    let _one = serial();
    let mut apps = good_files();
    apps.extend(hostile_files("h_init_", &STOPPED[..3], init_app));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let mut took = Vec::new();
    for (i, v) in [GOOD_V2, GOOD, GOOD_V2].iter().enumerate() {
        std::thread::sleep(Duration::from_millis(500));
        r.write_app("good.js", &format!("// edit {i}\n{}", good_app(v)));
        took.push(until_answer(
            r.dns(),
            &qname("good"),
            v,
            Duration::from_secs(10),
        ));
    }
    eprintln!(
        "[reload-retries] with 3 broken apps (250 ms load budget each), edits of good served after {took:?}"
    );
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(600)),
        "edits of a healthy app waited for broken apps to fail again: {took:?}"
    );
}

/// The serving process dies from outside the app's control, the ways a
/// process dies in production: `abort()` (SIGABRT, what a failed
/// allocation or a panic under `panic = "abort"` does), a trap (SIGILL,
/// what `intrinsics::abort` and a corrupted stack do; an external SIGSEGV
/// would not do, Rust's stack-overflow handler returns from it) and the
/// kernel's out-of-memory killer (SIGKILL). Each
/// time a runaway is in flight; the supervisor starts a new serving
/// process on the same sockets, the good app keeps being answered (at
/// most the query being read at the kill is lost), the runaway is
/// quarantined, and its next saved version is served. At the first kill a
/// healthy, never memoised app (`busy`, 30 ms decisions queried from two
/// threads) is in flight too: there is no evidence against its short call,
/// so it is not quarantined.
#[test]
fn a_serving_process_killed_by_a_signal_is_replaced_and_quarantines_the_app_in_flight() {
    let _one = serial();
    let redos = pick(NEVER_ENDING, &["redos"])[0].1;
    let signals = [("abrt", "ABRT"), ("ill", "ILL"), ("kill", "KILL")];
    let mut apps = good_files();
    apps.extend(busy_files());
    for (n, _) in signals {
        apps.push((format!("h_sig_{n}.js"), on_request_app(redos)));
        apps.push((format!("h_sig_{n}.toml"), sidecar(FALLBACK)));
    }
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    until_answer(r.dns(), &qname("busy"), BUSY_ANSWER, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    let mut busy = Some(BusyFlood::start(r.dns()));
    std::thread::sleep(Duration::from_millis(200));
    let mut first_answers = Vec::new();
    let mut kills = Vec::new();
    for (i, (n, sig)) in signals.iter().enumerate() {
        let app = format!("h_sig_{n}");
        // The watchdog answers at the hard limit and leaves the call running.
        expect(r.dns(), &app, Want::Fallback);
        let pid = serving_pid(&r);
        let killed = Instant::now();
        kills.push(killed);
        let status = Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s {sig} {pid}");
        let old = (pid, start_time(pid).unwrap_or_default());
        assert!(
            wait_for(Duration::from_secs(3), || !alive(&old)),
            "SIG{sig}: the serving process {pid} did not die"
        );
        let t = until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
        let pid2 = serving_pid(&r);
        assert_ne!(pid, pid2, "SIG{sig}: the serving process was not replaced");
        first_answers.push((*sig, killed.elapsed()));
        eprintln!("[signal] SIG{sig} to {pid}: good answered by {pid2} {t:?} after the kill");
        let quarantined = wait_for(Duration::from_secs(5), || {
            r.app(&app).1["status"] == "quarantined"
        });
        assert!(
            quarantined,
            "SIG{sig}: {app} was in flight and is not quarantined: {}",
            r.app(&app).1
        );
        let t = expect(r.dns(), &app, Want::Fallback);
        eprintln!("[signal] {app}: quarantined, fallback in {t:?}");
        assert_eq!(r.vars()["restarts"], (i + 1) as u64, "SIG{sig}");
        assert!(
            r.vars()["quarantined"].get("good").is_none(),
            "SIG{sig}: the good app was quarantined"
        );
        assert!(
            r.vars()["quarantined"].get("busy").is_none(),
            "SIG{sig}: the healthy app in flight was quarantined: {}",
            r.vars()["quarantined"]
        );
        if let Some(flood) = busy.take() {
            let own = flood.finish();
            let in_flight = r
                .log()
                .iter()
                .any(|l| l.contains("with no evidence against its call") && about(l, "busy"));
            eprintln!(
                "[signal] busy answered itself {own} times before SIG{sig}; in flight at the kill: {in_flight}"
            );
            until_answer(r.dns(), &qname("busy"), BUSY_ANSWER, Duration::from_secs(1));
        }
    }
    // The next saved version of each is served (once the new process watches).
    assert!(
        wait_for(Duration::from_secs(5), || r
            .log()
            .iter()
            .filter(|l| l.contains("switchyard ready"))
            .count()
            > signals.len()),
        "the last serving process never became ready"
    );
    for (n, _) in signals {
        let app = format!("h_sig_{n}");
        r.write_app(&format!("{app}.js"), &answering(FIXED));
        until_answer(r.dns(), &qname(&app), FIXED, Duration::from_secs(3));
        assert_eq!(r.app(&app).1["status"], "ok", "{app}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let summary = stream.finish();
    summary.print("signal", &[GOOD]);
    for (sig, t) in &first_answers {
        eprintln!("[signal] SIG{sig}: first good answer {t:?} after the kill");
        assert!(
            *t < Duration::from_secs(2),
            "SIG{sig}: no answer for {t:?} after the kill"
        );
    }
    let mut windows = summary.restart_windows();
    for at in &kills {
        windows.push((*at - Duration::from_secs(1), *at + Duration::from_secs(3)));
    }
    summary.assert_across_restarts("signal", &[GOOD], &windows, signals.len());
}

/// A healthy app that takes 30 ms of its 80 ms budget and is never
/// memoised (it reads the clock): queried from two threads, it is almost
/// always in flight.
const BUSY: &str = "function onRequest(request, response) {\n  var t = Date.now();\n  while (Date.now() - t < 30) {}\n  response.addARecord('192.0.2.3');\n}\n";
/// What `busy` answers.
const BUSY_ANSWER: &str = "192.0.2.3";

fn busy_files() -> Vec<(String, String)> {
    vec![
        ("busy.js".into(), BUSY.into()),
        (
            "busy.toml".into(),
            "fallback = [\"192.0.2.252\"]\nbudget_ms = 80\n".into(),
        ),
    ]
}

/// Two clients querying `busy` in a loop until stopped; how many of its
/// answers were its own.
struct BusyFlood {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<usize>>,
}

impl BusyFlood {
    fn start(dns: SocketAddr) -> BusyFlood {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut own = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if let (Some(r), _) = ask(dns, &qname("busy")) {
                            own += usize::from(r.answers == [BUSY_ANSWER]);
                        }
                    }
                    own
                })
            })
            .collect();
        BusyFlood { stop, threads }
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap_or(0))
            .sum()
    }
}

/// An app that keeps what it allocates (each decision adds ~16 MB to a
/// global, inside the per-call memory budget) grows the serving process
/// until `server.memory_limit_mb` stops it: the failed allocation aborts
/// the process and the supervisor restarts it. The leaking app is the
/// culprit: the allocation that failed was its call's (if another thread's
/// allocation failed first, nothing is quarantined at that crash and its
/// own fails at the next). A healthy, never memoised app that was in
/// flight at every crash (`busy`) is not quarantined; nothing crash-loops; the
/// machine never runs out of memory and the good app keeps being answered.
#[test]
fn a_process_over_its_memory_cap_restarts_and_quarantines_the_leaking_app() {
    let _one = serial();
    let leak = "var kept = [];\nfunction onRequest(request, response) {\n  kept.push(new Array(1000000).fill(kept.length + 0.5));\n  response.addARecord('192.0.2.99');\n}\n";
    let mut apps = good_files();
    apps.extend(busy_files());
    apps.push(("h_leak.js".into(), leak.into()));
    apps.push(("h_leak.toml".into(), sidecar(FALLBACK)));
    let r = Running::start_with(
        apps,
        vec![(
            "hard_limit_ms = 100".into(),
            format!("hard_limit_ms = 100\nmemory_limit_mb = {MEMORY_CAP_MB}"),
        )],
    );
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    until_answer(r.dns(), &qname("busy"), BUSY_ANSWER, Duration::from_secs(5));
    let busy = BusyFlood::start(r.dns());
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut sent = 0;
    let mut peak_kb = 0;
    let mut restarts_seen = Vec::new();
    while r.app("h_leak").1["status"] != "quarantined" {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "h_leak not quarantined after {sent} leaking decisions and {} restarts (peak RSS {peak_kb} kB)",
            r.vars()["restarts"]
        );
        let (reply, _) = ask(r.dns(), &qname("h_leak"));
        sent += 1;
        if let Some(reply) = reply {
            assert!(
                reply.answers == ["192.0.2.99"] || matches(&reply, Want::Fallback),
                "h_leak: {reply:?}"
            );
        }
        let restarts = r.vars()["restarts"].as_u64().unwrap_or(0);
        if restarts as usize > restarts_seen.len() {
            restarts_seen.push(Instant::now());
        }
        if let Some((pid, _)) = descendants(r.s().pid()).first() {
            peak_kb = peak_kb.max(rss_kb(*pid));
        }
    }
    let crashes = r.vars()["restarts"].as_u64().unwrap_or(0);
    eprintln!(
        "[memory-cap] h_leak quarantined after {crashes} crash(es), {sent} leaking decisions; peak RSS {} MB under a cap of {MEMORY_CAP_MB} MB; reason: {}",
        peak_kb / 1024,
        r.app("h_leak").1["quarantine"]["reason"]
    );
    assert!(
        (1..=2).contains(&crashes),
        "the culprit must be quarantined at its first or second crash: {crashes} restarts"
    );
    assert!(
        peak_kb / 1024 <= MEMORY_CAP_MB,
        "the serving process grew past its cap"
    );
    // No crash loop: the quarantined app is not run again.
    let t = expect(r.dns(), "h_leak", Want::Fallback);
    eprintln!("[memory-cap] h_leak quarantined, fallback in {t:?}");
    for _ in 0..20 {
        expect(r.dns(), "h_leak", Want::Fallback);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        r.vars()["restarts"].as_u64(),
        Some(crashes),
        "the server kept crashing after the quarantine"
    );
    let busy_own = busy.finish();
    let quarantined: BTreeSet<String> = r.vars()["quarantined"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let bystanders: Vec<String> = r
        .log()
        .into_iter()
        .filter(|l| l.contains("with no evidence against its call"))
        .collect();
    eprintln!(
        "[memory-cap] busy answered itself {busy_own} times; in flight without evidence: {bystanders:?}"
    );
    assert_eq!(
        quarantined,
        BTreeSet::from(["h_leak".to_string()]),
        "only the culprit is quarantined (busy was in flight at the crashes)"
    );
    until_answer(r.dns(), &qname("busy"), BUSY_ANSWER, Duration::from_secs(1));
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(2));
    let summary = stream.finish();
    let mut windows = summary.restart_windows();
    for at in &restarts_seen {
        windows.push((*at - Duration::from_secs(3), *at + Duration::from_secs(2)));
    }
    summary.assert_across_restarts("memory-cap", &[GOOD], &windows, crashes as usize);
}

/// The serving process's address-space cap in the memory test.
const MEMORY_CAP_MB: u64 = 1536;

/// Resident set of `pid` in kB (0 once it is gone).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The budgets of one app come from its sidecar (`memory_mb`): the same
/// allocation is stopped for an app allowed 1 MB and served for one
/// allowed 256 MB. A runaway at the top level never loads (its names get
/// its fallback), and a runaway `onFusion`, run when a Fusion value
/// changes, costs its app that decision only; the good app answers all
/// along.
#[test]
fn sidecar_budgets_top_level_and_on_fusion_runaways() {
    let _one = serial();
    let alloc = "new Array(100000).fill(1.5);";
    let mut apps = good_files();
    apps.extend([
        ("h_mem_small.js".to_string(), on_request_app(alloc)),
        (
            "h_mem_small.toml".to_string(),
            format!("{}memory_mb = 1\n", sidecar(FALLBACK)),
        ),
        ("h_mem_big.js".to_string(), on_request_app(alloc)),
        (
            "h_mem_big.toml".to_string(),
            format!("{}memory_mb = 256\n", sidecar(FALLBACK)),
        ),
        (
            "h_top.js".to_string(),
            format!("while (true) {{}}\n{}", answering(FINISHED)),
        ),
        ("h_top.toml".to_string(), sidecar(FALLBACK)),
        (
            "h_fusion.js".to_string(),
            format!(
                "function init(c) {{ c.requireProvider('cdn_a'); }}\nfunction spin() {{ for (var i = 0; i < 1000; i++) {{}} }}\nfunction onFusion(provider, data) {{ while (true) {{ spin(); }} }}\n{}",
                answering(FINISHED)
            ),
        ),
        ("h_fusion.toml".to_string(), sidecar(FALLBACK)),
    ]);
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));

    let t = expect(r.dns(), "h_mem_small", Want::Fallback);
    let log = r.log();
    let (kind, err) = call_error(&log, "h_mem_small").expect("h_mem_small's call error is logged");
    eprintln!(
        "[sidecar] h_mem_small: fallback in {t:?} ({kind}: {})",
        short(&err)
    );
    assert!(
        err.contains("memory budget of 1 MB") || err.contains("RangeError"),
        "{err}"
    );
    let (reply, t) = ask(r.dns(), &qname("h_mem_big"));
    let reply = reply.expect("h_mem_big answers");
    assert_eq!(reply.answers, [FINISHED], "h_mem_big: {reply:?}");
    eprintln!("[sidecar] h_mem_big: its own answer in {t:?}");

    // The top level never finishes: the load fails, the fallback answers.
    assert!(
        wait_for(Duration::from_secs(10), || r.app("h_top").1["status"]
            == "error"),
        "h_top: {}",
        r.app("h_top").1
    );
    let t = expect(r.dns(), "h_top", Want::Fallback);
    eprintln!(
        "[top-level] h_top: fallback in {t:?}; load error: {}",
        r.app("h_top").1["last_error"]["message"]
    );

    // A Fusion value changes: onFusion runs on the next decision and is
    // stopped by the time budget (each frame stays under the loop limit),
    // which poisons the instance; that decision gets the app's fallback
    // (or its answer, if an earlier value ran away on that instance), and
    // the next ones are the app's again.
    // (The first decision of an instance is told every current value.)
    let (first, _) = ask(r.dns(), &qname("h_fusion"));
    let first = first.expect("h_fusion answers");
    assert!(
        first.answers == [FINISHED] || matches(&first, Want::Fallback),
        "h_fusion: {first:?}"
    );
    assert_eq!(
        http_put(r.admin(), "/api/fusion/cdn_a", r#"{"usage": 1}"#),
        200
    );
    std::thread::sleep(Duration::from_millis(100));
    let (reply, t) = ask(r.dns(), &qname("h_fusion"));
    let reply = reply.expect("h_fusion answers after the push");
    assert!(
        reply.answers == [FINISHED] || matches(&reply, Want::Fallback),
        "h_fusion: {reply:?}"
    );
    assert!(t < ANSWER_WITHIN, "h_fusion took {t:?}");
    eprintln!(
        "[on-fusion] h_fusion after a push: {:?} in {t:?}",
        reply.answers
    );
    assert!(
        r.s().wait_log(
            "onFusion ran away; this value is skipped",
            Duration::from_secs(2)
        ),
        "the runaway onFusion (stopped by the time budget) was not logged"
    );
    // The value that ran away counts as delivered: no instance runs it
    // again (a rebuilt one included), so every later decision is the app's
    // own (one per worker was its fallback before the fix, forever).
    let mut later = Vec::new();
    for _ in 0..6 {
        let (reply, _) = ask(r.dns(), &qname("h_fusion"));
        later.push(reply.map(|x| x.answers).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(
        later.iter().all(|a| a == &[FINISHED.to_string()]),
        "h_fusion after its runaway onFusion: {later:?}"
    );
    let metrics = http_text(r.admin(), "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_on_fusion_errors_total{app=\"h_fusion\"}")),
        "onFusion errors are not counted by app"
    );
    let summary = stream.finish();
    summary.assert_all_correct("sidecar", &[GOOD]);
    assert_eq!(r.vars()["restarts"], 0);
}

// ============================================ guards against bypasses

/// Hostile apps that attack the guards themselves: they replace what a
/// guard could look up when it runs (`Function.prototype.apply`,
/// `Reflect.apply`, `Number`, `String`, `Math.floor`, `RangeError`), or
/// answer small to a guard and huge to the original (a `valueOf`, a
/// `length` getter, a Proxy), or reach a native operation the budget
/// cannot see by another door (a huge-length array to `sort`, `toSorted`,
/// `toLocaleString`, `JSON.stringify`, `Array.from`, `f.apply`, a Proxy's
/// `ownKeys`; `eval` of a deeply nested source; a RegExp whose own `exec`
/// is not callable; a memory budget of 4 GiB). Each must throw a
/// `RangeError` naming the budget (or the regex limit), never crash the
/// server.
const GUARD_REFUSED: &[(&str, &str)] = &[
    (
        "apply_replaced",
        "Function.prototype.apply = function () { return 0; }; Function.prototype.call = function () { return 0; }; 'x'.repeat(Math.pow(2, 29));",
    ),
    (
        "reflect_replaced",
        "Reflect.apply = function () { return 0; }; Reflect.get = function () { return 0; }; 'x'.repeat(Math.pow(2, 29));",
    ),
    (
        "globals_replaced",
        "Number = function () { return 0; }; String = function () { return ''; }; Math.floor = function () { return 0; }; Object = function (x) { return x; }; RangeError = function () {}; 'x'.repeat(Math.pow(2, 29));",
    ),
    (
        "pad_replaced",
        "Function.prototype.apply = null; 'x'.padEnd(Math.pow(2, 30));",
    ),
    ("sort_huge", "var a = []; a.length = 4294967295; a.sort();"),
    (
        "sort_huge_comparator",
        "var a = []; a.length = 4294967295; a.sort(function (x, y) { return x - y; });",
    ),
    (
        "to_sorted_huge",
        "var a = []; a.length = 4294967295; a.toSorted();",
    ),
    (
        "to_locale_huge",
        "var a = []; a.length = 4294967295; a.toLocaleString();",
    ),
    (
        "json_huge",
        "var a = []; a.length = 4294967295; JSON.stringify({ x: [a] });",
    ),
    ("array_from_huge", "Array.from({ length: 4294967295 });"),
    (
        "apply_huge",
        "(function () {}).apply(null, { length: 4294967295 });",
    ),
    (
        "proxy_keys_huge",
        "Object.keys(new Proxy({}, { ownKeys: function () { return { length: 4294967295 }; } }));",
    ),
    ("eval_deep", "eval(new Array(3000).join('('));"),
    (
        "regex_own_exec",
        "var re = /^(a+)+$/; re.exec = 0; re.test('aaaa'.repeat(600000));",
    ),
    (
        "regex_no_exec",
        "delete RegExp.prototype.exec; /^(a+)+$/.test('aaaa'.repeat(600000));",
    ),
];

/// Double reads and eager allocations that must not get through: the
/// original sees the value the guard saw (so the app answers FINISHED), or
/// boa never allocated eagerly in the first place (`Array(2**32 - 1)`). A
/// shuffle with a random comparator (boa's own sort panics on it) sorts.
const GUARD_SAME_VALUE: &[(&str, &str)] = &[
    (
        "repeat_value_of",
        "var n = 0; var c = { valueOf: function () { return n++ ? Math.pow(2, 29) : 1; } }; if ('x'.repeat(c) !== 'x') { throw new Error('read twice'); }",
    ),
    (
        "pad_value_of",
        "var n = 0; var c = { valueOf: function () { return n++ ? Math.pow(2, 30) : 3; } }; if ('x'.padStart(c) !== '  x') { throw new Error('read twice'); }",
    ),
    (
        "join_length_getter",
        "var n = 0; var l = { 0: 'a' }; Object.defineProperty(l, 'length', { get: function () { return n++ ? 4294967295 : 1; } }); if (Array.prototype.join.call(l) !== 'a') { throw new Error('read twice'); }",
    ),
    (
        "fill_length_getter",
        "var n = 0; var l = {}; Object.defineProperty(l, 'length', { get: function () { return n++ ? 4294967295 : 1; } }); Array.prototype.fill.call(l, 7); if (l[0] !== 7 || l[1] !== undefined) { throw new Error('read twice'); }",
    ),
    (
        "sort_length_getter",
        "var n = 0; var l = { 0: 'b', 1: 'a' }; Object.defineProperty(l, 'length', { get: function () { return n++ ? 4294967295 : 2; } }); Array.prototype.sort.call(l); if (l[0] !== 'a') { throw new Error('read twice'); }",
    ),
    (
        "apply_length_getter",
        "var n = 0; var l = { 0: 5 }; Object.defineProperty(l, 'length', { get: function () { return n++ ? 4294967295 : 1; } }); if (Math.max.apply(null, l) !== 5) { throw new Error('read twice'); }",
    ),
    (
        "json_length_proxy",
        "var n = 0; var p = new Proxy([1], { get: function (t, k) { return k === 'length' ? (n++ ? 4294967295 : 1) : t[k]; } }); if (JSON.stringify(p) !== '[1]') { throw new Error('read twice'); }",
    ),
    (
        "new_array_huge",
        "var a = new Array(4294967295); var b = Array(4294967295); if (a.length !== 4294967295 || b.length !== 4294967295) { throw new Error('length'); }",
    ),
    (
        "shuffle",
        "var a = []; for (var i = 0; i < 2000; i++) { a.push(i); } a.sort(function () { return Math.random() - 0.5; }); var sum = 0; for (var j = 0; j < a.length; j++) { sum += a[j]; } if (a.length !== 2000 || sum !== 1999000) { throw new Error('lost'); }",
    ),
];

#[test]
fn guards_hold_against_bypasses() {
    let _one = serial();
    let mut apps = good_files();
    apps.extend(hostile_files("g_", GUARD_REFUSED, on_request_app));
    apps.extend(hostile_files("g_", GUARD_SAME_VALUE, on_request_app));
    // A memory budget of 4 GiB must not let 'x'.repeat(2 ** 29) through.
    apps.push((
        "g_repeat_4096.js".into(),
        on_request_app("'x'.repeat(Math.pow(2, 29));"),
    ));
    apps.push((
        "g_repeat_4096.toml".into(),
        format!("{}memory_mb = 4096\n", sidecar(FALLBACK)),
    ));
    // Nesting deep enough to overflow the stack in JSON.stringify's own
    // recursion (built at the top level, under the load budget).
    apps.push((
        "g_json_deep.js".into(),
        format!(
            "var DEEP = [];\nfor (var i = 0; i < 100000; i++) {{ DEEP = [DEEP]; }}\n{}",
            on_request_app("JSON.stringify(DEEP);")
        ),
    ));
    apps.push(("g_json_deep.toml".into(), sidecar(FALLBACK)));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));

    let mut refused: Vec<String> = GUARD_REFUSED
        .iter()
        .map(|(n, _)| format!("g_{n}"))
        .collect();
    refused.push("g_repeat_4096".into());
    refused.push("g_json_deep".into());
    // g_json_deep's top level builds its nesting for a while; a query
    // before it is loaded gets the fallback without a call to log.
    assert!(
        wait_for(Duration::from_secs(30), || r
            .log()
            .iter()
            .any(|l| l.contains("app loaded") && about(l, "g_json_deep"))),
        "g_json_deep never loaded"
    );
    for app in &refused {
        let t = expect(r.dns(), app, Want::Fallback);
        assert!(
            wait_for(Duration::from_secs(5), || call_error(&r.log(), app)
                .is_some()),
            "{app}: no error logged"
        );
        let (kind, error) = call_error(&r.log(), app).expect("logged");
        eprintln!(
            "[guards] {app}: fallback in {t:?} ({kind}: {})",
            short(&error)
        );
        assert!(
            error.contains("RangeError")
                && (error.contains("budget") || error.contains("limit for regular expressions")),
            "{app}: expected a RangeError naming the budget, got {kind}: {error}"
        );
    }
    for (n, _) in GUARD_SAME_VALUE {
        let app = format!("g_{n}");
        let (reply, t) = ask(r.dns(), &qname(&app));
        let reply = reply.unwrap_or_else(|| panic!("{app}: no answer"));
        eprintln!("[guards] {app}: {:?} in {t:?}", reply.answers);
        assert_eq!(
            reply.answers,
            [FINISHED],
            "{app}: the app's own answer expected: {}",
            call_error(&r.log(), &app)
                .map(|(k, e)| format!("{k}: {e}"))
                .unwrap_or_default()
        );
        assert!(t < ANSWER_WITHIN, "{app}: took {t:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let summary = stream.finish();
    let vars = r.vars();
    assert_eq!(vars["restarts"], 0, "a bypass crashed the server: {vars}");
    assert_eq!(vars["workers"]["panics"], 0, "a bypass panicked: {vars}");
    assert_eq!(vars["workers"]["retired"], 0, "{}", vars["workers"]);
    assert_never_memoised(&r, "good");
    summary.assert_all_correct("guards", &[GOOD]);
}

// ==================================================== panics, SERVFAIL

/// A panic in a call (boa 0.22's `String.prototype.at` panics on a huge
/// negative index, "Unexpected get()") is contained: the query gets the
/// fallback (SERVFAIL without one) within the hard limit, the worker whose
/// engine state the panic left behind is replaced, it is counted as a
/// `panic` failure, and the server and the good app carry on.
#[test]
fn a_panic_in_a_call_is_contained() {
    let _one = serial();
    let body = "'a'.at(-1e20);";
    let mut apps = good_files();
    apps.push(("h_panic.js".into(), on_request_app(body)));
    apps.push(("h_panic.toml".into(), sidecar(FALLBACK)));
    apps.push(("nf_panic.js".into(), on_request_app(body)));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));
    let t1 = expect(r.dns(), "h_panic", Want::Fallback);
    std::thread::sleep(Duration::from_millis(100));
    let t2 = expect(r.dns(), "nf_panic", Want::ServFail);
    std::thread::sleep(Duration::from_millis(100));
    let t3 = expect(r.dns(), "h_panic", Want::Fallback);
    eprintln!("[panic] h_panic: fallback in {t1:?}, {t3:?}; nf_panic: SERVFAIL in {t2:?}");
    std::thread::sleep(Duration::from_millis(300));
    let summary = stream.finish();
    let vars = r.vars();
    eprintln!(
        "[panic] workers {}; failures {}",
        vars["workers"], vars["app_failures"]
    );
    let panics = vars["workers"]["panics"].as_u64().unwrap_or(0);
    assert!(
        (2..=3).contains(&panics),
        "each panicking call (the last one may back off) replaces its worker: {}",
        vars["workers"]
    );
    assert!(
        vars["app_failures"]["h_panic"]["panic"].as_u64() >= Some(1),
        "{}",
        vars["app_failures"]
    );
    assert!(
        r.log()
            .iter()
            .any(|l| l.contains("a JS worker panicked") && about(l, "h_panic")),
        "the panic was not logged"
    );
    assert_eq!(vars["restarts"], 0);
    assert_eq!(vars["quarantined"], serde_json::json!({}));
    summary.assert_all_correct("panic", &[GOOD]);
}

/// Apps without a fallback answer SERVFAIL on every failure path, within
/// the hard limit: a call the budget stops, a call the watchdog answers
/// (ReDoS), an `init` that throws and an `init` that runs away (the app
/// never loaded).
#[test]
fn apps_without_a_fallback_get_servfail_on_every_path() {
    let _one = serial();
    let redos = pick(NEVER_ENDING, &["redos"])[0].1;
    let mut apps = good_files();
    apps.push(("nf_while.js".into(), on_request_app("while (true) {}")));
    apps.push(("nf_redos.js".into(), on_request_app(redos)));
    apps.push((
        "nf_init_throw.js".into(),
        init_app("throw new Error('broken init');"),
    ));
    apps.push(("nf_init_while.js".into(), init_app("while (true) {}")));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(200));
    for app in ["nf_while", "nf_redos", "nf_init_throw", "nf_init_while"] {
        let t = expect(r.dns(), app, Want::ServFail);
        eprintln!(
            "[servfail] {app}: SERVFAIL in {t:?}; {}",
            containment(&r.log(), app)
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    for app in ["nf_init_throw", "nf_init_while"] {
        let (_, info) = r.app(app);
        assert_eq!(info["status"], "error", "{app}: {info}");
    }
    let log = r.log();
    assert!(
        retired_for(&log, "nf_redos") >= 1,
        "the watchdog path was not taken"
    );
    std::thread::sleep(Duration::from_millis(200));
    let summary = stream.finish();
    assert_eq!(r.vars()["restarts"], 0);
    summary.assert_all_correct("servfail", &[GOOD]);
}

// ========================================================== counters

/// Failures and overruns are health signals: they are counted with
/// decision reports off (`[reports] enabled = false`), by app and kind,
/// as this node's decisions are.
#[test]
fn failures_are_counted_with_reports_off() {
    let _one = serial();
    let mut apps = good_files();
    apps.push((
        "h_throw.js".into(),
        on_request_app("throw new Error('no');"),
    ));
    apps.push(("h_throw.toml".into(), sidecar(FALLBACK)));
    // Stopped by the time budget only: no frame reaches the loop limit.
    apps.push((
        "h_while.js".into(),
        on_request_app(
            "function spin() { for (var i = 0; i < 1000; i++) {} } while (true) { spin(); }",
        ),
    ));
    apps.push(("h_while.toml".into(), sidecar(FALLBACK)));
    let r = Running::start_with_options(common::Options {
        apps: Some(apps),
        extra_config: "[reports]\nenabled = false\n".into(),
        ..Default::default()
    });
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    for _ in 0..3 {
        expect(r.dns(), "h_throw", Want::Fallback);
    }
    expect(r.dns(), "h_while", Want::Fallback);
    let ok = wait_for(Duration::from_secs(3), || {
        let f = &r.vars()["app_failures"];
        f["h_throw"]["error"] == 3 && f["h_while"]["timeout"] == 1
    });
    let vars = r.vars();
    assert!(
        ok,
        "failures not counted with reports off: {}",
        vars["app_failures"]
    );
    assert_eq!(vars["budget_overruns"], 1, "{vars}");
    // `enabled = false` stops reporting, not counting: this node's own
    // decisions are still counted (for /metrics and requests_per_second).
    assert_eq!(
        vars["decisions"]["h_throw"]["fallback"]["fallback"], 3,
        "decisions still counted locally: {vars}"
    );
    let metrics = http_text(r.admin(), "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_app_failures_total")
                && l.contains("app=\"h_throw\"")
                && l.contains("kind=\"error\"")
                && l.ends_with(" 3")),
        "switchyard_app_failures_total: {}",
        metrics
            .lines()
            .filter(|l| l.contains("app_failures"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ============================================================= loader

/// Loads abandoned while their thread still runs the app keep their
/// loader slot, and they are capped: with every loader slot held by a
/// never-ending `init`, the next load restarts the serving process, whose
/// successor quarantines those apps (they had run past the load budget)
/// and does not run their `init` again; later edits load, and the good app
/// is answered all along. (Found as a hole: the loader's slot was cleared
/// when a load was abandoned, so an abandoned `init` that later crashed
/// the process was not quarantined and crashed the next one too; and
/// abandoned loader threads were not capped.)
#[test]
fn abandoned_loads_keep_their_slot_and_are_capped() {
    let _one = serial();
    let r = Running::start(good_files());
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    let redos = pick(NEVER_ENDING, &["redos"])[0].1;
    let stuck: Vec<String> = (0..8).map(|i| format!("h_load_{i}")).collect();
    for app in &stuck {
        r.write_app(&format!("{app}.js"), &init_app(redos));
        r.write_app(&format!("{app}.toml"), &sidecar(FALLBACK));
    }
    // Each is abandoned after ~1.5 s; then one more load needs a slot.
    let started = Instant::now();
    assert!(
        wait_for(Duration::from_secs(40), || stuck
            .iter()
            .all(|a| r.app(a).1["status"] == "error")),
        "the never-ending inits were not all abandoned"
    );
    let loaders = thread_policies(serving_pid(&r), "app-load-");
    eprintln!(
        "[loader-cap] {} loads abandoned after {:?}; loader threads {loaders:?}",
        stuck.len(),
        started.elapsed()
    );
    assert_eq!(r.vars()["restarts"], 0);
    r.write_app("good.js", &good_app(GOOD_V2));
    assert!(
        wait_for(Duration::from_secs(10), || r.vars()["restarts"] == 1),
        "the loader at its cap did not restart the serving process"
    );
    assert!(
        r.s().wait_log(
            "abandoned app loads still running hold every loader slot",
            Duration::from_secs(1)
        ),
        "the cap was not the cause"
    );
    let quarantined = wait_for(Duration::from_secs(10), || {
        stuck.iter().all(|a| r.app(a).1["status"] == "quarantined")
    });
    let vars = r.vars();
    assert!(
        quarantined,
        "abandoned loads were not quarantined: {}",
        vars["quarantined"]
    );
    for app in &stuck {
        let reason = r.app(app).1["quarantine"]["reason"].clone();
        assert!(
            reason
                .as_str()
                .is_some_and(|s| s.contains("past its 250 ms budget")),
            "{app}: {reason}"
        );
        expect(r.dns(), app, Want::Fallback);
    }
    // The edit is loaded by the new process, which runs none of the
    // quarantined inits.
    until_answer(r.dns(), &qname("good"), GOOD_V2, Duration::from_secs(10));
    let loaders = thread_policies(serving_pid(&r), "app-load-");
    assert!(
        loaders.is_empty(),
        "the new process loads quarantined apps: {loaders:?}"
    );
    assert_eq!(r.vars()["restarts"], 1, "no crash loop");
    for (app, n) in vars["quarantine_events"].as_object().into_iter().flatten() {
        assert!(stuck.contains(app) && *n == 1, "{app}: {n}");
    }
    let metrics = http_text(r.admin(), "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_quarantine_events_total{app=\"h_load_0\"}")),
        "quarantine events are not counted by app"
    );
    let summary = stream.finish();
    let windows = summary.restart_windows();
    summary.assert_across_restarts("loader-cap", &[GOOD, GOOD_V2], &windows, 1);
}

// ------------------------------------------------ issue 29: deploys, kills

/// A copy of the built binary in a fresh directory, which a test may
/// replace or delete (the directory lives as long as the returned guard).
fn binary_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("switchyard");
    std::fs::copy(env!("CARGO_BIN_EXE_switchyard"), &bin).expect("copy the binary");
    (dir, bin)
}

/// Puts a new file (the same bytes, a new inode) at `bin` the way package
/// managers and `cargo build` do: written beside it, renamed over it.
/// Returns the new inode.
fn replace_binary(bin: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let next = bin.with_extension("new");
    std::fs::copy(env!("CARGO_BIN_EXE_switchyard"), &next).expect("copy the binary");
    std::fs::rename(&next, bin).expect("rename over the binary");
    std::fs::metadata(bin).expect("new binary").ino()
}

/// Kills the serving process with SIGKILL and waits until another one
/// answers `good`; the new serving pid.
fn kill_serving_process(r: &Running) -> u32 {
    let pid = serving_pid(r);
    let old = (pid, start_time(pid).unwrap_or_default());
    let status = Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -9 {pid}");
    assert!(
        wait_for(Duration::from_secs(3), || !alive(&old)),
        "the serving process {pid} did not die"
    );
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(10));
    let new = serving_pid(r);
    assert_ne!(new, pid, "the serving process was not replaced");
    new
}

/// The supervisor's log lines containing `needle`.
fn lines_with(r: &Running, needle: &str) -> Vec<String> {
    r.log().into_iter().filter(|l| l.contains(needle)).collect()
}

/// Issue 29: after a deploy renamed a new binary over the path, the next
/// crash used to end the service (the restart exec'd the path: ENOENT once
/// it was deleted, and the supervisor exited with every listener). Now a
/// restart runs the binary the supervisor started from, through a
/// descriptor, and says so: after a rename over the path, and after the
/// path is deleted.
#[test]
fn a_restart_after_the_binary_is_replaced_or_deleted_runs_the_one_it_started_from() {
    use std::os::unix::fs::MetadataExt;
    let _one = serial();
    let (_dir, bin) = binary_copy();
    let first_inode = std::fs::metadata(&bin).expect("binary").ino();
    let r = Running::start_with_options(common::Options {
        apps: Some(good_files()),
        binary: Some(bin.clone()),
        ..Default::default()
    });
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    let mut kills = Vec::new();

    replace_binary(&bin);
    kills.push(Instant::now());
    kill_serving_process(&r);
    std::fs::remove_file(&bin).expect("delete the binary");
    kills.push(Instant::now());
    kill_serving_process(&r);

    let started = lines_with(&r, "serving process started");
    assert_eq!(started.len(), 3, "{started:#?}");
    let disk: Vec<Option<&str>> = started.iter().map(|l| field(l, "on_disk")).collect();
    assert_eq!(
        disk,
        [Some("current"), Some("replaced"), Some("deleted")],
        "{started:#?}"
    );
    for l in &started {
        assert_eq!(
            field(l, "inode"),
            Some(first_inode.to_string().as_str()),
            "every restart runs the first binary: {l}"
        );
        assert_eq!(field(l, "binary"), bin.to_str(), "{l}");
    }
    eprintln!("[deploy] {}", started[2]);
    assert_eq!(r.vars()["restarts"], 2);
    let summary = stream.finish();
    let mut windows = summary.restart_windows();
    for at in &kills {
        windows.push((*at - Duration::from_secs(1), *at + Duration::from_secs(3)));
    }
    summary.assert_across_restarts("deploy", &[GOOD], &windows, kills.len());
}

/// Issue 29: the upgrade story. SIGUSR2 to the supervisor starts a serving
/// process from the file now at the path, on the same sockets; once it is
/// ready the old one drains, and restarts run the new binary from then on.
/// No query of a steady stream is lost or answered wrongly during the
/// switch (before: SIGUSR2's default action killed the supervisor).
#[test]
fn sigusr2_upgrades_to_the_binary_at_the_path_without_losing_a_query() {
    let _one = serial();
    let (_dir, bin) = binary_copy();
    let r = Running::start_with_options(common::Options {
        apps: Some(good_files()),
        binary: Some(bin.clone()),
        ..Default::default()
    });
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    let stream = GoodStream::start(r.dns());
    std::thread::sleep(Duration::from_millis(300));
    let old = serving_pid(&r);
    let new_inode = replace_binary(&bin);
    let signalled = Instant::now();
    r.s().signal("USR2");
    assert!(
        r.s()
            .wait_log("old serving process drained", Duration::from_secs(30)),
        "no upgrade: {:#?}",
        lines_with(&r, "supervisor")
    );
    let took = signalled.elapsed();
    let upgraded = lines_with(&r, "upgraded: the new serving process is ready");
    assert_eq!(upgraded.len(), 1, "{upgraded:#?}");
    assert_eq!(
        field(&upgraded[0], "inode"),
        Some(new_inode.to_string().as_str()),
        "{}",
        upgraded[0]
    );
    let new = serving_pid(&r);
    assert_ne!(new, old);
    assert_eq!(
        descendants(r.s().pid()).len(),
        1,
        "the old serving process is gone"
    );
    std::thread::sleep(Duration::from_millis(300));
    let summary = stream.finish();
    eprintln!(
        "[upgrade] drained {took:?} after SIGUSR2; {} queries during the test",
        summary.total()
    );
    summary.assert_all_correct("upgrade", &[GOOD]);
    assert_eq!(r.vars()["restarts"], 0, "an upgrade is no restart");

    // A crash after the upgrade restarts the new binary, even once deleted.
    std::fs::remove_file(&bin).expect("delete the binary");
    kill_serving_process(&r);
    let started = lines_with(&r, "serving process started");
    let last = started.last().expect("a start line");
    assert_eq!(
        field(last, "inode"),
        Some(new_inode.to_string().as_str()),
        "{last}"
    );
    assert_eq!(field(last, "on_disk"), Some("deleted"), "{last}");
    // With nothing at the path, SIGUSR2 changes nothing.
    r.s().signal("USR2");
    assert!(r.s().wait_log("cannot upgrade", Duration::from_secs(5)));
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(2));
}

/// Issue 29: ten `kill -9`s of the serving process while a healthy, never
/// memoised app (`busy`, 30 ms calls from two clients: always in flight)
/// answers a steady stream. A kill from outside is no evidence against
/// the app in flight: it is never quarantined (before, the second kill
/// quarantined it, "for the second time within 10 minutes", and it
/// answered its fallback until a new version was saved). A real runaway
/// killed the same way still is quarantined, `/api/applications` shows
/// the evidence, and an operator lifts it with the CLI (or the API).
#[test]
fn kill_9_of_the_serving_process_never_quarantines_a_healthy_app() {
    let _one = serial();
    let redos = pick(NEVER_ENDING, &["redos"])[0].1;
    let mut apps = good_files();
    apps.extend(busy_files());
    apps.push(("h_lift.js".into(), on_request_app(redos)));
    apps.push(("h_lift.toml".into(), sidecar(FALLBACK)));
    let r = Running::start(apps);
    until_answer(r.dns(), &qname("good"), GOOD, Duration::from_secs(5));
    until_answer(r.dns(), &qname("busy"), BUSY_ANSWER, Duration::from_secs(5));
    let flood = BusyFlood::start(r.dns());
    let mut busy_at_kills = 0;
    for i in 0..10 {
        // Busy answers itself before every kill.
        until_answer(r.dns(), &qname("busy"), BUSY_ANSWER, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(100));
        kill_serving_process(&r);
        let in_flight = lines_with(&r, "with no evidence against its call")
            .iter()
            .filter(|l| about(l, "busy"))
            .count();
        busy_at_kills = in_flight;
        assert_eq!(
            r.vars()["quarantined"],
            serde_json::json!({}),
            "kill {}: quarantined",
            i + 1
        );
    }
    let own = flood.finish();
    until_answer(r.dns(), &qname("busy"), BUSY_ANSWER, Duration::from_secs(2));
    assert_eq!(r.app("busy").1["status"], "ok");
    eprintln!(
        "[kill-9] busy answered itself {own} times; in flight at {busy_at_kills} of 10 kills"
    );
    assert!(
        busy_at_kills >= 2,
        "busy was in flight at only {busy_at_kills} kills: the test proves little"
    );
    assert!(lines_with(&r, "app quarantined").is_empty());

    // A runaway in flight past its budget is evidence.
    expect(r.dns(), "h_lift", Want::Fallback);
    std::thread::sleep(Duration::from_millis(100));
    kill_serving_process(&r);
    assert!(
        wait_for(Duration::from_secs(5), || r.app("h_lift").1["status"]
            == "quarantined"),
        "the runaway was not quarantined: {}",
        r.app("h_lift").1
    );
    let q = r.app("h_lift").1["quarantine"].clone();
    assert_eq!(q["evidence"]["kind"], "runaway", "{q}");
    assert!(
        q["evidence"]["ran_ms"].as_u64() >= q["evidence"]["budget_ms"].as_u64(),
        "{q}"
    );
    assert!(q["since_ms"].as_u64().is_some_and(|t| t > 0), "{q}");
    let list = http_json(r.admin(), "/api/applications").1;
    let entry = list["applications"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "h_lift"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        entry["quarantine"]["evidence"]["kind"], "runaway",
        "{entry}"
    );
    assert_eq!(
        r.vars()["quarantined"].as_object().map(|m| m.len()),
        Some(1)
    );

    // Lifting needs the admin token.
    let path = "/api/apps/h_lift/quarantine";
    let (status, _) = http_call(r.admin(), "DELETE", path, None);
    assert!(
        matches!(status, 401 | 403),
        "DELETE without a token: {status}"
    );
    assert_eq!(r.app("h_lift").1["status"], "quarantined");
    let admin_url = format!("http://{}", r.admin());
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .args(["--admin-url", &admin_url, "--token", "change-me"])
            .output()
            .expect("switchyard quarantine")
    };
    let listed = cli(&["quarantine", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains("h_lift") && listed.contains("runaway"),
        "{listed}"
    );
    let lifted = cli(&["quarantine", "lift", "h_lift"]);
    assert!(
        lifted.status.success(),
        "{}",
        String::from_utf8_lossy(&lifted.stderr)
    );
    let out = String::from_utf8_lossy(&lifted.stdout).to_string();
    assert!(out.contains("h_lift: quarantine lifted"), "{out}");
    assert_eq!(r.app("h_lift").1["status"], "ok", "{}", r.app("h_lift").1);
    assert_eq!(r.vars()["quarantined"], serde_json::json!({}));
    // It runs again (and is stopped at the hard limit again).
    expect(r.dns(), "h_lift", Want::Fallback);
    assert!(
        r.log()
            .iter()
            .any(|l| l.contains("quarantine lifted by an operator"))
    );
    // Nothing left to lift: 404, through the API and the CLI.
    assert_eq!(
        http_call(r.admin(), "DELETE", path, Some("change-me")).0,
        404
    );
    assert!(!cli(&["quarantine", "lift", "busy"]).status.success());
}

/// GET on the operations address; the body as text.
fn http_text(addr: SocketAddr, path: &str) -> String {
    Request::new(addr, "GET", path)
        .timeout(Duration::from_secs(3))
        .send()
        .body
}

/// PUT on the operations address with the shipped bearer token; the status.
fn http_put(addr: SocketAddr, path: &str, body: &str) -> u16 {
    Request::new(addr, "PUT", path)
        .token(Some(TOKEN))
        .json(body.as_bytes())
        .timeout(Duration::from_secs(3))
        .send()
        .status
}

/// Sends `method path` with the admin token (when given); status and JSON.
fn http_call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let r = Request::new(addr, method, path)
        .token(token)
        .timeout(Duration::from_secs(5))
        .send();
    (r.status, r.json_or_null())
}
