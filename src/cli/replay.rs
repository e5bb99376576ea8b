//! `switchyard replay --app NEW.js FILE...`: decides every logged decision
//! of decision log files ([`crate::engine::decision_log`]) again with a
//! candidate version, each on its own request, data snapshot and
//! `Math.random` draws ([`crate::engine::replay`]), and prints what would
//! change ([`crate::engine::diff`], the same diff a shadow shows).
//!
//! A line that is not a snapshot or an entry, or names a snapshot the
//! files do not hold, is reported as `FILE:LINE: ...` and skipped; only an
//! unreadable file or a candidate that does not load fails the command.
//! Changed decisions are the answer, not an error: exit 0.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;

use super::ConfigArgs;
use crate::config::read_sidecar;
use crate::engine::decision_log::Line;
use crate::engine::diff::{Diff, EXAMPLES, Failure, Move, Picked, Report, Summary, Table};
use crate::engine::replay::decide_entry;
use crate::engine::steer::How;
use crate::openmix::DataSnapshot;

/// `replay` flags.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The candidate app file.
    #[arg(long)]
    pub app: PathBuf,
    /// The logged app whose entries are replayed (default: the candidate
    /// file's name, e.g. `best-rtt` for `best-rtt.js`).
    #[arg(long = "for", value_name = "APP")]
    pub for_app: Option<String>,
    /// Decision log files (JSON lines, as `[log] decisions_file` writes).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the diff as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Changed decisions shown as examples.
    #[arg(long, default_value_t = EXAMPLES)]
    pub examples: usize,
    /// Configuration flags (budgets, providers).
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// What one run read besides the diff.
#[derive(Debug, Default, serde::Serialize)]
struct Read {
    files: usize,
    /// Entries of other apps, not replayed.
    other_apps: u64,
    /// Lines skipped as unreadable.
    bad_lines: u64,
    /// Entries whose candidate drew more random numbers than recorded.
    ran_out_of_draws: u64,
}

/// The candidate's failure, when its answer came from its fallback rules.
fn failure(how: &How) -> Option<Failure> {
    match how {
        How::Fallback { error, message } | How::Failed { error, message } => Some(Failure {
            kind: error.clone(),
            message: message.clone(),
        }),
        _ => None,
    }
}

/// `switchyard replay`.
pub fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let name = match &args.for_app {
        Some(n) => n.clone(),
        None => args
            .app
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| anyhow!("{}: not an app file name", args.app.display()))?
            .to_string(),
    };
    let source = std::fs::read_to_string(&args.app)
        .with_context(|| format!("{}: cannot read", args.app.display()))?;
    let sidecar = read_sidecar(&args.app)?;
    let data = Arc::new(DataSnapshot {
        providers: config.providers.clone(),
        ..DataSnapshot::default()
    });
    // Loaded under the logged app's name: the data an app sees is cut
    // from the snapshot by its name.
    let candidate = crate::engine::apps::load_app(
        &name,
        &args.app,
        &source,
        sidecar.as_deref(),
        &config,
        &data,
        // Instances are kept by name and version: never the logged one's.
        u64::MAX,
    )
    .map_err(|f| anyhow!("{f}"))?;

    let mut diff = Diff::new(args.examples);
    let mut read = Read::default();
    let mut snapshots: HashMap<String, Arc<DataSnapshot>> = HashMap::new();
    for file in &args.files {
        let shown = file.display();
        let f = std::fs::File::open(file).with_context(|| format!("{shown}: cannot read"))?;
        read.files += 1;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let at = i + 1;
            let line = line.with_context(|| format!("{shown}:{at}: cannot read"))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry = match serde_json::from_str::<Line>(&line) {
                Ok(Line::Snapshot(s)) => {
                    snapshots.insert(s.snapshot.id, s.snapshot.data);
                    continue;
                }
                Ok(Line::Entry(e)) => e,
                Err(e) => {
                    read.bad_lines += 1;
                    eprintln!("{shown}:{at}: not a snapshot or an entry ({e}); skipped");
                    continue;
                }
            };
            if entry.app != name {
                read.other_apps += 1;
                continue;
            }
            let Some(data) = snapshots.get(&entry.snapshot) else {
                read.bad_lines += 1;
                eprintln!(
                    "{shown}:{at}: entry {} names snapshot {}, which no earlier line holds; skipped",
                    entry.id, entry.snapshot
                );
                continue;
            };
            let again = decide_entry(&candidate, &entry, data);
            if again.ran_out_of_draws {
                read.ran_out_of_draws += 1;
            }
            diff.record(
                &entry.id,
                &Summary::of(&entry.request),
                &Picked::of_logged(&entry.decision),
                &Picked::of_logged(&again.decision),
                failure(&again.how).as_ref(),
            );
        }
    }
    let report = diff.report();
    if args.json {
        let out = serde_json::json!({
            "app": name,
            "candidate": args.app.display().to_string(),
            "read": read,
            "diff": report,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_report(&name, args, &read, &report);
    }
    if report.total == 0 && read.other_apps > 0 && args.for_app.is_none() {
        bail!(
            "no entry of app '{name}' in the files ({} of other apps): name the logged app with --for APP",
            read.other_apps
        );
    }
    Ok(())
}

/// The readable summary.
fn print_report(name: &str, args: &ReplayArgs, read: &Read, r: &Report) {
    println!(
        "replayed {} decision(s) of {name} from {} file(s) with {}",
        r.total,
        read.files,
        args.app.display()
    );
    if read.other_apps > 0 || read.bad_lines > 0 {
        println!(
            "skipped: {} entries of other apps, {} bad lines",
            read.other_apps, read.bad_lines
        );
    }
    println!(
        "changed: {} of {} ({:.1} %)",
        r.changed,
        r.total,
        100.0 * r.changed_share
    );
    println!("candidate failed: {}", r.failed);
    if read.ran_out_of_draws > 0 {
        println!(
            "note: {} decision(s) drew more Math.random numbers than were recorded",
            read.ran_out_of_draws
        );
    }
    print_moves("from -> to by provider", &r.providers);
    print_moves("by market (changed only)", &r.markets);
    print_moves("by country (changed only)", &r.countries);
    println!("\nreasons of the candidate");
    for x in &r.reasons.rows {
        println!("  {:<20} {:>8}", shown(&x.reason), x.count);
    }
    print_other(r.reasons.other);
    if !r.failures.rows.is_empty() {
        println!("\nfailures of the candidate");
        for f in &r.failures.rows {
            println!(
                "  {:>8}  {}: {} (e.g. {})",
                f.count,
                f.kind,
                f.message,
                f.ids.join(", ")
            );
        }
        print_other(r.failures.other);
    }
    if !r.examples.is_empty() {
        println!("\nexamples");
        for e in &r.examples {
            let who = e
                .request
                .ip
                .map_or_else(|| "-".to_string(), |ip| ip.to_string());
            println!(
                "  {}  {} {}/{}  {} -> {}{}",
                e.id,
                who,
                shown(&e.request.market),
                shown(&e.request.country),
                shown(&e.from.provider),
                shown(&e.to.provider),
                e.failure
                    .as_ref()
                    .map(|f| format!(" ({}: {})", f.kind, f.message))
                    .unwrap_or_default()
            );
        }
    }
}

fn print_moves(title: &str, t: &Table<Move>) {
    println!("\n{title}");
    if t.rows.is_empty() {
        println!("  (none)");
    }
    for m in &t.rows {
        let place = m
            .place
            .as_deref()
            .map(|p| format!("{:<6} ", shown(p)))
            .unwrap_or_default();
        println!(
            "  {place}{:<16} -> {:<16} {:>8}",
            shown(&m.from),
            shown(&m.to),
            m.count
        );
    }
    print_other(t.other);
}

fn print_other(n: u64) {
    if n > 0 {
        println!("  (other)  {n}");
    }
}

/// An empty value as `-`.
fn shown(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}
