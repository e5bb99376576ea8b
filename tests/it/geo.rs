//! GeoIP: the shipped test databases give the documented fields, MaxMind's own test
//! databases (a writer we did not write) give the right fields, bad files are reported by
//! name, and a watched database is swapped in while lookups go on.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use crate::common::wait::wait_for;
use switchyard::geo::{ClientGeo, Geo, GeoDb, GeoPaths};

fn project(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The databases in `geo/`, without the override table.
fn shipped() -> GeoPaths {
    GeoPaths {
        city: Some(project("geo/Switchyard-City-Test.mmdb")),
        asn: Some(project("geo/Switchyard-ASN-Test.mmdb")),
        overrides: None,
    }
}

/// MaxMind's test databases live beside the project, not in it (see
/// shared/geo/README.md): `None`, after saying loudly that the test is
/// skipped, when they are absent (a laptop without `shared/`).
fn maxmind(name: &str) -> Option<PathBuf> {
    let dir = project("../shared/geo/maxmind-test");
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED: MaxMind test databases not found at {} (shared/geo/maxmind-test)",
            dir.display()
        );
        return None;
    }
    Some(dir.join(name))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[allow(clippy::too_many_arguments)]
fn geo(
    asn: u32,
    market: &str,
    country: &str,
    region: &str,
    state: &str,
    location: Option<(f64, f64)>,
    prefix_len: u8,
) -> ClientGeo {
    ClientGeo {
        asn,
        market: market.into(),
        country: country.into(),
        region: region.into(),
        state: state.into(),
        latitude: location.map(|l| l.0),
        longitude: location.map(|l| l.1),
        prefix_len,
    }
}

/// Every network of `geo/README.md`: (first address, last address, expected answer).
#[rustfmt::skip]
fn table() -> Vec<(&'static str, &'static str, ClientGeo)> {
    let us = Some((37.7749, -122.4194));
    vec![
        ("192.0.2.0", "192.0.2.63", geo(64496, "NA", "US", "US-R-CA", "US-S-CA", us, 26)),
        ("192.0.2.64", "192.0.2.127", geo(64497, "NA", "US", "US-R-CA", "US-S-CA", us, 26)),
        ("192.0.2.128", "192.0.2.255",
            geo(64498, "SA", "BR", "BR-R-SP", "BR-S-SP", Some((-23.5505, -46.6333)), 25)),
        ("198.51.100.0", "198.51.100.127",
            geo(64499, "EU", "GB", "GB-R-ENG", "GB-S-OXF", Some((51.752, -1.2577)), 25)),
        ("198.51.100.128", "198.51.100.191",
            geo(64500, "EU", "DE", "DE-R-BE", "DE-S-BE", Some((52.52, 13.405)), 26)),
        ("198.51.100.192", "198.51.100.255",
            geo(64500, "EU", "FR", "FR-R-ÎLEDEFRANCE", "FR-S-75", Some((48.8566, 2.3522)), 26)),
        ("203.0.113.0", "203.0.113.63",
            geo(64501, "AS", "JP", "JP-R-13", "JP-S-13", Some((35.6895, 139.6917)), 26)),
        ("203.0.113.64", "203.0.113.127",
            geo(64501, "OC", "AU", "AU-R-NSW", "AU-S-NSW", Some((-33.8688, 151.2093)), 26)),
        ("203.0.113.128", "203.0.113.191",
            geo(64502, "AF", "ZA", "ZA-R-GP", "ZA-S-GP", Some((-26.2041, 28.0473)), 26)),
        ("203.0.113.192", "203.0.113.223", geo(64503, "", "AQ", "", "", Some((-77.85, 166.67)), 27)),
        ("203.0.113.224", "203.0.113.255", geo(0, "EU", "NL", "", "", None, 27)),
        ("2001:db8::", "2001:db8:0:ffff:ffff:ffff:ffff:ffff",
            geo(65536, "EU", "IE", "IE-R-L", "IE-S-D", Some((53.3498, -6.2603)), 48)),
        ("2001:db8:1::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff",
            geo(65536, "AS", "SG", "SG-R-01", "SG-S-01", Some((1.3521, 103.8198)), 48)),
        ("2001:db8:2::", "2001:db8:2:ffff:ffff:ffff:ffff:ffff",
            geo(65537, "NA", "CA", "CA-R-ON", "CA-S-ON", Some((43.6532, -79.3832)), 48)),
        ("2001:db8:3::", "2001:db8:3:ffff:ffff:ffff:ffff:ffff", geo(65538, "", "", "", "", None, 48)),
    ]
}

#[test]
fn shipped_databases_give_the_documented_fields() {
    let db = GeoDb::open(&shipped()).unwrap();
    for (first, last, want) in table() {
        for addr in [first, last] {
            assert_eq!(db.lookup(ip(addr)), want, "{addr}");
            // ECS subnets can arrive as IPv4-mapped IPv6: same answer, IPv4 prefix.
            if let IpAddr::V4(v4) = ip(addr) {
                assert_eq!(
                    db.lookup(IpAddr::V6(v4.to_ipv6_mapped())),
                    want,
                    "::ffff:{addr}"
                );
            }
        }
    }
}

#[test]
fn private_loopback_and_unlisted_addresses_are_empty() {
    let db = GeoDb::open(&shipped()).unwrap();
    for addr in [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "8.8.8.8",
        "::ffff:10.0.0.1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "2001:db8:4::1",
        "2600::1",
    ] {
        let got = db.lookup(ip(addr));
        let empty = ClientGeo {
            prefix_len: got.prefix_len,
            ..ClientGeo::default()
        };
        assert_eq!(got, empty, "{addr}");
    }
    // The prefix is that of the empty network around the address: nothing in 0.0.0.0/1.
    assert_eq!(db.lookup(ip("10.0.0.1")).prefix_len, 1);
}

#[test]
fn no_databases_means_empty_fields() {
    let db = GeoDb::open(&GeoPaths::default()).unwrap();
    assert_eq!(db.lookup(ip("198.51.100.1")), ClientGeo::default());
    let status = db.status();
    assert!(status.city.is_none() && status.asn.is_none() && status.overrides.is_none());
}

#[test]
fn status_names_the_loaded_databases() {
    let paths = GeoPaths {
        overrides: Some(project("geo/overrides.toml")),
        ..shipped()
    };
    let status = GeoDb::open(&paths).unwrap().status();
    let city = status.city.unwrap();
    assert_eq!(city.path, project("geo/Switchyard-City-Test.mmdb"));
    assert_eq!(city.database_type, "Switchyard-City-Test");
    assert_eq!(city.build_epoch, 1_767_225_600);
    assert_eq!(status.asn.unwrap().database_type, "Switchyard-ASN-Test");
    assert_eq!(status.overrides, Some(project("geo/overrides.toml")));
    assert_eq!(status.override_entries, 3);
}

#[test]
fn maxmind_city_test_database() {
    let db = GeoDb::open(&GeoPaths {
        city: Some(match maxmind("GeoIP2-City-Test.mmdb") {
            Some(p) => p,
            None => return,
        }),
        ..GeoPaths::default()
    })
    .unwrap();

    let london = db.lookup(ip("81.2.69.142"));
    assert_eq!(
        (
            london.market.as_str(),
            london.country.as_str(),
            london.region.as_str(),
            london.state.as_str()
        ),
        ("EU", "GB", "GB-R-ENG", "GB-S-ENG")
    );
    assert_eq!(london.prefix_len, 31);
    assert_eq!(london.asn, 0, "no ASN database loaded");
    assert_eq!(db.lookup(ip("::ffff:81.2.69.142")), london);

    let tacoma = db.lookup(ip("216.160.83.56"));
    assert_eq!(
        (tacoma.market.as_str(), tacoma.country.as_str()),
        ("NA", "US")
    );
    assert_eq!(tacoma.state, "US-S-WA");

    let japan = db.lookup(ip("2001:218::1"));
    assert_eq!(
        (japan.market.as_str(), japan.country.as_str()),
        ("AS", "JP")
    );
    assert_eq!(japan.prefix_len, 32);
    assert!(japan.latitude.is_some() && japan.longitude.is_some());
}

#[test]
fn maxmind_country_test_database_as_the_city_database() {
    // A Country database has the City layout without subdivisions and location: market and
    // country are filled, region, state and coordinates stay empty.
    let db = GeoDb::open(&GeoPaths {
        city: Some(match maxmind("GeoIP2-Country-Test.mmdb") {
            Some(p) => p,
            None => return,
        }),
        ..GeoPaths::default()
    })
    .unwrap();
    assert_eq!(
        db.status().city.unwrap().database_type,
        "GeoIP2-Country",
        "the file is MaxMind's Country test database"
    );
    for (addr, market, country, prefix_len) in [
        ("81.2.69.142", "EU", "GB", 31),
        ("216.160.83.56", "NA", "US", 29),
        ("89.160.20.112", "EU", "SE", 28),
        ("2001:218::1", "AS", "JP", 32),
        ("::ffff:81.2.69.142", "EU", "GB", 31),
    ] {
        assert_eq!(
            db.lookup(ip(addr)),
            ClientGeo {
                market: market.into(),
                country: country.into(),
                prefix_len,
                ..ClientGeo::default()
            },
            "{addr}"
        );
    }
}

#[test]
fn maxmind_asn_test_database() {
    let db = GeoDb::open(&GeoPaths {
        asn: Some(match maxmind("GeoLite2-ASN-Test.mmdb") {
            Some(p) => p,
            None => return,
        }),
        ..GeoPaths::default()
    })
    .unwrap();
    let got = db.lookup(ip("1.128.0.1"));
    assert_eq!(
        got,
        ClientGeo {
            asn: 1221,
            prefix_len: 11,
            ..ClientGeo::default()
        }
    );
}

#[test]
fn maxmind_city_and_asn_together_take_the_longer_prefix() {
    let db = GeoDb::open(&GeoPaths {
        city: Some(match maxmind("GeoIP2-City-Test.mmdb") {
            Some(p) => p,
            None => return,
        }),
        asn: Some(match maxmind("GeoLite2-ASN-Test.mmdb") {
            Some(p) => p,
            None => return,
        }),
        overrides: None,
    })
    .unwrap();
    let sweden = db.lookup(ip("89.160.20.112"));
    assert_eq!((sweden.asn, sweden.country.as_str()), (29518, "SE"));
    // ASN-only match: the City tree's empty network is shorter than the ASN /11.
    assert_eq!(db.lookup(ip("1.128.0.1")).prefix_len, 11);
}

#[test]
fn a_missing_file_is_named_in_the_error() {
    let missing = project("geo/no-such-City.mmdb");
    let err = GeoDb::open(&GeoPaths {
        city: Some(missing.clone()),
        ..shipped()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("cannot open"), "{msg}");
}

#[test]
fn a_corrupt_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ASN.mmdb");
    std::fs::write(&garbage, b"this is not a MaxMind database\n".repeat(100)).unwrap();
    let err = GeoDb::open(&GeoPaths {
        asn: Some(garbage.clone()),
        ..shipped()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&garbage.display().to_string()), "{msg}");
    assert!(msg.contains("not a MaxMind DB"), "{msg}");

    // Truncated: the metadata at the end is gone.
    let shipped_bytes = std::fs::read(project("geo/Switchyard-City-Test.mmdb")).unwrap();
    let truncated = dir.path().join("City.mmdb");
    std::fs::write(&truncated, &shipped_bytes[..shipped_bytes.len() / 2]).unwrap();
    let err = GeoDb::open(&GeoPaths {
        city: Some(truncated.clone()),
        ..shipped()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains(&truncated.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_bad_override_table_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("overrides.toml");
    std::fs::write(&bad, "[region]\n\"GB-R-ENG\" = GB-R-ENGLAND\n").unwrap();
    let err = GeoDb::open(&GeoPaths {
        overrides: Some(bad.clone()),
        ..shipped()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn the_override_table_maps_codes() {
    let paths = GeoPaths {
        overrides: Some(project("geo/overrides.toml")),
        ..shipped()
    };
    let db = GeoDb::open(&paths).unwrap();
    let oxford = db.lookup(ip("198.51.100.1"));
    assert_eq!(
        (oxford.region.as_str(), oxford.state.as_str()),
        ("GB-R-ENGLAND", "GB-S-OXF")
    );
    assert_eq!(db.lookup(ip("198.51.100.200")).region, "FR-R-IDF");
    let dublin = db.lookup(ip("2001:db8::1"));
    assert_eq!(
        (dublin.region.as_str(), dublin.state.as_str()),
        ("IE-R-L", "IE-S-DUBLIN")
    );
    // Unlisted codes pass through.
    assert_eq!(db.lookup(ip("192.0.2.1")).region, "US-R-CA");
}

#[test]
fn cached_lookups_match_and_are_counted() {
    let geo = Geo::new(GeoDb::open(&shipped()).unwrap());
    let db = GeoDb::open(&shipped()).unwrap();
    for (first, _, want) in table() {
        assert_eq!(geo.lookup(ip(first)), want);
        assert_eq!(geo.lookup(ip(first)), want);
        assert_eq!(geo.lookup(ip(first)), db.lookup(ip(first)));
    }
    let n = table().len() as u64;
    assert_eq!(geo.cache_stats(), (2 * n, n));
    // The mapped form shares the IPv4 entry.
    geo.lookup(ip("::ffff:192.0.2.0"));
    assert_eq!(geo.cache_stats(), (2 * n + 1, n));
    // A reload starts a fresh cache.
    geo.reload(&shipped()).unwrap();
    geo.lookup(ip("192.0.2.0"));
    assert_eq!(geo.cache_stats(), (2 * n + 1, n + 1));
}

/// A one-network City database: 192.0.2.0/24 in Berlin (subdivision BE).
fn berlin_db() -> Vec<u8> {
    use mmdb_writer::{Value, Writer};
    let mut w = Writer::new("Switchyard-City-Test-B");
    let record = Value::map([
        ("continent", Value::map([("code", Value::from("EU"))])),
        ("country", Value::map([("iso_code", Value::from("DE"))])),
        (
            "subdivisions",
            Value::array([Value::map([("iso_code", Value::from("BE"))])]),
        ),
    ]);
    w.insert_value(
        "192.0.2.0/24".parse::<mmdb_writer::ipnet::IpNet>().unwrap(),
        record,
    )
    .unwrap();
    w.to_bytes().unwrap()
}

/// Writes `bytes` next to `dest` and renames it over `dest`, as a safe updater does.
fn replace_atomically(dest: &Path, bytes: &[u8]) {
    let tmp = dest.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

#[test]
fn watched_files_are_swapped_in_while_lookups_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("City.mmdb");
    let overrides = dir.path().join("overrides.toml");
    std::fs::copy(project("geo/Switchyard-City-Test.mmdb"), &city).unwrap();
    std::fs::write(&overrides, "# empty\n").unwrap();
    let paths = GeoPaths {
        city: Some(city.clone()),
        asn: None,
        overrides: Some(overrides.clone()),
    };

    let geo = Arc::new(Geo::new(GeoDb::open(&paths).unwrap()));
    let _watcher = geo.watch(paths.clone()).unwrap();
    let probe = ip("192.0.2.1");
    assert_eq!(geo.lookup(probe).country, "US");

    // Readers hammer the service during the swaps; each answer must be one of the known
    // generations, never a blank from a half-loaded file.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3u8)
        .map(|i| {
            let (geo, stop, done) = (geo.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    // Vary the address so both cache hits and database lookups happen.
                    n = n.wrapping_add(1);
                    let got = geo.lookup(IpAddr::from([192, 0, 2, n % 64 + i]));
                    let ok = matches!(
                        (got.country.as_str(), got.region.as_str()),
                        ("US", "US-R-CA") | ("DE", "DE-R-BE") | ("DE", "DE-R-BERLIN")
                    );
                    assert!(ok, "unexpected answer during reload: {got:?}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    replace_atomically(&city, &berlin_db());
    assert!(
        wait_for(Duration::from_secs(2), || geo.lookup(probe).country == "DE"),
        "new City database not in service within 2 s"
    );
    assert_eq!(
        geo.status().city.unwrap().database_type,
        "Switchyard-City-Test-B"
    );

    replace_atomically(&overrides, b"[region]\n\"DE-R-BE\" = \"DE-R-BERLIN\"\n");
    assert!(
        wait_for(Duration::from_secs(2), || geo.lookup(probe).region
            == "DE-R-BERLIN"),
        "new override table not in service within 2 s"
    );

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw a bad answer");
    }
    assert!(done.load(Ordering::Relaxed) > 0);

    // A broken file is refused and the databases in service stay.
    replace_atomically(&city, b"garbage");
    let err = geo.reload(&paths).unwrap_err();
    assert!(err.to_string().contains("City.mmdb"), "{err}");
    assert_eq!(geo.lookup(probe).region, "DE-R-BERLIN");
}

#[test]
fn watching_a_missing_directory_is_an_error() {
    let geo = Arc::new(Geo::new(GeoDb::default()));
    let paths = GeoPaths {
        city: Some(PathBuf::from("/nonexistent-dir/City.mmdb")),
        ..GeoPaths::default()
    };
    let err = geo.watch(paths).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/City.mmdb"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ipv4_and_its_mapped_form_agree(addr in any::<u32>()) {
        let db = shipped_db();
        let v4 = std::net::Ipv4Addr::from(addr);
        let got = db.lookup(IpAddr::V4(v4));
        prop_assert!(got.prefix_len <= 32, "IPv4 prefix {}", got.prefix_len);
        prop_assert_eq!(got, db.lookup(IpAddr::V6(v4.to_ipv6_mapped())));
    }

    #[test]
    fn any_ipv6_lookup_succeeds_within_its_family(addr in any::<u128>()) {
        let got = shipped_db().lookup(IpAddr::V6(addr.into()));
        prop_assert!(got.prefix_len <= 128);
    }
}

fn shipped_db() -> &'static GeoDb {
    static DB: std::sync::OnceLock<GeoDb> = std::sync::OnceLock::new();
    DB.get_or_init(|| GeoDb::open(&shipped()).unwrap())
}

/// How to corrupt a database's search tree (issue 29).
#[derive(Debug, Clone, Copy)]
enum Tree {
    /// Every record points at node 0: the tree loops, every lookup is empty.
    Zeros,
    /// Every record says "no data": well-formed, and every lookup is empty.
    Empty,
}

/// `bytes` (a MaxMind DB) with its search tree overwritten as `how` says;
/// the data section and the metadata at the end are left intact, so the
/// file still opens.
fn corrupt_tree(bytes: &[u8], how: Tree) -> Vec<u8> {
    let reader = maxminddb::Reader::from_source(bytes.to_vec()).expect("a database");
    let nodes = reader.metadata().node_count as usize;
    let record_size = usize::from(reader.metadata().record_size);
    let node_bytes = record_size * 2 / 8;
    let mut out = bytes.to_vec();
    let value = match how {
        Tree::Zeros => 0u32,
        Tree::Empty => nodes as u32,
    };
    for node in out[..nodes * node_bytes].chunks_exact_mut(node_bytes) {
        match record_size {
            24 => {
                let v = value.to_be_bytes();
                node[..3].copy_from_slice(&v[1..]);
                node[3..].copy_from_slice(&v[1..]);
            }
            28 => {
                let v = value.to_be_bytes();
                node[..3].copy_from_slice(&v[1..]);
                node[3] = (v[0] << 4) | (v[0] & 0x0f);
                node[4..].copy_from_slice(&v[1..]);
            }
            32 => {
                node[..4].copy_from_slice(&value.to_be_bytes());
                node[4..].copy_from_slice(&value.to_be_bytes());
            }
            other => panic!("record size {other}"),
        }
    }
    assert_eq!(
        out[nodes * node_bytes..],
        bytes[nodes * node_bytes..],
        "only the tree changes"
    );
    out
}

/// A database whose metadata is intact but whose search tree is corrupt
/// opened before and answered every lookup with empty fields ("loaded").
/// Now it is refused by name, and a watched reload keeps the previous
/// databases in service and remembers why for `/deepcheck`.
#[test]
fn a_database_with_a_corrupt_search_tree_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("City.mmdb");
    let good = std::fs::read(project("geo/Switchyard-City-Test.mmdb")).unwrap();
    std::fs::write(&city, &good).unwrap();
    let paths = GeoPaths {
        city: Some(city.clone()),
        asn: None,
        overrides: None,
    };
    let geo = Arc::new(Geo::new(GeoDb::open(&paths).unwrap()));
    let _watcher = geo.watch(paths.clone()).unwrap();
    let probe = ip("192.0.2.1");
    assert_eq!(geo.lookup(probe).country, "US");
    for how in [Tree::Zeros, Tree::Empty] {
        let bad = corrupt_tree(&good, how);
        // The metadata still reads: this is what used to be loaded.
        assert!(
            maxminddb::Reader::from_source(bad.clone()).is_ok(),
            "{how:?}"
        );
        replace_atomically(&city, &bad);
        let err = GeoDb::open(&paths).unwrap_err().to_string();
        assert!(
            err.contains("City.mmdb") && err.contains("corrupt"),
            "{how:?}: {err}"
        );
        assert!(
            wait_for(Duration::from_secs(3), || geo.reload_error().is_some()),
            "{how:?}: the watcher did not try the corrupt file"
        );
        assert!(
            geo.reload_error().unwrap().contains("corrupt"),
            "{:?}",
            geo.reload_error()
        );
        assert_eq!(geo.lookup(probe).country, "US", "{how:?}: previous data");
        assert_eq!(geo.lookup(ip("192.0.2.77")).country, "US");
        // A good file again clears the error.
        replace_atomically(&city, &good);
        assert!(
            wait_for(Duration::from_secs(3), || geo.reload_error().is_none()),
            "{how:?}: the good file did not clear the error"
        );
    }
    // Both shipped databases pass the verification.
    GeoDb::open(&shipped()).expect("shipped databases verify");
}
