//! Every integration suite in one test binary: each suite is a module, so
//! the dependencies are linked once, not once a suite (linking dominated
//! the test build on 2 cores). nextest still runs every test in its own
//! process, so process-wide state (statics, environment) is not shared
//! between tests; filter a suite with `cargo nextest run --test it <suite>::`.

mod common;

mod apptest;
mod check;
mod cli;
mod decision_log;
mod dns;
mod dns_fuzz;
mod dnssec_keys;
mod dnssec_sign;
mod dnssec_validators;
mod explain;
mod feeds;
mod geo;
mod hostile;
mod http;
mod inventory;
mod layout;
mod memo;
mod metrics;
mod packaging;
mod reload;
mod replay;
mod reports;
mod runtime;
mod shadow;
mod stats;
mod stats_http;
