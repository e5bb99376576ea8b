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
//! Both are emptied when the GeoIP databases are replaced, and each when it
//! is full.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use crate::geo::{Geo, RecordKey};
use crate::openmix::Location;

/// Addresses one thread remembers before it starts over.
const CAPACITY: usize = 4096;

/// Matched records one thread remembers before it starts over: a City
/// database has far fewer distinct records than networks (GeoLite2-City:
/// a few hundred thousand, most traffic from a few thousand of them), and
/// each entry is a key and an `Arc` (its `Location` is shared with the
/// address entries), a few MB when full.
const RECORDS_CAPACITY: usize = 32_768;

struct Cache {
    generation: u64,
    located: hashbrown::HashMap<IpAddr, (Arc<Location>, u8)>,
    records: hashbrown::HashMap<RecordKey, Arc<Location>>,
}

impl Cache {
    fn start_over(&mut self, generation: u64) {
        self.located.clear();
        self.records.clear();
        self.generation = generation;
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        generation: 0,
        located: hashbrown::HashMap::new(),
        records: hashbrown::HashMap::new(),
    });
}

/// Where `ip` is, and the prefix length of the network the answer holds
/// for (the ECS scope), as [`Geo::lookup`] says.
pub fn locate(geo: &Geo, ip: IpAddr) -> (Arc<Location>, u8) {
    let generation = geo.generation();
    CACHE.with_borrow_mut(|c| {
        if c.generation != generation {
            c.start_over(generation);
        }
        if let Some((loc, prefix)) = c.located.get(&ip) {
            return (loc.clone(), *prefix);
        }
        // One database set for the walk and the decode, and the records
        // cache holds only that set's (a reload may have come since).
        let view = geo.view();
        if view.generation() != c.generation {
            c.start_over(view.generation());
        }
        let (key, prefix) = view.records(ip);
        let loc = match c.records.get(&key) {
            Some(loc) => loc.clone(),
            None => {
                let loc = Arc::new(Location::from(view.lookup_uncached(ip)));
                if c.records.len() >= RECORDS_CAPACITY {
                    c.records.clear();
                }
                c.records.insert(key, loc.clone());
                loc
            }
        };
        if c.located.len() >= CAPACITY {
            c.located.clear();
        }
        c.located.insert(ip, (loc.clone(), prefix));
        (loc, prefix)
    })
}
