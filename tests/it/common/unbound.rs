//! Real DNSSEC validators for the signed-zone tests: an Unbound validating
//! resolver and BIND's `delv`, both pointed at an authoritative server on
//! loopback with the zone's own trust anchor (the zone is not delegated
//! from anywhere, so the anchor is the chain's only start).
//!
//! [`Unbound::start`] writes a config in a fresh directory (one loopback
//! port, a stub zone to the server, the anchor, `val-log-level: 2` into a
//! log file), runs `unbound -d` and kills it on drop; when the test failed,
//! the log (its validation failures) is printed. [`delv`] runs `delv` once
//! and says whether it printed "fully validated". [`Anchor`] reads trust
//! anchors in the formats tools print them (zone-file DNSKEY/DS lines,
//! `trust-anchor:` clauses, delv's `trust-anchors { ... }`) and writes the
//! ones each validator reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

/// Whether `tool` is on the PATH. Without it the validator tests cannot
/// run: on CI (`CI` set; `.ci/run` installs `unbound` and
/// `bind9-dnsutils`) that fails the test, elsewhere the test is skipped,
/// loudly.
pub fn have(tool: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| d.join(tool).is_file())
            || Path::new("/usr/sbin").join(tool).is_file()
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed: CI must validate with it (.ci/run installs it)"
        );
        eprintln!("\n*** SKIPPED: {tool} is not installed; nothing was validated ***\n");
    }
    found
}

/// The path of a tool that may live in /usr/sbin (not on a user's PATH).
pub fn tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

/// One trust anchor record: a DNSKEY or a DS of the zone's apex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRecord {
    /// The owner (the zone), with its trailing dot.
    pub owner: String,
    /// `DNSKEY` or `DS`.
    pub kind: String,
    /// The RDATA fields in presentation form: flags, protocol, algorithm
    /// and key (DNSKEY) or tag, algorithm, digest type and digest (DS).
    pub fields: Vec<String>,
}

/// A zone's trust anchors, whatever format they were printed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchor {
    /// Every DNSKEY or DS found.
    pub records: Vec<AnchorRecord>,
}

impl Anchor {
    /// Reads every DNSKEY and DS in `text`: zone-file lines (`dnssec-keygen`'s
    /// `.key` files, `switchyard dnssec dnskey`/`ds`), Unbound's
    /// `trust-anchor: "..."` clauses or delv's `trust-anchors { zone
    /// static-key ... ; };`. Comment lines (`;`, `#`, `//`) are skipped.
    pub fn parse(text: &str) -> Anchor {
        let mut records = Vec::new();
        let body: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !(l.starts_with(';') || l.starts_with('#') || l.starts_with("//")))
            .collect::<Vec<_>>()
            .join("\n");
        for statement in body.split(['\n', ';']) {
            let cleaned: String = statement
                .chars()
                .map(|c| if "\"{}()".contains(c) { ' ' } else { c })
                .collect();
            let tokens: Vec<&str> = cleaned.split_whitespace().collect();
            let Some(at) = tokens.iter().position(|t| {
                matches!(
                    t.to_ascii_lowercase().as_str(),
                    "dnskey" | "ds" | "static-key" | "initial-key" | "static-ds" | "initial-ds"
                )
            }) else {
                continue;
            };
            let Some(owner) = tokens[..at].iter().find(|t| t.ends_with('.')) else {
                continue;
            };
            let kind = match tokens[at].to_ascii_lowercase().as_str() {
                "dnskey" | "static-key" | "initial-key" => "DNSKEY",
                _ => "DS",
            };
            let mut fields: Vec<String> = tokens[at + 1..].iter().map(|s| s.to_string()).collect();
            // The key or digest may be split in blanks: join everything
            // after the three numeric fields.
            if fields.len() > 4 {
                let tail = fields.split_off(3).concat();
                fields.push(tail);
            }
            if fields.len() == 4 {
                records.push(AnchorRecord {
                    owner: owner.to_ascii_lowercase(),
                    kind: kind.into(),
                    fields,
                });
            }
        }
        Anchor { records }
    }

    /// The DNSKEYs with the SEP bit (flags 257): the keys an anchor names.
    pub fn key_signing(&self) -> Anchor {
        Anchor {
            records: self
                .records
                .iter()
                .filter(|r| r.kind == "DS" || r.fields[0] == "257")
                .cloned()
                .collect(),
        }
    }

    /// Zone-file lines, as Unbound's `trust-anchor-file` reads them.
    pub fn zone_lines(&self) -> String {
        self.records
            .iter()
            .map(|r| format!("{} IN {} {}\n", r.owner, r.kind, r.fields.join(" ")))
            .collect()
    }

    /// A delv `-a` file: `trust-anchors { zone static-key|static-ds ...; };`.
    pub fn delv_conf(&self) -> String {
        let mut s = String::from("trust-anchors {\n");
        for r in &self.records {
            let how = if r.kind == "DS" {
                "static-ds"
            } else {
                "static-key"
            };
            let f = &r.fields;
            s.push_str(&format!(
                "  {} {how} {} {} {} \"{}\";\n",
                r.owner, f[0], f[1], f[2], f[3]
            ));
        }
        s.push_str("};\n");
        s
    }
}

/// How Unbound is given its trust anchor.
#[derive(Debug, Clone)]
pub enum UnboundAnchor {
    /// Zone-file DNSKEY/DS lines: written to a file named by
    /// `trust-anchor-file:`.
    File(String),
    /// `server:` clauses (`trust-anchor: "..."` lines): included as they are.
    Clauses(String),
}

impl UnboundAnchor {
    /// What a tool printed for Unbound (`switchyard dnssec dnskey
    /// --anchor unbound`): clauses when it wrote `trust-anchor:` lines,
    /// else a trust anchor file.
    pub fn from_printed(text: &str) -> UnboundAnchor {
        if text.contains("trust-anchor") {
            UnboundAnchor::Clauses(text.to_string())
        } else {
            UnboundAnchor::File(text.to_string())
        }
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of asking.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// A running Unbound validating resolver.
pub struct Unbound {
    child: Child,
    /// Where clients send queries (UDP and TCP).
    pub addr: SocketAddr,
    /// Its config, log and anchor (removed on drop).
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Unbound {
    /// Starts Unbound resolving `zone` (with a trailing dot) from the
    /// authoritative server at `auth` only, validating from `anchor`, and
    /// waits until it answers.
    pub fn start(zone: &str, auth: SocketAddr, anchor: &UnboundAnchor) -> Unbound {
        let mut last = String::new();
        for _ in 0..5 {
            match Unbound::try_start(zone, auth, anchor) {
                Ok(u) => return u,
                Err(e) => last = e,
            }
        }
        panic!("unbound did not start: {last}");
    }

    fn try_start(zone: &str, auth: SocketAddr, anchor: &UnboundAnchor) -> Result<Unbound, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let port = free_port();
        let anchor_clause = match anchor {
            UnboundAnchor::File(text) => {
                std::fs::write(dir.path().join("anchor.key"), text).expect("write anchor");
                format!("  trust-anchor-file: \"{d}/anchor.key\"\n")
            }
            UnboundAnchor::Clauses(text) => {
                std::fs::write(dir.path().join("anchor.conf"), text).expect("write anchor");
                format!("  include: \"{d}/anchor.conf\"\n")
            }
        };
        let parent = zone.split_once('.').map_or(".", |(_, p)| p);
        let parent = if parent.is_empty() { "." } else { parent };
        // `test.` (and other RFC 6761 names) are local zones by default;
        // `nodefault` lets the stub zone below them resolve.
        let config = format!(
            "server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  chroot: \"\"
  username: \"\"
  directory: \"{d}\"
  pidfile: \"{d}/unbound.pid\"
  logfile: \"{d}/unbound.log\"
  use-syslog: no
  verbosity: 1
  val-log-level: 2
  log-servfail: yes
  module-config: \"validator iterator\"
  num-threads: 1
  so-reuseport: no
  trust-anchor-signaling: no
  root-key-sentinel: no
  local-zone: \"{parent}\" nodefault
  local-zone: \"{zone}\" nodefault
{anchor_clause}
remote-control:
  control-enable: no

stub-zone:
  name: \"{zone}\"
  stub-addr: {}@{}
",
            auth.ip(),
            auth.port()
        );
        let conf = dir.path().join("unbound.conf");
        std::fs::write(&conf, config).expect("write unbound.conf");
        let check = Command::new(tool("unbound-checkconf"))
            .arg(&conf)
            .output()
            .expect("run unbound-checkconf");
        assert!(
            check.status.success(),
            "unbound-checkconf: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.path().join("unbound.log");
        let child = Command::new(tool("unbound"))
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unbound");
        let mut u = Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
            log,
        };
        // Ready: it answers a name of its own (localhost is a default
        // local zone), so no query reaches the server under test.
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = u.child.try_wait() {
                return Err(format!("unbound exited ({status}): {}", u.log()));
            }
            if u.try_query("localhost.", RecordType::A).is_some() {
                return Ok(u);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("unbound did not answer in 15 s: {}", u.log()))
    }

    /// Unbound's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The validator's lines of the log (failures and their reasons).
    pub fn val_log(&self) -> String {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("validation failure")
                    || l.contains("trust anchor")
                    || l.contains("bogus")
                    || l.contains("SERVFAIL")
                    || l.contains("error")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Asks `name` `qtype` as a validating stub does (RD, AD, and EDNS
    /// with DO), over UDP and again over TCP if truncated. Panics if no
    /// answer comes in 10 s.
    pub fn query(&self, name: &str, qtype: RecordType) -> Message {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(m) = self.try_query(name, qtype) {
                return m;
            }
        }
        panic!(
            "unbound: no answer to {name} {qtype} in 10 s; log:\n{}",
            self.log()
        );
    }

    fn try_query(&self, name: &str, qtype: RecordType) -> Option<Message> {
        ask(self.addr, name, qtype, true)
    }

    /// Asks and asserts the answer validated: AD set and rcode `rcode`.
    /// Returns the answer for further checks.
    pub fn expect_secure(&self, name: &str, qtype: RecordType, rcode: ResponseCode) -> Message {
        let r = self.query(name, qtype);
        assert!(
            r.metadata.authentic_data && r.metadata.response_code == rcode,
            "unbound: {name} {qtype}: want {rcode:?} with AD, got {:?} AD={}:\n{r}\n--- unbound's validator log:\n{}",
            r.metadata.response_code,
            r.metadata.authentic_data,
            self.val_log()
        );
        r
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "unbound's log (last {} of {} lines):",
                lines.len().min(80),
                lines.len()
            );
            for l in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("  {l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `delv` said about one name.
#[derive(Debug)]
pub struct Delv {
    /// It printed "; fully validated" (an answer) or "; negative
    /// response, fully validated" (NXDOMAIN, NODATA).
    pub validated: bool,
    /// Standard output and standard error, for messages.
    pub output: String,
}

/// Runs `delv @ADDR -p PORT -a ANCHOR_FILE +root=ZONE NAME TYPE`: delv
/// asks the authoritative server itself and validates the chain from
/// `anchor_conf` (a delv `trust-anchors { ... };` file's text) with
/// `zone` as its root. Killed after 20 s.
pub fn delv(auth: SocketAddr, zone: &str, anchor_conf: &str, name: &str, qtype: &str) -> Delv {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("anchor.conf");
    std::fs::write(&file, anchor_conf).expect("write delv anchor");
    let mut child = Command::new(tool("delv"))
        .arg(format!("@{}", auth.ip()))
        .args(["-p", &auth.port().to_string(), "-a"])
        .arg(&file)
        .arg(format!("+root={zone}"))
        .args([name, qtype])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run delv");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("delv output");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Delv {
        validated: output
            .lines()
            .any(|l| l == "; fully validated" || l == "; negative response, fully validated"),
        output,
    }
}

/// One query with EDNS (1232 bytes) and DO, as validators send them, and
/// AD set; RD as asked (a resolver wants it, an authoritative server
/// ignores it). UDP, then TCP when truncated; `None` when nothing (or
/// nothing decodable) came back in 3 s.
pub fn ask(addr: SocketAddr, name: &str, qtype: RecordType, rd: bool) -> Option<Message> {
    let mut m = Message::query();
    m.metadata.recursion_desired = rd;
    m.metadata.authentic_data = true;
    m.add_query(Query::query(Name::from_ascii(name).ok()?, qtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_dnssec_ok(true);
    m.set_edns(e);
    let bytes = m.to_vec().ok()?;
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.connect(addr).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    sock.send(&bytes).ok()?;
    let mut buf = vec![0u8; 65_535];
    let reply = loop {
        let n = sock.recv(&mut buf).ok()?;
        if n >= 2 && buf[..2] == bytes[..2] {
            break Message::from_vec(&buf[..n]).ok()?;
        }
    };
    if !reply.metadata.truncation {
        return Some(reply);
    }
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Message::from_vec(&buf).ok()
}
