//! A signed zone's key directory: which directory (the zone's
//! `dnssec.keys`, else `data_dir/keys/<zone>/`), loading the key files
//! of the zone found there into a [`KeySet`], the combined signing key
//! made at first start, and the [`Signers`] of a whole configuration.
//!
//! Roles come from the DNSKEY flags: 256 is a ZSK; 257 is a KSK when the
//! directory also holds a 256 key of the zone, else a CSK (the zone's
//! only kind of key signs everything). Every key of the zone in the
//! directory must load: a bad file, a key of another algorithm than 13
//! or 15, or a `.private` without its `.key` is an error naming the file,
//! never a key quietly left out of the DNSKEY RRset.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::rr::Name;

use super::files::{self, KeyFile, KeyFileError};
use super::keys::{KeySet, Role, Timing, UnixTime, ZoneKey};
use super::sign::{Signers, ZoneSigner};
use crate::config::{Config, DnssecAlgorithm, Zone};

/// The seconds since the epoch now.
pub fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The key directory of a signed zone: its `dnssec.keys`, else
/// `data_dir/keys/<zone without the trailing dot>/` (`root` for `.`).
pub fn key_dir(config: &Config, zone: &Zone) -> PathBuf {
    match zone.dnssec.as_ref().and_then(|d| d.keys.clone()) {
        Some(dir) => dir,
        None => default_key_dir(&config.data_dir, &zone.name),
    }
}

/// `data_dir/keys/<zone without the trailing dot>/` (`root` for `.`).
pub fn default_key_dir(data_dir: &Path, zone: &str) -> PathBuf {
    let name = zone.trim_end_matches('.').to_ascii_lowercase();
    data_dir
        .join("keys")
        .join(if name.is_empty() { "root" } else { &name })
}

/// The zone's name as DNS carries it.
pub fn zone_name(zone: &str) -> Result<Name, KeyFileError> {
    let mut name = Name::from_ascii(zone).map_err(|e| KeyFileError::new(zone, e))?;
    name.set_fqdn(true);
    Ok(name)
}

/// One key loaded from its files.
#[derive(Debug)]
pub struct LoadedKey {
    /// The files' path without `.key` / `.private`.
    pub base: PathBuf,
    /// What the files hold.
    pub file: KeyFile,
    /// The key, ready to sign.
    pub key: Arc<ZoneKey>,
}

/// The base paths of the zone's keys in `dir` (one per `.private`
/// file), sorted; none when `dir` does not exist.
pub fn key_bases(dir: &Path, zone: &Name) -> Result<Vec<PathBuf>, KeyFileError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(KeyFileError::new(dir, e)),
    };
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| KeyFileError::new(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = name.strip_suffix(".private")
            && files::parse_base_name(name, zone).is_some()
        {
            bases.push(dir.join(base));
        }
    }
    bases.sort();
    Ok(bases)
}

/// Loads every key of `zone` in `dir`, roles decided as the module says.
pub fn load_keys(dir: &Path, zone: &Name) -> Result<Vec<LoadedKey>, KeyFileError> {
    let mut read = Vec::new();
    for base in key_bases(dir, zone)? {
        let file = files::read_key(&base)?;
        let key_path = || {
            let mut p = base.clone().into_os_string();
            p.push(".key");
            PathBuf::from(p)
        };
        if files::zone_text(&file.zone) != files::zone_text(zone) {
            return Err(KeyFileError::new(
                key_path(),
                format!("the key is for {}, not {}", file.zone, zone),
            ));
        }
        if files::algorithm(file.algorithm).is_none() {
            return Err(KeyFileError::new(
                key_path(),
                format!(
                    "algorithm {} is not supported (only 13, ECDSAP256SHA256, and 15, ED25519)",
                    file.algorithm
                ),
            ));
        }
        read.push((base, file));
    }
    let has_zsk = read.iter().any(|(_, f)| f.flags == 256);
    let mut keys = Vec::new();
    for (base, file) in read {
        let role = match (file.flags, has_zsk) {
            (256, _) => Role::Zsk,
            (_, true) => Role::Ksk,
            (_, false) => Role::Csk,
        };
        let key = key_from_file(&file, role).map_err(|e| {
            let mut p = base.clone().into_os_string();
            p.push(".private");
            KeyFileError::new(PathBuf::from(p), e)
        })?;
        let name_tag = base
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| files::parse_base_name(&format!("{n}.key"), zone))
            .map(|(_, tag)| tag);
        if name_tag != Some(key.tag) {
            return Err(KeyFileError::new(
                &base,
                format!("the key's tag is {}, not the file name's", key.tag),
            ));
        }
        keys.push(LoadedKey {
            base,
            file,
            key: Arc::new(key),
        });
    }
    Ok(keys)
}

/// The key the files describe, in `role`.
fn key_from_file(file: &KeyFile, role: Role) -> Result<ZoneKey, String> {
    let algorithm = files::algorithm(file.algorithm)
        .ok_or_else(|| format!("algorithm {} is not supported", file.algorithm))?;
    ZoneKey::from_private(algorithm, &file.private, &file.public, role, file.timing)
        .map_err(|e| e.to_string())
}

impl KeySet {
    /// The keys of `zone` in `dir`; an error when there is none (a signed
    /// zone without keys would answer unsigned).
    pub fn load(dir: &Path, zone: &Name) -> Result<KeySet, KeyFileError> {
        let keys = load_keys(dir, zone)?;
        if keys.is_empty() {
            return Err(KeyFileError::new(
                dir,
                format!(
                    "no key for {} (no K{}+*.private)",
                    zone,
                    files::zone_text(zone)
                ),
            ));
        }
        Ok(KeySet {
            zone: zone.clone(),
            keys: keys.into_iter().map(|k| k.key).collect(),
        })
    }
}

/// Creates `dir` (and its parents) mode 0700 when missing.
pub fn create_key_dir(dir: &Path) -> Result<(), KeyFileError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| KeyFileError::new(dir, format!("cannot create the key directory: {e}")))
}

/// Makes a new key of `zone` in `dir` (created mode 0700 when missing):
/// flags 257 for `sep`, else 256. Returns the files' base path and the
/// key tag; a tag already used in `dir` is drawn again.
pub fn generate_key(
    dir: &Path,
    zone: &Name,
    algorithm: DnssecAlgorithm,
    sep: bool,
    timing: Timing,
) -> Result<(PathBuf, u16), KeyFileError> {
    create_key_dir(dir)?;
    let number = u8::from(super::keys::algorithm_of(algorithm));
    let (role, flags) = if sep {
        (Role::Csk, 257)
    } else {
        (Role::Zsk, 256)
    };
    loop {
        let pair = ZoneKey::generate_private(algorithm).map_err(|e| KeyFileError::new(dir, e))?;
        let key = ZoneKey::from_private(
            super::keys::algorithm_of(algorithm),
            &pair.private,
            &pair.public,
            role,
            timing,
        )
        .map_err(|e| KeyFileError::new(dir, e))?;
        let base = dir.join(files::base_name(zone, number, key.tag));
        let taken = ["key", "private"].iter().any(|ext| {
            let mut p = base.clone().into_os_string();
            p.push(".");
            p.push(ext);
            Path::new(&p).exists()
        });
        if taken {
            continue;
        }
        let file = KeyFile {
            zone: zone.clone(),
            flags,
            algorithm: number,
            public: pair.public,
            private: pair.private,
            timing,
            ttl: None,
        };
        return Ok((files::write_key(dir, &file, key.tag)?, key.tag));
    }
}

/// At first start: when `dir` holds no key of `zone`, makes a CSK of
/// `algorithm` there, published and active now, and logs it. Returns its
/// base path when one was made.
pub fn ensure_key(
    dir: &Path,
    zone: &Name,
    algorithm: DnssecAlgorithm,
) -> Result<Option<PathBuf>, KeyFileError> {
    if !key_bases(dir, zone)?.is_empty() {
        return Ok(None);
    }
    let now = unix_now();
    let timing = Timing {
        created: Some(now),
        publish: Some(now),
        activate: Some(now),
        ..Timing::default()
    };
    let (base, tag) = generate_key(dir, zone, algorithm, true, timing)?;
    tracing::info!(
        zone = %files::zone_text(zone),
        tag,
        algorithm = algorithm.name(),
        path = %base.display(),
        "generated a combined signing key (CSK) for the signed zone, which had none; its .private file is mode 0600"
    );
    Ok(Some(base))
}

/// A signed zone whose keys cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("zone {zone}: DNSSEC keys: {error}")]
pub struct ZoneKeysError {
    /// The zone.
    pub zone: String,
    /// The file and what is wrong.
    pub error: KeyFileError,
}

/// The keys of every signed zone of `config`, each made at first start
/// when its directory holds none.
fn load_all(config: &Config) -> Result<Vec<(&Zone, KeySet)>, ZoneKeysError> {
    let mut out = Vec::new();
    for zone in &config.zones {
        let Some(settings) = &zone.dnssec else {
            continue;
        };
        let err = |error| ZoneKeysError {
            zone: zone.name.clone(),
            error,
        };
        let name = zone_name(&zone.name).map_err(err)?;
        let dir = key_dir(config, zone);
        ensure_key(&dir, &name, settings.algorithm).map_err(err)?;
        out.push((zone, KeySet::load(&dir, &name).map_err(err)?));
    }
    Ok(out)
}

impl Signers {
    /// The signer of every signed zone of `config`, with its keys loaded
    /// (made at first start when the zone has none).
    pub fn load(config: &Config) -> Result<Signers, ZoneKeysError> {
        let zones = load_all(config)?
            .into_iter()
            .map(|(zone, keys)| {
                let settings = zone.dnssec.clone().unwrap_or_default();
                (zone.name.clone(), Arc::new(ZoneSigner::new(settings, keys)))
            })
            .collect();
        Ok(Signers { zones })
    }

    /// The signers of `config` on a reload: a zone whose settings did not
    /// change keeps its signer (and its signature cache), given the keys
    /// loaded now; the others get new signers. Nothing changes unless
    /// every zone's keys load.
    pub fn reload(config: &Config, current: &Signers) -> Result<Signers, ZoneKeysError> {
        let loaded = load_all(config)?;
        let mut zones = HashMap::new();
        for (zone, keys) in loaded {
            let settings = zone.dnssec.clone().unwrap_or_default();
            let signer = match current.zones.get(&zone.name) {
                Some(s) if s.settings == settings => {
                    s.set_keys(keys);
                    s.clone()
                }
                _ => Arc::new(ZoneSigner::new(settings, keys)),
            };
            zones.insert(zone.name.clone(), signer);
        }
        Ok(Signers { zones })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Name {
        Name::from_ascii("example.test.").unwrap()
    }

    #[test]
    fn first_start_makes_one_csk_then_loads_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys/example.test");
        for alg in [DnssecAlgorithm::EcdsaP256Sha256, DnssecAlgorithm::Ed25519] {
            let _ = std::fs::remove_dir_all(&dir);
            let base = ensure_key(&dir, &zone(), alg).unwrap().unwrap();
            assert_eq!(ensure_key(&dir, &zone(), alg).unwrap(), None);
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            let mut private = base.clone().into_os_string();
            private.push(".private");
            assert_eq!(mode(Path::new(&private)), 0o600);
            let set = KeySet::load(&dir, &zone()).unwrap();
            assert_eq!(set.keys.len(), 1);
            assert_eq!(set.keys[0].role, Role::Csk);
            assert_eq!(set.zone_signers(unix_now()).len(), 1);
            assert_eq!(set.key_signers(unix_now()).len(), 1);
        }
    }

    #[test]
    fn a_zsk_beside_makes_the_sep_key_a_ksk() {
        let tmp = tempfile::tempdir().unwrap();
        let alg = DnssecAlgorithm::EcdsaP256Sha256;
        generate_key(tmp.path(), &zone(), alg, true, Timing::default()).unwrap();
        let (_, zsk) = generate_key(tmp.path(), &zone(), alg, false, Timing::default()).unwrap();
        let keys = load_keys(tmp.path(), &zone()).unwrap();
        let mut roles: Vec<Role> = keys.iter().map(|k| k.key.role).collect();
        roles.sort_by_key(|r| r.flags());
        assert_eq!(roles, [Role::Zsk, Role::Ksk]);
        let set = KeySet::load(tmp.path(), &zone()).unwrap();
        let signers: Vec<u16> = set.zone_signers(0).iter().map(|k| k.tag).collect();
        assert_eq!(signers, [zsk]);
    }

    #[test]
    fn a_reload_keeps_the_signer_of_unchanged_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let config = |validity: u32| {
            let text = format!(
                "[[zone]]\nname = 'example.test'\n[zone.dnssec]\nkeys = '{}'\nsignature_validity_days = {validity}\n",
                tmp.path().display()
            );
            Config::parse(&text, "test.toml", &crate::config::Overrides::default()).unwrap()
        };
        let first = Signers::load(&config(14)).unwrap();
        let signer = first.zones["example.test."].clone();
        assert_eq!(signer.keys().keys.len(), 1);
        generate_key(
            tmp.path(),
            &zone(),
            DnssecAlgorithm::EcdsaP256Sha256,
            false,
            Timing::default(),
        )
        .unwrap();
        let same = Signers::reload(&config(14), &first).unwrap();
        assert!(Arc::ptr_eq(&same.zones["example.test."], &signer));
        assert_eq!(signer.keys().keys.len(), 2);
        let changed = Signers::reload(&config(21), &same).unwrap();
        assert!(!Arc::ptr_eq(&changed.zones["example.test."], &signer));
    }

    #[test]
    fn bad_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, _) = generate_key(
            tmp.path(),
            &zone(),
            DnssecAlgorithm::Ed25519,
            true,
            Timing::default(),
        )
        .unwrap();
        let mut private = base.into_os_string();
        private.push(".private");
        std::fs::write(
            &private,
            "Private-key-format: v1.3\nAlgorithm: 15 (ED25519)\nPrivateKey: !!\n",
        )
        .unwrap();
        let e = KeySet::load(tmp.path(), &zone()).unwrap_err();
        assert_eq!(e.path, PathBuf::from(&private));
        assert!(e.to_string().contains("PrivateKey"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(KeySet::load(empty.path(), &zone()).is_err());
    }
}
