//! Signatures made online: RRSIGs whose inception and expiration are
//! aligned to a window, made once per distinct RRset and key and kept in
//! a bounded cache.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::keys::KeySet;
use crate::config::Dnssec;

/// One signed zone's signing state: its settings and its current keys
/// (swapped when the key files change).
#[derive(Debug)]
pub struct ZoneSigner {
    /// How the zone is signed.
    pub settings: Dnssec,
    keys: ArcSwap<KeySet>,
}

impl ZoneSigner {
    /// A signer for a zone with these settings and keys.
    pub fn new(settings: Dnssec, keys: KeySet) -> ZoneSigner {
        ZoneSigner {
            settings,
            keys: ArcSwap::from_pointee(keys),
        }
    }

    /// The keys signing now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Replaces the keys (new key files, a rollover step).
    pub fn set_keys(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
    }
}

/// The signers of every signed zone, by zone name (lower case, trailing
/// dot, as [`crate::config::Zone::name`]).
#[derive(Debug, Default)]
pub struct Signers {
    /// Signer by zone name.
    pub zones: HashMap<String, Arc<ZoneSigner>>,
}
