//! GeoIP: turns a client address into the fields Openmix apps see as `request.market`,
//! `country`, `region`, `state` and `asn`, plus a location and the prefix length the answer
//! holds for (the ECS scope).
//!
//! Two layers:
//! * [`GeoDb`] is one immutable set of loaded databases (a City-type and an ASN-type MaxMind
//!   DB, each optional, and an optional override table). Lookups never fail: unknown,
//!   private and reserved addresses give empty fields.
//! * [`Geo`] is what the servers hold: the current [`GeoDb`] behind an `ArcSwap`, so reloads
//!   never block queries, a bounded cache in front of it, hit/miss counters, and
//!   [`Geo::watch`] to reload when the files change on disk.
//!
//! Files: `record.rs` decodes database records and turns subdivisions into codes,
//! `overrides.rs` reads the override table, `service.rs` is [`Geo`] and its cache, `watch.rs`
//! reloads on file changes. The mapping rules and the override file format are described
//! in `geo/README.md`.

mod overrides;
mod record;
mod service;
mod watch;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{LookupResult, Reader};
use serde::{Deserialize, Serialize};

use overrides::Overrides;
use record::{AsnRecord, CityRecord, subdivision_code};
pub use service::{DEFAULT_CACHE_CAPACITY, Geo, GeoView};
pub use watch::{GeoWatcher, is_change};

/// What the GeoIP databases say about one address.
///
/// Empty strings (and `asn == 0`, `None` coordinates) mean "unknown", which is what apps
/// expect for private or unlisted addresses: Openmix apps compare these fields to string
/// literals and must never see an error instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientGeo {
    /// Autonomous system number from the ASN database; 0 when unknown.
    pub asn: u32,
    /// Two-letter continent code: NA, SA, EU, AS, AF or OC; empty otherwise (e.g. Antarctica).
    pub market: String,
    /// ISO 3166-1 alpha-2 country code (the registered country when the location is unknown).
    pub country: String,
    /// `XX-R-<code>` from the largest subdivision, after the override table.
    pub region: String,
    /// `XX-S-<code>` from the smallest subdivision, after the override table.
    pub state: String,
    /// Latitude of the City database's location, when it has one.
    pub latitude: Option<f64>,
    /// Longitude of the City database's location, when it has one.
    pub longitude: Option<f64>,
    /// Prefix length of the network the answer holds for: the longer of the City and ASN
    /// matched networks (their intersection), in the address's own family (IPv4 addresses
    /// report IPv4 prefixes). This is the ECS scope to echo.
    pub prefix_len: u8,
}

/// Where a lookup's answer came from, for explaining a decision: the
/// network it holds for and what the override table changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GeoSource {
    /// The network the answer holds for: the address masked to the
    /// answer's prefix length (`0.0.0.0/0` when nothing matched).
    pub network: String,
    /// Prefix length of the City database's matched network (`None`: no
    /// City database).
    pub city_prefix: Option<u8>,
    /// Prefix length of the ASN database's matched network (`None`: no
    /// ASN database).
    pub asn_prefix: Option<u8>,
    /// The override table's replacements, in the order applied.
    pub overrides: Vec<GeoOverride>,
}

/// One replacement by the override table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeoOverride {
    /// `region` or `state`.
    pub field: &'static str,
    /// The code computed from the database.
    pub computed: String,
    /// The operator's code that replaced it.
    pub replaced_by: String,
}

/// An ECS subnet (RFC 7871) in the family lookups answer in: an
/// IPv4-mapped IPv6 subnet of /96 or longer is the IPv4 subnet, with its
/// prefix; anything else is unchanged.
pub fn ecs_subnet(addr: IpAddr, source_prefix: u8) -> (IpAddr, u8) {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if source_prefix >= 96 => (IpAddr::V4(v4), source_prefix - 96),
            _ => (addr, source_prefix),
        },
        v4 => (v4, source_prefix),
    }
}

/// The ECS scope of an answer that depends on the client: the matched
/// network's prefix, never more than the source prefix, in the family the
/// client sent (`sent_prefix`; `source_prefix` is [`ecs_subnet`]'s).
pub fn ecs_scope(sent_prefix: u8, source_prefix: u8, matched_prefix: u8) -> u8 {
    matched_prefix.min(source_prefix) + sent_prefix.saturating_sub(source_prefix)
}

/// Which database records an address matched, by their offsets in the data sections. Two
/// addresses with equal keys get the same [`ClientGeo`] from one [`GeoDb`], their prefix
/// lengths aside: the fields are a function of the records alone. Only meaningful within one
/// database set (a reload gives the same offsets other records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordKey {
    city: Option<usize>,
    asn: Option<usize>,
}

/// Where the databases are. `None` means "not configured": that database is absent and the
/// fields it would give stay empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoPaths {
    /// A City-type database (GeoLite2-City, GeoIP2-City, DB-IP City Lite, ...).
    pub city: Option<PathBuf>,
    /// An ASN-type database (GeoLite2-ASN, DB-IP ASN Lite, GeoIP2-ISP, ...).
    pub asn: Option<PathBuf>,
    /// A TOML override table mapping computed region/state codes to operator codes.
    pub overrides: Option<PathBuf>,
}

/// Why a set of geo files could not be loaded. Every message names the file, since the
/// operator usually has several configured and must know which one to fix.
///
/// The underlying reason is part of the message rather than a `source()`, so that printing
/// the error chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The database file could not be read.
    #[error("geo database {}: cannot open: {reason}", path.display())]
    Open {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        reason: std::io::Error,
    },
    /// The file was read but is not a usable MaxMind DB.
    #[error("geo database {}: not a MaxMind DB ({reason})", path.display())]
    Invalid {
        /// The configured path.
        path: PathBuf,
        /// What the reader rejected.
        reason: maxminddb::MaxMindDbError,
    },
    /// The file is a MaxMind DB by its metadata, but its search tree or data
    /// fail verification: it would answer every lookup with empty fields.
    #[error("geo database {}: corrupt, failed verification ({reason})", path.display())]
    Corrupt {
        /// The configured path.
        path: PathBuf,
        /// What the verification found.
        reason: String,
    },
    /// The override table could not be read.
    #[error("geo overrides {}: cannot open: {reason}", path.display())]
    OverridesOpen {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        reason: std::io::Error,
    },
    /// The override table is not valid TOML or breaks the format (message has the line).
    #[error("geo overrides {}: {message}", path.display())]
    Overrides {
        /// The configured path.
        path: PathBuf,
        /// What is wrong, with line and column when known.
        message: String,
    },
    /// A directory holding a database could not be watched.
    #[error("geo watch {}: {reason}", path.display())]
    Watch {
        /// The directory (or file) that could not be watched.
        path: PathBuf,
        /// The notify error.
        reason: String,
    },
}

/// Facts about one loaded database, for `/deepcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbStatus {
    /// The path it was loaded from.
    pub path: PathBuf,
    /// `database_type` from the file's metadata, e.g. `GeoLite2-City`.
    pub database_type: String,
    /// `build_epoch` from the metadata (Unix seconds), to spot stale databases.
    pub build_epoch: u64,
}

/// Which databases a [`GeoDb`] holds; `None` means not configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeoStatus {
    /// The City database, if loaded.
    pub city: Option<DbStatus>,
    /// The ASN database, if loaded.
    pub asn: Option<DbStatus>,
    /// The override table's path, if loaded.
    pub overrides: Option<PathBuf>,
    /// How many region and state overrides it holds.
    pub override_entries: usize,
}

/// Which of the two databases a file is configured as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoKind {
    /// `geo.city`: a City-type database.
    City,
    /// `geo.asn`: an ASN-type (or ISP) database.
    Asn,
}

impl GeoKind {
    /// Whether a database of `database_type` (its metadata) suits this
    /// kind. Pointing `city` at an ASN file (or the reverse) loads fine but
    /// every field it should give stays empty.
    pub fn fits(self, database_type: &str) -> bool {
        let kind = database_type.to_ascii_uppercase();
        let asn = kind.contains("ASN") || kind.contains("ISP");
        match self {
            GeoKind::City => !asn,
            GeoKind::Asn => asn,
        }
    }
}

impl fmt::Display for GeoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GeoKind::City => "city",
            GeoKind::Asn => "asn",
        })
    }
}

/// One database file, read fully into memory. Reading rather than mapping is deliberate: a
/// file replaced or truncated in place under an mmap is undefined behaviour, and a reload
/// must be able to overwrite files at any time.
struct LoadedDb {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl LoadedDb {
    /// Reads, parses and verifies the file ([`verify`]), without logging.
    fn read(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
        // Read it ourselves so an I/O failure and a bad file give different messages.
        let bytes = std::fs::read(path).map_err(|reason| GeoError::Open {
            path: path.to_owned(),
            reason,
        })?;
        let reader = Reader::from_source(bytes).map_err(|reason| GeoError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        verify(&reader).map_err(|reason| GeoError::Corrupt {
            path: path.to_owned(),
            reason,
        })?;
        Ok(reader)
    }

    fn open(path: &Path, expect: GeoKind) -> Result<LoadedDb, GeoError> {
        let reader = LoadedDb::read(path)?;
        let meta = reader.metadata();
        // Pointing `city` at an ASN file (or the reverse) loads fine but every field stays
        // empty; say so once at load instead of leaving the operator to guess.
        if !expect.fits(&meta.database_type) {
            tracing::warn!(path = %path.display(), database_type = %meta.database_type,
                "geo {expect} database has an unexpected type; its fields may stay empty");
        }
        tracing::info!(path = %path.display(), database_type = %meta.database_type,
            build_epoch = meta.build_epoch, "loaded geo {expect} database");
        Ok(LoadedDb {
            path: path.to_owned(),
            reader,
        })
    }

    fn status(&self) -> DbStatus {
        let meta = self.reader.metadata();
        DbStatus {
            path: self.path.clone(),
            database_type: meta.database_type.clone(),
            build_epoch: meta.build_epoch,
        }
    }
}

/// How many of a database's first networks [`verify`] looks up again.
const VERIFY_SAMPLE: usize = 64;

/// Checks a database before it goes into service: the reader's own
/// verification (the search tree walks without cycles or pointers out of
/// bounds, every record it reaches decodes, the data section separator is
/// intact), then lookups that must find records. Metadata can be intact
/// over a corrupt tree, and a tree can be well-formed but point nowhere
/// (every lookup empty), so the first [`VERIFY_SAMPLE`] networks that hold
/// data are looked up by address and must resolve to the same record, and
/// that record must decode; a database without a single such network is
/// refused too.
///
/// The reader's verification also insists on a non-empty `description`
/// and `database_type` in the metadata, which some writers (`mmdb-writer`)
/// leave empty. Such a file is not corrupt, so for it the same walk is done
/// here: every network of the tree, each distinct record decoded once.
fn verify(reader: &Reader<Vec<u8>>) -> Result<(), String> {
    match reader.verify() {
        Ok(()) => {}
        Err(e)
            if ["description - Expected", "database_type - Expected"]
                .iter()
                .any(|m| e.to_string().contains(m)) =>
        {
            walk_tree(reader)?
        }
        Err(e) => return Err(e.to_string()),
    }
    let mut found = 0;
    let networks = reader
        .networks(maxminddb::WithinOptions::default())
        .map_err(|e| e.to_string())?;
    for item in networks.take(VERIFY_SAMPLE) {
        let item = item.map_err(|e| format!("walking the networks: {e}"))?;
        let network = item.network().map_err(|e| e.to_string())?;
        let addr = network.network();
        let again = reader
            .lookup(addr)
            .map_err(|e| format!("lookup of {addr}: {e}"))?;
        if !again.has_data() || again.offset() != item.offset() {
            return Err(format!(
                "{addr} (first address of {network}, which holds a record) does not find it"
            ));
        }
        again
            .decode::<serde::de::IgnoredAny>()
            .map_err(|e| format!("record of {addr}: {e}"))?;
        found += 1;
    }
    if found == 0 {
        return Err("no network holds a record: every lookup would be empty".into());
    }
    Ok(())
}

/// Walks every network of the tree (a cycle or a pointer out of bounds
/// fails) and decodes each distinct record once.
fn walk_tree(reader: &Reader<Vec<u8>>) -> Result<(), String> {
    let cap = (reader.metadata().node_count as usize).saturating_mul(3);
    let mut seen = std::collections::HashSet::new();
    let all = reader
        .networks(maxminddb::WithinOptions::default().include_networks_without_data())
        .map_err(|e| e.to_string())?;
    for (i, item) in all.enumerate() {
        if i > cap {
            return Err("the search tree has a cycle".into());
        }
        let item = item.map_err(|e| e.to_string())?;
        if let Some(offset) = item.offset()
            && seen.insert(offset)
        {
            item.decode::<serde::de::IgnoredAny>()
                .map_err(|e| format!("record at {offset}: {e}"))?;
        }
    }
    Ok(())
}

/// One loaded immutable set of databases. Cheap to look up from many threads at once.
pub struct GeoDb {
    city: Option<LoadedDb>,
    asn: Option<LoadedDb>,
    overrides: Overrides,
    overrides_path: Option<PathBuf>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("status", &self.status())
            .finish()
    }
}

impl Default for GeoDb {
    /// No databases: every lookup gives empty fields.
    fn default() -> GeoDb {
        GeoDb {
            city: None,
            asn: None,
            overrides: Overrides::default(),
            overrides_path: None,
        }
    }
}

impl GeoDb {
    /// Loads every configured file. A `None` path leaves that part out; a configured path
    /// that cannot be read or parsed is an error naming that file, and nothing is loaded.
    pub fn open(paths: &GeoPaths) -> Result<GeoDb, GeoError> {
        let city = paths
            .city
            .as_deref()
            .map(|p| LoadedDb::open(p, GeoKind::City))
            .transpose()?;
        let asn = paths
            .asn
            .as_deref()
            .map(|p| LoadedDb::open(p, GeoKind::Asn))
            .transpose()?;
        let overrides = match &paths.overrides {
            Some(p) => Overrides::load(p)?,
            None => Overrides::default(),
        };
        Ok(GeoDb {
            city,
            asn,
            overrides,
            overrides_path: paths.overrides.clone(),
        })
    }

    /// Checks that one configured database would load, as [`GeoDb::open`] does, without
    /// keeping or logging anything, and returns its `database_type`: the start-up and
    /// reload checks ([`crate::server::preflight`]) run it so that a bad path is reported
    /// once, naming the file, instead of the serving process failing at every restart.
    /// [`GeoKind::fits`] says whether that type suits the key it was configured under.
    pub fn check_database(path: &Path) -> Result<String, GeoError> {
        Ok(LoadedDb::read(path)?.metadata().database_type.clone())
    }

    /// Checks that the override table would load, as [`GeoDb::open`] does.
    pub fn check_overrides(path: &Path) -> Result<(), GeoError> {
        Overrides::load(path).map(|_| ())
    }

    /// Which databases are loaded, for `/deepcheck`.
    pub fn status(&self) -> GeoStatus {
        GeoStatus {
            city: self.city.as_ref().map(LoadedDb::status),
            asn: self.asn.as_ref().map(LoadedDb::status),
            overrides: self.overrides_path.clone(),
            override_entries: self.overrides.len(),
        }
    }

    /// Looks an address up in every loaded database. Never fails: a private, reserved or
    /// unlisted address, or a record that does not decode, gives empty fields.
    ///
    /// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is looked up as IPv4, so that ECS subnets sent in
    /// that form get the same answer and an IPv4 prefix length.
    pub fn lookup(&self, ip: IpAddr) -> ClientGeo {
        self.lookup_with(ip, None)
    }

    /// [`GeoDb::lookup`], and where its answer came from (for explain).
    pub fn lookup_traced(&self, ip: IpAddr) -> (ClientGeo, GeoSource) {
        let mut source = GeoSource::default();
        let geo = self.lookup_with(ip, Some(&mut source));
        let ip = canonical(ip);
        source.network = ipnet::IpNet::new(ip, geo.prefix_len)
            .map_or_else(|_| ip.to_string(), |n| n.trunc().to_string());
        (geo, source)
    }

    fn lookup_with(&self, ip: IpAddr, mut source: Option<&mut GeoSource>) -> ClientGeo {
        let ip = canonical(ip);
        let mut geo = ClientGeo::default();
        if let Some(db) = &self.city {
            let (prefix, record) = lookup_in::<CityRecord>(db, ip);
            geo.prefix_len = geo.prefix_len.max(prefix);
            if let Some(s) = source.as_deref_mut() {
                s.city_prefix = Some(prefix);
            }
            if let Some(record) = record {
                self.fill_city(
                    &mut geo,
                    &record,
                    source.as_deref_mut().map(|s| &mut s.overrides),
                );
            }
        }
        if let Some(db) = &self.asn {
            let (prefix, record) = lookup_in::<AsnRecord>(db, ip);
            geo.prefix_len = geo.prefix_len.max(prefix);
            if let Some(s) = source {
                s.asn_prefix = Some(prefix);
            }
            geo.asn = record.and_then(|r| r.autonomous_system_number).unwrap_or(0);
        }
        geo
    }

    /// Which records `ip` matches, and the prefix length [`GeoDb::lookup`] would report:
    /// only the search tree walks, no record decoded, nothing allocated.
    pub fn records(&self, ip: IpAddr) -> (RecordKey, u8) {
        let ip = canonical(ip);
        let mut prefix_len = 0;
        let mut offset = |db: &Option<LoadedDb>| {
            let (prefix, result) = db.as_ref().map_or((0, None), |db| walk(db, ip));
            prefix_len = prefix_len.max(prefix);
            result.and_then(|r| r.offset())
        };
        let key = RecordKey {
            city: offset(&self.city),
            asn: offset(&self.asn),
        };
        (key, prefix_len)
    }

    /// Fills the City fields; `applied` collects the override table's
    /// replacements, when explaining.
    fn fill_city(
        &self,
        geo: &mut ClientGeo,
        record: &CityRecord<'_>,
        mut applied: Option<&mut Vec<GeoOverride>>,
    ) {
        if let Some(code) = record.continent.code
            && MARKETS.contains(&code)
        {
            geo.market = code.to_owned();
        }
        let country = record
            .country
            .iso_code
            .filter(|c| !c.is_empty())
            .or(record.registered_country.iso_code)
            .unwrap_or_default();
        geo.country = country.to_owned();
        let mut replace = |field: &'static str, computed: String| {
            let table = if field == "region" {
                &self.overrides.region
            } else {
                &self.overrides.state
            };
            match table.get(&computed) {
                Some(code) => {
                    if let Some(a) = applied.as_deref_mut() {
                        a.push(GeoOverride {
                            field,
                            computed,
                            replaced_by: code.clone(),
                        });
                    }
                    code.clone()
                }
                None => computed,
            }
        };
        if !country.is_empty() {
            // GeoIP lists subdivisions largest first: the first is the region, the last the
            // state; with one subdivision both come from it.
            if let Some(first) = record.subdivisions.first() {
                let code = subdivision_code(first.iso_code, first.names.en);
                if !code.is_empty() {
                    geo.region = replace("region", format!("{country}-R-{code}"));
                }
            }
            if let Some(last) = record.subdivisions.last() {
                let code = subdivision_code(last.iso_code, last.names.en);
                if !code.is_empty() {
                    geo.state = replace("state", format!("{country}-S-{code}"));
                }
            }
        }
        geo.latitude = record.location.latitude;
        geo.longitude = record.location.longitude;
    }
}

/// The markets Openmix knows; any other continent code (AN) is reported as empty.
const MARKETS: [&str; 6] = ["NA", "SA", "EU", "AS", "AF", "OC"];

/// IPv4-mapped IPv6 becomes IPv4; everything else is unchanged. IPv4-compatible (`::a.b.c.d`,
/// deprecated) addresses are left alone on purpose: `::1` would otherwise become 0.0.0.1.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Looks `ip` up in one database and decodes the record, returning the matched network's
/// prefix length in `ip`'s family (also for "not found", where the reader reports the empty
/// network) and the record when there is one. Errors become "no data" and a debug log: a
/// query must never fail because one record is damaged.
fn lookup_in<'a, T: Deserialize<'a>>(db: &'a LoadedDb, ip: IpAddr) -> (u8, Option<T>) {
    let (prefix, Some(result)) = walk(db, ip) else {
        return (0, None);
    };
    let record = result.decode::<T>().unwrap_or_else(|e| {
        tracing::debug!(path = %db.path.display(), %ip, "geo record does not decode: {e}");
        None
    });
    (prefix, record)
}

/// The search tree walk of [`lookup_in`]: the matched network's prefix length in `ip`'s
/// family and the result to decode (`None` when the walk failed).
fn walk(db: &LoadedDb, ip: IpAddr) -> (u8, Option<LookupResult<'_, Vec<u8>>>) {
    let result = match db.reader.lookup(ip) {
        Ok(result) => result,
        // E.g. an IPv6 address in an IPv4-only database.
        Err(e) => {
            tracing::debug!(path = %db.path.display(), %ip, "geo lookup failed: {e}");
            return (0, None);
        }
    };
    let prefix = match result.network() {
        // An IPv4 address in an IPv6 tree without an IPv4 subtree comes back as an IPv6
        // network above ::/96; its IPv4 prefix is whatever lies below 96 bits.
        Ok(net) if ip.is_ipv4() && net.is_ipv6() => net.prefix().saturating_sub(96),
        Ok(net) => net.prefix(),
        Err(_) => 0,
    };
    (prefix, Some(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_maps_only_ipv4_mapped() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
        let loopback: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical(loopback), loopback);
    }
}
