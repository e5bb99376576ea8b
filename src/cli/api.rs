//! The operator's side of the operations API, shared by `switchyard
//! providers`, `route`, `shape` and `quarantine`, so nobody hand-writes
//! JSON. The admin URL and token come from flags or the environment
//! (`SWITCHYARD_ADMIN_URL`, `SWITCHYARD_TOKEN`); without a token, the one
//! the configuration sets, else the one `serve` generated in the data
//! directory (`--data-dir`, `--config`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;

use crate::config::{ConfigSource, Overrides};
use crate::inventory::tokens;

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
    let source = ConfigSource {
        file: args.config.clone(),
        overrides: Overrides {
            data_dir: args.data_dir.clone(),
            ..Default::default()
        },
    };
    let config = source.load()?;
    if let Some(t) = config.api_token {
        return Ok(t);
    }
    let file = config.data_dir.join(tokens::ADMIN_TOKEN_FILE);
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

/// A client of a running server's operations API.
pub struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    /// Finds the API and its token from the flags, the environment and
    /// the configuration.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Api> {
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
            client: crate::data::http_client(),
            rt,
        })
    }

    /// Calls the API; a refusal or an error status is an error naming
    /// the call.
    pub fn call(
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
