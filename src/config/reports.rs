//! `[reports]`: this node's identity in the fleet and how it reports.

use std::time::Duration;

use serde::Deserialize;

use super::env::Env;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReports {
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

pub(super) fn check(rr: RawReports, env: &Env) -> Result<ReportsConfig, String> {
    let push_url = match rr.push_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            Some(u.trim_end_matches('/').to_string())
        }
        Some(u) => return Err(format!("reports.push_url: '{u}' is not an http(s) URL")),
    };
    let interval_ms = rr.interval_ms.unwrap_or(10_000);
    if !(100..=3_600_000).contains(&interval_ms) {
        return Err(format!(
            "reports.interval_ms: {interval_ms} must be from 100 to 3600000"
        ));
    }
    let pick = |env: &Option<String>, v: Option<String>| {
        env.clone()
            .or(v)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let reports = ReportsConfig {
        enabled: rr.enabled.unwrap_or(true),
        node: pick(&env.node, rr.node).unwrap_or_else(hostname),
        fleet: pick(&env.fleet, rr.fleet).unwrap_or_else(|| "default".into()),
        interval: Duration::from_millis(interval_ms),
        push_url,
        push_token: rr.push_token.filter(|t| !t.is_empty()),
    };
    for (what, v) in [("node", &reports.node), ("fleet", &reports.fleet)] {
        if v.len() > crate::report::store::MAX_NAME || v.chars().any(char::is_control) {
            return Err(format!(
                "reports.{what}: '{v}' is too long or not printable"
            ));
        }
    }
    Ok(reports)
}
