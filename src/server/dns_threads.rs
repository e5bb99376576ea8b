//! The DNS runtimes: one current-thread tokio runtime per core, each
//! serving its copy of every UDP socket and TCP listener, with a heartbeat
//! `/healthcheck` reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::State;

/// Starts the DNS servers on their own threads, one current-thread
/// runtime each; returns the threads.
pub fn start(
    state: &Arc<State>,
    sockets: Vec<Vec<(std::net::UdpSocket, std::net::TcpListener)>>,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let copies = sockets.first().map_or(0, Vec::len);
    // Regroup: runtime i gets copy i of every address.
    let mut per_runtime: Vec<Vec<(std::net::UdpSocket, std::net::TcpListener)>> =
        (0..copies).map(|_| Vec::new()).collect();
    for addr_sockets in sockets {
        for (i, pair) in addr_sockets.into_iter().enumerate() {
            per_runtime[i].push(pair);
        }
    }
    let mut threads = Vec::new();
    // One count per client network across every runtime's copy of a
    // TCP listener, so a client cannot hold its share once per copy.
    let tcp_clients = crate::net::clients::ClientSlots::new(state.config.load().per_client);
    for (i, pairs) in per_runtime.into_iter().enumerate() {
        let handler = state.dns.clone();
        let tcp_clients = tcp_clients.clone();
        let shutdown = shutdown.clone();
        let beat = Arc::new(AtomicU64::new(state.started.elapsed().as_millis() as u64));
        if let Ok(mut v) = state.heartbeats.lock() {
            v.push(beat.clone());
        }
        let started = state.started;
        let t = std::thread::Builder::new()
            .name(format!("dns-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start DNS runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    // The heartbeat shows /healthcheck that this runtime still runs tasks.
                    tokio::spawn(async move {
                        loop {
                            beat.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    });
                    let mut served = tokio::task::JoinSet::new();
                    for (udp, tcp) in pairs {
                        match (
                            tokio::net::UdpSocket::from_std(udp),
                            tokio::net::TcpListener::from_std(tcp),
                        ) {
                            (Ok(u), Ok(t)) => {
                                served.spawn(crate::dns::udp::serve(
                                    u,
                                    handler.clone(),
                                    shutdown.clone(),
                                ));
                                served.spawn(crate::dns::tcp::serve(
                                    t,
                                    handler.clone(),
                                    tcp_clients.clone(),
                                    shutdown.clone(),
                                ));
                            }
                            (Err(e), _) | (_, Err(e)) => {
                                tracing::error!(error = %e, "cannot register DNS socket")
                            }
                        }
                    }
                    shutdown.cancelled().await;
                    while served.join_next().await.is_some() {}
                });
            })?;
        threads.push(t);
    }
    Ok(threads)
}
