//! `switchyard route`: add a weighted route to an endpoint of a running
//! server.

use clap::Args;
use serde_json::{Value, json};

use super::api::{Api, ApiArgs};

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
