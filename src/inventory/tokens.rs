//! Issued API tokens (Backplane's `GenToken`): random secrets handed out
//! once, stored only as their SHA-256, so a copy of the database lets no
//! one in. Each is bound to the admin `api_token` that issued it (by
//! [`admin_fingerprint`]), so rotating the admin token revokes them all.
//!
//! Also the admin token itself when the configuration sets none: generated
//! at first start into `data_dir/api_token` ([`admin_token_file`]).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Prefix of every issued secret, so a leaked one is recognisable in logs
/// and secret scanners.
pub const SECRET_PREFIX: &str = "sy_";

/// Hex of `n` bytes from the kernel's random source.
fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

/// The shortest admin `api_token` accepted on an admin listener that is not
/// loopback: 16 characters. The example's old `change-me` and other words
/// a person picks are shorter; a generated token is 64 hex digits.
pub const MIN_EXPOSED_TOKEN_LEN: usize = 16;

/// The file in the data directory that holds the generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "api_token";

/// What identifies an admin token's generation among issued tokens: the
/// first 16 hex digits (64 bits) of a domain-separated SHA-256 of it.
/// Stored with every issued token; it tells a rotated admin token apart
/// and, being short and salted, says little about the token itself.
pub fn admin_fingerprint(admin_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"switchyard admin api_token\n");
    h.update(admin_token.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Why a secret file (the generated admin token, the cookie secret)
/// cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The kernel's random source cannot be read.
    #[error("cannot read random bytes: {0}")]
    Random(std::io::Error),
    /// The new file cannot be made.
    #[error("{}: cannot create: {error}", path.display())]
    Create {
        /// The secret file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The new secret cannot be written.
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        /// The secret file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The existing file cannot be read.
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        /// The secret file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The existing file does not hold a valid secret.
    #[error("{}: {why}; delete it to have a new one generated", path.display())]
    Invalid {
        /// The secret file.
        path: PathBuf,
        /// What is wrong with its content.
        why: String,
    },
}

/// The content of the admin token file is not a token.
#[derive(Debug, thiserror::Error)]
#[error("not a token (one line of at least {MIN_EXPOSED_TOKEN_LEN} characters)")]
pub struct NotAToken;

/// The admin token kept in `data_dir/api_token`: read when the file is
/// there, else 32 random bytes in hex written to a new file of mode 0600.
/// Returns the token, the file's path and whether it was created now.
pub fn admin_token_file(data_dir: &Path) -> Result<(String, PathBuf, bool), SecretFileError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let (token, created) = secret_file(&path, 32, |t| {
        (t.len() >= MIN_EXPOSED_TOKEN_LEN && !t.chars().any(char::is_whitespace))
            .then_some(())
            .ok_or(NotAToken)
    })?;
    Ok((token, path, created))
}

/// A secret kept in a file: read (and checked by `valid`) when the file is
/// there, else `bytes` random bytes in hex written to a new file of mode
/// 0600. Returns the secret and whether the file was created now. A file
/// other users can read is used, with a warning.
pub fn secret_file<E: std::fmt::Display>(
    path: &Path,
    bytes: usize,
    valid: impl Fn(&str) -> Result<(), E>,
) -> Result<(String, bool), SecretFileError> {
    let open = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match open {
        Ok(mut f) => {
            let secret = random_hex(bytes).map_err(SecretFileError::Random)?;
            f.write_all(format!("{secret}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|error| SecretFileError::Write {
                    path: path.to_path_buf(),
                    error,
                })?;
            Ok((secret, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|error| SecretFileError::Read {
                path: path.to_path_buf(),
                error,
            })?;
            let secret = text.trim().to_string();
            valid(&secret).map_err(|why| SecretFileError::Invalid {
                path: path.to_path_buf(),
                why: why.to_string(),
            })?;
            let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "a secret file can be read by other users; chmod 600 it");
            }
            Ok((secret, false))
        }
        Err(error) => Err(SecretFileError::Create {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// A new token: (public id, secret).
pub fn generate() -> std::io::Result<(String, String)> {
    Ok((
        format!("tok_{}", random_hex(6)?),
        format!("{SECRET_PREFIX}{}", random_hex(32)?),
    ))
}

/// The stored form of a secret: lower-case hex SHA-256.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A token name that is empty, longer than 64 characters or not printable.
#[derive(Debug, thiserror::Error)]
#[error("name must be 1-64 printable characters")]
pub struct TokenNameError;

/// Checks a token name: 1–64 printable characters.
pub fn check_name(name: &str) -> Result<(), TokenNameError> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(TokenNameError);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashed() {
        let (id, secret) = generate().unwrap();
        let (id2, secret2) = generate().unwrap();
        assert_ne!(secret, secret2);
        assert_ne!(id, id2);
        assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == 3 + 64);
        assert_eq!(hash(&secret).len(), 64);
        assert_ne!(hash(&secret), hash(&secret2));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(check_name("agent on node 2").is_ok());
        assert!(check_name("").is_err() && check_name("a\nb").is_err());
    }

    #[test]
    fn admin_fingerprints_tell_tokens_apart() {
        let a = admin_fingerprint("first admin token");
        assert_eq!(a.len(), 16);
        assert_eq!(a, admin_fingerprint("first admin token"));
        assert_ne!(a, admin_fingerprint("second admin token"));
        assert_ne!(&a[..], &hash("first admin token")[..16]);
    }

    #[test]
    fn the_admin_token_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, path, created) = admin_token_file(dir.path()).unwrap();
        assert!(created && t1.len() == 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (t2, _, created) = admin_token_file(dir.path()).unwrap();
        assert!(!created && t1 == t2);
        std::fs::write(&path, "short\n").unwrap();
        assert_eq!(
            admin_token_file(dir.path()).unwrap_err().to_string(),
            format!(
                "{}: not a token (one line of at least 16 characters); delete it to have a new one generated",
                path.display()
            )
        );
    }
}
