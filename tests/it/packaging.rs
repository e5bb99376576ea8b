//! What the Debian package is made of and relies on, tested without
//! packaging (tests/e2e/deb.sh builds and installs the package itself):
//! `--log-format json` on the real server, supervisor and serving process
//! alike, and the man pages and completions `switchyard generate` writes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::common::dnsclient;
use crate::common::server::{follow_stderr, serve_command, stop};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

/// Parses one log line as the JSON the format promises: an object with a
/// timestamp, a level and `fields` holding the message.
fn parse(line: &str) -> Value {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
    assert!(v["timestamp"].is_string(), "no timestamp: {line}");
    assert!(
        ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap_or("")),
        "no level: {line}"
    );
    assert!(v["fields"]["message"].is_string(), "no message: {line}");
    v
}

#[test]
fn serve_logs_one_json_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = serve_command(
        &binary(),
        Path::new("examples/switchyard.toml"),
        "127.0.0.1:0",
        &dir.path().join("data"),
    );
    cmd.args(["--log-format", "json"]);
    let mut child = cmd.spawn().expect("start switchyard");
    let (log, rx) = follow_stderr(&mut child);

    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !events
        .iter()
        .any(|v: &Value| v["fields"]["message"] == "switchyard ready")
    {
        assert!(
            Instant::now() < deadline,
            "not ready: {:?}",
            log.lock().unwrap()
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            events.push(parse(&line));
        }
    }
    let message = |m: &str| {
        events
            .iter()
            .find(|v| v["fields"]["message"] == m)
            .unwrap_or_else(|| panic!("no {m:?} event: {events:?}"))
            .clone()
    };
    // The supervisor logged the generated token; the serving process (which
    // the supervisor started with the flag passed on) its listeners.
    let token = message(
        "generated the admin API token (server.api_token is not set); it is in this file, mode 0600; the CLI reads it with --data-dir",
    );
    assert_eq!(token["level"], "INFO");
    assert!(
        token["fields"]["path"]
            .as_str()
            .unwrap()
            .ends_with("api_token")
    );
    let udp = message("listening for DNS over UDP");
    let addr: SocketAddr = udp["fields"]["addr"].as_str().unwrap().parse().unwrap();

    // The fields are the live ones: the address answers.
    let sock = dnsclient::socket(Duration::from_secs(3));
    let reply = dnsclient::query(&sock, addr, "static.switchyard.test.", RecordType::A, 7)
        .expect("a DNS reply");
    assert_eq!(reply.answers, ["192.0.2.53"]);

    // SIGHUP to the supervisor reaches the serving process; its reload
    // event is JSON too.
    Command::new("kill")
        .args(["-s", "HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no reload event: {:?}", log.lock().unwrap()));
        if parse(&line)["fields"]["message"] == "configuration reloaded" {
            break;
        }
    }
    stop(&mut child);
    for line in log.lock().unwrap().iter() {
        parse(line);
    }
}

#[test]
fn log_format_rejects_an_unknown_format() {
    let out = Command::new(binary())
        .args(["--log-format", "xml", "geo", "192.0.2.1"])
        .output()
        .expect("run switchyard");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'xml'"), "{stderr}");
    assert!(stderr.contains("text, json"), "{stderr}");
}

#[test]
fn generate_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |what: &str| {
        let out = Command::new(binary())
            .args(["generate", what])
            .arg(dir.path().join(what))
            .output()
            .expect("run switchyard");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let read = |path: &str| std::fs::read_to_string(dir.path().join(path)).unwrap();

    let pages = run("man");
    assert!(
        pages.lines().any(|p| p.ends_with("/man/switchyard.1")),
        "{pages}"
    );
    let main = read("man/switchyard.1");
    for needle in [
        ".SH NAME",
        ".SH SYNOPSIS",
        "log\\-format",
        "switchyard\\-serve(1)",
    ] {
        assert!(main.contains(needle), "switchyard.1 has no {needle:?}");
    }
    // A page per visible subcommand, none for the hidden `generate`.
    let serve = read("man/switchyard-serve.1");
    assert!(
        serve.contains("\\-\\-dns"),
        "switchyard-serve.1 has no --dns"
    );
    assert!(!dir.path().join("man/switchyard-generate.1").exists());
    assert!(
        !main.contains("generate"),
        "the hidden subcommand is in the man page"
    );

    let files = run("completions");
    assert_eq!(files.lines().count(), 3, "{files}");
    assert!(read("completions/switchyard.bash").contains("complete -F _switchyard"));
    assert!(read("completions/_switchyard").starts_with("#compdef switchyard"));
    assert!(read("completions/switchyard.fish").contains("complete -c switchyard"));
}
