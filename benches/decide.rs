//! One decision of each shipped example app on the real runtime (a warm,
//! per-thread instance: the path a DNS query takes), plus the floor of a
//! call (an app that only calls `respondEmpty`), the same with the budget
//! off, with reads logged for the memo, and a memo hit.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::openmix::{AppCode, Budget, CallOptions, Location, Request, runtime};

mod common;
use common::example_data;

fn request() -> Request {
    Request {
        ip_address: Some("198.51.100.7".parse().expect("ip")),
        client: std::sync::Arc::new(Location {
            asn: 64510,
            market: "EU".into(),
            country: "DE".into(),
            ..Default::default()
        }),
        resolver_ip_address: Some("198.51.100.1".parse().expect("ip")),
        hostname_prefix: String::new(),
        query_type: "A".into(),
        ..Request::default()
    }
}

fn code(name: &str, source: String, version: u64) -> AppCode {
    AppCode {
        name: name.into(),
        path: Path::new("apps").join(format!("{name}.js")),
        source: Arc::from(source),
        version,
        // The bench measures speed, not the budget: a generous deadline
        // keeps a GC pause on a busy machine from failing a run.
        budget: Budget {
            decision: std::time::Duration::from_secs(1),
            ..Budget::default()
        },
        setup: None,
        shared_data: false,
        providers: Arc::from([]),
    }
}

fn bench(c: &mut Criterion) {
    let data = example_data();
    let mut group = c.benchmark_group("decide");
    let floor = code(
        "floor",
        "function onRequest(q, r) { r.respondEmpty(); }".into(),
        1,
    );
    group.bench_function("floor", |b| {
        b.iter(|| {
            runtime::decide(&floor, request(), &data, CallOptions::default()).expect("decides")
        })
    });
    // The shipped apps, plus any app named in SWITCHYARD_BENCH_APPS
    // (comma-separated paths): what one decision of your own app costs.
    let mut apps: Vec<(String, String)> = ["best-rtt", "geo-map", "fusion-budget", "http-hosts"]
        .iter()
        .map(|n| (n.to_string(), format!("apps/{n}.js")))
        .collect();
    if let Ok(extra) = std::env::var("SWITCHYARD_BENCH_APPS") {
        for path in extra.split(',').filter(|p| !p.is_empty()) {
            let stem = Path::new(path)
                .file_stem()
                .map_or(path.to_string(), |s| s.to_string_lossy().into_owned());
            apps.push((format!("{stem} ({path})"), path.to_string()));
        }
    }
    for (i, (name, path)) in apps.iter().enumerate() {
        let src = std::fs::read_to_string(path).expect("app source");
        let app = code(name, src, i as u64 + 2);
        group.bench_function(name.as_str(), |b| {
            b.iter(
                || match runtime::decide(&app, request(), &data, CallOptions::default()) {
                    Ok(out) => out,
                    Err(e) => panic!("{name}: {e}"),
                },
            )
        });
        // The same decision without the budget's polling and checks: the
        // difference is what containment costs per decision.
        group.bench_function(format!("{name} (no budget)"), |b| {
            b.iter(|| {
                let options = CallOptions {
                    unbudgeted: true,
                    ..CallOptions::default()
                };
                match runtime::decide(&app, request(), &data, options) {
                    Ok(out) => out,
                    Err(e) => panic!("{name}: {e}"),
                }
            })
        });
    }
    // Memoisation: a decision run with its reads logged (what a miss
    // costs), and a hit (the request's values read back through the memo's
    // tree: what a repeated decision costs instead of running the app).
    let config = switchyard::config::Config::load(None, &Default::default()).expect("defaults");
    for name in ["best-rtt", "geo-map"] {
        let path = Path::new("apps").join(format!("{name}.js"));
        let src = std::fs::read_to_string(&path).expect("app source");
        let sidecar = switchyard::config::read_sidecar(&path).expect("sidecar");
        let app = switchyard::engine::apps::load_app(
            name,
            &path,
            &src,
            sidecar.as_deref(),
            &config,
            &data,
            100,
        )
        .expect("loads");
        assert!(app.memo.is_some(), "{name} is memoisable");
        group.bench_function(format!("{name} (reads logged)"), |b| {
            b.iter(|| {
                let options = CallOptions {
                    log_reads: true,
                    ..CallOptions::default()
                };
                runtime::decide(&app.code, request(), &data, options).expect("decides")
            })
        });
        switchyard::engine::steer::decide(&app, request(), &data, 20);
        group.bench_function(format!("{name} (memo hit)"), |b| {
            b.iter(|| {
                switchyard::engine::steer::memoised(&app, &request(), &data, 20).expect("a hit")
            })
        });
    }
    group.finish();
    runtime::clear();
}

criterion_group!(benches, bench);
criterion_main!(benches);
