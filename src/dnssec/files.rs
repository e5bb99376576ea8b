//! BIND 9's key files: `K<zone>.+<alg>+<tag>.key` (the DNSKEY record,
//! with comments) and `.private` (`Private-key-format: v1.3`, the private
//! key, and the timing metadata BIND keeps there), read and written in
//! BIND's own format so keys made by `dnssec-keygen` load here and ours
//! work with `dnssec-dsfromkey`, `dnssec-settime` and `dnssec-signzone`.
//!
//! The `.private` file is the source of truth for timing (as in BIND);
//! the `.key` comments repeat it for people.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hickory_proto::dnssec::Algorithm;
use hickory_proto::rr::Name;

use super::keys::{Timing, UnixTime};

/// A key file that cannot be read, parsed or written: the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct KeyFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl KeyFileError {
    /// An error about `path`.
    pub fn new(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> KeyFileError {
        KeyFileError {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// One key as its pair of files holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The zone (owner of the DNSKEY record).
    pub zone: Name,
    /// DNSKEY flags: 256 (zone key) or 257 (zone key, SEP).
    pub flags: u16,
    /// The DNSSEC algorithm number (13 or 15 here).
    pub algorithm: u8,
    /// The public key as in the DNSKEY RDATA.
    pub public: Vec<u8>,
    /// The private key: the ECDSA scalar or the Ed25519 seed.
    pub private: Vec<u8>,
    /// The timing metadata of the `.private` file.
    pub timing: Timing,
    /// The TTL written on the DNSKEY line, when there is one.
    pub ttl: Option<u32>,
}

/// The algorithms key files may hold here, by number, with BIND's name.
pub fn algorithm_name(number: u8) -> Option<&'static str> {
    match number {
        13 => Some("ECDSAP256SHA256"),
        15 => Some("ED25519"),
        _ => None,
    }
}

/// hickory's algorithm of a supported number.
pub fn algorithm(number: u8) -> Option<Algorithm> {
    match number {
        13 => Some(Algorithm::ECDSAP256SHA256),
        15 => Some(Algorithm::ED25519),
        _ => None,
    }
}

/// The file base name BIND gives a key: `K<zone>+<alg:03>+<tag:05>`
/// (the zone with its trailing dot, lower case).
pub fn base_name(zone: &Name, algorithm: u8, tag: u16) -> String {
    format!("K{}+{algorithm:03}+{tag:05}", zone_text(zone))
}

/// The zone as file names and records write it: lower case, trailing dot.
pub fn zone_text(zone: &Name) -> String {
    let mut z = zone.to_lowercase().to_ascii();
    if !z.ends_with('.') {
        z.push('.');
    }
    z
}

/// The key tag in a file name of `zone`'s (`K<zone>+013+12345.private`):
/// `(algorithm, tag)`, or `None` for any other file.
pub fn parse_base_name(file_name: &str, zone: &Name) -> Option<(u8, u16)> {
    let prefix = format!("K{}+", zone_text(zone));
    let base = file_name
        .strip_suffix(".private")
        .or_else(|| file_name.strip_suffix(".key"))?;
    if base.len() < prefix.len() || !base[..prefix.len()].eq_ignore_ascii_case(&prefix) {
        return None;
    }
    let (alg, tag) = base[prefix.len()..].split_once('+')?;
    if alg.len() != 3 || tag.len() != 5 {
        return None;
    }
    Some((alg.parse().ok()?, tag.parse().ok()?))
}

/// A time as BIND's metadata writes it: `YYYYMMDDHHMMSS`, UTC.
pub fn format_time(t: UnixTime) -> String {
    let c = Civil::of(t);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Reads `YYYYMMDDHHMMSS` (UTC).
pub fn parse_time(s: &str) -> Option<UnixTime> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let (year, month, day) = (n(0..4)? as i64, n(4..6)?, n(6..8)?);
    let (hour, minute, second) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    u64::try_from(secs).ok()
}

/// A time as the `.key` comments show it, like C's `ctime`:
/// `Mon Dec  7 18:41:24 2026`.
pub fn ctime(t: UnixTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = Civil::of(t);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[((t / 86_400) % 7) as usize],
        MONTHS[c.month as usize - 1],
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.year
    )
}

/// A UTC calendar time.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    /// Howard Hinnant's `civil_from_days`.
    fn of(t: UnixTime) -> Civil {
        let days = (t / 86_400) as i64;
        let secs = (t % 86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// What a `.private` file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateFile {
    /// The algorithm number.
    pub algorithm: u8,
    /// The private key bytes.
    pub private: Vec<u8>,
    /// The timing metadata.
    pub timing: Timing,
}

/// Parses a `.private` file: `Key: value` lines; unknown keys (BIND's
/// other metadata) are ignored.
pub fn parse_private(text: &str) -> Result<PrivateFile, String> {
    let mut algorithm = None;
    let mut private = None;
    let mut format = None;
    let mut timing = Timing::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {}: not a 'Key: value' line", n + 1));
        };
        let value = value.trim();
        let time = |v: &str| {
            parse_time(v)
                .map(Some)
                .ok_or_else(|| format!("line {}: {key}: '{v}' is not YYYYMMDDHHMMSS", n + 1))
        };
        match key.trim() {
            "Private-key-format" => format = Some(value.to_string()),
            "Algorithm" => {
                let number = value.split_whitespace().next().unwrap_or("");
                algorithm = Some(number.parse::<u8>().map_err(|_| {
                    format!("line {}: Algorithm: '{value}' is not a number", n + 1)
                })?);
            }
            "PrivateKey" => {
                private = Some(
                    BASE64
                        .decode(value.replace(' ', "").as_bytes())
                        .map_err(|e| format!("line {}: PrivateKey: {e}", n + 1))?,
                )
            }
            "Created" => timing.created = time(value)?,
            "Publish" => timing.publish = time(value)?,
            "Activate" => timing.activate = time(value)?,
            "Inactive" => timing.inactive = time(value)?,
            "Delete" => timing.delete = time(value)?,
            _ => {}
        }
    }
    match format.as_deref() {
        Some(f) if f.starts_with("v1.") => {}
        Some(f) => return Err(format!("Private-key-format {f} is not v1.x")),
        None => return Err("no Private-key-format line: not a BIND private key file".into()),
    }
    Ok(PrivateFile {
        algorithm: algorithm.ok_or("no Algorithm line")?,
        private: private.ok_or("no PrivateKey line")?,
        timing,
    })
}

/// Writes a `.private` file's text as BIND 9 does.
pub fn format_private(key: &KeyFile) -> String {
    let mut out = format!(
        "Private-key-format: v1.3\nAlgorithm: {} ({})\nPrivateKey: {}\n",
        key.algorithm,
        algorithm_name(key.algorithm).unwrap_or("UNKNOWN"),
        BASE64.encode(&key.private)
    );
    for (label, t) in timing_lines(&key.timing) {
        out.push_str(&format!("{label}: {}\n", format_time(t)));
    }
    out
}

fn timing_lines(t: &Timing) -> impl Iterator<Item = (&'static str, UnixTime)> {
    [
        ("Created", t.created),
        ("Publish", t.publish),
        ("Activate", t.activate),
        ("Inactive", t.inactive),
        ("Delete", t.delete),
    ]
    .into_iter()
    .filter_map(|(l, t)| Some((l, t?)))
}

/// What a `.key` file holds: its DNSKEY record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicFile {
    /// The owner name.
    pub zone: Name,
    /// The TTL, when written.
    pub ttl: Option<u32>,
    /// DNSKEY flags.
    pub flags: u16,
    /// DNSKEY algorithm.
    pub algorithm: u8,
    /// The public key.
    pub public: Vec<u8>,
}

/// Parses a `.key` file: `;` comments, then `zone. [TTL] [IN] DNSKEY
/// flags 3 alg base64…`.
pub fn parse_public(text: &str) -> Result<PublicFile, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with(';'))
        .ok_or("no DNSKEY record")?;
    let mut tokens = line.split_whitespace();
    let owner = tokens.next().ok_or("no owner name")?;
    let zone = Name::from_ascii(owner).map_err(|e| format!("owner '{owner}': {e}"))?;
    let mut ttl = None;
    loop {
        match tokens.next() {
            Some(t) if t.eq_ignore_ascii_case("DNSKEY") => break,
            Some(t) if t.eq_ignore_ascii_case("IN") => {}
            Some(t) if ttl.is_none() && t.parse::<u32>().is_ok() => ttl = t.parse().ok(),
            Some(t) => return Err(format!("'{t}' where DNSKEY was expected")),
            None => return Err("no DNSKEY record".into()),
        }
    }
    let mut field = |what: &str| tokens.next().ok_or(format!("no {what} field"));
    let flags = field("flags")?;
    let flags: u16 = flags
        .parse()
        .map_err(|_| format!("flags '{flags}' is not a number"))?;
    if field("protocol")? != "3" {
        return Err("protocol is not 3".into());
    }
    let alg = field("algorithm")?;
    let algorithm: u8 = alg
        .parse()
        .map_err(|_| format!("algorithm '{alg}' is not a number"))?;
    let b64: String = tokens.collect();
    let public = BASE64
        .decode(b64.as_bytes())
        .map_err(|e| format!("public key: {e}"))?;
    Ok(PublicFile {
        zone,
        ttl,
        flags,
        algorithm,
        public,
    })
}

/// Writes a `.key` file's text as BIND 9 does: the role and timing as
/// comments, then the DNSKEY record.
pub fn format_public(key: &KeyFile, tag: u16) -> String {
    let zone = zone_text(&key.zone);
    let kind = if key.flags & 1 == 1 {
        "key-signing"
    } else {
        "zone-signing"
    };
    let mut out = format!("; This is a {kind} key, keyid {tag}, for {zone}\n");
    for (label, t) in timing_lines(&key.timing) {
        out.push_str(&format!("; {label}: {} ({})\n", format_time(t), ctime(t)));
    }
    let ttl = key.ttl.map(|t| format!("{t} ")).unwrap_or_default();
    out.push_str(&format!(
        "{zone} {ttl}IN DNSKEY {} 3 {} {}\n",
        key.flags,
        key.algorithm,
        BASE64.encode(&key.public)
    ));
    out
}

/// Reads the pair of files at `base` (a path without `.key`/`.private`).
pub fn read_key(base: &Path) -> Result<KeyFile, KeyFileError> {
    let private_path = base.with_extension_added("private");
    let public_path = base.with_extension_added("key");
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| KeyFileError::new(p, e));
    let private =
        parse_private(&read(&private_path)?).map_err(|e| KeyFileError::new(&private_path, e))?;
    let public =
        parse_public(&read(&public_path)?).map_err(|e| KeyFileError::new(&public_path, e))?;
    if public.algorithm != private.algorithm {
        return Err(KeyFileError::new(
            &public_path,
            format!(
                "algorithm {} differs from the private key's ({})",
                public.algorithm, private.algorithm
            ),
        ));
    }
    if public.flags & !1 != 256 {
        return Err(KeyFileError::new(
            &public_path,
            format!(
                "flags {} are not those of a zone key (256 or 257)",
                public.flags
            ),
        ));
    }
    Ok(KeyFile {
        zone: public.zone,
        flags: public.flags,
        algorithm: private.algorithm,
        public: public.public,
        private: private.private,
        timing: private.timing,
        ttl: public.ttl,
    })
}

/// Writes `key` into `dir` as `<base>.key` (mode 0644) and
/// `<base>.private` (mode 0600), each through a temporary file renamed
/// into place, the `.key` first: a watcher never sees half a key.
/// Returns the base path.
pub fn write_key(dir: &Path, key: &KeyFile, tag: u16) -> Result<PathBuf, KeyFileError> {
    let base = dir.join(base_name(&key.zone, key.algorithm, tag));
    for (ext, mode, text) in [
        ("key", 0o644, format_public(key, tag)),
        ("private", 0o600, format_private(key)),
    ] {
        let path = base.with_extension_added(ext);
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            KeyFileError::new(&path, e)
        })?;
    }
    Ok(base)
}

/// Path helpers for key file names, which contain dots.
trait AddExtension {
    /// `base` + `.` + `ext` (unlike `with_extension`, keeps the dots of
    /// the zone name).
    fn with_extension_added(&self, ext: &str) -> PathBuf;
}

impl AddExtension for Path {
    fn with_extension_added(&self, ext: &str) -> PathBuf {
        let mut s = self.as_os_str().to_owned();
        s.push(".");
        s.push(ext);
        PathBuf::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIND_PRIVATE: &str = "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: uih05DlseSS0z2IOc6Ywi8XK5PHbV4drNF9Isakv97w=\nCreated: 20261207184124\nPublish: 20261207184124\nActivate: 20261207184124\n";
    const BIND_KEY: &str = "; This is a zone-signing key, keyid 46984, for example.com.\n; Created: 20261207184124 (Mon Dec  7 18:41:24 2026)\n; Publish: 20261207184124 (Mon Dec  7 18:41:24 2026)\n; Activate: 20261207184124 (Mon Dec  7 18:41:24 2026)\nexample.com. IN DNSKEY 256 3 13 RZTydUd3a9dAzfdjhx7a493az1Q2wt3BoUkzRsE9e/hC7hGwbLSL/AjY Hn6hyeYOfNXNlmrhEUKXMH63nRfkZw==\n";

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_time("19700101000000"), Some(0));
        assert_eq!(parse_time("20261207184124"), Some(1_796_668_884));
        assert_eq!(format_time(1_796_668_884), "20261207184124");
        assert_eq!(ctime(1_796_668_884), "Mon Dec  7 18:41:24 2026");
        assert_eq!(
            parse_time("20240229000000").map(format_time).as_deref(),
            Some("20240229000000")
        );
        for bad in [
            "2026120718412",
            "20261307000000",
            "20230229000000",
            "2026120718412x",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        for t in [0, 951_782_400, 4_102_444_799, 1_234_567_890] {
            assert_eq!(parse_time(&format_time(t)), Some(t));
        }
    }

    #[test]
    fn bind_files_round_trip() {
        let private = parse_private(BIND_PRIVATE).unwrap();
        let public = parse_public(BIND_KEY).unwrap();
        assert_eq!(private.algorithm, 13);
        assert_eq!(private.private.len(), 32);
        assert_eq!(private.timing.activate, Some(1_796_668_884));
        assert_eq!(private.timing.inactive, None);
        assert_eq!(
            (public.flags, public.algorithm, public.public.len()),
            (256, 13, 64)
        );
        let key = KeyFile {
            zone: public.zone,
            flags: public.flags,
            algorithm: 13,
            public: public.public,
            private: private.private,
            timing: private.timing,
            ttl: None,
        };
        assert_eq!(format_private(&key), BIND_PRIVATE);
        // BIND splits the base64 of the key in two; ours is one word.
        let ours = format_public(&key, 46984);
        assert_eq!(ours.replace(' ', ""), BIND_KEY.replace(' ', ""));
        assert_eq!(parse_public(&ours).unwrap().public, key.public);
    }

    #[test]
    fn key_lines_with_ttl_and_class() {
        let p = parse_public(
            "example.com. 3600 IN DNSKEY 257 3 15 LqVTXQjQ5kwZ1Mkkw2EwEzi8uFwThyXhjsEnV6Kt2e4=",
        )
        .unwrap();
        assert_eq!((p.ttl, p.flags, p.algorithm), (Some(3600), 257, 15));
        assert!(parse_public("; only a comment\n").is_err());
        assert!(parse_public("example.com. IN DS 1 2 3").is_err());
        assert!(parse_private("Algorithm: 13\nPrivateKey: AA==\n").is_err());
        assert!(
            parse_private(
                "Private-key-format: v1.3\nAlgorithm: 13\nPrivateKey: AA==\nActivate: soon\n"
            )
            .is_err()
        );
    }

    #[test]
    fn file_names() {
        let zone = Name::from_ascii("Example.COM.").unwrap();
        assert_eq!(base_name(&zone, 13, 4698), "Kexample.com.+013+04698");
        assert_eq!(
            parse_base_name("Kexample.com.+013+04698.private", &zone),
            Some((13, 4698))
        );
        assert_eq!(
            parse_base_name("Kexample.com.+013+04698.key", &zone),
            Some((13, 4698))
        );
        assert_eq!(parse_base_name("Kexample.org.+013+04698.key", &zone), None);
        assert_eq!(
            parse_base_name("Kexample.com.+013+04698.state", &zone),
            None
        );
        assert_eq!(
            parse_base_name("Kwww.example.com.+013+04698.key", &zone),
            None
        );
    }
}
