//! `switchyard check`: compile apps, run their init, report errors and
//! lint warnings.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

use super::ConfigArgs;
use crate::openmix::DataSnapshot;

/// `check` flags.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// App files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `switchyard check`: exit non-zero when any file fails.
pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
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
                for w in lint(&app.code.source) {
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

/// Warnings about forms that load but misbehave on Openmix:
/// `request.query_type()` (it is a string property, not a method).
pub fn lint(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in source.lines().enumerate() {
        if line.contains("query_type()") {
            out.push((
                i + 1,
                "request.query_type is a string property; calling it as query_type() throws a TypeError".to_string(),
            ));
        }
    }
    out
}
