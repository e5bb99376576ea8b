//! `switchyard decide`: one decision of an app, printed as JSON.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;

use super::ConfigArgs;
use crate::config::Config;
use crate::engine::steer::{self, Outcome};
use crate::openmix::{DataSnapshot, Request};

/// `decide` flags.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// App name (from the apps directory) or path to a .js file.
    #[arg(long)]
    pub app: String,
    /// Client IP address (resolver address too unless --resolver-ip).
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// EDNS client subnet, e.g. 198.51.100.0/24: geo comes from it.
    #[arg(long)]
    pub ecs: Option<ipnet::IpNet>,
    /// Resolver address.
    #[arg(long = "resolver-ip")]
    pub resolver_ip: Option<IpAddr>,
    /// Query type: A, AAAA or CNAME (empty for an HTTP-style request).
    #[arg(long, default_value = "A")]
    pub qtype: String,
    /// Labels in front of the app name.
    #[arg(long = "hostname-prefix", default_value = "")]
    pub hostname_prefix: String,
    /// Probe data JSON file (default: the config's `[data] probes`).
    #[arg(long)]
    pub probe: Option<PathBuf>,
    /// Fusion data JSON file (provider → string).
    #[arg(long)]
    pub fusion: Option<PathBuf>,
    /// Sonar data JSON file (provider → string).
    #[arg(long)]
    pub sonar: Option<PathBuf>,
    /// Override the client market.
    #[arg(long)]
    pub market: Option<String>,
    /// Override the client country.
    #[arg(long)]
    pub country: Option<String>,
    /// Override the client ASN.
    #[arg(long)]
    pub asn: Option<u32>,
    /// Override the client region.
    #[arg(long)]
    pub region: Option<String>,
    /// Override the client state.
    #[arg(long)]
    pub state: Option<String>,
    /// HTTP header `Name: value` (repeatable).
    #[arg(long)]
    pub header: Vec<String>,
    /// HTTP query pair `k=v` (repeatable).
    #[arg(long)]
    pub query: Vec<String>,
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: invalid JSON: {e}", path.display()))
}

/// `switchyard decide`.
pub fn decide(args: &DecideArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let mut data = DataSnapshot {
        version: 1,
        providers: config.providers.clone(),
        ..DataSnapshot::default()
    };
    // Without --probe, the probes the server would use: the config's static table.
    if let Some(p) = args.probe.as_ref().or(config.static_probes.as_ref()) {
        data.probes = DataSnapshot::probes_from_json(&read_json(p)?)
            .map_err(|e| anyhow!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &args.fusion {
        data.fusion = DataSnapshot::feed_from_json(&read_json(p)?, "fusion")
            .map_err(|e| anyhow!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &args.sonar {
        data.sonar = DataSnapshot::feed_from_json(&read_json(p)?, "sonar")
            .map_err(|e| anyhow!("{}: {e}", p.display()))?;
    }
    let data = Arc::new(data);
    let app = super::app::load_one(&args.app, &config, &data)?;

    let qtype = args.qtype.to_ascii_uppercase();
    if !matches!(qtype.as_str(), "A" | "AAAA" | "CNAME" | "") {
        bail!("--qtype: expected A, AAAA or CNAME, got '{}'", args.qtype);
    }
    let request = build_request(args, &config, qtype)?;
    let shown = request.clone();
    let steered = steer::decide(&app, request, &data, config.default_ttl());
    let mut out = serde_json::json!({
        "app": app.code.name,
        "provider": steered.decision.provider,
        "answers": steered.decision.answers,
        "ttl": steered.ttl,
        "reason": steered.reason,
        "request": shown,
    });
    let d = &steered.decision;
    if let Some(obj) = out.as_object_mut() {
        if !d.provider_hosts.is_empty() {
            obj.insert("providers".into(), serde_json::to_value(&d.provider_hosts)?);
        }
        if let Some(s) = d.status {
            obj.insert("status".into(), s.into());
        }
        if !d.headers.is_empty() {
            obj.insert("headers".into(), serde_json::to_value(&d.headers)?);
        }
        if d.empty {
            obj.insert("empty".into(), true.into());
        }
        if let Outcome::Fallback(e) = &steered.outcome {
            obj.insert("error".into(), e.to_string().into());
        }
    }
    if let Outcome::Failed(e) = &steered.outcome {
        bail!("app {} failed and has no fallback: {e}", app.code.name);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn build_request(args: &DecideArgs, config: &Config, qtype: String) -> anyhow::Result<Request> {
    let need_geo = args.ip.is_some() || args.ecs.is_some() || args.resolver_ip.is_some();
    let geo = if need_geo {
        Some(super::geo::open_geo(config)?)
    } else {
        None
    };
    let locate = |ip: Option<IpAddr>| match (&geo, ip) {
        (Some(g), Some(ip)) => std::sync::Arc::new(crate::openmix::Location::from(g.lookup(ip))),
        _ => Default::default(),
    };
    let client_ip = args.ecs.map(|n| n.network()).or(args.ip);
    let resolver_ip = args.resolver_ip.or(args.ip).or(client_ip);
    let mut request = Request {
        ip_address: client_ip,
        client: locate(client_ip),
        resolver_ip_address: resolver_ip,
        resolver: locate(resolver_ip),
        hostname_prefix: args.hostname_prefix.clone(),
        query_type: qtype,
        ..Request::default()
    };
    let c = std::sync::Arc::make_mut(&mut request.client);
    if let Some(v) = &args.market {
        c.market = v.to_ascii_uppercase();
    }
    if let Some(v) = &args.country {
        c.country = v.to_ascii_uppercase();
    }
    if let Some(v) = args.asn {
        c.asn = v;
    }
    if let Some(v) = &args.region {
        c.region = v.clone();
    }
    if let Some(v) = &args.state {
        c.state = v.clone();
    }
    if args.ip.is_none() && args.resolver_ip.is_none() {
        request.resolver = request.client.clone();
    }
    for h in &args.header {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("--header: expected 'Name: value', got '{h}'"))?;
        request
            .headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    for q in &args.query {
        let (k, v) = q.split_once('=').unwrap_or((q.as_str(), ""));
        request.query.push((k.to_string(), v.to_string()));
    }
    Ok(request)
}
