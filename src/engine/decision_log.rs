//! The decision log: a sample of real decisions, with everything needed to
//! decide them again ([`super::replay`]).
//!
//! Which decisions: a share (`[log] decisions_sample`) of those the app
//! made, memo hits included, chosen before the app runs (a thread-local
//! generator, no shared state), so that only a sampled call records what
//! it read and the `Math.random` draws it made; and every fallback,
//! failure, quarantined answer and backoff, whatever the share.
//!
//! Where: a bounded ring in memory (a mutex touched only by logged
//! decisions: 1 % of queries by default), read by
//! `GET /api/decisions/log`; the data snapshots the entries name, kept by
//! id (the oldest used dropped first); and, when `decisions_file` is set,
//! a JSON-lines file written by a thread of its own fed by a bounded
//! channel (a full channel drops the entry and counts it: the query path
//! never waits), rotated at a size as `file`, `file.1` … `file.N-1`.
//!
//! The file holds two kinds of line: an [`Entry`], and before the first
//! entry of a file that names a snapshot not yet written to that file,
//! `{"snapshot": {"id": …, "data": …}}` ([`SnapshotLine`]): every file
//! stands alone. [`Line`] reads either.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::LogConfig;
use crate::engine::apps::LoadedApp;
use crate::engine::steer::{How, Outcome, Steered};
use crate::openmix::{Answer, DataSnapshot, ProviderHost, Request, TraceRead};

/// Entries waiting for the file writer; past this, entries are dropped
/// from the file (not from the ring) and counted.
const FILE_QUEUE: usize = 4096;

/// One logged decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Unique on this node: `NODE-PROCESS-N` (the process part is random
    /// per serving process, so ids never repeat across restarts).
    pub id: String,
    /// When it was decided, RFC 3339 UTC.
    pub time: String,
    /// The same, in unix milliseconds (what `since=` compares).
    pub time_ms: i64,
    /// The node that decided (`[reports] node`).
    pub node: String,
    /// The app.
    pub app: String,
    /// The app version that decided.
    pub version: AppVersion,
    /// `dns` or `http`.
    pub transport: Transport,
    /// The whole request as the app saw it.
    pub request: Request,
    /// What the app read, in order, as explain shows it (empty for
    /// answers that did not run the app: memo hits, fallbacks given
    /// without running).
    pub reads: Vec<TraceRead>,
    /// The `Math.random` draws the app made, in order.
    pub draws: Vec<f64>,
    /// The id of the data snapshot it was decided on
    /// ([`DecisionLog::snapshot`]).
    pub snapshot: String,
    /// The TTL the answer gets when the app sets none (the app's, else
    /// the zone's): what deciding again needs besides the app.
    pub default_ttl: u32,
    /// What was answered.
    pub decision: LoggedDecision,
    /// How it was reached.
    pub how: How,
    /// Time taken, in microseconds.
    pub duration_us: u64,
}

/// The app version of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    /// The registry's version number (this process's).
    pub id: u64,
    /// Hash of the app's source and sidecar, 16 hex digits: the same on
    /// every node and across restarts.
    pub hash: String,
}

/// The front end a decision came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A DNS query.
    Dns,
    /// An HTTP decision request.
    Http,
}

/// What was answered: the decision as the front end served it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggedDecision {
    /// Provider alias (`fallback` for a fallback answer).
    pub provider: Option<String>,
    /// Answer values.
    pub answers: Vec<Answer>,
    /// The TTL served.
    pub ttl: u32,
    /// The reason code served (empty when none).
    pub reason: String,
    /// `respondEmpty`: no records, on purpose.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub empty: bool,
    /// `setStatus` (HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `addProviderHost` entries (HTTP).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provider_hosts: Vec<ProviderHost>,
}

impl LoggedDecision {
    /// The decision a front end serves for `steered`.
    pub fn of(steered: &Steered) -> LoggedDecision {
        let d = &steered.decision;
        LoggedDecision {
            provider: d.provider.clone(),
            answers: d.answers.clone(),
            ttl: steered.ttl,
            reason: steered.reason.clone(),
            empty: d.empty,
            status: d.status,
            provider_hosts: d.provider_hosts.clone(),
        }
    }
}

/// The file line that carries a data snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotLine {
    /// The snapshot.
    pub snapshot: KeptSnapshot,
}

/// A data snapshot and its id, as the file and
/// `GET /api/decisions/snapshots/{id}` give it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptSnapshot {
    /// The id entries name it by.
    pub id: String,
    /// The snapshot.
    pub data: Arc<DataSnapshot>,
}

/// One line of a decision log file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    /// A data snapshot later entries name.
    Snapshot(SnapshotLine),
    /// A logged decision.
    Entry(Box<Entry>),
}

/// An entry as the ring keeps it: what the filters compare, and the entry
/// serialised once. One allocation instead of the trace's many small
/// ones: a thousand entries' traces kept among the JS engine's allocations
/// cost the workers a tenth of their decisions per second (measured on the
/// every-query path, BENCHMARKS.md "Decision log").
#[derive(Debug)]
pub struct KeptEntry {
    id: String,
    time_ms: i64,
    app: String,
    provider: Option<String>,
    reason: String,
    /// The entry as JSON.
    pub json: Box<str>,
}

/// What one logged decision brings to [`DecisionLog::record`].
pub struct Logged<'a> {
    /// The app version that decided.
    pub app: &'a LoadedApp,
    /// The request, as the app saw it.
    pub request: Request,
    /// The snapshot it was decided on.
    pub data: &'a Arc<DataSnapshot>,
    /// The answer.
    pub steered: &'a Steered,
    /// The answer needed no call of the app (memo hit and the rest of
    /// [`super::steer::without_running`]).
    pub inline: bool,
    /// What the app read (empty when not recorded).
    pub reads: Vec<TraceRead>,
    /// Its `Math.random` draws.
    pub draws: Vec<f64>,
    /// The TTL when the app sets none.
    pub default_ttl: u32,
    /// Time taken.
    pub took: Duration,
}

/// The snapshots kept for the entries, by id, least recently named first.
#[derive(Default)]
struct Snapshots {
    kept: VecDeque<(String, Arc<DataSnapshot>)>,
}

/// Lines for the file writer.
struct ToFile {
    entry: Arc<Entry>,
    snapshot: Arc<DataSnapshot>,
}

/// The decision log of one serving process.
pub struct DecisionLog {
    config: LogConfig,
    node: String,
    /// Random per process: in entry and snapshot ids.
    process: u64,
    /// Sample threshold: a draw below it is logged (`u64::MAX`: all).
    threshold: u64,
    counter: AtomicU64,
    ring: Mutex<VecDeque<Arc<KeptEntry>>>,
    snapshots: Mutex<Snapshots>,
    file: Option<crossbeam_channel::Sender<ToFile>>,
    logged: AtomicU64,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog")
            .field("config", &self.config)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// This thread's sampling generator (xorshift64*, seeded per thread).
    static SAMPLER: std::cell::Cell<u64> = std::cell::Cell::new(
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1,
    );
}

/// The next number of this thread's sampling generator.
fn next_sample() -> u64 {
    SAMPLER.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

impl DecisionLog {
    /// The log `config` describes for node `node`; `data_dir` is where a
    /// relative `decisions_file` lives. The file writer's thread starts
    /// here and ends when the log is dropped.
    pub fn new(config: &LogConfig, node: &str, data_dir: &Path) -> Arc<DecisionLog> {
        let threshold = if config.decisions_sample >= 1.0 {
            u64::MAX
        } else {
            (config.decisions_sample * u64::MAX as f64) as u64
        };
        let dropped = Arc::new(AtomicU64::new(0));
        let file = config.decisions_file.as_ref().and_then(|f| {
            let path = data_dir.join(f);
            let (tx, rx) = crossbeam_channel::bounded(FILE_QUEUE);
            let writer = FileWriter {
                path,
                max_bytes: config.decisions_file_max_bytes,
                keep: config.decisions_file_keep,
                dropped: dropped.clone(),
            };
            std::thread::Builder::new()
                .name("decision-log".into())
                .spawn(move || writer.run(rx))
                .inspect_err(|e| tracing::error!(error = %e, "cannot start the decision log writer; entries are kept in memory only"))
                .ok()
                .map(|_| tx)
        });
        Arc::new(DecisionLog {
            config: config.clone(),
            node: node.to_string(),
            process: std::collections::hash_map::RandomState::new().hash_one(node) & 0xffff_ffff,
            threshold,
            counter: AtomicU64::new(0),
            ring: Mutex::new(VecDeque::new()),
            snapshots: Mutex::new(Snapshots::default()),
            file,
            logged: AtomicU64::new(0),
            dropped,
        })
    }

    /// Whether the next decision of an app is sampled: decided before it
    /// runs, so only a sampled call records its reads and draws.
    pub fn sample(&self) -> bool {
        match self.threshold {
            0 => false,
            u64::MAX => true,
            t => next_sample() < t,
        }
    }

    /// Whether a decision is logged: a sampled one, and every answer that
    /// is not the app's own.
    pub fn wants(sampled: bool, outcome: &Outcome) -> bool {
        sampled || !matches!(outcome, Outcome::App)
    }

    /// The id a snapshot is kept and named by: this process and the
    /// snapshot's version.
    pub fn snapshot_id(&self, data: &DataSnapshot) -> String {
        format!("{:08x}-{}", self.process, data.version)
    }

    /// Adds one decision to the ring (and the file).
    pub fn record(&self, logged: Logged<'_>) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = crate::report::buckets::now_ms();
        let snapshot = self.snapshot_id(logged.data);
        let transport = if logged.request.query_type.is_empty() {
            Transport::Http
        } else {
            Transport::Dns
        };
        let entry = Arc::new(Entry {
            id: format!("{}-{:08x}-{n}", self.node, self.process),
            time: crate::report::buckets::format_time(now),
            time_ms: now,
            node: self.node.clone(),
            app: logged.app.code.name.clone(),
            version: AppVersion {
                id: logged.app.code.version,
                hash: format!("{:016x}", logged.app.hash),
            },
            transport,
            request: logged.request,
            reads: logged.reads,
            draws: logged.draws,
            snapshot: snapshot.clone(),
            default_ttl: logged.default_ttl,
            decision: LoggedDecision::of(logged.steered),
            how: How::of(&logged.steered.outcome, logged.inline),
            duration_us: logged.took.as_micros() as u64,
        });
        self.logged.fetch_add(1, Ordering::Relaxed);
        // The snapshot named last is kept last; most entries name the
        // snapshot the one before named, and find it at the back.
        if let Ok(mut s) = self.snapshots.lock()
            && s.kept.back().is_none_or(|(id, _)| *id != snapshot)
        {
            if let Some(i) = s.kept.iter().position(|(id, _)| *id == snapshot) {
                let found = s.kept.remove(i);
                s.kept.extend(found);
            } else {
                s.kept.push_back((snapshot, logged.data.clone()));
            }
            while s.kept.len() > self.config.snapshots_kept {
                s.kept.pop_front();
            }
        }
        if let Some(tx) = &self.file {
            let job = ToFile {
                entry: entry.clone(),
                snapshot: logged.data.clone(),
            };
            if tx.try_send(job).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.config.decisions_ring == 0 {
            return;
        }
        let kept = Arc::new(KeptEntry {
            json: serde_json::to_string(&*entry).unwrap_or_default().into(),
            id: entry.id.clone(),
            time_ms: entry.time_ms,
            app: entry.app.clone(),
            provider: entry.decision.provider.clone(),
            reason: entry.decision.reason.clone(),
        });
        drop(entry);
        if let Ok(mut ring) = self.ring.lock() {
            if ring.len() >= self.config.decisions_ring {
                ring.pop_front();
            }
            ring.push_back(kept);
        }
    }

    /// The entries in memory that `filter` keeps, newest first, at most
    /// `limit`.
    pub fn entries(&self, filter: &Filter, limit: usize) -> Vec<Arc<KeptEntry>> {
        let Ok(ring) = self.ring.lock() else {
            return Vec::new();
        };
        ring.iter()
            .rev()
            .filter(|e| filter.keeps(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The sequence number of one of this process's entry ids (whether or
    /// not it is still in memory), for `since=`: `None` when `id` is not
    /// one.
    pub fn sequence_of(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&self.node)?
            .strip_prefix(&format!("-{:08x}-", self.process))?
            .parse()
            .ok()
    }

    /// A kept snapshot, by id.
    pub fn snapshot(&self, id: &str) -> Option<Arc<DataSnapshot>> {
        let s = self.snapshots.lock().ok()?;
        s.kept.iter().find(|(k, _)| k == id).map(|(_, d)| d.clone())
    }

    /// Entries logged so far.
    pub fn logged(&self) -> u64 {
        self.logged.load(Ordering::Relaxed)
    }

    /// Entries the file writer could not take (its queue was full) or
    /// could not write.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Which entries `GET /api/decisions/log` lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this app's.
    pub app: Option<String>,
    /// Only with this reason code.
    pub reason: Option<String>,
    /// Only with this provider.
    pub provider: Option<String>,
    /// Only those after this.
    pub since: Option<Since>,
}

/// Where a listing starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    /// Entries decided at or after this time (unix ms).
    Time(i64),
    /// Entries logged after the one with this sequence number
    /// ([`DecisionLog::sequence_of`]).
    After(u64),
}

impl Filter {
    fn keeps(&self, e: &KeptEntry) -> bool {
        self.app.as_ref().is_none_or(|a| *a == e.app)
            && self.reason.as_ref().is_none_or(|r| *r == e.reason)
            && self
                .provider
                .as_ref()
                .is_none_or(|p| Some(p) == e.provider.as_ref())
            && match &self.since {
                Some(Since::Time(t)) => e.time_ms >= *t,
                Some(Since::After(n)) => sequence(&e.id).is_some_and(|s| s > *n),
                None => true,
            }
    }
}

/// The sequence number at the end of an entry id.
fn sequence(id: &str) -> Option<u64> {
    id.rsplit('-').next()?.parse().ok()
}

/// Writes entries to the rotated file, on its own thread.
struct FileWriter {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    dropped: Arc<AtomicU64>,
}

/// The file being written: its size and the snapshots already in it.
struct OpenFile {
    out: std::io::BufWriter<std::fs::File>,
    size: u64,
    written: HashSet<String>,
}

impl FileWriter {
    /// Writes what arrives until every sender is gone, flushing after each
    /// burst.
    fn run(self, rx: crossbeam_channel::Receiver<ToFile>) {
        let mut file: Option<OpenFile> = None;
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(job) = next {
                if let Err(e) = self.write(&mut file, &job) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot write the decision log file");
                    file = None;
                }
                next = rx.try_recv().ok();
            }
            if let Some(f) = file.as_mut()
                && let Err(e) = f.out.flush()
            {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot write the decision log file");
                file = None;
            }
        }
    }

    /// Writes one entry, and its snapshot first when this file has not
    /// got it; rotates first when the entry would pass the size limit.
    fn write(&self, file: &mut Option<OpenFile>, job: &ToFile) -> std::io::Result<()> {
        let entry = serde_json::to_vec(&job.entry).map_err(std::io::Error::other)?;
        if file.is_none() {
            *file = Some(self.open()?);
        }
        if let Some(f) = file.as_ref()
            && f.size > 0
            && f.size + entry.len() as u64 + 1 > self.max_bytes
        {
            if let Some(mut f) = file.take() {
                f.out.flush()?;
            }
            self.rotate()?;
            *file = Some(self.open()?);
        }
        let Some(f) = file.as_mut() else {
            return Ok(());
        };
        if !f.written.contains(&job.entry.snapshot) {
            let line = SnapshotLine {
                snapshot: KeptSnapshot {
                    id: job.entry.snapshot.clone(),
                    data: job.snapshot.clone(),
                },
            };
            let text = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
            f.out.write_all(&text)?;
            f.out.write_all(b"\n")?;
            f.size += text.len() as u64 + 1;
            f.written.insert(job.entry.snapshot.clone());
        }
        f.out.write_all(&entry)?;
        f.out.write_all(b"\n")?;
        f.size += entry.len() as u64 + 1;
        Ok(())
    }

    /// Opens the file for appending. A file left by an earlier process
    /// has snapshots this one does not know of: it is rotated away first,
    /// so the file this process writes stands alone.
    fn open(&self) -> std::io::Result<OpenFile> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0) {
            self.rotate()?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        Ok(OpenFile {
            out: std::io::BufWriter::new(f),
            size: 0,
            written: HashSet::new(),
        })
    }

    /// `file.N-2` → `file.N-1`, …, `file` → `file.1` (with one file kept,
    /// the file is only removed).
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |i: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.keep <= 1 {
            return remove_if_there(&self.path);
        }
        remove_if_there(&numbered(self.keep - 1))?;
        for i in (1..self.keep - 1).rev() {
            let from = numbered(i);
            if from.exists() {
                std::fs::rename(&from, numbered(i + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }
}

/// Removes `path`; a file already gone is no error.
fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
