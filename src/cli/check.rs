//! `switchyard check`: with app files, compile them, run their init and
//! report errors and lint warnings; without, check the whole configuration
//! as `serve` would before going live ([`crate::server::preflight`]): the
//! configuration, its GeoIP files, zones and static records, every app and
//! sidecar with the providers they name, and (unless `--offline`) that the
//! stores answer. One line per problem, `FILE:LINE: error: message`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;

use super::ConfigArgs;
use crate::openmix::DataSnapshot;
use crate::server::preflight::{self, Problem, Severity};

/// `check` flags.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// App files to check; none: check the whole configuration.
    pub files: Vec<PathBuf>,
    /// Do not connect to the stores (PostgreSQL, the SQLite file).
    #[arg(long, conflicts_with = "files")]
    pub offline: bool,
    /// Print one JSON document: `{"ok": bool, "problems": [...]}`.
    #[arg(long, conflicts_with = "files")]
    pub json: bool,
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `switchyard check`: exit non-zero when any file fails, or (without
/// files) on any error in the configuration.
pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
    if args.files.is_empty() {
        return check_all(args);
    }
    let config = args.config.load()?;
    let data = Arc::new(DataSnapshot {
        providers: config.providers.clone(),
        ..DataSnapshot::default()
    });
    let mut failed = 0;
    for file in &args.files {
        let shown = file.display();
        match super::app::load_one(&file.display().to_string(), &config, &data) {
            Ok(app) => {
                println!(
                    "{shown}: ok (providers: {}; cors: {}; proximity: {})",
                    if app.meta.providers.is_empty() {
                        "none".to_string()
                    } else {
                        app.meta.providers.join(", ")
                    },
                    app.meta.cors.as_deref().unwrap_or("off"),
                    if app.meta.proximity { "on" } else { "off" }
                );
                for w in preflight::lint(&app.code.source) {
                    println!("{shown}:{}: warning: {}", w.0, w.1);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} app(s) failed", args.files.len());
    }
    Ok(())
}

/// The whole configuration: every problem printed, then a summary.
fn check_all(args: &CheckArgs) -> anyhow::Result<()> {
    let report = preflight::check_config(&args.config.source(), None);
    let mut problems = report.problems;
    let mut apps = 0;
    if let Some(config) = &report.config {
        apps = preflight::check_apps(config, &mut problems).len();
        if !args.offline {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a runtime to reach the stores")?
                .block_on(preflight::check_stores(config, &mut problems));
        }
    }
    let errors = problems
        .iter()
        .filter(|p| matches!(p.severity, Severity::Fatal | Severity::Error))
        .count();
    let warnings = problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .count();
    if args.json {
        let list: Vec<serde_json::Value> = problems.iter().map(Problem::to_json).collect();
        println!(
            "{}",
            serde_json::json!({ "ok": errors == 0, "problems": list })
        );
    } else {
        for p in &problems {
            println!("{p}");
        }
        let source = &report.file;
        match &report.config {
            Some(c) if errors == 0 => println!(
                "{source}: ok ({apps} app(s), {} zone(s), {} provider(s); {warnings} warning(s){})",
                c.zones.len(),
                c.providers.len(),
                if args.offline {
                    "; stores not checked"
                } else {
                    ""
                }
            ),
            _ => println!("{source}: {errors} error(s), {warnings} warning(s)"),
        }
    }
    if errors > 0 {
        bail!("the configuration has {errors} error(s)");
    }
    Ok(())
}
