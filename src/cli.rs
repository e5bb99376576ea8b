//! The `switchyard` command line: flags, and the one-shot commands
//! (`decide`, `check`, `geo`). `serve` lives in [`crate::server`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::engine::steer::{self, Outcome};
use crate::geo::{GeoDb, GeoPaths};
use crate::openmix::{DataSnapshot, Request};

/// Scriptable traffic steering: authoritative DNS and HTTP decisions from Openmix apps.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands (parsed once per process: the size difference of the
/// variants does not matter).
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the DNS and HTTP servers.
    Serve(ServeArgs),
    /// Run one decision of an app and print it as JSON.
    Decide(DecideArgs),
    /// Compile an app, run its init, and report errors with line numbers.
    Check(CheckArgs),
    /// Print what the GeoIP databases say about an address.
    Geo(GeoArgs),
    /// Run app test fixtures on the real runtime.
    Test(crate::apptest::TestArgs),
    /// List, drain and undrain providers of a running server.
    Providers(crate::inventory::client::ProvidersArgs),
    /// Add a weighted route to an endpoint of a running server.
    Route(crate::inventory::client::RouteArgs),
    /// Set the weights of an endpoint's routes together: `shape APP route000=80 route001=20`.
    Shape(crate::inventory::client::ShapeArgs),
    /// List quarantined apps of a running server, or lift a quarantine.
    Quarantine(crate::inventory::client::QuarantineArgs),
}

/// Flags shared by every command that reads the configuration.
#[derive(Debug, Args, Default, Clone)]
pub struct ConfigArgs {
    /// Configuration file (default: switchyard.toml if present, else built-in defaults).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// DNS listen address, UDP and TCP (repeatable).
    #[arg(long = "dns", value_name = "ADDR")]
    pub dns: Vec<String>,
    /// Public HTTP decision listen address.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Operations and API listen address.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Apps directory.
    #[arg(long, value_name = "DIR")]
    pub apps: Option<PathBuf>,
    /// Data directory.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// GeoIP City database.
    #[arg(long = "geo-city", value_name = "FILE")]
    pub geo_city: Option<PathBuf>,
    /// GeoIP ASN database.
    #[arg(long = "geo-asn", value_name = "FILE")]
    pub geo_asn: Option<PathBuf>,
    /// Serve this zone instead of the configured ones.
    #[arg(long, value_name = "NAME")]
    pub zone: Option<String>,
}

impl ConfigArgs {
    /// Loads the configuration these flags point at.
    pub fn load(&self) -> anyhow::Result<Config> {
        let over = Overrides {
            dns: self.dns.clone(),
            http: self.http.clone(),
            admin: self.admin.clone(),
            apps: self.apps.clone(),
            data_dir: self.data_dir.clone(),
            geo_city: self.geo_city.clone(),
            geo_asn: self.geo_asn.clone(),
            zone: self.zone.clone(),
        };
        let default = Path::new("switchyard.toml");
        let path = match &self.config {
            Some(p) => Some(p.as_path()),
            None if default.is_file() => Some(default),
            None => None,
        };
        Ok(Config::load(path, &over)?)
    }
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration and listener flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run the serving process directly, without the supervisor.
    #[arg(long, hide = true)]
    pub worker: bool,
}

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

/// `geo` flags.
#[derive(Debug, Args)]
pub struct GeoArgs {
    /// Address to look up.
    pub ip: IpAddr,
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Opens the GeoIP databases the configuration names.
pub fn open_geo(config: &Config) -> anyhow::Result<GeoDb> {
    let paths = GeoPaths {
        city: config.geo_city.clone(),
        asn: config.geo_asn.clone(),
        overrides: config.geo_overrides.clone(),
    };
    Ok(GeoDb::open(&paths)?)
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: invalid JSON: {e}", path.display()))
}

/// Resolves `--app`: a name in the apps directory or a path to a file.
fn app_path(app: &str, config: &Config) -> anyhow::Result<(String, PathBuf)> {
    let path = if app.ends_with(".js") || app.contains('/') {
        PathBuf::from(app)
    } else {
        config.apps_dir.join(format!("{app}.js"))
    };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("{}: not an app file name", path.display()))?
        .to_string();
    if !path.is_file() {
        bail!("{}: no such app file", path.display());
    }
    Ok((name, path))
}

/// Loads one app the way the registry does.
fn load_one(
    app: &str,
    config: &Config,
    data: &Arc<DataSnapshot>,
) -> anyhow::Result<crate::engine::apps::LoadedApp> {
    let (name, path) = app_path(app, config)?;
    let source = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let sidecar = std::fs::read_to_string(path.with_extension("toml")).ok();
    crate::engine::apps::load_app(&name, &path, &source, sidecar.as_deref(), config, data, 1)
        .map_err(|f| anyhow!("{f}"))
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
    let app = load_one(&args.app, &config, &data)?;

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
        Some(open_geo(config)?)
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
        match load_one(&file.display().to_string(), &config, &data) {
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

/// `switchyard geo IP`.
pub fn geo(args: &GeoArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let db = open_geo(&config)?;
    let g = db.lookup(args.ip);
    println!("{}", serde_json::to_string_pretty(&g)?);
    Ok(())
}
