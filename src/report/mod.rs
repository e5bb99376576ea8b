//! Decision reports and the fleet (issue 12, `shared/seeds/001_*`): an
//! Openmix app is an application, a Switchyard process a node (instance),
//! a provider a toggle, and decisions split by reason code stand for
//! yes/no.
//!
//! - [`counters`]: per-thread decision counters the query path writes
//!   without a shared lock, merged by a background task.
//! - [`buckets`]: timed buckets keyed by stop time, the minute and hour
//!   windows over them, and the per-slot series the dashboard draws.
//! - [`store`]: payloads, their validation, and the [`store::ReportStore`]
//!   seam (implemented by the database layer, `crate::db`).
//!
//! Every interval each node registers itself and writes the bucket it
//! counted, then reads the rows the fleet wrote since its last poll (by
//! id: ids grow in commit order and are never reused) into memory
//! ([`Reports`]); the API answers from memory only. On PostgreSQL a write
//! also wakes the fleet's other nodes to read it at once. A node with
//! `push_url` posts the same payloads to another node instead.

pub mod buckets;
pub mod counters;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use buckets::{FleetBuckets, HOUR_MS, StoredBucket, format_time, now_ms};
use store::{NodeRow, ReportError, ReportStore};

/// Nodes not seen for this long are pruned.
pub const NODE_KEEP_MS: i64 = 2 * 86_400_000;
/// Buckets are kept this long (the hour window).
pub const BUCKET_KEEP_MS: i64 = HOUR_MS;

/// The fleet as this node sees it: buckets and nodes read from the store.
pub struct Reports {
    /// Where buckets and registrations are written and read.
    pub store: Arc<dyn ReportStore>,
    /// Unix ms this process started.
    pub started: i64,
    view: Mutex<FleetState>,
    /// One refresh at a time: a slower one that read the store earlier
    /// must not overwrite the node list of a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct FleetState {
    buckets: FleetBuckets,
    nodes: Vec<NodeRow>,
    /// The largest bucket id read from the store: the next poll reads the
    /// rows after it.
    last_id: i64,
}

impl Reports {
    /// Over a store.
    pub fn new(store: Arc<dyn ReportStore>) -> Self {
        Reports {
            store,
            started: now_ms(),
            view: Mutex::new(FleetState::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the fleet's rows written since the last poll (and the node
    /// list) into memory.
    pub async fn refresh(&self, fleet: &str) -> Result<(), ReportError> {
        let _one = self.refreshing.lock().await;
        let now = now_ms();
        let after = self.view.lock().map_or(0, |v| v.last_id);
        let rows = self
            .store
            .buckets_after(fleet, after, now - BUCKET_KEEP_MS)
            .await?;
        let nodes = self.store.nodes(fleet).await?;
        if let Ok(mut v) = self.view.lock() {
            v.last_id = rows.iter().map(|b| b.id).max().unwrap_or(after);
            v.buckets.add(rows);
            v.buckets.prune(now - BUCKET_KEEP_MS);
            v.nodes = nodes;
        }
        Ok(())
    }

    /// Deletes the store's buckets older than an hour and nodes not seen
    /// for two days, as of `now` (unix ms).
    pub async fn prune(&self, now: i64) -> Result<(), ReportError> {
        self.store
            .prune(now - BUCKET_KEEP_MS, now - NODE_KEEP_MS)
            .await
    }

    /// Runs `f` over the in-memory buckets.
    pub fn with_buckets<T>(&self, f: impl FnOnce(&FleetBuckets) -> T) -> T {
        match self.view.lock() {
            Ok(v) => f(&v.buckets),
            Err(_) => f(&FleetBuckets::default()),
        }
    }

    /// Adds buckets to the in-memory view directly (a push just stored).
    /// The poll position stays: rows of lower ids may still be unread.
    pub fn add_local(&self, b: StoredBucket) {
        if let Ok(mut v) = self.view.lock() {
            v.buckets.add([b]);
        }
    }

    /// The fleet's nodes as last polled (newest first).
    pub fn nodes(&self) -> Vec<NodeRow> {
        self.view
            .lock()
            .map(|v| v.nodes.clone())
            .unwrap_or_default()
    }
}

/// A node counts as live while it was seen within three intervals plus
/// 5 s of slack (a loaded machine misses a beat without leaving).
pub fn is_live(n: &NodeRow, now: i64) -> bool {
    n.last_seen >= now - 3 * n.interval_ms - 5_000
}

/// The most common value of `values` (ties: the smallest).
fn majority<'a>(values: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *count.entry(v).or_default() += 1;
    }
    let best = count.values().copied().max()?;
    count.into_iter().find(|(_, n)| *n == best).map(|(v, _)| v)
}

/// Apps whose version differs between live nodes: app → versions.
pub fn drifting_apps(nodes: &[NodeRow], now: i64) -> BTreeMap<String, BTreeSet<String>> {
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for n in nodes.iter().filter(|n| is_live(n, now)) {
        for (app, v) in &n.apps {
            versions.entry(app.clone()).or_default().insert(v.clone());
        }
    }
    versions.retain(|_, v| v.len() > 1);
    versions
}

/// `GET /api/nodes`: every node with its drift flags.
pub fn nodes_json(nodes: &[NodeRow], last_push: &HashMap<String, i64>, now: i64) -> Value {
    let live: Vec<&NodeRow> = nodes.iter().filter(|n| is_live(n, now)).collect();
    let drift = drifting_apps(nodes, now);
    let common_config = majority(live.iter().filter_map(|n| n.config_hash.as_deref()));
    let common_app: BTreeMap<&str, &str> = drift
        .keys()
        .filter_map(|app| {
            let v = majority(live.iter().flat_map(|n| {
                n.apps
                    .iter()
                    .filter(|(a, _)| a == app)
                    .map(|(_, v)| v.as_str())
            }))?;
            Some((app.as_str(), v))
        })
        .collect();
    let list: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let alive = is_live(n, now);
            let apps: Vec<Value> = n
                .apps
                .iter()
                .map(|(a, v)| {
                    let differs = alive && common_app.get(a.as_str()).is_some_and(|c| c != v);
                    json!({"name": a, "version": v, "drift": differs})
                })
                .collect();
            let config_drift =
                alive && drift_config(&live) && n.config_hash.as_deref() != common_config;
            let push = n.last_push.or_else(|| last_push.get(&n.node).copied());
            json!({
                "fleet": n.fleet,
                "node": n.node,
                "ip": n.ip,
                "version": n.version,
                "live": alive,
                "started": format_time(n.started),
                "interval_ms": n.interval_ms,
                "createdAt": format_time(n.created_at),
                "lastSeen": format_time(n.last_seen),
                "lastPush": push.map(format_time),
                "apps": apps,
                "config_hash": n.config_hash,
                "config_drift": config_drift,
                "drift": config_drift || apps.iter().any(|a| a["drift"] == json!(true)),
                "snapshots": n.snapshots,
            })
        })
        .collect();
    json!({
        "nodes": list,
        "drift": drift,
        "config_drift": drift_config(&live),
    })
}

fn drift_config(live: &[&NodeRow]) -> bool {
    live.iter()
        .filter_map(|n| n.config_hash.as_deref())
        .collect::<BTreeSet<_>>()
        .len()
        > 1
}
