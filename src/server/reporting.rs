//! The decision-report loop (issue 12): every interval this node registers
//! itself and writes (or pushes) the bucket it counted, then reads what the
//! fleet wrote since its last poll; counters are merged every second and
//! old rows pruned every minute. The model and the stores are
//! `crate::report`'s; this is the task that drives them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::Digest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::report::buckets::now_ms;
use crate::report::store::{BucketReport, Registration};
use crate::state::State;

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
    let client = crate::data::http_client();
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
        send(
            "/api/nodes/register",
            crate::report::store::registration_json(reg),
        )
        .await,
        "register",
    )?;
    if !bucket.counts.is_empty() {
        check(
            send("/api/decisions", crate::report::store::bucket_json(bucket)).await,
            "decisions",
        )?;
    }
    Ok(())
}
