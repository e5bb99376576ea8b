//! The UDP transport: one loop per socket (one `SO_REUSEPORT` socket per
//! DNS thread), reading a batch of queries, answering every one it can at
//! once (static records, memoised decisions, errors) and sending those
//! replies in one batch. A query whose app must run goes to a task of its
//! own that waits for a JS worker and sends its reply alone, so a slow app
//! never holds up the batch.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::mmsg::{self, BATCH, RecvBatch};
use super::{DnsHandler, Handled, Transport};

/// Serves `socket` until `shutdown` is cancelled or the socket fails.
///
/// A stop answers what was read: the replies of the batch in hand are
/// sent, and the queries waiting for a JS worker are answered (for up to
/// [`DRAIN`]), while the socket is left to whoever else reads it (the
/// serving process that replaces this one at an upgrade).
pub async fn serve(socket: UdpSocket, handler: Arc<DnsHandler>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let fd = socket.as_raw_fd();
    let mut batch = RecvBatch::new();
    let mut replies: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut dests: Vec<SocketAddr> = Vec::with_capacity(BATCH);
    let mut waiting = tokio::task::JoinSet::new();
    loop {
        // Forget the answered ones.
        while waiting.try_join_next().is_some() {}
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::error!(error = %e, "DNS UDP socket failed; it is no longer served");
                    break;
                }
            }
        }
        let n = match socket.try_io(Interest::READABLE, || batch.recv(fd)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors for earlier replies surface here; the socket
                // itself is fine. Yield, so an error that repeats cannot
                // keep the thread's other tasks from running.
                tracing::debug!(error = %e, "DNS UDP receive error");
                tokio::task::yield_now().await;
                continue;
            }
        };
        dests.clear();
        for i in 0..n {
            let Some((packet, src)) = batch.get(i) else {
                continue;
            };
            if !answerable(src) {
                tracing::debug!(%src, "DNS query from an address that cannot be answered");
                continue;
            }
            let out = &mut replies[dests.len()];
            // A bug must cost one query, not the socket: this loop is the
            // only reader of its share of the traffic.
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler.handle(packet, src, Transport::Udp, out)
            }));
            match handled {
                Ok(Handled::Reply) => dests.push(src),
                Ok(Handled::Drop) => {}
                Ok(Handled::Undecided(pending)) => {
                    let handler = handler.clone();
                    let socket = socket.clone();
                    waiting.spawn(async move {
                        let mut out = Vec::with_capacity(512);
                        if let Handled::Drop = handler.decide(pending, &mut out).await {
                            return;
                        }
                        if let Err(e) = socket.send_to(&out, src).await {
                            tracing::debug!(error = %e, dest = %src, "cannot send a DNS reply");
                        }
                    });
                }
                Err(_) => {
                    handler.counters.dns_panic();
                    tracing::error!(%src, "answering a DNS query panicked; it gets no reply");
                }
            }
        }
        let sending = send_all(&socket, &dests, &replies);
        tokio::pin!(sending);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let _ = tokio::time::timeout(DRAIN, &mut sending).await;
                break;
            }
            _ = &mut sending => {}
        }
        // Let the thread's other tasks run (decisions waiting for a worker,
        // TCP, the heartbeat) before the next batch: readiness alone would
        // never hand the thread over while queries keep coming.
        tokio::task::yield_now().await;
    }
    let drained = tokio::time::timeout(DRAIN, async {
        while waiting.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            unanswered = waiting.len(),
            "DNS queries still waiting for a JS worker at the stop get no reply"
        );
    }
}

/// How long a stop waits for the replies of queries already read.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends every reply of a batch, waiting for room in the socket's send
/// buffer when the kernel has none.
async fn send_all(socket: &UdpSocket, dests: &[SocketAddr], replies: &[Vec<u8>]) {
    let fd = socket.as_raw_fd();
    let mut all: [(SocketAddr, &[u8]); BATCH] = [(UNSPECIFIED, &[]); BATCH];
    for (slot, (d, r)) in all.iter_mut().zip(dests.iter().zip(replies)) {
        *slot = (*d, r.as_slice());
    }
    let all = &all[..dests.len()];
    let mut sent = 0;
    while sent < all.len() {
        match socket.try_io(Interest::WRITABLE, || mmsg::send(fd, &all[sent..])) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot send DNS replies");
                return;
            }
        }
    }
}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// Whether a reply to `src` can be sent at all: not to port 0, nor to an
/// unspecified or broadcast address (as hickory-server checks).
fn answerable(src: SocketAddr) -> bool {
    if src.port() == 0 {
        return false;
    }
    match src.ip() {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_unspecified(),
    }
}
