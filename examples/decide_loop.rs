//! Runs one app's decision N times on the real runtime, for counting what a
//! decision costs: `valgrind --tool=callgrind` counts instructions, which
//! (unlike time) do not move with the machine's load. `bench/instructions.sh`
//! runs it for every shipped app.
//!
//! Usage: `decide_loop APP.js [N] [nobudget] [shared]` with the data of
//! `examples/data/` and an EU/DE client; `shared` lets the app share the
//! snapshot's probe objects (what a proven-stateless app gets).

use std::path::Path;
use std::sync::Arc;

use switchyard::openmix::{AppCode, Budget, CallOptions, Location, Request, runtime};

#[path = "../benches/common/mod.rs"]
mod common;
use common::example_data;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: decide_loop APP.js [N] [nobudget] [shared]");
        std::process::exit(2);
    };
    let n: usize = args.get(2).map_or(1000, |s| s.parse().expect("N"));
    let unbudgeted = args.iter().any(|a| a == "nobudget");
    let shared_data = args.iter().any(|a| a == "shared");
    let data = example_data();
    let code = AppCode {
        name: "app".into(),
        path: Path::new(path).to_path_buf(),
        source: Arc::from(std::fs::read_to_string(path).expect("app source")),
        version: 1,
        // Generous: under callgrind everything runs ~50 times slower.
        budget: Budget {
            decision: std::time::Duration::from_secs(5),
            load: std::time::Duration::from_secs(30),
            ..Budget::default()
        },
        setup: None,
        shared_data,
        providers: Arc::from([]),
    };
    let request = || Request {
        ip_address: Some("198.51.100.7".parse().expect("ip")),
        client: std::sync::Arc::new(Location {
            asn: 64510,
            market: "EU".into(),
            country: "DE".into(),
            ..Default::default()
        }),
        query_type: "A".into(),
        ..Request::default()
    };
    let options = || CallOptions {
        unbudgeted,
        ..CallOptions::default()
    };
    // Warm: the first calls compile the app's functions.
    for _ in 0..50 {
        runtime::decide(&code, request(), &data, options()).expect("decides");
    }
    let started = std::time::Instant::now();
    for _ in 0..n {
        runtime::decide(&code, request(), &data, options()).expect("decides");
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    eprintln!("{path}: {per:.2} µs per decision over {n}");
}
