//! DNS Cookies (RFC 7873) with the interoperable server cookie of RFC 9018.
//!
//! A client that sends a cookie proves, the second time, that it really is
//! at its source address: only a host that received our earlier reply
//! knows the server cookie in it. Such queries are exempt from rate
//! limiting (rrl.rs), so a resolver whose /24 is being spoofed in a
//! flood keeps its answers.
//!
//! The server cookie is RFC 9018's version 1, so every node with the same
//! secret (a fleet, an anycast set, or BIND and Knot beside us) accepts the
//! others' cookies:
//!
//! ```text
//! Version (1) | Reserved (3) | Timestamp (4, unix seconds) | Hash (8)
//! Hash = SipHash-2-4(Client Cookie | Version | Reserved | Timestamp | Client-IP, Secret)
//! ```

use std::hash::Hasher as _;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

use crate::metrics::counter::Counter;

/// The EDNS option code of COOKIE (RFC 7873 §4).
pub const OPTION_CODE: u16 = 10;

/// A cookie is valid this long after its timestamp (RFC 9018 §4.3: one hour).
const VALID_PAST_SECS: u32 = 3600;
/// …and this far in the future (clock skew in an anycast set: five minutes).
const VALID_FUTURE_SECS: u32 = 300;
/// A valid cookie younger than this is echoed; an older one is renewed
/// (RFC 9018 §4.3: "at least if … more than half an hour old").
const RENEW_AFTER_SECS: u32 = 1800;

/// The COOKIE option of a query, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// A client cookie alone: the client has no server cookie of ours yet.
    Client([u8; 8]),
    /// A client cookie and what claims to be our server cookie (8 to 32
    /// bytes), not yet checked.
    Both([u8; 8], &'a [u8]),
}

/// What became of a query's COOKIE option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A client cookie alone: a fresh server cookie was sent.
    ClientOnly,
    /// A valid server cookie.
    Valid,
    /// A server cookie that was not ours, too old or for another address.
    Invalid,
    /// A COOKIE option of a bad length: FORMERR.
    Malformed,
    /// BADCOOKIE sent (`require_cookies`, a source over its rate).
    BadCookie,
}

impl Event {
    const ALL: [Event; 5] = [
        Event::ClientOnly,
        Event::Valid,
        Event::Invalid,
        Event::Malformed,
        Event::BadCookie,
    ];

    fn name(self) -> &'static str {
        match self {
            Event::ClientOnly => "client_only",
            Event::Valid => "valid",
            Event::Invalid => "invalid",
            Event::Malformed => "malformed",
            Event::BadCookie => "badcookie_sent",
        }
    }
}

/// COOKIE options seen since the server started, by [`Event`].
#[derive(Default)]
pub struct Counts([Counter; 5]);

impl Counts {
    /// Counts one.
    pub fn add(&self, event: Event) {
        self.0[event as usize].add(1);
    }

    /// (result, count) for each [`Event`].
    pub fn get(&self) -> Vec<(&'static str, u64)> {
        Event::ALL
            .iter()
            .map(|e| (e.name(), self.0[*e as usize].get()))
            .collect()
    }
}

/// Reads a COOKIE option's data: 8 bytes (client cookie), or 16 to 40
/// (client and server cookie). Any other length is malformed, and the
/// query gets FORMERR (RFC 7873 §5.2.2).
pub fn parse(data: &[u8]) -> Result<Presented<'_>, &'static str> {
    let client = |d: &[u8]| <[u8; 8]>::try_from(&d[..8]).expect("8 bytes");
    match data.len() {
        8 => Ok(Presented::Client(client(data))),
        16..=40 => Ok(Presented::Both(client(data), &data[8..])),
        _ => Err("COOKIE option of a length other than 8 or 16 to 40 bytes"),
    }
}

/// The server's secrets: the current one makes cookies; both check them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    current: [u8; 16],
    previous: Option<[u8; 16]>,
}

/// What checking a query's cookie gave: whether its server cookie was
/// valid, and the COOKIE option data for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The query carried a server cookie we made, for this client, recently.
    pub valid: bool,
    /// Client cookie and our server cookie (24 bytes), for the reply.
    pub reply: [u8; 24],
}

impl Secrets {
    /// Secrets that make cookies with `current` and also accept `previous`
    /// (during a rollover: RFC 9018 §5).
    pub fn new(current: [u8; 16], previous: Option<[u8; 16]>) -> Secrets {
        Secrets { current, previous }
    }

    /// Checks a query's cookie from `client_ip` at unix time `now` and
    /// makes the reply's: a valid server cookie younger than half an hour
    /// is echoed, anything else gets a fresh one.
    pub fn check(&self, presented: Presented<'_>, client_ip: IpAddr, now: u32) -> Checked {
        let (client, server) = match presented {
            Presented::Client(c) => (c, None),
            Presented::Both(c, s) => (c, Some(s)),
        };
        let stamp = server.and_then(|s| self.valid_stamp(&client, s, client_ip, now));
        let mut reply = [0u8; 24];
        reply[..8].copy_from_slice(&client);
        match (stamp, server) {
            (Some(t), Some(s))
                if now.wrapping_sub(t) < RENEW_AFTER_SECS
                    && self.hash(&self.current, &client, &s[..8], client_ip) == s[8..16] =>
            {
                reply[8..].copy_from_slice(s);
            }
            _ => reply[8..].copy_from_slice(&self.make(&client, client_ip, now)),
        }
        Checked {
            valid: stamp.is_some(),
            reply,
        }
    }

    /// A fresh version 1 server cookie for `client` at `client_ip`.
    pub fn make(&self, client: &[u8; 8], client_ip: IpAddr, now: u32) -> [u8; 16] {
        let mut cookie = [0u8; 16];
        cookie[0] = 1;
        cookie[4..8].copy_from_slice(&now.to_be_bytes());
        let hash = self.hash(&self.current, client, &cookie[..8], client_ip);
        cookie[8..].copy_from_slice(&hash);
        cookie
    }

    /// The timestamp of `server` when it is a version 1 cookie we (or a
    /// node with our secret, or with the previous one) made for `client`
    /// at `client_ip`, within an hour before `now` and five minutes after.
    /// The reserved bytes are hashed as received, not required to be zero
    /// (RFC 9018 §4.2).
    fn valid_stamp(
        &self,
        client: &[u8; 8],
        server: &[u8],
        client_ip: IpAddr,
        now: u32,
    ) -> Option<u32> {
        if server.len() != 16 || server[0] != 1 {
            return None;
        }
        let stamp = u32::from_be_bytes(server[4..8].try_into().ok()?);
        // Serial number arithmetic (RFC 1982): the age may wrap.
        let age = now.wrapping_sub(stamp);
        if age > VALID_PAST_SECS && stamp.wrapping_sub(now) > VALID_FUTURE_SECS {
            return None;
        }
        let head = &server[..8];
        let ok = |secret: &[u8; 16]| self.hash(secret, client, head, client_ip) == server[8..16];
        (ok(&self.current) || self.previous.as_ref().is_some_and(ok)).then_some(stamp)
    }

    /// SipHash-2-4 over client cookie, version, reserved, timestamp and
    /// client address: 20 bytes for IPv4, 32 for IPv6 (an IPv4-mapped IPv6
    /// source counts as IPv4, as the client sees itself).
    fn hash(&self, secret: &[u8; 16], client: &[u8; 8], head: &[u8], ip: IpAddr) -> [u8; 8] {
        let mut h = SipHasher24::new_with_key(secret);
        h.write(client);
        h.write(head);
        match ip {
            IpAddr::V4(v4) => h.write(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => h.write(&v4.octets()),
                None => h.write(&v6.octets()),
            },
        }
        h.finish().to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";

    /// RFC 9018 Appendix A.1: learning a new server cookie.
    #[test]
    fn rfc9018_a1_new_cookie() {
        let s = Secrets::new(unhex(SECRET), None);
        let client = unhex::<8>("2464c4abcf10c957");
        let got = s.check(
            Presented::Client(client),
            "198.51.100.100".parse().unwrap(),
            1559731985,
        );
        assert!(!got.valid);
        assert_eq!(
            hex::encode(got.reply),
            "2464c4abcf10c957010000005cf79f111f8130c3eee29480"
        );
    }

    /// A.2: 40 minutes later the same cookie is valid but renewed.
    #[test]
    fn rfc9018_a2_renewed_cookie() {
        let s = Secrets::new(unhex(SECRET), None);
        let opt = unhex::<24>("2464c4abcf10c957010000005cf79f111f8130c3eee29480");
        let got = s.check(
            parse(&opt).unwrap(),
            "198.51.100.100".parse().unwrap(),
            1559734385,
        );
        assert!(got.valid);
        assert_eq!(
            hex::encode(got.reply),
            "2464c4abcf10c957010000005cf7a871d4a564a1442aca77"
        );
    }

    /// A.3: reserved bytes set are hashed as received, and a fresh cookie
    /// (reserved zero) comes back.
    #[test]
    fn rfc9018_a3_reserved_bytes() {
        let s = Secrets::new(unhex(SECRET), None);
        let opt = unhex::<24>("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5");
        let ip = "203.0.113.203".parse().unwrap();
        // Its hash covers the reserved bytes as sent: valid within its hour
        // (the appendix's query comes later than that, so only the fresh
        // cookie below is checked at its time).
        assert!(s.check(parse(&opt).unwrap(), ip, 1559727985 + 60).valid);
        let got = s.check(parse(&opt).unwrap(), ip, 1559734700);
        assert!(!got.valid, "more than an hour old");
        assert_eq!(
            hex::encode(got.reply),
            "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e"
        );
    }

    /// A.4: IPv6, a cookie made with the previous secret still validates
    /// and the reply's is made with the new one.
    #[test]
    fn rfc9018_a4_ipv6_rolled_secret() {
        let s = Secrets::new(
            unhex("445536bcd2513298075a5d379663c962"),
            Some(unhex("dd3bdf9344b678b185a6f5cb60fca715")),
        );
        let opt = unhex::<24>("22681ab97d52c298010000005cf7c57926556bd0934c72f8");
        let ip = "2001:db8:220:1:59de:d0f4:8769:82b8".parse().unwrap();
        let got = s.check(parse(&opt).unwrap(), ip, 1559741961);
        assert!(got.valid);
        assert_eq!(
            hex::encode(got.reply),
            "22681ab97d52c298010000005cf7c609a6bb79d16625507a"
        );
        // Without the previous secret it is not valid.
        let only_new = Secrets::new(unhex("445536bcd2513298075a5d379663c962"), None);
        assert!(!only_new.check(parse(&opt).unwrap(), ip, 1559741961).valid);
    }

    #[test]
    fn stale_future_foreign_and_malformed() {
        let s = Secrets::new(unhex(SECRET), None);
        let ip: IpAddr = "198.51.100.100".parse().unwrap();
        let opt = unhex::<24>("2464c4abcf10c957010000005cf79f111f8130c3eee29480");
        let at = |now| s.check(parse(&opt).unwrap(), ip, now).valid;
        assert!(at(1559731985 + 3600));
        assert!(!at(1559731985 + 3601));
        assert!(at(1559731985 - 300));
        assert!(!at(1559731985 - 301));
        // Another client address, a fresh reply echoed while young.
        assert!(
            !s.check(
                parse(&opt).unwrap(),
                "198.51.100.101".parse().unwrap(),
                1559731985
            )
            .valid
        );
        let young = s.check(parse(&opt).unwrap(), ip, 1559731985 + 10);
        assert_eq!(young.reply, opt);
        // A mapped IPv6 source is its IPv4 address.
        assert!(
            s.check(
                parse(&opt).unwrap(),
                "::ffff:198.51.100.100".parse().unwrap(),
                1559731985
            )
            .valid
        );
        for len in [0, 7, 9, 15, 41] {
            assert!(parse(&vec![0; len]).is_err(), "{len}");
        }
        assert!(matches!(parse(&[0; 40]), Ok(Presented::Both(_, s)) if s.len() == 32));
    }
}
