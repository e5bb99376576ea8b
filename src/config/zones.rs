//! `[[zone]]`: the zones served, their SOA and static records.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZone {
    name: String,
    ttl: Option<u32>,
    #[serde(default)]
    ns: Vec<String>,
    #[serde(default)]
    soa: RawSoa,
    #[serde(default)]
    records: Vec<RawRecord>,
    dnssec: Option<RawDnssec>,
}

/// `dnssec = true`, or a table of settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDnssec {
    On(bool),
    Settings(RawDnssecSettings),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnssecSettings {
    algorithm: Option<String>,
    keys: Option<std::path::PathBuf>,
    signature_validity_days: Option<u32>,
    refresh_days: Option<u32>,
    dnskey_ttl: Option<u32>,
}

impl RawZone {
    /// A zone with nothing but a name (and a TTL): `--zone`, or the default.
    fn bare(name: String, ttl: Option<u32>) -> RawZone {
        RawZone {
            name,
            ttl,
            ns: Vec::new(),
            soa: RawSoa::default(),
            records: Vec::new(),
            dnssec: None,
        }
    }
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

/// A DNSSEC signing algorithm offered for new keys (existing key files
/// say their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnssecAlgorithm {
    /// ECDSA P-256 with SHA-256, algorithm 13 (the default).
    EcdsaP256Sha256,
    /// Ed25519, algorithm 15.
    Ed25519,
}

impl DnssecAlgorithm {
    /// The name used in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DnssecAlgorithm::EcdsaP256Sha256 => "ecdsap256sha256",
            DnssecAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The algorithm of a configuration name (case-insensitive; the
    /// IANA number works too).
    pub fn parse(s: &str) -> Option<DnssecAlgorithm> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsap256sha256" | "13" => Some(DnssecAlgorithm::EcdsaP256Sha256),
            "ed25519" | "15" => Some(DnssecAlgorithm::Ed25519),
            _ => None,
        }
    }
}

/// `[[zone]] dnssec`: how a signed zone is signed.
#[derive(Debug, Clone, PartialEq)]
pub struct Dnssec {
    /// Algorithm of the key generated at first start.
    pub algorithm: DnssecAlgorithm,
    /// Key directory; `None`: `data_dir/keys/<zone>/`.
    pub keys: Option<std::path::PathBuf>,
    /// How long a signature is valid from its inception, in days.
    pub signature_validity_days: u32,
    /// The window signatures' inception is aligned to, in days: the same
    /// RRset signs the same way for this long.
    pub refresh_days: u32,
    /// TTL of the DNSKEY RRset: how long validators keep a key set, so
    /// how long a rollover step must wait before the next (RFC 7583).
    pub dnskey_ttl: u32,
}

impl Default for Dnssec {
    fn default() -> Dnssec {
        Dnssec {
            algorithm: DnssecAlgorithm::EcdsaP256Sha256,
            keys: None,
            signature_validity_days: 14,
            refresh_days: 7,
            dnskey_ttl: 3600,
        }
    }
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
    /// DNSSEC signing, when the zone is signed.
    pub dnssec: Option<Dnssec>,
}

/// Lower-cases and adds the trailing dot.
pub fn fqdn(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// Checks the zones; `--zone` (`over_zone`) replaces them with one of that
/// name, and with none configured, `switchyard.test.` is served. Returns
/// the zones and records that check, and a message for each that does not
/// (left out), so that every bad record is reported, not only the first.
pub(super) fn check(raw: Vec<RawZone>, over_zone: Option<&str>) -> (Vec<Zone>, Vec<String>) {
    let mut raw_zones = raw;
    if let Some(z) = over_zone {
        raw_zones = vec![RawZone::bare(
            z.to_string(),
            raw_zones.first().and_then(|z| z.ttl),
        )];
    }
    if raw_zones.is_empty() {
        raw_zones.push(RawZone::bare("switchyard.test.".into(), None));
    }
    let mut zones: Vec<Zone> = Vec::new();
    let mut errors = Vec::new();
    for (i, z) in raw_zones.into_iter().enumerate() {
        match check_zone(z, i, &mut errors) {
            Ok(zone) if zones.iter().any(|b| b.name == zone.name) => {
                errors.push(format!(
                    "zone[{i}].name: '{}' is configured twice",
                    zone.name
                ));
            }
            Ok(zone) => zones.push(zone),
            Err(e) => errors.push(e),
        }
    }
    (zones, errors)
}

/// One zone; its records that do not check are left out, each with its
/// message in `errors`.
fn check_zone(z: RawZone, i: usize, errors: &mut Vec<String>) -> Result<Zone, String> {
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
    let dnssec = match z.dnssec {
        None | Some(RawDnssec::On(false)) => None,
        Some(RawDnssec::On(true)) => Some(Dnssec::default()),
        Some(RawDnssec::Settings(raw)) => Some(check_dnssec(raw, &key)?),
    };
    let ttl = z.ttl.unwrap_or(20);
    let mut records = Vec::new();
    for (j, r) in z.records.into_iter().enumerate() {
        match check_record(r, &format!("{key}.records[{j}]"), &name, ttl) {
            Ok(record) => records.push(record),
            Err(e) => errors.push(e),
        }
    }
    Ok(Zone {
        name,
        ttl,
        ns,
        soa,
        records,
        dnssec,
    })
}

/// `[zone.dnssec]` as a table: every field optional, checked.
fn check_dnssec(raw: RawDnssecSettings, key: &str) -> Result<Dnssec, String> {
    let mut d = Dnssec::default();
    if let Some(a) = raw.algorithm {
        d.algorithm = DnssecAlgorithm::parse(&a).ok_or_else(|| {
            format!("{key}.dnssec.algorithm: '{a}' is not one of ecdsap256sha256, ed25519")
        })?;
    }
    d.keys = raw.keys;
    if let Some(v) = raw.signature_validity_days {
        d.signature_validity_days = v;
    }
    if let Some(r) = raw.refresh_days {
        d.refresh_days = r;
    }
    if let Some(t) = raw.dnskey_ttl {
        d.dnskey_ttl = t;
    }
    if d.refresh_days == 0 {
        return Err(format!("{key}.dnssec.refresh_days: must be at least 1"));
    }
    // A signature made at the end of a window must still be valid for
    // a while after it: validity covers the window and as much again.
    if d.signature_validity_days < 2 * d.refresh_days {
        return Err(format!(
            "{key}.dnssec.signature_validity_days: {} must be at least twice refresh_days ({})",
            d.signature_validity_days, d.refresh_days
        ));
    }
    Ok(d)
}

fn check_record(r: RawRecord, rkey: &str, zone: &str, ttl: u32) -> Result<StaticRecord, String> {
    let owner = if r.name == "@" {
        zone.to_string()
    } else if r.name.ends_with('.') {
        fqdn(&r.name)
    } else {
        fqdn(&format!("{}.{zone}", r.name))
    };
    if !owner.ends_with(zone) {
        return Err(format!("{rkey}.name: '{owner}' is outside zone '{zone}'"));
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
    Ok(StaticRecord {
        name: owner,
        rtype,
        value: r.value,
        ttl: r.ttl.unwrap_or(ttl),
        priority: r.priority.unwrap_or(10),
    })
}
