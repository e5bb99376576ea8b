//! Where a query comes from: a small cache on each DNS thread in front of
//! the shared GeoIP service.
//!
//! Most queries come from a few thousand resolvers and, with ECS, from
//! subnets their clients share, so the same addresses are located over and
//! over. The shared cache ([`crate::geo::Geo`]) answers them, but each hit
//! takes its locks and copies the answer's strings; here each thread keeps
//! the located [`Location`] behind an `Arc` it hands to every request from
//! that address, without touching memory another thread writes.
//!
//! Real traffic also brings addresses seen once (ECS from hundreds of
//! thousands of client networks): for them, what repeats is the database
//! record, not the address. So behind the cache by address is one by the
//! matched records ([`crate::geo::RecordKey`]): a new address costs the two
//! search tree walks and a probe, and a record is decoded (and its strings
//! allocated) only the first time this thread meets it. Neither goes
//! through the shared cache; a record decoded here counts as its miss.
//!
//! The table by address is sized for a working set of client networks, not
//! a few resolvers: a walk of a million-network tree touches a cache line
//! per level (two trees, City and ASN), so an address met again must not
//! walk again. It is a two-way set-associative table of fixed size
//! ([`SETS`] × 2 entries, 4 MiB per DNS thread, allocated on first use):
//! a lookup is one hash and at most two compares, a new address replaces
//! the older of its set, and nothing is ever cleared wholesale, so a full
//! table costs no burst of misses (the old one, a map emptied when full,
//! did). Both tables are emptied when the GeoIP databases are replaced; the
//! records table when it is full.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use crate::geo::{Geo, RecordKey};
use crate::openmix::Location;

/// Sets of the table by address (two entries each): 131,072 addresses
/// per thread, enough for the client networks of a busy node (the
/// realistic benchmark asks from 100,000).
const SETS: usize = 1 << 16;

/// Matched records one thread remembers before it starts over: a City
/// database has far fewer distinct records than networks (GeoLite2-City:
/// a few hundred thousand, most traffic from a few thousand of them), and
/// each entry is a key and an `Arc` (its `Location` is shared with the
/// address entries), a few MB when full.
const RECORDS_CAPACITY: usize = 32_768;

/// One located address: the address as an IPv6 number (IPv4 mapped), its
/// location and the matched network's prefix length.
#[derive(Clone, Default)]
struct Entry {
    addr: u128,
    located: Option<Arc<Location>>,
    prefix: u8,
}

/// The table by address: `2 × SETS` entries, the newer of a set first.
struct Addresses {
    entries: Box<[Entry]>,
}

impl Addresses {
    fn new() -> Addresses {
        Addresses {
            entries: vec![Entry::default(); 2 * SETS].into_boxed_slice(),
        }
    }

    /// The address's set: a multiplicative hash of its bits (the low
    /// octets of a network address are mostly zero, so the high half of
    /// the product is taken).
    fn set(addr: u128) -> usize {
        let folded = (addr as u64) ^ ((addr >> 64) as u64).rotate_left(29);
        let h = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        2 * ((h >> 32) as usize & (SETS - 1))
    }

    fn get(&self, addr: u128) -> Option<(&Arc<Location>, u8)> {
        let at = Addresses::set(addr);
        self.entries[at..at + 2]
            .iter()
            .find(|e| e.addr == addr && e.located.is_some())
            .and_then(|e| Some((e.located.as_ref()?, e.prefix)))
    }

    /// Puts `addr` first in its set; the other entry becomes the one that
    /// was first (the older one goes).
    fn insert(&mut self, addr: u128, located: Arc<Location>, prefix: u8) {
        let at = Addresses::set(addr);
        self.entries.swap(at, at + 1);
        self.entries[at] = Entry {
            addr,
            located: Some(located),
            prefix,
        };
    }

    fn clear(&mut self) {
        self.entries.fill(Entry::default());
    }
}

struct Cache {
    generation: u64,
    located: Option<Addresses>,
    records: hashbrown::HashMap<RecordKey, Arc<Location>>,
}

impl Cache {
    fn start_over(&mut self, generation: u64) {
        if let Some(a) = self.located.as_mut() {
            a.clear();
        }
        self.records.clear();
        self.generation = generation;
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        generation: 0,
        located: None,
        records: hashbrown::HashMap::new(),
    });
}

/// The address as the table keys it: IPv4 as its mapped IPv6 form.
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Where `ip` is, and the prefix length of the network the answer holds
/// for (the ECS scope), as [`Geo::lookup`] says.
pub fn locate(geo: &Geo, ip: IpAddr) -> (Arc<Location>, u8) {
    let generation = geo.generation();
    let addr = key(ip);
    CACHE.with_borrow_mut(|c| {
        if c.generation != generation {
            c.start_over(generation);
        }
        let located = c.located.get_or_insert_with(Addresses::new);
        if let Some((loc, prefix)) = located.get(addr) {
            return (loc.clone(), prefix);
        }
        // One database set for the walk and the decode, and the records
        // cache holds only that set's (a reload may have come since).
        let view = geo.view();
        if view.generation() != c.generation {
            c.start_over(view.generation());
        }
        let (record, prefix) = view.records(ip);
        let loc = match c.records.get(&record) {
            Some(loc) => loc.clone(),
            None => {
                let loc = Arc::new(Location::from(view.lookup_uncached(ip)));
                if c.records.len() >= RECORDS_CAPACITY {
                    c.records.clear();
                }
                c.records.insert(record, loc.clone());
                loc
            }
        };
        c.located
            .get_or_insert_with(Addresses::new)
            .insert(addr, loc.clone(), prefix);
        (loc, prefix)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(country: &str) -> Arc<Location> {
        Arc::new(Location::from(crate::geo::ClientGeo {
            country: country.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_set_keeps_its_two_newest_addresses() {
        let mut t = Addresses::new();
        // Three addresses of one set: found by brute force over /24s.
        let first = key("198.51.100.0".parse().unwrap());
        let set = Addresses::set(first);
        let same: Vec<u128> = (0u32..)
            .map(|i| key(IpAddr::V4((0x0A00_0000 + (i << 8)).into())))
            .filter(|a| Addresses::set(*a) == set)
            .take(2)
            .collect();
        t.insert(first, loc("AA"), 24);
        t.insert(same[0], loc("BB"), 16);
        assert_eq!(t.get(first).unwrap().1, 24);
        assert_eq!(t.get(same[0]).unwrap().0.country, "BB");
        t.insert(same[1], loc("CC"), 20);
        assert!(t.get(first).is_none(), "the oldest of the set went");
        assert_eq!(t.get(same[0]).unwrap().1, 16);
        assert_eq!(t.get(same[1]).unwrap().1, 20);
        // IPv4 and its mapped form are one address; another family's
        // zero address is not an empty slot.
        assert!(t.get(key("::".parse().unwrap())).is_none());
        t.clear();
        assert!(t.get(same[1]).is_none());
    }

    #[test]
    fn sets_spread_network_addresses() {
        // 100,000 consecutive /24s fill most of the sets, not a corner.
        let mut used = std::collections::HashSet::new();
        for i in 0u32..100_000 {
            used.insert(Addresses::set(key(IpAddr::V4(
                (0x0A00_0000 + (i << 8)).into(),
            ))));
        }
        assert!(used.len() > 50_000, "{} sets used", used.len());
    }
}
