//! A signed zone's keys: the key pairs, their roles and their timing
//! (RFC 7583's Publish, Activate, Inactive and Delete), and which of them
//! are in the DNSKEY RRset and which sign at a given moment.

use std::sync::Arc;

use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey};
use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::dnssec::{Algorithm, SigningKey, TBS};
use hickory_proto::rr::Name;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::config::DnssecAlgorithm;

/// The PKCS#8 header ring writes before a P-256 private scalar (version,
/// id-ecPublicKey, prime256v1, ECPrivateKey version 1, the scalar's
/// OCTET STRING header); the public point follows the scalar after
/// `a1 44 03 42 00`.
const P256_PKCS8_PREFIX: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];

/// A key pair as key files hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct RawKeyPair {
    /// The ECDSA P-256 scalar or the Ed25519 seed.
    pub private: Vec<u8>,
    /// The public key as in DNSKEY (P-256: x and y; Ed25519: 32 bytes).
    pub public: Vec<u8>,
}

impl std::fmt::Debug for RawKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawKeyPair").finish_non_exhaustive()
    }
}

/// hickory's algorithm of a configured one.
pub fn algorithm_of(algorithm: DnssecAlgorithm) -> Algorithm {
    match algorithm {
        DnssecAlgorithm::EcdsaP256Sha256 => Algorithm::ECDSAP256SHA256,
        DnssecAlgorithm::Ed25519 => Algorithm::ED25519,
    }
}

/// Unix time in seconds.
pub type UnixTime = u64;

/// Why a key cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The crypto library refused (a bad key, an unsupported algorithm).
    #[error("{0}")]
    Crypto(String),
}

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Combined signing key: signs every RRset (DNSKEY flags 257).
    Csk,
    /// Key-signing key: signs the DNSKEY RRset only (flags 257).
    Ksk,
    /// Zone-signing key: signs every RRset but DNSKEY (flags 256).
    Zsk,
}

impl Role {
    /// The role's name, as `dnssec status` prints it and `/metrics`
    /// labels it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Csk => "CSK",
            Role::Ksk => "KSK",
            Role::Zsk => "ZSK",
        }
    }

    /// The DNSKEY flags of a key in this role: Zone Key, and SEP for a
    /// KSK or CSK (RFC 4034 §2.1.1).
    pub fn flags(self) -> u16 {
        match self {
            Role::Csk | Role::Ksk => 257,
            Role::Zsk => 256,
        }
    }
}

/// When a key enters and leaves the zone (RFC 7583 §3.1; BIND's
/// timing metadata). `None`: no such event is set (a key with no Publish
/// and no Activate is published and active from its creation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// When the key was made.
    pub created: Option<UnixTime>,
    /// From when the key is in the DNSKEY RRset.
    pub publish: Option<UnixTime>,
    /// From when the key signs.
    pub activate: Option<UnixTime>,
    /// From when the key no longer signs.
    pub inactive: Option<UnixTime>,
    /// From when the key is no longer in the DNSKEY RRset.
    pub delete: Option<UnixTime>,
}

/// Where a key is in its life at a moment (RFC 7583 §3.1, with BIND's
/// event names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Made, not yet published.
    Created,
    /// In the DNSKEY RRset, not (yet or any more) signing.
    Published,
    /// Published and signing.
    Active,
    /// Still published, no longer signing.
    Inactive,
    /// Gone from the DNSKEY RRset.
    Removed,
}

impl KeyState {
    /// The state's name, as `dnssec status` prints it and `/metrics`
    /// labels it.
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Created => "created",
            KeyState::Published => "published",
            KeyState::Active => "active",
            KeyState::Inactive => "inactive",
            KeyState::Removed => "removed",
        }
    }

    /// Every state, in the order a key goes through them.
    pub const ALL: [KeyState; 5] = [
        KeyState::Created,
        KeyState::Published,
        KeyState::Active,
        KeyState::Inactive,
        KeyState::Removed,
    ];
}

impl Timing {
    /// The key's state at `now`.
    pub fn state(&self, now: UnixTime) -> KeyState {
        if self.active(now) {
            KeyState::Active
        } else if self.published(now) {
            if self.inactive.is_some_and(|i| i <= now) {
                KeyState::Inactive
            } else {
                KeyState::Published
            }
        } else if self.delete.is_some_and(|d| d <= now) {
            KeyState::Removed
        } else {
            KeyState::Created
        }
    }

    /// In the DNSKEY RRset at `now`: published (or active) and not deleted.
    pub fn published(&self, now: UnixTime) -> bool {
        let from = self.publish.or(self.activate).unwrap_or(0);
        from <= now && self.delete.is_none_or(|d| now < d)
    }

    /// Signing at `now`: activated, not inactive, and published.
    pub fn active(&self, now: UnixTime) -> bool {
        self.activate.unwrap_or(0) <= now
            && self.inactive.is_none_or(|i| now < i)
            && self.published(now)
    }
}

/// One key of a zone: its private half, its DNSKEY and its timing.
pub struct ZoneKey {
    /// What the key signs.
    pub role: Role,
    /// The public half, as served in the DNSKEY RRset.
    pub dnskey: DNSKEY,
    /// The key tag (RFC 4034 Appendix B).
    pub tag: u16,
    /// When it is published, signs, stops and goes.
    pub timing: Timing,
    signer: Box<dyn SigningKey>,
}

impl std::fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneKey")
            .field("role", &self.role)
            .field("algorithm", &self.algorithm())
            .field("tag", &self.tag)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl ZoneKey {
    /// A key from its private key in PKCS#8 form.
    pub fn from_pkcs8(
        algorithm: Algorithm,
        pkcs8: &[u8],
        role: Role,
        timing: Timing,
    ) -> Result<ZoneKey, KeyError> {
        let der = PrivatePkcs8KeyDer::from(pkcs8);
        let signer: Box<dyn SigningKey> = match algorithm {
            Algorithm::ECDSAP256SHA256 => Box::new(
                EcdsaSigningKey::from_pkcs8(&der, algorithm)
                    .map_err(|e| KeyError::Crypto(e.to_string()))?,
            ),
            Algorithm::ED25519 => Box::new(
                Ed25519SigningKey::from_pkcs8(&der).map_err(|e| KeyError::Crypto(e.to_string()))?,
            ),
            other => {
                return Err(KeyError::Crypto(format!(
                    "algorithm {other} is not supported"
                )));
            }
        };
        ZoneKey::from_signer(signer, role, timing)
    }

    /// A key around a signer of hickory's.
    pub fn from_signer(
        signer: Box<dyn SigningKey>,
        role: Role,
        timing: Timing,
    ) -> Result<ZoneKey, KeyError> {
        let public = signer
            .to_public_key()
            .map_err(|e| KeyError::Crypto(e.to_string()))?;
        let dnskey = DNSKEY::with_flags(role.flags(), public);
        let tag = dnskey
            .calculate_key_tag()
            .map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(ZoneKey {
            role,
            dnskey,
            tag,
            timing,
            signer,
        })
    }

    /// A key from its two halves as BIND's key files hold them: the
    /// private key (the ECDSA P-256 scalar or the Ed25519 seed, 32 bytes)
    /// and the DNSKEY public key; refused when they are not one pair.
    pub fn from_private(
        algorithm: Algorithm,
        private: &[u8],
        public: &[u8],
        role: Role,
        timing: Timing,
    ) -> Result<ZoneKey, KeyError> {
        let rejected = |e: ring::error::KeyRejected| {
            KeyError::Crypto(format!("the private and public keys are not one pair: {e}"))
        };
        let signer: Box<dyn SigningKey> = match algorithm {
            Algorithm::ECDSAP256SHA256 => {
                // ring takes the public point uncompressed: 0x04, x, y.
                let point = [&[4u8][..], public].concat();
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    private,
                    &point,
                    &SystemRandom::new(),
                )
                .map_err(rejected)?;
                Box::new(EcdsaSigningKey::from_ecdsa(pair, algorithm))
            }
            Algorithm::ED25519 => Box::new(Ed25519SigningKey::from_ed25519(
                Ed25519KeyPair::from_seed_and_public_key(private, public).map_err(rejected)?,
            )),
            other => {
                return Err(KeyError::Crypto(format!(
                    "algorithm {other} is not supported"
                )));
            }
        };
        ZoneKey::from_signer(signer, role, timing)
    }

    /// A new key pair's two halves, as [`ZoneKey::from_private`] takes
    /// them and the key files hold them.
    pub fn generate_private(algorithm: DnssecAlgorithm) -> Result<RawKeyPair, KeyError> {
        let rng = SystemRandom::new();
        match algorithm {
            DnssecAlgorithm::EcdsaP256Sha256 => {
                // ring makes P-256 keys only as PKCS#8, always in this
                // layout (its template): the scalar, then the public point.
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|e| KeyError::Crypto(e.to_string()))?;
                let der = doc.as_ref();
                if der.len() != 138 || der[..P256_PKCS8_PREFIX.len()] != P256_PKCS8_PREFIX {
                    return Err(KeyError::Crypto(
                        "unexpected PKCS#8 layout of a new P-256 key".into(),
                    ));
                }
                Ok(RawKeyPair {
                    private: der[36..68].to_vec(),
                    public: der[74..138].to_vec(),
                })
            }
            DnssecAlgorithm::Ed25519 => {
                let mut seed = [0u8; 32];
                rng.fill(&mut seed)
                    .map_err(|_| KeyError::Crypto("no random numbers".into()))?;
                let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                    .map_err(|e| KeyError::Crypto(e.to_string()))?;
                Ok(RawKeyPair {
                    private: seed.to_vec(),
                    public: pair.public_key().as_ref().to_vec(),
                })
            }
        }
    }

    /// A new key pair (PKCS#8, for the key files) of `algorithm`.
    pub fn generate_pkcs8(algorithm: DnssecAlgorithm) -> Result<Vec<u8>, KeyError> {
        let der = match algorithm {
            DnssecAlgorithm::EcdsaP256Sha256 => {
                EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256)
            }
            DnssecAlgorithm::Ed25519 => Ed25519SigningKey::generate_pkcs8(),
        }
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(der.secret_pkcs8_der().to_vec())
    }

    /// A new key held in memory only (tests, benchmarks).
    pub fn generate(
        algorithm: DnssecAlgorithm,
        role: Role,
        timing: Timing,
    ) -> Result<ZoneKey, KeyError> {
        let pkcs8 = ZoneKey::generate_pkcs8(algorithm)?;
        ZoneKey::from_pkcs8(algorithm_of(algorithm), &pkcs8, role, timing)
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.signer.algorithm()
    }

    /// Signs the data of an RRSIG (RFC 4034 §3.1.8.1).
    pub fn sign(&self, tbs: &TBS) -> Result<Vec<u8>, KeyError> {
        self.signer
            .sign(tbs)
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }
}

/// The keys of one zone, as loaded; which of them serve at a moment is
/// asked with a time, so a rollover happens without a reload.
#[derive(Debug)]
pub struct KeySet {
    /// The zone's apex (the signer name of every signature).
    pub zone: Name,
    /// Every key loaded, whatever its state.
    pub keys: Vec<Arc<ZoneKey>>,
}

impl KeySet {
    /// The keys in the DNSKEY RRset at `now`.
    pub fn published(&self, now: UnixTime) -> impl Iterator<Item = &Arc<ZoneKey>> {
        self.keys.iter().filter(move |k| k.timing.published(now))
    }

    /// The keys that sign RRsets other than DNSKEY at `now`: active ZSKs
    /// and CSKs (a zone with only a KSK active signs with it).
    pub fn zone_signers(&self, now: UnixTime) -> Vec<&Arc<ZoneKey>> {
        let active: Vec<_> = self.keys.iter().filter(|k| k.timing.active(now)).collect();
        let zsks: Vec<_> = active
            .iter()
            .copied()
            .filter(|k| k.role != Role::Ksk)
            .collect();
        if zsks.is_empty() { active } else { zsks }
    }

    /// The keys that sign the DNSKEY RRset at `now`: active KSKs and CSKs
    /// (a zone with only a ZSK active signs with it).
    pub fn key_signers(&self, now: UnixTime) -> Vec<&Arc<ZoneKey>> {
        let active: Vec<_> = self.keys.iter().filter(|k| k.timing.active(now)).collect();
        let ksks: Vec<_> = active
            .iter()
            .copied()
            .filter(|k| k.role != Role::Zsk)
            .collect();
        if ksks.is_empty() { active } else { ksks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::dnssec::PublicKey;

    #[test]
    fn timing_follows_rfc_7583() {
        let t = Timing {
            created: Some(0),
            publish: Some(100),
            activate: Some(200),
            inactive: Some(300),
            delete: Some(400),
        };
        assert!(!t.published(99) && !t.active(99));
        assert!(t.published(100) && !t.active(100));
        assert!(t.published(200) && t.active(200));
        assert!(t.published(300) && !t.active(300));
        assert!(!t.published(400) && !t.active(400));
        assert!(Timing::default().active(0));
    }

    #[test]
    fn generated_keys_have_their_flags_and_tags() {
        for alg in [DnssecAlgorithm::EcdsaP256Sha256, DnssecAlgorithm::Ed25519] {
            let k = ZoneKey::generate(alg, Role::Csk, Timing::default()).unwrap();
            assert_eq!(k.dnskey.flags(), 257);
            assert_eq!(k.tag, k.dnskey.calculate_key_tag().unwrap());
        }
    }

    #[test]
    fn raw_pairs_make_keys() {
        for alg in [DnssecAlgorithm::EcdsaP256Sha256, DnssecAlgorithm::Ed25519] {
            let pair = ZoneKey::generate_private(alg).unwrap();
            assert_eq!(pair.private.len(), 32);
            let k = ZoneKey::from_private(
                algorithm_of(alg),
                &pair.private,
                &pair.public,
                Role::Zsk,
                Timing::default(),
            )
            .unwrap();
            assert_eq!(k.dnskey.public_key().public_bytes(), &pair.public[..]);
            assert_eq!(k.dnskey.flags(), 256);
            let other = ZoneKey::generate_private(alg).unwrap();
            assert!(
                ZoneKey::from_private(
                    algorithm_of(alg),
                    &pair.private,
                    &other.public,
                    Role::Zsk,
                    Timing::default()
                )
                .is_err()
            );
        }
    }

    #[test]
    fn key_tag_of_a_bind_key() {
        // Made by dnssec-keygen -a ECDSAP256SHA256 example.com: Kexample.com.+013+46984.
        let b64 = |s: &str| data_encoding::BASE64.decode(s.as_bytes()).unwrap();
        let k = ZoneKey::from_private(
            Algorithm::ECDSAP256SHA256,
            &b64("uih05DlseSS0z2IOc6Ywi8XK5PHbV4drNF9Isakv97w="),
            &b64("RZTydUd3a9dAzfdjhx7a493az1Q2wt3BoUkzRsE9e/hC7hGwbLSL/AjYHn6hyeYOfNXNlmrhEUKXMH63nRfkZw=="),
            Role::Zsk,
            Timing::default(),
        )
        .unwrap();
        assert_eq!(k.tag, 46984);
    }
}
