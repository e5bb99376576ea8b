//! The `switchyard` command line: the flags, and each subcommand in its
//! own file. `anyhow` is used here and in `main.rs` only: the library
//! returns typed errors, the command line adds context and prints them.

use clap::{Parser, Subcommand};

pub mod api;
pub mod app;
pub mod args;
pub mod check;
pub mod decide;
pub mod dnssec;
pub mod explain;
pub mod generate;
pub mod geo;
pub mod providers;
pub mod quarantine;
pub mod replay;
pub mod route;
pub mod serve;
pub mod shape;
pub mod test;

pub use crate::server::preflight::lint;
pub use args::ConfigArgs;

use crate::server::logging::LogFormat;

/// Scriptable traffic steering: authoritative DNS and HTTP decisions from Openmix apps.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Log lines on stderr as text, or as one JSON object per line for log
    /// shippers (`serve` passes it on to its serving process).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands (parsed once per process: the size difference of the
/// variants does not matter).
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the DNS and HTTP servers.
    Serve(serve::ServeArgs),
    /// Run one decision of an app and print it as JSON.
    Decide(decide::DecideArgs),
    /// Explain a running server's decision for a client: what the app read, how it decided.
    Explain(explain::ExplainArgs),
    /// Compile an app, run its init, and report errors with line numbers.
    Check(check::CheckArgs),
    /// Print what the GeoIP databases say about an address.
    Geo(geo::GeoArgs),
    /// Run app test fixtures on the real runtime.
    Test(test::TestArgs),
    /// List, drain and undrain providers of a running server.
    Providers(providers::ProvidersArgs),
    /// Add a weighted route to an endpoint of a running server.
    Route(route::RouteArgs),
    /// Set the weights of an endpoint's routes together: `shape APP route000=80 route001=20`.
    Shape(shape::ShapeArgs),
    /// List quarantined apps of a running server, or lift a quarantine.
    Quarantine(quarantine::QuarantineArgs),
    /// Decide logged decisions again with a candidate app and show what changes.
    Replay(replay::ReplayArgs),
    /// DNSSEC keys: make one, print DS records, DNSKEYs and trust anchors, show states.
    #[command(subcommand_required = true)]
    Dnssec(dnssec::DnssecArgs),
    /// Write the man pages or shell completions (for packaging).
    #[command(subcommand, hide = true)]
    Generate(generate::Generate),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            Command::Serve(args) => serve::serve(args),
            Command::Decide(args) => decide::decide(args),
            Command::Explain(args) => explain::explain(args),
            Command::Check(args) => check::check(args),
            Command::Geo(args) => geo::geo(args),
            Command::Test(args) => test::run(args),
            Command::Providers(args) => providers::providers(args),
            Command::Route(args) => route::route(args),
            Command::Shape(args) => shape::shape(args),
            Command::Quarantine(args) => quarantine::quarantine(args),
            Command::Replay(args) => replay::replay(args),
            Command::Dnssec(args) => dnssec::dnssec(args),
            Command::Generate(what) => what.run(),
        }
    }
}
