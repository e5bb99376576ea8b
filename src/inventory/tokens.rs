//! Issued API tokens (Backplane's `GenToken`): random secrets handed out
//! once, stored only as their SHA-256, so a copy of the database lets no
//! one in.

use std::io::Read;

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

/// Checks a token name: 1–64 printable characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("name must be 1-64 printable characters".into());
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
}
