//! Test harness: the real `switchyard` binary on ephemeral loopback ports.
//!
//! [`Server::start_with`] copies the shipped apps (or the given ones) into a
//! fresh directory, runs `switchyard serve` with every listener on port 0,
//! waits for its "listening" log lines to learn the ports, and kills the
//! process when dropped. Tests then talk to it over real sockets.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server.
pub struct Server {
    child: Child,
    /// DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// Public HTTP address, when the server has one.
    pub http: Option<SocketAddr>,
    /// Operations address, when the server has one.
    pub admin: Option<SocketAddr>,
    /// The apps directory the server watches.
    pub apps: PathBuf,
    /// Scratch directory (apps, data, config).
    pub dir: tempfile::TempDir,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// What a test changes from the shipped config and apps.
#[derive(Default)]
pub struct Options {
    /// Extra TOML appended to the shipped example config.
    pub extra_config: String,
    /// Apps to write instead of the shipped ones: (file name, contents).
    pub apps: Option<Vec<(String, String)>>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Text replacements (from, to) applied to the test config (the
    /// shipped example with [`TEST_TOKEN_LINE`] in its `[server]` table)
    /// before `extra_config` is appended: the way to change keys of tables
    /// the example already has, such as `[server]` or `[geo]`. A `from`
    /// that does not occur is a test bug and panics.
    pub config_edits: Vec<(String, String)>,
    /// Data directory to use instead of a fresh one (a restart test
    /// starts a second server on the first one's data).
    pub data_dir: Option<PathBuf>,
    /// The `switchyard` binary to run instead of the built one (an upgrade
    /// test runs a copy it can replace).
    pub binary: Option<PathBuf>,
}

/// The admin token line every test config has in `[server]`: the shipped
/// defaults set none (`serve` would generate one), and tests want a known
/// token. Allowed because every test listener is on loopback.
pub const TEST_TOKEN_LINE: &str = "api_token = \"change-me\"";

/// The shipped example's `[geo]` overrides line, commented out (the table
/// is opt-in); a `config_edits` pair with [`GEO_OVERRIDES_ON`] enables it.
pub const GEO_OVERRIDES_OFF: &str = "# overrides = \"geo/overrides.toml\"";

/// The `[geo]` overrides line that turns the example table on.
pub const GEO_OVERRIDES_ON: &str = "overrides = \"geo/overrides.toml\"";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl Server {
    /// Starts a server with options.
    pub fn start_with(opts: Options) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let apps = dir.path().join("apps");
        std::fs::create_dir_all(&apps).expect("apps dir");
        let files = opts.apps.clone().unwrap_or_else(super::apps::shipped);
        for (name, text) in files {
            std::fs::write(apps.join(name), text).expect("write app");
        }
        let mut shipped = std::fs::read_to_string(root().join("examples/switchyard.toml"))
            .expect("example config")
            .replacen("[server]\n", &format!("[server]\n{TEST_TOKEN_LINE}\n"), 1);
        for (from, to) in &opts.config_edits {
            assert!(
                shipped.contains(from.as_str()),
                "config edit: {from:?} is not in the test config (examples/switchyard.toml)"
            );
            shipped = shipped.replacen(from.as_str(), to, 1);
        }
        let config = dir.path().join("switchyard.toml");
        std::fs::write(&config, format!("{shipped}\n{}\n", opts.extra_config))
            .expect("write config");

        let binary = opts
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchyard")));
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut cmd = serve_command(&binary, &config, "127.0.0.1:0", &data_dir);
        cmd.arg("--apps").arg(&apps);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start switchyard");
        let (log, rx) = follow_stderr(&mut child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut dns, mut http, mut admin) = (None, None, None);
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "switchyard exited early ({status}): {:?}",
                        log.lock().unwrap()
                    );
                }
                continue;
            };
            let addr = || -> Option<SocketAddr> {
                line.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            };
            if line.contains("listening for DNS over TCP") {
                dns = addr();
            } else if line.contains("listening for HTTP decisions") {
                http = addr();
            } else if line.contains("listening for operations") {
                admin = addr();
            }
            if line.contains("switchyard ready") {
                break;
            }
        }
        let dns = dns.unwrap_or_else(|| panic!("no DNS listener line: {:?}", log.lock().unwrap()));
        Server {
            child,
            dns,
            http,
            admin,
            apps,
            dir,
            log,
        }
    }

    /// True when some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.logged(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status();
    }

    /// `/debug/vars` on the operations listener, as JSON.
    pub fn debug_vars(&self) -> serde_json::Value {
        let admin = self.admin.expect("an operations listener");
        super::http::get(admin, "/debug/vars").json()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `switchyard serve` with `config`, DNS and HTTP on loopback port 0, the
/// operations listener on `admin`, data in `data_dir` and info logs on a
/// piped stderr: the command line every test server starts from.
pub fn serve_command(binary: &Path, config: &Path, admin: &str, data_dir: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.current_dir(root())
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--dns",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            admin,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Reads the child's stderr on a thread: every line is kept in the log and
/// sent on the channel, so a test can both wait for a line and look back.
pub fn follow_stderr(child: &mut Child) -> (Arc<Mutex<Vec<String>>>, Receiver<String>) {
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (log, rx)
}

/// Stops a server: SIGTERM (so the supervisor stops its serving process
/// too), then SIGKILL after 5 s.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
