//! `GET /apps/{app}/decision`: the app's decision for an HTTP client.
//!
//! The client is the TCP peer, or, when (and only when) the peer is a
//! configured trusted proxy, the nearest untrusted `X-Forwarded-For` entry
//! (see [`client_ip`]). The app
//! sees the client's geo for both the plain and the `resolver_*` fields,
//! its headers and query string, and an empty `query_type`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};

use super::{HttpResponse, json, json_error, query_pairs};
use crate::engine::steer::Outcome;
use crate::openmix::{Answer, Decision, Request as AppRequest};
use crate::state::State;

/// The address the decision is for. Only a trusted peer's
/// `X-Forwarded-For` counts, and in it only what trusted proxies appended:
/// the entries are read right to left, skipping trusted proxies, and the
/// first untrusted one is the client (with one proxy, the left-most entry).
/// Reading the left-most entry blindly would let a client forge its
/// address by sending its own `X-Forwarded-For` through the proxy.
pub fn client_ip(peer: IpAddr, forwarded: Option<&str>, trusted: &[ipnet::IpNet]) -> IpAddr {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(forwarded) = forwarded else {
        return peer;
    };
    let mut client = peer;
    for entry in forwarded.rsplit(',') {
        let Ok(ip) = entry.trim().parse::<IpAddr>().map(canonical) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// Handles one request on the public listener.
pub async fn handle(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let path = req.uri().path().to_string();
    let Some(app_name) = path
        .strip_prefix("/apps/")
        .and_then(|rest| rest.strip_suffix("/decision"))
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"));
    };
    let config = state.config.load();
    // A decision takes no body: one declared over the limit is refused
    // as every endpoint refuses it, and none is ever read.
    if super::body::declared_too_large(req.headers(), config.max_body_bytes) {
        return super::body::BodyError::TooLarge(config.max_body_bytes).response();
    }
    let Some(app) = state.apps.get(&app_name.to_ascii_lowercase()) else {
        return json_error(StatusCode::NOT_FOUND, format!("unknown app '{app_name}'"));
    };
    let origin = req
        .headers()
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let allow = origin
        .as_deref()
        .and_then(|o| cors_allow(app.meta.cors.as_deref(), o));

    if req.method() == Method::OPTIONS {
        let mut r = json(StatusCode::NO_CONTENT, &serde_json::Value::Null);
        *r.body_mut() = Default::default();
        r.headers_mut().remove(hyper::header::CONTENT_TYPE);
        if let Some(a) = &allow {
            add_cors(&mut r, a);
            let h = r.headers_mut();
            h.insert(
                "access-control-allow-methods",
                HeaderValue::from_static("GET, OPTIONS"),
            );
            if let Some(rh) = req.headers().get("access-control-request-headers") {
                h.insert("access-control-allow-headers", rh.clone());
            }
            h.insert("access-control-max-age", HeaderValue::from_static("600"));
        }
        return r;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return r;
    }

    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = client_ip(peer.ip(), forwarded, &config.trusted_proxies);
    let geo = std::sync::Arc::new(crate::openmix::Location::from(state.geo.lookup(ip)));
    let query = query_pairs(&req);
    let redirect = query
        .iter()
        .any(|(k, v)| k == "redirect" && (v == "1" || v == "true"));
    let request = AppRequest {
        ip_address: Some(ip),
        client: geo.clone(),
        resolver_ip_address: Some(ip),
        resolver: geo,
        hostname_prefix: String::new(),
        query_type: String::new(),
        headers: req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        query,
    };
    let zone_ttl = config.default_ttl();
    let steered = state
        .workers
        .decide(app.clone(), request, state.data.load_full(), zone_ttl)
        .await;
    state.counters.decision(steered.counted(&app));
    if let Outcome::Failed(e) = &steered.outcome {
        let mut r = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("app {} failed and has no fallback: {e}", app.code.name),
        );
        if let Some(a) = &allow {
            add_cors(&mut r, a);
        }
        return r;
    }
    let providers = provider_list(&steered.decision);
    let mut r = if redirect {
        match providers
            .first()
            .and_then(|p| p["host"].as_str())
            .map(location_url)
        {
            Some(loc) => {
                let mut r = json(StatusCode::FOUND, &serde_json::json!({ "location": loc }));
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    r.headers_mut().insert(hyper::header::LOCATION, v);
                }
                r
            }
            None => json_error(
                StatusCode::NOT_FOUND,
                "the decision has no host to redirect to",
            ),
        }
    } else {
        let status = steered
            .decision
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        json(
            status,
            &serde_json::json!({
                "providers": providers,
                "provider": steered.decision.provider,
                "reason": steered.reason,
                "ttl": steered.ttl,
            }),
        )
    };
    for (k, v) in &steered.decision.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    if let Some(a) = &allow {
        add_cors(&mut r, a);
    }
    r
}

/// The `providers` list: `addProviderHost` entries, or for a DNS-style
/// decision its answers under the decision's provider.
fn provider_list(d: &Decision) -> Vec<serde_json::Value> {
    if !d.provider_hosts.is_empty() {
        return d
            .provider_hosts
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect();
    }
    let provider = d.provider.clone().unwrap_or_default();
    d.answers
        .iter()
        .map(|a| {
            let host = match a {
                Answer::A(ip) => ip.to_string(),
                Answer::Aaaa(ip) => ip.to_string(),
                Answer::Cname(n) => n.clone(),
            };
            serde_json::json!({ "provider": provider, "host": host })
        })
        .collect()
}

/// A redirect target: URLs as they are, bare hosts as `http://host/`.
fn location_url(host: &str) -> String {
    if host.contains("://") {
        host.to_string()
    } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("http://[{host}]/")
    } else {
        format!("http://{host}/")
    }
}

/// The `Access-Control-Allow-Origin` value for `origin`, given the hosts
/// the app allowed (`*` or a comma list of origins).
pub fn cors_allow(allowed: Option<&str>, origin: &str) -> Option<String> {
    let allowed = allowed?;
    if allowed.trim() == "*" {
        return Some("*".into());
    }
    allowed
        .split(',')
        .map(|h| h.trim().trim_end_matches('/'))
        .any(|h| h.eq_ignore_ascii_case(origin.trim_end_matches('/')))
        .then(|| origin.to_string())
}

fn add_cors(r: &mut HttpResponse, allow: &str) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(allow) {
        h.insert("access-control-allow-origin", v);
    }
    if allow != "*" {
        h.insert(hyper::header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_only_from_trusted() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some("198.51.100.7, 10.1.1.1"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let outsider: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            client_ip(outsider, Some("198.51.100.7"), &trusted),
            outsider
        );
        assert_eq!(client_ip(peer, Some("garbage"), &trusted), peer);
        // A client's own header cannot choose the address.
        assert_eq!(
            client_ip(peer, Some("203.0.113.5, 198.51.100.7"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn cors() {
        assert_eq!(cors_allow(Some("*"), "https://a.example"), Some("*".into()));
        assert_eq!(
            cors_allow(
                Some("https://a.example, https://b.example"),
                "https://b.example"
            ),
            Some("https://b.example".into())
        );
        assert_eq!(
            cors_allow(Some("https://a.example"), "https://evil.example"),
            None
        );
        assert_eq!(cors_allow(None, "https://a.example"), None);
    }
}
