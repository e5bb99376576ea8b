//! The decision core: which app serves a name, where it runs, and the rules
//! around its answer. Every front end (DNS, HTTP, `switchyard decide`) goes
//! through here.
//!
//! - [`apps`]: the app registry: load `apps/` (with sidecars), validate,
//!   watch for changes, swap versions in.
//! - [`steer`]: one decision and its rules: the checks that answer without
//!   running the app (quarantined, never loaded, memoised, backing off),
//!   the call, the fallback.
//! - [`workers`]: the JS worker threads decisions run on, and the watchdog
//!   that answers for a stuck one.
//! - [`request`]: the request an operator describes (flags or query
//!   parameters), located; [`explain`]: one decision explained as a report.
//! - [`backoff`]: the backoff of apps whose calls run away.
//! - [`quarantine`]: in-flight slots, and the quarantine of apps that
//!   crashed the server, on evidence only.
//! - [`priority`]: threads left running an app run at idle priority.
//! - [`decision_log`]: the sampled log of real decisions and the
//!   snapshots they were decided on; [`replay`]: deciding one again.
//! - [`diff`]: what a candidate version changes, for shadows and replay.
//! - [`shadow`]: a candidate deciding beside the live app, off the answer
//!   path.
//!
//! The face: [`AppRegistry`], [`Workers`], [`Steered`].

pub mod apps;
pub mod backoff;
pub mod decision_log;
pub mod diff;
pub mod explain;
pub mod priority;
pub mod quarantine;
pub mod replay;
pub mod request;
pub mod shadow;
pub mod steer;
pub mod workers;

pub use apps::{AppRegistry, LoadedApp};
pub use steer::{Outcome, Steered};
pub use workers::Workers;
