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
//! walk again. It holds up to [`ADDRESSES`] addresses (about 4 MB per DNS
//! thread, allocated on first use and never grown); when it is full, half
//! of it goes (every other entry in the table's hash order, moved into a
//! fresh table: about a millisecond, once per 57,344 new addresses), so what
//! stays is a random half rather than nothing, as when the 4,096-entry map
//! it replaces emptied itself. A working set that fits is never evicted,
//! even when asked in a cycle (where a least-recently-used table of fixed
//! sets thrashes). Both tables are emptied when the GeoIP databases are
//! replaced; the records table when it is full.
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use crate::geo::{Geo, RecordKey};
use crate::openmix::Location;

/// Addresses one thread remembers: seven eighths of 2^17, the most a
/// table of 131,072 buckets (32 bytes each) holds, so it never grows past
/// them; enough for the client networks of a busy node (the realistic
/// benchmark asks from 100,000).
const ADDRESSES: usize = (1 << 17) / 8 * 7;

/// Matched records one thread remembers before it starts over: a City
/// database has far fewer distinct records than networks (GeoLite2-City:
/// a few hundred thousand, most traffic from a few thousand of them), and
/// each entry is a key and an `Arc` (its `Location` is shared with the
/// address entries), a few MB when full.
const RECORDS_CAPACITY: usize = 32_768;

/// A located address: its location and the matched network's prefix
/// length.
type Located = (Arc<Location>, u8);

/// The table by address (see the module's doc).
struct Addresses {
    map: hashbrown::HashMap<u128, Located>,
}

impl Addresses {
    fn new() -> Addresses {
        Addresses {
            map: hashbrown::HashMap::with_capacity(ADDRESSES),
        }
    }

    fn get(&self, addr: u128) -> Option<Located> {
        self.map.get(&addr).cloned()
    }

    fn insert(&mut self, addr: u128, located: Located) {
        if self.map.len() >= ADDRESSES {
            // Into a fresh table: removing in place leaves tombstones
            // that would make the table grow on later inserts.
            let full =
                std::mem::replace(&mut self.map, hashbrown::HashMap::with_capacity(ADDRESSES));
            self.map.extend(full.into_iter().step_by(2));
        }
        self.map.insert(addr, located);
    }

    fn clear(&mut self) {
        self.map.clear();
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
        if let Some(found) = located.get(addr) {
            return found;
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
            .insert(addr, (loc.clone(), prefix));
        (loc, prefix)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: u32) -> u128 {
        key(IpAddr::V4((0x0A00_0000 + (i << 8)).into()))
    }

    #[test]
    fn a_cycle_that_fits_stays_whole_and_a_full_table_halves() {
        let loc = Arc::new(Location::default());
        let mut t = Addresses::new();
        let bytes = t.map.allocation_size();
        assert!(bytes < 5 << 20, "{bytes} bytes");
        let n = ADDRESSES as u32;
        for i in 0..n {
            assert!(t.get(at(i)).is_none());
            t.insert(at(i), (loc.clone(), 24));
        }
        // Asked again in the same order: every one is still there.
        for i in 0..n {
            assert_eq!(t.get(at(i)).map(|l| l.1), Some(24), "address {i}");
        }
        // One more: half go, the new one stays, the table never grew.
        t.insert(at(n), (loc.clone(), 16));
        assert_eq!(t.map.len(), ADDRESSES / 2 + 1);
        assert_eq!(t.get(at(n)).map(|l| l.1), Some(16));
        // Refilled many times over, it never grows either.
        for i in n + 1..4 * n {
            t.insert(at(i), (loc.clone(), 8));
        }
        assert!(t.map.len() <= ADDRESSES);
        assert_eq!(t.map.allocation_size(), bytes);
        t.clear();
        assert!(t.get(at(n)).is_none());
    }
}
