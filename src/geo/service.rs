//! [`Geo`]: the database set in service, swapped atomically on reload, with a cache.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::metrics::counter::Counter;

use super::{ClientGeo, GeoDb, GeoError, GeoPaths, GeoStatus, canonical};

/// How many answers [`Geo`] caches by default (~100 k entries, a few tens of MB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 100_000;

/// One generation: a database set and the cache of its answers. They are swapped together,
/// so a lookup that raced a reload can only ever put an old answer into the old cache,
/// which is dropped with it; clearing a shared cache after the swap could not promise that.
struct Generation {
    db: GeoDb,
    cache: moka::sync::Cache<IpAddr, ClientGeo>,
    /// This set's [`Geo::generation`].
    number: u64,
}

/// Hot-swappable geo service used by the servers: the current [`GeoDb`] behind an `ArcSwap`
/// (queries never wait for a reload), a bounded cache, and hit/miss counters for
/// `/debug/vars`.
///
/// The cache is keyed by the matched network in effect, at the cost of at most two probes:
/// an answer whose database network is a /24 or larger (IPv4; /56 for IPv6) is stored under
/// the address masked to that length, which every address of the /24 (/56) shares; an answer
/// from a longer network is stored under the exact address. A lookup tries the masked key
/// first and takes its entry only if that entry's network is no longer than the mask (an
/// exact entry of the address that happens to equal the masked key is not a shared one),
/// then the exact key. This is safe because database networks never overlap: when any
/// address of a /24 has a network of /24 or larger, that network covers the whole /24, so
/// all its addresses have the same answer.
///
/// Resolver addresses (the packet source) and ECS subnets (masked by the client to its
/// source prefix, whatever that is) both go through it; nothing caps the ECS prefix before.
pub struct Geo {
    current: ArcSwap<Generation>,
    /// Which database set is in service: a new number (unique in the
    /// process, over every `Geo`) for every [`Geo::replace`], so caches in
    /// front of this one know when their answers went stale.
    generation: AtomicU64,
    capacity: u64,
    /// Why the last reload failed, until one succeeds (for `/deepcheck`).
    reload_error: std::sync::Mutex<Option<String>>,
    hits: Counter,
    misses: Counter,
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
        let first = Generation::new(db, capacity);
        Geo {
            generation: AtomicU64::new(first.number),
            current: ArcSwap::from_pointee(first),
            capacity,
            reload_error: std::sync::Mutex::new(None),
            hits: Counter::new(),
            misses: Counter::new(),
        }
    }

    /// Looks an address up through the cache; same answer as [`GeoDb::lookup`].
    pub fn lookup(&self, ip: IpAddr) -> ClientGeo {
        let ip = canonical(ip);
        let (shared, mask) = shared_key(ip);
        let current = self.current.load();
        let cached = current
            .cache
            .get(&shared)
            .filter(|geo| geo.prefix_len <= mask || shared == ip)
            .or_else(|| {
                if shared == ip {
                    None
                } else {
                    current.cache.get(&ip)
                }
            });
        if let Some(geo) = cached {
            self.hits.add(1);
            return geo;
        }
        self.misses.add(1);
        let geo = current.db.lookup(ip);
        let key = if geo.prefix_len <= mask { shared } else { ip };
        current.cache.insert(key, geo.clone());
        geo
    }

    /// [`GeoDb::lookup_traced`] in the databases in service: past the cache
    /// and not counted, for explaining one decision.
    pub fn lookup_traced(&self, ip: IpAddr) -> (ClientGeo, super::GeoSource) {
        self.current.load().db.lookup_traced(ip)
    }

    /// Loads `paths` completely and only then swaps it in, with an empty cache. On error the
    /// current databases stay in service.
    /// The failure is kept for [`Geo::reload_error`] until a reload succeeds.
    pub fn reload(&self, paths: &GeoPaths) -> Result<(), GeoError> {
        match GeoDb::open(paths) {
            Ok(db) => {
                self.replace(db);
                Ok(())
            }
            Err(e) => {
                if let Ok(mut last) = self.reload_error.lock() {
                    *last = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Why the last reload failed (the previous databases still serve),
    /// until a reload succeeds.
    pub fn reload_error(&self) -> Option<String> {
        self.reload_error.lock().ok().and_then(|e| e.clone())
    }

    /// Puts an already loaded database set in service, with an empty cache.
    pub fn replace(&self, db: GeoDb) {
        let next = Generation::new(db, self.capacity);
        let number = next.number;
        self.current.store(Arc::new(next));
        self.generation.store(number, Ordering::Release);
        if let Ok(mut last) = self.reload_error.lock() {
            *last = None;
        }
        tracing::info!("geo databases reloaded");
    }

    /// Which database set is in service: changes with every reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The database set in service now, for lookups that must all be answered by the same
    /// set (a cache in front keyed by [`GeoView::records`]). Hold it briefly: a reload's old
    /// set is freed only when its last view is dropped.
    pub fn view(&self) -> GeoView<'_> {
        GeoView {
            geo: self,
            current: self.current.load(),
        }
    }

    /// Cache hits and misses since start (reloads do not reset them).
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    /// Which databases are in service now.
    pub fn status(&self) -> GeoStatus {
        self.current.load().db.status()
    }
}

/// A generation number no database set of any `Geo` has had.
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Length of the masked cache key: answers from networks this large or larger are shared by
/// every address under the mask. /24 and /56 are the ECS source prefixes RFC 7871 (section
/// 11.1) recommends resolvers send, so ECS lookups usually arrive already masked to them.
const V4_SHARED_PREFIX: u8 = 24;
/// See [`V4_SHARED_PREFIX`].
const V6_SHARED_PREFIX: u8 = 56;

/// The address masked to its shared prefix, and that prefix's length.
fn shared_key(ip: IpAddr) -> (IpAddr, u8) {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX << (32 - V4_SHARED_PREFIX);
            (
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                V4_SHARED_PREFIX,
            )
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - V6_SHARED_PREFIX);
            (
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                V6_SHARED_PREFIX,
            )
        }
    }
}

/// One database set in service, from [`Geo::view`]: every lookup through it is answered by
/// the same set, whatever reloads happen meanwhile.
pub struct GeoView<'a> {
    geo: &'a Geo,
    current: arc_swap::Guard<Arc<Generation>>,
}

impl GeoView<'_> {
    /// This set's [`Geo::generation`].
    pub fn generation(&self) -> u64 {
        self.current.number
    }

    /// [`GeoDb::records`] in this set: which records `ip` matches and its prefix length.
    pub fn records(&self, ip: IpAddr) -> (super::RecordKey, u8) {
        self.current.db.records(ip)
    }

    /// [`GeoDb::lookup`] in this set, without the cache (it is for a cache in front that
    /// missed): counted as a cache miss.
    pub fn lookup_uncached(&self, ip: IpAddr) -> ClientGeo {
        self.geo.misses.add(1);
        self.current.db.lookup(ip)
    }
}

impl Generation {
    fn new(db: GeoDb, capacity: u64) -> Generation {
        Generation {
            db,
            number: next_generation(),
            cache: moka::sync::Cache::new(capacity),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_db_gives_empty_answers() {
        let geo = Geo::new(GeoDb::default());
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(geo.lookup(ip), ClientGeo::default());
        assert_eq!(geo.lookup(ip), ClientGeo::default());
        assert_eq!(geo.cache_stats(), (1, 1));
        assert_eq!(geo.status().city, None);
    }

    #[test]
    fn shared_keys_mask_to_24_and_56() {
        assert_eq!(shared_key(ip("192.0.2.77")), (ip("192.0.2.0"), 24));
        assert_eq!(
            shared_key(ip("2001:db8:1:2ff:1::9")),
            (ip("2001:db8:1:200::"), 56)
        );
    }

    /// Writes a City database of (network, country) pairs into `dir`.
    fn city_db(dir: &Path, networks: &[(&str, &str)]) -> PathBuf {
        use mmdb_writer::{Value, Writer};
        let mut w = Writer::new("Switchyard-Cache-Test");
        for (net, country) in networks {
            let record = Value::map([
                ("continent", Value::map([("code", Value::from("EU"))])),
                ("country", Value::map([("iso_code", Value::from(*country))])),
            ]);
            w.insert_value(net.parse::<mmdb_writer::ipnet::IpNet>().unwrap(), record)
                .unwrap();
        }
        let path = dir.join("City.mmdb");
        std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        path
    }

    #[test]
    fn one_entry_per_large_network_and_exact_entries_below_the_mask() {
        let dir = tempfile::tempdir().unwrap();
        let paths = GeoPaths {
            city: Some(city_db(
                dir.path(),
                &[
                    ("192.0.2.0/24", "US"),
                    ("198.51.100.0/31", "GB"),
                    ("198.51.100.128/25", "DE"),
                    ("2001:db8::/48", "IE"),
                ],
            )),
            ..GeoPaths::default()
        };
        let reference = GeoDb::open(&paths).unwrap();
        let geo = Geo::new(GeoDb::open(&paths).unwrap());

        // Two addresses of one /24 network: one miss, then a hit on the shared entry.
        assert_eq!(geo.lookup(ip("192.0.2.1")).country, "US");
        assert_eq!(
            geo.lookup(ip("192.0.2.250")),
            reference.lookup(ip("192.0.2.1"))
        );
        assert_eq!(geo.cache_stats(), (1, 1));
        // Likewise two addresses of a /48 under one /56.
        assert_eq!(geo.lookup(ip("2001:db8::1")).country, "IE");
        assert_eq!(geo.lookup(ip("2001:db8:0:ff::2")).country, "IE");
        assert_eq!(geo.cache_stats(), (2, 2));

        // 198.51.100.0 is in a /31: cached under its exact address, which is also the
        // masked key of its /24. 198.51.100.200 (in the DE /25) must not take that entry.
        let gb = geo.lookup(ip("198.51.100.0"));
        assert_eq!((gb.country.as_str(), gb.prefix_len), ("GB", 31));
        let de = geo.lookup(ip("198.51.100.200"));
        assert_eq!((de.country.as_str(), de.prefix_len), ("DE", 25));
        assert_eq!(geo.cache_stats(), (2, 4));
        // Both are now exact entries and hit as such.
        assert_eq!(geo.lookup(ip("198.51.100.0")), gb);
        assert_eq!(geo.lookup(ip("198.51.100.200")), de);
        assert_eq!(geo.cache_stats(), (4, 4));
        // A neighbour in the DE /25 is a miss of its own, with the right answer.
        assert_eq!(geo.lookup(ip("198.51.100.201")), de);
        assert_eq!(geo.cache_stats(), (4, 5));
    }

    /// A record key names exactly the fields: equal keys give equal answers (prefix aside),
    /// and a view's walk reports the prefix its lookup reports. On the shipped databases,
    /// whose City and ASN networks differ in size both ways.
    #[test]
    fn equal_record_keys_give_equal_answers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let paths = GeoPaths {
            city: Some(root.join("geo/Switchyard-City-Test.mmdb")),
            asn: Some(root.join("geo/Switchyard-ASN-Test.mmdb")),
            ..GeoPaths::default()
        };
        let geo = Geo::new(GeoDb::open(&paths).unwrap());
        let view = geo.view();
        assert_eq!(view.generation(), geo.generation());
        let addrs = [
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.65",
            "192.0.2.130",
            "198.51.100.7",
            "198.51.100.129",
            "198.51.100.200",
            "203.0.113.5",
            "203.0.113.230",
            "10.0.0.1",
            "127.0.0.1",
            "::ffff:192.0.2.1",
            "2001:db8::1",
            "2001:db8:1::1",
            "2001:db8:3::1",
            "::1",
        ];
        let mut seen = std::collections::HashMap::new();
        for a in addrs {
            let (key, prefix) = view.records(ip(a));
            let mut got = view.lookup_uncached(ip(a));
            assert_eq!(prefix, got.prefix_len, "{a}");
            got.prefix_len = 0;
            let first = seen.entry(key).or_insert_with(|| got.clone());
            assert_eq!(*first, got, "{a}: same records, other fields");
        }
        // The /25 City network of 192.0.2.0 holds two ASN /26s: two keys.
        assert_eq!(
            view.records(ip("192.0.2.1")).0,
            view.records(ip("192.0.2.2")).0
        );
        assert_ne!(
            view.records(ip("192.0.2.1")).0,
            view.records(ip("192.0.2.65")).0
        );
        // Unlisted addresses share the empty key.
        assert_eq!(
            view.records(ip("10.0.0.1")).0,
            view.records(ip("127.0.0.1")).0
        );
        drop(view);
        geo.replace(GeoDb::default());
        assert_ne!(geo.view().generation(), 0);
        assert_eq!(geo.view().generation(), geo.generation());
    }

    /// MaxMind's City test database, which lives beside the project (see
    /// shared/geo/README.md); `None`, after saying so loudly, when it is absent.
    fn maxmind_city() -> Option<GeoDb> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/geo/maxmind-test/GeoIP2-City-Test.mmdb");
        if !path.is_file() {
            eprintln!(
                "SKIPPED: MaxMind test database not found at {}",
                path.display()
            );
            return None;
        }
        let paths = GeoPaths {
            city: Some(path),
            ..GeoPaths::default()
        };
        Some(GeoDb::open(&paths).unwrap())
    }

    #[test]
    fn maxmind_networks_share_or_not_as_their_prefix_says() {
        let (Some(db), Some(reference)) = (maxmind_city(), maxmind_city()) else {
            return;
        };
        let geo = Geo::new(db);
        // 202.196.224.0/20 (PH): one entry for both.
        let a = geo.lookup(ip("202.196.224.1"));
        assert_eq!((a.country.as_str(), a.prefix_len), ("PH", 20));
        assert_eq!(geo.lookup(ip("202.196.224.200")), a);
        assert_eq!(geo.cache_stats(), (1, 1));

        // 81.2.69.0/24 is split: 81.2.69.142/31 (GB), an empty /25 at 81.2.69.0, and
        // more. No address may get another's answer through the /24 key.
        let london = geo.lookup(ip("81.2.69.142"));
        assert_eq!((london.country.as_str(), london.prefix_len), ("GB", 31));
        for addr in [
            "81.2.69.0",
            "81.2.69.160",
            "81.2.69.1",
            "81.2.69.143",
            "81.2.69.144",
            "81.2.69.142",
            "81.2.69.0",
        ] {
            assert_eq!(geo.lookup(ip(addr)), reference.lookup(ip(addr)), "{addr}");
        }
        // Only the repeated addresses hit.
        assert_eq!(geo.cache_stats(), (3, 7));
    }
}
