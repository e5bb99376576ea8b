//! Response rate limiting (RRL) of UDP replies, as BIND, NSD and Knot do
//! it, so a spoofed-source flood cannot turn the server into an amplifier
//! aimed at the spoofed address.
//!
//! Replies are counted per *source prefix* (`ipv4_prefix`, `ipv6_prefix`)
//! and *class*: the same answer (query name and type, or app name and
//! type), NXDOMAIN per zone, errors per source, REFUSED per source. Each
//! (prefix, class) has an account credited its rate every second, up to
//! one second's worth, and debited one per reply; a reply that finds it
//! empty is *limited*: every `slip`th such reply goes out truncated (TC=1:
//! a real resolver retries over TCP, which a spoofer cannot), the rest are
//! dropped. As in BIND, a limited reply still debits the account, down to
//! `window_secs` seconds of replies owed, so a source must stay under its
//! rate for a while before it is answered again.
//!
//! TCP replies, replies to queries with a valid server cookie
//! ([`super::cookies`]) and exempt sources are never limited (the caller
//! does not ask).
//!
//! The accounts are one `AtomicU64` each in a fixed table indexed by a
//! keyed hash of (class, prefix, name): no lock, one compare-and-swap per
//! reply on the DNS threads, memory fixed at start. Two keys that meet in a
//! slot take it over from each other (the newcomer starts with a full
//! account), which only ever errs towards answering, as NSD's table does.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hickory_proto::rr::{LowerName, RecordType};

use crate::config::Rrl as Settings;

/// The kind of reply an account counts, as RRL defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Records or NODATA: per source and name (and type).
    Answer,
    /// NXDOMAIN: per source and zone, so random names in one zone count
    /// together.
    NxDomain,
    /// FORMERR, SERVFAIL, NOTIMP, BADVERS: per source.
    Error,
    /// REFUSED (names outside our zones, other classes, transfers): per
    /// source.
    Refused,
}

impl Class {
    /// Every class, in the order of [`Class::name`].
    pub const ALL: [Class; 4] = [Class::Answer, Class::NxDomain, Class::Error, Class::Refused];

    /// The label in `/metrics` and `/debug/vars`.
    pub fn name(self) -> &'static str {
        match self {
            Class::Answer => "answer",
            Class::NxDomain => "nxdomain",
            Class::Error => "error",
            Class::Refused => "refused",
        }
    }
}

/// What a reply's account says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the reply.
    Send,
    /// Send it truncated (header and question, TC set).
    Slip,
    /// Send nothing.
    Drop,
}

/// What a reply is about, for its account: the name part of the key.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A static name or the apex: the name and the type asked.
    Name(&'a LowerName, RecordType),
    /// An app's names (any prefix in front counts as the app): the app and
    /// the type asked.
    App(&'a str, RecordType),
    /// A zone (for NXDOMAIN).
    Zone(&'a LowerName),
}

/// The limiter: settings, the account table and the counters.
pub struct RateLimiter {
    settings: Settings,
    slots: Box<[AtomicU64]>,
    mask: usize,
    keys: std::hash::RandomState,
    start: Instant,
    top: Top,
}

/// Replies limited per source prefix (approximate: a shard busy at the
/// moment skips the count), halved when a shard grows past
/// [`Top::SHARD_CAP`] so the heavy sources stay and the rest fade.
struct Top {
    shards: [Mutex<HashMap<IpAddr, u64>>; 8],
}

impl Top {
    const SHARD_CAP: usize = 512;

    fn add(&self, prefix: IpAddr, shard: usize) {
        let Ok(mut map) = self.shards[shard % self.shards.len()].try_lock() else {
            return;
        };
        *map.entry(prefix).or_default() += 1;
        if map.len() > Self::SHARD_CAP {
            map.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
        }
    }

    fn top(&self, n: usize) -> Vec<(IpAddr, u64)> {
        let mut all: Vec<(IpAddr, u64)> = self
            .shards
            .iter()
            .flat_map(|s| {
                let map = s.lock().unwrap_or_else(|p| p.into_inner());
                map.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// One account packed in 64 bits: tag (16) | second (16) | slip count (8)
/// | balance (24, signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Account {
    tag: u16,
    second: u16,
    slip: u8,
    balance: i32,
}

impl Account {
    fn unpack(v: u64) -> Account {
        Account {
            tag: (v >> 48) as u16,
            second: (v >> 32) as u16,
            slip: (v >> 24) as u8,
            // Sign-extend the low 24 bits.
            balance: ((v as u32) << 8) as i32 >> 8,
        }
    }

    fn pack(self) -> u64 {
        (u64::from(self.tag) << 48)
            | (u64::from(self.second) << 32)
            | (u64::from(self.slip) << 24)
            | u64::from(self.balance as u32 & 0x00FF_FFFF)
    }
}

impl RateLimiter {
    /// A limiter with `settings` (checked by the configuration).
    pub fn new(settings: Settings) -> RateLimiter {
        let size = settings.table_size.next_power_of_two();
        RateLimiter {
            slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
            mask: size - 1,
            keys: std::hash::RandomState::new(),
            start: Instant::now(),
            top: Top {
                shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            },
            settings,
        }
    }

    /// The settings this limiter runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether replies to `src` are never limited.
    pub fn exempt(&self, src: IpAddr) -> bool {
        self.settings.exempt.iter().any(|net| net.contains(&src))
    }

    /// The source prefix `src` is counted by.
    pub fn prefix(&self, src: IpAddr) -> IpAddr {
        let bits = match src {
            IpAddr::V4(_) => self.settings.ipv4_prefix,
            IpAddr::V6(_) => self.settings.ipv6_prefix,
        };
        crate::clients::masked(src, bits)
    }

    /// The account key of a subject: hashed once per query, when the name
    /// is planned, and kept with the reply.
    pub fn subject(&self, subject: Subject<'_>) -> u64 {
        self.keys.hash_one(subject_key(subject))
    }

    /// Debits the account of a UDP reply of `class` about `subject` (from
    /// [`RateLimiter::subject`]; errors and REFUSED ignore it) to `src`
    /// (not exempt: the caller checked) and says what to do with it. In
    /// dry-run mode the verdict is what would be done; the caller sends
    /// anyway.
    pub fn check(&self, src: IpAddr, class: Class, subject: u64) -> Verdict {
        let prefix = self.prefix(src);
        let subject = match class {
            Class::Answer | Class::NxDomain => subject,
            Class::Error | Class::Refused => 0,
        };
        let h = self.keys.hash_one((class, prefix, subject));
        let rate = match class {
            Class::Answer => self.settings.responses_per_second,
            Class::NxDomain => self.settings.nxdomains_per_second,
            Class::Error | Class::Refused => self.settings.errors_per_second,
        } as i32;
        let now = (self.start.elapsed().as_secs() as u16).wrapping_add(1);
        let verdict = self.debit(
            &self.slots[h as usize & self.mask],
            (h >> 48) as u16 | 1,
            now,
            rate,
        );
        if verdict != Verdict::Send {
            self.top.add(prefix, h as usize);
        }
        verdict
    }

    /// BIND's account rule (`debit_rrl_entry` in its `rrl.c`), as one
    /// compare-and-swap.
    fn debit(&self, slot: &AtomicU64, tag: u16, now: u16, rate: i32) -> Verdict {
        let window = self.settings.window_secs.min(u32::from(u16::MAX)) as i32;
        let floor = -(window * rate);
        let slip = self.settings.slip;
        let mut old = slot.load(Ordering::Relaxed);
        loop {
            let was = Account::unpack(old);
            // A thread that read the clock just before another may see the
            // account a second ahead: no time has passed for it.
            let ahead = (now.wrapping_sub(was.second) as i16) < 0;
            let (age, now) = if ahead {
                (0, was.second)
            } else {
                (i32::from(now.wrapping_sub(was.second)), now)
            };
            let mut acc = if old == 0 || was.tag != tag || age > window {
                Account {
                    tag,
                    second: now,
                    slip: 0,
                    balance: rate,
                }
            } else {
                let balance = was.balance.saturating_add(rate.saturating_mul(age));
                if balance >= rate {
                    Account {
                        second: now,
                        slip: 0,
                        balance: rate,
                        ..was
                    }
                } else {
                    Account {
                        second: now,
                        balance,
                        ..was
                    }
                }
            };
            acc.balance -= 1;
            let verdict = if acc.balance >= 0 {
                Verdict::Send
            } else {
                acc.balance = acc.balance.max(floor);
                match slip {
                    0 => Verdict::Drop,
                    _ => {
                        let first = acc.slip == 0;
                        acc.slip += 1;
                        if acc.slip >= slip {
                            acc.slip = 0;
                        }
                        if first { Verdict::Slip } else { Verdict::Drop }
                    }
                }
            };
            match slot.compare_exchange_weak(old, acc.pack(), Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return verdict,
                Err(now_there) => old = now_there,
            }
        }
    }

    /// The source prefixes limited most (approximate counts), at most `n`.
    pub fn top_limited(&self, n: usize) -> Vec<(String, u64)> {
        let bits = |ip: &IpAddr| match ip {
            IpAddr::V4(_) => self.settings.ipv4_prefix,
            IpAddr::V6(_) => self.settings.ipv6_prefix,
        };
        self.top
            .top(n)
            .into_iter()
            .map(|(ip, count)| (format!("{ip}/{}", bits(&ip)), count))
            .collect()
    }
}

/// The hashed part of a subject: a tag and what names it.
fn subject_key(s: Subject<'_>) -> (u8, Option<&LowerName>, &str, u16) {
    match s {
        Subject::Name(n, t) => (1, Some(n), "", u16::from(t)),
        Subject::App(a, t) => (2, None, a, u16::from(t)),
        Subject::Zone(z) => (3, Some(z), "", 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, slip: u8, window: u32) -> RateLimiter {
        RateLimiter::new(Settings {
            responses_per_second: rate,
            nxdomains_per_second: rate,
            errors_per_second: rate,
            slip,
            window_secs: window,
            table_size: 1024,
            exempt: Vec::new(),
            ..Settings::default()
        })
    }

    fn tally(l: &RateLimiter, slot: &AtomicU64, n: usize, now: u16) -> (usize, usize, usize) {
        let mut t = (0, 0, 0);
        for _ in 0..n {
            match l.debit(slot, 7, now, l.settings.responses_per_second as i32) {
                Verdict::Send => t.0 += 1,
                Verdict::Slip => t.1 += 1,
                Verdict::Drop => t.2 += 1,
            }
        }
        t
    }

    #[test]
    fn packs_negative_balances() {
        for balance in [0, 1, -1, 8_000_000, -8_000_000] {
            let a = Account {
                tag: 0xBEEF,
                second: 65535,
                slip: 9,
                balance,
            };
            assert_eq!(Account::unpack(a.pack()), a);
        }
    }

    #[test]
    fn a_flood_gets_its_rate_then_only_slips() {
        let l = limiter(10, 2, 3);
        let slot = AtomicU64::new(0);
        // First second: 10 answered, the other 90 alternate slip / drop.
        assert_eq!(tally(&l, &slot, 100, 1), (10, 45, 45));
        // The account owes 3 s of replies: a second's credit does not
        // bring it back while the flood goes on.
        assert_eq!(tally(&l, &slot, 100, 2), (0, 50, 50));
        // Quiet for longer than the window: a full account again.
        assert_eq!(tally(&l, &slot, 10, 7).0, 10);
    }

    #[test]
    fn slip_one_and_zero() {
        let l = limiter(5, 1, 1);
        assert_eq!(tally(&l, &AtomicU64::new(0), 25, 1), (5, 20, 0));
        let l = limiter(5, 0, 1);
        assert_eq!(tally(&l, &AtomicU64::new(0), 25, 1), (5, 0, 20));
        let l = limiter(5, 3, 1);
        assert_eq!(tally(&l, &AtomicU64::new(0), 35, 1), (5, 10, 20));
    }

    #[test]
    fn under_the_rate_nothing_is_limited() {
        let l = limiter(10, 2, 15);
        let slot = AtomicU64::new(0);
        for second in 1..30 {
            assert_eq!(tally(&l, &slot, 10, second), (10, 0, 0), "second {second}");
        }
    }

    #[test]
    fn classes_and_prefixes_are_separate_accounts() {
        let l = limiter(3, 0, 1);
        let name = LowerName::from(hickory_proto::rr::Name::from_ascii("a.example.").unwrap());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_24: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let send = |ip, class, subject| l.check(ip, class, l.subject(subject)) == Verdict::Send;
        let q = Subject::Name(&name, RecordType::A);
        assert!((0..3).all(|_| send(a, Class::Answer, q)));
        assert!(
            !send(same_24, Class::Answer, q),
            "same /24 shares the account"
        );
        assert!(send(other, Class::Answer, q));
        assert!(send(
            a,
            Class::Answer,
            Subject::Name(&name, RecordType::AAAA)
        ));
        assert_eq!(l.check(a, Class::Error, 0), Verdict::Send);
        assert_eq!(l.top_limited(5), vec![("192.0.2.0/24".to_string(), 1)]);
    }
}
