//! The configured test regions: what a post's `region` may be, what
//! `/api/regions` lists, and which region stands for a DNS/HTTP client when
//! the probe refresher turns leaderboard rows into Openmix probes.

use serde::{Deserialize, Serialize};

/// One test region: where stream testers run from.
///
/// `markets` and `countries` say which clients the region stands for; they
/// are used only by [`RegionSet::for_client`], never by the stats API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Upper-case code, as posted in `region` (e.g. `FRA`).
    pub code: String,
    /// Display name (e.g. `Frankfurt`).
    pub name: String,
    /// Latitude in degrees; `None` for regions with no one place, like `GLOBAL`.
    #[serde(default)]
    pub lat: Option<f64>,
    /// Longitude in degrees; set exactly when `lat` is.
    #[serde(default)]
    pub lon: Option<f64>,
    /// Two-letter continent codes (Openmix markets: NA, SA, EU, AS, AF, OC) this region serves.
    #[serde(default)]
    pub markets: Vec<String>,
    /// ISO 3166-1 alpha-2 country codes this region serves.
    #[serde(default)]
    pub countries: Vec<String>,
}

impl Region {
    /// The coordinates, when the region has a place.
    pub fn coords(&self) -> Option<(f64, f64)> {
        self.lat.zip(self.lon)
    }
}

/// Why a region list was refused. Each message names the region, since an
/// operator editing a long list must know which entry to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionError {
    /// The list is empty: posting would be impossible.
    #[error("the region list is empty")]
    Empty,
    /// A code is empty or has characters other than A–Z, 0–9, `_` and `-`.
    #[error("region code {0:?} must be 1-16 letters, digits, '_' or '-'")]
    BadCode(String),
    /// Two entries share a code (compared case-insensitively).
    #[error("region {0} is listed twice")]
    Duplicate(String),
    /// Latitude or longitude out of range, or only one of them given.
    #[error("region {0}: lat and lon must both be given, within ±90 and ±180")]
    BadCoords(String),
    /// A market or country code that is not two ASCII letters.
    #[error("region {code}: {value:?} is not a two-letter market or country code")]
    BadArea {
        /// The region's code.
        code: String,
        /// The offending entry.
        value: String,
    },
}

/// The configured regions, checked and normalised (codes, markets and
/// countries upper-case).
#[derive(Debug, Clone, PartialEq)]
pub struct RegionSet {
    regions: Vec<Region>,
}

/// The region that stands for everyone when nothing else matches.
pub const GLOBAL: &str = "GLOBAL";

impl RegionSet {
    /// Checks and normalises a configured list. Order is kept: it is the
    /// order `/api/regions` lists and the tie-break of [`Self::for_client`].
    pub fn new(regions: Vec<Region>) -> Result<Self, RegionError> {
        if regions.is_empty() {
            return Err(RegionError::Empty);
        }
        let mut out: Vec<Region> = Vec::with_capacity(regions.len());
        for mut r in regions {
            r.code = r.code.trim().to_ascii_uppercase();
            let code_ok = (1..=16).contains(&r.code.len())
                && r.code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !code_ok {
                return Err(RegionError::BadCode(r.code));
            }
            if out.iter().any(|o| o.code == r.code) {
                return Err(RegionError::Duplicate(r.code));
            }
            let coords_ok = match (r.lat, r.lon) {
                (None, None) => true,
                (Some(lat), Some(lon)) => {
                    lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
                }
                _ => false,
            };
            if !coords_ok {
                return Err(RegionError::BadCoords(r.code));
            }
            for list in [&mut r.markets, &mut r.countries] {
                for v in list.iter_mut() {
                    *v = v.trim().to_ascii_uppercase();
                    if v.len() != 2 || !v.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(RegionError::BadArea {
                            code: r.code.clone(),
                            value: v.clone(),
                        });
                    }
                }
            }
            out.push(r);
        }
        Ok(Self { regions: out })
    }

    /// The regions, in configured order.
    pub fn iter(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter()
    }

    /// How many regions are configured.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Always false: a set holds at least one region ([`RegionError::Empty`]).
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The region with this code, compared case-insensitively (testers have
    /// posted both `fra` and `FRA`).
    pub fn get(&self, code: &str) -> Option<&Region> {
        let code = code.trim();
        self.regions
            .iter()
            .find(|r| r.code.eq_ignore_ascii_case(code))
    }

    /// The region that stands for a client: the regions serving its country,
    /// else those serving its market, else every placed region; among the
    /// candidates the nearest by great-circle distance when the client has
    /// coordinates, else the first configured. With nothing to go on:
    /// `GLOBAL` (or the first region, when `GLOBAL` is not configured).
    ///
    /// Several regions may serve one country (the US has ten), which is why
    /// distance breaks ties inside a country rather than only after it.
    pub fn for_client<'s>(
        &'s self,
        market: &str,
        country: &str,
        lat: Option<f64>,
        lon: Option<f64>,
    ) -> &'s Region {
        let here = lat.zip(lon).filter(|(a, o)| a.is_finite() && o.is_finite());
        let pick = |candidates: Vec<&'s Region>| pick_nearest(candidates, here);
        let country = country.trim();
        let market = market.trim();
        if !country.is_empty() {
            let c: Vec<&Region> = self
                .regions
                .iter()
                .filter(|r| r.countries.iter().any(|x| x.eq_ignore_ascii_case(country)))
                .collect();
            if let Some(r) = pick(c) {
                return r;
            }
        }
        if !market.is_empty() {
            let c: Vec<&Region> = self
                .regions
                .iter()
                .filter(|r| r.markets.iter().any(|x| x.eq_ignore_ascii_case(market)))
                .collect();
            if let Some(r) = pick(c) {
                return r;
            }
        }
        if here.is_some() {
            let c: Vec<&Region> = self
                .regions
                .iter()
                .filter(|r| r.coords().is_some())
                .collect();
            if let Some(r) = pick(c) {
                return r;
            }
        }
        self.global()
    }

    /// `GLOBAL`, or the first region when the operator left it out.
    pub fn global(&self) -> &Region {
        // `new` refuses an empty list, so index 0 exists.
        self.get(GLOBAL).unwrap_or(&self.regions[0])
    }
}

impl Default for RegionSet {
    /// The spec's default list, with the regions' real coordinates.
    fn default() -> Self {
        Self {
            regions: default_regions(),
        }
    }
}

/// The candidate nearest to `here`, else the first.
fn pick_nearest(candidates: Vec<&Region>, here: Option<(f64, f64)>) -> Option<&Region> {
    let nearest = here.and_then(|p| {
        candidates
            .iter()
            .filter_map(|r| r.coords().map(|c| (haversine_km(p, c), *r)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, r)| r)
    });
    nearest.or_else(|| candidates.first().copied())
}

/// Great-circle distance in km between two (lat, lon) points.
fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1) = (a.0.to_radians(), a.1.to_radians());
    let (la2, lo2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// The spec's default regions. Countries are given to the region a
/// client there would reach fastest; a country served by several regions
/// (US) is split by distance in [`RegionSet::for_client`].
fn default_regions() -> Vec<Region> {
    fn r(
        code: &str,
        name: &str,
        place: Option<(f64, f64)>,
        markets: &[&str],
        countries: &[&str],
    ) -> Region {
        Region {
            code: code.into(),
            name: name.into(),
            lat: place.map(|p| p.0),
            lon: place.map(|p| p.1),
            markets: markets.iter().map(|s| (*s).into()).collect(),
            countries: countries.iter().map(|s| (*s).into()).collect(),
        }
    }
    const US: &[&str] = &["US"];
    vec![
        r(GLOBAL, "Global", None, &[], &[]),
        r("ATL", "Atlanta", Some((33.7490, -84.3880)), &["NA"], US),
        r("ATL2", "Atlanta 2", Some((33.7490, -84.3880)), &["NA"], US),
        r("MDW", "Chicago", Some((41.8781, -87.6298)), &["NA"], US),
        r(
            "FRA",
            "Frankfurt",
            Some((50.1109, 8.6821)),
            &["EU"],
            &["DE", "AT", "CH", "NL", "BE", "LU", "PL", "IT", "LI"],
        ),
        r(
            "HOU",
            "Houston",
            Some((29.7604, -95.3698)),
            &["NA"],
            &["US", "MX"],
        ),
        r(
            "LON",
            "London",
            Some((51.5074, -0.1278)),
            &["EU"],
            &["GB", "IE", "FR", "IS"],
        ),
        r(
            "LAX",
            "Los Angeles",
            Some((34.0522, -118.2437)),
            &["NA"],
            US,
        ),
        r(
            "MAD",
            "Madrid",
            Some((40.4168, -3.7038)),
            &["EU", "AF"],
            &["ES", "PT", "MA", "DZ", "TN"],
        ),
        r(
            "MIA",
            "Miami",
            Some((25.7617, -80.1918)),
            &["NA"],
            &[
                "US", "PR", "CU", "DO", "HT", "JM", "BS", "GT", "HN", "SV", "NI", "CR", "PA",
            ],
        ),
        r(
            "MOS2",
            "Moscow",
            Some((55.7558, 37.6173)),
            &["EU"],
            &["RU", "BY", "KZ", "AM", "GE", "AZ", "UZ"],
        ),
        r("ASH", "Nashua", Some((42.7654, -71.4676)), &["NA"], US),
        r("NYC", "New York", Some((40.7128, -74.0060)), &["NA"], US),
        r(
            "PRG",
            "Prague",
            Some((50.0755, 14.4378)),
            &["EU"],
            &[
                "CZ", "SK", "HU", "SI", "HR", "RS", "BA", "RO", "BG", "GR", "UA", "MD", "TR",
            ],
        ),
        r("SJO", "San Jose", Some((37.3382, -121.8863)), &["NA"], US),
        r(
            "SAO",
            "São Paulo",
            Some((-23.5505, -46.6333)),
            &["SA"],
            &["BR", "AR", "CL", "UY", "PY", "BO", "PE", "CO", "VE", "EC"],
        ),
        r("SEA", "Seattle", Some((47.6062, -122.3321)), &["NA"], US),
        r(
            "SIN",
            "Singapore",
            Some((1.3521, 103.8198)),
            &["AS"],
            &[
                "SG", "MY", "ID", "TH", "VN", "PH", "KH", "MM", "IN", "BD", "LK", "HK", "CN",
            ],
        ),
        r(
            "STO",
            "Stockholm",
            Some((59.3293, 18.0686)),
            &["EU"],
            &["SE", "NO", "FI", "DK", "EE", "LV", "LT"],
        ),
        r(
            "SYD",
            "Sydney",
            Some((-33.8688, 151.2093)),
            &["OC"],
            &["AU", "NZ"],
        ),
        r(
            "HND",
            "Tokyo",
            Some((35.6762, 139.6503)),
            &["AS"],
            &["JP", "KR", "TW"],
        ),
        r(
            "TOR",
            "Toronto",
            Some((43.6532, -79.3832)),
            &["NA"],
            &["CA"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_is_valid_and_complete() {
        let set = RegionSet::default();
        assert_eq!(RegionSet::new(default_regions()).as_ref(), Ok(&set));
        let codes: Vec<&str> = set.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "GLOBAL", "ATL", "ATL2", "MDW", "FRA", "HOU", "LON", "LAX", "MAD", "MIA", "MOS2",
                "ASH", "NYC", "PRG", "SJO", "SAO", "SEA", "SIN", "STO", "SYD", "HND", "TOR"
            ]
        );
        assert_eq!(set.get("mdw").map(|r| r.name.as_str()), Some("Chicago"));
        assert_eq!(set.get("hnd").map(|r| r.name.as_str()), Some("Tokyo"));
    }

    #[test]
    fn client_mapping_order() {
        let set = RegionSet::default();
        // Country first.
        assert_eq!(set.for_client("EU", "DE", None, None).code, "FRA");
        assert_eq!(set.for_client("AS", "JP", None, None).code, "HND");
        assert_eq!(set.for_client("SA", "BR", None, None).code, "SAO");
        assert_eq!(set.for_client("OC", "AU", None, None).code, "SYD");
        assert_eq!(set.for_client("AS", "SG", None, None).code, "SIN");
        // A US client: the nearest US region.
        assert_eq!(
            set.for_client("NA", "US", Some(41.9), Some(-87.7)).code,
            "MDW"
        );
        assert_eq!(
            set.for_client("NA", "US", Some(47.0), Some(-122.0)).code,
            "SEA"
        );
        assert_eq!(set.for_client("NA", "US", None, None).code, "ATL");
        // Unlisted country: the market, nearest inside it.
        assert_eq!(
            set.for_client("EU", "XX", Some(48.2), Some(16.4)).code,
            "PRG"
        );
        // Unknown market and country: nearest overall.
        // Nairobi: Prague (~5,900 km) is nearer than Moscow (~6,300 km).
        assert_eq!(set.for_client("", "", Some(-1.3), Some(36.8)).code, "PRG");
        // Nothing at all.
        assert_eq!(set.for_client("", "", None, None).code, "GLOBAL");
        assert_eq!(set.for_client("AN", "AQ", None, None).code, "GLOBAL");
        // Case-insensitive.
        assert_eq!(set.for_client("eu", "de", None, None).code, "FRA");
    }

    #[test]
    fn refuses_bad_lists() {
        let ok = |code: &str| Region {
            code: code.into(),
            name: "x".into(),
            lat: None,
            lon: None,
            markets: vec![],
            countries: vec![],
        };
        assert_eq!(RegionSet::new(vec![]), Err(RegionError::Empty));
        assert_eq!(
            RegionSet::new(vec![ok("fra"), ok("FRA")]),
            Err(RegionError::Duplicate("FRA".into()))
        );
        assert!(matches!(
            RegionSet::new(vec![ok("a b")]),
            Err(RegionError::BadCode(_))
        ));
        let mut half = ok("X");
        half.lat = Some(1.0);
        assert_eq!(
            RegionSet::new(vec![half]),
            Err(RegionError::BadCoords("X".into()))
        );
        let mut area = ok("X");
        area.countries = vec!["USA".into()];
        assert!(matches!(
            RegionSet::new(vec![area]),
            Err(RegionError::BadArea { .. })
        ));
        // First region stands in for GLOBAL when it is absent.
        let set = RegionSet::new(vec![ok("fra")]).unwrap();
        assert_eq!(set.for_client("", "", None, None).code, "FRA");
    }
}
