//! The parts of City and ASN records Switchyard reads, and subdivision codes.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

/// The code for one subdivision: its ISO 3166-2 code when it has one (GeoIP), else one made
/// from its English name (DB-IP Lite has names only): a multi-word name gives the initials of
/// its words ("New South Wales" → "NSW"), a single word is uppercased with non-alphanumerics
/// removed ("Île-de-France" → "ÎLEDEFRANCE"). Empty when there is neither.
pub(super) fn subdivision_code(iso_code: Option<&str>, name: Option<&str>) -> String {
    if let Some(code) = iso_code.map(str::trim).filter(|c| !c.is_empty()) {
        return code.to_uppercase();
    }
    let name = name.unwrap_or_default();
    let words: Vec<&str> = name.split_whitespace().collect();
    if words.len() > 1 {
        words
            .iter()
            .filter_map(|w| w.chars().find(|c| c.is_alphanumeric()))
            .flat_map(char::to_uppercase)
            .collect()
    } else {
        name.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_uppercase)
            .collect()
    }
}

// The few fields we read from a City record. Decoding these instead of the full
// `maxminddb::geoip2::City` skips the eight-language name maps, which is most of the work.
#[derive(Deserialize, Default)]
pub(super) struct CityRecord<'a> {
    #[serde(borrow, default)]
    pub(super) continent: Continent<'a>,
    #[serde(borrow, default)]
    pub(super) country: CountryRec<'a>,
    #[serde(borrow, default)]
    pub(super) registered_country: CountryRec<'a>,
    #[serde(borrow, default)]
    pub(super) subdivisions: Vec<Subdivision<'a>>,
    #[serde(default)]
    pub(super) location: Location,
}

#[derive(Deserialize, Default)]
pub(super) struct Continent<'a> {
    #[serde(borrow, default)]
    pub(super) code: Option<&'a str>,
}

#[derive(Deserialize, Default)]
pub(super) struct CountryRec<'a> {
    #[serde(borrow, default)]
    pub(super) iso_code: Option<&'a str>,
}

#[derive(Deserialize, Default)]
pub(super) struct Subdivision<'a> {
    #[serde(borrow, default)]
    pub(super) iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    pub(super) names: EnglishName<'a>,
}

#[derive(Deserialize, Default)]
pub(super) struct EnglishName<'a> {
    #[serde(borrow, default)]
    pub(super) en: Option<&'a str>,
}

#[derive(Deserialize, Default)]
pub(super) struct Location {
    #[serde(default, deserialize_with = "lenient_f64")]
    pub(super) latitude: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub(super) longitude: Option<f64>,
}

#[derive(Deserialize)]
pub(super) struct AsnRecord {
    #[serde(default, deserialize_with = "lenient_u32")]
    pub(super) autonomous_system_number: Option<u32>,
}

/// maxminddb's typed decoding insists on the exact MMDB number type (uint32 for a `u32`);
/// third-party writers differ (uint16, uint64), so numbers are taken from any integer type.
fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an unsigned integer")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(u32::try_from(v).ok())
        }
        fn visit_u128<E>(self, v: u128) -> Result<Self::Value, E> {
            Ok(u32::try_from(v).ok())
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u32::try_from(v).ok())
        }
    }
    d.deserialize_any(V)
}

/// Like [`lenient_u32`]: GeoIP writes doubles, some writers floats or integers.
fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(v.is_finite().then_some(v))
        }
        #[allow(clippy::cast_precision_loss)] // coordinates are small integers if integers at all
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        #[allow(clippy::cast_precision_loss)]
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdivision_codes() {
        assert_eq!(subdivision_code(Some("ca"), Some("California")), "CA");
        assert_eq!(subdivision_code(None, Some("New South Wales")), "NSW");
        assert_eq!(
            subdivision_code(Some(""), Some("Île-de-France")),
            "ÎLEDEFRANCE"
        );
        assert_eq!(
            subdivision_code(None, Some("  Rhineland  (Palatinate)")),
            "RP"
        );
        assert_eq!(subdivision_code(None, Some("St. Gallen")), "SG");
        assert_eq!(subdivision_code(None, None), "");
        assert_eq!(subdivision_code(None, Some("--")), "");
    }
}
