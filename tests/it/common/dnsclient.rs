//! A tiny DNS client for tests: one query over UDP, answers as strings.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Response code.
    pub rcode: ResponseCode,
    /// Answer values (A/AAAA addresses, CNAME targets), in order.
    pub answers: Vec<String>,
    /// TTL of the first answer.
    pub ttl: Option<u32>,
}

/// Sends one query; `None` on timeout.
pub fn query(
    sock: &UdpSocket,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    id: u16,
) -> Option<Reply> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).ok()?, qtype));
    let bytes = m.to_vec().ok()?;
    sock.send_to(&bytes, server).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let resp = Message::from_vec(&buf[..n]).ok()?;
        if resp.metadata.id != id {
            continue; // a late reply to an earlier query
        }
        let answers = resp
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(a) => Some(a.0.to_string()),
                RData::CNAME(c) => Some(c.0.to_ascii()),
                _ => None,
            })
            .collect();
        let ttl = resp.answers.first().map(|r| r.ttl);
        return Some(Reply {
            rcode: resp.metadata.response_code,
            answers,
            ttl,
        });
    }
}

/// A UDP socket with a read timeout.
pub fn socket(timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s
}
