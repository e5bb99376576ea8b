//! `switchyard providers`: list, drain, undrain and label the providers of
//! a running server.

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::api::{Api, ApiArgs};

/// `switchyard providers ...`.
#[derive(Debug, Args)]
pub struct ProvidersArgs {
    /// API location and token.
    #[command(flatten)]
    pub api: ApiArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ProvidersCommand,
}

/// The `providers` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// List providers: state, host, labels, load, requests per second.
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain a provider: apps steer new requests away from it.
    Drain {
        /// Provider id.
        id: String,
    },
    /// Put a drained (or down) provider back in service.
    Undrain {
        /// Provider id.
        id: String,
    },
    /// Set a provider's labels (`k=v,k2=v2`, replacing the old ones).
    Label {
        /// Provider id.
        id: String,
        /// Labels, `k=v` comma-separated.
        labels: String,
    },
}

/// Runs `switchyard providers ...`.
pub fn providers(args: &ProvidersArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    match &args.command {
        ProvidersCommand::List { json } => {
            let v = api.call(reqwest::Method::GET, "/api/inventory/providers", None)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            print!("{}", provider_table(&v));
        }
        ProvidersCommand::Drain { id } => set_state(&api, id, "draining")?,
        ProvidersCommand::Undrain { id } => set_state(&api, id, "up")?,
        ProvidersCommand::Label { id, labels } => {
            let labels = crate::inventory::selector::parse_labels(labels)
                .map_err(|e| anyhow!("labels: {e}"))?;
            let v = api.call(
                reqwest::Method::PATCH,
                &format!("/api/inventory/providers/{id}"),
                Some(json!({ "labels": labels })),
            )?;
            println!("{id}: labels {}", labels_text(&v["labels"]));
        }
    }
    Ok(())
}

fn set_state(api: &Api, id: &str, state: &str) -> anyhow::Result<()> {
    let v = api.call(
        reqwest::Method::PATCH,
        &format!("/api/inventory/providers/{id}"),
        Some(json!({ "state": state })),
    )?;
    println!("{id}: {}", v["state"].as_str().unwrap_or(state));
    Ok(())
}

fn labels_text(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The `providers list` table.
pub fn provider_table(v: &Value) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "STATE".into(),
        "HOST".into(),
        "LABELS".into(),
        "LOAD".into(),
        "RPS".into(),
        "SOURCE".into(),
    ]];
    for p in v["providers"].as_array().into_iter().flatten() {
        let s = |k: &str| p[k].as_str().unwrap_or("-").to_string();
        rows.push([
            s("id"),
            s("state"),
            s("host"),
            Some(labels_text(&p["labels"]))
                .filter(|l| !l.is_empty())
                .unwrap_or("-".into()),
            p["load"].to_string(),
            p["requests_per_second"].to_string(),
            s("source"),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
