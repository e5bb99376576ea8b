//! Switchyard: a scriptable traffic-steering engine.
//!
//! A tour of the modules, in the order a query meets them:
//!
//! - [`config`]: the TOML configuration, checked, with built-in defaults.
//! - [`geo`]: client address → asn, market, country, region, state.
//! - [`openmix`]: the JavaScript runtime running Openmix apps (and the
//!   memo that reuses the decisions of apps proven stateless).
//! - [`data`]: probe, Fusion and Sonar feeds → one data snapshot.
//! - [`engine`]: the decision core: the app registry, the JS workers, the
//!   rules around a decision (fallback, memo, backoff) and the quarantine.
//! - [`dns`]: the authoritative DNS front end.
//! - [`clients`]: what one client network may hold open on the listeners.
//! - [`http`]: the HTTP decision endpoint and the operations listener.
//! - [`inventory`]: providers, routes and weights (live traffic shaping).
//! - [`metrics`]: live counters ([`counter`]: a counter threads add to without contention).
//! - [`report`]: decision reports, nodes and the fleet view (API and dashboard).
//! - [`stats`]: the leaderboard's stats model (posts, regions, aggregation).
//! - [`db`]: the database layer: one pool and its migrations on SQLite or
//!   PostgreSQL, handing out the stats, report and inventory stores.
//! - [`startup`]: what `serve` checks and resolves before serving (files,
//!   the admin token, the DNS cookie secret).
//! - [`server`]: the serving process: listeners, feeds, reload.
//! - [`supervisor`]: `serve`'s parent process that owns the sockets
//!   ([`sockets`]), restarts the server from the binary it started from, and
//!   upgrades it on SIGUSR2.
//! - [`cli`]: the `switchyard` subcommands, one file each (`switchyard test`
//!   in [`cli::test`]).

#![warn(missing_docs)]

pub mod cli;
pub mod clients;
pub mod config;
pub mod counter;
pub mod data;
pub mod db;
pub mod dns;
pub mod engine;
pub mod geo;
pub mod http;
pub mod inventory;
pub mod logging;
pub mod metrics;
pub mod openmix;
pub mod report;
pub mod server;
pub mod sockets;
pub mod startup;
pub mod stats;
pub mod supervisor;

/// Counts allocations per thread: the memory half of an app's budget
/// (see [`openmix::alloc`]).
#[global_allocator]
static GLOBAL: openmix::alloc::CountingAlloc = openmix::alloc::CountingAlloc;
