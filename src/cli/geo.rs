//! `switchyard geo IP`: what the GeoIP databases say about an address.

use std::net::IpAddr;

use clap::Args;

use super::ConfigArgs;
use crate::config::Config;
use crate::geo::GeoDb;

/// `geo` flags.
#[derive(Debug, Args)]
pub struct GeoArgs {
    /// Address to look up.
    pub ip: IpAddr,
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Opens the GeoIP databases the configuration names.
pub fn open_geo(config: &Config) -> anyhow::Result<GeoDb> {
    Ok(GeoDb::open(&config.geo_paths())?)
}

/// `switchyard geo IP`.
pub fn geo(args: &GeoArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let db = open_geo(&config)?;
    let g = db.lookup(args.ip);
    println!("{}", serde_json::to_string_pretty(&g)?);
    Ok(())
}
