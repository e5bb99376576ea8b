//! `[providers.ALIAS]`: the providers apps choose between.

use std::collections::BTreeMap;

use crate::openmix::ProviderInfo;

/// The configured providers, as apps read them and as the inventory does.
pub(super) struct Providers {
    pub(super) list: Vec<(String, ProviderInfo)>,
    pub(super) inventory: Vec<crate::inventory::model::Provider>,
}

pub(super) fn check(raw: &BTreeMap<String, ProviderInfo>) -> Result<Providers, String> {
    for (alias, p) in raw {
        if let Some(lat) = p.latitude
            && !(-90.0..=90.0).contains(&lat)
        {
            return Err(format!("providers.{alias}.latitude: {lat} is out of range"));
        }
        if let Some(lon) = p.longitude
            && !(-180.0..=180.0).contains(&lon)
        {
            return Err(format!(
                "providers.{alias}.longitude: {lon} is out of range"
            ));
        }
    }
    let list: Vec<(String, ProviderInfo)> =
        raw.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let inventory = crate::inventory::config_providers(&list).map_err(|e| e.to_string())?;
    Ok(Providers { list, inventory })
}
