//! The `switchyard` binary's one-shot commands: `decide` for every example
//! app and branch, `check`, `geo`, and their errors; and `serve` refusing to
//! start on a configuration it cannot serve; the admin token `serve`
//! generates and the CLI finds.

use crate::common;
use common::http::Request;

use std::io::Read;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "error")
        .output()
        .expect("runs")
}

fn decide(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["decide"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Checks provider, reason, ttl and the answer values of one decision.
fn expect(args: &[&str], provider: &str, reason: &str, answers: &[&str]) -> serde_json::Value {
    let v = decide(args);
    assert_eq!(v["provider"], provider, "{args:?}: {v}");
    assert_eq!(v["reason"], reason, "{args:?}: {v}");
    assert_eq!(v["ttl"], 20, "{args:?}: {v}");
    let got: Vec<String> = v["answers"]
        .as_array()
        .expect("answers")
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["type"].as_str().unwrap(),
                a["value"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got, answers, "{args:?}: {v}");
    v
}

const P: &str = "examples/data/probes.json";

#[test]
fn best_rtt_branches() {
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--country",
            "DE",
            "--probe",
            P,
        ],
        "cdn_a",
        "A",
        &["CNAME cdn-a.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--country",
            "DE",
            "--probe",
            "examples/data/probes-cdn-a-down.json",
        ],
        "cdn_b",
        "A",
        &["CNAME cdn-b.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "SA",
            "--country",
            "BR",
            "--probe",
            "examples/data/probes-cdn-c-up.json",
        ],
        "cdn_c",
        "B",
        &["CNAME cdn-c.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "AS",
            "--country",
            "JP",
            "--probe",
            P,
        ],
        "cdn_b",
        "A",
        &["CNAME cdn-b.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--probe",
            "examples/data/probes-all-down.json",
        ],
        "origin",
        "C",
        &["CNAME origin.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--probe",
            "examples/data/probes-no-rtt.json",
        ],
        "cdn_b",
        "D",
        &["CNAME cdn-b.example.net"],
    );
    expect(
        &[
            "--app",
            "best-rtt",
            "--market",
            "EU",
            "--probe",
            "examples/data/no-probes.json",
        ],
        "origin",
        "E",
        &["CNAME origin.example.net"],
    );
    // Without --probe, the config's static probes, as the server uses them.
    expect(
        &["--app", "best-rtt", "--market", "EU"],
        "cdn_a",
        "A",
        &["CNAME cdn-a.example.net"],
    );
}

#[test]
fn geo_map_branches() {
    expect(
        &[
            "--app",
            "geo-map",
            "--asn",
            "64500",
            "--market",
            "NA",
            "--country",
            "US",
        ],
        "cdn_b",
        "A",
        &["A 198.51.100.20", "A 198.51.100.21"],
    );
    expect(
        &[
            "--app",
            "geo-map",
            "--market",
            "AS",
            "--country",
            "JP",
            "--qtype",
            "AAAA",
        ],
        "cdn_c",
        "B",
        &["AAAA 2001:db8::c:30"],
    );
    expect(
        &["--app", "geo-map", "--market", "EU", "--country", "IT"],
        "cdn_b",
        "C",
        &["A 198.51.100.20", "A 198.51.100.21"],
    );
    expect(
        &["--app", "geo-map", "--market", "SA", "--country", "BR"],
        "cdn_a",
        "D",
        &["A 192.0.2.10", "A 192.0.2.11"],
    );
}

#[test]
fn fusion_budget_branches() {
    let base = [
        "--app",
        "fusion-budget",
        "--market",
        "EU",
        "--country",
        "DE",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    expect(
        &with(&[
            "--probe",
            P,
            "--fusion",
            "examples/data/fusion.json",
            "--sonar",
            "examples/data/sonar.json",
        ]),
        "cdn_a",
        "A",
        &["CNAME cdn-a.example.net"],
    );
    expect(
        &with(&[
            "--probe",
            P,
            "--fusion",
            "examples/data/fusion.json",
            "--sonar",
            "examples/data/sonar-all-up.json",
        ]),
        "cdn_c",
        "A",
        &["CNAME cdn-c.example.net"],
    );
    expect(
        &with(&[
            "--probe",
            P,
            "--fusion",
            "examples/data/fusion-cdn-a-over.json",
            "--sonar",
            "examples/data/sonar.json",
        ]),
        "origin",
        "C",
        &["CNAME origin.example.net"],
    );
    expect(
        &with(&[
            "--probe",
            "examples/data/probes-no-rtt.json",
            "--fusion",
            "examples/data/fusion.json",
            "--sonar",
            "examples/data/sonar.json",
        ]),
        "cdn_a",
        "B",
        &["CNAME cdn-a.example.net"],
    );
}

#[test]
fn http_hosts_branches() {
    let v = expect(
        &[
            "--app",
            "http-hosts",
            "--market",
            "EU",
            "--country",
            "GB",
            "--probe",
            P,
        ],
        "cdn_a",
        "A",
        &["CNAME cdn-a.example.net"],
    );
    assert_eq!(v["status"], 200);
    assert_eq!(
        v["headers"],
        serde_json::json!([["X-Switchyard-App", "http-hosts"]])
    );
    assert_eq!(v["providers"][0]["provider"], "cdn_a");
    assert_eq!(v["providers"][0]["custom"]["http_rtt"], 38);
    assert_eq!(v["providers"][1]["provider"], "cdn_b");
    let v = expect(
        &[
            "--app",
            "http-hosts",
            "--market",
            "EU",
            "--country",
            "GB",
            "--probe",
            P,
            "--query",
            "fail=1",
        ],
        "denied",
        "C",
        &[],
    );
    assert_eq!(v["status"], 403);
    assert_eq!(v["providers"][0]["custom"]["blocked_by"], "query");
    let v = expect(
        &[
            "--app",
            "http-hosts",
            "--market",
            "EU",
            "--probe",
            P,
            "--header",
            "X-Block: yes",
        ],
        "denied",
        "C",
        &[],
    );
    assert_eq!(v["providers"][0]["custom"]["blocked_by"], "header");
    expect(
        &[
            "--app",
            "http-hosts",
            "--market",
            "EU",
            "--probe",
            "examples/data/probes-all-down.json",
        ],
        "origin",
        "B",
        &["CNAME origin.example.net"],
    );
}

#[test]
fn decide_uses_geo_from_ip_and_ecs() {
    let v = decide(&["--app", "geo-map", "--ip", "203.0.113.10"]);
    assert_eq!(v["request"]["ip_address"], "203.0.113.10");
    assert_eq!(
        v["request"]["client"]["market"],
        v["request"]["resolver"]["market"]
    );
    let v = decide(&[
        "--app",
        "geo-map",
        "--ip",
        "192.0.2.1",
        "--ecs",
        "198.51.100.0/24",
    ]);
    assert_eq!(v["request"]["ip_address"], "198.51.100.0");
    assert_eq!(v["request"]["resolver_ip_address"], "192.0.2.1");
}

#[test]
fn decide_serves_the_fallback_when_the_app_fails() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("broken.js");
    std::fs::write(
        &app,
        "function onRequest(q, r) {\n  throw new Error('nope');\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "fallback = [\"192.0.2.250\"]\nttl = 7\n",
    )
    .unwrap();
    let v = decide(&["--app", app.to_str().unwrap()]);
    assert_eq!(v["reason"], "fallback");
    assert_eq!(v["ttl"], 7);
    assert_eq!(v["answers"][0]["value"], "192.0.2.250");
    assert!(v["error"].as_str().unwrap().contains("broken.js:2"), "{v}");

    std::fs::remove_file(dir.path().join("broken.toml")).unwrap();
    let out = run(&["decide", "--app", app.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no fallback") && err.contains("nope"), "{err}");
}

#[test]
fn decide_errors_are_one_line_and_nonzero() {
    for (args, needle) in [
        (vec!["decide", "--app", "no-such-app"], "no such app file"),
        (
            vec!["decide", "--app", "best-rtt", "--probe", "Cargo.toml"],
            "invalid JSON",
        ),
        (
            vec!["decide", "--app", "best-rtt", "--qtype", "MX"],
            "--qtype",
        ),
        (
            vec![
                "decide",
                "--app",
                "best-rtt",
                "--config",
                "/nonexistent.toml",
            ],
            "cannot read",
        ),
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn check_reports_ok_warnings_and_errors() {
    let out = run(&[
        "check",
        "apps/best-rtt.js",
        "apps/geo-map.js",
        "apps/fusion-budget.js",
        "apps/http-hosts.js",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": ok").count(), 4, "{text}");
    assert!(
        text.contains("http-hosts.js: ok (providers: cdn_a, cdn_b, cdn_c, origin; cors: *"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.js");
    std::fs::write(&bad, "function onRequest(q, r) {\n  r.respond('a',\n}\n").unwrap();
    let warn = dir.path().join("warn.js");
    std::fs::write(&warn, "function onRequest(request, r) {\n  var t = request.query_type();\n  r.respondEmpty();\n}\n").unwrap();
    let out = run(&["check", bad.to_str().unwrap(), warn.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.js") && err.contains("line 3"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warn.js:2: warning: request.query_type is a string property"),
        "{text}"
    );
}

/// Runs `switchyard geo` with `args` and parses its JSON.
fn geo_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["geo"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn geo_prints_the_documented_fields_as_json() {
    // Rows of the table in geo/README.md; with no --config the built-in defaults use the
    // shipped databases, without the example override table (issue #20.5).
    let v = geo_json(&["192.0.2.130"]);
    assert_eq!(
        v,
        serde_json::json!({
            "asn": 64498, "market": "SA", "country": "BR", "region": "BR-R-SP",
            "state": "BR-S-SP", "latitude": -23.5505, "longitude": -46.6333, "prefix_len": 25,
        })
    );
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "asn",
            "market",
            "country",
            "region",
            "state",
            "latitude",
            "longitude",
            "prefix_len"
        ]
    );
    // IPv6: the database's own state code for Dublin.
    assert_eq!(
        geo_json(&["2001:db8::1"]),
        serde_json::json!({
            "asn": 65536, "market": "EU", "country": "IE", "region": "IE-R-L",
            "state": "IE-S-D", "latitude": 53.3498, "longitude": -6.2603, "prefix_len": 48,
        })
    );
    // The example override table only when a config turns it on.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        &config,
        format!(
            "[geo]\ncity = \"{root}/geo/Switchyard-City-Test.mmdb\"\nasn = \"{root}/geo/Switchyard-ASN-Test.mmdb\"\noverrides = \"{root}/geo/overrides.toml\"\n"
        ),
    )
    .unwrap();
    let v = geo_json(&["2001:db8::1", "--config", config.to_str().unwrap()]);
    assert_eq!(v["state"], "IE-S-DUBLIN", "{v}");
    let v = geo_json(&["198.51.100.1", "--config", config.to_str().unwrap()]);
    assert_eq!(v["region"], "GB-R-ENGLAND", "{v}");
    assert_eq!(geo_json(&["198.51.100.1"])["region"], "GB-R-ENG");
    // IPv4-mapped IPv6 is looked up as IPv4, with an IPv4 prefix.
    let v = geo_json(&["::ffff:203.0.113.70"]);
    assert_eq!((&v["market"], &v["country"]), (&"OC".into(), &"AU".into()));
    assert_eq!(
        (&v["region"], &v["asn"]),
        (&"AU-R-NSW".into(), &64501.into())
    );
    assert_eq!(v["prefix_len"], 26);
    // Private: empty fields, no location, never an error.
    assert_eq!(
        geo_json(&["10.0.0.1"]),
        serde_json::json!({
            "asn": 0, "market": "", "country": "", "region": "", "state": "",
            "latitude": null, "longitude": null, "prefix_len": 1,
        })
    );
}

#[test]
fn geo_errors_are_one_line() {
    for bad in ["192.0.2.300", "not-an-ip", "2001:db8::g"] {
        let out = run(&["geo", bad]);
        assert!(!out.status.success(), "{bad}");
        assert!(out.stdout.is_empty(), "{bad}: no JSON on failure");
        let err = String::from_utf8_lossy(&out.stderr);
        // clap's own error line, then only its "try --help" hint.
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{bad}: {err}");
        assert!(
            errors[0].contains(bad) && errors[0].contains("invalid IP address"),
            "{bad}: {err}"
        );
    }
    let out = run(&["geo", "192.0.2.1", "--geo-city", "/nonexistent/City.mmdb"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent/City.mmdb") && err.contains("cannot open"),
        "{err}"
    );
}

/// Runs `switchyard serve` on free loopback ports with a scratch data directory (unless
/// `args` names one) and waits at most `limit` for it to exit. Returns the exit status,
/// stderr and the time it took; a server still running at `limit` is killed and fails the
/// test.
fn serve_until_exit(args: &[&str], limit: Duration) -> (ExitStatus, String, Duration) {
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "serve",
            "--dns",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !args.contains(&"--data-dir") {
        cmd.arg("--data-dir").arg(scratch.path().join("data"));
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start switchyard");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let took = start.elapsed();
            return (status, reader.join().unwrap(), took);
        }
        if start.elapsed() > limit {
            // SIGTERM first, so the supervisor stops its serving process too.
            let _ = Command::new("kill")
                .args(["-s", "TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(2));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve {args:?} still running after {limit:?}: {}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks that `serve` failed at once with one line on stderr naming `file`.
fn assert_refused(args: &[&str], file: &str, reason: &str) {
    let (status, err, took) = serve_until_exit(args, Duration::from_secs(5));
    assert!(!status.success(), "{args:?}: {status}");
    assert!(took < Duration::from_secs(3), "{args:?} took {took:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.starts_with("switchyard: ") && err.contains(file) && err.contains(reason),
        "{args:?}: {err}"
    );
}

#[test]
fn serve_refuses_a_missing_geo_database_at_once() {
    assert_refused(
        &["--geo-city", "/nonexistent.mmdb"],
        "/nonexistent.mmdb",
        "cannot open",
    );
    assert_refused(
        &["--geo-asn", "/nonexistent/ASN.mmdb"],
        "/nonexistent/ASN.mmdb",
        "cannot open",
    );
}

#[test]
fn serve_refuses_a_corrupt_geo_database_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("City.mmdb");
    std::fs::write(&garbage, b"not a MaxMind database at all\n".repeat(200)).unwrap();
    let path = garbage.to_str().unwrap();
    assert_refused(&["--geo-city", path], path, "not a MaxMind DB");
}

/// Issue 29: a database whose metadata is intact but whose search tree is
/// zeroed (every record points at the root: every lookup empty) used to
/// start and serve empty fields.
#[test]
fn serve_refuses_a_geo_database_with_a_corrupt_search_tree_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("City.mmdb");
    let mut bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("geo/Switchyard-City-Test.mmdb"),
    )
    .unwrap();
    let (nodes, record_size) = {
        let r = maxminddb::Reader::from_source(bytes.clone()).unwrap();
        (
            r.metadata().node_count as usize,
            usize::from(r.metadata().record_size),
        )
    };
    bytes[..nodes * record_size * 2 / 8].fill(0);
    std::fs::write(&city, &bytes).unwrap();
    let path = city.to_str().unwrap();
    assert_refused(&["--geo-city", path], path, "corrupt");
}

#[test]
fn serve_gives_up_when_the_serving_process_cannot_start() {
    // Passes the checks `serve` makes itself, but the serving process cannot create its
    // crash-recovery slots file: it must be retried a few times, not forever.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("inflight.slots")).unwrap();
    let (status, err, took) = serve_until_exit(
        &["--data-dir", data.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(!status.success(), "{status}: {err}");
    assert!(err.contains("inflight.slots"), "{err}");
    assert!(err.contains("giving up"), "{err}");
    assert_eq!(
        err.matches("the serving process cannot start").count(),
        3,
        "{err}"
    );
    eprintln!("gave up after {took:?}");
}

/// Issue #20: `decide` gives an app only the providers it declared. Over
/// the example probes (avail: cdn_a 99.5, cdn_b 98.2, cdn_c 72, origin
/// 100), an app that takes the most available provider of whatever
/// getProbe returns picks among its own.
#[test]
fn decide_shows_an_app_only_its_own_providers() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("mine.js");
    std::fs::write(
        &app,
        "var cnames = { cdn_b: 'b.example.net', cdn_c: 'c.example.net' };
function init(config) { 'use strict'; Object.keys(cnames).forEach(function (a) { config.requireProvider(a); }); }
function onRequest(request, response) {
  'use strict';
  var avail = request.getProbe('avail'), best, most = -1;
  Object.keys(avail).forEach(function (a) { if (avail[a].avail > most) { most = avail[a].avail; best = a; } });
  response.respond(best, cnames[best]);
  response.setReasonCode(Object.keys(avail).join('+'));
}",
    )
    .unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let v = decide(&[
        "--app",
        app.to_str().unwrap(),
        "--probe",
        &format!("{root}/examples/data/probes.json"),
    ]);
    assert_eq!(v["provider"], "cdn_b", "{v}");
    assert_eq!(v["reason"], "cdn_b+cdn_c", "{v}");
}

/// A request on the operations listener with a bearer token: the status.
fn admin_status(addr: std::net::SocketAddr, method: &str, path: &str, token: &str) -> u16 {
    Request::new(addr, method, path)
        .token(Some(token))
        .timeout(Duration::from_secs(10))
        .send()
        .status
}

/// Issue #20.5: with no `api_token` configured, `serve` generates one into
/// `data_dir/api_token` (64 hex digits, mode 0600), logs where it is and
/// never the token, and reads it back after a restart; the CLI finds it
/// with `--data-dir` when no token is given.
#[test]
fn serve_generates_the_admin_token_and_the_cli_finds_it() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let opts = || common::Options {
        config_edits: vec![(common::TEST_TOKEN_LINE.into(), String::new())],
        data_dir: Some(data.clone()),
        ..Default::default()
    };
    let s = common::Server::start_with(opts());
    let file = data.join("api_token");
    let token = std::fs::read_to_string(&file)
        .expect("token file")
        .trim()
        .to_string();
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token:?}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(s.wait_log("generated the admin API token", Duration::from_secs(5)));
    assert!(s.logged(&file.display().to_string()), "the path is logged");
    assert!(
        !s.log.lock().unwrap().iter().any(|l| l.contains(&token)),
        "the token itself was logged"
    );
    let admin = s.admin.expect("admin");
    assert_eq!(admin_status(admin, "POST", "/api/reload", &token), 200);
    assert_eq!(admin_status(admin, "POST", "/api/reload", "change-me"), 401);

    // The CLI: no --token and no SWITCHYARD_TOKEN; --data-dir finds it.
    let cli = |extra: &[&str]| {
        let mut args = vec![
            "providers".to_string(),
            "list".into(),
            "--admin-url".into(),
            format!("http://{admin}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            .current_dir(scratch.path())
            .env_remove("SWITCHYARD_TOKEN")
            .env_remove("SWITCHYARD_ADMIN_URL")
            .output()
            .expect("runs")
    };
    let out = cli(&["--data-dir", data.to_str().unwrap()]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("cdn_a"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In the data directory's parent, the built-in defaults' ./data.
    let out = cli(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong token says what to do.
    let out = cli(&["--token", "wrong-token"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("the token was refused (401")
            && err.contains("set --token or SWITCHYARD_TOKEN"),
        "{err}"
    );
    drop(s);

    // A restart reads the same token back.
    let s = common::Server::start_with(opts());
    assert!(s.wait_log(
        "admin API token read from this file",
        Duration::from_secs(5)
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert_eq!(
        admin_status(s.admin.unwrap(), "POST", "/api/reload", &token),
        200
    );
}

/// Runs `serve` with the shipped config plus `server_lines` in `[server]`
/// and `--admin admin`, until it exits or logs `until`; returns its exit
/// status (`None`: still running, then stopped) and its log.
fn serve_until(server_lines: &str, admin: &str, until: &str) -> (Option<ExitStatus>, Vec<String>) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let text = std::fs::read_to_string(format!("{root}/examples/switchyard.toml"))
        .unwrap()
        .replacen("admin_reads_need_token = false", "", 1)
        .replacen("[server]\n", &format!("[server]\n{server_lines}\n"), 1);
    std::fs::write(&config, text).unwrap();
    let mut child = common::server::serve_command(
        std::path::Path::new(env!("CARGO_BIN_EXE_switchyard")),
        &config,
        admin,
        &dir.path().join("data"),
    )
    .spawn()
    .expect("start switchyard");
    let (_, rx) = common::server::follow_stderr(&mut child);
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let done = line.contains(until);
                log.push(line);
                if done {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    log.extend(rx.try_iter());
                    return (Some(status), log);
                }
            }
            // Its stderr closed: it is exiting.
            Err(_) => {
                let status = child.wait().expect("wait");
                log.extend(rx.try_iter());
                return (Some(status), log);
            }
        }
    }
    if let Ok(Some(status)) = child.try_wait() {
        log.extend(rx.try_iter());
        return (Some(status), log);
    }
    let _ = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    (None, log)
}

/// Issue #20.5: `change-me`, and any token shorter than 16 characters, is
/// refused at start when the admin listener is not loopback, with one
/// line; on loopback it is allowed (the tests' own config). Issue #29.5: an
/// admin listener off loopback whose reads need no token gets a warning.
#[test]
fn short_admin_tokens_are_refused_off_loopback() {
    for token in ["change-me", "fifteen-chars-x"] {
        let (status, log) = serve_until(
            &format!("api_token = \"{token}\""),
            "0.0.0.0:0",
            "switchyard ready",
        );
        assert!(
            status.is_some_and(|s| !s.success()),
            "{token}: should not start: {log:?}"
        );
        let errors: Vec<&String> = log.iter().filter(|l| l.contains("api_token")).collect();
        assert_eq!(errors.len(), 1, "{log:?}");
        assert!(
            errors[0].contains("shorter than 16 characters")
                && errors[0].contains("not loopback")
                && !errors[0].contains("fifteen-chars-x"),
            "{log:?}"
        );
    }
    // Sixteen characters and more start; the open reads are warned about.
    let (status, log) = serve_until(
        "api_token = \"sixteen-chars-xy\"",
        "0.0.0.0:0",
        "switchyard ready",
    );
    assert!(status.is_none(), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("admin_reads_need_token = true")),
        "{log:?}"
    );
    // ...and not once reads need a token.
    let (status, log) = serve_until(
        "api_token = \"sixteen-chars-xy\"\nadmin_reads_need_token = true",
        "0.0.0.0:0",
        "switchyard ready",
    );
    assert!(status.is_none(), "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l.contains("admin_reads_need_token = true")),
        "{log:?}"
    );
    // On loopback change-me is allowed, without the warning.
    let (status, log) = serve_until(
        "api_token = \"change-me\"",
        "127.0.0.1:0",
        "switchyard ready",
    );
    assert!(status.is_none(), "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains("admin_reads_need_token")),
        "{log:?}"
    );
}
