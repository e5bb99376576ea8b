//! The zones served: their apex records, static records and the names
//! that belong to apps, built once from the configuration and looked up
//! without I/O for every query.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::config::{Config, Zone};
use crate::dnssec::keydir::unix_now;
use crate::dnssec::sign::{Signers, ZoneSigner};
use crate::engine::apps::{AppSet, LoadedApp};

/// One zone, with its records built once.
#[derive(Debug)]
pub struct ZoneData {
    origin: LowerName,
    labels: u8,
    /// Default TTL of the zone's answers.
    pub ttl: u32,
    /// The apex SOA (in negative answers' authority section).
    pub soa: Record,
    ns: Vec<Record>,
    /// The owners of static records, and with no records the names
    /// between one and the apex that own nothing themselves (empty
    /// non-terminals: NODATA, not NXDOMAIN, RFC 8020). One map, so a name
    /// that is neither (an app's) is hashed once; hashbrown's default
    /// hasher, as SipHash costs a tenth of a query here.
    names: hashbrown::HashMap<LowerName, Vec<Record>>,
    /// How the zone is signed, when it is.
    pub signer: Option<Arc<ZoneSigner>>,
}

/// Every zone served, built from the configuration.
#[derive(Debug, Default)]
pub struct ZoneSet {
    zones: Vec<ZoneData>,
}

/// What a query name is, decided without I/O.
#[derive(Debug)]
pub enum Plan<'z> {
    /// Outside every zone.
    Refused,
    /// Under a zone, but no such name.
    NxDomain(&'z ZoneData),
    /// Records to answer with (empty: NODATA).
    Records(&'z ZoneData, Vec<Record>),
    /// An app name; run the app when the type is one a decision can give.
    App {
        /// The zone.
        zone: &'z ZoneData,
        /// The app serving the name.
        app: &'z Arc<LoadedApp>,
        /// Labels in front of the app name (lower case, dot-joined).
        prefix: String,
    },
}

/// Why the configured zones do not make a zone set.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A name that is not a DNS name.
    #[error("'{name}': {error}")]
    Name {
        /// The name as configured.
        name: String,
        /// Why DNS cannot carry it.
        error: hickory_proto::ProtoError,
    },
    /// A static record value that is not the address its type needs.
    #[error("{0}")]
    Address(std::net::AddrParseError),
    /// A static record type that is not served.
    #[error("unsupported static record type {0}")]
    RecordType(String),
}

fn name(s: &str) -> Result<Name, ZoneError> {
    Name::from_ascii(s).map_err(|error| ZoneError::Name {
        name: s.to_string(),
        error,
    })
}

impl ZoneData {
    /// The zone's apex name.
    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// The types `name` (a name of this zone that is not an app's) owns:
    /// the apex's SOA, NS and (signed) DNSKEY, and static records. What a
    /// NODATA answer's NSEC bitmap lists.
    pub fn types_at(&self, name: &LowerName) -> Vec<RecordType> {
        let mut types = Vec::new();
        if name.num_labels() == self.labels {
            types.extend([RecordType::SOA, RecordType::NS]);
            if self.signer.is_some() {
                types.push(RecordType::DNSKEY);
            }
        }
        if let Some(rs) = self.names.get(name) {
            types.extend(rs.iter().map(Record::record_type));
        }
        types.sort_unstable();
        types.dedup();
        types
    }

    /// The closest encloser of `qname`, a name of this zone that does not
    /// exist (RFC 5155 §1.3's term): its longest ancestor that does, the
    /// apex at the least. An app's name exists; names under it are the
    /// app's and never reach here.
    pub fn closest_encloser(&self, qname: &LowerName, apps: &AppSet) -> Name {
        let mut n = qname.base_name();
        while n.num_labels() > self.labels {
            let app = n.num_labels() == self.labels + 1
                && n.iter()
                    .next()
                    .and_then(|l| std::str::from_utf8(l).ok())
                    .is_some_and(|l| apps.apps.contains_key(l));
            if app || self.names.contains_key(&n) {
                break;
            }
            n = n.base_name();
        }
        Name::from(n)
    }
}

impl ZoneSet {
    /// Builds the zones of `config` (already validated); a signed zone
    /// takes its signer from `signers`.
    pub fn from_config(config: &Config, signers: &Signers) -> Result<ZoneSet, ZoneError> {
        let mut zones = Vec::new();
        for z in &config.zones {
            let mut zone = build_zone(z)?;
            zone.signer = signers.zones.get(&z.name).cloned();
            zones.push(zone);
        }
        // Longest origin first, so the most specific zone wins.
        zones.sort_by_key(|z| std::cmp::Reverse(z.labels));
        Ok(ZoneSet { zones })
    }

    /// The signed zones: apex and signer.
    pub fn signed(&self) -> impl Iterator<Item = (&LowerName, &Arc<ZoneSigner>)> {
        self.zones
            .iter()
            .filter_map(|z| z.signer.as_ref().map(|s| (&z.origin, s)))
    }

    /// Decides what `qname` is.
    pub fn plan<'z>(&'z self, qname: &LowerName, qtype: RecordType, apps: &'z AppSet) -> Plan<'z> {
        let Some(zone) = self.zones.iter().find(|z| z.origin.zone_of(qname)) else {
            return Plan::Refused;
        };
        let owned = zone.names.get(qname);
        // `zone_of` matched: the apex is the name with as many labels.
        if qname.num_labels() == zone.labels {
            let mut out = Vec::new();
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                out.push(zone.soa.clone());
            }
            if matches!(qtype, RecordType::NS | RecordType::ANY) {
                out.extend(zone.ns.iter().cloned());
            }
            if let (RecordType::DNSKEY | RecordType::ANY, Some(signer)) = (qtype, &zone.signer) {
                out.extend(signer.dnskey_records(
                    &zone.soa.name,
                    signer.settings.dnskey_ttl,
                    unix_now(),
                ));
            }
            if let Some(rs) = owned {
                out.extend(
                    rs.iter()
                        .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                        .cloned(),
                );
            }
            return Plan::Records(zone, out);
        }
        // A static owner, or an empty non-terminal (no records: NODATA).
        if let Some(rs) = owned {
            let cname: Vec<Record> = rs
                .iter()
                .filter(|r| r.record_type() == RecordType::CNAME)
                .cloned()
                .collect();
            if !cname.is_empty() {
                return Plan::Records(zone, cname);
            }
            let out = rs
                .iter()
                .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                .cloned()
                .collect();
            return Plan::Records(zone, out);
        }
        // Labels in front of the origin: the last is the app, the rest the
        // prefix. Only the prefix allocates, and only when there is one.
        let n = (qname.num_labels() - zone.labels) as usize;
        if n == 0 {
            return Plan::NxDomain(zone);
        }
        let mut app_label = [0u8; 63];
        let mut prefix = String::new();
        if n > 1 {
            prefix.reserve(qname.len());
        }
        for (i, label) in qname.iter().take(n).enumerate() {
            if i + 1 == n {
                let len = label.len().min(app_label.len());
                app_label[..len].copy_from_slice(&label[..len]);
                app_label[..len].make_ascii_lowercase();
                let Ok(name) = std::str::from_utf8(&app_label[..len]) else {
                    return Plan::NxDomain(zone);
                };
                return match apps.apps.get(name) {
                    Some(app) => Plan::App { zone, app, prefix },
                    None => Plan::NxDomain(zone),
                };
            }
            if !prefix.is_empty() {
                prefix.push('.');
            }
            // A `LowerName`'s labels are lower-case already; a valid
            // UTF-8 label is borrowed, not copied.
            prefix.push_str(&String::from_utf8_lossy(label));
        }
        Plan::NxDomain(zone)
    }
}

/// Checks that one configured zone makes zone data (names DNS can carry,
/// record values of their types), as [`ZoneSet::from_config`] would build
/// it: the start-up and reload checks run it per zone, so that every bad
/// zone is reported, not only the first.
pub fn check_zone(z: &Zone) -> Result<(), ZoneError> {
    build_zone(z).map(|_| ())
}

fn build_zone(z: &Zone) -> Result<ZoneData, ZoneError> {
    let origin = name(&z.name)?;
    let soa_rdata = SOA::new(
        name(&z.soa.mname)?,
        name(&z.soa.rname)?,
        z.soa.serial,
        z.soa.refresh,
        z.soa.retry,
        z.soa.expire,
        z.soa.minimum,
    );
    // RFC 2308 §5: the negative-caching TTL is min(SOA TTL, SOA MINIMUM);
    // serving the SOA with TTL = MINIMUM makes both the same.
    let soa = Record::from_rdata(origin.clone(), z.soa.minimum, RData::SOA(soa_rdata));
    let mut ns = Vec::new();
    for n in &z.ns {
        ns.push(Record::from_rdata(
            origin.clone(),
            z.ttl.max(3600),
            RData::NS(NS(name(n)?)),
        ));
    }
    let mut names: hashbrown::HashMap<LowerName, Vec<Record>> = hashbrown::HashMap::new();
    for r in &z.records {
        let owner = name(&r.name)?;
        let rdata = match r.rtype.as_str() {
            "A" => RData::A(A(r
                .value
                .parse::<Ipv4Addr>()
                .map_err(ZoneError::Address)?)),
            "AAAA" => RData::AAAA(AAAA(
                r.value.parse::<Ipv6Addr>().map_err(ZoneError::Address)?,
            )),
            "CNAME" => RData::CNAME(CNAME(name(&crate::config::fqdn(&r.value))?)),
            "MX" => RData::MX(MX::new(r.priority, name(&crate::config::fqdn(&r.value))?)),
            "TXT" => RData::TXT(TXT::new(vec![r.value.clone()])),
            other => return Err(ZoneError::RecordType(other.to_string())),
        };
        names
            .entry(LowerName::from(&owner))
            .or_default()
            .push(Record::from_rdata(owner, r.ttl, rdata));
    }
    let mut ents = Vec::new();
    for owner in names.keys() {
        let mut n = owner.base_name();
        while n.num_labels() > origin.num_labels() {
            if !names.contains_key(&n) {
                ents.push(n.clone());
            }
            n = n.base_name();
        }
    }
    for ent in ents {
        names.entry(ent).or_default();
    }
    Ok(ZoneData {
        labels: origin.num_labels(),
        origin: LowerName::from(&origin),
        ttl: z.ttl,
        soa,
        ns,
        names,
        signer: None,
    })
}
