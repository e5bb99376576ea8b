//! The operator's side of the inventory API: `switchyard providers`,
//! `switchyard route` and `switchyard shape`, so nobody hand-writes JSON;
//! and `switchyard quarantine`, which speaks the same API the same way.
//! The admin URL and token come from flags or the environment
//! (`SWITCHYARD_ADMIN_URL`, `SWITCHYARD_TOKEN`); without a token, the one
//! the configuration sets, else the one `serve` generated in the data
//! directory (`--data-dir`, `--config`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the API is and how to get in.
#[derive(Debug, Args, Clone, Default)]
pub struct ApiArgs {
    /// Operations listener URL (env SWITCHYARD_ADMIN_URL; default http://127.0.0.1:8081).
    #[arg(long = "admin-url", value_name = "URL", global = true)]
    pub admin_url: Option<String>,
    /// Bearer token (env SWITCHYARD_TOKEN; default: the config's api_token, else the
    /// token serve generated in the data directory).
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    /// Configuration file to find the token in (default: switchyard.toml if present).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory holding the server's generated api_token (overrides the config's).
    #[arg(long = "data-dir", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// The token when none is given on the command line or in the
/// environment: the configuration's `api_token`, else the file `serve`
/// generates when the configuration sets none.
fn configured_token(args: &ApiArgs) -> anyhow::Result<String> {
    let default = Path::new("switchyard.toml");
    let path = match &args.config {
        Some(p) => Some(p.as_path()),
        None if default.is_file() => Some(default),
        None => None,
    };
    let over = crate::config::Overrides {
        data_dir: args.data_dir.clone(),
        ..Default::default()
    };
    let config = crate::config::Config::load(path, &over)?;
    if let Some(t) = config.api_token {
        return Ok(t);
    }
    let file = config.data_dir.join(super::tokens::ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&file) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => bail!(
            "no token: {} is empty; give --token or set SWITCHYARD_TOKEN",
            file.display()
        ),
        Err(e) => bail!(
            "no token: give --token or set SWITCHYARD_TOKEN (or --data-dir where serve keeps api_token; {}: {e})",
            file.display()
        ),
    }
}

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

/// `switchyard route ENDPOINT SELECTOR`: adds a route.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// API location and token.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Endpoint: the app name (or one of its DNS names).
    pub endpoint: String,
    /// Label selector, e.g. `tier=edge,region!=eu`.
    pub selector: String,
    /// Weight relative to the endpoint's other routes.
    #[arg(long, default_value_t = 1)]
    pub weight: u64,
    /// How the route picks among its providers: random, first, least_load.
    #[arg(long, default_value = "random")]
    pub strategy: String,
}

/// `switchyard shape ENDPOINT route000=80 route001=20`.
#[derive(Debug, Args)]
pub struct ShapeArgs {
    /// API location and token.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Endpoint: the app name (or one of its DNS names).
    pub endpoint: String,
    /// New weights, `ROUTE=WEIGHT`; all apply together or none do.
    #[arg(required = true, value_name = "ROUTE=WEIGHT")]
    pub weights: Vec<String>,
}

struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn new(args: &ApiArgs) -> anyhow::Result<Api> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let base = args
            .admin_url
            .clone()
            .or_else(|| env("SWITCHYARD_ADMIN_URL"))
            .unwrap_or_else(|| "http://127.0.0.1:8081".into());
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--admin-url: '{base}' is not an http(s) URL");
        }
        let token = match args.token.clone().or_else(|| env("SWITCHYARD_TOKEN")) {
            Some(t) => t,
            None => configured_token(args)?,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Api {
            base,
            token,
            client: crate::server::feed_client(),
            rt,
        })
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let mut req = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(10));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let status = resp.status();
            let text = resp
                .text()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if !status.is_success() {
                let msg = v["error"]
                    .as_str()
                    .map_or_else(|| v.to_string(), str::to_string);
                match status.as_u16() {
                    401 => bail!(
                        "{method} {path}: the token was refused (401: {msg}): set --token or SWITCHYARD_TOKEN"
                    ),
                    403 => bail!("{method} {path}: refused (403): {msg}"),
                    _ => bail!("{method} {path}: {status}: {msg}"),
                }
            }
            Ok(v)
        })
    }
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
            let labels =
                super::selector::parse_labels(labels).map_err(|e| anyhow!("labels: {e}"))?;
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

/// Runs `switchyard route ENDPOINT SELECTOR`.
pub fn route(args: &RouteArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let v = api.call(
        reqwest::Method::POST,
        "/api/inventory/routes",
        Some(json!({
            "endpoint": args.endpoint,
            "selector": args.selector,
            "weight": args.weight,
            "strategy": args.strategy,
        })),
    )?;
    let providers: Vec<&str> = v["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "{} {}: {} weight {} ({}) → {}",
        v["endpoint"].as_str().unwrap_or_default(),
        v["id"].as_str().unwrap_or_default(),
        v["selector"].as_str().unwrap_or_default(),
        v["weight"],
        v["strategy"].as_str().unwrap_or_default(),
        if providers.is_empty() {
            "no providers yet".to_string()
        } else {
            providers.join(", ")
        }
    );
    Ok(())
}

/// Parses `route000=80` arguments.
pub fn parse_weights(args: &[String]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| anyhow!("'{a}' is not ROUTE=WEIGHT"))?;
        let w: u64 = v
            .trim()
            .parse()
            .map_err(|_| anyhow!("'{a}': the weight must be a whole number ≥ 0"))?;
        if out.insert(k.trim().to_string(), w).is_some() {
            bail!("route '{k}' is given twice");
        }
    }
    Ok(out)
}

/// Runs `switchyard shape ENDPOINT route000=80 route001=20`.
pub fn shape(args: &ShapeArgs) -> anyhow::Result<()> {
    let weights = parse_weights(&args.weights)?;
    let api = Api::new(&args.api)?;
    let v = api.call(
        reqwest::Method::PUT,
        &format!("/api/inventory/endpoints/{}/weights", args.endpoint),
        Some(json!(weights)),
    )?;
    for r in v["routes"].as_array().into_iter().flatten() {
        println!(
            "{} {}: weight {} ({})",
            v["endpoint"].as_str().unwrap_or_default(),
            r["id"].as_str().unwrap_or_default(),
            r["weight"],
            r["selector"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse() {
        let w = parse_weights(&["route000=80".into(), "route001=20".into()]).unwrap();
        assert_eq!(w["route000"], 80);
        assert!(parse_weights(&["route000".into()]).is_err());
        assert!(parse_weights(&["route000=-1".into()]).is_err());
        assert!(parse_weights(&["a=1".into(), "a=2".into()]).is_err());
    }
}
