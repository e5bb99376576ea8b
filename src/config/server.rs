//! `[server]`: listeners, directories, tokens and the limits of the
//! serving process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Overrides;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
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

/// The checked `[server]` section (the fields [`super::Config`] has of it).
pub(super) struct Server {
    pub(super) dns: Vec<SocketAddr>,
    pub(super) http: SocketAddr,
    pub(super) admin: SocketAddr,
    pub(super) apps_dir: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) trusted_proxies: Vec<ipnet::IpNet>,
    pub(super) max_udp_payload: u16,
    pub(super) api_token: Option<String>,
    pub(super) api_token_setting: TokenSetting,
    pub(super) admin_reads_need_token: bool,
    pub(super) max_connections: usize,
    pub(super) idle_timeout: Duration,
    pub(super) request_timeout: Duration,
    pub(super) max_body_bytes: usize,
    pub(super) header_timeout: Duration,
    pub(super) memory_limit: Option<u64>,
    pub(super) hard_limit: Duration,
    pub(super) memoise: bool,
}

/// An address or a CIDR, as a network.
pub(super) fn parse_net(key: &str, s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{key}: '{s}' is not an address or CIDR"))
}

fn addr(key: &str, s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{key}: '{s}' is not an IP:port address"))
}

/// Checks `[server]` but for the per-client bound ([`per_client`]); the
/// command-line overrides win over the file.
pub(super) fn check(raw: &RawServer, over: &Overrides) -> Result<Server, String> {
    let dns_list = if !over.dns.is_empty() {
        over.dns.clone()
    } else {
        raw.dns
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
            .or(raw.http.as_deref())
            .unwrap_or("127.0.0.1:8080"),
    )?;
    let admin = addr(
        "server.admin",
        over.admin
            .as_deref()
            .or(raw.admin.as_deref())
            .unwrap_or("127.0.0.1:8081"),
    )?;
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .map(|s| parse_net("server.trusted_proxies", s))
        .collect::<Result<Vec<_>, _>>()?;
    let max_udp_payload = raw.max_udp_payload.unwrap_or(1232);
    if max_udp_payload < 512 {
        return Err(format!(
            "server.max_udp_payload: must be at least 512, got {max_udp_payload}"
        ));
    }
    Ok(Server {
        dns,
        http,
        admin,
        apps_dir: over
            .apps
            .clone()
            .or(raw.apps.clone())
            .unwrap_or_else(|| "apps".into()),
        data_dir: over
            .data_dir
            .clone()
            .or(raw.data_dir.clone())
            .unwrap_or_else(|| "data".into()),
        trusted_proxies,
        max_udp_payload,
        api_token: raw.api_token.clone().filter(|t| !t.is_empty()),
        api_token_setting: match raw.api_token.as_deref() {
            None => TokenSetting::Unset,
            Some("") => TokenSetting::Off,
            Some(_) => TokenSetting::Given,
        },
        admin_reads_need_token: raw.admin_reads_need_token.unwrap_or(false),
        max_connections: raw.max_connections.unwrap_or(1024).max(1),
        idle_timeout: Duration::from_millis(raw.idle_timeout_ms.unwrap_or(15_000).max(1)),
        request_timeout: Duration::from_millis(raw.request_timeout_ms.unwrap_or(10_000).max(1)),
        max_body_bytes: raw.max_body_bytes.unwrap_or(64 * 1024),
        header_timeout: Duration::from_millis(raw.header_timeout_ms.unwrap_or(5000).max(1)),
        memory_limit: raw.memory_limit_mb.filter(|m| *m > 0).map(|m| m << 20),
        hard_limit: Duration::from_millis(raw.hard_limit_ms.unwrap_or(100).max(10)),
        memoise: raw.memoise.unwrap_or(true),
    })
}

/// `[server]`'s per-client connection bound: `connections_per_client`
/// (default 64), counted by `client_ipv4_prefix` (24) and
/// `client_ipv6_prefix` (56).
pub(super) fn per_client(server: &RawServer) -> Result<crate::net::clients::PerClient, String> {
    let default = crate::net::clients::PerClient::default();
    let limit = crate::net::clients::PerClient {
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
