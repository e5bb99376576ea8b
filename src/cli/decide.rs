//! `switchyard decide`: one decision of an app, printed as JSON.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;

use super::ConfigArgs;
use crate::engine::explain;
use crate::engine::request::{self, RequestInputs};
use crate::engine::steer::{self, Outcome};
use crate::geo::GeoDb;
use crate::openmix::DataSnapshot;

/// `decide` flags.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// App name (from the apps directory) or path to a .js file.
    #[arg(long)]
    pub app: String,
    /// The request to decide for.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Probe data JSON file (default: the config's `[data] probes`).
    #[arg(long)]
    pub probe: Option<PathBuf>,
    /// Fusion data JSON file (provider → string).
    #[arg(long)]
    pub fusion: Option<PathBuf>,
    /// Sonar data JSON file (provider → string).
    #[arg(long)]
    pub sonar: Option<PathBuf>,
    /// Print the decision explained (as `switchyard explain --json` does
    /// for a running server): the request as located, every value read,
    /// how the answer was reached.
    #[arg(long)]
    pub explain: bool,
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The flags that describe a request, shared by `decide` and `explain`
/// (the query parameters of `/api/apps/{app}/explain` have the same names).
#[derive(Debug, Args, Clone)]
pub struct RequestArgs {
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
}

impl RequestArgs {
    /// The inputs these flags give.
    pub fn inputs(&self) -> RequestInputs {
        RequestInputs {
            ip: self.ip,
            ecs: self.ecs,
            resolver_ip: self.resolver_ip,
            qtype: self.qtype.clone(),
            hostname_prefix: self.hostname_prefix.clone(),
            market: self.market.clone(),
            country: self.country.clone(),
            asn: self.asn,
            region: self.region.clone(),
            state: self.state.clone(),
            headers: self.header.clone(),
            query: self.query.clone(),
        }
    }

    /// The same inputs as query parameters of `/api/apps/{app}/explain`.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("qtype", self.qtype.clone()),
            ("hostname_prefix", self.hostname_prefix.clone()),
        ];
        let mut add = |k, v: Option<String>| {
            if let Some(v) = v {
                out.push((k, v));
            }
        };
        add("ip", self.ip.map(|v| v.to_string()));
        add("ecs", self.ecs.map(|v| v.to_string()));
        add("resolver_ip", self.resolver_ip.map(|v| v.to_string()));
        add("market", self.market.clone());
        add("country", self.country.clone());
        add("asn", self.asn.map(|v| v.to_string()));
        add("region", self.region.clone());
        add("state", self.state.clone());
        out.extend(self.header.iter().map(|h| ("header", h.clone())));
        out.extend(self.query.iter().map(|q| ("query", q.clone())));
        out
    }
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

    let inputs = args.request.inputs();
    let geo = if inputs.needs_geo() {
        super::geo::open_geo(&config)?
    } else {
        GeoDb::default()
    };
    let built =
        request::build(&inputs, &|ip| geo.lookup_traced(ip)).map_err(|e| anyhow!("--{e}"))?;
    if args.explain {
        let started = std::time::Instant::now();
        let default_ttl = steer::default_ttl(&app, config.default_ttl());
        let (steered, insight) = steer::explain(&app, built.request.clone(), &data, default_ttl);
        let report = explain::explain(explain::Inputs {
            app: &app,
            built,
            data: &data,
            feeds: Default::default(),
            steered,
            insight,
            elapsed: started.elapsed(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let request = built.request;
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
