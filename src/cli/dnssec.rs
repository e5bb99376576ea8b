//! `switchyard dnssec`: a signed zone's keys from the command line —
//! make one (`keygen`, like `dnssec-keygen`), the DS records for the
//! parent (`ds`), the DNSKEY RRset and trust anchors for validators
//! (`dnskey`), and each key's state and the next event (`status`).
//!
//! The key directory is `--dir`, else the zone's as the configuration
//! gives it (`dnssec.keys`, else `data_dir/keys/<zone>/`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hickory_proto::dnssec::DigestType;
use hickory_proto::rr::Name;

use super::ConfigArgs;
use crate::config::DnssecAlgorithm;
use crate::dnssec::files::{self, format_time};
use crate::dnssec::keydir::{self, LoadedKey, unix_now};
use crate::dnssec::keys::{Timing, UnixTime};

/// `dnssec` flags.
#[derive(Debug, Args)]
pub struct DnssecArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DnssecCommand,
}

/// The `dnssec` subcommands.
#[derive(Debug, Subcommand)]
pub enum DnssecCommand {
    /// Make a key (a ZSK published and active now unless told otherwise) and print its file base name.
    Keygen(KeygenArgs),
    /// Print the DS records (SHA-256) of the published key-signing keys, for the parent zone.
    Ds(ZoneArgs),
    /// Print the published DNSKEY RRset, or a trust anchor for delv or Unbound.
    Dnskey(DnskeyArgs),
    /// Show each key's role, state and timing, and the key set's next event.
    Status(StatusArgs),
}

/// The zone and where its keys are.
#[derive(Debug, Args)]
pub struct ZoneArgs {
    /// The zone (`example.com` or `example.com.`).
    #[arg(value_name = "ZONE")]
    pub zone_name: String,
    /// Key directory (default: the zone's, from the configuration).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Configuration flags (for the key directory).
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `dnssec keygen` flags.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The zone and key directory.
    #[command(flatten)]
    pub zone: ZoneArgs,
    /// ecdsap256sha256 (13) or ed25519 (15) (default: the zone's `dnssec.algorithm`, else ecdsap256sha256).
    #[arg(long, value_name = "ALGORITHM")]
    pub algorithm: Option<String>,
    /// A key-signing key (DNSKEY flags 257); with no ZSK beside it, it signs everything (a CSK).
    #[arg(long, conflicts_with = "csk")]
    pub ksk: bool,
    /// A combined signing key (flags 257, the zone's only kind of key).
    #[arg(long)]
    pub csk: bool,
    /// When the key enters DNSKEY (T: YYYYMMDDHHMMSS UTC, unix seconds, now, now+N[s|m|h|d]; default now).
    #[arg(long, value_name = "T")]
    pub publish: Option<String>,
    /// When the key starts signing (default: its publish time).
    #[arg(long, value_name = "T")]
    pub activate: Option<String>,
    /// When the key stops signing.
    #[arg(long, value_name = "T")]
    pub inactive: Option<String>,
    /// When the key leaves DNSKEY.
    #[arg(long, value_name = "T")]
    pub delete: Option<String>,
}

/// Which trust anchor `dnskey` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Anchor {
    /// A `trust-anchors { … static-key … };` block for `delv -a FILE`.
    Delv,
    /// `trust-anchor: "…"` lines for unbound.conf's server clause.
    Unbound,
}

/// `dnssec dnskey` flags.
#[derive(Debug, Args)]
pub struct DnskeyArgs {
    /// The zone and key directory.
    #[command(flatten)]
    pub zone: ZoneArgs,
    /// Print a trust anchor of the key-signing keys instead of the RRset.
    #[arg(long, value_enum)]
    pub anchor: Option<Anchor>,
}

/// `dnssec status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The zone and key directory.
    #[command(flatten)]
    pub zone: ZoneArgs,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `switchyard dnssec …`.
pub fn dnssec(args: &DnssecArgs) -> anyhow::Result<()> {
    match &args.command {
        DnssecCommand::Keygen(a) => keygen(a),
        DnssecCommand::Ds(a) => ds(a),
        DnssecCommand::Dnskey(a) => dnskey(a),
        DnssecCommand::Status(a) => status(a),
    }
}

/// The zone's name and key directory, and its configured algorithm.
fn resolve(args: &ZoneArgs) -> anyhow::Result<(Name, PathBuf, Option<DnssecAlgorithm>)> {
    let name = keydir::zone_name(&args.zone_name)?;
    let fqdn = files::zone_text(&name);
    if let Some(dir) = &args.dir {
        return Ok((name, dir.clone(), None));
    }
    let config = args
        .config
        .load()
        .context("reading the configuration for the key directory (or give --dir)")?;
    Ok(match config.zones.iter().find(|z| z.name == fqdn) {
        Some(zone) => (
            name,
            keydir::key_dir(&config, zone),
            zone.dnssec.as_ref().map(|d| d.algorithm),
        ),
        None => (name, keydir::default_key_dir(&config.data_dir, &fqdn), None),
    })
}

fn load(args: &ZoneArgs) -> anyhow::Result<(Name, PathBuf, Vec<LoadedKey>)> {
    let (name, dir, _) = resolve(args)?;
    let keys = keydir::load_keys(&dir, &name)?;
    if keys.is_empty() {
        bail!(
            "no key for {} in {}",
            files::zone_text(&name),
            dir.display()
        );
    }
    Ok((name, dir, keys))
}

/// A time on the command line: `YYYYMMDDHHMMSS` (UTC), unix seconds,
/// `now`, or `now+N` with an optional unit `s`, `m`, `h` or `d`.
pub fn parse_time_spec(s: &str, now: UnixTime) -> Result<UnixTime, String> {
    let bad = || format!("'{s}' is not YYYYMMDDHHMMSS, unix seconds, now or now+N[s|m|h|d]");
    if s == "now" {
        return Ok(now);
    }
    if let Some(offset) = s.strip_prefix("now+") {
        let (digits, unit) = match offset.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&offset[..i], c),
            _ => (offset, 's'),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        return n
            .checked_mul(scale)
            .and_then(|d| now.checked_add(d))
            .ok_or_else(bad);
    }
    if s.len() == 14 {
        return files::parse_time(s).ok_or_else(bad);
    }
    s.parse().map_err(|_| bad())
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let (name, dir, configured) = resolve(&args.zone)?;
    let algorithm = match &args.algorithm {
        Some(a) => DnssecAlgorithm::parse(a)
            .with_context(|| format!("--algorithm '{a}' is not ecdsap256sha256 or ed25519"))?,
        None => configured.unwrap_or(DnssecAlgorithm::EcdsaP256Sha256),
    };
    let now = unix_now();
    let time = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<UnixTime>> {
        v.as_deref()
            .map(|s| parse_time_spec(s, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
            .transpose()
    };
    let publish = time("publish", &args.publish)?.unwrap_or(now);
    let activate = time("activate", &args.activate)?.unwrap_or(publish);
    let timing = Timing {
        created: Some(now),
        publish: Some(publish),
        activate: Some(activate),
        inactive: time("inactive", &args.inactive)?,
        delete: time("delete", &args.delete)?,
    };
    check_order(&timing)?;
    let (base, _) = keydir::generate_key(&dir, &name, algorithm, args.ksk || args.csk, timing)?;
    println!("{}", base.file_name().unwrap_or_default().to_string_lossy());
    Ok(())
}

/// The events of a key come in RFC 7583's order.
fn check_order(t: &Timing) -> anyhow::Result<()> {
    let events = [
        ("publish", t.publish),
        ("activate", t.activate),
        ("inactive", t.inactive),
        ("delete", t.delete),
    ];
    let set: Vec<(&str, UnixTime)> = events
        .iter()
        .filter_map(|(n, t)| Some((*n, (*t)?)))
        .collect();
    for pair in set.windows(2) {
        if pair[1].1 < pair[0].1 {
            bail!("--{} is before --{}", pair[1].0, pair[0].0);
        }
    }
    Ok(())
}

fn ds(args: &ZoneArgs) -> anyhow::Result<()> {
    let (name, _, keys) = load(args)?;
    let now = unix_now();
    let zone = files::zone_text(&name);
    for k in keys
        .iter()
        .filter(|k| k.file.flags == 257 && k.key.timing.published(now))
    {
        let digest = k
            .key
            .dnskey
            .to_digest(&name, DigestType::SHA256)
            .context("digest")?;
        println!(
            "{zone} IN DS {} {} 2 {}",
            k.key.tag,
            k.file.algorithm,
            hex::encode_upper(digest.as_ref())
        );
    }
    Ok(())
}

fn dnskey(args: &DnskeyArgs) -> anyhow::Result<()> {
    let (name, _, keys) = load(&args.zone)?;
    let now = unix_now();
    let zone = files::zone_text(&name);
    let published = keys.iter().filter(|k| k.key.timing.published(now));
    let b64 = |k: &LoadedKey| data_encoding::BASE64.encode(&k.file.public);
    match args.anchor {
        None => {
            for k in published {
                println!(
                    "{zone} IN DNSKEY {} 3 {} {}",
                    k.file.flags,
                    k.file.algorithm,
                    b64(k)
                );
            }
        }
        Some(Anchor::Delv) => {
            println!("trust-anchors {{");
            for k in published.filter(|k| k.file.flags == 257) {
                println!(
                    "    \"{zone}\" static-key {} 3 {} \"{}\";",
                    k.file.flags,
                    k.file.algorithm,
                    b64(k)
                );
            }
            println!("}};");
        }
        Some(Anchor::Unbound) => {
            for k in published.filter(|k| k.file.flags == 257) {
                println!(
                    "trust-anchor: \"{zone} DNSKEY {} 3 {} {}\"",
                    k.file.flags,
                    k.file.algorithm,
                    b64(k)
                );
            }
        }
    }
    Ok(())
}

/// A key's events, in order.
fn events(t: &Timing) -> [(&'static str, Option<UnixTime>); 5] {
    [
        ("created", t.created),
        ("publish", t.publish),
        ("activate", t.activate),
        ("inactive", t.inactive),
        ("delete", t.delete),
    ]
}

fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let (name, dir, keys) = load(&args.zone)?;
    let now = unix_now();
    // The key set's next event: the earliest one after now.
    let next = keys
        .iter()
        .flat_map(|k| {
            events(&k.key.timing)
                .into_iter()
                .skip(1)
                .filter_map(move |(e, t)| Some((t?, e, k.key.tag)))
        })
        .filter(|(t, _, _)| *t > now)
        .min();
    if args.json {
        let list: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                let mut timing = serde_json::Map::new();
                for (e, t) in events(&k.key.timing) {
                    timing.insert(e.into(), t.into());
                }
                serde_json::json!({
                    "tag": k.key.tag,
                    "algorithm": k.file.algorithm,
                    "algorithm_name": files::algorithm_name(k.file.algorithm),
                    "flags": k.file.flags,
                    "role": k.key.role.name(),
                    "state": k.key.timing.state(now).name(),
                    "file": k.base.display().to_string(),
                    "timing": timing,
                })
            })
            .collect();
        let next = next.map(|(t, e, tag)| serde_json::json!({"time": t, "event": e, "tag": tag}));
        println!(
            "{}",
            serde_json::json!({
                "zone": files::zone_text(&name),
                "dir": dir.display().to_string(),
                "now": now,
                "keys": list,
                "next_event": next,
            })
        );
        return Ok(());
    }
    println!(
        "zone {} (keys in {}), now {}",
        files::zone_text(&name),
        dir.display(),
        format_time(now)
    );
    for k in &keys {
        println!(
            "key {} {} {} {}: {}",
            k.key.tag,
            files::algorithm_name(k.file.algorithm).unwrap_or("?"),
            k.key.role.name(),
            k.file.flags,
            k.key.timing.state(now).name()
        );
        for (e, t) in events(&k.key.timing) {
            if let Some(t) = t {
                println!("    {e:<9}{} ({})", format_time(t), files::ctime(t));
            }
        }
    }
    match next {
        Some((t, e, tag)) => println!(
            "next event: {} ({}): key {tag} {e}",
            format_time(t),
            files::ctime(t)
        ),
        None => println!("next event: none scheduled"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_specs() {
        let now = 1_000_000;
        assert_eq!(parse_time_spec("now", now), Ok(now));
        assert_eq!(parse_time_spec("now+30", now), Ok(now + 30));
        assert_eq!(parse_time_spec("now+2h", now), Ok(now + 7200));
        assert_eq!(parse_time_spec("now+1d", now), Ok(now + 86_400));
        assert_eq!(parse_time_spec("1700000000", now), Ok(1_700_000_000));
        assert_eq!(parse_time_spec("20261207184124", now), Ok(1_796_668_884));
        for bad in ["soon", "now+", "now+3w", "now-1", "2026120718412x"] {
            assert!(parse_time_spec(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_follow_the_timing() {
        let t = Timing {
            created: Some(0),
            publish: Some(10),
            activate: Some(20),
            inactive: Some(30),
            delete: Some(40),
        };
        let at = |n| t.state(n).name();
        assert_eq!(
            [at(5), at(10), at(20), at(30), at(40)],
            ["created", "published", "active", "inactive", "removed"]
        );
        assert!(check_order(&t).is_ok());
        assert!(
            check_order(&Timing {
                inactive: Some(5),
                ..t
            })
            .is_err()
        );
    }
}
