//! Exact decision memoisation: reuse a decision for a request that reads
//! the same values.
//!
//! While a decision runs, the host records every value the app read that
//! can differ between requests (reads.rs: request fields, probe rows,
//! headers, query parameters, in the order read) and whether it called
//! `Math.random` or `console.log`. For an app proven stateless
//! (purity.rs), whose top level and `init` did not call
//! `Math.random`, the decision is a function of those values, the app
//! version and the data snapshot. So decisions are stored in a tree: each
//! node names the next value the app read, each edge is one value of it,
//! each leaf a decision. A lookup reads the same values from the new
//! request, following the edges, and reaches a leaf only if the app would
//! have read exactly those values and so decided exactly the same.
//!
//! One [`Memo`] belongs to one loaded app version (a reload makes a new
//! one); it empties itself when the data snapshot changes. Decisions that
//! read randomness or logged are never stored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use hashbrown::HashMap;

use crate::metrics::counter::Counter;

use super::data::DataSnapshot;
use super::decision::Decision;
use super::host;
use super::reads::{ReadKey, ReadLog, ReadValue, ValueRef};
use super::request::Request;

/// Leaves one app version keeps before it stops storing new decisions (an
/// app that reads the client address would otherwise grow without bound).
pub const MAX_ENTRIES: usize = 4096;

/// Everything besides the request that a read depends on.
pub struct Inputs<'a> {
    /// The request.
    pub request: &'a Request,
    /// The data snapshot.
    pub data: &'a DataSnapshot,
    /// The providers the app sees (its declared ones get `{}` rows from
    /// `getProbe`).
    pub scope: super::ProviderScope<'a>,
    /// Whether the app enabled proximity data.
    pub proximity: bool,
}

impl Inputs<'_> {
    /// The value of `key` for this request, as the host reads it, passed
    /// to `f` borrowed.
    pub fn with_value<R>(&self, key: &ReadKey, f: impl FnOnce(ValueRef<'_>) -> R) -> R {
        match key {
            ReadKey::Field(i) => f(host::field_ref(usize::from(*i), self.request)),
            ReadKey::Probe(name) => {
                let v = host::probe_read(name, self.request, self.data, self.scope, self.proximity);
                f(v.as_ref())
            }
            ReadKey::Header(name) => f(ValueRef::Opt(self.request.header(name))),
            ReadKey::Query(name) => f(ValueRef::Opt(self.request.query_value(name))),
        }
    }

    /// The value of `key` for this request, owned.
    pub fn read(&self, key: &ReadKey) -> ReadValue {
        self.with_value(key, |v| v.into_owned())
    }
}

fn addr_of(data: &DataSnapshot) -> usize {
    data as *const DataSnapshot as usize
}

enum Node {
    Empty,
    Leaf(Arc<Decision>),
    Read {
        key: ReadKey,
        next: HashMap<ReadValue, Node>,
    },
}

struct Tree {
    data_version: u64,
    /// Address of the snapshot the decisions were made with: a version
    /// names one snapshot in the server, but nothing else enforces it.
    data_addr: usize,
    root: Node,
    entries: usize,
}

/// The memo of one app version.
pub struct Memo {
    tree: RwLock<Tree>,
    /// Set when a stored path disagreed with a new decision's reads: the
    /// proof was wrong for this app, so it is no longer memoised.
    disabled: AtomicBool,
    // Hits and misses are counted on every query, by every DNS thread:
    // sharded, so the threads never write one cache line.
    hits: Counter,
    misses: Counter,
    stored: Counter,
    impure: Counter,
}

/// Counters of one memo, for `/debug/vars`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MemoStats {
    /// Decisions answered from the memo.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Decisions stored.
    pub stored: u64,
    /// Decisions not stored because they read randomness or logged.
    pub impure: u64,
    /// Decisions held now.
    pub entries: usize,
    /// Whether memoisation was turned off after a disagreement.
    pub disabled: bool,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Memo {
    fn default() -> Self {
        Memo::new()
    }
}

impl Memo {
    /// An empty memo.
    pub fn new() -> Memo {
        Memo {
            tree: RwLock::new(Tree {
                data_version: 0,
                data_addr: 0,
                root: Node::Empty,
                entries: 0,
            }),
            disabled: AtomicBool::new(false),
            hits: Counter::new(),
            misses: Counter::new(),
            stored: Counter::new(),
            impure: Counter::new(),
        }
    }

    /// The stored decision for this request, if the app would read exactly
    /// the values of one stored path.
    pub fn lookup(&self, view: &Inputs<'_>) -> Option<Arc<Decision>> {
        if self.disabled.load(Ordering::Relaxed) {
            return None;
        }
        let found = self.find(view);
        if found.is_some() {
            self.hits.add(1);
        } else {
            self.misses.add(1);
        }
        found
    }

    /// [`Memo::lookup`] without counting a hit or a miss: whether a
    /// decision is stored for this request, for explaining one (which must
    /// not change what the server reports).
    pub fn peek(&self, view: &Inputs<'_>) -> Option<Arc<Decision>> {
        if self.disabled.load(Ordering::Relaxed) {
            return None;
        }
        self.find(view)
    }

    fn find(&self, view: &Inputs<'_>) -> Option<Arc<Decision>> {
        let tree = self.tree.read().ok()?;
        if tree.data_version != view.data.version || tree.data_addr != addr_of(view.data) {
            return None;
        }
        let mut node = &tree.root;
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf(d) => return Some(d.clone()),
                Node::Read { key, next } => node = view.with_value(key, |v| next.get(&v))?,
            }
        }
    }

    /// Stores `decision`, made with `data` after reading `log`.
    pub fn store(&self, data: &DataSnapshot, log: ReadLog, decision: &Decision) {
        let data_version = data.version;
        if self.disabled.load(Ordering::Relaxed) {
            return;
        }
        if log.impure {
            self.impure.add(1);
            return;
        }
        let Ok(mut tree) = self.tree.write() else {
            return;
        };
        if tree.data_version != data_version || tree.data_addr != addr_of(data) {
            if data_version < tree.data_version {
                return;
            }
            tree.data_version = data_version;
            tree.data_addr = addr_of(data);
            tree.root = Node::Empty;
            tree.entries = 0;
        }
        if tree.entries >= MAX_ENTRIES {
            return;
        }
        let mut node = &mut tree.root;
        for (k, v) in log.reads {
            if matches!(node, Node::Empty) {
                *node = Node::Read {
                    key: k.clone(),
                    next: HashMap::new(),
                };
            }
            match node {
                Node::Read { key, next } if *key == k => {
                    node = next.entry(v).or_insert(Node::Empty);
                }
                _ => return self.disagree(),
            }
        }
        match node {
            Node::Empty => {
                *node = Node::Leaf(Arc::new(decision.clone()));
                tree.entries += 1;
                self.stored.add(1);
            }
            // Another thread stored the same path first; it must agree.
            Node::Leaf(d) if **d == *decision => {}
            _ => self.disagree(),
        }
    }

    fn disagree(&self) {
        if !self.disabled.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "an app decided differently for the same values read; its decisions are no longer memoised"
            );
        }
    }

    /// Counters and size.
    pub fn stats(&self) -> MemoStats {
        MemoStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            stored: self.stored.get(),
            impure: self.impure.get(),
            entries: self.tree.read().map_or(0, |t| t.entries),
            disabled: self.disabled.load(Ordering::Relaxed),
        }
    }
}
