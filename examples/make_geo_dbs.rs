//! Builds the test GeoIP databases shipped in `geo/`:
//! `Switchyard-City-Test.mmdb` (GeoLite2-City record layout) and
//! `Switchyard-ASN-Test.mmdb` (GeoLite2-ASN record layout).
//!
//! ```text
//! cargo run --example make_geo_dbs -- geo/
//! ```
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
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "geo".to_owned()));
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
