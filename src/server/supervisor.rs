//! The `serve` supervisor: owns the listening sockets and runs the serving
//! process with them inherited, restarting it at once when it dies.
//!
//! Why: one bad app can still take the process down (a single huge
//! allocation aborts Rust; see shared/notes/js-budget.md), and the budget
//! cannot stop everything. Because the sockets outlive the serving process,
//! queries that arrive during a restart wait in the kernel's socket buffers
//! instead of being refused, and the new process quarantines the app that
//! was running when the old one died ([`crate::engine::quarantine`]).
//! SIGTERM/SIGINT stop both gracefully; SIGHUP is passed on (config reload).
//!
//! Binary upgrades: a restart always runs the binary the serving process
//! was started from, through a descriptor opened when it was chosen, so a
//! file renamed over the path (a package upgrade, `cargo build`) or deleted
//! never turns the next crash into an outage; the log line of every start
//! names the path, the inode and whether the path still holds that file.
//! The new binary is picked up only on SIGUSR2 ([`supervise`]).
//!
//! A serving process that cannot start at all (it exits with [`EXIT_STARTUP`]: a
//! configuration it cannot load, a stats store it cannot reach) is retried a few times
//! with a growing pause, in case the cause is passing, and then the supervisor gives up
//! and exits non-zero instead of restarting it forever. `serve` checks the configuration's
//! files before starting the supervisor ([`crate::server::preflight::check_config`]), so most such
//! errors are reported before any serving process runs.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::net::sockets::BindError;

/// Why the supervisor cannot bind, start or upgrade a serving process.
/// The underlying reason is part of the message rather than a `source()`,
/// as in [`crate::geo::GeoError`]: the upgrade path logs the error itself.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A DNS socket.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The HTTP or operations listener.
    #[error("cannot bind {what} {addr}: {reason}")]
    Listen {
        /// `HTTP` or `operations`.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: std::io::Error,
    },
    /// A listening socket cannot be passed on.
    #[error("cannot make socket {fd} inheritable: {reason}")]
    Inheritable {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        reason: std::io::Error,
    },
    /// The sockets passed in the environment are not readable.
    #[error("{FDS_ENV}: {0}")]
    FdsEnv(serde_json::Error),
    /// The supervisor's own executable cannot be found or opened.
    #[error("cannot {what} the switchyard executable: {reason}")]
    OwnExecutable {
        /// `find` or `open`.
        what: &'static str,
        /// Why.
        reason: std::io::Error,
    },
    /// The executable to upgrade to cannot be opened.
    #[error("cannot open {}: {reason}", path.display())]
    Open {
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
    /// The file to upgrade to is not an executable file.
    #[error("{} is not an executable file", .0.display())]
    NotExecutable(PathBuf),
    /// A serving process cannot be started.
    #[error("cannot start the serving process from {} (inode {inode}): {reason}", path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Its inode.
        inode: u64,
        /// Why.
        reason: std::io::Error,
    },
    /// The serving process exited as unable to start too many times.
    #[error(
        "the serving process failed to start {0} times in a row (its error is logged above); giving up"
    )]
    GaveUp(u32),
    /// Anything else the operating system refused (a runtime, a signal
    /// handler, a pipe, a thread, a file's metadata).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The descriptors cannot be written for the serving process.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Environment variable carrying the inherited socket descriptors.
pub const FDS_ENV: &str = "SWITCHYARD_LISTEN_FDS";
/// Environment variable counting restarts (for logs and counters).
pub const RESTARTS_ENV: &str = "SWITCHYARD_RESTARTS";
/// Environment variable naming the serving process's in-flight slot file
/// (see [`slots_file`]).
pub const SLOTS_ENV: &str = "SWITCHYARD_SLOTS_FILE";
/// Environment variable carrying the write end of the readiness pipe of an
/// upgrade's new serving process (see [`notify_ready`]).
pub const READY_ENV: &str = "SWITCHYARD_READY_FD";
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
    pub fn bind(config: &Config, copies: usize) -> Result<Listeners, SupervisorError> {
        let mut dns = Vec::new();
        for addr in &config.dns {
            dns.push(crate::net::sockets::bind_dns(*addr, copies)?);
        }
        let listen = |what, addr| {
            std::net::TcpListener::bind(addr).map_err(|reason| SupervisorError::Listen {
                what,
                addr,
                reason,
            })
        };
        let http = listen("HTTP", config.http)?;
        let admin = listen("operations", config.admin)?;
        for l in [&http, &admin] {
            l.set_nonblocking(true)?;
        }
        Ok(Listeners { dns, http, admin })
    }

    /// Their descriptors, made inheritable.
    fn inheritable_fds(&self) -> Result<ListenFds, SupervisorError> {
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
                return Err(SupervisorError::Inheritable {
                    fd,
                    reason: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(fds)
    }

    /// Takes the sockets passed in `FDS_ENV` (in the serving process).
    pub fn from_env() -> Result<Option<Listeners>, SupervisorError> {
        let Ok(text) = std::env::var(FDS_ENV) else {
            return Ok(None);
        };
        let fds: ListenFds = serde_json::from_str(&text).map_err(SupervisorError::FdsEnv)?;
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

fn child_command(
    exe: &Executable,
    fds: &str,
    restarts: u32,
    memory_limit: Option<u64>,
    slots_file: &str,
    ready: Option<RawFd>,
) -> Command {
    // Exec through the descriptor, never the path: the path may name
    // another file by now (an upgrade renamed a new binary over it) or
    // nothing at all. The kernel opens `/proc/self/fd/N` (the forked
    // child's copy of the descriptor) before close-on-exec closes it.
    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.fd.as_raw_fd()));
    use std::os::unix::process::CommandExt;
    cmd.arg0(&exe.path)
        .args(std::env::args_os().skip(1))
        .arg("--worker")
        .env(FDS_ENV, fds)
        .env(RESTARTS_ENV, restarts.to_string())
        .env(SLOTS_ENV, slots_file);
    match ready {
        Some(fd) => cmd.env(READY_ENV, fd.to_string()),
        None => cmd.env_remove(READY_ENV),
    };
    // SAFETY: signal, fcntl and setrlimit are async-signal-safe; nothing
    // else runs here.
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
            // The readiness pipe is this child's alone: inheritable here,
            // after the fork, and close-on-exec everywhere else.
            if let Some(fd) = ready
                && libc::fcntl(fd, libc::F_SETFD, 0) == -1
            {
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
    cmd
}

/// The executable serving processes are started from: a descriptor opened
/// once, so that the file stays runnable whatever later happens to its
/// path (a package upgrade or `cargo build` renames a new file over it, a
/// cleanup deletes it). Only SIGUSR2 opens the path again ([`supervise`]).
pub struct Executable {
    fd: std::os::fd::OwnedFd,
    /// The path it was opened from.
    path: PathBuf,
    /// Its inode, to tell it from whatever the path names later.
    inode: u64,
}

impl Executable {
    /// The supervisor's own executable (`/proc/self/exe`).
    pub fn current() -> Result<Executable, SupervisorError> {
        let link = std::fs::read_link("/proc/self/exe").map_err(|reason| {
            SupervisorError::OwnExecutable {
                what: "find",
                reason,
            }
        })?;
        let text = link.to_string_lossy();
        let path = PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text));
        let file = std::fs::File::open("/proc/self/exe").map_err(|reason| {
            SupervisorError::OwnExecutable {
                what: "open",
                reason,
            }
        })?;
        Executable::from_file(file, path)
    }

    /// The file at `path` now (what SIGUSR2 upgrades to).
    pub fn open(path: &Path) -> Result<Executable, SupervisorError> {
        let file = std::fs::File::open(path).map_err(|reason| SupervisorError::Open {
            path: path.to_path_buf(),
            reason,
        })?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(SupervisorError::NotExecutable(path.to_path_buf()));
        }
        Executable::from_file(file, path.to_path_buf())
    }

    fn from_file(file: std::fs::File, path: PathBuf) -> Result<Executable, SupervisorError> {
        let inode = file.metadata()?.ino();
        Ok(Executable {
            fd: file.into(),
            path,
            inode,
        })
    }

    /// Whether the path still names this file: `current`, `replaced` (by
    /// another file) or `deleted`.
    pub fn on_disk(&self) -> &'static str {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.ino() == self.inode => "current",
            Ok(_) => "replaced",
            Err(_) => "deleted",
        }
    }
}

/// In-flight slot files ([`crate::engine::quarantine::Slots`]) in the data
/// directory: a serving process and its restarts use one, an upgrade's
/// new serving process the other, so that the old process, still draining
/// beside it, never writes into the new one's slots.
const SLOT_FILES: [&str; 2] = ["inflight.slots", "inflight.next.slots"];

/// The in-flight slot file this serving process uses (a file name in the
/// data directory).
pub fn slots_file() -> String {
    std::env::var(SLOTS_ENV)
        .ok()
        .filter(|f| SLOT_FILES.contains(&f.as_str()))
        .unwrap_or_else(|| SLOT_FILES[0].to_string())
}

/// Tells the supervisor that this serving process is ready to serve (it
/// waits for that before draining the old process at an upgrade). Does
/// nothing when no supervisor waits.
pub fn notify_ready() {
    use std::io::Write;
    let Some(fd) = std::env::var(READY_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    // SAFETY: the supervisor passed this descriptor (the write end of a
    // pipe) to this process alone; it is taken once, here, and closed.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    if let Err(e) = pipe.write_all(b"1") {
        tracing::warn!(error = %e, "cannot tell the supervisor this process is ready");
    }
}

/// A pipe whose ends are both close-on-exec.
fn pipe() -> std::io::Result<(std::fs::File, std::os::fd::OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nobody else.
    unsafe {
        Ok((
            std::fs::File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        ))
    }
}

/// Starts a serving process and logs which binary it runs.
fn start(
    exe: &Executable,
    fds: &str,
    restarts: u32,
    memory_limit: Option<u64>,
    slots_file: &str,
    ready: Option<RawFd>,
) -> Result<Child, SupervisorError> {
    let child = child_command(exe, fds, restarts, memory_limit, slots_file, ready)
        .spawn()
        .map_err(|reason| SupervisorError::Spawn {
            path: exe.path.clone(),
            inode: exe.inode,
            reason,
        })?;
    tracing::info!(
        pid = child.id(),
        restarts,
        binary = %exe.path.display(),
        inode = exe.inode,
        on_disk = exe.on_disk(),
        "serving process started"
    );
    Ok(child)
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// How long an upgrade's new serving process may take to become ready.
const UPGRADE_READY_WITHIN: Duration = Duration::from_secs(60);

/// A SIGUSR2 upgrade in progress: the new serving process, started from
/// the file now at the executable's path, not yet ready.
struct Upgrade {
    child: Child,
    exe: Executable,
    slots_file: &'static str,
    /// 0 waiting, 1 ready, 2 the pipe closed without a word (it died).
    ready: Arc<AtomicU8>,
    started: Instant,
}

enum UpgradeState {
    Waiting,
    Ready,
    Failed(String),
}

impl Upgrade {
    fn begin(
        path: &Path,
        fds: &str,
        restarts: u32,
        memory_limit: Option<u64>,
        slots_file: &'static str,
    ) -> Result<Upgrade, SupervisorError> {
        let exe = Executable::open(path)?;
        let (mut read, write) = pipe()?;
        let child = start(
            &exe,
            fds,
            restarts,
            memory_limit,
            slots_file,
            Some(write.as_raw_fd()),
        )?;
        // Our copy of the write end closes here, so the reader sees the
        // end of the pipe if the new process dies before it is ready.
        drop(write);
        let ready = Arc::new(AtomicU8::new(0));
        let flag = ready.clone();
        std::thread::Builder::new()
            .name("upgrade-ready".into())
            .spawn(move || {
                use std::io::Read;
                let mut b = [0u8; 1];
                let ok = matches!(read.read(&mut b), Ok(1));
                flag.store(if ok { 1 } else { 2 }, Ordering::Release);
            })?;
        Ok(Upgrade {
            child,
            exe,
            slots_file,
            ready,
            started: Instant::now(),
        })
    }

    fn poll(&mut self) -> UpgradeState {
        if let Ok(Some(status)) = self.child.try_wait() {
            return UpgradeState::Failed(format!("it exited before it was ready ({status})"));
        }
        match self.ready.load(Ordering::Acquire) {
            1 => UpgradeState::Ready,
            2 => UpgradeState::Failed("it closed its readiness pipe without being ready".into()),
            _ if self.started.elapsed() > UPGRADE_READY_WITHIN => UpgradeState::Failed(format!(
                "it was not ready within {} s",
                UPGRADE_READY_WITHIN.as_secs()
            )),
            _ => UpgradeState::Waiting,
        }
    }
}

/// Runs the supervisor until SIGTERM or SIGINT.
///
/// Restarts always run the binary the current serving process was started
/// from, through a descriptor ([`Executable`]), so replacing or deleting
/// the file never stops them. SIGUSR2 upgrades deliberately: a new serving
/// process is started from the file now at the path, on the same sockets;
/// once it is ready the old one gets SIGTERM and drains (its graceful stop
/// answers what it has read), and restarts use the new binary from then on.
/// A new process that fails to become ready is stopped and the old one
/// keeps serving. The supervisor's own code is not replaced by an upgrade.
pub fn supervise(config: Config) -> Result<(), SupervisorError> {
    let copies = std::thread::available_parallelism().map_or(2, |n| n.get());
    // The listeners live as long as this function: the supervisor holds
    // them while serving processes come and go.
    let listeners = Listeners::bind(&config, copies)?;
    let fds = serde_json::to_string(&listeners.inheritable_fds()?)?;
    let mut exe = Executable::current()?;
    let memory_limit = config.memory_limit;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal as sig};
        let (mut term, mut int, mut hup, mut usr2) = (
            sig(SignalKind::terminate())?,
            sig(SignalKind::interrupt())?,
            sig(SignalKind::hangup())?,
            sig(SignalKind::user_defined2())?,
        );
        let mut slots_file = SLOT_FILES[0];
        let mut restarts = 0u32;
        let mut failed_starts = 0u32;
        let mut recent: Vec<Instant> = Vec::new();
        let mut child = start(&exe, &fds, restarts, memory_limit, slots_file, None)?;
        let mut upgrade: Option<Upgrade> = None;
        let mut draining: Vec<Child> = Vec::new();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    signal(&child, libc::SIGHUP);
                    if let Some(u) = &upgrade {
                        signal(&u.child, libc::SIGHUP);
                    }
                }
                _ = usr2.recv() => {
                    if upgrade.is_some() {
                        tracing::warn!("SIGUSR2: an upgrade is already in progress");
                    } else {
                        let other = if slots_file == SLOT_FILES[0] { SLOT_FILES[1] } else { SLOT_FILES[0] };
                        match Upgrade::begin(&exe.path, &fds, restarts, memory_limit, other) {
                            Ok(u) => {
                                tracing::info!(new_pid = u.child.id(), old_pid = child.id(),
                                    "SIGUSR2: upgrading; the old serving process drains once the new one is ready");
                                upgrade = Some(u);
                            }
                            Err(e) => tracing::error!("SIGUSR2: cannot upgrade, the serving process is unchanged: {e:#}"),
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            draining.retain_mut(|c| match c.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(pid = c.id(), %status, "old serving process drained");
                    false
                }
                _ => true,
            });
            if let Some(u) = upgrade.as_mut() {
                match u.poll() {
                    UpgradeState::Waiting => {}
                    UpgradeState::Ready => {
                        let Some(u) = upgrade.take() else { continue };
                        let old = std::mem::replace(&mut child, u.child);
                        signal(&old, libc::SIGTERM);
                        tracing::info!(
                            pid = child.id(),
                            old_pid = old.id(),
                            binary = %u.exe.path.display(),
                            inode = u.exe.inode,
                            "upgraded: the new serving process is ready; the old one drains"
                        );
                        draining.push(old);
                        exe = u.exe;
                        slots_file = u.slots_file;
                    }
                    UpgradeState::Failed(why) => {
                        if let Some(mut u) = upgrade.take() {
                            let _ = u.child.kill();
                            let _ = u.child.wait();
                            tracing::error!(pid = u.child.id(), binary = %u.exe.path.display(),
                                "upgrade failed, the old serving process keeps serving: {why}");
                        }
                    }
                }
            }
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            let pid = child.id();
            if status.code() == Some(EXIT_STARTUP) {
                failed_starts += 1;
                if failed_starts >= STARTUP_ATTEMPTS {
                    stop(upgrade.map(|u| u.child).into_iter().chain(draining).collect()).await;
                    return Err(SupervisorError::GaveUp(failed_starts));
                }
                restarts += 1;
                tracing::error!(pid, %status, restarts, "serving process could not start; retrying");
                tokio::time::sleep(Duration::from_millis(250) * failed_starts).await;
            } else {
                failed_starts = 0;
                restarts += 1;
                tracing::error!(pid, %status, restarts, binary = %exe.path.display(), inode = exe.inode,
                    on_disk = exe.on_disk(), "serving process died; restarting it");
                // A crash loop of a process that did start is slowed down, never
                // given up on: queries wait in the socket buffers meanwhile.
                let now = Instant::now();
                recent.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
                recent.push(now);
                if recent.len() > 5 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            child = start(&exe, &fds, restarts, memory_limit, slots_file, None)?;
        }
        let mut all = vec![child];
        all.extend(upgrade.map(|u| u.child));
        all.extend(draining);
        stop(all).await;
        Ok(())
    })
}

/// Stops serving processes gracefully (SIGTERM), killing those still
/// running after 10 s.
async fn stop(mut children: Vec<Child>) {
    for c in &children {
        signal(c, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        if children.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
