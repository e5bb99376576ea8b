//! The `serve` supervisor: owns the listening sockets and runs the serving
//! process with them inherited, restarting it at once when it dies.
//!
//! Why: one bad app can still take the process down (a single huge
//! allocation aborts Rust; see shared/notes/js-budget.md), and the budget
//! cannot stop everything. Because the sockets outlive the serving process,
//! queries that arrive during a restart wait in the kernel's socket buffers
//! instead of being refused, and the new process quarantines the app that
//! was running when the old one died ([`crate::quarantine`]).
//! SIGTERM/SIGINT stop both gracefully; SIGHUP is passed on (config reload).
//!
//! A serving process that cannot start at all (it exits with [`EXIT_STARTUP`]: a
//! configuration it cannot load, a stats store it cannot reach) is retried a few times
//! with a growing pause, in case the cause is passing, and then the supervisor gives up
//! and exits non-zero instead of restarting it forever. `serve` checks the configuration's
//! files before starting the supervisor ([`crate::server::check_startup`]), so most such
//! errors are reported before any serving process runs.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Environment variable carrying the inherited socket descriptors.
pub const FDS_ENV: &str = "SWITCHYARD_LISTEN_FDS";
/// Environment variable counting restarts (for logs and counters).
pub const RESTARTS_ENV: &str = "SWITCHYARD_RESTARTS";
/// Exit status of a serving process that failed before it was ready to serve
/// (`EX_CONFIG` from sysexits.h).
pub const EXIT_STARTUP: i32 = 78;
/// How many serving processes in a row may fail to start before the supervisor gives up.
const STARTUP_ATTEMPTS: u32 = 3;

/// Descriptors of every listening socket, as passed to the serving process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenFds {
    /// Per DNS address, per copy: (UDP, TCP).
    pub dns: Vec<Vec<(RawFd, RawFd)>>,
    /// Public HTTP.
    pub http: RawFd,
    /// Operations.
    pub admin: RawFd,
}

/// The bound sockets, owned.
pub struct Listeners {
    /// Per DNS address, per copy: (UDP, TCP).
    pub dns: Vec<Vec<(std::net::UdpSocket, std::net::TcpListener)>>,
    /// Public HTTP.
    pub http: std::net::TcpListener,
    /// Operations.
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Binds every listener the configuration names.
    pub fn bind(config: &Config, copies: usize) -> anyhow::Result<Listeners> {
        let mut dns = Vec::new();
        for addr in &config.dns {
            dns.push(crate::server::bind_dns(*addr, copies)?);
        }
        let http = std::net::TcpListener::bind(config.http)
            .with_context(|| format!("cannot bind HTTP {}", config.http))?;
        let admin = std::net::TcpListener::bind(config.admin)
            .with_context(|| format!("cannot bind operations {}", config.admin))?;
        for l in [&http, &admin] {
            l.set_nonblocking(true)?;
        }
        Ok(Listeners { dns, http, admin })
    }

    /// Their descriptors, made inheritable.
    fn inheritable_fds(&self) -> anyhow::Result<ListenFds> {
        let mut fds = ListenFds {
            dns: Vec::new(),
            http: self.http.as_raw_fd(),
            admin: self.admin.as_raw_fd(),
        };
        for addr in &self.dns {
            fds.dns.push(
                addr.iter()
                    .map(|(u, t)| (u.as_raw_fd(), t.as_raw_fd()))
                    .collect(),
            );
        }
        let all = fds
            .dns
            .iter()
            .flatten()
            .flat_map(|(u, t)| [*u, *t])
            .chain([fds.http, fds.admin]);
        for fd in all {
            // SAFETY: fcntl on a descriptor we own; clearing FD_CLOEXEC only.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(anyhow!(
                    "cannot make socket {fd} inheritable: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(fds)
    }

    /// Takes the sockets passed in `FDS_ENV` (in the serving process).
    pub fn from_env() -> anyhow::Result<Option<Listeners>> {
        let Ok(text) = std::env::var(FDS_ENV) else {
            return Ok(None);
        };
        let fds: ListenFds = serde_json::from_str(&text).map_err(|e| anyhow!("{FDS_ENV}: {e}"))?;
        // SAFETY: the supervisor passed these descriptors to this process
        // alone, open and of these types; each is taken exactly once here.
        let take = |fd: RawFd| -> RawFd {
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            fd
        };
        let dns = fds
            .dns
            .iter()
            .map(|copies| {
                copies
                    .iter()
                    .map(|(u, t)| unsafe {
                        (
                            std::net::UdpSocket::from_raw_fd(take(*u)),
                            std::net::TcpListener::from_raw_fd(take(*t)),
                        )
                    })
                    .collect()
            })
            .collect();
        let http = unsafe { std::net::TcpListener::from_raw_fd(take(fds.http)) };
        let admin = unsafe { std::net::TcpListener::from_raw_fd(take(fds.admin)) };
        Ok(Some(Listeners { dns, http, admin }))
    }
}

fn spawn_child(fds: &str, restarts: u32, memory_limit: Option<u64>) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the switchyard executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .arg("--worker")
        .env(FDS_ENV, fds)
        .env(RESTARTS_ENV, restarts.to_string());
    use std::os::unix::process::CommandExt;
    // SAFETY: signal and setrlimit are async-signal-safe; nothing else
    // runs here.
    unsafe {
        cmd.pre_exec(move || {
            // SIGHUP is forwarded to the serving process at any time, but it
            // installs its handler only once it serves: until then the
            // default action would kill it, and a stream of SIGHUPs would
            // kill every restart too. Ignored dispositions survive exec;
            // the handler replaces this one.
            if libc::signal(libc::SIGHUP, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(bytes) = memory_limit {
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().context("cannot start the serving process")
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Runs the supervisor until SIGTERM or SIGINT.
pub fn supervise(config: Config) -> anyhow::Result<()> {
    let copies = std::thread::available_parallelism().map_or(2, |n| n.get());
    // The listeners live as long as this function: the supervisor holds
    // them while serving processes come and go.
    let listeners = Listeners::bind(&config, copies)?;
    let fds = serde_json::to_string(&listeners.inheritable_fds()?)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal as sig};
        let (mut term, mut int, mut hup) = (
            sig(SignalKind::terminate())?,
            sig(SignalKind::interrupt())?,
            sig(SignalKind::hangup())?,
        );
        let mut restarts = 0u32;
        let mut failed_starts = 0u32;
        let mut recent: Vec<Instant> = Vec::new();
        loop {
            let mut child = spawn_child(&fds, restarts, config.memory_limit)?;
            let pid = child.id();
            tracing::debug!(pid, restarts, "serving process started");
            let status = loop {
                tokio::select! {
                    _ = term.recv() => { signal(&child, libc::SIGTERM); break None; }
                    _ = int.recv() => { signal(&child, libc::SIGTERM); break None; }
                    _ = hup.recv() => signal(&child, libc::SIGHUP),
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {
                        if let Ok(Some(status)) = child.try_wait() {
                            break Some(status);
                        }
                    }
                }
            };
            let Some(status) = status else {
                // Stopping: give the serving process time to finish gracefully.
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            };
            if status.code() == Some(EXIT_STARTUP) {
                failed_starts += 1;
                if failed_starts >= STARTUP_ATTEMPTS {
                    return Err(anyhow!(
                        "the serving process failed to start {failed_starts} times in a row \
                         (its error is logged above); giving up"
                    ));
                }
                restarts += 1;
                tracing::error!(pid, %status, restarts, "serving process could not start; retrying");
                tokio::time::sleep(Duration::from_millis(250) * failed_starts).await;
                continue;
            }
            failed_starts = 0;
            restarts += 1;
            tracing::error!(pid, %status, restarts, "serving process died; restarting it");
            // A crash loop of a process that did start is slowed down, never
            // given up on: queries wait in the socket buffers meanwhile.
            let now = Instant::now();
            recent.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
            recent.push(now);
            if recent.len() > 5 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    })
}
