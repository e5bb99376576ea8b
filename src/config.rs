//! Configuration: a serde mirror of `switchyard.toml`, then checks.
//!
//! Two stages, as ripgrep does with its flags: [`RawConfig`] is what the TOML
//! says, [`Config`] is validated and ready (addresses parsed, zones checked,
//! fallbacks classified). Every error names the file and the key. With no
//! file, the built-in defaults are `examples/switchyard.toml`, compiled in.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::openmix::decision::classify_host;
use crate::openmix::{Answer, Budget, ProviderInfo};

/// The configuration used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../examples/switchyard.toml");

/// A configuration error, naming the file and key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The file (or `<built-in defaults>`).
    pub file: String,
    /// What is wrong, starting with the key.
    pub message: String,
}

/// `switchyard.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    geo: RawGeo,
    #[serde(default)]
    budget: RawBudget,
    #[serde(default, rename = "zone")]
    zones: Vec<RawZone>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderInfo>,
    #[serde(default)]
    apps: BTreeMap<String, RawAppSettings>,
    #[serde(default)]
    data: RawData,
    #[serde(default)]
    fusion: Vec<FusionFeed>,
    #[serde(default)]
    sonar: Vec<SonarCheck>,
    #[serde(default)]
    leaderboard: RawLeaderboard,
    #[serde(default)]
    reports: RawReports,
    #[serde(default)]
    rrl: RawRrl,
    #[serde(default)]
    cookies: RawCookies,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRrl {
    enabled: Option<bool>,
    responses_per_second: Option<u32>,
    nxdomains_per_second: Option<u32>,
    errors_per_second: Option<u32>,
    slip: Option<u8>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
    window_secs: Option<u32>,
    exempt: Option<Vec<String>>,
    dry_run: Option<bool>,
    table_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCookies {
    enabled: Option<bool>,
    secret: Option<String>,
    previous_secret: Option<String>,
    require_cookies: Option<bool>,
}

/// `[rrl]`: response rate limiting of UDP replies, as BIND, NSD and Knot
/// do it (src/dns/rrl.rs).
#[derive(Debug, Clone, PartialEq)]
pub struct Rrl {
    /// Off: every UDP query is answered.
    pub enabled: bool,
    /// Answers (and NODATA) per second per source prefix and name.
    pub responses_per_second: u32,
    /// NXDOMAIN replies per second per source prefix and zone.
    pub nxdomains_per_second: u32,
    /// Error replies (FORMERR, SERVFAIL, NOTIMP, REFUSED, …) per second per
    /// source prefix.
    pub errors_per_second: u32,
    /// Every `slip`th limited reply goes out truncated (TC); 0 drops all.
    pub slip: u8,
    /// Sources are counted by this IPv4 prefix…
    pub ipv4_prefix: u8,
    /// …and this IPv6 prefix.
    pub ipv6_prefix: u8,
    /// How far back a source's excess is remembered: a source over its
    /// rate owes up to this many seconds of replies before it is answered
    /// again (BIND's `window`).
    pub window_secs: u32,
    /// Sources never limited (default: loopback).
    pub exempt: Vec<ipnet::IpNet>,
    /// Count what would be limited, limit nothing.
    pub dry_run: bool,
    /// Counter slots (rounded up to a power of two; 8 bytes each).
    pub table_size: usize,
}

impl Default for Rrl {
    fn default() -> Self {
        Rrl {
            enabled: true,
            responses_per_second: 200,
            nxdomains_per_second: 200,
            errors_per_second: 200,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            window_secs: 15,
            exempt: vec![
                "127.0.0.0/8".parse().expect("a CIDR"),
                "::1/128".parse().expect("a CIDR"),
            ],
            dry_run: false,
            table_size: 1 << 20,
        }
    }
}

/// `[cookies]`: DNS Cookies (RFC 7873) with RFC 9018 server cookies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cookies {
    /// Off: COOKIE options are ignored, as by a server that never heard of them.
    pub enabled: bool,
    /// The server secret (128 bits). `None` until `serve` resolves it
    /// (generated into `data_dir/cookie_secret` when the file sets none).
    pub secret: Option<[u8; 16]>,
    /// The previous secret, still accepted during a rollover.
    pub previous_secret: Option<[u8; 16]>,
    /// UDP queries over their rate that carry a client cookie but no valid
    /// server cookie get BADCOOKIE (and a fresh cookie) instead of being
    /// limited.
    pub require_cookies: bool,
}

/// A 128-bit secret written as 32 hex digits.
pub fn parse_secret(key: &str, s: &str) -> Result<[u8; 16], String> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|_| format!("{key}: not 32 hex digits (128 bits)"))?;
    Ok(out)
}

/// The most replies a source can owe RRL (rate × window): its counter
/// holds 24 signed bits.
pub const RRL_MAX_DEBT: u64 = 8_000_000;

fn check_rrl(raw: RawRrl) -> Result<Rrl, String> {
    let d = Rrl::default();
    let responses_per_second = raw.responses_per_second.unwrap_or(d.responses_per_second);
    let rrl = Rrl {
        enabled: raw.enabled.unwrap_or(d.enabled),
        responses_per_second,
        nxdomains_per_second: raw.nxdomains_per_second.unwrap_or(responses_per_second),
        errors_per_second: raw.errors_per_second.unwrap_or(responses_per_second),
        slip: raw.slip.unwrap_or(d.slip),
        ipv4_prefix: raw.ipv4_prefix.unwrap_or(d.ipv4_prefix),
        ipv6_prefix: raw.ipv6_prefix.unwrap_or(d.ipv6_prefix),
        window_secs: raw.window_secs.unwrap_or(d.window_secs),
        exempt: match raw.exempt {
            None => d.exempt,
            Some(list) => list
                .iter()
                .map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| format!("rrl.exempt: '{s}' is not an address or CIDR"))
                })
                .collect::<Result<_, _>>()?,
        },
        dry_run: raw.dry_run.unwrap_or(d.dry_run),
        table_size: raw.table_size.unwrap_or(d.table_size),
    };
    for (key, rate) in [
        ("responses_per_second", rrl.responses_per_second),
        ("nxdomains_per_second", rrl.nxdomains_per_second),
        ("errors_per_second", rrl.errors_per_second),
    ] {
        if !(1..=1_000_000).contains(&rate) {
            return Err(format!("rrl.{key}: {rate} is not 1 to 1000000"));
        }
    }
    if !(1..=3600).contains(&rrl.window_secs) {
        return Err(format!(
            "rrl.window_secs: {} is not 1 to 3600",
            rrl.window_secs
        ));
    }
    let most = rrl
        .responses_per_second
        .max(rrl.nxdomains_per_second)
        .max(rrl.errors_per_second);
    if u64::from(most) * u64::from(rrl.window_secs) > RRL_MAX_DEBT {
        return Err(format!(
            "rrl: a rate of {most} per second over window_secs = {} owes more than {} replies; lower one of them",
            rrl.window_secs, RRL_MAX_DEBT
        ));
    }
    if rrl.slip > 10 {
        return Err(format!("rrl.slip: {} is not 0 to 10", rrl.slip));
    }
    if rrl.ipv4_prefix > 32 || rrl.ipv6_prefix > 128 {
        return Err("rrl.ipv4_prefix / rrl.ipv6_prefix: longer than the address".into());
    }
    if !(1024..=1 << 26).contains(&rrl.table_size) {
        return Err(format!(
            "rrl.table_size: {} is not 1024 to 67108864",
            rrl.table_size
        ));
    }
    Ok(rrl)
}

fn check_cookies(raw: RawCookies) -> Result<Cookies, String> {
    let secret = |key: &str, v: Option<String>| {
        v.filter(|s| !s.trim().is_empty())
            .map(|s| parse_secret(key, &s))
            .transpose()
    };
    Ok(Cookies {
        enabled: raw.enabled.unwrap_or(true),
        secret: secret("cookies.secret", raw.secret)?,
        previous_secret: secret("cookies.previous_secret", raw.previous_secret)?,
        require_cookies: raw.require_cookies.unwrap_or(false),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    enabled: Option<bool>,
    node: Option<String>,
    fleet: Option<String>,
    interval_ms: Option<u64>,
    push_url: Option<String>,
    push_token: Option<String>,
}

/// `[reports]`: this node's identity in the fleet and how it reports.
#[derive(Debug, Clone)]
pub struct ReportsConfig {
    /// Report decisions to the store or `push_url` and read the fleet's
    /// (default on). Off, the node still counts its own decisions for
    /// `/metrics` and `requests_per_second`.
    pub enabled: bool,
    /// Node id (default: the hostname; `SWITCHYARD_NODE` overrides).
    pub node: String,
    /// Fleet name (default `default`; `SWITCHYARD_FLEET` overrides).
    pub fleet: String,
    /// How often the node registers, writes its bucket and polls the fleet.
    pub interval: Duration,
    /// Another Switchyard's operations URL to push to instead of the store.
    pub push_url: Option<String>,
    /// Bearer token for pushes (default: `server.api_token`).
    pub push_token: Option<String>,
}

/// The machine's host name ("switchyard" when it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).trim().to_string()
    } else {
        String::new()
    };
    if name.is_empty() {
        "switchyard".into()
    } else {
        name
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeaderboard {
    secret: Option<String>,
    postgres: Option<String>,
    source: Option<String>,
    refresh_secs: Option<u64>,
    window_secs: Option<u64>,
    #[serde(default)]
    orchestrators: BTreeMap<String, String>,
    regions: Option<Vec<crate::stats::Region>>,
    #[serde(default)]
    extra_regions: Vec<crate::stats::Region>,
}

/// Where the probe refresher reads aggregated stats.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeSource {
    /// No refresher.
    Off,
    /// This node's own stats store.
    Local,
    /// Another leaderboard's base URL (`…/api/aggregated_stats` is appended).
    Remote(String),
}

/// The leaderboard stats store and the probe mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaderboard {
    /// HMAC key of `POST /api/post_stats` (env `SECRET` wins); `None`: posting off.
    pub secret: Option<String>,
    /// PostgreSQL URL (env `POSTGRES` wins); `None`: SQLite in the data dir.
    pub postgres: Option<String>,
    /// Where probe values come from.
    pub source: ProbeSource,
    /// Seconds between refreshes.
    pub refresh: Duration,
    /// Window of the aggregated query: the probe refresher's, and the
    /// stats API's default for a read with neither `since` nor `until`, so
    /// a plain `GET /api/aggregated_stats` shows what apps' probes are built from.
    pub window: Duration,
    /// Orchestrator address (lower-case) → provider alias.
    pub orchestrators: BTreeMap<String, String>,
    /// Configured regions: `regions` (or the defaults), then `extra_regions`.
    pub regions: crate::stats::RegionSet,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    probes: Option<PathBuf>,
    stale_secs: Option<u64>,
}

/// A Fusion feed: a provider's data fetched from a URL or read from a file.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FusionFeed {
    /// Provider alias the data is for.
    pub provider: String,
    /// HTTP(S) URL to GET.
    pub url: Option<String>,
    /// File to read.
    pub file: Option<PathBuf>,
    /// Seconds between fetches.
    #[serde(default = "default_fusion_interval")]
    pub interval_secs: u64,
    /// Fetch timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// A Sonar health check of one provider.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SonarCheck {
    /// Provider alias.
    pub provider: String,
    /// HTTP(S) URL to GET.
    pub url: Option<String>,
    /// Expected HTTP status (default 200).
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// `host:port` to connect to over TCP, instead of a URL.
    pub tcp: Option<String>,
    /// Seconds between checks.
    #[serde(default = "default_sonar_interval")]
    pub interval_secs: u64,
    /// Check timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes before a down provider is up again.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures before an up provider is down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_fusion_interval() -> u64 {
    30
}
fn default_sonar_interval() -> u64 {
    5
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_status() -> u16 {
    200
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    dns: Option<Vec<String>>,
    http: Option<String>,
    admin: Option<String>,
    apps: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    max_udp_payload: Option<u16>,
    api_token: Option<String>,
    admin_reads_need_token: Option<bool>,
    max_connections: Option<usize>,
    connections_per_client: Option<usize>,
    client_ipv4_prefix: Option<u8>,
    client_ipv6_prefix: Option<u8>,
    idle_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    header_timeout_ms: Option<u64>,
    memory_limit_mb: Option<u64>,
    hard_limit_ms: Option<u64>,
    memoise: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeo {
    city: Option<PathBuf>,
    asn: Option<PathBuf>,
    overrides: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    decision_ms: Option<u64>,
    load_ms: Option<u64>,
    memory_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: String,
    ttl: Option<u32>,
    #[serde(default)]
    ns: Vec<String>,
    #[serde(default)]
    soa: RawSoa,
    #[serde(default)]
    records: Vec<RawRecord>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoa {
    mname: Option<String>,
    rname: Option<String>,
    serial: Option<u32>,
    refresh: Option<i32>,
    retry: Option<i32>,
    expire: Option<i32>,
    minimum: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    value: String,
    ttl: Option<u32>,
    priority: Option<u16>,
}

/// Per-app settings, from `[apps.NAME]` in the config or a sidecar `NAME.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppSettings {
    /// Default TTL of the app's answers.
    pub ttl: Option<u32>,
    /// Fallback answer: a host name or a list of addresses.
    pub fallback: Option<StringOrList>,
    /// Decision time budget override, in ms.
    pub budget_ms: Option<u64>,
    /// Memory budget override, in MB.
    pub memory_mb: Option<u64>,
    /// Provider aliases assigned to the app: it is expected to declare
    /// them, sees them besides those it requires, and
    /// `config.getProviders()` lists only them.
    #[serde(default)]
    pub providers: Vec<String>,
}

/// A TOML value that may be one string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string.
    One(String),
    /// A list.
    Many(Vec<String>),
}

/// Checked per-app settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AppSettings {
    /// Default TTL (else the zone's).
    pub ttl: Option<u32>,
    /// Answer served when the app fails.
    pub fallback: Vec<Answer>,
    /// Budgets for this app.
    pub budget: Budget,
    /// Provider aliases assigned to the app: it is expected to declare
    /// them, sees them besides those it requires, and
    /// `config.getProviders()` lists only them.
    pub providers: Vec<String>,
}

impl RawAppSettings {
    /// Checks the settings against the global budget; `what` names the
    /// source for messages (`apps/foo.toml` or `[apps.foo]`).
    pub fn check(&self, base: Budget, what: &str) -> Result<AppSettings, String> {
        let mut budget = base;
        if let Some(ms) = self.budget_ms {
            if ms == 0 || ms > 10_000 {
                return Err(format!("{what}: budget_ms must be 1..=10000, got {ms}"));
            }
            budget.decision = Duration::from_millis(ms);
        }
        if let Some(mb) = self.memory_mb {
            if mb == 0 || mb > 4096 {
                return Err(format!("{what}: memory_mb must be 1..=4096, got {mb}"));
            }
            budget.memory = (mb as usize) << 20;
        }
        let fallback = match &self.fallback {
            None => Vec::new(),
            Some(StringOrList::One(s)) => vec![parse_fallback(s, what)?],
            Some(StringOrList::Many(v)) => v
                .iter()
                .map(|s| parse_fallback(s, what))
                .collect::<Result<_, _>>()?,
        };
        Ok(AppSettings {
            ttl: self.ttl,
            fallback,
            budget,
            providers: self.providers.clone(),
        })
    }
}

fn parse_fallback(s: &str, what: &str) -> Result<Answer, String> {
    classify_host(s).map_err(|e| format!("{what}: fallback: {e}"))
}

/// A static record served without any app.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticRecord {
    /// Fully qualified, lower-case owner name with trailing dot.
    pub name: String,
    /// Record type: A, AAAA, CNAME, TXT or MX.
    pub rtype: String,
    /// Value as written (address, name, text).
    pub value: String,
    /// TTL.
    pub ttl: u32,
    /// MX preference.
    pub priority: u16,
}

/// SOA fields of a zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Soa {
    /// Primary name server.
    pub mname: String,
    /// Responsible mailbox, as a name.
    pub rname: String,
    /// Serial.
    pub serial: u32,
    /// Refresh seconds.
    pub refresh: i32,
    /// Retry seconds.
    pub retry: i32,
    /// Expire seconds.
    pub expire: i32,
    /// Negative-answer TTL.
    pub minimum: u32,
}

/// A checked zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Lower-case name with trailing dot, e.g. `switchyard.test.`.
    pub name: String,
    /// Default TTL of app answers in this zone.
    pub ttl: u32,
    /// Name servers.
    pub ns: Vec<String>,
    /// Start of authority.
    pub soa: Soa,
    /// Static records.
    pub records: Vec<StaticRecord>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub source: String,
    /// DNS listen addresses (UDP and TCP each).
    pub dns: Vec<SocketAddr>,
    /// Public HTTP decision endpoint.
    pub http: SocketAddr,
    /// Operations and `/api/*`.
    pub admin: SocketAddr,
    /// Apps directory.
    pub apps_dir: PathBuf,
    /// Data directory (SQLite, quarantine slots).
    pub data_dir: PathBuf,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest UDP response payload offered.
    pub max_udp_payload: u16,
    /// The admin bearer token of `/api/*` (the API is off without one).
    /// `None` before `serve` resolves an unset one ([`TokenSetting::Unset`])
    /// to the generated token in `data_dir/api_token`.
    pub api_token: Option<String>,
    /// How the file set `server.api_token`.
    pub api_token_setting: TokenSetting,
    /// Every `GET /api/*` needs a bearer token too
    /// (`server.admin_reads_need_token`, default off).
    pub admin_reads_need_token: bool,
    /// Most open HTTP connections per listener.
    pub max_connections: usize,
    /// What one client network may hold open on each listener that keeps
    /// connections (both HTTP listeners, DNS over TCP).
    pub per_client: crate::clients::PerClient,
    /// How long an HTTP connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// How long one HTTP request may take, body included.
    pub request_timeout: Duration,
    /// Largest HTTP request body accepted.
    pub max_body_bytes: usize,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Address-space cap of the serving process, in bytes (the supervisor
    /// restarts it when a runaway hits the cap).
    pub memory_limit: Option<u64>,
    /// How long a JS worker may stay in one decision before the watchdog
    /// answers its query from the fallback and retires the thread.
    pub hard_limit: Duration,
    /// Reuse decisions of apps proven stateless for requests that read the
    /// same values (`server.memoise`, default on; see `openmix::memo`).
    pub memoise: bool,
    /// GeoIP City database.
    pub geo_city: Option<PathBuf>,
    /// GeoIP ASN database.
    pub geo_asn: Option<PathBuf>,
    /// Code override table.
    pub geo_overrides: Option<PathBuf>,
    /// Default budgets.
    pub budget: Budget,
    /// Zones served.
    pub zones: Vec<Zone>,
    /// Configured providers, in name order.
    pub providers: Vec<(String, ProviderInfo)>,
    /// The same providers as the inventory reads them (host, labels,
    /// location, state, load), checked.
    pub inventory_providers: Vec<crate::inventory::model::Provider>,
    /// `[apps.NAME]` settings (a sidecar file overrides them).
    pub apps: BTreeMap<String, RawAppSettings>,
    /// Static probe values (JSON file in the Openmix `getProbe` shape).
    pub static_probes: Option<PathBuf>,
    /// Age after which a feed without a fresh value is reported stale.
    pub stale_after: Duration,
    /// Fusion feeds.
    pub fusion: Vec<FusionFeed>,
    /// Sonar checks.
    pub sonar: Vec<SonarCheck>,
    /// The leaderboard stats store and probe refresher.
    pub leaderboard: Leaderboard,
    /// Decision reports and the fleet.
    pub reports: ReportsConfig,
    /// Response rate limiting.
    pub rrl: Rrl,
    /// DNS Cookies.
    pub cookies: Cookies,
}

/// `[server]`'s per-client connection bound: `connections_per_client`
/// (default 64), counted by `client_ipv4_prefix` (24) and
/// `client_ipv6_prefix` (56).
fn per_client(server: &RawServer) -> Result<crate::clients::PerClient, String> {
    let default = crate::clients::PerClient::default();
    let limit = crate::clients::PerClient {
        max: server.connections_per_client.unwrap_or(default.max),
        ipv4_prefix: server.client_ipv4_prefix.unwrap_or(default.ipv4_prefix),
        ipv6_prefix: server.client_ipv6_prefix.unwrap_or(default.ipv6_prefix),
    };
    if limit.max == 0 {
        return Err("server.connections_per_client: must be at least 1".into());
    }
    if limit.ipv4_prefix > 32 {
        return Err(format!(
            "server.client_ipv4_prefix: {} is not 0 to 32",
            limit.ipv4_prefix
        ));
    }
    if limit.ipv6_prefix > 128 {
        return Err(format!(
            "server.client_ipv6_prefix: {} is not 0 to 128",
            limit.ipv6_prefix
        ));
    }
    Ok(limit)
}

/// How the configuration sets the admin `api_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSetting {
    /// Not set: `serve` generates one into `data_dir/api_token` at first
    /// start and reads it from there afterwards.
    Unset,
    /// `api_token = ""`: the token API is off.
    Off,
    /// Set in the file.
    Given,
}

/// Command-line overrides shared by `serve`, `decide` and `geo`.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--dns` (repeatable).
    pub dns: Vec<String>,
    /// `--http`.
    pub http: Option<String>,
    /// `--admin`.
    pub admin: Option<String>,
    /// `--apps`.
    pub apps: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--geo-city`.
    pub geo_city: Option<PathBuf>,
    /// `--geo-asn`.
    pub geo_asn: Option<PathBuf>,
    /// `--zone`.
    pub zone: Option<String>,
}

impl Config {
    /// Loads `path`, or the built-in defaults when `path` is `None`, and
    /// applies the command-line overrides.
    pub fn load(path: Option<&Path>, over: &Overrides) -> Result<Config, ConfigError> {
        let (text, source) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| ConfigError {
                    file: p.display().to_string(),
                    message: format!("cannot read: {e}"),
                })?,
                p.display().to_string(),
            ),
            None => (
                DEFAULT_CONFIG.to_string(),
                "<built-in defaults>".to_string(),
            ),
        };
        Self::parse(&text, &source, over)
    }

    /// Parses and checks configuration text; `source` names it in errors.
    pub fn parse(text: &str, source: &str, over: &Overrides) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: source.to_string(),
            message,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| err(e.to_string().trim().to_string()))?;
        let addr = |key: &str, s: &str| -> Result<SocketAddr, ConfigError> {
            s.parse()
                .map_err(|_| err(format!("{key}: '{s}' is not an IP:port address")))
        };
        let dns_list = if !over.dns.is_empty() {
            over.dns.clone()
        } else {
            raw.server
                .dns
                .clone()
                .unwrap_or_else(|| vec!["127.0.0.1:5353".into()])
        };
        let dns = dns_list
            .iter()
            .map(|s| addr("server.dns", s))
            .collect::<Result<Vec<_>, _>>()?;
        let http = addr(
            "server.http",
            over.http
                .as_deref()
                .or(raw.server.http.as_deref())
                .unwrap_or("127.0.0.1:8080"),
        )?;
        let admin = addr(
            "server.admin",
            over.admin
                .as_deref()
                .or(raw.server.admin.as_deref())
                .unwrap_or("127.0.0.1:8081"),
        )?;
        let trusted_proxies = raw
            .server
            .trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        err(format!(
                            "server.trusted_proxies: '{s}' is not an address or CIDR"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_udp_payload = raw.server.max_udp_payload.unwrap_or(1232);
        if max_udp_payload < 512 {
            return Err(err(format!(
                "server.max_udp_payload: must be at least 512, got {max_udp_payload}"
            )));
        }

        let mut budget = Budget::default();
        if let Some(ms) = raw.budget.decision_ms {
            if ms == 0 || ms > 10_000 {
                return Err(err(format!(
                    "budget.decision_ms: must be 1..=10000, got {ms}"
                )));
            }
            budget.decision = Duration::from_millis(ms);
        }
        if let Some(ms) = raw.budget.load_ms {
            if ms == 0 || ms > 60_000 {
                return Err(err(format!("budget.load_ms: must be 1..=60000, got {ms}")));
            }
            budget.load = Duration::from_millis(ms);
        }
        if let Some(mb) = raw.budget.memory_mb {
            if mb == 0 || mb > 4096 {
                return Err(err(format!("budget.memory_mb: must be 1..=4096, got {mb}")));
            }
            budget.memory = (mb as usize) << 20;
        }

        let mut raw_zones = raw.zones;
        if let Some(z) = &over.zone {
            raw_zones = vec![RawZone {
                name: z.clone(),
                ttl: raw_zones.first().and_then(|z| z.ttl),
                ns: Vec::new(),
                soa: RawSoa::default(),
                records: Vec::new(),
            }];
        }
        if raw_zones.is_empty() {
            raw_zones.push(RawZone {
                name: "switchyard.test.".into(),
                ttl: None,
                ns: Vec::new(),
                soa: RawSoa::default(),
                records: Vec::new(),
            });
        }
        let mut zones = Vec::new();
        for (i, z) in raw_zones.into_iter().enumerate() {
            zones.push(check_zone(z, i).map_err(err)?);
        }
        for (i, a) in zones.iter().enumerate() {
            if zones[..i].iter().any(|b| b.name == a.name) {
                return Err(err(format!("zone: '{}' is configured twice", a.name)));
            }
        }

        for (name, settings) in &raw.apps {
            settings
                .check(budget, &format!("apps.{name}"))
                .map_err(err)?;
        }
        for (alias, p) in &raw.providers {
            if let Some(lat) = p.latitude
                && !(-90.0..=90.0).contains(&lat)
            {
                return Err(err(format!(
                    "providers.{alias}.latitude: {lat} is out of range"
                )));
            }
            if let Some(lon) = p.longitude
                && !(-180.0..=180.0).contains(&lon)
            {
                return Err(err(format!(
                    "providers.{alias}.longitude: {lon} is out of range"
                )));
            }
        }
        let provider_list: Vec<(String, ProviderInfo)> = raw
            .providers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let inventory_providers =
            crate::inventory::config_providers(&provider_list).map_err(err)?;

        for (i, f) in raw.fusion.iter().enumerate() {
            if f.url.is_some() == f.file.is_some() {
                return Err(err(format!(
                    "fusion[{i}]: give exactly one of url and file"
                )));
            }
            if let Some(u) = &f.url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return Err(err(format!("fusion[{i}].url: '{u}' is not an http(s) URL")));
            }
            if f.interval_secs == 0 || f.timeout_ms == 0 {
                return Err(err(format!(
                    "fusion[{i}]: interval_secs and timeout_ms must be positive"
                )));
            }
        }
        for (i, c) in raw.sonar.iter().enumerate() {
            if c.url.is_some() == c.tcp.is_some() {
                return Err(err(format!("sonar[{i}]: give exactly one of url and tcp")));
            }
            if let Some(u) = &c.url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return Err(err(format!("sonar[{i}].url: '{u}' is not an http(s) URL")));
            }
            if c.interval_secs == 0 || c.timeout_ms == 0 || c.rise == 0 || c.fall == 0 {
                return Err(err(format!(
                    "sonar[{i}]: interval_secs, timeout_ms, rise and fall must be positive"
                )));
            }
        }

        let lb = raw.leaderboard;
        // `extra_regions` extends the list (the defaults unless `regions`
        // replaces them), so adding one region does not mean copying 22.
        let regions = match (lb.regions, lb.extra_regions.is_empty()) {
            (Some(list), true) => crate::stats::RegionSet::new(list)
                .map_err(|e| err(format!("leaderboard.regions: {e}")))?,
            (None, true) => crate::stats::RegionSet::default(),
            (base, false) => {
                let which = if base.is_some() {
                    "leaderboard.regions + extra_regions"
                } else {
                    "leaderboard.extra_regions"
                };
                let mut list = base.unwrap_or_else(|| {
                    crate::stats::RegionSet::default().iter().cloned().collect()
                });
                list.extend(lb.extra_regions);
                crate::stats::RegionSet::new(list).map_err(|e| err(format!("{which}: {e}")))?
            }
        };
        let probe_source = match lb.source.as_deref().map(str::trim) {
            None | Some("") | Some("off") => ProbeSource::Off,
            Some("local") => ProbeSource::Local,
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                ProbeSource::Remote(u.trim_end_matches('/').to_string())
            }
            Some(other) => {
                return Err(err(format!(
                    "leaderboard.source: '{other}' is not off, local or an http(s) URL"
                )));
            }
        };
        for (orch, alias) in &lb.orchestrators {
            if alias.is_empty() || orch.is_empty() {
                return Err(err(format!(
                    "leaderboard.orchestrators: '{orch}' = '{alias}' must both be non-empty"
                )));
            }
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let leaderboard = Leaderboard {
            secret: env("SECRET").or(lb.secret).filter(|s| !s.is_empty()),
            postgres: env("POSTGRES").or(lb.postgres).filter(|s| !s.is_empty()),
            source: probe_source,
            refresh: Duration::from_secs(lb.refresh_secs.unwrap_or(10).max(1)),
            window: Duration::from_secs(lb.window_secs.unwrap_or(86_400).max(1)),
            orchestrators: lb
                .orchestrators
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            regions,
        };

        let rr = raw.reports;
        let push_url = match rr.push_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                Some(u.trim_end_matches('/').to_string())
            }
            Some(u) => {
                return Err(err(format!(
                    "reports.push_url: '{u}' is not an http(s) URL"
                )));
            }
        };
        let interval_ms = rr.interval_ms.unwrap_or(10_000);
        if !(100..=3_600_000).contains(&interval_ms) {
            return Err(err(format!(
                "reports.interval_ms: {interval_ms} must be from 100 to 3600000"
            )));
        }
        let pick = |env_key: &str, v: Option<String>| {
            env(env_key)
                .or(v)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let reports = ReportsConfig {
            enabled: rr.enabled.unwrap_or(true),
            node: pick("SWITCHYARD_NODE", rr.node).unwrap_or_else(hostname),
            fleet: pick("SWITCHYARD_FLEET", rr.fleet).unwrap_or_else(|| "default".into()),
            interval: Duration::from_millis(interval_ms),
            push_url,
            push_token: rr.push_token.filter(|t| !t.is_empty()),
        };
        for (what, v) in [("node", &reports.node), ("fleet", &reports.fleet)] {
            if v.len() > crate::report::store::MAX_NAME || v.chars().any(char::is_control) {
                return Err(err(format!(
                    "reports.{what}: '{v}' is too long or not printable"
                )));
            }
        }

        let per_client = per_client(&raw.server).map_err(err)?;
        let rrl = check_rrl(raw.rrl).map_err(err)?;
        let cookies = check_cookies(raw.cookies).map_err(err)?;
        Ok(Config {
            source: source.to_string(),
            dns,
            http,
            admin,
            apps_dir: over
                .apps
                .clone()
                .or(raw.server.apps)
                .unwrap_or_else(|| "apps".into()),
            data_dir: over
                .data_dir
                .clone()
                .or(raw.server.data_dir)
                .unwrap_or_else(|| "data".into()),
            trusted_proxies,
            max_udp_payload,
            api_token: raw.server.api_token.clone().filter(|t| !t.is_empty()),
            api_token_setting: match raw.server.api_token.as_deref() {
                None => TokenSetting::Unset,
                Some("") => TokenSetting::Off,
                Some(_) => TokenSetting::Given,
            },
            admin_reads_need_token: raw.server.admin_reads_need_token.unwrap_or(false),
            max_connections: raw.server.max_connections.unwrap_or(1024).max(1),
            per_client,
            idle_timeout: Duration::from_millis(
                raw.server.idle_timeout_ms.unwrap_or(15_000).max(1),
            ),
            request_timeout: Duration::from_millis(
                raw.server.request_timeout_ms.unwrap_or(10_000).max(1),
            ),
            max_body_bytes: raw.server.max_body_bytes.unwrap_or(64 * 1024),
            header_timeout: Duration::from_millis(
                raw.server.header_timeout_ms.unwrap_or(5000).max(1),
            ),
            memory_limit: raw
                .server
                .memory_limit_mb
                .filter(|m| *m > 0)
                .map(|m| m << 20),
            hard_limit: Duration::from_millis(raw.server.hard_limit_ms.unwrap_or(100).max(10)),
            memoise: raw.server.memoise.unwrap_or(true),
            geo_city: over.geo_city.clone().or(raw.geo.city),
            geo_asn: over.geo_asn.clone().or(raw.geo.asn),
            geo_overrides: raw.geo.overrides,
            budget,
            zones,
            providers: provider_list,
            inventory_providers,
            apps: raw.apps,
            static_probes: raw.data.probes,
            stale_after: Duration::from_secs(raw.data.stale_secs.unwrap_or(120).max(1)),
            fusion: raw.fusion,
            sonar: raw.sonar,
            leaderboard,
            reports,
            rrl,
            cookies,
        })
    }

    /// Settings for app `name` from `[apps.NAME]` (defaults when absent).
    pub fn app_settings(&self, name: &str) -> AppSettings {
        self.apps
            .get(name)
            .and_then(|s| s.check(self.budget, name).ok())
            .unwrap_or_else(|| AppSettings {
                budget: self.budget,
                ..AppSettings::default()
            })
    }

    /// The default TTL of the first zone (used by `decide`).
    pub fn default_ttl(&self) -> u32 {
        self.zones.first().map_or(20, |z| z.ttl)
    }
}

/// Lower-cases and adds the trailing dot.
pub fn fqdn(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

fn check_zone(z: RawZone, i: usize) -> Result<Zone, String> {
    let key = format!("zone[{i}]");
    let name = fqdn(&z.name);
    crate::openmix::decision::check_hostname(&name).map_err(|e| format!("{key}.name: {e}"))?;
    let ns: Vec<String> = if z.ns.is_empty() {
        vec![format!("ns1.{name}")]
    } else {
        z.ns.iter().map(|n| fqdn(n)).collect()
    };
    for n in &ns {
        crate::openmix::decision::check_hostname(n).map_err(|e| format!("{key}.ns: {e}"))?;
    }
    let soa = Soa {
        mname: z
            .soa
            .mname
            .as_deref()
            .map(fqdn)
            .unwrap_or_else(|| ns[0].clone()),
        rname: z
            .soa
            .rname
            .as_deref()
            .map(fqdn)
            .unwrap_or_else(|| format!("hostmaster.{name}")),
        serial: z.soa.serial.unwrap_or(1),
        refresh: z.soa.refresh.unwrap_or(3600),
        retry: z.soa.retry.unwrap_or(600),
        expire: z.soa.expire.unwrap_or(604_800),
        minimum: z.soa.minimum.unwrap_or(60),
    };
    let ttl = z.ttl.unwrap_or(20);
    let mut records = Vec::new();
    for (j, r) in z.records.into_iter().enumerate() {
        let rkey = format!("{key}.records[{j}]");
        let owner = if r.name == "@" {
            name.clone()
        } else if r.name.ends_with('.') {
            fqdn(&r.name)
        } else {
            fqdn(&format!("{}.{name}", r.name))
        };
        if !owner.ends_with(&name) {
            return Err(format!("{rkey}.name: '{owner}' is outside zone '{name}'"));
        }
        let rtype = r.rtype.to_ascii_uppercase();
        match rtype.as_str() {
            "A" => {
                r.value
                    .parse::<std::net::Ipv4Addr>()
                    .map_err(|_| format!("{rkey}.value: '{}' is not an IPv4 address", r.value))?;
            }
            "AAAA" => {
                r.value
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("{rkey}.value: '{}' is not an IPv6 address", r.value))?;
            }
            "CNAME" | "MX" => {
                crate::openmix::decision::check_hostname(&r.value)
                    .map_err(|e| format!("{rkey}.value: {e}"))?;
            }
            "TXT" => {}
            other => {
                return Err(format!(
                    "{rkey}.type: '{other}' is not one of A, AAAA, CNAME, TXT, MX"
                ));
            }
        }
        records.push(StaticRecord {
            name: owner,
            rtype,
            value: r.value,
            ttl: r.ttl.unwrap_or(ttl),
            priority: r.priority.unwrap_or(10),
        });
    }
    Ok(Zone {
        name,
        ttl,
        ns,
        soa,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.zones[0].name, "switchyard.test.");
        assert_eq!(c.dns, vec!["127.0.0.1:5353".parse().unwrap()]);
    }

    #[test]
    fn errors_name_key() {
        let e = Config::parse("[server]\nhttp = 'nope'\n", "x.toml", &Overrides::default())
            .unwrap_err();
        assert!(e.to_string().contains("x.toml: server.http"), "{e}");
        let e = Config::parse(
            "[[zone]]\nname='a.test'\n[[zone.records]]\nname='w'\ntype='A'\nvalue='1.2.3'\n",
            "y.toml",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("zone[0].records[0].value"), "{e}");
        let e = Config::parse("bogus = 1\n", "z.toml", &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::parse(
            "[providers.cdn_x]\ncname = 'not a host!'\n",
            "p.toml",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("p.toml: providers.cdn_x.cname"),
            "{e}"
        );
    }
}
