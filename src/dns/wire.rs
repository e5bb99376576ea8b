//! The reply to an app's decision, written straight into the output buffer.
//!
//! Most replies a steering server sends have one shape: the question as it
//! came, one CNAME (or a few A/AAAA records) owned by the question's name,
//! and an OPT record echoing the client subnet. hickory's general encoder
//! builds such a reply from owned names and allocates for every label it
//! may compress later; this writes the same bytes (the question copied
//! verbatim, the owner as a pointer to it) without allocating. Anything
//! else (no records, a reply over the size limit, a question that uses a
//! compression pointer) goes to the general encoder, which handles every
//! case: [`decision_reply`] says so by returning `false`.

use std::net::IpAddr;

use hickory_proto::op::Metadata;
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::ClientSubnet;

use crate::openmix::Answer;

/// The reply's OPT record: the payload size offered and the client subnet
/// echoed with its scope.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// UDP payload size advertised.
    pub payload: u16,
    /// The DNSSEC OK bit, copied from the query (RFC 3225 §3).
    pub dnssec_ok: bool,
    /// The query's client subnet and the reply's scope prefix.
    pub ecs: Option<(ClientSubnet, u8)>,
    /// The COOKIE option: the client's cookie and our server cookie.
    pub cookie: Option<[u8; 24]>,
}

/// The records of a decision to write: its answers, for the type asked,
/// with this TTL.
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    /// The decision's answers.
    pub answers: &'a [Answer],
    /// The query type (a CNAME answers every type).
    pub qtype: RecordType,
    /// TTL of every record.
    pub ttl: u32,
    /// The answer's RRSIG records in wire form, owned by a pointer to the
    /// question's name, and how many (none: `(&[], 0)`).
    pub rrsigs: (&'a [u8], u16),
}

/// The end of the question section of `query` (one question): the offset
/// after QTYPE and QCLASS, or `None` when the name uses a compression
/// pointer or a reserved label type, or the packet ends first.
pub fn question_end(query: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = *query.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 4;
    (end <= query.len()).then_some(end)
}

/// Writes the NOERROR reply with `records` into `out`.
/// `question` is the question section as received (name, type, class);
/// `response` the reply's header fields. Returns `false`, with `out` in an
/// unspecified state, when the fast form does not apply or the reply would
/// exceed `limit` bytes.
pub fn decision_reply(
    out: &mut Vec<u8>,
    response: &Metadata,
    question: &[u8],
    records: Records<'_>,
    opt: Option<Opt>,
    limit: usize,
) -> bool {
    let Records {
        answers,
        qtype,
        ttl,
        rrsigs,
    } = records;
    out.clear();
    // Header: QR, opcode, AA, RD copied; CD copied; NOERROR.
    out.extend_from_slice(&response.id.to_be_bytes());
    let mut b2 = 0x80 | (u8::from(response.op_code) << 3) | 0x04;
    if response.recursion_desired {
        b2 |= 0x01;
    }
    let b3 = if response.checking_disabled { 0x10 } else { 0 };
    out.push(b2);
    out.push(b3);
    out.extend_from_slice(&1u16.to_be_bytes());
    let ancount_at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    out.extend_from_slice(question);

    let mut count: u16 = 0;
    if let Some(Answer::Cname(target)) = answers.iter().find(|a| matches!(a, Answer::Cname(_))) {
        // A CNAME answers any type; a name has one.
        record_head(out, RecordType::CNAME, ttl);
        let len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        if !push_name(out, target) {
            return false;
        }
        let rdlen = (out.len() - len_at - 2) as u16;
        out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        count = 1;
    } else {
        for a in answers {
            match (a, qtype) {
                (Answer::A(ip), RecordType::A) => {
                    record_head(out, RecordType::A, ttl);
                    out.extend_from_slice(&4u16.to_be_bytes());
                    out.extend_from_slice(&ip.octets());
                }
                (Answer::Aaaa(ip), RecordType::AAAA) => {
                    record_head(out, RecordType::AAAA, ttl);
                    out.extend_from_slice(&16u16.to_be_bytes());
                    out.extend_from_slice(&ip.octets());
                }
                _ => continue,
            }
            count += 1;
        }
    }
    if count == 0 {
        return false;
    }
    // The signatures, pre-encoded: a copy.
    out.extend_from_slice(rrsigs.0);
    count += rrsigs.1;
    out[ancount_at..ancount_at + 2].copy_from_slice(&count.to_be_bytes());
    if let Some(opt) = opt {
        push_opt(out, opt);
    }
    out.len() <= limit
}

/// Owner (a pointer to the question's name at offset 12), type, class IN
/// and TTL of one answer record.
fn record_head(out: &mut Vec<u8>, rtype: RecordType, ttl: u32) {
    out.extend_from_slice(&[0xC0, 12]);
    out.extend_from_slice(&u16::from(rtype).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
}

/// A dotted host name (checked by the runtime when the app answered it:
/// letters, digits, `-` and `_`) in wire form; `false` if it is not one.
fn push_name(out: &mut Vec<u8>, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    // One pass over the bytes: each label's length byte is written when
    // the label ends (a split on '.' costs a tenth of the reply). A '.'
    // after the last byte ends the last label, and its placeholder byte is
    // the root label that ends the name.
    let start = out.len();
    out.reserve(name.len() + 2);
    let mut len_at = out.len();
    out.push(0);
    for &b in name.iter().chain([b'.'].iter()) {
        if b == b'.' {
            let len = out.len() - len_at - 1;
            if len == 0 || len > 63 {
                out.truncate(start);
                return false;
            }
            out[len_at] = len as u8;
            len_at = out.len();
            out.push(0);
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b);
        } else {
            out.truncate(start);
            return false;
        }
    }
    true
}

/// The OPT pseudo-record (RFC 6891): version 0, the DO flag, the client
/// subnet option (RFC 7871 §6) and the COOKIE option (RFC 7873) when there
/// are.
fn push_opt(out: &mut Vec<u8>, opt: Opt) {
    out.push(0);
    out.extend_from_slice(&u16::from(RecordType::OPT).to_be_bytes());
    out.extend_from_slice(&opt.payload.to_be_bytes());
    // TTL: extended rcode 0, version 0, then the flags (DO is the top bit).
    out.extend_from_slice(&[0, 0, if opt.dnssec_ok { 0x80 } else { 0 }, 0]);
    let rdlen_at = out.len();
    out.extend_from_slice(&[0, 0]);
    if let Some((cs, scope)) = opt.ecs {
        let source = cs.source_prefix();
        let (family, octets): (u16, [u8; 16]) = match cs.addr() {
            IpAddr::V4(a) => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&a.octets());
                (1, o)
            }
            IpAddr::V6(a) => (2, a.octets()),
        };
        let addr_len = usize::from(source)
            .div_ceil(8)
            .min(if family == 1 { 4 } else { 16 });
        out.extend_from_slice(&8u16.to_be_bytes());
        out.extend_from_slice(&(4 + addr_len as u16).to_be_bytes());
        out.extend_from_slice(&family.to_be_bytes());
        out.push(source);
        out.push(scope);
        out.extend_from_slice(&octets[..addr_len]);
    }
    if let Some(cookie) = opt.cookie {
        out.extend_from_slice(&super::cookies::OPTION_CODE.to_be_bytes());
        out.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
        out.extend_from_slice(&cookie);
    }
    let rdlen = (out.len() - rdlen_at - 2) as u16;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
}

/// Turns the reply in `out` into its truncated form for a rate-limited
/// "slip": the header with TC set and the question, nothing else, so a
/// real client retries over TCP and a spoofed victim gets no more bytes
/// than the query had.
pub fn slip(out: &mut Vec<u8>) {
    if out.len() < 12 {
        return;
    }
    let questions = u16::from_be_bytes([out[4], out[5]]);
    let end = match questions {
        1 => question_end(out).unwrap_or(12),
        _ => 12,
    };
    out.truncate(end);
    if end == 12 {
        out[4..6].fill(0);
    }
    out[2] |= 0x02;
    out[6..12].fill(0);
}

/// Turns the reply in `out` into BADCOOKIE (RFC 7873 §5.2.3): header and
/// question, RCODE 23 (its high bits in the OPT record) and an OPT record
/// carrying `cookie`, the client's cookie and a fresh one of ours.
pub fn bad_cookie(out: &mut Vec<u8>, payload: u16, cookie: [u8; 24]) {
    const BADCOOKIE: u16 = 23;
    slip(out);
    if out.len() < 12 {
        return;
    }
    out[2] &= !0x02;
    out[3] = (out[3] & 0xF0) | (BADCOOKIE & 0x0F) as u8;
    out[10..12].copy_from_slice(&1u16.to_be_bytes());
    let at = out.len();
    push_opt(
        out,
        Opt {
            payload,
            dnssec_ok: false,
            ecs: None,
            cookie: Some(cookie),
        },
    );
    // The OPT record's TTL starts with the extended RCODE (RFC 6891 §6.1.3).
    out[at + 5] = (BADCOOKIE >> 4) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::{Name, RData};

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn reply(q: &[u8], answers: &[Answer], qtype: RecordType, opt: Option<Opt>) -> Message {
        let end = question_end(q).unwrap();
        let asked = Message::from_vec(q).unwrap();
        let response = Metadata::response_from_request(&asked.metadata);
        let mut out = Vec::new();
        assert!(decision_reply(
            &mut out,
            &response,
            &q[12..end],
            Records {
                answers,
                qtype,
                ttl: 20,
                rrsigs: (&[], 0),
            },
            opt,
            512
        ));
        Message::from_vec(&out).unwrap()
    }

    #[test]
    fn names_encode_as_hickory_does_and_bad_ones_leave_nothing() {
        use hickory_proto::serialize::binary::BinEncodable;
        for name in [
            "cdn-a.example.net.",
            "cdn-a.example.net",
            "a",
            "x_y.b-2.c",
            &"a".repeat(63),
        ] {
            let mut ours = vec![7];
            assert!(push_name(&mut ours, name), "{name}");
            let theirs = Name::from_ascii(name).unwrap().to_bytes().unwrap();
            assert_eq!(&ours[1..], &theirs[..], "{name}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "a.b..",
            &"a".repeat(64),
            "sp ace.net",
            "é.net",
            &("a.".repeat(127) + "aa"),
        ] {
            let mut out = vec![7];
            assert!(!push_name(&mut out, bad), "{bad:?}");
            assert_eq!(out, [7], "{bad:?}");
        }
    }

    #[test]
    fn cname_reply_decodes_to_what_was_asked() {
        let q = query("Q1.Best-RTT.switchyard.test.", RecordType::AAAA);
        let m = reply(
            &q,
            &[Answer::Cname("cdn-a.example.net".into())],
            RecordType::AAAA,
            None,
        );
        assert_eq!(m.metadata.id, 0x4242);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert_eq!(
            m.queries[0].name().to_ascii(),
            "Q1.Best-RTT.switchyard.test."
        );
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].name.to_ascii(), "Q1.Best-RTT.switchyard.test.");
        assert_eq!(m.answers[0].ttl, 20);
        match &m.answers[0].data {
            RData::CNAME(c) => assert_eq!(c.0.to_ascii(), "cdn-a.example.net."),
            other => panic!("{other:?}"),
        }
        assert!(m.edns.is_none());
    }

    #[test]
    fn addresses_by_type_and_the_subnet_echoed() {
        let q = query("geo-map.switchyard.test.", RecordType::A);
        let answers = [
            Answer::A("192.0.2.1".parse().unwrap()),
            Answer::Aaaa("2001:db8::1".parse().unwrap()),
            Answer::A("192.0.2.2".parse().unwrap()),
        ];
        for (addr, source, scope) in [("198.51.100.0", 24, 16), ("2001:db8:40::", 48, 32)] {
            let cs = ClientSubnet::new(addr.parse().unwrap(), source, 0);
            let opt = Opt {
                payload: 1232,
                dnssec_ok: true,
                ecs: Some((cs, scope)),
                cookie: Some([7; 24]),
            };
            let m = reply(&q, &answers, RecordType::A, Some(opt));
            let got: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
            assert_eq!(got, ["192.0.2.1", "192.0.2.2"]);
            let edns: &Edns = m.edns.as_ref().unwrap();
            assert_eq!(edns.max_payload(), 1232);
            assert!(edns.flags().dnssec_ok);
            match edns.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(echo)) => {
                    assert_eq!(echo.addr(), cs.addr());
                    assert_eq!(echo.source_prefix(), source);
                    assert_eq!(echo.scope_prefix(), scope);
                }
                other => panic!("{other:?}"),
            }
            match edns.option(EdnsCode::Cookie) {
                Some(EdnsOption::Unknown(10, c)) => assert_eq!(c, &[7; 24]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bad_cookie_carries_rcode_23_and_the_cookie() {
        let q = query("www.switchyard.test.", RecordType::A);
        let mut out = q.clone();
        out[2] |= 0x80;
        bad_cookie(&mut out, 1232, [9; 24]);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::BADCOOKIE
        );
        assert!(!m.metadata.truncation);
        assert_eq!(m.queries.len(), 1);
        match m.edns.as_ref().unwrap().option(EdnsCode::Cookie) {
            Some(EdnsOption::Unknown(10, c)) => assert_eq!(c, &[9; 24]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_slip_is_header_and_question_with_tc() {
        let q = query("www.switchyard.test.", RecordType::A);
        let m = reply(
            &q,
            &[Answer::A("192.0.2.1".parse().unwrap())],
            RecordType::A,
            Some(Opt {
                payload: 1232,
                dnssec_ok: false,
                ecs: None,
                cookie: None,
            }),
        );
        let mut out = m.to_vec().unwrap();
        slip(&mut out);
        assert_eq!(out.len(), q.len());
        let s = Message::from_vec(&out).unwrap();
        assert!(s.metadata.truncation && s.metadata.authoritative);
        assert_eq!(s.metadata.id, 0x4242);
        assert_eq!(s.queries.len(), 1);
        assert!(s.answers.is_empty() && s.additionals.is_empty() && s.edns.is_none());
    }

    #[test]
    fn what_the_fast_form_leaves_to_the_general_encoder() {
        let q = query("geo-map.switchyard.test.", RecordType::AAAA);
        let end = question_end(&q).unwrap();
        let response = Metadata::response_from_request(&Message::from_vec(&q).unwrap().metadata);
        let fast = |answers: &[Answer]| {
            let records = Records {
                answers,
                qtype: RecordType::AAAA,
                ttl: 5,
                rrsigs: (&[], 0),
            };
            decision_reply(&mut Vec::new(), &response, &q[12..end], records, None, 512)
        };
        // No record of the type asked: NODATA needs the SOA.
        let v4 = [Answer::A("192.0.2.1".parse().unwrap())];
        assert!(!fast(&v4));
        // Over the limit.
        let many: Vec<Answer> = (0..40)
            .map(|i| Answer::Aaaa(format!("2001:db8::{i}").parse().unwrap()))
            .collect();
        assert!(!fast(&many));
        // A name that is not a host name.
        let odd = [Answer::Cname("a b.example".into())];
        assert!(!fast(&odd));
        // A question whose name is a pointer.
        let mut p = q.clone();
        p.truncate(12);
        p.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(question_end(&p), None);
        assert_eq!(question_end(&q[..20]), None);
    }
}
