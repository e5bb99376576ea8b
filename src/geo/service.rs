//! [`Geo`]: the database set in service, swapped atomically on reload, with a cache.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::{ClientGeo, GeoDb, GeoError, GeoPaths, GeoStatus, canonical};

/// How many answers [`Geo`] caches by default (~100 k entries, a few tens of MB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 100_000;

/// One generation: a database set and the cache of its answers. They are swapped together,
/// so a lookup that raced a reload can only ever put an old answer into the old cache,
/// which is dropped with it; clearing a shared cache after the swap could not promise that.
struct Generation {
    db: GeoDb,
    cache: moka::sync::Cache<IpAddr, ClientGeo>,
}

/// Hot-swappable geo service used by the servers: the current [`GeoDb`] behind an `ArcSwap`
/// (queries never wait for a reload), a bounded cache, and hit/miss counters for
/// `/debug/vars`.
///
/// The cache is keyed by the exact (canonical) address. Keying by the matched network would
/// share entries between neighbours, but finding an address's entry would then need one
/// probe per possible prefix length, which costs about as much as the database lookup it
/// saves; and a shorter fixed key such as the /24 would be wrong wherever the database has
/// longer networks. ECS subnets arrive masked to their source prefix (which the DNS front
/// end caps, e.g. at /24 and /56), so exact keys already share well in practice.
pub struct Geo {
    current: ArcSwap<Generation>,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for Geo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (hits, misses) = self.cache_stats();
        f.debug_struct("Geo")
            .field("db", &self.current.load().db)
            .field("capacity", &self.capacity)
            .field("hits", &hits)
            .field("misses", &misses)
            .finish()
    }
}

impl Geo {
    /// Wraps a loaded database set with a cache of [`DEFAULT_CACHE_CAPACITY`] entries.
    pub fn new(db: GeoDb) -> Geo {
        Geo::with_cache_capacity(db, DEFAULT_CACHE_CAPACITY)
    }

    /// Like [`Geo::new`] with a chosen cache size (0 disables caching).
    pub fn with_cache_capacity(db: GeoDb, capacity: u64) -> Geo {
        Geo {
            current: ArcSwap::from_pointee(Generation::new(db, capacity)),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Looks an address up through the cache; same answer as [`GeoDb::lookup`].
    pub fn lookup(&self, ip: IpAddr) -> ClientGeo {
        let ip = canonical(ip);
        let current = self.current.load();
        if let Some(geo) = current.cache.get(&ip) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return geo;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let geo = current.db.lookup(ip);
        current.cache.insert(ip, geo.clone());
        geo
    }

    /// Loads `paths` completely and only then swaps it in, with an empty cache. On error the
    /// current databases stay in service.
    pub fn reload(&self, paths: &GeoPaths) -> Result<(), GeoError> {
        let db = GeoDb::open(paths)?;
        self.current
            .store(Arc::new(Generation::new(db, self.capacity)));
        tracing::info!("geo databases reloaded");
        Ok(())
    }

    /// Cache hits and misses since start (reloads do not reset them).
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Which databases are in service now.
    pub fn status(&self) -> GeoStatus {
        self.current.load().db.status()
    }
}

impl Generation {
    fn new(db: GeoDb, capacity: u64) -> Generation {
        Generation {
            db,
            cache: moka::sync::Cache::new(capacity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_db_gives_empty_answers() {
        let geo = Geo::new(GeoDb::default());
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(geo.lookup(ip), ClientGeo::default());
        assert_eq!(geo.lookup(ip), ClientGeo::default());
        assert_eq!(geo.cache_stats(), (1, 1));
        assert_eq!(geo.status().city, None);
    }
}
