//! DNSSEC proven by real validators (issue 23): a signed zone served by
//! the real `switchyard` is validated by Unbound (a validating resolver
//! with a stub zone to the server and the zone's trust anchor) and by
//! BIND's `delv`, never by our own code.
//!
//! The harness itself (tests/it/common/unbound.rs) is first proven on a
//! zone NSD serves pre-signed by `dnssec-signzone`, so a failure below is
//! Switchyard's, not the harness's. Then: every answer kind of a signed
//! zone validates (apps, apex SOA/NS/DNSKEY, a static record, NXDOMAIN and
//! NODATA); a trust anchor naming another key, or a key removed from the
//! zone while the anchor needs it, fails validation; and a ZSK rollover by
//! pre-publication, driven by the key files alone, never breaks
//! validation while Unbound keeps its caches.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::unbound::{Anchor, Unbound, UnboundAnchor, ask, delv, have, tool};
use common::{Options, Server};
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const ZONE: &str = "switchyard.test.";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every tool these tests run (on CI all must be there).
fn tools() -> bool {
    ["unbound", "unbound-checkconf", "delv"]
        .iter()
        .all(|t| have(t))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Runs a command, asserts it succeeded, returns its standard output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Key tags of the RRSIGs covering `covered` in a message's answers.
fn rrsig_tags(m: &Message, covered: RecordType) -> BTreeSet<u16> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::RRSIG(s)) if s.input().type_covered == covered => {
                Some(s.input().key_tag)
            }
            _ => None,
        })
        .collect()
}

/// Key tags of the DNSKEYs in a message's answers.
fn dnskey_tags(m: &Message) -> BTreeSet<u16> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k.calculate_key_tag().expect("tag")),
            _ => None,
        })
        .collect()
}

/// The key tag of a `K<zone>+<alg>+<tag>.key` or `.private` file name.
fn tag_of(file_name: &str) -> Option<u16> {
    let stem = file_name.strip_prefix('K')?;
    let stem = stem
        .strip_suffix(".key")
        .or_else(|| stem.strip_suffix(".private"))?;
    stem.rsplit('+').next()?.parse().ok()
}

/// The key files in `dir`: (tag, path of the `.key` file).
fn key_files(dir: &Path) -> Vec<(u16, PathBuf)> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("key directory {}: {e}", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            (name.ends_with(".key")).then_some(())?;
            Some((tag_of(&name)?, path))
        })
        .collect()
}

/// The key tags of the key files in `dir`.
fn file_tags(dir: &Path) -> BTreeSet<u16> {
    key_files(dir).into_iter().map(|(t, _)| t).collect()
}

/// Removes a key's `.key` and `.private` files.
fn remove_key(dir: &Path, tag: u16) {
    let (_, key) = key_files(dir)
        .into_iter()
        .find(|(t, _)| *t == tag)
        .unwrap_or_else(|| panic!("no files of key {tag} in {}", dir.display()));
    for ext in ["key", "private"] {
        std::fs::remove_file(key.with_extension(ext)).expect("remove key file");
    }
}

/// Asks the server itself (DO set) until `good` holds, for up to `limit`.
fn until_server(
    dns: SocketAddr,
    name: &str,
    qtype: RecordType,
    limit: Duration,
    good: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(m) = ask(dns, name, qtype, false) {
            if good(&m) {
                return m;
            }
            last = Some(m);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match last {
        Some(m) => panic!("{name} {qtype}: the server never gave the answer wanted; last:\n{m}"),
        None => panic!("{name} {qtype}: the server did not answer"),
    }
}

// ------------------------------------------------------- the harness, on NSD

/// A free loopback port (UDP and TCP) for NSD.
fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let p = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// NSD serving a zone it was given pre-signed, killed on drop.
struct Nsd {
    child: std::process::Child,
    /// Its DNS address.
    auth: SocketAddr,
    /// The KSK's trust anchor.
    anchor: Anchor,
    _dir: tempfile::TempDir,
}

impl Nsd {
    /// `zone` with a KSK and a ZSK (ECDSA P-256) signed by
    /// `dnssec-signzone` (NSEC; `validity` are its -s/-e flags, empty for
    /// its defaults; -P to skip its check of expired ones), served by NSD
    /// on a free loopback port.
    fn presigned(zone: &str, validity: &[&str]) -> Nsd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("zone"),
            format!(
                "$ORIGIN {zone}\n$TTL 20\n@ 60 IN SOA ns1 hostmaster 1 3600 600 604800 60\n\
                 @ 60 IN NS ns1\nns1 IN A 127.0.0.1\nwww IN A 192.0.2.1\n"
            ),
        )
        .expect("zone");
        let keygen = |extra: &[&str]| {
            run(Command::new("dnssec-keygen")
                .current_dir(d)
                .args(["-q", "-a", "ECDSAP256SHA256", "-K", "."])
                .args(extra)
                .arg(zone))
            .trim()
            .to_string()
        };
        let ksk = keygen(&["-f", "KSK"]);
        keygen(&[]);
        run(Command::new("dnssec-signzone")
            .current_dir(d)
            .args(["-q", "-K", ".", "-S", "-o", zone, "-f", "zone.signed"])
            .args(validity)
            .arg("zone"));
        let port = free_port();
        let p = d.display();
        std::fs::write(
            d.join("nsd.conf"),
            format!(
                "server:\n  ip-address: 127.0.0.1@{port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{p}\"\n  \
                 database: \"\"\n  zonelistfile: \"{p}/zone.list\"\n  xfrdfile: \"{p}/xfrd.state\"\n  xfrdir: \"{p}\"\n  \
                 pidfile: \"{p}/nsd.pid\"\n  logfile: \"{p}/nsd.log\"\n  rrl-ratelimit: 0\n\
                 remote-control:\n  control-enable: no\nzone:\n  name: \"{zone}\"\n  zonefile: \"{p}/zone.signed\"\n"
            ),
        )
        .expect("nsd.conf");
        let child = Command::new(tool("nsd"))
            .args(["-d", "-c"])
            .arg(d.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsd");
        let anchor =
            Anchor::parse(&std::fs::read_to_string(d.join(format!("{ksk}.key"))).expect("ksk"));
        assert_eq!(anchor.records.len(), 1, "{anchor:?}");
        let nsd = Nsd {
            child,
            auth: ([127, 0, 0, 1], port).into(),
            anchor,
            _dir: dir,
        };
        until_server(
            nsd.auth,
            zone,
            RecordType::SOA,
            Duration::from_secs(15),
            |m| !rrsig_tags(m, RecordType::SOA).is_empty(),
        );
        nsd
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_harness_validates_a_zone_nsd_serves_signed_by_dnssec_signzone() {
    if !(tools()
        && ["nsd", "dnssec-keygen", "dnssec-signzone"]
            .iter()
            .all(|t| have(t)))
    {
        return;
    }
    let zone = "presigned.test.";
    let nsd = Nsd::presigned(zone, &[]);
    let (auth, anchor) = (nsd.auth, &nsd.anchor);
    let u = Unbound::start(zone, auth, &UnboundAnchor::File(anchor.zone_lines()));
    u.expect_secure("www.presigned.test.", RecordType::A, ResponseCode::NoError);
    u.expect_secure(
        "nope.presigned.test.",
        RecordType::A,
        ResponseCode::NXDomain,
    );
    u.expect_secure("www.presigned.test.", RecordType::MX, ResponseCode::NoError);
    u.expect_secure(zone, RecordType::DNSKEY, ResponseCode::NoError);
    for (name, qtype) in [
        ("www.presigned.test.", "A"),
        ("nope.presigned.test.", "A"),
        ("www.presigned.test.", "MX"),
    ] {
        let v = delv(auth, zone, &anchor.delv_conf(), name, qtype);
        assert!(v.validated, "delv {name} {qtype}:\n{}", v.output);
    }

    // The anchor of a key the zone does not have: bogus.
    let wrong = ksk_elsewhere(zone);
    let bad = Unbound::start(zone, auth, &UnboundAnchor::File(wrong.zone_lines()));
    let r = bad.query("www.presigned.test.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{r}");
    assert!(
        bad.val_log().contains("validation failure"),
        "{}",
        bad.log()
    );
    let v = delv(auth, zone, &wrong.delv_conf(), "www.presigned.test.", "A");
    assert!(!v.validated, "delv with a stray anchor:\n{}", v.output);
    assert!(v.output.contains("resolution failed"), "{}", v.output);

    // Signatures that expired (the right key, a validity window in the
    // past, as a wrong clock would make): bogus too.
    let zone = "expired.test.";
    let old = Nsd::presigned(
        zone,
        &["-P", "-s", "20200101000000", "-e", "20200201000000"],
    );
    let u = Unbound::start(
        zone,
        old.auth,
        &UnboundAnchor::File(old.anchor.zone_lines()),
    );
    let r = u.query("www.expired.test.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{r}");
    assert!(u.val_log().contains("expired"), "{}", u.log());
    let v = delv(
        old.auth,
        zone,
        &old.anchor.delv_conf(),
        "www.expired.test.",
        "A",
    );
    assert!(!v.validated, "delv on expired signatures:\n{}", v.output);
}

// ----------------------------------------------------- a signed Switchyard

/// A server whose `switchyard.test.` zone is signed, and its files.
struct Signed {
    server: Server,
    /// The key directory (given, or the one made at first start).
    keys: PathBuf,
}

impl Signed {
    /// Starts the shipped config and apps with the zone signed:
    /// `dnssec` is the zone's setting (`true`, or an inline table) and
    /// `edits` further config edits (short TTLs). Waits until the apex
    /// SOA comes back signed.
    fn start(dnssec: &str, edits: Vec<(String, String)>, apps: Vec<(String, String)>) -> Signed {
        let mut config_edits = vec![(
            "ns = [\"ns1.switchyard.test.\"]\n".to_string(),
            format!("ns = [\"ns1.switchyard.test.\"]\ndnssec = {dnssec}\n"),
        )];
        config_edits.extend(edits);
        let server = Server::start_with(Options {
            apps: Some(apps),
            config_edits,
            ..Options::default()
        });
        until_server(
            server.dns,
            ZONE,
            RecordType::SOA,
            Duration::from_secs(20),
            |m| !rrsig_tags(m, RecordType::SOA).is_empty(),
        );
        let keys = Signed::key_dir(&server);
        Signed { server, keys }
    }

    /// The zone's key directory: the configured one, else the one
    /// `serve` made under `data_dir/keys/`.
    fn key_dir(server: &Server) -> PathBuf {
        let config = std::fs::read_to_string(server.dir.path().join("switchyard.toml"))
            .expect("test config");
        if let Some(line) = config.lines().find(|l| l.starts_with("dnssec = {")) {
            let given = line
                .split("keys = \"")
                .nth(1)
                .and_then(|s| s.split('"').next());
            if let Some(dir) = given {
                return PathBuf::from(dir);
            }
        }
        let base = server.dir.path().join("data").join("keys");
        let dirs: Vec<PathBuf> = std::fs::read_dir(&base)
            .unwrap_or_else(|e| panic!("{}: {e} (no key directory made)", base.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(
            dirs.len(),
            1,
            "one zone's keys under {}: {dirs:?}",
            base.display()
        );
        dirs[0].clone()
    }

    /// `switchyard dnssec ARGS` against this server's config and data.
    fn cli(&self, args: &[&str]) -> String {
        cli(&self.server, args)
    }

    /// The trust anchor the CLI prints for `tool` (`unbound`, `delv`).
    fn printed_anchor(&self, tool: &str) -> String {
        self.cli(&["dnskey", ZONE, "--anchor", tool])
    }
}

/// `switchyard dnssec ARGS --config CFG --data-dir DATA` for a server.
fn cli(server: &Server, args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(root())
        .arg("dnssec")
        .args(args)
        .arg("--config")
        .arg(server.dir.path().join("switchyard.toml"))
        .arg("--data-dir")
        .arg(server.dir.path().join("data")))
}

/// The shipped apps' names and the type to validate each with: the
/// question a validating resolver can answer from this zone alone (an app
/// answering a CNAME to another zone is validated on its CNAME RRset; the
/// target's zone is not ours). Waits until every app answers from the app
/// (warm workers, see tests/it/dns.rs).
fn app_questions(dns: SocketAddr) -> Vec<(String, RecordType)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("apps")).expect("apps") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("js") {
            continue;
        }
        let app = p.file_stem().expect("stem").to_string_lossy().into_owned();
        let qname = format!("{app}.switchyard.test.");
        let mut steady = 0;
        let mut kind = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while steady < 8 && Instant::now() < deadline {
            let m = ask(dns, &qname, RecordType::A, false);
            let first = m.as_ref().and_then(|m| {
                (m.metadata.response_code == ResponseCode::NoError)
                    .then(|| m.answers.first().map(|r| r.record_type()))
                    .flatten()
            });
            if first.is_some() && first == kind {
                steady += 1;
            } else {
                steady = 0;
                kind = first;
            }
        }
        let kind = kind.unwrap_or_else(|| panic!("{qname}: no steady answer in 30 s"));
        let qtype = if kind == RecordType::CNAME {
            RecordType::CNAME
        } else {
            RecordType::A
        };
        out.push((qname, qtype));
    }
    assert!(out.len() >= 5, "the shipped apps: {out:?}");
    out.sort();
    out
}

#[test]
fn every_answer_of_a_signed_zone_validates_in_unbound_and_delv() {
    if !tools() {
        return;
    }
    let s = Signed::start("true", vec![], common::apps::shipped_with_budget());
    let dns = s.server.dns;
    // The first start made one key, a CSK (SEP flag): the anchor.
    let keys = file_tags(&s.keys);
    assert_eq!(keys.len(), 1, "one key made at first start: {keys:?}");
    let printed = s.printed_anchor("unbound");
    let anchor = Anchor::parse(&printed);
    assert_eq!(
        anchor.key_signing().records.len(),
        1,
        "`dnssec dnskey --anchor unbound` printed:\n{printed}"
    );
    let delv_anchor = s.printed_anchor("delv");
    let u = Unbound::start(ZONE, dns, &UnboundAnchor::from_printed(&printed));

    let mut questions: Vec<(String, RecordType, ResponseCode)> = app_questions(dns)
        .into_iter()
        .map(|(n, t)| (n, t, ResponseCode::NoError))
        .collect();
    questions.extend(
        [
            (ZONE, RecordType::SOA, ResponseCode::NoError),
            (ZONE, RecordType::NS, ResponseCode::NoError),
            (ZONE, RecordType::DNSKEY, ResponseCode::NoError),
            (ZONE, RecordType::MX, ResponseCode::NoError),
            (
                "static.switchyard.test.",
                RecordType::A,
                ResponseCode::NoError,
            ),
            (
                "static.switchyard.test.",
                RecordType::AAAA,
                ResponseCode::NoError,
            ),
            (
                "info.switchyard.test.",
                RecordType::TXT,
                ResponseCode::NoError,
            ),
            (
                "www.geo-map.switchyard.test.",
                RecordType::AAAA,
                ResponseCode::NoError,
            ),
            // NXDOMAIN: below no name at all, and beside the apex.
            (
                "nope.switchyard.test.",
                RecordType::A,
                ResponseCode::NXDomain,
            ),
            (
                "zz.nope.switchyard.test.",
                RecordType::AAAA,
                ResponseCode::NXDomain,
            ),
            // NODATA: a static name, an app name, the apex.
            (
                "static.switchyard.test.",
                RecordType::MX,
                ResponseCode::NoError,
            ),
            (
                "geo-map.switchyard.test.",
                RecordType::TXT,
                ResponseCode::NoError,
            ),
            (ZONE, RecordType::A, ResponseCode::NoError),
        ]
        .into_iter()
        .map(|(n, t, r)| (n.to_string(), t, r)),
    );
    let mut failed = Vec::new();
    for (name, qtype, rcode) in &questions {
        let r = u.query(name, *qtype);
        let nodata = rcode == &ResponseCode::NoError
            && matches!(
                (name.as_str(), *qtype),
                ("static.switchyard.test.", RecordType::MX)
                    | ("geo-map.switchyard.test.", RecordType::TXT)
                    | (ZONE, RecordType::A)
            );
        let answered = r.answers.iter().any(|a| a.record_type() == *qtype);
        if !(r.metadata.authentic_data
            && r.metadata.response_code == *rcode
            && (answered != (nodata || rcode == &ResponseCode::NXDomain)))
        {
            failed.push(format!(
                "unbound {name} {qtype}: want {rcode:?}{} with AD, got {:?} AD={} answers={}",
                if nodata { " (NODATA)" } else { "" },
                r.metadata.response_code,
                r.metadata.authentic_data,
                r.answers.len()
            ));
        }
        let v = delv(dns, ZONE, &delv_anchor, name, &qtype.to_string());
        if !v.validated {
            failed.push(format!("delv {name} {qtype}: {}", v.output.trim()));
        }
    }
    // A DS anchor (what the parent would publish) validates too.
    let ds = Anchor::parse(&s.cli(&["ds", ZONE]));
    assert!(
        ds.records
            .iter()
            .any(|r| r.kind == "DS" && r.fields[2] == "2"),
        "`dnssec ds` printed no SHA-256 DS: {ds:?}"
    );
    let v = delv(dns, ZONE, &ds.delv_conf(), "static.switchyard.test.", "A");
    if !v.validated {
        failed.push(format!("delv from the DS: {}", v.output.trim()));
    }
    assert!(
        failed.is_empty(),
        "{} of {} checks failed:\n{}\n--- unbound's validator log:\n{}",
        failed.len(),
        questions.len() * 2 + 1,
        failed.join("\n"),
        u.val_log()
    );
}

#[test]
fn an_anchor_of_another_key_or_a_key_gone_from_the_zone_fails_validation() {
    if !tools() {
        return;
    }
    let s = Signed::start("true", vec![], common::apps::shipped_with_budget());
    let dns = s.server.dns;
    let printed = s.printed_anchor("unbound");
    let good = Anchor::parse(&printed);

    // A stray key's anchor: every answer is bogus, SERVFAIL.
    let stray = ksk_elsewhere(ZONE);
    let u = Unbound::start(ZONE, dns, &UnboundAnchor::File(stray.zone_lines()));
    let r = u.query("static.switchyard.test.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{r}");
    assert!(u.val_log().contains("validation failure"), "{}", u.log());
    let v = delv(
        dns,
        ZONE,
        &stray.delv_conf(),
        "static.switchyard.test.",
        "A",
    );
    assert!(
        !v.validated && v.output.contains("resolution failed"),
        "delv with a stray anchor:\n{}",
        v.output
    );

    // The anchored key is replaced in the key directory by a new one (its
    // files removed, a new key made): the zone now signs with a key the
    // anchor does not name, so a validator holding the old anchor fails.
    let old = file_tags(&s.keys);
    s.cli(&[
        "keygen",
        ZONE,
        "--ksk",
        "--dir",
        &s.keys.display().to_string(),
    ]);
    for t in &old {
        remove_key(&s.keys, *t);
    }
    let new = file_tags(&s.keys);
    assert!(new.is_disjoint(&old) && new.len() == 1, "{old:?} → {new:?}");
    until_server(
        dns,
        ZONE,
        RecordType::DNSKEY,
        Duration::from_secs(15),
        |m| dnskey_tags(m) == new,
    );
    let u = Unbound::start(ZONE, dns, &UnboundAnchor::File(good.zone_lines()));
    let r = u.query("static.switchyard.test.", RecordType::A);
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::ServFail,
        "the anchored key is gone, yet:\n{r}"
    );
    assert!(u.val_log().contains("validation failure"), "{}", u.log());
    let v = delv(dns, ZONE, &good.delv_conf(), "static.switchyard.test.", "A");
    assert!(
        !v.validated,
        "delv after the key was removed:\n{}",
        v.output
    );
    // The new key's own anchor validates again (the failure was the key).
    let fresh = Anchor::parse(&s.printed_anchor("unbound"));
    let u = Unbound::start(ZONE, dns, &UnboundAnchor::File(fresh.zone_lines()));
    u.expect_secure(
        "static.switchyard.test.",
        RecordType::A,
        ResponseCode::NoError,
    );
}

/// A KSK made by BIND's `dnssec-keygen` for the zone, in a directory the
/// server never reads: an anchor for a key the zone does not have.
fn ksk_elsewhere(zone: &str) -> Anchor {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = run(Command::new("dnssec-keygen")
        .current_dir(dir.path())
        .args(["-q", "-a", "ECDSAP256SHA256", "-f", "KSK", "-K", "."])
        .arg(zone))
    .trim()
    .to_string();
    Anchor::parse(&std::fs::read_to_string(dir.path().join(format!("{name}.key"))).expect("key"))
}

/// The shipped apps (generous budget) answering with a 2 s TTL, so a
/// rollover test waits out validators' caches in seconds.
fn short_ttl_apps() -> Vec<(String, String)> {
    let mut apps = common::apps::shipped_with_budget();
    for (_, text) in &mut apps {
        *text = text
            .replace("default_ttl: 20", "default_ttl: 2")
            .replace("ttl = 20", "ttl = 2");
    }
    apps
}

/// What the rollover watcher saw go wrong, with when.
#[derive(Default)]
struct Seen {
    queries: usize,
    failures: Vec<String>,
}

#[test]
fn a_zsk_rollover_by_pre_publication_never_breaks_validation() {
    if !(tools() && have("dnssec-settime")) {
        return;
    }
    // A KSK (the anchor) and a first ZSK made before the first start, in a
    // given directory, so the zone's data is signed by the ZSK alone and
    // the roll is what validation depends on. Short TTLs: Unbound's caches
    // expire within seconds, and every step waits them out.
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let kd = keys_dir.path().display().to_string();
    let bin = env!("CARGO_BIN_EXE_switchyard");
    for extra in [&["--ksk"][..], &[][..]] {
        run(Command::new(bin)
            .current_dir(root())
            .args(["dnssec", "keygen", ZONE, "--dir", &kd])
            .args(extra));
    }
    let before = file_tags(keys_dir.path());
    assert_eq!(before.len(), 2, "{before:?}");
    let s = Signed::start(
        &format!("{{ keys = \"{kd}\", dnskey_ttl = 2 }}"),
        vec![
            (
                "ttl = 20                        # default TTL".into(),
                "ttl = 2                         # default TTL".into(),
            ),
            ("minimum = 60 }".into(), "minimum = 2 }".into()),
        ],
        short_ttl_apps(),
    );
    let dns = s.server.dns;
    let dnskeys = until_server(
        dns,
        ZONE,
        RecordType::DNSKEY,
        Duration::from_secs(10),
        |m| dnskey_tags(m) == before,
    );
    let ksk: BTreeSet<u16> = dnskeys
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) if k.flags() == 257 => {
                Some(k.calculate_key_tag().expect("tag"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(ksk.len(), 1, "one KSK:\n{dnskeys}");
    let zsk1 = *before.difference(&ksk).next().expect("ZSK");
    let soa = until_server(dns, ZONE, RecordType::SOA, Duration::from_secs(5), |m| {
        !m.answers.is_empty()
    });
    assert_eq!(
        rrsig_tags(&soa, RecordType::SOA),
        BTreeSet::from([zsk1]),
        "the zone's data is signed by the ZSK only:\n{soa}"
    );
    // The longest TTL a validator caches of what the loop below asks (the
    // DNSKEY RRset, the SOA, the data, negative answers): every step waits
    // it out, plus margin. (The NS RRset keeps its one-hour floor: it is
    // not asked, and what a validator cached as secure stays so.)
    let max_ttl = [
        (ZONE, RecordType::DNSKEY),
        (ZONE, RecordType::SOA),
        ("static.switchyard.test.", RecordType::A),
        ("geo-map.switchyard.test.", RecordType::A),
        ("nope.switchyard.test.", RecordType::A),
    ]
    .iter()
    .filter_map(|(n, t)| ask(dns, n, *t, false))
    .flat_map(|m| m.answers.into_iter().chain(m.authorities).map(|r| r.ttl))
    .max()
    .expect("TTLs");
    assert!(
        max_ttl <= 10,
        "the apex TTLs should follow the zone's ttl and SOA minimum (2 s) for this test; the longest is {max_ttl} s"
    );
    let wait = u64::from(max_ttl) + 2;

    let anchor = Anchor::parse(&s.printed_anchor("unbound")).key_signing();
    assert_eq!(anchor.records.len(), 1, "{anchor:?}");
    let u = Arc::new(Unbound::start(
        ZONE,
        dns,
        &UnboundAnchor::File(anchor.zone_lines()),
    ));

    // Unbound asked over and over, its caches honoured (never flushed).
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = {
        let (u, stop, seen) = (u.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let questions = [
                (
                    "static.switchyard.test.",
                    RecordType::A,
                    ResponseCode::NoError,
                ),
                (
                    "geo-map.switchyard.test.",
                    RecordType::A,
                    ResponseCode::NoError,
                ),
                (ZONE, RecordType::SOA, ResponseCode::NoError),
                (
                    "nope.switchyard.test.",
                    RecordType::A,
                    ResponseCode::NXDomain,
                ),
                (
                    "static.switchyard.test.",
                    RecordType::MX,
                    ResponseCode::NoError,
                ),
                (ZONE, RecordType::DNSKEY, ResponseCode::NoError),
            ];
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for (name, qtype, rcode) in questions {
                    let r = u.query(name, qtype);
                    let mut seen = seen.lock().unwrap();
                    seen.queries += 1;
                    if !(r.metadata.authentic_data && r.metadata.response_code == rcode) {
                        seen.failures.push(format!(
                            "at {:.1} s: {name} {qtype}: {:?} AD={}",
                            start.elapsed().as_secs_f64(),
                            r.metadata.response_code,
                            r.metadata.authentic_data
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let settle = |secs: u64| std::thread::sleep(Duration::from_secs(secs));
    settle(wait);

    // (a) A new ZSK published now, active once every cached DNSKEY RRset
    // without it has expired; the old ZSK inactive at that moment and
    // deleted once every signature it made has expired.
    let t0 = now();
    let activate = t0 + wait + 1;
    let delete = activate + wait + 1;
    s.cli(&[
        "keygen",
        ZONE,
        "--dir",
        &kd,
        "--publish",
        "now",
        "--activate",
        &format!("now+{}s", activate - t0),
    ]);
    let with_new = file_tags(keys_dir.path());
    let zsk2 = *with_new
        .difference(&before)
        .next()
        .expect("the new ZSK's files");
    let (_, zsk1_file) = key_files(keys_dir.path())
        .into_iter()
        .find(|(t, _)| *t == zsk1)
        .expect("the old ZSK's files");
    run(Command::new("dnssec-settime")
        .args(["-I", &activate.to_string(), "-D", &delete.to_string()])
        .arg(zsk1_file.with_extension("")));
    until_server(
        dns,
        ZONE,
        RecordType::DNSKEY,
        Duration::from_secs(10),
        |m| dnskey_tags(m) == with_new,
    );
    let soa = ask(dns, ZONE, RecordType::SOA, false).expect("SOA");
    assert_eq!(
        rrsig_tags(&soa, RecordType::SOA),
        BTreeSet::from([zsk1]),
        "a published key does not sign before its Activate:\n{soa}"
    );

    // (b) Past Activate/Inactive: the new ZSK signs, the old one no more.
    while now() < activate {
        settle(1);
    }
    until_server(dns, ZONE, RecordType::SOA, Duration::from_secs(5), |m| {
        rrsig_tags(m, RecordType::SOA) == BTreeSet::from([zsk2])
    });

    // (c) Past Delete: the old ZSK leaves DNSKEY; then its files go.
    while now() < delete {
        settle(1);
    }
    let after: BTreeSet<u16> = ksk.iter().copied().chain([zsk2]).collect();
    until_server(dns, ZONE, RecordType::DNSKEY, Duration::from_secs(5), |m| {
        dnskey_tags(m) == after
    });
    remove_key(keys_dir.path(), zsk1);
    settle(wait);
    until_server(dns, ZONE, RecordType::DNSKEY, Duration::from_secs(5), |m| {
        dnskey_tags(m) == after
    });
    settle(wait);

    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    let seen = seen.lock().unwrap();
    assert!(
        seen.queries > 60,
        "only {} queries through Unbound",
        seen.queries
    );
    assert!(
        seen.failures.is_empty(),
        "validation broke during the rollover ({} of {} answers):\n{}\n--- unbound's validator log:\n{}",
        seen.failures.len(),
        seen.queries,
        seen.failures.join("\n"),
        u.val_log()
    );
}
