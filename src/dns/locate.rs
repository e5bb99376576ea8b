//! Where a query comes from: a small cache on each DNS thread in front of
//! the shared GeoIP service.
//!
//! Most queries come from a few thousand resolvers and, with ECS, from
//! subnets their clients share, so the same addresses are located over and
//! over. The shared cache ([`crate::geo::Geo`]) answers them, but each hit
//! takes its locks and copies the answer's strings; here each thread keeps
//! the located [`Location`] behind an `Arc` it hands to every request from
//! that address, without touching memory another thread writes. The cache
//! is emptied when the GeoIP databases are replaced, and when it is full.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use crate::geo::Geo;
use crate::openmix::Location;

/// Addresses one thread remembers before it starts over.
const CAPACITY: usize = 4096;

struct Cache {
    generation: u64,
    located: hashbrown::HashMap<IpAddr, (Arc<Location>, u8)>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        generation: 0,
        located: hashbrown::HashMap::new(),
    });
}

/// Where `ip` is, and the prefix length of the network the answer holds
/// for (the ECS scope), as [`Geo::lookup`] says.
pub fn locate(geo: &Geo, ip: IpAddr) -> (Arc<Location>, u8) {
    let generation = geo.generation();
    CACHE.with_borrow_mut(|c| {
        if c.generation != generation || c.located.len() >= CAPACITY {
            c.located.clear();
            c.generation = generation;
        }
        if let Some((loc, prefix)) = c.located.get(&ip) {
            return (loc.clone(), *prefix);
        }
        let g = geo.lookup(ip);
        let prefix = g.prefix_len;
        let loc = Arc::new(crate::openmix::Location::from(g));
        c.located.insert(ip, (loc.clone(), prefix));
        (loc, prefix)
    })
}
