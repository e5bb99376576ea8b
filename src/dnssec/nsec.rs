//! Denial of existence made on the fly: minimally covering NSEC records
//! (RFC 4470), as Knot's online signing makes them.
//!
//! A zone with app names has no list of names to chain: any prefix under
//! an app label exists. So an NSEC record is made for the query alone,
//! with the "epsilon" functions of RFC 4470 §4: it covers the name asked
//! and nothing else. The owner is the name's predecessor in canonical
//! order (RFC 4034 §6.1) and the next name the first name after it and
//! its descendants (`name\000`; NODATA's NSEC is owned by the name, next
//! `\000.name`), so a resolver learns nothing about the other names of
//! the zone and no name that exists is ever denied.
//!
//! NXDOMAIN is proved the standard way: an NSEC covering the name and one
//! covering the wildcard at the closest encloser (one when it covers
//! both). Cloudflare's "black lies" (answering NXDOMAIN as NODATA with a
//! made-up bitmap) are patented and not implemented.

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
use hickory_proto::rr::{Label, Name, RData, Record, RecordType};

/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// The longest name on the wire (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;

/// Why no minimally covering NSEC can be made for a name (names built to
/// sit at the edges of the canonical order: the caller answers SERVFAIL).
#[derive(Debug, thiserror::Error)]
#[error("no minimally covering NSEC for {0}")]
pub struct NoCover(pub Name);

/// The octet before `b` in canonical order: upper-case letters compare as
/// lower case, so they are skipped.
fn before(b: u8) -> u8 {
    let p = b - 1;
    if p.is_ascii_uppercase() { b'@' } else { p }
}

/// `name`'s immediate successor in canonical order: `\000.name`, its
/// first possible child (the next name of a NODATA answer's NSEC); for a
/// name too long for that, [`next_sibling`].
pub fn successor(name: &Name) -> Result<Name, NoCover> {
    let name = name.to_lowercase();
    match name.prepend_label(Label::from_raw_bytes(&[0]).expect("one octet")) {
        Ok(next) => Ok(next),
        Err(_) => next_sibling(&name),
    }
}

/// The first name after `name` and all its descendants: the first label
/// with `\000` appended (RFC 4471 §3.1.2). The next name of an NSEC that
/// denies `name`: a next name under `name` would prove it an empty
/// non-terminal, not absent (validators read it so).
pub fn next_sibling(name: &Name) -> Result<Name, NoCover> {
    let name = name.to_lowercase();
    let first = name.iter().next().ok_or_else(|| NoCover(name.clone()))?;
    let mut label = first.to_vec();
    if label.len() < MAX_LABEL {
        label.push(0);
    } else {
        // The next label of the longest length: the last octet below
        // 0xff, one up (past the upper-case letters), the rest dropped.
        let i = label
            .iter()
            .rposition(|&b| b < 0xff)
            .ok_or_else(|| NoCover(name.clone()))?;
        label[i] = match label[i] + 1 {
            b if b.is_ascii_uppercase() => b'[',
            b => b,
        };
        label.truncate(i + 1);
    }
    sibling(&name, &label)
}

/// A name before `name` in canonical order with nothing that can exist
/// between them: the first label's last octet one down, then padded with
/// 0xff octets as far as the limits allow (RFC 4470 §4). `name` is below
/// the apex (its first label is not the zone's).
pub fn predecessor(name: &Name) -> Result<Name, NoCover> {
    let name = name.to_lowercase();
    let first = name.iter().next().ok_or_else(|| NoCover(name.clone()))?;
    let room = MAX_NAME.saturating_sub(name.len());
    match first.split_last() {
        Some((&0, rest)) if !rest.is_empty() => {
            // `ab\000` comes right after the descendants of `ab`: the
            // predecessor is the last of those, `\255{63}.ab`.
            let parent = sibling(&name, rest)?;
            let pad = vec![0xff; MAX_LABEL.min(room.saturating_sub(2))];
            if pad.is_empty() {
                return Err(NoCover(name));
            }
            let label = Label::from_raw_bytes(&pad).map_err(|_| NoCover(name.clone()))?;
            parent.prepend_label(label).map_err(|_| NoCover(name))
        }
        Some((&last, rest)) if last > 0 => {
            let mut label = rest.to_vec();
            label.push(before(last));
            let pad = (MAX_LABEL - label.len()).min(room);
            label.resize(label.len() + pad, 0xff);
            sibling(&name, &label)
        }
        // `\000` alone: the name right before it is its parent, which
        // exists; no NSEC can cover the one without denying the other.
        _ => Err(NoCover(name)),
    }
}

/// `name` with its first label replaced by `label`.
fn sibling(name: &Name, label: &[u8]) -> Result<Name, NoCover> {
    let label = Label::from_raw_bytes(label).map_err(|_| NoCover(name.clone()))?;
    name.base_name()
        .prepend_label(label)
        .map_err(|_| NoCover(name.clone()))
}

/// Whether the NSEC `owner` → `next` covers `name`: strictly between them
/// in canonical order.
pub fn covers(owner: &Name, next: &Name, name: &Name) -> bool {
    owner < name && name < next
}

/// An NSEC record (RFC 4034 §4): `owner`, `next`, and a bitmap of
/// `types` plus RRSIG and NSEC. `ttl` is the SOA minimum (§4).
pub fn record(
    owner: Name,
    next: Name,
    types: impl IntoIterator<Item = RecordType>,
    ttl: u32,
) -> Record {
    let nsec = NSEC::new_cover_self(next, types);
    Record::from_rdata(owner, ttl, RData::DNSSEC(DNSSECRData::NSEC(nsec)))
}

/// The NSEC of a NODATA answer: owned by the name asked, next its
/// successor, with the types the name has. The caller leaves the type
/// asked out of `types`, and CNAME unless the name is one (validators
/// reject a NODATA proof whose bitmap has either).
pub fn nodata(
    qname: &Name,
    types: impl IntoIterator<Item = RecordType>,
    ttl: u32,
) -> Result<Record, NoCover> {
    Ok(record(qname.to_lowercase(), successor(qname)?, types, ttl))
}

/// The NSECs of an NXDOMAIN answer: one covering `qname` and its next
/// closer name, one covering
/// the wildcard at `closest_encloser` (the longest ancestor of `qname`
/// that exists); a single one when it covers both. Their bitmaps are
/// RRSIG and NSEC only: their owners do not otherwise exist.
pub fn nxdomain(qname: &Name, closest_encloser: &Name, ttl: u32) -> Result<Vec<Record>, NoCover> {
    // The name to deny is the next closer name (RFC 5155 §1.3): the
    // ancestor of `qname` one label below the closest encloser. Denying
    // only `qname` would leave that name's existence open.
    let labels = usize::from(closest_encloser.num_labels()) + 1;
    let next_closer = qname.trim_to(labels.min(usize::from(qname.num_labels())));
    let owner = predecessor(&next_closer)?;
    let next = next_sibling(&next_closer)?;
    let star = Label::from_raw_bytes(b"*").expect("one octet");
    let wildcard = closest_encloser
        .to_lowercase()
        .prepend_label(star)
        .map_err(|_| NoCover(qname.clone()))?;
    let mut out = Vec::with_capacity(2);
    let both = covers(&owner, &next, &wildcard);
    out.push(record(owner, next, [], ttl));
    if !both {
        out.push(record(
            predecessor(&wildcard)?,
            next_sibling(&wildcard)?,
            [],
            ttl,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name from its text, `\DDD` escapes decoded.
    fn n(s: &str) -> Name {
        let labels = s.trim_end_matches('.').split('.').map(|l| {
            let (mut out, b) = (Vec::new(), l.as_bytes());
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' {
                    out.push(l[i + 1..i + 4].parse::<u8>().unwrap());
                    i += 4;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            Label::from_raw_bytes(&out).unwrap()
        });
        Name::from_labels(labels).unwrap()
    }

    fn nsec(r: &Record) -> (&Name, &NSEC) {
        match &r.data {
            RData::DNSSEC(DNSSECRData::NSEC(x)) => (&r.name, x),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn canonical_order_is_rfc_4034s() {
        // RFC 4034 §6.1's example, in order.
        let names = [
            "example.",
            "a.example.",
            "yljkjljk.a.example.",
            "Z.a.example.",
            "zABC.a.EXAMPLE.",
            "z.example.",
            "\\001.z.example.",
            "*.z.example.",
            "\\200.z.example.",
        ];
        for w in names.windows(2) {
            assert!(n(w[0]) < n(w[1]), "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn predecessor_and_successor_bracket_the_name_tightly() {
        for q in [
            "nope.zone.test.",
            "A.zone.test.",
            "x.y.zone.test.",
            "[.zone.test.",
            "b.zone.test.",
            "ab\\000.zone.test.",
            "*.zone.test.",
            "0.zone.test.",
        ] {
            let q = n(q);
            let p = predecessor(&q).unwrap();
            let s = successor(&q).unwrap();
            assert!(p < q && q < s, "{p} < {q} < {s}");
            assert!(covers(&p, &s, &q));
            // The sibling after: past the name and its descendants.
            let after = next_sibling(&q).unwrap();
            assert!(s < after && !q.zone_of(&after), "{q} {after}");
            // Still in the zone, and not the parent.
            assert!(n("zone.test.").zone_of(&p) && p != q.base_name(), "{p}");
            assert!(p.len() <= MAX_NAME && s.len() <= MAX_NAME);
        }
        assert_eq!(successor(&n("a.zone.")).unwrap(), n("\\000.a.zone."));
        // Upper case sorts as lower: the octet before '[' is '@'.
        let p = predecessor(&n("[.zone.")).unwrap();
        assert_eq!(p.iter().next().unwrap()[0], b'@');
        // Nothing between a predecessor and the name but the name's own
        // descendants and the predecessor's.
        let p = predecessor(&n("b.zone.")).unwrap();
        for other in ["a.zone.", "azzzz.zone.", "a\\255.zone.", "zone."] {
            assert!(!covers(&p, &n("\\000.b.zone."), &n(other)), "{other}");
        }
        assert!(predecessor(&n("\\000.zone.")).is_err());
    }

    #[test]
    fn long_names_stay_names() {
        let label = "a".repeat(63);
        // 3 × 64 + 57 + 5 + 1: 255 octets on the wire.
        let q = n(&format!("{label}.{label}.{label}.{}.zone.", "b".repeat(56)));
        let s = successor(&q).unwrap();
        let p = predecessor(&q).unwrap();
        assert!(p < q && q < s);
    }

    #[test]
    fn nxdomain_covers_the_name_and_the_wildcard() {
        let q = n("Nope.Zone.");
        let ce = n("zone.");
        let proof = nxdomain(&q, &ce, 300).unwrap();
        assert_eq!(proof.len(), 2);
        let wildcard = n("*.zone.");
        let (o, x) = nsec(&proof[0]);
        assert!(covers(o, x.next_domain_name(), &n("nope.zone.")));
        let (o, x) = nsec(&proof[1]);
        assert!(covers(o, x.next_domain_name(), &wildcard));
        for r in &proof {
            assert_eq!(r.ttl, 300);
            let (_, x) = nsec(r);
            let types: Vec<_> = x.type_bit_maps().collect();
            assert_eq!(types, [RecordType::RRSIG, RecordType::NSEC]);
            // Neither covers the apex.
            assert!(!covers(&r.name, x.next_domain_name(), &ce));
        }
        // Under a deeper closest encloser, its wildcard is the one denied.
        let deep = nxdomain(&n("a.b.static.zone."), &n("static.zone."), 300).unwrap();
        let (o, x) = nsec(&deep[0]);
        for denied in ["a.b.static.zone.", "b.static.zone."] {
            assert!(covers(o, x.next_domain_name(), &n(denied)), "{denied}");
        }
        let (o, x) = nsec(&deep[1]);
        assert!(covers(o, x.next_domain_name(), &n("*.static.zone.")));
        assert!(!covers(o, x.next_domain_name(), &n("static.zone.")));
    }

    #[test]
    fn nodata_is_owned_by_the_name_with_its_types() {
        let r = nodata(&n("WWW.zone."), [RecordType::A, RecordType::AAAA], 60).unwrap();
        let (o, x) = nsec(&r);
        assert_eq!(o, &n("www.zone."));
        assert_eq!(x.next_domain_name(), &n("\\000.www.zone."));
        let types: Vec<_> = x.type_bit_maps().collect();
        assert_eq!(
            types,
            [
                RecordType::A,
                RecordType::AAAA,
                RecordType::RRSIG,
                RecordType::NSEC
            ]
        );
    }
}
