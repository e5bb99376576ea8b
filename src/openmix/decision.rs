//! What an app decided, independent of DNS and HTTP.
//!
//! The front ends turn a [`Decision`] into records or JSON; nothing here knows
//! about either wire format, so `decide`, DNS and HTTP share one function.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Most address records one decision may carry (the Openmix API allows 8).
pub const MAX_ADDRESS_RECORDS: usize = 8;

/// One answer record value chosen by the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum Answer {
    /// An IPv4 address (DNS `A`).
    A(Ipv4Addr),
    /// An IPv6 address (DNS `AAAA`).
    #[serde(rename = "AAAA")]
    Aaaa(Ipv6Addr),
    /// A canonical name (DNS `CNAME`), without a trailing dot.
    #[serde(rename = "CNAME")]
    Cname(String),
}

/// A provider and host added with `addProviderHost` (HTTP answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderHost {
    /// Provider alias.
    pub provider: String,
    /// Host, IP or URL.
    pub host: String,
    /// Optional custom JSON data from the third argument.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<serde_json::Value>,
}

/// The outcome of one `onRequest` call (read back from the decision log).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Decision {
    /// Provider alias for reporting (`respond`, `setProvider`).
    pub provider: Option<String>,
    /// Answer values in the order the app added them.
    pub answers: Vec<Answer>,
    /// `respondEmpty` was called: answer with no records on purpose.
    pub empty: bool,
    /// `setTTL`, in seconds.
    pub ttl: Option<u32>,
    /// `setReasonCode`.
    pub reason: Option<String>,
    /// `setStatus` (HTTP).
    pub status: Option<u16>,
    /// `setHeader` pairs in call order (HTTP).
    pub headers: Vec<(String, String)>,
    /// `addProviderHost` entries (HTTP).
    pub provider_hosts: Vec<ProviderHost>,
}

impl Decision {
    /// True when the app said something a front end can answer with.
    pub fn is_decided(&self) -> bool {
        !self.answers.is_empty() || self.empty || !self.provider_hosts.is_empty()
    }

    /// Number of address records of the given family already added.
    pub fn count_a(&self) -> usize {
        self.answers
            .iter()
            .filter(|a| matches!(a, Answer::A(_)))
            .count()
    }

    /// Number of IPv6 address records already added.
    pub fn count_aaaa(&self) -> usize {
        self.answers
            .iter()
            .filter(|a| matches!(a, Answer::Aaaa(_)))
            .count()
    }

    /// The first host a client should go to: the first provider host, else the
    /// first answer value. Used for HTTP redirects.
    pub fn first_host(&self) -> Option<String> {
        if let Some(ph) = self.provider_hosts.first() {
            return Some(ph.host.clone());
        }
        self.answers.first().map(|a| match a {
            Answer::A(ip) => ip.to_string(),
            Answer::Aaaa(ip) => ip.to_string(),
            Answer::Cname(n) => n.clone(),
        })
    }
}

/// Why a host string is not an address or a host name DNS can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The string is empty.
    #[error("empty host")]
    Empty,
    /// Digits and dots that are not a dotted-quad IPv4 address.
    #[error("malformed IPv4 address '{0}'")]
    Ipv4(String),
    /// Has a `:` but is not an IPv6 address.
    #[error("malformed IPv6 address '{0}'")]
    Ipv6(String),
    /// A name with an empty or too long label, a character DNS cannot
    /// carry, or more than 253 characters.
    #[error("invalid host name '{0}'")]
    Name(String),
}

/// Classifies a host string the way `respond` does: an IPv4 literal gives A,
/// an IPv6 literal AAAA, a host name CNAME. Something that looks like an
/// address but is malformed, or a name with characters DNS cannot carry, is
/// an error (its message is a `TypeError`'s).
pub fn classify_host(host: &str) -> Result<Answer, HostError> {
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return parse_ipv4(host).map(Answer::A);
    }
    if host.contains(':') {
        return host
            .parse::<Ipv6Addr>()
            .map(Answer::Aaaa)
            .map_err(|_| HostError::Ipv6(host.to_string()));
    }
    check_hostname(host).map(|()| Answer::Cname(host.trim_end_matches('.').to_string()))
}

/// Parses a dotted-quad IPv4 literal (four decimal parts, each 0–255).
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, HostError> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| HostError::Ipv4(s.to_string()))
}

/// Checks that `name` can be sent as a DNS name: labels of 1–63 letters,
/// digits, `-` or `_`, 253 characters at most.
pub fn check_hostname(name: &str) -> Result<(), HostError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(HostError::Name(name.to_string()));
    }
    for label in trimmed.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(HostError::Name(name.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        assert_eq!(
            classify_host("1.2.3.4"),
            Ok(Answer::A(Ipv4Addr::new(1, 2, 3, 4)))
        );
        assert!(matches!(classify_host("2001:db8::1"), Ok(Answer::Aaaa(_))));
        assert_eq!(
            classify_host("cdn.example.net."),
            Ok(Answer::Cname("cdn.example.net".into()))
        );
        assert!(classify_host("300.1.2.3").is_err());
        assert!(classify_host("1.2.3").is_err());
        assert!(classify_host("2001:db8::zz").is_err());
        assert!(classify_host("bad host").is_err());
        assert!(classify_host("").is_err());
        assert!(classify_host("a..b").is_err());
        assert_eq!(
            classify_host("1.2.3").unwrap_err().to_string(),
            "malformed IPv4 address '1.2.3'"
        );
        assert_eq!(
            classify_host("2001:db8::zz").unwrap_err().to_string(),
            "malformed IPv6 address '2001:db8::zz'"
        );
        assert_eq!(
            classify_host("bad host").unwrap_err().to_string(),
            "invalid host name 'bad host'"
        );
        assert_eq!(classify_host("").unwrap_err().to_string(), "empty host");
    }
}
