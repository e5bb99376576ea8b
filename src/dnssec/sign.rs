//! Signatures made online: RRSIGs whose inception and expiration are
//! aligned to a window, made once per distinct RRset and key and kept in
//! a bounded cache.
//!
//! The window (as PowerDNS does): inception is the start of the current
//! `refresh_days` window less an hour of clock skew, expiration is
//! inception plus `signature_validity_days`. So the same RRset signs the
//! same way for the whole window, on every node of a fleet, and a
//! signature once made is found in the cache for days.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use hickory_proto::ProtoError;
use hickory_proto::dnssec::rdata::{DNSSECRData, RRSIG, SigInput};
use hickory_proto::dnssec::{TBS, rdata::DNSKEY};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::keys::{KeyError, KeySet, UnixTime, ZoneKey};
use crate::config::Dnssec;

/// Clock skew allowed for: signatures start an hour before their window.
const SKEW: u64 = 3600;
const DAY: u64 = 86_400;
/// Bytes the signature cache of one zone may hold (keys and values).
pub const CACHE_BYTES: u64 = 32 << 20;
/// Bytes counted for an entry besides its key and signatures (the cache's
/// own bookkeeping, the `Arc`s).
const ENTRY_OVERHEAD: usize = 128;

/// Why an RRset cannot be signed. The DNS front end answers SERVFAIL,
/// never an unsigned answer in a signed zone.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No key of the zone signs at this moment.
    #[error("no active key signs {0} now")]
    NoKey(RecordType),
    /// The key refused to sign.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No NSEC can deny the name (RFC 4470's functions fail at the edges
    /// of the canonical order).
    #[error(transparent)]
    NoCover(#[from] super::nsec::NoCover),
    /// The data to sign could not be encoded.
    #[error(transparent)]
    Encode(#[from] ProtoError),
}

/// The validity of the signatures made in one refresh window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Where the window starts (unix seconds).
    pub start: UnixTime,
    /// Where the next one starts.
    pub end: UnixTime,
    /// Signature inception: the start less an hour of clock skew.
    pub inception: u32,
    /// Signature expiration: inception plus the validity.
    pub expiration: u32,
}

impl Window {
    /// The window `now` falls in, with the zone's settings.
    pub fn at(now: UnixTime, settings: &Dnssec) -> Window {
        let refresh = u64::from(settings.refresh_days.max(1)) * DAY;
        let start = now - now % refresh;
        let inception = start.saturating_sub(SKEW);
        let expiration = inception + u64::from(settings.signature_validity_days) * DAY;
        Window {
            start,
            end: start + refresh,
            // RRSIG times are serial numbers modulo 2^32 (RFC 4034 §3.1.5).
            inception: inception as u32,
            expiration: expiration as u32,
        }
    }
}

/// The keys that sign and the window, from one key event (a timing
/// change, a new window) to the next: what a cached signature was made
/// under. Its `id` is part of every cache key, so a rollover step or a
/// new window never serves an old signature.
#[derive(Debug)]
struct Epoch {
    id: u64,
    from: UnixTime,
    until: UnixTime,
    window: Window,
    /// Signers of everything but DNSKEY.
    zone: Vec<Arc<ZoneKey>>,
    /// Signers of DNSKEY.
    key: Vec<Arc<ZoneKey>>,
    /// The DNSKEY RRset's records.
    dnskeys: Vec<DNSKEY>,
}

/// The RRSIGs of one RRset, one per signing key, in the two forms the
/// replies need.
#[derive(Debug)]
pub struct Signatures {
    rrsigs: Vec<RRSIG>,
    /// Each signature as a whole answer record whose owner is a pointer to
    /// the question's name (offset 12): what the fast reply form copies.
    wire: Box<[u8]>,
    expiration: u32,
}

impl Signatures {
    /// The RRSIG rdata, one per key.
    pub fn rrsigs(&self) -> &[RRSIG] {
        &self.rrsigs
    }

    /// The signatures as answer records owned by the question's name.
    pub fn records(&self, owner: &Name, ttl: u32) -> impl Iterator<Item = Record> + '_ {
        let owner = owner.clone();
        self.rrsigs.iter().map(move |s| {
            Record::from_rdata(
                owner.clone(),
                ttl,
                RData::DNSSEC(DNSSECRData::RRSIG(s.clone())),
            )
        })
    }

    /// The signatures in wire form, each owned by a compression pointer to
    /// offset 12 (the question's name), ready to append to an answer
    /// section; and how many records that is.
    pub fn answer_wire(&self) -> (&[u8], u16) {
        (&self.wire, self.rrsigs.len() as u16)
    }

    /// When the signatures expire (RRSIG serial time).
    pub fn expiration(&self) -> u32 {
        self.expiration
    }
}

/// How much signing a zone did, for `/metrics`.
#[derive(Debug, Default)]
pub struct SignStats {
    made: AtomicU64,
    hits: AtomicU64,
    /// When the signatures served now expire (0: none served yet).
    earliest: AtomicU32,
}

impl SignStats {
    /// Signatures made (one per key and RRset).
    pub fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// RRsets whose signatures came from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// When the signatures served now expire, unix seconds: the earliest
    /// expiration of any signature this server still serves.
    pub fn earliest_expiration(&self) -> Option<UnixTime> {
        match self.earliest.load(Ordering::Relaxed) {
            0 => None,
            e => Some(u64::from(e)),
        }
    }
}

/// One signed zone's signing state: its settings, its current keys
/// (swapped when the key files change) and its signature cache.
pub struct ZoneSigner {
    /// How the zone is signed.
    pub settings: Dnssec,
    keys: ArcSwap<KeySet>,
    epoch: ArcSwap<Epoch>,
    epochs: AtomicU64,
    cache: moka::sync::Cache<Box<[u8]>, Arc<Signatures>>,
    stats: SignStats,
}

impl std::fmt::Debug for ZoneSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneSigner")
            .field("settings", &self.settings)
            .field("keys", &self.keys.load())
            .finish_non_exhaustive()
    }
}

/// The scratch buffers a cache key is built in, reused by each thread so
/// that a cache hit allocates nothing.
#[derive(Default)]
struct Scratch {
    key: Vec<u8>,
    rdata: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

/// The bytes a cache entry counts for: its key, its signatures in both
/// forms, and the cache's own bookkeeping.
#[allow(clippy::borrowed_box)] // the cache's key type is `Box<[u8]>`
fn weight(key: &Box<[u8]>, sigs: &Arc<Signatures>) -> u32 {
    (key.len() + sigs.wire.len() * 2 + ENTRY_OVERHEAD)
        .try_into()
        .unwrap_or(u32::MAX)
}

/// What the cache had for an RRset.
enum Lookup {
    Hit(Arc<Signatures>),
    /// Not there: the key to insert it under.
    Miss(Box<[u8]>),
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ZoneSigner {
    /// A signer for a zone with these settings and keys.
    pub fn new(settings: Dnssec, keys: KeySet) -> ZoneSigner {
        let now = unix_now();
        let epoch = make_epoch(0, &keys, &settings, now);
        ZoneSigner {
            settings,
            keys: ArcSwap::from_pointee(keys),
            epoch: ArcSwap::from_pointee(epoch),
            epochs: AtomicU64::new(1),
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(weight)
                .build(),
            stats: SignStats::default(),
        }
    }

    /// The keys signing now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Replaces the keys (new key files, a rollover step).
    pub fn set_keys(&self, keys: KeySet) {
        let id = self.epochs.fetch_add(1, Ordering::Relaxed);
        let epoch = make_epoch(id, &keys, &self.settings, unix_now());
        self.keys.store(Arc::new(keys));
        self.epoch.store(Arc::new(epoch));
    }

    /// How much this zone signed.
    pub fn stats(&self) -> &SignStats {
        &self.stats
    }

    /// The zone's apex, the signer name of its signatures.
    pub fn zone(&self) -> Name {
        self.keys.load().zone.clone()
    }

    /// The epoch in force at `now`, made anew at a key event.
    fn epoch(&self, now: UnixTime) -> Arc<Epoch> {
        let e = self.epoch.load_full();
        if e.from <= now && now < e.until {
            return e;
        }
        let id = self.epochs.fetch_add(1, Ordering::Relaxed);
        let fresh = Arc::new(make_epoch(id, &self.keys.load(), &self.settings, now));
        self.epoch.store(fresh.clone());
        fresh
    }

    /// The DNSKEY RRset at `now` (the published keys), owned by `apex`.
    pub fn dnskey_records(&self, apex: &Name, ttl: u32, now: UnixTime) -> Vec<Record> {
        self.epoch(now)
            .dnskeys
            .iter()
            .map(|k| {
                Record::from_rdata(
                    apex.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::DNSKEY(k.clone())),
                )
            })
            .collect()
    }

    /// The signatures of the RRset `owner`/`rtype`/`ttl` with these
    /// rdatas, at `now`: from the cache, else made with every key that
    /// signs `rtype` now and cached. `owner` is signed as given (its label
    /// count: no wildcard synthesis).
    pub fn sign<R: Borrow<RData>>(
        &self,
        owner: &Name,
        rtype: RecordType,
        ttl: u32,
        rdata: impl Iterator<Item = R> + Clone,
        now: UnixTime,
    ) -> Result<Arc<Signatures>, SignError> {
        let epoch = self.epoch(now);
        let lookup = SCRATCH.with_borrow_mut(|s| {
            cache_key(s, epoch.id, owner, rtype, ttl, rdata.clone())?;
            Ok::<_, SignError>(match self.cache.get(&s.key[..]) {
                Some(sigs) => Lookup::Hit(sigs),
                None => Lookup::Miss(s.key.as_slice().into()),
            })
        })?;
        let sigs = match lookup {
            Lookup::Hit(sigs) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                sigs
            }
            Lookup::Miss(key) => {
                let sigs = Arc::new(self.make(&epoch, owner, rtype, ttl, rdata)?);
                self.cache.insert(key, sigs.clone());
                sigs
            }
        };
        self.note_expiration(sigs.expiration);
        Ok(sigs)
    }

    fn note_expiration(&self, expiration: u32) {
        // Every signature of a window expires at once, and a cached one
        // from an older window is never served: the last served is the
        // earliest. Read first, so a hit does not write a shared line.
        let e = &self.stats.earliest;
        if e.load(Ordering::Relaxed) != expiration {
            e.store(expiration, Ordering::Relaxed);
        }
    }

    fn make<R: Borrow<RData>>(
        &self,
        epoch: &Epoch,
        owner: &Name,
        rtype: RecordType,
        ttl: u32,
        rdata: impl Iterator<Item = R>,
    ) -> Result<Signatures, SignError> {
        let signers = if rtype == RecordType::DNSKEY {
            &epoch.key
        } else {
            &epoch.zone
        };
        if signers.is_empty() {
            return Err(SignError::NoKey(rtype));
        }
        let owner = owner.to_lowercase();
        let records: Vec<Record> = rdata
            .map(|rd| Record::from_rdata(owner.clone(), ttl, rd.borrow().clone()))
            .collect();
        let zone = self.keys.load().zone.clone();
        let mut rrsigs = Vec::with_capacity(signers.len());
        let mut wire = Vec::new();
        for key in signers {
            let input = SigInput {
                type_covered: rtype,
                algorithm: key.algorithm(),
                num_labels: owner.num_labels(),
                original_ttl: ttl,
                sig_expiration: SerialNumber::new(epoch.window.expiration),
                sig_inception: SerialNumber::new(epoch.window.inception),
                key_tag: key.tag,
                signer_name: zone.clone(),
            };
            let tbs = TBS::from_input(&owner, DNSClass::IN, &input, records.iter())?;
            let sig = key.sign(&tbs)?;
            self.stats.made.fetch_add(1, Ordering::Relaxed);
            let rrsig = RRSIG::from_sig(input, sig);
            push_rrsig_record(&mut wire, &rrsig, ttl)?;
            rrsigs.push(rrsig);
        }
        Ok(Signatures {
            rrsigs,
            wire: wire.into_boxed_slice(),
            expiration: epoch.window.expiration,
        })
    }
}

/// Appends one RRSIG answer record, owned by a pointer to offset 12.
fn push_rrsig_record(out: &mut Vec<u8>, rrsig: &RRSIG, ttl: u32) -> Result<(), ProtoError> {
    out.extend_from_slice(&[0xC0, 12]);
    out.extend_from_slice(&u16::from(RecordType::RRSIG).to_be_bytes());
    out.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    {
        let at = out.len() as u32;
        let mut enc = BinEncoder::with_offset(out, at);
        // RFC 4034 §3.1.7: the signer's name is never compressed.
        let mut enc = enc.with_name_encoding(NameEncoding::Uncompressed);
        rrsig.emit(&mut enc)?;
    }
    let rdlen = u16::try_from(out.len() - len_at - 2)
        .map_err(|_| ProtoError::from("RRSIG longer than 65535 bytes"))?;
    out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    Ok(())
}

/// The cache key of an RRset in `s.key`: the epoch, type, TTL, canonical
/// (lower-case) owner and the rdatas in canonical form and order.
fn cache_key<R: Borrow<RData>>(
    s: &mut Scratch,
    epoch: u64,
    owner: &Name,
    rtype: RecordType,
    ttl: u32,
    rdata: impl Iterator<Item = R>,
) -> Result<(), ProtoError> {
    s.key.clear();
    s.rdata.clear();
    s.ranges.clear();
    s.key.extend_from_slice(&epoch.to_le_bytes());
    s.key.extend_from_slice(&u16::from(rtype).to_be_bytes());
    s.key.extend_from_slice(&ttl.to_be_bytes());
    {
        let at = s.key.len() as u32;
        let mut enc = BinEncoder::with_offset(&mut s.key, at);
        let mut enc = enc.with_name_encoding(NameEncoding::UncompressedLowercase);
        owner.emit(&mut enc)?;
    }
    for rd in rdata {
        let start = s.rdata.len();
        {
            let at = s.rdata.len() as u32;
            let mut enc = BinEncoder::with_offset(&mut s.rdata, at);
            enc.set_canonical_form(true);
            let mut enc = enc.with_name_encoding(NameEncoding::UncompressedLowercase);
            rd.borrow().emit(&mut enc)?;
        }
        s.ranges.push((start, s.rdata.len()));
    }
    let rdata = &s.rdata;
    s.ranges
        .sort_unstable_by(|a, b| rdata[a.0..a.1].cmp(&rdata[b.0..b.1]));
    for &(a, b) in &s.ranges {
        s.key.extend_from_slice(&((b - a) as u16).to_be_bytes());
        s.key.extend_from_slice(&rdata[a..b]);
    }
    Ok(())
}

/// The epoch at `now`: which keys sign and are published, and until when
/// that holds (the next key event or the next window).
fn make_epoch(id: u64, keys: &KeySet, settings: &Dnssec, now: UnixTime) -> Epoch {
    let window = Window::at(now, settings);
    let mut from = window.start;
    let mut until = window.end;
    for k in &keys.keys {
        let t = &k.timing;
        for event in [t.publish, t.activate, t.inactive, t.delete]
            .into_iter()
            .flatten()
        {
            if event <= now {
                from = from.max(event);
            } else {
                until = until.min(event);
            }
        }
    }
    Epoch {
        id,
        from,
        until,
        window,
        zone: keys.zone_signers(now).into_iter().cloned().collect(),
        key: keys.key_signers(now).into_iter().cloned().collect(),
        dnskeys: keys.published(now).map(|k| k.dnskey.clone()).collect(),
    }
}

/// The signers of every signed zone, by zone name (lower case, trailing
/// dot, as [`crate::config::Zone::name`]).
#[derive(Debug, Default)]
pub struct Signers {
    /// Signer by zone name.
    pub zones: HashMap<String, Arc<ZoneSigner>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DnssecAlgorithm;
    use crate::dnssec::keys::{Role, Timing};
    use hickory_proto::dnssec::Verifier;
    use hickory_proto::rr::rdata::{A, CNAME};

    const NOW: UnixTime = 1_800_000_000;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn signer(keys: Vec<ZoneKey>) -> ZoneSigner {
        let set = KeySet {
            zone: n("zone.test."),
            keys: keys.into_iter().map(Arc::new).collect(),
        };
        ZoneSigner::new(Dnssec::default(), set)
    }

    fn key(alg: DnssecAlgorithm, role: Role) -> ZoneKey {
        ZoneKey::generate(alg, role, Timing::default()).unwrap()
    }

    /// Checks every signature against the key of its tag with hickory's
    /// verifier.
    fn verify(s: &ZoneSigner, sigs: &Signatures, records: &[Record]) {
        let keys = s.keys();
        assert!(!sigs.rrsigs().is_empty());
        for rrsig in sigs.rrsigs() {
            let k = keys
                .keys
                .iter()
                .find(|k| k.tag == rrsig.input().key_tag)
                .unwrap();
            k.dnskey
                .verify_rrsig(&records[0].name, DNSClass::IN, rrsig, records.iter())
                .unwrap();
        }
    }

    #[test]
    fn signatures_verify_for_both_algorithms() {
        for alg in [DnssecAlgorithm::EcdsaP256Sha256, DnssecAlgorithm::Ed25519] {
            let s = signer(vec![key(alg, Role::Csk)]);
            // Signed in the question's case; verified in any.
            let owner = n("WwW.Zone.Test.");
            let records: Vec<Record> = ["192.0.2.2", "192.0.2.1"]
                .iter()
                .map(|a| Record::from_rdata(owner.clone(), 20, RData::A(A(a.parse().unwrap()))))
                .collect();
            let rdata = records.iter().map(|r| &r.data);
            let sigs = s.sign(&owner, RecordType::A, 20, rdata, NOW).unwrap();
            verify(&s, &sigs, &records);
            let input = sigs.rrsigs()[0].input();
            assert_eq!(input.num_labels, 3);
            assert_eq!(input.original_ttl, 20);
            assert_eq!(input.signer_name, n("zone.test."));
            let cname = Record::from_rdata(
                owner.clone(),
                20,
                RData::CNAME(CNAME(n("Target.Example.NET."))),
            );
            let sigs = s
                .sign(
                    &owner,
                    RecordType::CNAME,
                    20,
                    [&cname.data].into_iter(),
                    NOW,
                )
                .unwrap();
            verify(&s, &sigs, &[cname]);
        }
    }

    #[test]
    fn the_window_is_aligned_and_the_cache_answers_the_same_rrset() {
        let s = signer(vec![key(DnssecAlgorithm::EcdsaP256Sha256, Role::Csk)]);
        let w = Window::at(NOW, &s.settings);
        assert_eq!(w.start % (7 * DAY), 0);
        assert!(w.start <= NOW && NOW < w.end);
        assert_eq!(u64::from(w.inception), w.start - 3600);
        assert_eq!(w.expiration - w.inception, 14 * DAY as u32);
        let owner = n("a.zone.test.");
        let rd = |a: &str| RData::A(A(a.parse().unwrap()));
        let one = [rd("192.0.2.1"), rd("192.0.2.2")];
        let two = [rd("192.0.2.2"), rd("192.0.2.1")];
        let first = s.sign(&owner, RecordType::A, 20, one.iter(), NOW).unwrap();
        // Same RRset in another order, later in the window: a hit.
        let again = s
            .sign(
                &n("A.ZONE.test."),
                RecordType::A,
                20,
                two.iter(),
                NOW + 3600,
            )
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!((s.stats().made(), s.stats().hits()), (1, 1));
        assert_eq!(
            s.stats().earliest_expiration(),
            Some(u64::from(w.expiration))
        );
        // Another TTL, another rdata, another owner, the next window: new.
        let miss = [
            s.sign(&owner, RecordType::A, 21, one.iter(), NOW).unwrap(),
            s.sign(&owner, RecordType::A, 20, one[..1].iter(), NOW)
                .unwrap(),
            s.sign(&n("b.zone.test."), RecordType::A, 20, one.iter(), NOW)
                .unwrap(),
            s.sign(&owner, RecordType::A, 20, one.iter(), w.end)
                .unwrap(),
        ];
        for m in &miss {
            assert!(!Arc::ptr_eq(&first, m));
        }
        assert_eq!(s.stats().made(), 5);
        let next = &miss[3].rrsigs()[0].input();
        assert_eq!(next.sig_inception.get(), w.inception + 7 * DAY as u32);
    }

    #[test]
    fn ksk_signs_dnskey_zsk_the_rest_and_the_wire_form_decodes() {
        let ksk = key(DnssecAlgorithm::EcdsaP256Sha256, Role::Ksk);
        let zsk = key(DnssecAlgorithm::Ed25519, Role::Zsk);
        let (ktag, ztag) = (ksk.tag, zsk.tag);
        let s = signer(vec![ksk, zsk]);
        let apex = n("zone.test.");
        let dnskeys = s.dnskey_records(&apex, 3600, NOW);
        assert_eq!(dnskeys.len(), 2);
        let rdata = dnskeys.iter().map(|r| &r.data);
        let sigs = s.sign(&apex, RecordType::DNSKEY, 3600, rdata, NOW).unwrap();
        assert_eq!(sigs.rrsigs().len(), 1);
        assert_eq!(sigs.rrsigs()[0].input().key_tag, ktag);
        verify(&s, &sigs, &dnskeys);
        let a = [RData::A(A("192.0.2.1".parse().unwrap()))];
        let sigs = s.sign(&apex, RecordType::A, 20, a.iter(), NOW).unwrap();
        assert_eq!(sigs.rrsigs()[0].input().key_tag, ztag);
        // The wire form: a record owned by a pointer to offset 12.
        let (wire, count) = sigs.answer_wire();
        assert_eq!(count, 1);
        assert_eq!(&wire[..4], &[0xC0, 12, 0, 46]);
        let rdlen = usize::from(u16::from_be_bytes([wire[10], wire[11]]));
        assert_eq!(wire.len(), 12 + rdlen);
    }

    #[test]
    fn no_active_key_is_an_error() {
        let mut k = key(DnssecAlgorithm::EcdsaP256Sha256, Role::Csk);
        k.timing.inactive = Some(NOW - 1);
        let s = signer(vec![k]);
        let a = [RData::A(A("192.0.2.1".parse().unwrap()))];
        let r = s.sign(&n("a.zone.test."), RecordType::A, 20, a.iter(), NOW);
        assert!(matches!(r, Err(SignError::NoKey(RecordType::A))));
    }
}
