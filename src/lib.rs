//! Switchyard: a scriptable traffic-steering engine.
//!
//! A tour of the modules, in the order a query meets them:
//!
//! - [`server`]: the serving process — start-up checks, the shared
//!   [`state`] it builds, the DNS runtimes, the feed and report tasks,
//!   SIGHUP reloads, and the supervisor that owns the sockets ([`net`]:
//!   the sockets and the per-client connection bound the listeners share).
//! - [`dns`]: the authoritative DNS front end (zones, RRL, cookies).
//! - [`dnssec`]: keys, online signatures and denial of existence for
//!   signed zones.
//! - [`http`]: the HTTP decision endpoint and the operations listener.
//! - [`engine`]: the decision core: the app registry, the JS workers, the
//!   rules around a decision (fallback, memo, backoff) and the quarantine.
//! - [`openmix`]: the JavaScript runtime running Openmix apps (and the
//!   memo that reuses the decisions of apps proven stateless).
//! - [`geo`]: client address → asn, market, country, region, state.
//! - [`data`]: probe, Fusion and Sonar feeds → one data snapshot.
//! - [`inventory`]: providers, routes and weights (live traffic shaping).
//! - [`report`]: decision reports, nodes and the fleet view (model and
//!   store seam; the loop that drives them is [`server::reporting`]).
//! - [`stats`]: the leaderboard's stats model (posts, regions, aggregation).
//! - [`db`]: the database layer: one pool and its migrations on SQLite or
//!   PostgreSQL, handing out the stats, report and inventory stores.
//! - [`metrics`]: live counters and their Prometheus rendering.
//! - [`config`]: the TOML configuration, checked, with built-in defaults;
//!   every layer reads it.
//! - [`cli`]: the `switchyard` subcommands, one file each.
//!
//! Imports go down this list's flow and never back up: front ends
//! (`cli`, `server`, `dns`, `http`) → `engine` → `openmix`, `geo`, `data`
//! → stores; `tests/it/layout.rs` checks that no files or folders import
//! each other in a cycle.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod data;
pub mod db;
pub mod dns;
pub mod dnssec;
pub mod engine;
pub mod geo;
pub mod http;
pub mod inventory;
pub mod metrics;
pub mod net;
pub mod openmix;
pub mod report;
pub mod server;
pub mod state;
pub mod stats;

/// Counts allocations per thread: the memory half of an app's budget
/// (see [`openmix::alloc`]).
#[global_allocator]
static GLOBAL: openmix::alloc::CountingAlloc = openmix::alloc::CountingAlloc;
