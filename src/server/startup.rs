//! What `serve` resolves before serving: the data directory, the admin
//! token and the DNS cookie secret (generated into the data directory when
//! the configuration sets none), and the errors of the files the serving
//! process opens. The supervisor resolves them once before starting the
//! serving process, the serving process and every reload again; what is
//! checked first, the whole configuration and its files, is
//! [`super::preflight`].

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{Config, SecretError, TokenSetting};
use crate::data::probes::ProbeFileError;
use crate::dns::ZoneError;
use crate::inventory::tokens::{self, SecretFileError};

/// Why `serve` cannot start (or a reload is refused).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The static probe table (`[data] probes`).
    #[error("data.probes: {0}")]
    Probes(ProbeFileError),
    /// The zones do not make a zone set.
    #[error("{file}: {error}")]
    Zones {
        /// The configuration file.
        file: String,
        /// What is wrong.
        error: ZoneError,
    },
    /// A signed zone's keys cannot be loaded or made: serving it unsigned
    /// is not an option.
    #[error("{0}; a signed zone is not served without its keys")]
    DnssecKeys(#[from] crate::dnssec::keydir::ZoneKeysError),
    /// The data directory cannot be made.
    #[error("cannot create data directory {}", path.display())]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The generated admin token's file cannot be made or read.
    #[error("{0}")]
    TokenFile(SecretFileError),
    /// A short token on an admin listener other hosts reach.
    #[error(
        "server.api_token: a token shorter than {} characters (such as \"change-me\") is refused on the admin listener {admin}, which is not loopback; remove api_token to have a random one generated in {}, or set a long random one",
        tokens::MIN_EXPOSED_TOKEN_LEN,
        token_file.display()
    )]
    ShortToken {
        /// The admin listener.
        admin: SocketAddr,
        /// Where a generated token would be.
        token_file: PathBuf,
    },
    /// The generated cookie secret's file cannot be made or read.
    #[error("{0}")]
    CookieSecretFile(SecretFileError),
    /// The cookie secret file holds no 128-bit secret.
    #[error(transparent)]
    CookieSecret(#[from] SecretError),
}

/// Creates the data directory (and its parents) when missing.
pub fn create_data_dir(config: &Config) -> Result<(), StartupError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartupError::DataDir {
        path: config.data_dir.clone(),
        source,
    })
}

/// Resolves the admin `api_token` for serving: an unset one becomes the
/// generated token in `data_dir/api_token` (made at first start, mode
/// 0600), and a token shorter than [`tokens::MIN_EXPOSED_TOKEN_LEN`] (the
/// old example's `change-me`, a word) is refused when the admin listener
/// is not loopback. Returns the token file and whether it was made now,
/// when the token comes from one.
pub fn resolve_api_token(config: &mut Config) -> Result<Option<(PathBuf, bool)>, StartupError> {
    let file = if config.api_token_setting == TokenSetting::Unset {
        create_data_dir(config)?;
        let (token, path, created) =
            tokens::admin_token_file(&config.data_dir).map_err(StartupError::TokenFile)?;
        config.api_token = Some(token);
        Some((path, created))
    } else {
        None
    };
    check_api_token(config)?;
    Ok(file)
}

/// Refuses an admin token shorter than [`tokens::MIN_EXPOSED_TOKEN_LEN`]
/// when the admin listener is not loopback: what [`resolve_api_token`]
/// checks, and the start-up checks ([`super::preflight`]) check of a token
/// the file sets.
pub fn check_api_token(config: &Config) -> Result<(), StartupError> {
    if let Some(token) = &config.api_token
        && !config.admin.ip().is_loopback()
        && token.chars().count() < tokens::MIN_EXPOSED_TOKEN_LEN
    {
        return Err(StartupError::ShortToken {
            admin: config.admin,
            token_file: config.data_dir.join(tokens::ADMIN_TOKEN_FILE),
        });
    }
    Ok(())
}

/// The file in the data directory that holds the generated DNS cookie
/// secret.
pub const COOKIE_SECRET_FILE: &str = "cookie_secret";

/// Resolves the DNS cookie secret for serving: when cookies are on and
/// `[cookies] secret` is not set, the one in `data_dir/cookie_secret`
/// (128 random bits made at first start, mode 0600). Every node of a fleet
/// must share it for each to accept the others' cookies: set it in the file
/// or copy this one. Returns the file when it was created now.
pub fn resolve_cookie_secret(config: &mut Config) -> Result<Option<PathBuf>, StartupError> {
    if !config.cookies.enabled || config.cookies.secret.is_some() {
        return Ok(None);
    }
    create_data_dir(config)?;
    let path = config.data_dir.join(COOKIE_SECRET_FILE);
    let (hex, created) = tokens::secret_file(&path, 16, |s| {
        crate::config::parse_secret("cookie secret", s).map(|_| ())
    })
    .map_err(StartupError::CookieSecretFile)?;
    config.cookies.secret = Some(crate::config::parse_secret("cookie secret", &hex)?);
    Ok(created.then_some(path))
}

/// Logs, once per `serve`, where the admin token comes from (never the
/// token), and warns when the admin listener is reachable from other hosts
/// while its reads need no token.
pub fn log_api_access(config: &Config, file: Option<(PathBuf, bool)>) {
    match (file, config.api_token_setting) {
        (Some((path, true)), _) => tracing::info!(
            path = %path.display(),
            "generated the admin API token (server.api_token is not set); it is in this file, mode 0600; the CLI reads it with --data-dir"
        ),
        (Some((path, false)), _) => tracing::info!(
            path = %path.display(),
            "admin API token read from this file (server.api_token is not set)"
        ),
        (None, TokenSetting::Off) => {
            tracing::info!(
                "the token API is off (server.api_token = \"\"): every /api/* write is refused"
            )
        }
        (None, _) => {}
    }
    if !config.admin.ip().is_loopback() && !config.admin_reads_need_token {
        tracing::warn!(
            addr = %config.admin,
            "the operations listener is not on a loopback address and GET /api/* needs no token there; set [server] admin_reads_need_token = true to require one"
        );
    }
}
