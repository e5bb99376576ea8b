//! Where the configuration comes from: the file and the command-line
//! overrides, kept together so that a reload reads the same again.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Partial};

/// Command-line overrides shared by `serve`, `decide` and `geo`.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--dns` (repeatable).
    pub dns: Vec<String>,
    /// `--http`.
    pub http: Option<String>,
    /// `--admin`.
    pub admin: Option<String>,
    /// `--apps`.
    pub apps: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--geo-city`.
    pub geo_city: Option<PathBuf>,
    /// `--geo-asn`.
    pub geo_asn: Option<PathBuf>,
    /// `--zone`.
    pub zone: Option<String>,
}

/// The file a configuration is read from (or none) and the overrides
/// applied to it: `serve` loads it at start and again on every SIGHUP.
#[derive(Debug, Default, Clone)]
pub struct ConfigSource {
    /// The file given (`--config`); without one, `switchyard.toml` when it
    /// exists at load time, else the built-in defaults.
    pub file: Option<PathBuf>,
    /// The command-line overrides.
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Reads and checks the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_partial().into_result()
    }

    /// Reads and checks the configuration as far as it goes ([`Partial`]).
    pub fn load_partial(&self) -> Partial {
        let default = Path::new("switchyard.toml");
        let path = match &self.file {
            Some(p) => Some(p.as_path()),
            None if default.is_file() => Some(default),
            None => None,
        };
        Config::load_partial(path, &self.overrides)
    }
}
