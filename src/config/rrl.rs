//! `[rrl]`: response rate limiting of UDP replies.

use serde::Deserialize;

use super::server::parse_net;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRrl {
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

/// The most replies a source can owe RRL (rate × window): its counter
/// holds 24 signed bits.
pub const RRL_MAX_DEBT: u64 = 8_000_000;

pub(super) fn check(raw: RawRrl) -> Result<Rrl, String> {
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
                .map(|s| parse_net("rrl.exempt", s))
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
