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
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::Digest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use buckets::{Counts, FleetBuckets, HOUR_MS, StoredBucket, format_time, now_ms};
use store::{BucketReport, NodeRow, Registration, ReportError, ReportStore};

use crate::server::State;

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

/// The content hash of an app version as nodes publish it.
pub fn app_version(hash: u64) -> String {
    format!("{hash:016x}")
}

/// This node's registration as of now.
pub fn registration(state: &State) -> Registration {
    let config = state.config.load();
    let rc = &config.reports;
    let set = state.apps.snapshot();
    let apps = set
        .apps
        .iter()
        .filter(|(_, a)| a.load_error.is_none())
        .map(|(n, a)| (n.clone(), app_version(a.hash)))
        .collect();
    let mut snapshots = Map::new();
    snapshots.insert("data_version".into(), json!(state.data.load().version));
    snapshots.insert(
        "inventory_version".into(),
        json!(state.inventory.view().version),
    );
    let feeds: Map<String, Value> = state
        .hub
        .feed_status()
        .into_iter()
        .map(|(k, f)| (k, json!({"age_secs": f.last_ok_secs, "stale": f.stale})))
        .collect();
    snapshots.insert("feeds".into(), Value::Object(feeds));
    let sonar: Map<String, Value> = state
        .data
        .load()
        .sonar
        .iter()
        .map(|(p, v)| {
            (
                p.clone(),
                json!(if v.contains("\"avail\":1") {
                    "up"
                } else {
                    "down"
                }),
            )
        })
        .collect();
    snapshots.insert("sonar".into(), Value::Object(sonar));
    Registration {
        fleet: rc.fleet.clone(),
        node: rc.node.clone(),
        apps,
        started: state.reports.started,
        interval_ms: rc.interval.as_millis() as i64,
        config_hash: Some(config_hash(&config.source)),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        snapshots,
    }
}

/// SHA-256 (first 16 hex digits) of the config file as it is on disk
/// (the built-in defaults when there is no file). Per-node values (ports,
/// node id) come from flags or the environment, so nodes that share a
/// file share a hash.
fn config_hash(source: &str) -> String {
    let text = std::fs::read(source).unwrap_or_else(|_| crate::config::DEFAULT_CONFIG.into());
    hex::encode(&sha2::Sha256::digest(&text)[..8])
}

/// Counts merged by the background merger every second.
const MERGE_EVERY: Duration = Duration::from_secs(1);
/// Store pruning runs this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Refreshes woken by other nodes' writes run at most this often (a fleet
/// of N nodes writes N buckets per interval).
const WAKE_REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The background task: merges counters every second; with reporting on,
/// also reports and polls every interval, reads the fleet's new buckets
/// when the store says another node wrote one, prunes every minute, and
/// reports once more when `stop` fires (the server fires it once DNS and
/// HTTP have drained, so the last bucket holds every answered decision).
pub async fn run(state: Arc<State>, stop: CancellationToken) {
    let enabled = state.config.load().reports.enabled;
    let client = crate::server::feed_client();
    let mut merge = tokio::time::interval(merge_every(state.config.load().reports.interval));
    merge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wake = Arc::new(Notify::new());
    let listening = stop.child_token();
    let _stop_listening = listening.clone().drop_guard();
    if enabled {
        let store = state.reports.store.clone();
        let fleet = state.config.load().reports.fleet.clone();
        let wake = wake.clone();
        tokio::spawn(async move { store.listen(fleet, wake, listening).await });
    }
    let mut next_report = tokio::time::Instant::now();
    let mut next_prune = tokio::time::Instant::now();
    let mut next_wake_refresh = tokio::time::Instant::now();
    let mut woken = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if enabled {
                    report_once(&state, &client).await;
                }
                return;
            }
            _ = merge.tick() => {}
            _ = wake.notified() => woken = true,
        }
        state.counters.merge();
        if !enabled {
            continue;
        }
        let now = tokio::time::Instant::now();
        if now >= next_report {
            report_once(&state, &client).await;
            next_report = now + state.config.load().reports.interval;
            woken = false;
        } else if woken && now >= next_wake_refresh {
            if let Err(e) = state
                .reports
                .refresh(&state.config.load().reports.fleet)
                .await
            {
                tracing::warn!(error = %e, "reading the fleet's reports failed");
            }
            next_wake_refresh = now + WAKE_REFRESH_EVERY;
            woken = false;
        }
        if now >= next_prune {
            if let Err(e) = state.reports.prune(now_ms()).await {
                tracing::warn!(error = %e, "pruning old reports failed");
            }
            next_prune = now + PRUNE_EVERY;
        }
    }
}

/// The merge tick: a second, or the report interval when that is shorter.
fn merge_every(interval: Duration) -> Duration {
    interval.min(MERGE_EVERY)
}

/// Registers this node and writes (or pushes) its bucket, then polls the
/// fleet. A failed write keeps the counts for the next bucket.
pub async fn report_once(state: &State, client: &reqwest::Client) {
    let config = state.config.load();
    let rc = &config.reports;
    let reg = registration(state);
    let (start, stop, counts) = state.counters.take_pending();
    let bucket = BucketReport {
        fleet: rc.fleet.clone(),
        node: rc.node.clone(),
        start,
        stop,
        counts,
    };
    let result = match &rc.push_url {
        Some(url) => {
            let token = rc.push_token.as_deref().or(config.api_token.as_deref());
            push(client, url, token, &reg, &bucket).await
        }
        None => write(state, &reg, &bucket).await,
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "reporting decisions failed; the counts go with the next bucket");
        state.counters.restore_pending(bucket.start, &bucket.counts);
    }
    if let Err(e) = state.reports.refresh(&rc.fleet).await {
        tracing::warn!(error = %e, "reading the fleet's reports failed");
    }
}

async fn write(state: &State, reg: &Registration, bucket: &BucketReport) -> Result<(), String> {
    let now = now_ms();
    let store = &state.reports.store;
    store
        .register(reg, own_ip(state).as_deref(), now)
        .await
        .map_err(|e| e.to_string())?;
    if !bucket.counts.is_empty() {
        store
            .insert_bucket(bucket, now)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The operations listener's address, unless it listens on every address.
fn own_ip(state: &State) -> Option<String> {
    let ip = state.config.load().admin.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

async fn push(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    reg: &Registration,
    bucket: &BucketReport,
) -> Result<(), String> {
    let send = |path: &str, body: Value| {
        let mut req = client
            .post(format!("{}{path}", base.trim_end_matches('/')))
            .timeout(Duration::from_secs(5))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let check = |r: Result<reqwest::Response, reqwest::Error>, what: &str| -> Result<(), String> {
        match r {
            Ok(r) if r.status().as_u16() == 202 => Ok(()),
            Ok(r) => Err(format!("{what}: {base} answered {}", r.status())),
            Err(e) => Err(format!("{what}: {e}")),
        }
    };
    check(
        send("/api/nodes/register", store::registration_json(reg)).await,
        "register",
    )?;
    if !bucket.counts.is_empty() {
        check(
            send("/api/decisions", store::bucket_json(bucket)).await,
            "decisions",
        )?;
    }
    Ok(())
}

/// Total decisions of a [`Counts`].
pub fn total(c: &Counts) -> u64 {
    buckets::total(c)
}
