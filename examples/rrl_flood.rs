//! A simulated reflection flood for `bench/rrl.sh`: many loopback sources
//! (127.0.S.1 for S = 1..=sources, each standing in for a spoofed victim
//! network) send the same query to a DNS server at a fixed rate each, and
//! count what the server sent back to them.
//!
//! Usage: rrl_flood SERVER SOURCES SECONDS QPS_PER_SOURCE QNAME QTYPE
//!
//! Prints one line per second and a total: queries and bytes sent, replies
//! (full, truncated "slips") and bytes received, and the amplification
//! (bytes received ÷ bytes sent) overall and after the first second, when
//! rate limiting has engaged.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// What one source saw in one second.
#[derive(Debug, Default, Clone, Copy)]
struct Second {
    queries: u64,
    bytes_out: u64,
    full: u64,
    slipped: u64,
    bytes_in: u64,
}

impl Second {
    fn add(&mut self, o: &Second) {
        self.queries += o.queries;
        self.bytes_out += o.bytes_out;
        self.full += o.full;
        self.slipped += o.slipped;
        self.bytes_in += o.bytes_in;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: rrl_flood SERVER SOURCES SECONDS QPS_PER_SOURCE QNAME QTYPE");
        std::process::exit(2);
    }
    let server: SocketAddr = args[1].parse().expect("SERVER is IP:port");
    let sources: u32 = args[2].parse().expect("SOURCES");
    let seconds: u32 = args[3].parse().expect("SECONDS");
    let qps: u32 = args[4].parse().expect("QPS_PER_SOURCE");
    let qname = Name::from_ascii(&args[5]).expect("QNAME");
    let qtype: RecordType = args[6].parse().expect("QTYPE");
    assert!((1..=250).contains(&sources), "SOURCES is 1 to 250");

    let threads: Vec<_> = (1..=sources)
        .map(|s| {
            let qname = qname.clone();
            std::thread::spawn(move || source(s, server, seconds, qps, qname, qtype))
        })
        .collect();
    let mut per_second = vec![Second::default(); seconds as usize + 1];
    for t in threads {
        for (i, s) in t.join().expect("source thread").iter().enumerate() {
            per_second[i].add(s);
        }
    }
    let (mut total, mut engaged) = (Second::default(), Second::default());
    println!("second  queries  bytes_out  full  slipped  dropped  bytes_in  amplification");
    for (i, s) in per_second.iter().enumerate() {
        total.add(s);
        if i > 0 {
            engaged.add(s);
        }
        line(&format!("{i}"), s);
    }
    line("total", &total);
    line("after 1s", &engaged);
}

fn line(what: &str, s: &Second) {
    println!(
        "{what:>8}  {:>7}  {:>9}  {:>4}  {:>7}  {:>7}  {:>8}  {:.3}",
        s.queries,
        s.bytes_out,
        s.full,
        s.slipped,
        s.queries.saturating_sub(s.full + s.slipped),
        s.bytes_in,
        if s.bytes_out == 0 {
            0.0
        } else {
            s.bytes_in as f64 / s.bytes_out as f64
        }
    );
}

/// One source: sends `qps` queries a second for `seconds` from 127.0.S.1
/// and reads replies as they come; counts them by the second they were
/// sent in (the reply's ID says which).
fn source(
    s: u32,
    server: SocketAddr,
    seconds: u32,
    qps: u32,
    qname: Name,
    qtype: RecordType,
) -> Vec<Second> {
    let sock = UdpSocket::bind(format!("127.0.{s}.1:0")).expect("bind a loopback source");
    sock.connect(server).expect("connect");
    sock.set_nonblocking(true).expect("nonblocking");
    let mut out = vec![Second::default(); seconds as usize + 1];
    let total = u64::from(seconds) * u64::from(qps);
    let pace = Duration::from_secs(1) / qps;
    let started = Instant::now();
    let mut buf = [0u8; 65_535];
    let mut sent_in = vec![0u8; total as usize];
    let mut read = |out: &mut Vec<Second>, sent_in: &[u8]| {
        while let Ok(n) = sock.recv(&mut buf) {
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let id = usize::from(m.metadata.id);
            let Some(&sec) = sent_in.get(id) else {
                continue;
            };
            let o = &mut out[usize::from(sec)];
            o.bytes_in += n as u64;
            if m.metadata.truncation {
                o.slipped += 1;
            } else {
                o.full += 1;
            }
        }
    };
    for i in 0..total.min(65_535) {
        let mut m = Message::query();
        m.metadata.id = i as u16;
        m.add_query(Query::query(qname.clone(), qtype));
        // As an amplification attack would: EDNS with a large payload.
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
        let bytes = m.to_vec().expect("encode");
        let sec = (started.elapsed().as_secs() as usize).min(seconds as usize);
        sent_in[i as usize] = sec as u8;
        out[sec].queries += 1;
        out[sec].bytes_out += bytes.len() as u64;
        let _ = sock.send(&bytes);
        read(&mut out, &sent_in);
        let next = started + pace * (i as u32 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let quiet = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet {
        std::thread::sleep(Duration::from_millis(20));
        read(&mut out, &sent_in);
    }
    out
}
