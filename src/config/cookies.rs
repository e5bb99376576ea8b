//! `[cookies]`: DNS Cookies and their secrets.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookies {
    enabled: Option<bool>,
    secret: Option<String>,
    previous_secret: Option<String>,
    require_cookies: Option<bool>,
}

/// `[cookies]`: DNS Cookies (RFC 7873) with RFC 9018 server cookies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cookies {
    /// Off: COOKIE options are ignored, as by a server that never heard of them.
    pub enabled: bool,
    /// The server secret (128 bits). `None` until `serve` resolves it
    /// (generated into `data_dir/cookie_secret` when the file sets none).
    pub secret: Option<[u8; 16]>,
    /// The previous secret, still accepted during a rollover.
    pub previous_secret: Option<[u8; 16]>,
    /// UDP queries over their rate that carry a client cookie but no valid
    /// server cookie get BADCOOKIE (and a fresh cookie) instead of being
    /// limited.
    pub require_cookies: bool,
}

/// A secret that is not 128 bits of hex, naming where it was read.
#[derive(Debug, thiserror::Error)]
#[error("{key}: not 32 hex digits (128 bits)")]
pub struct SecretError {
    /// The key or file the secret came from.
    pub key: String,
}

/// A 128-bit secret written as 32 hex digits.
pub fn parse_secret(key: &str, s: &str) -> Result<[u8; 16], SecretError> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s.trim(), &mut out).map_err(|_| SecretError {
        key: key.to_string(),
    })?;
    Ok(out)
}

pub(super) fn check(raw: RawCookies) -> Result<Cookies, String> {
    let secret = |key: &str, v: Option<String>| {
        v.filter(|s| !s.trim().is_empty())
            .map(|s| parse_secret(key, &s).map_err(|e| e.to_string()))
            .transpose()
    };
    Ok(Cookies {
        enabled: raw.enabled.unwrap_or(true),
        secret: secret("cookies.secret", raw.secret)?,
        previous_secret: secret("cookies.previous_secret", raw.previous_secret)?,
        require_cookies: raw.require_cookies.unwrap_or(false),
    })
}
