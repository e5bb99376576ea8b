//! `switchyard check` of a whole configuration (issue 27, "Check before
//! go-live"): a good configuration passes; several problems at once are
//! each listed with file and line, exit 1; `--offline` skips the stores;
//! `--json` parses; and `serve` and a SIGHUP reload refuse the same
//! problems, the reload logging each while the old configuration serves.

use crate::common;
use crate::common::dnsclient;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "error")
        .env_remove("POSTGRES")
        .output()
        .expect("runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch configuration: the shipped example with `edits` applied, and
/// an apps directory with `apps` in it.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    apps: PathBuf,
}

impl Setup {
    fn new(edits: &[(&str, &str)], apps: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut text = std::fs::read_to_string(root().join("examples/switchyard.toml")).unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "{from:?} is not in the example config");
            text = text.replacen(from, to, 1);
        }
        let config = dir.path().join("switchyard.toml");
        std::fs::write(&config, text).unwrap();
        let apps_dir = dir.path().join("apps");
        std::fs::create_dir(&apps_dir).unwrap();
        for (name, body) in apps {
            std::fs::write(apps_dir.join(name), body).unwrap();
        }
        Setup {
            dir,
            config,
            apps: apps_dir,
        }
    }

    /// `switchyard check` of this configuration, with `extra` flags.
    fn check(&self, extra: &[&str]) -> Output {
        let data = self.dir.path().join("data");
        let mut args = vec![
            "check",
            "--config",
            self.config.to_str().unwrap(),
            "--apps",
            self.apps.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The line (1-based) of `needle` in `file`.
fn line_of(file: &str, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {file}"))
        + 1
}

const GOOD_APP: &str = "function onRequest(q, r) { r.respondEmpty(); }\n";
const LINT_APP: &str = "function onRequest(request, r) {\n  var t = request.query_type;\n  if (t === 'x') { request.query_type(); }\n  r.respondEmpty();\n}\n";
const BAD_APP: &str = "function onRequest(q, r) {\n  r.respond('a',\n}\n";
const CLOSED_PG: &str = "postgres://postgres@127.0.0.1:1/none";

#[test]
fn the_shipped_configuration_passes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run(&[
        "check",
        "--config",
        "examples/switchyard.toml",
        "--apps",
        "apps",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim_end(),
        "examples/switchyard.toml: ok (5 app(s), 1 zone(s), 4 provider(s); 0 warning(s))"
    );
    // Checking touches nothing: no data directory, no database file.
    assert!(!data.exists());

    // A lint warning is reported but fails nothing; --json says ok.
    let setup = Setup::new(&[], &[("lint.js", LINT_APP), ("good.js", GOOD_APP)]);
    let out = setup.check(&["--offline"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let lint = setup.apps.join("lint.js").display().to_string();
    assert!(
        text.starts_with(&format!(
            "{lint}:3: warning: request.query_type is a string property"
        )),
        "{text}"
    );
    assert!(
        text.contains("ok (2 app(s), 1 zone(s), 4 provider(s); 1 warning(s); stores not checked)"),
        "{text}"
    );
    let out = setup.check(&["--offline", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["problems"][0]["severity"], "warning", "{v}");
    assert_eq!(v["problems"][0]["line"], 3, "{v}");
}

/// A configuration with a bad static record, a missing GeoIP file, an app
/// that does not compile, a sidecar naming an unknown provider and a
/// PostgreSQL URL at a closed port.
fn broken() -> Setup {
    Setup::new(
        &[
            (
                "city = \"geo/Switchyard-City-Test.mmdb\"",
                "city = \"/nonexistent/City.mmdb\"",
            ),
            ("value = \"192.0.2.53\"", "value = \"192.0.2\""),
            (
                "# postgres = \"postgres://user@127.0.0.1/db\"",
                &format!("postgres = \"{CLOSED_PG}\""),
            ),
        ],
        &[
            ("bad.js", BAD_APP),
            ("good.js", GOOD_APP),
            (
                "good.toml",
                "ttl = 30\nproviders = [\"cdn_a\", \"cdn_zz\"]\n",
            ),
        ],
    )
}

/// The fatal problems of [`broken`]: what `serve` and a reload refuse.
fn fatal_lines(setup: &Setup) -> [String; 2] {
    let config = setup.file("switchyard.toml");
    [
        format!(
            "{config}:{}: error: zone[0].records[1].value: '192.0.2' is not an IPv4 address",
            line_of(&config, "value = \"192.0.2\"")
        ),
        format!(
            "{config}:{}: error: geo database /nonexistent/City.mmdb: cannot open",
            line_of(&config, "/nonexistent/City.mmdb")
        ),
    ]
}

#[test]
fn every_problem_is_listed_with_its_file_and_line() {
    let setup = broken();
    let config = setup.file("switchyard.toml");
    let out = setup.check(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "five problems and the summary: {text}");
    let [record, geo] = fatal_lines(&setup);
    assert_eq!(lines[0], record, "{text}");
    assert!(lines[1].starts_with(&geo), "{text}");
    assert_eq!(
        lines[2],
        format!(
            "{}:2: error: providers: provider 'cdn_zz' is not configured in {config} (no [providers.cdn_zz])",
            setup.file("apps/good.toml")
        ),
        "{text}"
    );
    assert!(
        lines[3].starts_with(&format!(
            "{}:3: error: syntax error",
            setup.file("apps/bad.js")
        )),
        "{text}"
    );
    assert!(
        lines[4].starts_with(&format!(
            "{config}:{}: error: leaderboard.postgres: the store is not reachable: cannot open {CLOSED_PG}",
            line_of(&config, CLOSED_PG)
        )),
        "{text}"
    );
    assert_eq!(lines[5], format!("{config}: 5 error(s), 0 warning(s)"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the configuration has 5 error(s)"),
        "{out:?}"
    );

    // --offline: the same but the store.
    let out = setup.check(&["--offline"]);
    assert_eq!(out.status.code(), Some(1));
    let offline = stdout(&out);
    assert!(!offline.contains("leaderboard.postgres"), "{offline}");
    assert_eq!(
        offline.lines().take(4).collect::<Vec<_>>(),
        lines[..4],
        "{offline}"
    );

    // --json: one document; the fatal problems are marked as refusing serve.
    let out = setup.check(&["--offline", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], false, "{v}");
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 4, "{v}");
    for (p, refuses) in problems.iter().zip([true, true, false, false]) {
        assert_eq!(p["severity"], "error", "{p}");
        assert_eq!(p["refuses_serve"], refuses, "{p}");
        assert!(p["line"].as_u64().is_some(), "{p}");
        let shown = format!(
            "{}:{}: error: {}",
            p["file"].as_str().unwrap(),
            p["line"],
            p["message"].as_str().unwrap()
        );
        assert!(lines.contains(&shown.as_str()), "{shown} not in {text}");
    }
}

/// PostgreSQL that answers passes (skipped loudly without one).
#[test]
fn a_reachable_postgresql_passes() {
    let Some(url) = common::pg::url_or_skip("check reaching the store") else {
        return;
    };
    let setup = Setup::new(
        &[(
            "# postgres = \"postgres://user@127.0.0.1/db\"",
            &format!("postgres = \"{url}\""),
        )],
        &[("good.js", GOOD_APP)],
    );
    let out = setup.check(&[]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains(": ok (1 app(s)"), "{}", stdout(&out));
}

#[test]
fn serve_refuses_with_the_problems_check_reports() {
    let setup = broken();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(root())
        .args(["serve", "--config", setup.config.to_str().unwrap()])
        .args(["--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args([
            "--admin",
            "127.0.0.1:0",
            "--apps",
            setup.apps.to_str().unwrap(),
        ])
        .arg("--data-dir")
        .arg(setup.dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("serve did not refuse the configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    // Both fatal problems, one line each, as check prints them; the app's
    // problems are not what serve refuses (the app would get its fallback).
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    let [record, geo] = fatal_lines(&setup);
    assert_eq!(lines[0], format!("switchyard: {record}"), "{err}");
    assert!(lines[1].starts_with(&geo), "{err}");
    assert!(
        !err.contains("bad.js") && !err.contains("good.toml"),
        "{err}"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_serving_and_logs_the_problems() {
    let server = common::Server::start_with(common::Options::default());
    let config = server.dir.path().join("switchyard.toml");
    let sock = dnsclient::socket(Duration::from_secs(2));
    let answer = |id| {
        dnsclient::query(
            &sock,
            server.dns,
            "static.switchyard.test.",
            RecordType::A,
            id,
        )
        .expect("an answer")
        .answers
    };
    assert_eq!(answer(1), ["192.0.2.53"]);

    let text = std::fs::read_to_string(&config).unwrap();
    let broken = text
        .replacen(
            "city = \"geo/Switchyard-City-Test.mmdb\"",
            "city = \"/nonexistent/City.mmdb\"",
            1,
        )
        .replacen("value = \"192.0.2.53\"", "value = \"192.0.2\"", 1);
    std::fs::write(&config, broken).unwrap();
    // What check says of it: two problems, each refusing serve.
    let out = run(&[
        "check",
        "--offline",
        "--config",
        config.to_str().unwrap(),
        "--apps",
        server.apps.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    let problems: Vec<&str> = report.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(problems.len(), 2, "{report}");

    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let failed = |server: &common::Server| {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("config reload failed"))
            .cloned()
            .collect::<Vec<String>>()
    };
    while failed(&server).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the reload did not log each problem: {:?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let logged = failed(&server);
    assert_eq!(logged.len(), 2, "one line per problem: {logged:?}");
    for (line, problem) in logged.iter().zip(&problems) {
        assert!(line.contains(problem), "{problem:?} not in {line:?}");
    }
    assert!(!server.logged("configuration reloaded"));
    // The old configuration serves on.
    assert_eq!(answer(2), ["192.0.2.53"]);
    let deepcheck = common::http::get(server.admin.unwrap(), "/deepcheck").body;
    assert!(
        deepcheck.contains("geo city: geo/Switchyard-City-Test.mmdb"),
        "{deepcheck}"
    );
}
