//! The DNSSEC records of a reply in a signed zone, for a query with the DO
//! bit: the RRSIGs of each answer RRset, and the signed SOA and NSEC
//! records of a negative answer ([`crate::dnssec`] makes them).

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::dnssec::nsec;
use crate::dnssec::sign::{SignError, ZoneSigner};

/// Appends to `records` the RRSIGs of each of their RRsets (records of
/// one owner and type), in the order the RRsets first appear.
pub(super) fn sign_answers(
    signer: &ZoneSigner,
    records: &mut Vec<Record>,
    now: u64,
) -> Result<(), SignError> {
    let n = records.len();
    for i in 0..n {
        let first = &records[i];
        let rtype = first.record_type();
        let owner = LowerName::from(&first.name);
        let seen = records[..i]
            .iter()
            .any(|r| r.record_type() == rtype && LowerName::from(&r.name) == owner);
        if seen {
            continue;
        }
        let set = records[i..n]
            .iter()
            .filter(|r| r.record_type() == rtype && LowerName::from(&r.name) == owner)
            .map(|r| &r.data);
        let sigs = signer.sign(&first.name, rtype, first.ttl, set, now)?;
        let rrsigs: Vec<Record> = sigs.records(&first.name, first.ttl).collect();
        records.extend(rrsigs);
    }
    Ok(())
}

/// The authority section of a signed NODATA answer: the SOA and an NSEC
/// owned by `qname` listing `types` (the qtype left out), each signed.
pub(super) fn nodata(
    signer: &ZoneSigner,
    soa: &Record,
    qname: &Name,
    qtype: RecordType,
    types: &[RecordType],
    now: u64,
) -> Result<Vec<Record>, SignError> {
    let types = types.iter().copied().filter(|&t| t != qtype);
    let mut out = vec![soa.clone(), nsec::nodata(qname, types, soa.ttl)?];
    sign_answers(signer, &mut out, now)?;
    Ok(out)
}

/// The authority section of a signed NXDOMAIN answer: the SOA and the
/// NSECs denying `qname` and the wildcard at `closest_encloser`, each
/// signed.
pub(super) fn nxdomain(
    signer: &ZoneSigner,
    soa: &Record,
    qname: &Name,
    closest_encloser: &Name,
    now: u64,
) -> Result<Vec<Record>, SignError> {
    let mut out = vec![soa.clone()];
    out.extend(nsec::nxdomain(qname, closest_encloser, soa.ttl)?);
    sign_answers(signer, &mut out, now)?;
    Ok(out)
}

/// The rdata of a decision's answer RRset for `qtype` without building
/// records: the CNAME when there is one (it answers any type), else the
/// addresses of the type asked; `None` when that is no record (NODATA).
/// Matches [`super::decision_records`].
pub(super) fn decision_rrset<'a>(
    answers: &'a [crate::openmix::Answer],
    qtype: RecordType,
) -> Option<(RecordType, DecisionRdata<'a>)> {
    use crate::openmix::Answer;
    if let Some(Answer::Cname(target)) = answers.iter().find(|a| matches!(a, Answer::Cname(_))) {
        let mut name = Name::from_ascii(target).ok()?;
        name.set_fqdn(true);
        return Some((RecordType::CNAME, DecisionRdata::Cname(Some(name))));
    }
    let addresses = DecisionRdata::Addresses(answers.iter(), qtype);
    // No address of the type asked: NODATA, nothing to sign.
    addresses.clone().next()?;
    Some((qtype, addresses))
}

/// The rdata of a decision's RRset, one by one ([`decision_rrset`]).
#[derive(Clone)]
pub(super) enum DecisionRdata<'a> {
    /// The CNAME's target.
    Cname(Option<Name>),
    /// The addresses of one type.
    Addresses(std::slice::Iter<'a, crate::openmix::Answer>, RecordType),
}

impl Iterator for DecisionRdata<'_> {
    type Item = RData;

    fn next(&mut self) -> Option<RData> {
        use crate::openmix::Answer;
        use hickory_proto::rr::rdata::{A, AAAA, CNAME};
        match self {
            DecisionRdata::Cname(target) => target.take().map(|t| RData::CNAME(CNAME(t))),
            DecisionRdata::Addresses(it, qtype) => it.find_map(|a| match (a, *qtype) {
                (Answer::A(ip), RecordType::A) => Some(RData::A(A(*ip))),
                (Answer::Aaaa(ip), RecordType::AAAA) => Some(RData::AAAA(AAAA(*ip))),
                _ => None,
            }),
        }
    }
}
