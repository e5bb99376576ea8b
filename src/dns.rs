//! The authoritative DNS front end: a hickory-server `RequestHandler` of our
//! own, because hickory's `Catalog` never shows a handler the EDNS options
//! and so cannot steer by client subnet (shared/notes/dns-http-reload.md).
//!
//! The handler works in three steps, kept apart so each can be read alone:
//! 1. check the message (opcode, EDNS version, the ECS option) — errors
//!    become rcodes here and nowhere else;
//! 2. [`ZoneSet::plan`] decides what the name is (apex, static record, app
//!    name, nothing) without any I/O;
//! 3. for app names, the decision runs on the JS workers and
//!    [`decision_records`] turns it into records.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::apps::AppRegistry;
use crate::config::{Config, Zone};
use crate::geo::Geo;
use crate::metrics::Counters;
use crate::openmix::{Answer, DataSnapshot, Request as AppRequest};
use crate::steer::{self, Outcome};
use crate::workers::Workers;

/// One zone, with its records built once.
#[derive(Debug)]
pub struct ZoneData {
    origin: LowerName,
    labels: u8,
    ttl: u32,
    soa: Record,
    ns: Vec<Record>,
    statics: HashMap<LowerName, Vec<Record>>,
    /// Names between a static record and the apex that own nothing
    /// themselves (empty non-terminals): NODATA, not NXDOMAIN (RFC 8020).
    ents: std::collections::HashSet<LowerName>,
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
        /// App name.
        app: String,
        /// Labels in front of the app name.
        prefix: String,
    },
}

fn name(s: &str) -> Result<Name, String> {
    Name::from_ascii(s).map_err(|e| format!("'{s}': {e}"))
}

impl ZoneSet {
    /// Builds the zones of `config` (already validated).
    pub fn from_config(config: &Config) -> Result<ZoneSet, String> {
        let mut zones = Vec::new();
        for z in &config.zones {
            zones.push(build_zone(z)?);
        }
        // Longest origin first, so the most specific zone wins.
        zones.sort_by_key(|z| std::cmp::Reverse(z.labels));
        Ok(ZoneSet { zones })
    }

    /// Decides what `qname` is.
    pub fn plan(&self, qname: &LowerName, qtype: RecordType, apps: &AppRegistry) -> Plan<'_> {
        let Some(zone) = self.zones.iter().find(|z| z.origin.zone_of(qname)) else {
            return Plan::Refused;
        };
        if *qname == zone.origin {
            let mut out = Vec::new();
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                out.push(zone.soa.clone());
            }
            if matches!(qtype, RecordType::NS | RecordType::ANY) {
                out.extend(zone.ns.iter().cloned());
            }
            if let Some(rs) = zone.statics.get(qname) {
                out.extend(
                    rs.iter()
                        .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                        .cloned(),
                );
            }
            return Plan::Records(zone, out);
        }
        if let Some(rs) = zone.statics.get(qname) {
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
        if zone.ents.contains(qname) {
            return Plan::Records(zone, Vec::new());
        }
        // Labels in front of the origin: the last is the app, the rest the prefix.
        let n = (qname.num_labels() - zone.labels) as usize;
        let full = Name::from(qname.clone());
        let labels: Vec<String> = full
            .iter()
            .take(n)
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect();
        let Some((app, prefix)) = labels.split_last() else {
            return Plan::NxDomain(zone);
        };
        if apps.get(app).is_some() {
            return Plan::App {
                zone,
                app: app.clone(),
                prefix: prefix.join("."),
            };
        }
        Plan::NxDomain(zone)
    }
}

fn build_zone(z: &Zone) -> Result<ZoneData, String> {
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
    let mut statics: HashMap<LowerName, Vec<Record>> = HashMap::new();
    for r in &z.records {
        let owner = name(&r.name)?;
        let rdata = match r.rtype.as_str() {
            "A" => RData::A(A(r.value.parse::<Ipv4Addr>().map_err(|e| e.to_string())?)),
            "AAAA" => RData::AAAA(AAAA(
                r.value.parse::<Ipv6Addr>().map_err(|e| e.to_string())?,
            )),
            "CNAME" => RData::CNAME(CNAME(name(&crate::config::fqdn(&r.value))?)),
            "MX" => RData::MX(MX::new(r.priority, name(&crate::config::fqdn(&r.value))?)),
            "TXT" => RData::TXT(TXT::new(vec![r.value.clone()])),
            other => return Err(format!("unsupported static record type {other}")),
        };
        statics
            .entry(LowerName::from(&owner))
            .or_default()
            .push(Record::from_rdata(owner, r.ttl, rdata));
    }
    let mut ents = std::collections::HashSet::new();
    for owner in statics.keys() {
        let mut n = owner.base_name();
        while n.num_labels() > origin.num_labels() {
            if !statics.contains_key(&n) {
                ents.insert(n.clone());
            }
            n = n.base_name();
        }
    }
    Ok(ZoneData {
        labels: origin.num_labels(),
        origin: LowerName::from(&origin),
        ttl: z.ttl,
        soa,
        ns,
        statics,
        ents,
    })
}

/// Records for a decision, for query type `qtype`, owned by `owner`
/// (the question's name in its own case). A CNAME answers any type; only
/// the first CNAME is used, as a name can have one.
pub fn decision_records(
    answers: &[Answer],
    qtype: RecordType,
    owner: &Name,
    ttl: u32,
) -> Vec<Record> {
    if let Some(Answer::Cname(target)) = answers.iter().find(|a| matches!(a, Answer::Cname(_))) {
        let Ok(target) = Name::from_ascii(crate::config::fqdn(target)) else {
            return Vec::new();
        };
        return vec![Record::from_rdata(
            owner.clone(),
            ttl,
            RData::CNAME(CNAME(target)),
        )];
    }
    answers
        .iter()
        .filter_map(|a| match (a, qtype) {
            (Answer::A(ip), RecordType::A | RecordType::ANY) => Some(RData::A(A(*ip))),
            (Answer::Aaaa(ip), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*ip))),
            _ => None,
        })
        .map(|rd| Record::from_rdata(owner.clone(), ttl, rd))
        .collect()
}

/// Mask `addr` to its first `prefix` bits.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

/// The client subnet of a query, checked as RFC 7871 §6 asks: "If the
/// ADDRESS field has bits set beyond SOURCE PREFIX-LENGTH, the server
/// SHOULD return FORMERR" (hickory does not check this).
pub fn check_ecs(cs: &ClientSubnet) -> Result<(), &'static str> {
    let max = match cs.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if cs.source_prefix() > max {
        return Err("source prefix longer than the address");
    }
    if masked(cs.addr(), cs.source_prefix()) != cs.addr() {
        return Err("address bits set beyond the source prefix");
    }
    Ok(())
}

/// An IPv4-mapped IPv6 address as IPv4 (with its prefix), else unchanged.
fn canonical(addr: IpAddr, prefix: u8) -> (IpAddr, u8) {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (addr, prefix),
        },
        v4 => (v4, prefix),
    }
}

/// The DNS request handler.
pub struct DnsHandler {
    /// Zones (swapped on SIGHUP).
    pub zones: ArcSwap<ZoneSet>,
    /// Apps.
    pub apps: Arc<AppRegistry>,
    /// GeoIP.
    pub geo: Arc<Geo>,
    /// Data apps read.
    pub data: Arc<ArcSwap<DataSnapshot>>,
    /// Where decisions run.
    pub workers: Arc<Workers>,
    /// Largest UDP payload offered.
    pub max_payload: u16,
    /// Counters.
    pub counters: Arc<Counters>,
}

impl DnsHandler {
    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        mut handle: R,
        edns: Option<&Edns>,
        rcode: ResponseCode,
        answers: &[Record],
        soa: Option<&Record>,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = rcode != ResponseCode::Refused
            && rcode != ResponseCode::FormErr
            && rcode != ResponseCode::NotImp;
        metadata.response_code = rcode;
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(e) = edns {
            builder.edns(e);
        }
        let response = builder.build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            soa,
            std::iter::empty(),
        );
        self.counters.dns_response(request.protocol(), rcode);
        match handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, src = %request.src(), "failed to send DNS response");
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                })
            }
        }
    }

    async fn error<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
        edns: Option<&Edns>,
        rcode: ResponseCode,
    ) -> ResponseInfo {
        let mut e2;
        let mut edns = edns;
        if rcode.high() != 0
            && let Some(e) = edns
        {
            e2 = e.clone();
            e2.set_rcode_high(rcode.high());
            edns = Some(&e2);
        }
        self.send(request, handle, edns, rcode, &[], None).await
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        // Response EDNS: only when the query had it; payload = the client's,
        // at least 512, at most our cap; never more than the client said.
        let mut resp_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, self.max_payload));
            e.set_version(0);
            e
        });
        if request.metadata.message_type != MessageType::Query {
            return self
                .error(request, handle, resp_edns.as_ref(), ResponseCode::FormErr)
                .await;
        }
        if request.metadata.op_code != OpCode::Query {
            return self
                .error(request, handle, resp_edns.as_ref(), ResponseCode::NotImp)
                .await;
        }
        if let Some(req) = request.edns.as_ref()
            && req.version() > 0
        {
            return self
                .error(request, handle, resp_edns.as_ref(), ResponseCode::BADVERS)
                .await;
        }
        let Ok(info) = request.request_info() else {
            return self
                .error(request, handle, resp_edns.as_ref(), ResponseCode::FormErr)
                .await;
        };
        let qname = info.query.name().clone();
        let qtype = info.query.query_type();
        let owner = info.query.original().name().clone();
        // Only the Internet class is served; zone transfers are not offered
        // (RFC 5936 §4.2: REFUSED when a transfer is not allowed).
        if info.query.query_class() != hickory_proto::rr::DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return self
                .error(request, handle, resp_edns.as_ref(), ResponseCode::Refused)
                .await;
        }

        // The client subnet, checked; `None` when absent.
        let ecs = match request
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
        {
            Some(EdnsOption::Subnet(cs)) => {
                if let Err(why) = check_ecs(cs) {
                    tracing::debug!(src = %request.src(), why, "malformed ECS option");
                    return self
                        .error(request, handle, resp_edns.as_ref(), ResponseCode::FormErr)
                        .await;
                }
                Some(*cs)
            }
            _ => None,
        };
        // Echo ECS with scope 0 unless a geo-dependent answer sets it.
        let echo = |e: &mut Option<Edns>, scope: u8| {
            if let (Some(e), Some(cs)) = (e.as_mut(), ecs) {
                e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                    cs.addr(),
                    cs.source_prefix(),
                    scope,
                )));
            }
        };

        let zones = self.zones.load();
        let plan = zones.plan(&qname, qtype, &self.apps);
        match plan {
            Plan::Refused => {
                echo(&mut resp_edns, 0);
                self.error(request, handle, resp_edns.as_ref(), ResponseCode::Refused)
                    .await
            }
            Plan::NxDomain(zone) => {
                echo(&mut resp_edns, 0);
                self.send(
                    request,
                    handle,
                    resp_edns.as_ref(),
                    ResponseCode::NXDomain,
                    &[],
                    Some(&zone.soa),
                )
                .await
            }
            Plan::Records(zone, mut records) => {
                echo(&mut resp_edns, 0);
                // Answer in the question's case (0x20 randomisation).
                for r in records.iter_mut() {
                    if LowerName::from(&r.name) == qname {
                        r.name = owner.clone();
                    }
                }
                let soa = records.is_empty().then_some(&zone.soa);
                self.send(
                    request,
                    handle,
                    resp_edns.as_ref(),
                    ResponseCode::NoError,
                    &records,
                    soa,
                )
                .await
            }
            Plan::App { zone, app, prefix } => {
                let qt = match qtype {
                    RecordType::A => "A",
                    RecordType::AAAA => "AAAA",
                    RecordType::CNAME => "CNAME",
                    _ => {
                        echo(&mut resp_edns, 0);
                        return self
                            .send(
                                request,
                                handle,
                                resp_edns.as_ref(),
                                ResponseCode::NoError,
                                &[],
                                Some(&zone.soa),
                            )
                            .await;
                    }
                };
                let Some(loaded) = self.apps.get(&app) else {
                    echo(&mut resp_edns, 0);
                    return self
                        .send(
                            request,
                            handle,
                            resp_edns.as_ref(),
                            ResponseCode::NXDomain,
                            &[],
                            Some(&zone.soa),
                        )
                        .await;
                };
                let (app_request, scope) = self.app_request(request.src().ip(), ecs, prefix, qt);
                let zone_ttl = zone.ttl;
                let steered = self
                    .workers
                    .steer(loaded.clone(), app_request, self.data.load_full(), zone_ttl)
                    .await;
                self.counters.decision(&loaded, &steered);
                // A fallback does not depend on the client: scope 0.
                echo(
                    &mut resp_edns,
                    if steered.outcome == Outcome::App {
                        scope
                    } else {
                        0
                    },
                );
                if let Outcome::Failed(_) = steered.outcome {
                    return self
                        .error(request, handle, resp_edns.as_ref(), ResponseCode::ServFail)
                        .await;
                }
                let records = if steered.decision.empty {
                    Vec::new()
                } else {
                    decision_records(&steered.decision.answers, qtype, &owner, steered.ttl)
                };
                let soa = records.is_empty().then_some(&zone.soa);
                self.send(
                    request,
                    handle,
                    resp_edns.as_ref(),
                    ResponseCode::NoError,
                    &records,
                    soa,
                )
                .await
            }
        }
    }
}

impl DnsHandler {
    /// Builds the app's request: resolver fields from the packet source,
    /// client fields from the ECS subnet when present. Returns the ECS scope.
    fn app_request(
        &self,
        src: IpAddr,
        ecs: Option<ClientSubnet>,
        prefix: String,
        qtype: &str,
    ) -> (AppRequest, u8) {
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        let resolver = self.geo.lookup(src);
        let (client_ip, client, scope) = match ecs {
            Some(cs) if cs.source_prefix() > 0 => {
                let (addr, source) = canonical(cs.addr(), cs.source_prefix());
                let g = self.geo.lookup(addr);
                // Scope: the matched network's prefix, never more than the
                // source prefix (in the family the client sent).
                let mapped_extra = cs.source_prefix() - source;
                let scope = g.prefix_len.min(source) + mapped_extra;
                (addr, g, scope)
            }
            _ => (src, resolver.clone(), 0),
        };
        let req = AppRequest {
            ip_address: Some(client_ip),
            client: steer::location(client),
            resolver_ip_address: Some(src),
            resolver: steer::location(resolver),
            hostname_prefix: prefix,
            query_type: qtype.to_string(),
            ..AppRequest::default()
        };
        (req, scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_checks() {
        assert!(check_ecs(&ClientSubnet::new("1.2.0.0".parse().unwrap(), 16, 0)).is_ok());
        assert!(check_ecs(&ClientSubnet::new("1.2.255.0".parse().unwrap(), 20, 0)).is_err());
        assert!(check_ecs(&ClientSubnet::new("2001:db8::".parse().unwrap(), 32, 0)).is_ok());
        assert!(check_ecs(&ClientSubnet::new("2001:db8::1".parse().unwrap(), 64, 0)).is_err());
    }

    #[test]
    fn mapped_is_ipv4() {
        let (a, p) = canonical("::ffff:198.51.100.0".parse().unwrap(), 120);
        assert_eq!((a, p), ("198.51.100.0".parse().unwrap(), 24));
    }

    #[test]
    fn cname_wins_and_types_filter() {
        let owner = Name::from_ascii("WwW.App.Zone.").unwrap();
        let answers = vec![
            Answer::A("192.0.2.1".parse().unwrap()),
            Answer::Aaaa("2001:db8::1".parse().unwrap()),
        ];
        assert_eq!(
            decision_records(&answers, RecordType::A, &owner, 5).len(),
            1
        );
        assert_eq!(
            decision_records(&answers, RecordType::AAAA, &owner, 5).len(),
            1
        );
        assert!(decision_records(&answers, RecordType::CNAME, &owner, 5).is_empty());
        let c = vec![Answer::Cname("x.example".into())];
        let r = decision_records(&c, RecordType::AAAA, &owner, 5);
        assert_eq!(r[0].record_type(), RecordType::CNAME);
        assert_eq!(r[0].name.to_ascii(), "WwW.App.Zone.");
    }
}
