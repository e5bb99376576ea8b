//! `switchyard`: parses the command line and hands off to the library.

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    switchyard::server::logging::init(level, cli.log_format);
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
