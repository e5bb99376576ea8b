//! Builds the test GeoIP databases shipped in `geo/`:
//! `Switchyard-City-Test.mmdb` (GeoLite2-City record layout) and
//! `Switchyard-ASN-Test.mmdb` (GeoLite2-ASN record layout).
//!
//! ```text
//! cargo run --example make_geo_dbs -- geo/
//! ```
//!
//! With `--generate N DIR [SEED]` it builds instead a large database pair for benchmarks
//! (`bench/dns-peers.sh` with `WORKLOAD=realistic`): `DIR/Switchyard-City-Gen.mmdb` with N
//! /24 networks in the GeoLite2-City layout, `DIR/Switchyard-ASN-Gen.mmdb` with an ASN for
//! each of the same networks, and `DIR/networks.txt` listing them (one `a.b.c.0/24` a line,
//! in address order) for the query generator. See [`generate`].
//!
//! Every network is inside a documentation range (RFC 5737, RFC 3849) and every ASN is a
//! documentation ASN (RFC 5398), so the files can never be mistaken for real data. The build
//! epoch is fixed and the writer's layout is deterministic, so a rerun gives the same bytes.
//! The networks are listed in `geo/README.md`; change both together.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use mmdb_writer::ipnet::IpNet;
use mmdb_writer::{IpVersion, Writer};
use serde::Serialize;

/// 2026-01-01T00:00:00Z: fixed so the output does not change from run to run.
const BUILD_EPOCH: u64 = 1_767_225_600;

/// One City network: (network, continent, country, registered country, subdivisions
/// largest first as (iso_code, English name), city, latitude/longitude).
struct CityNet {
    net: &'static str,
    continent: &'static str,
    country: Option<&'static str>,
    registered: &'static str,
    subdivisions: &'static [(Option<&'static str>, &'static str)],
    city: Option<&'static str>,
    location: Option<(f64, f64)>,
}

#[rustfmt::skip]
const CITY: &[CityNet] = &[
    CityNet { net: "192.0.2.0/25", continent: "NA", country: Some("US"), registered: "US",
        subdivisions: &[(Some("CA"), "California")], city: Some("San Francisco"),
        location: Some((37.7749, -122.4194)) },
    CityNet { net: "192.0.2.128/25", continent: "SA", country: Some("BR"), registered: "BR",
        subdivisions: &[(Some("SP"), "São Paulo")], city: Some("São Paulo"),
        location: Some((-23.5505, -46.6333)) },
    CityNet { net: "198.51.100.0/25", continent: "EU", country: Some("GB"), registered: "GB",
        subdivisions: &[(Some("ENG"), "England"), (Some("OXF"), "Oxfordshire")],
        city: Some("Oxford"), location: Some((51.752, -1.2577)) },
    CityNet { net: "198.51.100.128/26", continent: "EU", country: Some("DE"), registered: "DE",
        subdivisions: &[(Some("BE"), "Berlin")], city: Some("Berlin"),
        location: Some((52.52, 13.405)) },
    // The region has no iso_code, as in DB-IP Lite: its code is made from the name.
    CityNet { net: "198.51.100.192/26", continent: "EU", country: Some("FR"), registered: "FR",
        subdivisions: &[(None, "Île-de-France"), (Some("75"), "Paris")], city: Some("Paris"),
        location: Some((48.8566, 2.3522)) },
    CityNet { net: "203.0.113.0/26", continent: "AS", country: Some("JP"), registered: "JP",
        subdivisions: &[(Some("13"), "Tokyo")], city: Some("Tokyo"),
        location: Some((35.6895, 139.6917)) },
    // A multi-word name without iso_code: initials, "NSW".
    CityNet { net: "203.0.113.64/26", continent: "OC", country: Some("AU"), registered: "AU",
        subdivisions: &[(None, "New South Wales")], city: Some("Sydney"),
        location: Some((-33.8688, 151.2093)) },
    CityNet { net: "203.0.113.128/26", continent: "AF", country: Some("ZA"), registered: "ZA",
        subdivisions: &[(Some("GP"), "Gauteng")], city: Some("Johannesburg"),
        location: Some((-26.2041, 28.0473)) },
    // Antarctica: continent AN is no Openmix market.
    CityNet { net: "203.0.113.192/27", continent: "AN", country: Some("AQ"), registered: "AQ",
        subdivisions: &[], city: None, location: Some((-77.85, 166.67)) },
    // Location unknown, only the registered country (as GeoIP gives for some anycast and
    // satellite networks).
    CityNet { net: "203.0.113.224/27", continent: "EU", country: None, registered: "NL",
        subdivisions: &[], city: None, location: None },
    CityNet { net: "2001:db8::/48", continent: "EU", country: Some("IE"), registered: "IE",
        subdivisions: &[(Some("L"), "Leinster"), (Some("D"), "Dublin")], city: Some("Dublin"),
        location: Some((53.3498, -6.2603)) },
    CityNet { net: "2001:db8:1::/48", continent: "AS", country: Some("SG"), registered: "SG",
        subdivisions: &[(Some("01"), "Central Singapore")], city: Some("Singapore"),
        location: Some((1.3521, 103.8198)) },
    CityNet { net: "2001:db8:2::/48", continent: "NA", country: Some("CA"), registered: "CA",
        subdivisions: &[(Some("ON"), "Ontario")], city: Some("Toronto"),
        location: Some((43.6532, -79.3832)) },
];

/// ASN networks. Some are wider and some narrower than the City networks, so the reported
/// prefix length (the longer of the two matches) is exercised both ways.
const ASN: &[(&str, u32, &str)] = &[
    ("192.0.2.0/26", 64496, "Switchyard Test US West A"),
    ("192.0.2.64/26", 64497, "Switchyard Test US West B"),
    ("192.0.2.128/25", 64498, "Switchyard Test Brazil"),
    ("198.51.100.0/25", 64499, "Switchyard Test UK"),
    ("198.51.100.128/25", 64500, "Switchyard Test EU Transit"),
    ("203.0.113.0/25", 64501, "Switchyard Test APAC"),
    ("203.0.113.128/26", 64502, "Switchyard Test Africa"),
    ("203.0.113.192/27", 64503, "Switchyard Test Antarctica"),
    ("2001:db8::/47", 65536, "Switchyard Test EU-Asia v6"),
    ("2001:db8:2::/48", 65537, "Switchyard Test Canada v6"),
    // An ASN with no City record at all.
    ("2001:db8:3::/48", 65538, "Switchyard Test Unlocated v6"),
];

#[derive(Serialize)]
struct Names {
    names: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct Code {
    code: &'static str,
}

#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
}

#[derive(Serialize)]
struct Subdivision {
    #[serde(skip_serializing_if = "Option::is_none")]
    iso_code: Option<&'static str>,
    names: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

/// The GeoLite2-City layout, reduced to the fields Switchyard reads plus city names.
#[derive(Serialize)]
struct CityRecord {
    continent: Code,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<Country>,
    registered_country: Country,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<Subdivision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<Names>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<Location>,
}

#[derive(Serialize)]
struct AsnRecord {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

fn en(name: &'static str) -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("en", name)])
}

fn writer(database_type: &str, description: &str) -> Writer {
    Writer::builder(database_type)
        .ip_version(IpVersion::V6)
        .description(&[("en", description)])
        .build_epoch(UNIX_EPOCH + Duration::from_secs(BUILD_EPOCH))
        .build()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--generate") {
        let (Some(n), Some(dir)) = (args.get(1), args.get(2)) else {
            return Err("usage: make_geo_dbs --generate N DIR [SEED]".into());
        };
        let seed = match args.get(3) {
            Some(s) => s.parse()?,
            None => DEFAULT_SEED,
        };
        return generate(n.parse()?, &PathBuf::from(dir), seed);
    }
    let dir = PathBuf::from(args.first().cloned().unwrap_or_else(|| "geo".to_owned()));
    std::fs::create_dir_all(&dir)?;

    let mut city = writer(
        "Switchyard-City-Test",
        "Switchyard test City database (documentation ranges only)",
    );
    for n in CITY {
        let record = CityRecord {
            continent: Code { code: n.continent },
            country: n.country.map(|iso_code| Country { iso_code }),
            registered_country: Country {
                iso_code: n.registered,
            },
            subdivisions: n
                .subdivisions
                .iter()
                .map(|&(iso_code, name)| Subdivision {
                    iso_code,
                    names: en(name),
                })
                .collect(),
            city: n.city.map(|name| Names { names: en(name) }),
            location: n.location.map(|(latitude, longitude)| Location {
                latitude,
                longitude,
                accuracy_radius: 20,
            }),
        };
        city.insert(n.net.parse::<IpNet>()?, &record)?;
    }

    let mut asn = writer(
        "Switchyard-ASN-Test",
        "Switchyard test ASN database (documentation ranges and ASNs only)",
    );
    for &(net, number, org) in ASN {
        let record = AsnRecord {
            autonomous_system_number: number,
            autonomous_system_organization: org,
        };
        asn.insert(net.parse::<IpNet>()?, &record)?;
    }

    for (name, w) in [
        ("Switchyard-City-Test.mmdb", &city),
        ("Switchyard-ASN-Test.mmdb", &asn),
    ] {
        let path = dir.join(name);
        let bytes = w.to_bytes()?;
        std::fs::write(&path, &bytes)?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}

/// The seed `--generate` uses unless given one.
const DEFAULT_SEED: u64 = 0x5357_4954_4348_4745;

/// The generated database's countries: (continent, country, latitude, longitude). 25 of
/// them, every continent Openmix knows, each with [`SUBDIVISIONS`] subdivisions.
#[rustfmt::skip]
const GEN_COUNTRIES: &[(&str, &str, f64, f64)] = &[
    ("NA", "US", 39.8, -98.6), ("NA", "CA", 56.1, -106.3), ("NA", "MX", 23.6, -102.6),
    ("SA", "BR", -14.2, -51.9), ("SA", "AR", -38.4, -63.6), ("SA", "CL", -35.7, -71.5),
    ("SA", "CO", 4.6, -74.3),
    ("EU", "GB", 55.4, -3.4), ("EU", "DE", 51.2, 10.5), ("EU", "FR", 46.2, 2.2),
    ("EU", "NL", 52.1, 5.3), ("EU", "ES", 40.5, -3.7), ("EU", "IT", 41.9, 12.6),
    ("EU", "PL", 51.9, 19.1), ("EU", "SE", 60.1, 18.6),
    ("AS", "JP", 36.2, 138.3), ("AS", "SG", 1.35, 103.8), ("AS", "IN", 20.6, 79.0),
    ("AS", "KR", 35.9, 127.8), ("AS", "ID", -0.8, 113.9), ("AS", "CN", 35.9, 104.2),
    ("OC", "AU", -25.3, 133.8), ("OC", "NZ", -40.9, 174.9),
    ("AF", "ZA", -30.6, 22.9), ("AF", "NG", 9.1, 8.7),
];

/// Subdivisions per generated country.
const SUBDIVISIONS: usize = 4;

/// ASNs per generated country: a network's ASN is one of its country's, as real networks'
/// mostly are, so the database has 25 × 200 distinct ASNs numbered from [`GEN_ASN_BASE`].
const ASNS_PER_COUNTRY: u32 = 200;

/// First generated ASN: the private-use 32-bit range (RFC 6996), never a real network's.
const GEN_ASN_BASE: u32 = 4_200_000_000;

/// IPv4 ranges no generated network is taken from: the special-purpose registry's
/// (RFC 6890 and successors) and multicast and class E, as (first address, prefix length).
#[rustfmt::skip]
const RESERVED_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8), ([10, 0, 0, 0], 8), ([100, 64, 0, 0], 10), ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16), ([172, 16, 0, 0], 12), ([192, 0, 0, 0], 24), ([192, 0, 2, 0], 24),
    ([192, 88, 99, 0], 24), ([192, 168, 0, 0], 16), ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24), ([203, 0, 113, 0], 24), ([224, 0, 0, 0], 3),
];

/// xorshift64*: small, fast and the same on every platform, so a seed always gives the same
/// databases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Whether the /24 numbered `slash24` (its first address >> 8) is in a reserved range.
fn reserved(slash24: u32) -> bool {
    RESERVED_V4.iter().any(|&(first, len)| {
        let shift = 32 - u32::from(len);
        (slash24 << 8) >> shift == u32::from_be_bytes(first) >> shift
    })
}

/// Builds the benchmark databases: `n` /24 networks drawn uniformly (selection sampling,
/// so exactly `n`, in address order) from the IPv4 /24s outside [`RESERVED_V4`]; each gets
/// one of the 25 × 4 (country, subdivision) locations and one of its country's
/// [`ASNS_PER_COUNTRY`] ASNs at random. A network adjacent to the previous one never repeats its location or ASN, so the
/// writer cannot merge them: both databases hold exactly `n` networks, all /24s.
fn generate(n: usize, dir: &std::path::Path, seed: u64) -> Result<(), Box<dyn Error>> {
    use std::io::Write as _;
    use std::net::Ipv4Addr;

    let start = std::time::Instant::now();
    std::fs::create_dir_all(dir)?;
    let candidates: Vec<u32> = (0..1u32 << 24).filter(|&s| !reserved(s)).collect();
    if n > candidates.len() {
        return Err(format!(
            "at most {} /24 networks fit outside the reserved ranges",
            candidates.len()
        )
        .into());
    }

    // One record per (country, subdivision), built once: leaked strings stand in for the
    // 'static ones of the shipped databases' records.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut locations = Vec::with_capacity(GEN_COUNTRIES.len() * SUBDIVISIONS);
    for &(continent, country, lat, lon) in GEN_COUNTRIES {
        for k in 0..SUBDIVISIONS {
            let offset = k as f64 * 0.75;
            locations.push(CityRecord {
                continent: Code { code: continent },
                country: Some(Country { iso_code: country }),
                registered_country: Country { iso_code: country },
                subdivisions: vec![Subdivision {
                    iso_code: Some(leak(format!("G{}", k + 1))),
                    names: en(leak(format!("{country} Region {}", k + 1))),
                }],
                city: Some(Names {
                    names: en(leak(format!("{country} City {}", k + 1))),
                }),
                location: Some(Location {
                    latitude: lat + offset,
                    longitude: lon - offset,
                    accuracy_radius: 50,
                }),
            });
        }
    }
    let asns = ASNS_PER_COUNTRY * GEN_COUNTRIES.len() as u32;
    let orgs: Vec<&'static str> = (0..asns)
        .map(|k| leak(format!("Switchyard Generated AS{}", GEN_ASN_BASE + k)))
        .collect();

    let mut city = writer(
        "Switchyard-City-Gen",
        "Switchyard generated City database (benchmarks only, not real data)",
    );
    let mut asn = writer(
        "Switchyard-ASN-Gen",
        "Switchyard generated ASN database (benchmarks only, not real data)",
    );
    let mut list = std::io::BufWriter::new(std::fs::File::create(dir.join("networks.txt"))?);
    let mut rng = Rng(seed | 1);
    let (mut needed, mut left) = (n as u64, candidates.len() as u64);
    let mut previous: Option<(u32, usize, usize)> = None;
    for &slash24 in &candidates {
        // Knuth's algorithm S: take this one with probability needed / left.
        let take = rng.below(left) < needed;
        left -= 1;
        if !take {
            continue;
        }
        needed -= 1;
        let mut loc = rng.below(locations.len() as u64) as usize;
        let mut nth = rng.below(u64::from(ASNS_PER_COUNTRY)) as usize;
        let adjacent = previous.filter(|&(p, _, _)| p + 1 == slash24);
        if let Some((_, p_loc, _)) = adjacent
            && loc == p_loc
        {
            loc = (loc + 1) % locations.len();
        }
        let per_country = ASNS_PER_COUNTRY as usize;
        let mut org = loc / SUBDIVISIONS * per_country + nth;
        if let Some((_, _, p_org)) = adjacent
            && org == p_org
        {
            nth = (nth + 1) % per_country;
            org = loc / SUBDIVISIONS * per_country + nth;
        }
        previous = Some((slash24, loc, org));
        let addr = Ipv4Addr::from(slash24 << 8);
        let net = IpNet::new(addr.into(), 24)?;
        city.insert(net, &locations[loc])?;
        asn.insert(
            net,
            &AsnRecord {
                autonomous_system_number: GEN_ASN_BASE + org as u32,
                autonomous_system_organization: orgs[org],
            },
        )?;
        writeln!(list, "{addr}/24")?;
    }
    list.flush()?;
    for (name, w) in [
        ("Switchyard-City-Gen.mmdb", &city),
        ("Switchyard-ASN-Gen.mmdb", &asn),
    ] {
        let path = dir.join(name);
        let bytes = w.to_bytes()?;
        std::fs::write(&path, &bytes)?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    println!(
        "{n} networks (seed {seed:#x}) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
