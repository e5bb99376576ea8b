//! `switchyard quarantine`: list quarantined apps of a running server, or
//! lift a quarantine.

use clap::{Args, Subcommand};

use super::api::{Api, ApiArgs};

/// `switchyard quarantine ...`.
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// API location and token.
    #[command(flatten)]
    pub api: ApiArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: QuarantineCommand,
}

/// The `quarantine` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List the quarantined apps with the reason and the evidence.
    List,
    /// Lift an app's quarantine: its current version runs again.
    Lift {
        /// App name.
        app: String,
    },
}

/// Runs `switchyard quarantine ...`.
pub fn quarantine(args: &QuarantineArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    match &args.command {
        QuarantineCommand::List => {
            let v = api.call(reqwest::Method::GET, "/api/applications", None)?;
            for app in v["applications"].as_array().into_iter().flatten() {
                let q = &app["quarantine"];
                if q.is_object() {
                    println!(
                        "{}\t{}\t{}",
                        app["name"].as_str().unwrap_or("-"),
                        q["evidence"]["kind"].as_str().unwrap_or("-"),
                        q["reason"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        QuarantineCommand::Lift { app } => {
            let v = api.call(
                reqwest::Method::DELETE,
                &format!("/api/apps/{app}/quarantine"),
                None,
            )?;
            println!(
                "{app}: quarantine lifted ({}); status {}",
                v["lifted"]["reason"].as_str().unwrap_or("-"),
                v["status"].as_str().unwrap_or("-")
            );
        }
    }
    Ok(())
}
