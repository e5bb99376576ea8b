//! `[geo]`: the GeoIP databases and the code override table.

use std::path::PathBuf;

use serde::Deserialize;

use super::Overrides;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGeo {
    city: Option<PathBuf>,
    asn: Option<PathBuf>,
    overrides: Option<PathBuf>,
}

/// The GeoIP files the configuration names, `--geo-city` and `--geo-asn`
/// winning over the file.
pub(super) fn check(raw: RawGeo, over: &Overrides) -> crate::geo::GeoPaths {
    crate::geo::GeoPaths {
        city: over.geo_city.clone().or(raw.city),
        asn: over.geo_asn.clone().or(raw.asn),
        overrides: raw.overrides,
    }
}

impl super::Config {
    /// The GeoIP files this configuration names.
    pub fn geo_paths(&self) -> crate::geo::GeoPaths {
        crate::geo::GeoPaths {
            city: self.geo_city.clone(),
            asn: self.geo_asn.clone(),
            overrides: self.geo_overrides.clone(),
        }
    }
}
