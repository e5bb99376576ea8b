//! The TCP transport (RFC 7766): each connection carries two-byte
//! length-prefixed messages, answered in order; a connection idle for
//! [`IDLE`] (or [`BUSY_IDLE`] once half the connection slots are taken:
//! RFC 7766 §6.2.3) or one whose message does not arrive whole within the
//! same time is closed, and one client network holds at most its share of
//! the connections ([`crate::net::clients`]): past it, a new connection is
//! closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{DnsHandler, Handled, Transport};
use crate::net::clients::ClientSlots;

/// How long a connection may wait for its next message, or take to send
/// one or to take a reply.
pub const IDLE: Duration = Duration::from_secs(5);

/// The idle timeout while more than half of [`MAX_CONNECTIONS`] are open,
/// so that clients keeping connections open cannot take every slot.
pub const BUSY_IDLE: Duration = Duration::from_millis(500);

/// Most connections served at once per listener; more wait in the
/// kernel's accept queue.
const MAX_CONNECTIONS: usize = 1024;

/// Serves `listener` until `shutdown` is cancelled; open connections are
/// then closed after the message they are on.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<DnsHandler>,
    clients: Arc<ClientSlots>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = connections.join_next() => continue,
            }
        }
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, src)) => {
                let Some(slot) = clients.take(src.ip()) else {
                    tracing::debug!(%src, "DNS TCP client network holds its most connections; closed");
                    drop(stream);
                    continue;
                };
                open.fetch_add(1, Ordering::Relaxed);
                let open = open.clone();
                let handler = handler.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    connection(stream, src, handler, shutdown, &open).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: wait a little rather than spin.
                tracing::debug!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// One connection: read a message, answer it, until the client closes,
/// goes idle, or the server stops.
async fn connection(
    mut stream: TcpStream,
    src: SocketAddr,
    handler: Arc<DnsHandler>,
    shutdown: CancellationToken,
    open: &AtomicUsize,
) {
    let _ = stream.set_nodelay(true);
    let mut len = [0u8; 2];
    let mut message = Vec::new();
    let mut out = Vec::with_capacity(512);
    let mut frame = Vec::with_capacity(514);
    loop {
        let idle = if open.load(Ordering::Relaxed) > MAX_CONNECTIONS / 2 {
            BUSY_IDLE
        } else {
            IDLE
        };
        // The whole message, length and body, within the idle time: a
        // client that sends the length and then the body just before the
        // timeout holds the connection no longer than an idle one.
        let deadline = tokio::time::Instant::now() + idle;
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout_at(deadline, stream.read_exact(&mut len)) => r,
        };
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        message.resize(usize::from(u16::from_be_bytes(len)), 0);
        if !matches!(
            tokio::time::timeout_at(deadline, stream.read_exact(&mut message)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        match handler.handle(&message, src, Transport::Tcp, &mut out) {
            Handled::Reply => {}
            Handled::Drop => continue,
            Handled::Undecided(pending) => {
                // Over TCP nothing is rate limited: this is always a reply.
                if let Handled::Drop = handler.decide(pending, &mut out).await {
                    continue;
                }
            }
        }
        let Ok(n) = u16::try_from(out.len()) else {
            return;
        };
        frame.clear();
        frame.extend_from_slice(&n.to_be_bytes());
        frame.extend_from_slice(&out);
        if !matches!(
            tokio::time::timeout(IDLE, stream.write_all(&frame)).await,
            Ok(Ok(_))
        ) {
            return;
        }
    }
}
