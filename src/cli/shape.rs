//! `switchyard shape`: set the weights of an endpoint's routes together.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use clap::Args;
use serde_json::json;

use super::api::{Api, ApiArgs};

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
