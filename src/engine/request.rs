//! The request an operator asks a decision for: the flags of `switchyard
//! decide` and `switchyard explain`, or the query parameters of
//! `GET /api/apps/{app}/explain` (the same names), located into the
//! [`Request`] an app sees. One function builds it for all of them, so the
//! command line and the server locate a request alike.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::geo::{ClientGeo, GeoSource};
use crate::openmix::{Location, Request};

/// What an operator gave to describe a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestInputs {
    /// Client address (the resolver's too unless `resolver_ip`).
    pub ip: Option<IpAddr>,
    /// EDNS client subnet: the client fields come from it.
    pub ecs: Option<ipnet::IpNet>,
    /// Resolver address.
    pub resolver_ip: Option<IpAddr>,
    /// Query type: A, AAAA, CNAME, or empty for an HTTP-style request.
    pub qtype: String,
    /// Labels in front of the app name.
    pub hostname_prefix: String,
    /// Client market, replacing the located one.
    pub market: Option<String>,
    /// Client country, replacing the located one.
    pub country: Option<String>,
    /// Client ASN, replacing the located one.
    pub asn: Option<u32>,
    /// Client region, replacing the located one.
    pub region: Option<String>,
    /// Client state, replacing the located one.
    pub state: Option<String>,
    /// HTTP headers, `Name: value`.
    pub headers: Vec<String>,
    /// HTTP query pairs, `k=v`.
    pub query: Vec<String>,
}

impl Default for RequestInputs {
    /// A DNS `A` query with nothing located.
    fn default() -> RequestInputs {
        RequestInputs {
            ip: None,
            ecs: None,
            resolver_ip: None,
            qtype: "A".into(),
            hostname_prefix: String::new(),
            market: None,
            country: None,
            asn: None,
            region: None,
            state: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }
}

/// Why the inputs do not describe a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A value that does not parse.
    #[error("{name}: {message}")]
    Invalid {
        /// The parameter (flag) name.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A parameter no request input has.
    #[error(
        "unknown parameter '{0}' (expected ip, ecs, resolver_ip, qtype, hostname_prefix, market, country, asn, region, state, header, query)"
    )]
    Unknown(String),
}

fn invalid(name: &'static str, message: impl Into<String>) -> InputError {
    InputError::Invalid {
        name,
        message: message.into(),
    }
}

impl RequestInputs {
    /// The inputs named by query parameters (`ip`, `ecs`, `resolver_ip`,
    /// `qtype`, `hostname_prefix`, `market`, `country`, `asn`, `region`,
    /// `state`, and `header`, `query` repeated; dashes may stand for
    /// underscores, as in the flags). An empty value is no value, except
    /// for `qtype`, where it asks for an HTTP-style request.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<RequestInputs, InputError> {
        let mut inputs = RequestInputs::default();
        for (key, value) in pairs {
            let key = key.replace('-', "_");
            if key == "qtype" {
                inputs.qtype = value.clone();
                continue;
            }
            if value.is_empty() {
                continue;
            }
            let parse_ip = |name| {
                value
                    .parse::<IpAddr>()
                    .map_err(|_| invalid(name, format!("'{value}' is not an IP address")))
            };
            match key.as_str() {
                "ip" => inputs.ip = Some(parse_ip("ip")?),
                "resolver_ip" => inputs.resolver_ip = Some(parse_ip("resolver_ip")?),
                "ecs" => {
                    inputs.ecs = Some(value.parse().map_err(|_| {
                        invalid(
                            "ecs",
                            format!("'{value}' is not a subnet like 198.51.100.0/24"),
                        )
                    })?)
                }
                "hostname_prefix" => inputs.hostname_prefix = value.clone(),
                "market" => inputs.market = Some(value.clone()),
                "country" => inputs.country = Some(value.clone()),
                "asn" => {
                    inputs.asn =
                        Some(value.parse().map_err(|_| {
                            invalid("asn", format!("'{value}' is not an AS number"))
                        })?)
                }
                "region" => inputs.region = Some(value.clone()),
                "state" => inputs.state = Some(value.clone()),
                "header" => inputs.headers.push(value.clone()),
                "query" => inputs.query.push(value.clone()),
                _ => return Err(InputError::Unknown(key)),
            }
        }
        Ok(inputs)
    }

    /// Whether an address must be located (GeoIP databases needed).
    pub fn needs_geo(&self) -> bool {
        self.ip.is_some() || self.ecs.is_some() || self.resolver_ip.is_some()
    }
}

/// One address located: where GeoIP puts it and why.
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    /// The address looked up.
    pub ip: IpAddr,
    /// The fields found, with the prefix length they hold for.
    pub geo: ClientGeo,
    /// The network, the databases' prefixes and the overrides applied.
    pub source: GeoSource,
}

/// A request built from [`RequestInputs`], with how it was located.
#[derive(Debug, Clone)]
pub struct Built {
    /// What the app sees.
    pub request: Request,
    /// How the client address was located (none without one).
    pub client: Option<Located>,
    /// How the resolver address was located, when it is not the client's.
    pub resolver: Option<Located>,
    /// With ECS: the source prefix as sent, and in the family GeoIP
    /// answers in ([`crate::geo::ecs_subnet`]), for the answer's scope.
    pub ecs: Option<(u8, u8)>,
}

impl Built {
    /// The ECS scope a DNS answer would carry ([`crate::geo::ecs_scope`]):
    /// `None` without ECS (no option is echoed), 0 for an answer that does
    /// not depend on the client (`by_client` false: a fallback).
    pub fn ecs_scope(&self, by_client: bool) -> Option<u8> {
        let (sent, source) = self.ecs?;
        if !by_client {
            return Some(0);
        }
        let matched = self.client.as_ref().map_or(0, |c| c.geo.prefix_len);
        Some(crate::geo::ecs_scope(sent, source, matched))
    }
}

/// Builds the request `inputs` describe, locating its addresses with
/// `locate` (a GeoIP lookup that also says where its answer came from).
/// The client is the ECS subnet, else `ip`; the resolver is `resolver_ip`,
/// else `ip`, else the client; the located client fields are replaced by
/// those given.
pub fn build(
    inputs: &RequestInputs,
    locate: &dyn Fn(IpAddr) -> (ClientGeo, GeoSource),
) -> Result<Built, InputError> {
    let qtype = inputs.qtype.to_ascii_uppercase();
    if !matches!(qtype.as_str(), "A" | "AAAA" | "CNAME" | "") {
        return Err(invalid(
            "qtype",
            format!("expected A, AAAA or CNAME, got '{}'", inputs.qtype),
        ));
    }
    let at = |ip: IpAddr| {
        let (geo, source) = locate(ip);
        Located { ip, geo, source }
    };
    let ecs = inputs
        .ecs
        .map(|n| (n, crate::geo::ecs_subnet(n.network(), n.prefix_len())));
    let client_ip = ecs.map(|(_, (addr, _))| addr).or(inputs.ip);
    let resolver_ip = inputs.resolver_ip.or(inputs.ip).or(client_ip);
    let client = client_ip.map(at);
    let resolver = match resolver_ip {
        Some(ip) if Some(ip) != client_ip => Some(at(ip)),
        _ => None,
    };
    let location = |l: Option<&Located>| {
        Arc::new(l.map_or_else(Location::default, |l| Location::from(l.geo.clone())))
    };
    let mut request = Request {
        ip_address: client_ip,
        client: location(client.as_ref()),
        resolver_ip_address: resolver_ip,
        resolver: location(resolver.as_ref().or(client.as_ref())),
        hostname_prefix: inputs.hostname_prefix.clone(),
        query_type: qtype,
        ..Request::default()
    };
    let c = Arc::make_mut(&mut request.client);
    if let Some(v) = &inputs.market {
        c.market = v.to_ascii_uppercase();
    }
    if let Some(v) = &inputs.country {
        c.country = v.to_ascii_uppercase();
    }
    if let Some(v) = inputs.asn {
        c.asn = v;
    }
    if let Some(v) = &inputs.region {
        c.region = v.clone();
    }
    if let Some(v) = &inputs.state {
        c.state = v.clone();
    }
    if inputs.ip.is_none() && inputs.resolver_ip.is_none() {
        request.resolver = request.client.clone();
    }
    for h in &inputs.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| invalid("header", format!("expected 'Name: value', got '{h}'")))?;
        request
            .headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    for q in &inputs.query {
        let (k, v) = q.split_once('=').unwrap_or((q.as_str(), ""));
        request.query.push((k.to_string(), v.to_string()));
    }
    Ok(Built {
        request,
        client,
        resolver,
        ecs: ecs.map(|(n, (_, source))| (n.prefix_len(), source)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn nowhere(_: IpAddr) -> (ClientGeo, GeoSource) {
        let geo = ClientGeo {
            market: "EU".into(),
            prefix_len: 16,
            ..ClientGeo::default()
        };
        (geo, GeoSource::default())
    }

    #[test]
    fn parameters_parse_and_bad_ones_are_named() {
        let i = RequestInputs::from_pairs(&pairs(&[
            ("ecs", "198.51.100.0/24"),
            ("resolver-ip", "192.0.2.53"),
            ("header", "X-A: 1"),
            ("header", "X-B: 2"),
            ("asn", ""),
            ("qtype", "aaaa"),
        ]))
        .unwrap();
        assert_eq!(i.headers.len(), 2);
        assert_eq!(i.asn, None);
        assert_eq!(i.resolver_ip, Some("192.0.2.53".parse().unwrap()));
        let e = RequestInputs::from_pairs(&pairs(&[("ip", "nope")])).unwrap_err();
        assert_eq!(e.to_string(), "ip: 'nope' is not an IP address");
        let e = RequestInputs::from_pairs(&pairs(&[("colour", "red")])).unwrap_err();
        assert!(matches!(e, InputError::Unknown(_)), "{e}");
        let bad = RequestInputs {
            qtype: "MX".into(),
            ..RequestInputs::default()
        };
        assert!(build(&bad, &nowhere).is_err());
    }

    #[test]
    fn ecs_locates_the_client_and_scopes_the_answer() {
        let i = RequestInputs {
            ecs: Some("198.51.100.0/24".parse().unwrap()),
            resolver_ip: Some("192.0.2.53".parse().unwrap()),
            country: Some("de".into()),
            ..RequestInputs::default()
        };
        let b = build(&i, &nowhere).unwrap();
        assert_eq!(b.request.ip_address, Some("198.51.100.0".parse().unwrap()));
        assert_eq!(b.request.client.country, "DE");
        assert_eq!(b.request.client.market, "EU");
        assert!(b.resolver.is_some());
        assert_eq!(b.ecs_scope(true), Some(16));
        assert_eq!(b.ecs_scope(false), Some(0));
        let plain = build(&RequestInputs::default(), &nowhere).unwrap();
        assert_eq!(plain.ecs_scope(true), None);
    }
}
