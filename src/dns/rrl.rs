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
//! (cookies.rs) and exempt sources are never limited (the caller
//! does not ask).
//!
//! The accounts are one `AtomicU64` each in a fixed table indexed by a
//! keyed hash of (class, prefix, name): no lock, one compare-and-swap per
//! reply on the DNS threads, memory fixed at start. Two keys that meet in a
//! slot take it over from each other (the newcomer starts with a full
//! account), which only ever errs towards answering, as NSD's table does.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::rr::{LowerName, RecordType};

use crate::config::Rrl as Settings;
use crate::metrics::counter::Counter;

/// The kind of reply an account counts, as RRL defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// What rate limiting did with a reply it limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sent truncated.
    Slipped,
    /// Not sent.
    Dropped,
    /// Sent whole: `dry_run` is on.
    WouldLimit,
}

/// Replies limited since the server started, per class and action. Kept by
/// the DNS handler, so a limiter replaced on SIGHUP does not reset them.
pub struct Counts([[Counter; 3]; 4]);

impl Default for Counts {
    fn default() -> Self {
        Counts(std::array::from_fn(|_| {
            std::array::from_fn(|_| Counter::new())
        }))
    }
}

impl Counts {
    /// Counts one limited reply.
    pub fn add(&self, class: Class, action: Action) {
        self.0[class as usize][action as usize].add(1);
    }

    /// Per class: (class, slipped, dropped, would limit).
    pub fn get(&self) -> Vec<(&'static str, u64, u64, u64)> {
        Class::ALL
            .iter()
            .map(|c| {
                let n = &self.0[*c as usize];
                (c.name(), n[0].get(), n[1].get(), n[2].get())
            })
            .collect()
    }
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
    /// Keyed per process (foldhash with a random seed: a few nanoseconds
    /// per reply, and an attacker cannot aim keys at one slot).
    keys: hashbrown::DefaultHashBuilder,
    /// Random per limiter (from `keys`), mixed into account keys.
    seed: [u64; 3],
    start: u64,
    /// Tells this limiter's leases from a replaced one's (SIGHUP).
    id: u32,
    top: Top,
}

/// A thread takes this fraction of an account's rate at once while the
/// account has credit, and answers from it without touching the shared
/// slot: a name asked a hundred thousand times a second from one network
/// (a resolver farm behind one /24) would otherwise make every DNS thread
/// write the same cache line for every reply. Credit a thread holds at the
/// end of a second is lost, so a source right at its rate may get up to
/// one lease per thread less in that second.
const LEASE_DIVISOR: i32 = 16;

/// Credit a thread holds: one entry per direct-mapped account key.
#[derive(Debug, Clone, Copy, Default)]
struct Lease {
    limiter: u32,
    key: u64,
    second: u16,
    left: i32,
}

const LEASES: usize = 64;

thread_local! {
    static LEASED: std::cell::RefCell<[Lease; LEASES]> =
        const { std::cell::RefCell::new([Lease { limiter: 0, key: 0, second: 0, left: 0 }; LEASES]) };
}

static NEXT_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Takes one reply of credit this thread holds for account `key` in
/// second `now`, if it holds any.
fn take_leased(limiter: u32, key: u64, now: u16) -> bool {
    LEASED.with(|l| {
        let mut l = l.borrow_mut();
        let e = &mut l[key as usize % LEASES];
        if e.limiter == limiter && e.key == key && e.second == now && e.left > 0 {
            e.left -= 1;
            true
        } else {
            false
        }
    })
}

/// Keeps `left` replies of credit for account `key` on this thread, for
/// second `now`.
fn keep_lease(limiter: u32, key: u64, now: u16, left: i32) {
    LEASED.with(|l| {
        l.borrow_mut()[key as usize % LEASES] = Lease {
            limiter,
            key,
            second: now,
            left,
        };
    });
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
        let keys = hashbrown::DefaultHashBuilder::default();
        // Odd, so no multiply by a seed word loses bits.
        let seed = [1u64, 2, 3].map(|i| keys.hash_one(i) | 1);
        RateLimiter {
            slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
            mask: size - 1,
            keys,
            seed,
            start: coarse_secs(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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
        crate::net::clients::masked(src, bits)
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
        let h = self.account_key(class, prefix, subject);
        let rate = match class {
            Class::Answer => self.settings.responses_per_second,
            Class::NxDomain => self.settings.nxdomains_per_second,
            Class::Error | Class::Refused => self.settings.errors_per_second,
        } as i32;
        let now = (coarse_secs().wrapping_sub(self.start) as u16).wrapping_add(1);
        if take_leased(self.id, h, now) {
            return Verdict::Send;
        }
        let lease = (rate / LEASE_DIVISOR).max(1);
        let (verdict, granted) = self.debit(
            &self.slots[h as usize & self.mask],
            (h >> 48) as u16 | 1,
            now,
            rate,
            lease,
        );
        match verdict {
            Verdict::Send if granted > 1 => keep_lease(self.id, h, now, granted - 1),
            Verdict::Send => {}
            _ => self.top.add(prefix, h as usize),
        }
        verdict
    }

    /// The account of a reply: class, source prefix and subject mixed
    /// with this limiter's random seed by two folded multiplies (foldhash's
    /// mixing step, without hashing a tuple field by field: this runs on
    /// every limited reply). `subject` is already keyed ([`Self::subject`]).
    fn account_key(&self, class: Class, prefix: IpAddr, subject: u64) -> u64 {
        let (hi, lo) = match prefix {
            IpAddr::V4(a) => (0, u64::from(u32::from(a))),
            // A /56 leaves the low half zero; the top bit marks the family.
            IpAddr::V6(a) => {
                let x = u128::from(a);
                ((x >> 64) as u64, x as u64 | 1 << 63)
            }
        };
        let a = fold_mul(lo ^ self.seed[0], hi ^ subject ^ self.seed[1]);
        fold_mul(a ^ class as u64, self.seed[2])
    }

    /// BIND's account rule (`debit_rrl_entry` in its `rrl.c`), as one
    /// compare-and-swap. A reply that may be sent takes up to `lease`
    /// replies of credit at once (the caller keeps the rest for this
    /// thread, [`keep_lease`]); returns the verdict and the credit taken.
    fn debit(&self, slot: &AtomicU64, tag: u16, now: u16, rate: i32, lease: i32) -> (Verdict, i32) {
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
            let mut granted = 0;
            let verdict = if acc.balance >= 1 {
                granted = lease.min(acc.balance);
                acc.balance -= granted;
                Verdict::Send
            } else {
                acc.balance = (acc.balance - 1).max(floor);
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
                Ok(_) => return (verdict, granted),
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

/// Seconds of the monotonic clock at its coarse resolution (a few
/// milliseconds, read without a system call or a fence: accounts only
/// need the second).
fn coarse_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC_COARSE
    // exists on every Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64
}

/// A 64 × 64 → 128-bit multiply folded to 64 bits.
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    p as u64 ^ (p >> 64) as u64
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
            match l
                .debit(slot, 7, now, l.settings.responses_per_second as i32, 1)
                .0
            {
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
    fn leases_never_answer_more_than_the_rate() {
        let l = std::sync::Arc::new(limiter(160, 0, 1));
        let name = LowerName::from(hickory_proto::rr::Name::from_ascii("a.example.").unwrap());
        let subject = l.subject(Subject::Name(&name, RecordType::A));
        let sent = |l: std::sync::Arc<RateLimiter>| {
            std::thread::spawn(move || {
                (0..1000)
                    .filter(|_| {
                        l.check("192.0.2.1".parse().unwrap(), Class::Answer, subject)
                            == Verdict::Send
                    })
                    .count()
            })
        };
        let (a, b) = (sent(l.clone()), sent(l.clone()));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        // Both threads ran within one or two seconds of the coarse clock:
        // at most two seconds' credit, and at least one second's, less the
        // leases left on the threads.
        assert!(a + b <= 2 * 160 && a + b >= 160 - 2 * 10, "{a} + {b}");
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
