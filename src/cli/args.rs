//! The configuration flags every command that reads the configuration
//! shares.

use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, ConfigSource, Overrides};

/// Flags shared by every command that reads the configuration.
#[derive(Debug, Args, Default, Clone)]
pub struct ConfigArgs {
    /// Configuration file (default: switchyard.toml if present, else built-in defaults).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// DNS listen address, UDP and TCP (repeatable).
    #[arg(long = "dns", value_name = "ADDR")]
    pub dns: Vec<String>,
    /// Public HTTP decision listen address.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Operations and API listen address.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Apps directory.
    #[arg(long, value_name = "DIR")]
    pub apps: Option<PathBuf>,
    /// Data directory.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// GeoIP City database.
    #[arg(long = "geo-city", value_name = "FILE")]
    pub geo_city: Option<PathBuf>,
    /// GeoIP ASN database.
    #[arg(long = "geo-asn", value_name = "FILE")]
    pub geo_asn: Option<PathBuf>,
    /// Serve this zone instead of the configured ones.
    #[arg(long, value_name = "NAME")]
    pub zone: Option<String>,
}

impl ConfigArgs {
    /// The file and overrides these flags name, for loading now and (in
    /// `serve`) again on every reload.
    pub fn source(&self) -> ConfigSource {
        ConfigSource {
            file: self.config.clone(),
            overrides: Overrides {
                dns: self.dns.clone(),
                http: self.http.clone(),
                admin: self.admin.clone(),
                apps: self.apps.clone(),
                data_dir: self.data_dir.clone(),
                geo_city: self.geo_city.clone(),
                geo_asn: self.geo_asn.clone(),
                zone: self.zone.clone(),
            },
        }
    }

    /// Loads the configuration these flags point at.
    pub fn load(&self) -> anyhow::Result<Config> {
        Ok(self.source().load()?)
    }
}
