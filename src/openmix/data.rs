//! The live data an app reads: probes, Fusion and Sonar, plus provider settings.
//!
//! A [`DataSnapshot`] is immutable; the data refreshers build a new one and
//! swap it in, so a decision never sees half an update.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Probe values: probe name → (provider alias, value; `None` when the
/// provider is known but has no value).
pub type ProbeTable = BTreeMap<String, Vec<(String, Option<f64>)>>;

/// Probe names apps may ask for with `getProbe`.
pub const PROBE_NAMES: [&str; 6] = [
    "avail",
    "http_rtt",
    "http_kbps",
    "video_rtt",
    "video_kbps",
    "proximity_dist",
];

/// A provider's configured settings, as `config.getProviders()` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Latitude of the provider's location, for `proximity_dist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude of the provider's location, for `proximity_dist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// Any other operator settings (cname, ips, weights...), passed to apps as is.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// One immutable view of everything apps can read besides the request.
/// Serialisable both ways: the decision log keeps the snapshots its
/// entries were decided on, so they can be decided again exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DataSnapshot {
    /// Increases with every new snapshot; runtimes use it to notice changes.
    pub version: u64,
    /// probe name → provider alias → value (`None`: provider known, value missing).
    pub probes: ProbeTable,
    /// provider alias → Fusion feed body as received.
    pub fusion: Vec<(String, String)>,
    /// provider alias → Sonar result as JSON text (`{"avail":1}`).
    pub sonar: Vec<(String, String)>,
    /// Configured providers in config order.
    pub providers: Vec<(String, ProviderInfo)>,
    /// Probe values per region (from the leaderboard), when any: region
    /// code → probe name → provider alias → value. They win over `probes`.
    pub regional: BTreeMap<String, ProbeTable>,
    /// Which region a client is in, for `regional`.
    pub regions: std::sync::Arc<RegionLocator>,
    /// Provider alias → its inventory record as JSON text:
    /// `getData('inventory')` (a Switchyard addition).
    pub inventory: Vec<(String, String)>,
    /// Endpoint (app name) → route id → `{weight, strategy, providers}` as
    /// JSON text: that app's `getData('weights')` (a Switchyard addition).
    pub weights: BTreeMap<String, Vec<(String, String)>>,
    /// Endpoint (app name) → the providers its routes name, sorted: part of
    /// that app's [`ProviderScope`].
    pub routed: BTreeMap<String, Vec<String>>,
}

/// The providers one app sees. On Openmix an app sees only the platforms
/// it required; a node serves many apps over one snapshot, so every read of
/// provider data (`getProbe`, `getData('fusion' | 'sonar' | 'inventory')`)
/// is cut to this scope: the providers the app declared (`requireProvider`
/// and its settings' `providers`) and those its endpoint's inventory routes
/// name (routes are how an operator gives an app providers as data).
#[derive(Debug, Clone, Copy)]
pub struct ProviderScope<'a> {
    /// Declared providers, in order: `getProbe` pads its rows with them.
    pub declared: &'a [String],
    /// Providers the app's endpoint routes name.
    pub routed: &'a [String],
}

impl ProviderScope<'_> {
    /// Whether the app sees provider `alias`.
    pub fn sees(&self, alias: &str) -> bool {
        self.declared.iter().any(|a| a == alias) || self.routed.iter().any(|a| a == alias)
    }
}

/// Finds the region a client stands for: among the regions serving its
/// country the nearest (several serve the US), then likewise its market,
/// then the nearest region overall, then `GLOBAL`. Without client
/// coordinates the first configured candidate wins. The same rules as
/// `stats::RegionSet::for_client`, but prepared for the query path: no
/// allocation per lookup and two sines per candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegionLocator {
    /// Country code → the regions serving it, in configured order.
    pub by_country: std::collections::HashMap<String, Vec<RegionPoint>>,
    /// Market code → the regions serving it, in configured order.
    pub by_market: std::collections::HashMap<String, Vec<RegionPoint>>,
    /// Every region with coordinates, in configured order.
    pub points: Vec<RegionPoint>,
}

/// A region as the locator compares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionPoint {
    /// Region code.
    pub code: String,
    /// Where it is, when it has a place (`GLOBAL` has none).
    place: Option<Place>,
}

/// A point prepared for distance comparison: radians and the latitude's
/// cosine (serialised as computed, so a snapshot read back compares alike).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Place {
    lat: f64,
    lon: f64,
    cos_lat: f64,
}

impl Place {
    fn new(lat: f64, lon: f64) -> Option<Place> {
        (lat.is_finite() && lon.is_finite()).then(|| Place {
            lat: lat.to_radians(),
            lon: lon.to_radians(),
            cos_lat: lat.to_radians().cos(),
        })
    }

    /// The haversine term: grows with great-circle distance, so comparing
    /// it compares distances without the square root and arcsine.
    fn haversine(self, o: Place) -> f64 {
        let dlat = ((o.lat - self.lat) / 2.0).sin();
        let dlon = ((o.lon - self.lon) / 2.0).sin();
        dlat * dlat + self.cos_lat * o.cos_lat * dlon * dlon
    }
}

impl RegionPoint {
    /// A region with its (latitude, longitude) in degrees, if it has a place.
    pub fn new(code: &str, coords: Option<(f64, f64)>) -> RegionPoint {
        RegionPoint {
            code: code.to_string(),
            place: coords.and_then(|(lat, lon)| Place::new(lat, lon)),
        }
    }
}

impl RegionLocator {
    /// The region for a client.
    pub fn locate(&self, market: &str, country: &str, lat: Option<f64>, lon: Option<f64>) -> &str {
        let here = lat.zip(lon).and_then(|(a, o)| Place::new(a, o));
        for candidates in [self.by_country.get(country), self.by_market.get(market)]
            .into_iter()
            .flatten()
        {
            if let Some(r) = nearest(candidates, here) {
                return r;
            }
        }
        if here.is_some()
            && let Some(r) = nearest(&self.points, here)
        {
            return r;
        }
        "GLOBAL"
    }
}

/// The candidate nearest to `here` (the first of equals), else the first.
fn nearest(candidates: &[RegionPoint], here: Option<Place>) -> Option<&str> {
    let by_distance = here.and_then(|h| {
        candidates
            .iter()
            .filter_map(|c| c.place.map(|p| (h.haversine(p), c)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c)
    });
    by_distance
        .or_else(|| candidates.first())
        .map(|c| c.code.as_str())
}

/// Why JSON is not probe data ([`DataSnapshot::probes_from_json`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeDataError {
    /// The top level is not an object.
    #[error("probe data must be an object of probe name → provider → {{name: value}}")]
    NotObject,
    /// A probe name that is not one of [`PROBE_NAMES`].
    #[error("unknown probe '{probe}' (known: {})", PROBE_NAMES.join(", "))]
    UnknownProbe {
        /// The probe name given.
        probe: String,
    },
    /// A probe whose value is not an object keyed by provider.
    #[error("probe '{0}' must be an object keyed by provider")]
    ProbeNotObject(String),
    /// A provider's `{probe: value}` whose value is not a number.
    #[error("probe '{probe}' of '{alias}' must be a number")]
    NotNumber {
        /// The probe.
        probe: String,
        /// The provider.
        alias: String,
    },
    /// A provider's value that is neither a number nor `{probe: number}`.
    #[error("probe '{probe}' of '{alias}' must be {{\"{probe}\": number}}")]
    BadValue {
        /// The probe.
        probe: String,
        /// The provider.
        alias: String,
    },
}

/// Feed JSON that is not an object keyed by provider
/// ([`DataSnapshot::feed_from_json`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} data must be an object keyed by provider")]
pub struct FeedError {
    /// The feed (`fusion`, `sonar`).
    pub what: String,
}

impl DataSnapshot {
    /// Builds probe tables from the JSON shape the Openmix API shows:
    /// `{"avail": {"cdn_a": {"avail": 98.9}, "cdn_b": {}}}`.
    pub fn probes_from_json(value: &serde_json::Value) -> Result<ProbeTable, ProbeDataError> {
        let obj = value.as_object().ok_or(ProbeDataError::NotObject)?;
        let mut out = BTreeMap::new();
        for (probe, per_provider) in obj {
            if !PROBE_NAMES.contains(&probe.as_str()) {
                return Err(ProbeDataError::UnknownProbe {
                    probe: probe.clone(),
                });
            }
            let map = per_provider
                .as_object()
                .ok_or_else(|| ProbeDataError::ProbeNotObject(probe.clone()))?;
            let mut rows = Vec::with_capacity(map.len());
            for (alias, v) in map {
                let value = match v {
                    serde_json::Value::Object(o) => match o.get(probe) {
                        None => None,
                        Some(n) => Some(n.as_f64().ok_or_else(|| ProbeDataError::NotNumber {
                            probe: probe.clone(),
                            alias: alias.clone(),
                        })?),
                    },
                    serde_json::Value::Number(n) => n.as_f64(),
                    _ => {
                        return Err(ProbeDataError::BadValue {
                            probe: probe.clone(),
                            alias: alias.clone(),
                        });
                    }
                };
                rows.push((alias.clone(), value));
            }
            out.insert(probe.clone(), rows);
        }
        Ok(out)
    }

    /// Builds a feed (alias → string) from JSON. String values are kept as
    /// they are; any other value is serialised, as apps `JSON.parse` every value.
    pub fn feed_from_json(
        value: &serde_json::Value,
        what: &str,
    ) -> Result<Vec<(String, String)>, FeedError> {
        let obj = value.as_object().ok_or_else(|| FeedError {
            what: what.to_string(),
        })?;
        Ok(obj
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect())
    }

    /// Probe rows for a client: its region's, else `GLOBAL`'s (leaderboard
    /// data), else the static ones.
    pub fn probe_rows(
        &self,
        probe: &str,
        client: &super::Location,
    ) -> Option<&Vec<(String, Option<f64>)>> {
        if !self.regional.is_empty() {
            let region = self.regions.locate(
                &client.market,
                &client.country,
                client.latitude,
                client.longitude,
            );
            for r in [region, "GLOBAL"] {
                if let Some(rows) = self.regional.get(r).and_then(|p| p.get(probe)) {
                    return Some(rows);
                }
            }
        }
        self.probes.get(probe)
    }

    /// The scope of app `app` that declared `declared`.
    pub fn scope<'a>(&'a self, app: &str, declared: &'a [String]) -> ProviderScope<'a> {
        ProviderScope {
            declared,
            routed: self.routed.get(app).map_or(&[], Vec::as_slice),
        }
    }

    /// The configured location of a provider, when it has one.
    pub fn location(&self, alias: &str) -> Option<(f64, f64)> {
        self.providers
            .iter()
            .find(|(a, _)| a == alias)
            .and_then(|(_, p)| Some((p.latitude?, p.longitude?)))
    }
}

/// Great-circle distance in km between two (lat, lon) points in degrees.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse() {
        let v = serde_json::json!({"avail": {"a": {"avail": 98.5}, "b": {}}});
        let p = DataSnapshot::probes_from_json(&v).unwrap();
        assert_eq!(
            p["avail"],
            vec![("a".into(), Some(98.5)), ("b".into(), None)]
        );
        assert!(DataSnapshot::probes_from_json(&serde_json::json!({"bogus": {}})).is_err());
        let bad = |v| DataSnapshot::probes_from_json(&v).unwrap_err().to_string();
        assert_eq!(
            bad(serde_json::json!([])),
            "probe data must be an object of probe name → provider → {name: value}"
        );
        assert_eq!(
            bad(serde_json::json!({"avail": {"a": "x"}})),
            "probe 'avail' of 'a' must be {\"avail\": number}"
        );
        assert!(
            bad(serde_json::json!({"bogus": {}}))
                .starts_with("unknown probe 'bogus' (known: avail, ")
        );
    }

    #[test]
    fn distance() {
        // London to Paris is about 344 km.
        let d = distance_km((51.5074, -0.1278), (48.8566, 2.3522));
        assert!((d - 344.0).abs() < 3.0, "{d}");
    }
}
