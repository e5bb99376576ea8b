//! Counters that many threads add to without sharing a cache line.
//!
//! A plain `AtomicU64` bumped on every query by every DNS thread makes the
//! cores pass its cache line back and forth on each increment. A
//! [`Counter`] keeps one padded slot per thread (threads hash onto
//! [`SHARDS`] slots), so an increment touches memory only its own thread
//! writes; reading sums the slots.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots per counter: more than the threads that count on a hot path.
pub const SHARDS: usize = 16;

/// One slot on a cache line of its own (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines on x86).
#[repr(align(128))]
struct Slot(AtomicU64);

/// A counter sharded by thread.
pub struct Counter {
    slots: [Slot; SHARDS],
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot index, handed out in order of first use.
    static SHARD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// The slot index of the calling thread.
pub fn shard() -> usize {
    SHARD.with(|s| *s)
}

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter {
            slots: [const { Slot(AtomicU64::new(0)) }; SHARDS],
        }
    }

    /// Adds `n` on the calling thread's slot.
    pub fn add(&self, n: u64) {
        self.slots[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total over every slot.
    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_add_up() {
        let c = std::sync::Arc::new(Counter::new());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.add(5);
        assert_eq!(c.get(), 20_005);
    }
}
