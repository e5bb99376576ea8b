//! The authoritative DNS front end, written against hickory-proto's wire
//! types with transports of our own ([`udp`], [`tcp`]).
//!
//! Why not hickory-server: its catalog never shows a handler the EDNS
//! options (ECS needs them; shared/notes/dns-http-reload.md), and its UDP
//! path spawns a task and crosses a channel for every query, which costs
//! about a sixth of a static server's throughput (shared/notes/js-host.md:
//! 0.87 × NSD against 1.03 × for a plain loop). Here one function takes
//! the bytes of a query and writes the bytes of its reply into a reused
//! buffer, so the UDP loop can answer a whole batch of queries between two
//! system calls.
//!
//! [`DnsHandler::handle`] works in three steps, kept apart so each can be
//! read alone:
//! 1. check the message (opcode, EDNS version, the ECS option): errors
//!    become rcodes here and nowhere else;
//! 2. [`ZoneSet::plan`] decides what the name is (apex, static record, app
//!    name, nothing) without any I/O;
//! 3. for app names, the decision comes from the memo (answered at once) or
//!    runs on the JS workers ([`Handled::Undecided`], finished by
//!    [`DnsHandler::decide`]), and [`decision_records`] turns it into records;
//! 4. every reply passes [`DnsHandler::deliver`], where response rate
//!    limiting ([`rrl`]) may truncate or drop a UDP reply. A valid DNS
//!    cookie ([`cookies`], checked in step 1) exempts its query.

pub mod cookies;
mod locate;
mod mmsg;
pub mod rrl;
mod signed;
pub mod tcp;
pub mod udp;
mod wire;
mod zones;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode, emit_message_parts,
};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use crate::dnssec::keydir::unix_now;
use crate::dnssec::sign::{SignError, ZoneSigner};
use crate::engine::apps::{AppRegistry, LoadedApp};
use crate::engine::steer::{Outcome, Steered};
use crate::engine::workers::Workers;
use crate::geo::Geo;
use crate::metrics::Counters;
use crate::openmix::{Answer, DataSnapshot, Request as AppRequest};

pub use zones::{Plan, ZoneData, ZoneError, ZoneSet, check_zone};

use cookies::Event as CookieEvent;
use rrl::{Action as RrlAction, Class, RateLimiter, Subject, Verdict};

/// The transport a query came over: it sets how large the reply may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the EDNS payload size (capped by the server).
    Udp,
    /// TCP: up to 65,535 bytes; never truncated.
    Tcp,
}

/// What became of one query in [`DnsHandler::handle`].
pub enum Handled {
    /// The reply is in the output buffer.
    Reply,
    /// Nothing is sent: shorter than a header, or a response (answering
    /// responses would let the server reflect traffic).
    Drop,
    /// The app must run on a JS worker first: pass this to
    /// [`DnsHandler::decide`] for the reply.
    Undecided(Box<Undecided>),
}

/// A query waiting for its app's decision, with what its reply needs.
pub struct Undecided {
    app: Arc<LoadedApp>,
    request: AppRequest,
    data: Arc<DataSnapshot>,
    zone_ttl: u32,
    scope: u8,
    qtype: RecordType,
    owner: Name,
    soa: Record,
    /// The zone's signer, when it is signed and the query has DO.
    signer: Option<Arc<ZoneSigner>>,
    /// The question section as received, for the fast reply form.
    question: Option<Vec<u8>>,
    reply: Reply,
}

/// How to answer a decision: what the reply needs besides the decision.
struct Answering<'a> {
    /// The question section as received (fast form), if usable.
    question: Option<&'a [u8]>,
    /// ECS scope of an answer that depends on the client.
    scope: u8,
    qtype: RecordType,
    /// The question's name, in its case.
    owner: &'a Name,
    /// The zone's SOA, for NODATA.
    soa: &'a Record,
    /// The zone's signer, when it is signed and the query has DO.
    signer: Option<&'a ZoneSigner>,
}

/// What a reply takes from its query.
struct Reply {
    /// The reply's header fields (id, opcode, RD and CD copied).
    metadata: Metadata,
    /// Questions echoed.
    queries: Vec<Query>,
    /// The reply's EDNS: present only when the query had it.
    edns: Option<Edns>,
    /// The query's client subnet, checked; echoed with a scope.
    ecs: Option<ClientSubnet>,
    /// Where the reply goes and what may stop it.
    to: Delivery,
}

/// Where a reply goes, and what response rate limiting and cookies need
/// to know about it once it is written ([`DnsHandler::deliver`]).
#[derive(Debug, Clone, Copy)]
struct Delivery {
    src: IpAddr,
    transport: Transport,
    /// Rate limiting applies: UDP, a source not exempt, no valid server
    /// cookie.
    limited: bool,
    /// The account key of what the reply is about ([`RateLimiter::subject`]).
    subject: u64,
    /// The COOKIE option for the reply (client cookie and ours).
    cookie: Option<[u8; 24]>,
    /// The query had a client cookie but no valid server cookie of ours.
    unproven: bool,
    /// The question's type, once read (responses are counted by it).
    qtype: Option<RecordType>,
}

/// The defences of UDP replies against reflection: response rate limiting
/// and DNS Cookies, swapped as a whole on SIGHUP.
pub struct Shield {
    /// `[rrl]`, when enabled.
    pub rrl: Option<Arc<RateLimiter>>,
    /// `[cookies]`'s secrets, when enabled.
    pub cookies: Option<cookies::Secrets>,
    /// `[cookies] require_cookies`.
    pub require_cookies: bool,
}

impl Shield {
    /// The shield `config` asks for. The rate limiter of `old` is kept
    /// (with its accounts) when `[rrl]` did not change. Cookies need their
    /// secret resolved first (`serve` does: generated when not set).
    pub fn from_config(config: &crate::config::Config, old: Option<&Shield>) -> Shield {
        let rrl = config.rrl.enabled.then(|| {
            old.and_then(|o| o.rrl.clone())
                .filter(|l| *l.settings() == config.rrl)
                .unwrap_or_else(|| Arc::new(RateLimiter::new(config.rrl.clone())))
        });
        let c = &config.cookies;
        Shield {
            rrl,
            cookies: c
                .secret
                .filter(|_| c.enabled)
                .map(|s| cookies::Secrets::new(s, c.previous_secret)),
            require_cookies: c.require_cookies,
        }
    }
}

/// Unix time in seconds, as a cookie's timestamp holds it.
fn unix_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
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

/// The signer of `zone` when the reply is to be signed: the zone is
/// signed and the query has the DO bit.
fn signing(zone: &ZoneData, dnssec_ok: bool) -> Option<&Arc<ZoneSigner>> {
    zone.signer.as_ref().filter(|_| dnssec_ok)
}

/// The client subnet of a query, checked as RFC 7871 §6 asks: "A server
/// receiving an ECS option that uses either too few or too many ADDRESS
/// octets, or that has non-zero ADDRESS bits set beyond SOURCE
/// PREFIX-LENGTH, SHOULD return FORMERR to reject the packet", and of
/// SCOPE PREFIX-LENGTH: "In queries, it MUST be set to 0". hickory checks
/// none of this, and drops surplus octets while parsing, so `raw_len` is
/// the option's length on the wire ([`ecs_option_len`]).
pub fn check_ecs(cs: &ClientSubnet, raw_len: Option<usize>) -> Result<(), &'static str> {
    let max = match cs.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if cs.source_prefix() > max {
        return Err("source prefix longer than the address");
    }
    let octets = usize::from(cs.source_prefix()).div_ceil(8);
    if raw_len.is_some_and(|n| n != 4 + octets) {
        return Err("address octets past the source prefix");
    }
    if crate::net::clients::masked(cs.addr(), cs.source_prefix()) != cs.addr() {
        return Err("address bits set beyond the source prefix");
    }
    if cs.scope_prefix() != 0 {
        return Err("non-zero scope prefix in a query");
    }
    Ok(())
}

/// Writes into `out` the reply to a message whose opcode is not QUERY,
/// byte for byte as NSD writes it (`query_error` in its `query.c`): the
/// message's own header with QR set, AD cleared, RCODE NOTIMP ("the name
/// server does not support the requested kind of query", RFC 1035 §4.1.1)
/// and every count zero, so no question and no OPT record. Nothing past
/// the header is read. `packet` is at least a header long.
fn not_implemented(packet: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&packet[..4]);
    out[2] |= 0x80;
    out[3] = (out[3] & 0xD0) | ResponseCode::NotImp.low();
    out.extend_from_slice(&[0; 8]);
}

/// The length on the wire of the first client subnet option (code 8) of
/// the OPT record in `packet`, if it has one. Walks the raw message: the
/// question, then every record, reading only names, types and lengths.
pub fn ecs_option_len(packet: &[u8]) -> Option<usize> {
    let mut d = BinDecoder::new(packet);
    let header = Header::read(&mut d).ok()?;
    let u16_at = |d: &mut BinDecoder<'_>| d.read_u16().ok().map(|v| v.unverified());
    for _ in 0..header.counts.queries {
        Name::read(&mut d).ok()?;
        d.read_slice(4).ok()?;
    }
    let records = usize::from(header.counts.answers)
        + usize::from(header.counts.authorities)
        + usize::from(header.counts.additionals);
    for _ in 0..records {
        Name::read(&mut d).ok()?;
        let rtype = u16_at(&mut d)?;
        d.read_slice(6).ok()?; // class, TTL
        let rdlen = usize::from(u16_at(&mut d)?);
        let rdata = d.read_slice(rdlen).ok()?.unverified();
        if rtype != u16::from(RecordType::OPT) {
            continue;
        }
        let mut o = BinDecoder::new(rdata);
        while !o.is_empty() {
            let code = u16_at(&mut o)?;
            let len = usize::from(u16_at(&mut o)?);
            o.read_slice(len).ok()?;
            if code == u16::from(EdnsCode::Subnet) {
                return Some(len);
            }
        }
        return None;
    }
    None
}

impl Reply {
    fn to(query: &Metadata, queries: Vec<Query>, edns: Option<Edns>, mut to: Delivery) -> Reply {
        to.qtype = queries.first().map(Query::query_type);
        Reply {
            metadata: Metadata::response_from_request(query),
            queries,
            edns,
            ecs: None,
            to,
        }
    }
}

/// The DNS request handler, shared by every transport and thread.
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
    /// Rate limiting and cookies (swapped on SIGHUP).
    pub shield: ArcSwap<Shield>,
    /// Replies rate limiting limited.
    pub rrl_counts: rrl::Counts,
    /// COOKIE options seen.
    pub cookie_counts: cookies::Counts,
}

impl DnsHandler {
    /// Answers one query: the reply goes into `out` (cleared first), unless
    /// the query is dropped or waits for a JS worker.
    pub fn handle(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Handled {
        out.clear();
        // Shorter than a header: there is no ID to answer to.
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            return Handled::Drop;
        };
        if header.metadata.message_type == MessageType::Response {
            return Handled::Drop;
        }
        let guard = self.shield.load();
        let shield: &Shield = &guard;
        let mut to = Delivery {
            src: src.ip(),
            transport,
            limited: transport == Transport::Udp
                && shield.rrl.as_ref().is_some_and(|l| !l.exempt(src.ip())),
            subject: 0,
            cookie: None,
            unproven: false,
            qtype: None,
        };
        // The opcode comes before anything else is read: another opcode may
        // give the rest of the message another meaning (NSD's words), so
        // neither its counts nor its sections can make it a FORMERR.
        if header.metadata.op_code != OpCode::Query {
            not_implemented(packet, out);
            return self.deliver(shield, &to, ResponseCode::NotImp, out);
        }
        // A query has exactly one question; checked before decoding, since
        // the decoder reserves room for as many as the header claims.
        if header.counts.queries != 1 {
            let reply = Reply::to(&header.metadata, Vec::new(), None, to);
            return self.emit(shield, reply, ResponseCode::FormErr, None, &[], &[], out);
        }
        let message = match Message::read(&mut BinDecoder::new(packet)) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%src, error = %e, "malformed DNS message");
                let reply = Reply::to(&header.metadata, Vec::new(), None, to);
                return self.emit(shield, reply, ResponseCode::FormErr, None, &[], &[], out);
            }
        };
        // Response EDNS: only when the query had it; payload = the client's,
        // at least 512, at most our cap.
        let resp_edns = message.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, self.max_payload));
            e.set_version(0);
            // RFC 3225 §3: the DO bit is copied into the response.
            e.set_dnssec_ok(req.flags().dnssec_ok);
            e
        });
        let Message {
            metadata,
            queries,
            edns,
            ..
        } = message;
        if edns.as_ref().is_some_and(|e| e.version() > 0) {
            let reply = Reply::to(&metadata, queries, resp_edns, to);
            return self.emit(shield, reply, ResponseCode::BADVERS, None, &[], &[], out);
        }
        // DNS Cookies (RFC 7873 §5.2): a bad length is FORMERR; a client
        // cookie gets ours back; a valid server cookie exempts the query
        // from rate limiting.
        let cookie_option = edns.as_ref().and_then(|e| e.option(EdnsCode::Cookie));
        if let (Some(secrets), Some(EdnsOption::Unknown(_, data))) =
            (shield.cookies.as_ref(), cookie_option)
        {
            match cookies::parse(data) {
                Err(why) => {
                    tracing::debug!(%src, why, "malformed COOKIE option");
                    self.cookie_counts.add(CookieEvent::Malformed);
                    let reply = Reply::to(&metadata, queries, resp_edns, to);
                    return self.emit(shield, reply, ResponseCode::FormErr, None, &[], &[], out);
                }
                Ok(presented) => {
                    let checked = secrets.check(presented, src.ip(), unix_secs());
                    to.cookie = Some(checked.reply);
                    self.cookie_counts.add(match (checked.valid, presented) {
                        (true, _) => CookieEvent::Valid,
                        (false, cookies::Presented::Client(_)) => CookieEvent::ClientOnly,
                        (false, cookies::Presented::Both(..)) => CookieEvent::Invalid,
                    });
                    to.limited &= !checked.valid;
                    to.unproven = !checked.valid;
                }
            }
        }
        let mut reply = Reply::to(&metadata, queries, resp_edns, to);
        let question = &reply.queries[0];
        let qtype = question.query_type();
        let owner = question.name().clone();
        // Only the Internet class is served; zone transfers are not offered
        // (RFC 5936 §4.2: REFUSED when a transfer is not allowed).
        if question.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return self.emit(shield, reply, ResponseCode::Refused, None, &[], &[], out);
        }
        // The client subnet, checked; `None` when absent.
        if let Some(EdnsOption::Subnet(cs)) = edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet))
        {
            if let Err(why) = check_ecs(cs, ecs_option_len(packet)) {
                tracing::debug!(%src, why, "malformed ECS option");
                return self.emit(shield, reply, ResponseCode::FormErr, None, &[], &[], out);
            }
            reply.ecs = Some(*cs);
        }
        let qname = LowerName::from(&owner);

        // Signed answers go to queries with the DO bit (RFC 3225 §3).
        let dnssec_ok = edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let zones = self.zones.load();
        let apps = self.apps.current();
        let plan = zones.plan(&qname, qtype, &apps);
        if let (true, Some(limiter)) = (reply.to.limited, shield.rrl.as_ref()) {
            reply.to.subject = match &plan {
                Plan::Refused => 0,
                Plan::NxDomain(zone) => limiter.subject(Subject::Zone(zone.origin())),
                Plan::Records(..) => limiter.subject(Subject::Name(&qname, qtype)),
                Plan::App { app, .. } => limiter.subject(Subject::App(&app.code.name, qtype)),
            };
        }
        match plan {
            Plan::Refused => {
                self.emit(shield, reply, ResponseCode::Refused, Some(0), &[], &[], out)
            }
            Plan::NxDomain(zone) => {
                let mut authority = Cow::Borrowed(std::slice::from_ref(&zone.soa));
                if let Some(signer) = signing(zone, dnssec_ok) {
                    let ce = zone.closest_encloser(&qname, &apps);
                    match signed::nxdomain(signer, &zone.soa, &owner, &ce, unix_now()) {
                        Ok(signed) => authority = Cow::Owned(signed),
                        Err(e) => return self.sign_failed(shield, reply, &zone.soa, e, out),
                    }
                }
                self.emit(
                    shield,
                    reply,
                    ResponseCode::NXDomain,
                    Some(0),
                    &[],
                    &authority,
                    out,
                )
            }
            Plan::Records(zone, mut records) => {
                // ANY over UDP gets one RRset (RFC 8482 §4.1), never every
                // record of the name: TCP, which a spoofer cannot use,
                // still gets them all.
                if qtype == RecordType::ANY
                    && transport == Transport::Udp
                    && let Some(first) = records.first().map(Record::record_type)
                {
                    records.retain(|r| r.record_type() == first);
                }
                // Answer in the question's case (0x20 randomisation).
                for r in records.iter_mut() {
                    if LowerName::from(&r.name) == qname {
                        r.name = owner.clone();
                    }
                }
                let mut authority = Cow::Borrowed(if records.is_empty() {
                    std::slice::from_ref(&zone.soa)
                } else {
                    &[][..]
                });
                if let Some(signer) = signing(zone, dnssec_ok) {
                    let now = unix_now();
                    let done = if records.is_empty() {
                        let types = zone.types_at(&qname);
                        signed::nodata(signer, &zone.soa, &owner, qtype, &types, now)
                            .map(|a| authority = Cow::Owned(a))
                    } else {
                        signed::sign_answers(signer, &mut records, now)
                    };
                    if let Err(e) = done {
                        return self.sign_failed(shield, reply, &zone.soa, e, out);
                    }
                }
                self.emit(
                    shield,
                    reply,
                    ResponseCode::NoError,
                    Some(0),
                    &records,
                    &authority,
                    out,
                )
            }
            Plan::App { zone, app, prefix } => {
                let qt = match qtype {
                    RecordType::A => "A",
                    RecordType::AAAA => "AAAA",
                    RecordType::CNAME => "CNAME",
                    _ => {
                        // Not run for other types: the name is the app's,
                        // which answers addresses (a CNAME decision is
                        // served for A, AAAA and CNAME queries only).
                        let mut authority = Cow::Borrowed(std::slice::from_ref(&zone.soa));
                        if let Some(signer) = signing(zone, dnssec_ok) {
                            let types = [RecordType::A, RecordType::AAAA];
                            let now = unix_now();
                            match signed::nodata(signer, &zone.soa, &owner, qtype, &types, now) {
                                Ok(a) => authority = Cow::Owned(a),
                                Err(e) => {
                                    return self.sign_failed(shield, reply, &zone.soa, e, out);
                                }
                            }
                        }
                        return self.emit(
                            shield,
                            reply,
                            ResponseCode::NoError,
                            Some(0),
                            &[],
                            &authority,
                            out,
                        );
                    }
                };
                let (request, scope) = self.app_request(src.ip(), reply.ecs, prefix, qt);
                let question = wire::question_end(packet).map(|end| &packet[12..end]);
                let data = self.data.load();
                let signer = signing(zone, dnssec_ok);
                if let Some(steered) = self.workers.decide_inline(app, &request, &data, zone.ttl) {
                    self.counters.decision(steered.counted(app));
                    let how = Answering {
                        question,
                        scope,
                        qtype,
                        owner: &owner,
                        soa: &zone.soa,
                        signer: signer.map(|s| &**s),
                    };
                    return self.finish(shield, reply, steered, how, out);
                }
                Handled::Undecided(Box::new(Undecided {
                    app: app.clone(),
                    request,
                    data: arc_swap::Guard::into_inner(data),
                    zone_ttl: zone.ttl,
                    scope,
                    qtype,
                    owner,
                    soa: zone.soa.clone(),
                    signer: signer.cloned(),
                    question: question.map(<[u8]>::to_vec),
                    reply,
                }))
            }
        }
    }

    /// Runs a pending query's app on a JS worker and writes its reply into
    /// `out`: [`Handled::Reply`] to send it, [`Handled::Drop`] when rate
    /// limiting drops it.
    pub async fn decide(&self, pending: Box<Undecided>, out: &mut Vec<u8>) -> Handled {
        let Undecided {
            app,
            request,
            data,
            zone_ttl,
            scope,
            qtype,
            owner,
            soa,
            signer,
            question,
            reply,
        } = *pending;
        let steered = self
            .workers
            .decide_on_worker(app.clone(), request, data, zone_ttl)
            .await;
        self.counters.decision(steered.counted(&app));
        let how = Answering {
            question: question.as_deref(),
            scope,
            qtype,
            owner: &owner,
            soa: &soa,
            signer: signer.as_deref(),
        };
        // Loaded after the wait: a guard is not held across it.
        let guard = self.shield.load();
        self.finish(&guard, reply, steered, how, out)
    }

    /// The reply to a decision: the fast form when it applies, else the
    /// general encoder.
    fn finish(
        &self,
        shield: &Shield,
        reply: Reply,
        steered: Steered,
        how: Answering<'_>,
        out: &mut Vec<u8>,
    ) -> Handled {
        // A fallback does not depend on the client: scope 0.
        let scope = if steered.outcome == Outcome::App {
            how.scope
        } else {
            0
        };
        if let Outcome::Failed(_) = steered.outcome {
            return self.emit(
                shield,
                reply,
                ResponseCode::ServFail,
                Some(scope),
                &[],
                &[],
                out,
            );
        }
        // With DO in a signed zone: the answer RRset's signatures, from the
        // cache once made (a memoised decision is the same RRset again).
        let answers = &steered.decision.answers;
        let rrset = (!steered.decision.empty)
            .then(|| signed::decision_rrset(answers, how.qtype))
            .flatten();
        let sigs = match (how.signer, &rrset) {
            (Some(signer), Some((rtype, rdata))) => {
                match signer.sign(how.owner, *rtype, steered.ttl, rdata.clone(), unix_now()) {
                    Ok(sigs) => Some(sigs),
                    Err(e) => return self.sign_failed(shield, reply, how.soa, e, out),
                }
            }
            _ => None,
        };
        if let (false, Some(question)) = (steered.decision.empty, how.question) {
            let opt = reply.edns.as_ref().map(|e| wire::Opt {
                payload: e.max_payload(),
                dnssec_ok: e.flags().dnssec_ok,
                ecs: reply.ecs.map(|cs| (cs, scope)),
                cookie: reply.to.cookie,
            });
            let limit = match reply.to.transport {
                Transport::Udp => reply.edns.as_ref().map_or(512, Edns::max_payload),
                Transport::Tcp => u16::MAX,
            };
            let fast = wire::decision_reply(
                out,
                &reply.metadata,
                question,
                wire::Records {
                    answers,
                    qtype: how.qtype,
                    ttl: steered.ttl,
                    rrsigs: sigs.as_ref().map_or((&[], 0), |s| s.answer_wire()),
                },
                opt,
                usize::from(limit),
            );
            if fast {
                return self.deliver(shield, &reply.to, ResponseCode::NoError, out);
            }
        }
        let mut records = if steered.decision.empty {
            Vec::new()
        } else {
            decision_records(answers, how.qtype, how.owner, steered.ttl)
        };
        let mut authority: Cow<'_, [Record]> = Cow::Borrowed(&[]);
        match (how.signer, sigs) {
            (_, Some(sigs)) if !records.is_empty() => {
                records.extend(sigs.records(how.owner, steered.ttl));
            }
            (Some(signer), _) if records.is_empty() => {
                // NODATA: the name has the types of the decision's answers.
                let mut types: Vec<RecordType> = Vec::new();
                if !steered.decision.empty {
                    for a in answers {
                        let t = match a {
                            Answer::A(_) => RecordType::A,
                            Answer::Aaaa(_) => RecordType::AAAA,
                            Answer::Cname(_) => continue,
                        };
                        if !types.contains(&t) {
                            types.push(t);
                        }
                    }
                }
                let now = unix_now();
                match signed::nodata(signer, how.soa, how.owner, how.qtype, &types, now) {
                    Ok(a) => authority = Cow::Owned(a),
                    Err(e) => return self.sign_failed(shield, reply, how.soa, e, out),
                }
            }
            _ if records.is_empty() => authority = Cow::Borrowed(std::slice::from_ref(how.soa)),
            _ => {}
        }
        self.emit(
            shield,
            reply,
            ResponseCode::NoError,
            Some(scope),
            &records,
            &authority,
            out,
        )
    }

    /// A signed zone's answer that cannot be signed: SERVFAIL and a log
    /// line, never an unsigned answer in a signed zone.
    fn sign_failed(
        &self,
        shield: &Shield,
        reply: Reply,
        soa: &Record,
        e: SignError,
        out: &mut Vec<u8>,
    ) -> Handled {
        tracing::error!(zone = %soa.name, error = %e, "cannot sign an answer; answering SERVFAIL");
        self.emit(
            shield,
            reply,
            ResponseCode::ServFail,
            Some(0),
            &[],
            &[],
            out,
        )
    }

    /// Encodes a reply into `out` and delivers it ([`DnsHandler::deliver`]).
    /// `scope`: echo the query's client subnet with this scope (when it had
    /// one).
    #[allow(clippy::too_many_arguments)] // the shield is the query's own load (see `deliver`)
    fn emit(
        &self,
        shield: &Shield,
        mut reply: Reply,
        rcode: ResponseCode,
        scope: Option<u8>,
        answers: &[Record],
        authority: &[Record],
        out: &mut Vec<u8>,
    ) -> Handled {
        if let (Some(e), Some(cs), Some(scope)) = (reply.edns.as_mut(), reply.ecs, scope) {
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                cs.addr(),
                cs.source_prefix(),
                scope,
            )));
        }
        if let (Some(e), Some(cookie)) = (reply.edns.as_mut(), reply.to.cookie) {
            e.options_mut()
                .insert(EdnsOption::Unknown(cookies::OPTION_CODE, cookie.to_vec()));
        }
        let mut metadata = reply.metadata;
        metadata.response_code = rcode;
        metadata.authoritative = !matches!(
            rcode,
            ResponseCode::Refused | ResponseCode::FormErr | ResponseCode::NotImp
        );
        out.clear();
        let mut encoder = BinEncoder::new(out);
        encoder.set_max_size(match reply.to.transport {
            Transport::Udp => reply.edns.as_ref().map_or(512, Edns::max_payload),
            Transport::Tcp => u16::MAX,
        });
        let emitted = emit_message_parts(
            &metadata,
            &mut reply.queries.iter(),
            &mut answers.iter(),
            &mut authority.iter(),
            &mut std::iter::empty::<&Record>(),
            reply.edns.as_ref(),
            None,
            &mut encoder,
        );
        match emitted {
            Ok(header) if header.metadata.truncation => {
                // Truncated over UDP: the records that fitted are of no use
                // (the client retries over TCP; RFC 2181 §9 says not to
                // cache them), but the OPT record must be there (RFC 6891
                // §7), and it is emitted last, so it may be what was cut.
                // Header, question and OPT only.
                out.clear();
                let mut encoder = BinEncoder::new(out);
                let mut metadata = metadata;
                metadata.truncation = true;
                let _ = emit_message_parts(
                    &metadata,
                    &mut reply.queries.iter(),
                    &mut std::iter::empty::<&Record>(),
                    &mut std::iter::empty::<&Record>(),
                    &mut std::iter::empty::<&Record>(),
                    reply.edns.as_ref(),
                    None,
                    &mut encoder,
                );
                self.deliver(shield, &reply.to, rcode, out)
            }
            Ok(_) => self.deliver(shield, &reply.to, rcode, out),
            Err(e) => {
                // As hickory-server does: a bare SERVFAIL header.
                tracing::error!(error = %e, "cannot encode a DNS reply; answering SERVFAIL");
                out.clear();
                let mut metadata = Metadata::new(metadata.id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: Default::default(),
                };
                let _ = header.emit(&mut BinEncoder::new(out));
                self.deliver(shield, &reply.to, ResponseCode::ServFail, out)
            }
        }
    }

    /// Counts the reply in `out` and says whether it goes out, after
    /// response rate limiting: a limited reply is truncated in place (a
    /// slip), answered with BADCOOKIE (`require_cookies`, a client that
    /// sent a cookie but not ours) or dropped. TCP replies, exempt sources
    /// and queries with a valid server cookie are never limited.
    fn deliver(
        &self,
        shield: &Shield,
        to: &Delivery,
        rcode: ResponseCode,
        out: &mut Vec<u8>,
    ) -> Handled {
        let tcp = to.transport == Transport::Tcp;
        // `shield` is the one the query was handled with (loaded once per
        // query: a load costs more than the accounting).
        if let (true, Some(limiter)) = (to.limited, shield.rrl.as_ref()) {
            let class = match rcode {
                ResponseCode::NoError => Class::Answer,
                ResponseCode::NXDomain => Class::NxDomain,
                ResponseCode::Refused => Class::Refused,
                _ => Class::Error,
            };
            match limiter.check(to.src, class, to.subject) {
                Verdict::Send => {}
                _ if limiter.settings().dry_run => {
                    self.rrl_counts.add(class, RrlAction::WouldLimit);
                }
                _ if shield.require_cookies && to.unproven => {
                    // RFC 7873 §5.2.3: under attack, a client that sent a
                    // cookie gets BADCOOKIE and ours, no larger than its
                    // query, and is exempt once it sends ours back.
                    let cookie = to.cookie.expect("unproven implies a cookie");
                    wire::bad_cookie(out, self.max_payload, cookie);
                    self.cookie_counts.add(CookieEvent::BadCookie);
                    self.counters
                        .dns_response(tcp, ResponseCode::BADCOOKIE, to.qtype);
                    return Handled::Reply;
                }
                Verdict::Slip => {
                    wire::slip(out);
                    self.rrl_counts.add(class, RrlAction::Slipped);
                }
                Verdict::Drop => {
                    self.rrl_counts.add(class, RrlAction::Dropped);
                    return Handled::Drop;
                }
            }
        }
        self.counters.dns_response(tcp, rcode, to.qtype);
        Handled::Reply
    }

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
        let (resolver, _) = locate::locate(&self.geo, src);
        let (client_ip, client, scope) = match ecs {
            Some(cs) if cs.source_prefix() > 0 => {
                let (addr, source) = crate::geo::ecs_subnet(cs.addr(), cs.source_prefix());
                let (client, prefix_len) = locate::locate(&self.geo, addr);
                let scope = crate::geo::ecs_scope(cs.source_prefix(), source, prefix_len);
                (addr, client, scope)
            }
            _ => (src, resolver.clone(), 0),
        };
        let req = AppRequest {
            ip_address: Some(client_ip),
            client,
            resolver_ip_address: Some(src),
            resolver,
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
        let cs = |a: &str, source, scope| ClientSubnet::new(a.parse().unwrap(), source, scope);
        assert!(check_ecs(&cs("1.2.0.0", 16, 0), Some(6)).is_ok());
        assert!(check_ecs(&cs("1.2.0.0", 16, 0), None).is_ok());
        assert!(check_ecs(&cs("1.2.255.0", 20, 0), Some(7)).is_err());
        assert!(check_ecs(&cs("2001:db8::", 32, 0), Some(8)).is_ok());
        assert!(check_ecs(&cs("2001:db8::1", 64, 0), Some(12)).is_err());
        // Too many octets for the prefix (a /24 sent with all four).
        assert!(check_ecs(&cs("1.2.3.0", 24, 0), Some(8)).is_err());
        // A scope in a query.
        assert!(check_ecs(&cs("1.2.3.0", 24, 16), Some(7)).is_err());
    }

    #[test]
    fn finds_the_raw_ecs_option() {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("a.example.").unwrap(),
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            "1.2.3.0".parse().unwrap(),
            24,
            0,
        )));
        m.edns = Some(e);
        let bytes = m.to_vec().unwrap();
        assert_eq!(ecs_option_len(&bytes), Some(7));
        m.edns = Some(Edns::new());
        assert_eq!(ecs_option_len(&m.to_vec().unwrap()), None);
    }

    #[test]
    fn mapped_is_ipv4() {
        let (a, p) = crate::geo::ecs_subnet("::ffff:198.51.100.0".parse().unwrap(), 120);
        assert_eq!((a, p), ("198.51.100.0".parse().unwrap(), 24));
        assert_eq!(crate::geo::ecs_scope(120, 24, 16), 112);
        assert_eq!(crate::geo::ecs_scope(24, 24, 28), 24);
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
