//! Query generator for bench/dns-peers.sh (no dependencies: built with `rustc -O`).
//!
//! Usage: gen_queries OUT_DIR [COUNT] [ZONE] [--networks FILE --distinct M --queries Q]
//!
//! Writes, for names q0..q{COUNT-1}.best-rtt.<ZONE> in a fixed shuffled order:
//!   OUT_DIR/queries.bin  dnsperf -B input (RFC 1035 4.2.2 framing: 2-byte length + message)
//!   OUT_DIR/queries.txt  the same queries as text: `NAME TYPE ECS` (ECS `-` when absent)
//!   OUT_DIR/queries-do.bin  the same as queries.bin with the DO bit set (the signed runs:
//!                        dnsperf sends -B messages as they are, so its -D cannot add it)
//!
//! Every query carries an EDNS0 OPT record (payload 1232, DO clear); 70% ask A,
//! 30% AAAA; half carry an EDNS Client Subnet option (RFC 7871) for one of the
//! networks of the shipped test GeoIP databases (geo/README.md), so the
//! servers' geo branch varies. The other half have no ECS: the client is the
//! loopback source, which has no geo data. The output is the same on every run.
//!
//! The realistic workload (`--networks`): Q queries instead of COUNT (query i asks name
//! q{i % COUNT}, so each name is asked Q / COUNT times), and the ECS subnets are M distinct
//! /24s drawn from FILE (one `a.b.c.0/24` a line: the `networks.txt` that
//! `make_geo_dbs --generate` writes beside its databases), taken in turn in a shuffled
//! order, so with Q / 2 ≤ M no subnet repeats.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;

/// ECS subnets from geo/README.md's shipped networks: (network, prefix, what).
const NETWORKS: &[(&str, u8, &str)] = &[
    ("192.0.2.0", 26, "NA US"),
    ("192.0.2.128", 25, "SA BR"),
    ("198.51.100.0", 25, "EU GB"),
    ("198.51.100.128", 26, "EU DE"),
    ("198.51.100.192", 26, "EU FR"),
    ("203.0.113.0", 26, "AS JP"),
    ("203.0.113.64", 26, "OC AU"),
    ("203.0.113.128", 26, "AF ZA"),
    ("203.0.113.192", 27, "AN AQ (no market)"),
    ("2001:db8::", 56, "EU IE"),
    ("2001:db8:1::", 56, "AS SG"),
    ("2001:db8:2::", 56, "NA CA"),
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn message(name: &str, qtype: u16, ecs: Option<(IpAddr, u8)>, dnssec_ok: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(96);
    // id (overwritten by dnsperf), flags 0 (a resolver's query: RD clear),
    // QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 1 (OPT)
    m.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    push_name(&mut m, name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes()); // IN
    // OPT: root owner, type 41, class = UDP payload, TTL = ext-rcode/version/flags
    m.push(0);
    m.extend_from_slice(&41u16.to_be_bytes());
    m.extend_from_slice(&1232u16.to_be_bytes());
    // extended rcode 0, version 0, flags: DO (RFC 3225) or nothing
    m.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    let mut rdata = Vec::new();
    if let Some((addr, prefix)) = ecs {
        let (family, bytes): (u16, Vec<u8>) = match addr {
            IpAddr::V4(a) => (1, a.octets().to_vec()),
            IpAddr::V6(a) => (2, a.octets().to_vec()),
        };
        let n = (prefix as usize + 7) / 8;
        let mut addr_bytes = bytes[..n].to_vec();
        if prefix % 8 != 0 {
            let last = n - 1;
            addr_bytes[last] &= 0xffu8 << (8 - prefix % 8);
        }
        rdata.extend_from_slice(&8u16.to_be_bytes()); // option code: ECS
        rdata.extend_from_slice(&((4 + n) as u16).to_be_bytes());
        rdata.extend_from_slice(&family.to_be_bytes());
        rdata.push(prefix);
        rdata.push(0); // scope prefix: 0 in queries
        rdata.extend_from_slice(&addr_bytes);
    }
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(&rdata);
    m
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: gen_queries OUT_DIR [COUNT] [ZONE]");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let count: usize = args.get(2).map(|s| s.parse().expect("COUNT")).unwrap_or(10_000);
    let zone = args.get(3).map(String::as_str).unwrap_or("switchyard.test").trim_end_matches('.').to_string();
    let names = count;
    let mut networks: Vec<(IpAddr, u8)> = NETWORKS
        .iter()
        .map(|&(a, p, _)| (a.parse().expect("network"), p))
        .collect();
    let mut count = count;
    let mut flags = args.iter().skip(4);
    let (mut file, mut distinct) = (None, None);
    while let Some(flag) = flags.next() {
        let value = flags.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--networks" => file = Some(value.clone()),
            "--distinct" => distinct = Some(value.parse::<usize>().expect("--distinct")),
            "--queries" => count = value.parse().expect("--queries"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    // The realistic workload's subnets come from their own generator, so the small
    // workload's shuffles (below) stay exactly as they were.
    if let Some(file) = file {
        let text = std::fs::read_to_string(&file).expect("--networks file");
        let mut all: Vec<(IpAddr, u8)> = text
            .lines()
            .map(|l| {
                let (a, p) = l.trim().split_once('/').expect("a.b.c.d/len");
                (a.parse().expect("address"), p.parse().expect("prefix"))
            })
            .collect();
        let m = distinct.unwrap_or(all.len()).min(all.len());
        let mut pick = Rng(0x4543_5321_6e65_7473);
        // Partial Fisher-Yates: the first m are a uniform sample, in random order.
        for i in 0..m {
            let j = i + pick.below(all.len() - i);
            all.swap(i, j);
        }
        all.truncate(m);
        networks = all;
    }

    // Exact proportions, then a fixed shuffle: 70% A / 30% AAAA, and (independently)
    // half with ECS, the ECS networks taken in turn.
    let mut rng = Rng(0x5157_4954_4348_5944);
    let mut rows: Vec<(usize, u16, Option<usize>)> = Vec::with_capacity(count);
    let mut with_ecs: Vec<bool> = (0..count).map(|i| i < count / 2).collect();
    for i in (1..count).rev() {
        let j = rng.below(i + 1);
        with_ecs.swap(i, j);
    }
    let mut next_net = 0;
    for i in 0..count {
        let qtype = if i * 10 < count * 7 { 1 } else { 28 };
        let ecs = if with_ecs[i] {
            let k = next_net % networks.len();
            next_net += 1;
            Some(k)
        } else {
            None
        };
        rows.push((i, qtype, ecs));
    }
    for i in (1..count).rev() {
        let j = rng.below(i + 1);
        rows.swap(i, j);
    }

    let mut bin = BufWriter::new(File::create(dir.join("queries.bin")).expect("queries.bin"));
    let mut bin_do = BufWriter::new(File::create(dir.join("queries-do.bin")).expect("queries-do.bin"));
    let mut txt = BufWriter::new(File::create(dir.join("queries.txt")).expect("queries.txt"));
    for &(i, qtype, ecs) in &rows {
        let name = format!("q{}.best-rtt.{zone}", i % names);
        let ecs_v = ecs.map(|k| networks[k]);
        for (out, dnssec_ok) in [(&mut bin, false), (&mut bin_do, true)] {
            let m = message(&name, qtype, ecs_v, dnssec_ok);
            out.write_all(&(m.len() as u16).to_be_bytes()).unwrap();
            out.write_all(&m).unwrap();
        }
        let t = if qtype == 1 { "A" } else { "AAAA" };
        match ecs {
            Some(k) => writeln!(txt, "{name} {t} {}/{}", networks[k].0, networks[k].1).unwrap(),
            None => writeln!(txt, "{name} {t} -").unwrap(),
        }
    }
    bin.flush().unwrap();
    bin_do.flush().unwrap();
    txt.flush().unwrap();
}
