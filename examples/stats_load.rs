//! Load bench for the stats store, run by `bench/stats-load.sh`.
//!
//! For each backend (SQLite always; PostgreSQL when `--postgres` or env
//! `SWITCHYARD_TEST_POSTGRES` / `POSTGRES` gives a URL):
//!
//! 1. posts `--posts` records through the real handler
//!    (`POST /api/post_stats`, HMAC-signed, `--concurrency` at a time) and
//!    reports posts/s;
//! 2. grows the table to `--rows` rows with bulk inserts, timestamps spread
//!    evenly over the last 7 days;
//! 3. times `GET /api/aggregated_stats` (default 24 h window, through the
//!    handler, so JSON encoding is included) and a few other reads:
//!    median and max wall time of `--runs` runs after one warm-up, and
//!    the process CPU per run (the query's own cost for in-process SQLite,
//!    which other load on the machine does not inflate).
//!
//! ```text
//! cargo run --release --example stats_load -- --posts 100000 --rows 1000000
//! ```
//!
//! SQLite lives in a temp dir; PostgreSQL in a fresh schema dropped at the end.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use switchyard::db::{postgres, sqlite};
use switchyard::http::stats as api;
use switchyard::stats::StatsApi;
use switchyard::stats::{
    ErrorCount, Filter, RegionSet, StatsRecord, StatsStore, Window, sign, unix_now,
};

const SECRET: &str = "bench-secret";
const ORCHESTRATORS: usize = 100;
const SPREAD_SECS: f64 = 7.0 * 86_400.0;

#[derive(Parser, Debug)]
struct Args {
    /// Records posted through the handler.
    #[arg(long, default_value_t = 100_000)]
    posts: usize,
    /// Table size for the read timings (posts included).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Posts in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Timed runs per read (after one warm-up).
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// PostgreSQL URL; defaults to env SWITCHYARD_TEST_POSTGRES, then POSTGRES.
    #[arg(long)]
    postgres: Option<String>,
    /// Skip SQLite.
    #[arg(long)]
    no_sqlite: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let regions = RegionSet::default();
    let codes: Vec<String> = regions
        .iter()
        .map(|r| r.code.clone())
        .filter(|c| c != "GLOBAL")
        .collect();
    println!(
        "stats load: {} posts (concurrency {}), table grown to {} rows over 7 days, {} orchestrators x {} regions",
        args.posts,
        args.concurrency,
        args.rows,
        ORCHESTRATORS,
        codes.len()
    );

    if !args.no_sqlite {
        let dir = tempfile::tempdir()?;
        let store = sqlite::open(dir.path()).await?;
        run("sqlite", Arc::new(store), &args, &codes).await?;
    }
    let url = args
        .postgres
        .clone()
        .or_else(|| std::env::var("SWITCHYARD_TEST_POSTGRES").ok())
        .or_else(|| std::env::var("POSTGRES").ok())
        .filter(|u| !u.is_empty());
    match url {
        Some(url) => {
            let schema = format!("switchyard_bench_{}", std::process::id());
            let store = postgres::open(&url, Some(&schema)).await?;
            let pool = store.pool().clone();
            let result = run("postgres", Arc::new(store), &args, &codes).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await?;
            result?;
        }
        None => eprintln!("SKIPPED: PostgreSQL (give --postgres or set SWITCHYARD_TEST_POSTGRES)"),
    }
    Ok(())
}

/// The i-th synthetic record: orchestrators and regions round-robin,
/// timestamps evenly over the 7 days before `now`.
fn record(i: usize, total: usize, now: f64, codes: &[String]) -> StatsRecord {
    let frac = (i as f64 + 0.5) / total as f64;
    let k = i.wrapping_mul(2_654_435_761) % 1000;
    StatsRecord {
        region: codes[i % codes.len()].clone(),
        orchestrator: address((i / codes.len()) % ORCHESTRATORS),
        timestamp: now - SPREAD_SECS * frac,
        segments_sent: 30,
        segments_received: 30 - (k % 3) as i64,
        success_rate: 1.0 - (k % 3) as f64 / 30.0,
        seg_duration: 2.0,
        round_trip_time: 0.5 + k as f64 / 1000.0,
        upload_time: 0.2,
        download_time: 0.2,
        transcode_time: 0.1 + k as f64 / 2000.0,
        errors: if k.is_multiple_of(10) {
            vec![ErrorCount {
                error_code: "timeout".into(),
                count: 1,
            }]
        } else {
            vec![]
        },
    }
}

/// A random-looking 20-byte address for orchestrator `n`, like real ones
/// (zero-padded counters would make every string comparison walk 40 equal characters).
fn address(n: usize) -> String {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let n = n as u64;
    format!(
        "0x{:016x}{:016x}{:08x}",
        mix(3 * n),
        mix(3 * n + 1),
        mix(3 * n + 2) as u32
    )
}

async fn run(
    name: &str,
    store: Arc<dyn StatsStore>,
    args: &Args,
    codes: &[String],
) -> Result<(), BoxError> {
    println!("\n== {name} == (load average {})", load_average());
    let api = Arc::new(StatsApi::new(
        store.clone(),
        Some(SECRET.into()),
        RegionSet::default(),
    ));
    let now = unix_now();

    // 1. Posts through the handler. Bodies are signed up front: signing is the tester's cost.
    let bodies: Vec<(Bytes, String)> = (0..args.posts)
        .map(|i| {
            let body = serde_json::to_vec(&record(i, args.rows, now, codes)).unwrap_or_default();
            let sig = sign(SECRET.as_bytes(), &body);
            (Bytes::from(body), sig)
        })
        .collect();
    let bodies = Arc::new(bodies);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.concurrency.max(1) {
        let (api, bodies) = (api.clone(), bodies.clone());
        let step = args.concurrency.max(1);
        tasks.push(tokio::spawn(async move {
            let mut failed = 0usize;
            for (body, sig) in bodies.iter().skip(t).step_by(step) {
                let mut h = HeaderMap::new();
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(sig).unwrap_or(HeaderValue::from_static("")),
                );
                let r = api::handle(
                    &api,
                    &Method::POST,
                    "/api/post_stats",
                    None,
                    &h,
                    body.clone(),
                )
                .await;
                if r.map(|r| r.status()) != Some(StatusCode::OK) {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let stored = store.count().await?;
    println!(
        "post_stats via handler: {} posts in {:.2} s = {:.0} posts/s ({} failed, {} stored)",
        args.posts,
        secs,
        args.posts as f64 / secs,
        failed,
        stored
    );

    // 2. Grow the table in bulk.
    let start = Instant::now();
    let mut i = args.posts;
    while i < args.rows {
        let end = (i + 10_000).min(args.rows);
        let batch: Vec<StatsRecord> = (i..end).map(|j| record(j, args.rows, now, codes)).collect();
        store.insert_batch(&batch).await?;
        i = end;
    }
    let grown = args.rows.saturating_sub(args.posts);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "bulk insert: {} rows in {:.2} s = {:.0} rows/s; table now {} rows",
        grown,
        secs,
        grown as f64 / secs.max(1e-9),
        store.count().await?
    );

    // 3. Reads.
    let window = Window::from_params(None, None, unix_now(), api.default_window)?;
    let orch = address(7);
    let h = HeaderMap::new();
    let agg_q = format!("orchestrator={orch}");
    let raw_q = format!("orchestrator={orch}&region=FRA");
    let in_window = store.aggregated(&Filter::new(None, None, window)).await?;
    let groups: usize = in_window.values().map(|m| m.len()).sum();
    println!(
        "24 h window: {} orchestrators, {} (orchestrator, region) rows; load average {}",
        in_window.len(),
        groups,
        load_average()
    );

    time(
        args.runs,
        "GET /api/aggregated_stats (24 h, all)",
        || async {
            let r = api::handle(
                &api,
                &Method::GET,
                "/api/aggregated_stats",
                None,
                &h,
                Bytes::new(),
            )
            .await;
            r.map(|r| r.status() == StatusCode::OK).unwrap_or(false)
        },
    )
    .await;
    time(args.runs, "store.aggregated (24 h, all)", || async {
        store
            .aggregated(&Filter::new(None, None, window))
            .await
            .is_ok()
    })
    .await;
    time(
        args.runs,
        "GET /api/aggregated_stats?orchestrator= (24 h)",
        || async {
            let r = api::handle(
                &api,
                &Method::GET,
                "/api/aggregated_stats",
                Some(&agg_q),
                &h,
                Bytes::new(),
            )
            .await;
            r.map(|r| r.status() == StatusCode::OK).unwrap_or(false)
        },
    )
    .await;
    time(
        args.runs,
        "GET /api/raw_stats?orchestrator=&region= (24 h)",
        || async {
            let r = api::handle(
                &api,
                &Method::GET,
                "/api/raw_stats",
                Some(&raw_q),
                &h,
                Bytes::new(),
            )
            .await;
            r.map(|r| r.status() == StatusCode::OK).unwrap_or(false)
        },
    )
    .await;
    let all_time = Window {
        since: None,
        until: unix_now(),
    };
    time(
        args.runs.min(3),
        "store.aggregated (until only: all 7 days)",
        || async {
            store
                .aggregated(&Filter::new(None, None, all_time))
                .await
                .is_ok()
        },
    )
    .await;
    Ok(())
}

/// The 1-, 5- and 15-minute load averages: the bench shares the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time used by this whole process so far, in ms. SQLite runs inside
/// the process, so for it the difference across an otherwise idle query is
/// the query's CPU cost, which (unlike wall time) other load on the machine
/// does not inflate. For PostgreSQL it is only the client's share.
fn process_cpu_ms() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(u.ru_utime) + ms(u.ru_stime)
}

/// Runs `f` once to warm up, then `runs` times; prints the median and max
/// wall time and the mean process CPU time.
async fn time<F, Fut>(runs: usize, what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !f().await {
        println!("{what}: FAILED");
        return;
    }
    let mut ms: Vec<f64> = Vec::with_capacity(runs);
    let cpu_start = process_cpu_ms();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let ok = f().await;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        if !ok {
            println!("{what}: FAILED");
            return;
        }
    }
    let cpu = (process_cpu_ms() - cpu_start) / ms.len() as f64;
    ms.sort_by(f64::total_cmp);
    println!(
        "{what}: median {:.1} ms, max {:.1} ms, process CPU {:.1} ms/run ({} runs)",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        cpu,
        ms.len()
    );
}
