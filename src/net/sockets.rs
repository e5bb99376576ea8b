//! The DNS listening sockets: one UDP socket and one TCP listener per DNS
//! runtime on each address, all on one port through `SO_REUSEPORT`. The
//! supervisor binds them once and hands them to every serving process.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Why the DNS sockets of an address cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A UDP socket.
    #[error("cannot bind DNS UDP {addr}")]
    Udp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A TCP listener.
    #[error("cannot bind DNS TCP {addr}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The address a socket was bound to cannot be read.
    #[error(transparent)]
    LocalAddr(#[from] std::io::Error),
    /// Port 0: every port tried had its TCP twin taken.
    #[error("cannot find a free port for DNS on {0}")]
    NoFreePort(SocketAddr),
}

/// Binds a UDP socket with `SO_REUSEPORT`, so every DNS runtime can have one.
fn udp_socket(addr: SocketAddr) -> Result<UdpSocket, BindError> {
    let bind = || -> std::io::Result<UdpSocket> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        // Room for bursts while a runtime is busy (the kernel may cap it).
        let _ = s.set_recv_buffer_size(4 << 20);
        s.bind(&addr.into())?;
        Ok(s.into())
    };
    bind().map_err(|source| BindError::Udp { addr, source })
}

/// Binds a TCP listener with `SO_REUSEPORT`.
fn tcp_listener(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let bind = || -> std::io::Result<TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        Ok(s.into())
    };
    bind().map_err(|source| BindError::Tcp { addr, source })
}

/// The DNS sockets of one address: `copies` UDP sockets and TCP listeners
/// on one port (port 0 picks a free port shared by all of them).
pub fn bind_dns(
    addr: SocketAddr,
    copies: usize,
) -> Result<Vec<(UdpSocket, TcpListener)>, BindError> {
    // With port 0, the first UDP bind picks the port; retry a few times in
    // case its TCP twin is taken.
    for _ in 0..20 {
        let first = udp_socket(addr)?;
        let bound = first.local_addr()?;
        let tcp = match tcp_listener(bound) {
            Ok(t) => t,
            Err(_) if addr.port() == 0 => continue,
            Err(e) => return Err(e),
        };
        let mut out = vec![(first, tcp)];
        for _ in 1..copies {
            out.push((udp_socket(bound)?, tcp_listener(bound)?));
        }
        return Ok(out);
    }
    Err(BindError::NoFreePort(addr))
}
