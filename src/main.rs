//! `switchyard`: parses the command line and hands off to the library.

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    switchyard::logging::init(level);
    let result = match &cli.command {
        Command::Serve(args) => switchyard::server::serve(args),
        Command::Decide(args) => cli::decide(args),
        Command::Check(args) => cli::check(args),
        Command::Geo(args) => cli::geo(args),
        Command::Test(args) => switchyard::apptest::run(args),
        Command::Providers(args) => switchyard::inventory::client::providers(args),
        Command::Route(args) => switchyard::inventory::client::route(args),
        Command::Shape(args) => switchyard::inventory::client::shape(args),
        Command::Quarantine(args) => switchyard::inventory::client::quarantine(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
