//! Reload benchmark (run by `bench/reload.sh`): starts `switchyard serve`
//! with one app, streams UDP queries at it, rewrites the app 100 times and
//! reports the write → first-new-answer latency and the stream's worst
//! query latency during the reloads.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

fn app(v: u32) -> String {
    format!(
        "function onRequest(q, r) {{ r.addARecord('192.0.{}.{}'); }}",
        v / 250,
        v % 250 + 1
    )
}

fn ask(sock: &UdpSocket, server: SocketAddr, id: u16) -> Option<String> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("r.switchyard.test.").ok()?,
        RecordType::A,
    ));
    sock.send_to(&m.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let resp = Message::from_vec(&buf[..n]).ok()?;
        if resp.metadata.id == id {
            return resp.answers.first().and_then(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            });
        }
    }
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/switchyard".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let apps = dir.path().join("apps");
    std::fs::create_dir_all(&apps).expect("apps");
    std::fs::write(apps.join("r.js"), app(0)).expect("app");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--dns",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--apps",
        ])
        .arg(&apps)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    let mut dns = None;
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains("listening for DNS over UDP") {
            dns = line
                .split("addr=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next()?.parse::<SocketAddr>().ok());
        }
        if line.contains("switchyard ready") {
            break;
        }
    }
    let server = dns.expect("DNS address");
    // Keep reading the server's log: a closed pipe would fail its writes.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});

    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(Mutex::new((Duration::ZERO, 0u64, 0u64)));
    let stream = {
        let (stop, worst) = (stop.clone(), worst.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            let mut id = 0u16;
            while !stop.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let t = Instant::now();
                let ok = ask(&sock, server, id).is_some();
                let took = t.elapsed();
                let mut w = worst.lock().expect("lock");
                w.0 = w.0.max(took);
                w.1 += 1;
                if !ok {
                    w.2 += 1;
                }
            }
        })
    };

    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut latencies = Vec::new();
    let mut id = 30_000u16;
    for v in 1..=100u32 {
        let want = format!("192.0.{}.{}", v / 250, v % 250 + 1);
        let path = apps.join("r.js");
        let tmp = apps.join(".r.js.tmp");
        std::fs::write(&tmp, app(v)).expect("write");
        let start = Instant::now();
        std::fs::rename(&tmp, &path).expect("rename");
        loop {
            id = id.wrapping_add(1);
            if ask(&sock, server, id).as_deref() == Some(want.as_str()) {
                break;
            }
            if start.elapsed() > Duration::from_secs(5) {
                panic!("version {v} not served within 5 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies.push(start.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stream.join();
    let _ = child.kill();
    let _ = child.wait();

    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (worst, queries, lost) = *worst.lock().expect("lock");
    println!("reloads: 100 (atomic rename of the app file)");
    println!(
        "write -> first new answer: median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(latencies[49]),
        ms(latencies[89]),
        ms(latencies[99])
    );
    println!(
        "query stream during reloads: {queries} queries, {lost} unanswered, worst latency {:.2} ms",
        ms(worst)
    );
}
