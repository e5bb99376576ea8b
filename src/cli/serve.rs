//! `switchyard serve`: the supervisor, or with `--worker` the serving
//! process itself ([`crate::server`]).

use clap::Args;

use super::ConfigArgs;
use crate::server::{self, preflight, startup};

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration and listener flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run the serving process directly, without the supervisor.
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// `switchyard serve`: the supervisor, or with `--worker` the serving
/// process itself (on the supervisor's sockets when it passed them, else on
/// sockets of its own).
///
/// The serving process returns only once it has served (`Ok`); when it cannot start, it
/// logs why and exits with [`crate::server::supervisor::EXIT_STARTUP`], so that the supervisor can
/// tell a process that will never start from one that crashed while serving.
pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let source = args.config.source();
    if !args.worker {
        // The checks `check` makes of the configuration and its files: the
        // fatal ones refuse (every one listed), the others are logged.
        let (mut config, problems) = preflight::check_config(&source, None).ready()?;
        // Notes say what serving will do (a key it makes is logged then).
        for p in problems
            .iter()
            .filter(|p| p.severity != preflight::Severity::Note)
        {
            tracing::warn!(problem = %p, "configuration problem; serving anyway");
        }
        startup::create_data_dir(&config)?;
        let token_file = startup::resolve_api_token(&mut config)?;
        startup::log_api_access(&config, token_file);
        if let Some(path) = startup::resolve_cookie_secret(&mut config)? {
            tracing::info!(path = %path.display(), "generated the DNS cookie secret ([cookies] secret is not set); a fleet shares one: copy this file or set the secret");
        }
        return Ok(crate::server::supervisor::supervise(config)?);
    }
    if let Err(e) = server::serve_worker(source) {
        tracing::error!("the serving process cannot start: {e:#}");
        std::process::exit(crate::server::supervisor::EXIT_STARTUP);
    }
    Ok(())
}
