//! The request an app sees: where the client is and what it asked.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Location fields of one address, as the Openmix `request` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Location {
    /// Autonomous system number (0 when unknown).
    pub asn: u32,
    /// Continent code (NA, SA, EU, AS, AF, OC) or empty.
    pub market: String,
    /// ISO 3166-1 alpha-2 country code or empty.
    pub country: String,
    /// `XX-R-CODE` or empty.
    pub region: String,
    /// `XX-S-CODE` or empty.
    pub state: String,
    /// Latitude, for proximity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude, for proximity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
}

impl From<crate::geo::ClientGeo> for Location {
    /// The request fields of a GeoIP result (its prefix length is the
    /// front end's, for the ECS scope).
    fn from(g: crate::geo::ClientGeo) -> Location {
        Location {
            asn: g.asn,
            market: g.market,
            country: g.country,
            region: g.region,
            state: g.state,
            latitude: g.latitude,
            longitude: g.longitude,
        }
    }
}

/// Everything `onRequest` can read about one request. Serialisable both
/// ways, so a logged decision (`engine::decision_log`) carries the whole
/// request and can be decided again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    /// Client address (the ECS subnet address for DNS when present).
    pub ip_address: Option<IpAddr>,
    /// Where the client is (shared: the DNS threads cache located
    /// addresses and hand the same answer to every request from them).
    pub client: Arc<Location>,
    /// Address of the resolver that sent the DNS query (the client for HTTP).
    pub resolver_ip_address: Option<IpAddr>,
    /// Where the resolver is.
    pub resolver: Arc<Location>,
    /// Labels in front of the app's name, e.g. `www` for `www.app.zone`.
    pub hostname_prefix: String,
    /// `A`, `AAAA`, `CNAME`, or empty for HTTP.
    pub query_type: String,
    /// HTTP request headers (names compared case-insensitively).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// HTTP query string pairs, decoded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
}

impl Request {
    /// The first header with this name, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query-string value with this name.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
