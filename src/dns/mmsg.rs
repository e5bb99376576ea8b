//! Batched UDP receive and send (`recvmmsg`/`sendmmsg`): one system call
//! moves up to [`BATCH`] datagrams each way. Under load most of the cost of
//! a static DNS answer is the two system calls around it (NSD batches the
//! same way), so this is where a loop of our own pays.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;

/// Largest query read; a longer datagram is reported as truncated (no DNS
/// query comes near it: a question and an OPT record fit in 300 bytes).
pub const MAX_QUERY: usize = 4096;

/// Received datagrams: buffers, senders and lengths, reused for every batch.
pub struct RecvBatch {
    bufs: Box<[[u8; MAX_QUERY]; BATCH]>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    lens: [usize; BATCH],
    truncated: [bool; BATCH],
}

impl RecvBatch {
    /// Buffers for one batch (128 KiB).
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: Box::new([[0; MAX_QUERY]; BATCH]),
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid
            // (unspecified) value.
            addrs: Box::new(unsafe { zeroed() }),
            lens: [0; BATCH],
            truncated: [false; BATCH],
        }
    }

    /// Reads up to [`BATCH`] datagrams from the non-blocking socket `fd`
    /// without waiting; `WouldBlock` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero iovec and mmsghdr values are valid; every pointer
        // set below points into `self`, which outlives the call.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovecs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` holds BATCH initialised headers whose buffers and
        // name storage are valid for writes of the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().take(n).enumerate() {
            self.lens[i] = (h.msg_len as usize).min(MAX_QUERY);
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        Ok(n)
    }

    /// Datagram `i` of the last batch: its bytes and sender (`None` for a
    /// datagram longer than [`MAX_QUERY`] or from an address family that
    /// is not IP).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if self.truncated[i] {
            return None;
        }
        let addr = from_storage(&self.addrs[i])?;
        Some((&self.bufs[i][..self.lens[i]], addr))
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

/// Sends `replies` (destination, bytes) on the non-blocking socket `fd` in
/// as few calls as the kernel allows; returns how many were sent before it
/// would block (`WouldBlock` when none was). A datagram the kernel refuses
/// outright is skipped and counted as sent.
pub fn send(fd: RawFd, replies: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < replies.len() {
        let chunk = &replies[sent..replies.len().min(sent + BATCH)];
        // SAFETY: as in `RecvBatch::recv`; the pointers below point into
        // locals and into `replies`, which outlive the call. sendmmsg only
        // reads through them.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, (addr, bytes)) in chunk.iter().enumerate() {
            let len = to_storage(addr, &mut addrs[i]);
            iovecs[i] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = len;
            h.msg_iov = &mut iovecs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: the first `chunk.len()` headers are initialised.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if sent > 0 => return Ok(sent),
                io::ErrorKind::WouldBlock => return Err(err),
                _ => {
                    // A datagram the kernel refuses (an unreachable
                    // destination, say) must not hold back the rest: it is
                    // skipped, and counts as sent.
                    tracing::debug!(error = %err, dest = %chunk[0].0, "cannot send a DNS reply");
                    sent += 1;
                    continue;
                }
            }
        }
        sent += n as usize;
    }
    Ok(sent)
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: &SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // socket address.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_round_trip() {
        for addr in ["192.0.2.7:53", "[2001:db8::1]:5353"] {
            let addr: SocketAddr = addr.parse().unwrap();
            // SAFETY: all zeroes is a valid sockaddr_storage.
            let mut s: libc::sockaddr_storage = unsafe { zeroed() };
            to_storage(&addr, &mut s);
            assert_eq!(from_storage(&s), Some(addr));
        }
    }

    #[test]
    fn a_batch_goes_both_ways() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(
            batch.recv(server.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..40u8 {
            client
                .send_to(&[i; 3], server.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let n = batch.recv(server.as_raw_fd()).unwrap();
        assert_eq!(n, BATCH);
        let (bytes, from) = batch.get(5).unwrap();
        assert_eq!((bytes, from), (&[5u8; 3][..], client.local_addr().unwrap()));
        let replies: Vec<(SocketAddr, &[u8])> = (0..n)
            .map(|i| batch.get(i).unwrap())
            .map(|(b, a)| (a, b))
            .collect();
        assert_eq!(send(server.as_raw_fd(), &replies).unwrap(), BATCH);
        let mut buf = [0u8; 16];
        for i in 0..BATCH as u8 {
            let (len, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], &[i; 3]);
        }
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 40 - BATCH);
    }
}
