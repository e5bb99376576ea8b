//! Decision counting without a lock shared between query threads.
//!
//! Every thread that counts owns a [`Slot`]: a map it alone writes, behind
//! a mutex that only it and the merger ever take, so the lock is
//! uncontended on the query path (an uncontended lock is one atomic
//! exchange; a shared one made every DNS thread queue behind the others).
//! [`Tally::drain`] walks the registry of slots, takes what each counted
//! and hands it to the caller; a background task calls it every second
//! and readers call it before they read, so views are exact.

use std::cell::RefCell;

// hashbrown's default hasher, not SipHash: three lookups per decision on
// the query path, with keys the operator's apps choose (never a client).
use hashbrown::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What one thread counted for one app version since the last drain.
#[derive(Debug, Default)]
struct AppLocal {
    name: String,
    /// provider → reason → count.
    counts: HashMap<String, HashMap<String, u64>>,
    /// failure kind → count.
    failures: HashMap<&'static str, u64>,
}

/// One thread's counts, keyed by the app's registry version (unique per
/// loaded app version, so name and version are one key).
type Slot = Mutex<HashMap<u64, AppLocal>>;

thread_local! {
    /// This thread's slot in each tally it has counted into.
    static MINE: RefCell<Vec<(u64, Arc<Slot>)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One drained count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    /// App name.
    pub app: String,
    /// The app's registry version.
    pub version: u64,
    /// Provider chosen ("" for none).
    pub provider: String,
    /// Reason code ("" when the app set none).
    pub reason: String,
    /// Decisions.
    pub n: u64,
}

/// Per-thread decision counters with a registry the merger walks.
pub struct Tally {
    id: u64,
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            slots: Mutex::new(Vec::new()),
        }
    }
}

impl Tally {
    /// Counts one decision on the calling thread.
    pub fn record(
        &self,
        app: &str,
        version: u64,
        provider: &str,
        reason: &str,
        failure: Option<&'static str>,
    ) {
        self.count(app, version, Some((provider, reason)), failure);
    }

    fn count(
        &self,
        app: &str,
        version: u64,
        decision: Option<(&str, &str)>,
        failure: Option<&'static str>,
    ) {
        MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            let i = match mine.iter().position(|(id, _)| *id == self.id) {
                Some(i) => i,
                None => {
                    let s = Arc::new(Slot::default());
                    if let Ok(mut all) = self.slots.lock() {
                        all.push(s.clone());
                    }
                    mine.push((self.id, s));
                    mine.len() - 1
                }
            };
            let slot = &mine[i].1;
            let Ok(mut local) = slot.lock() else { return };
            let a = local.entry(version).or_insert_with(|| AppLocal {
                name: app.to_string(),
                ..AppLocal::default()
            });
            if let Some((provider, reason)) = decision {
                // Look up by &str first: no allocation once a key has been seen.
                let reasons = match a.counts.get_mut(provider) {
                    Some(r) => r,
                    None => a.counts.entry(provider.to_string()).or_default(),
                };
                match reasons.get_mut(reason) {
                    Some(n) => *n += 1,
                    None => {
                        reasons.insert(reason.to_string(), 1);
                    }
                }
            }
            if let Some(kind) = failure {
                *a.failures.entry(kind).or_default() += 1;
            }
        });
    }

    /// Takes everything counted since the last drain: decisions, and
    /// failures as (app, kind, count). Slots of threads that have ended
    /// are dropped once emptied.
    pub fn drain(&self) -> (Vec<Drained>, Vec<(String, &'static str, u64)>) {
        let slots: Vec<Arc<Slot>> = match self.slots.lock() {
            Ok(mut all) => {
                // Only the registry holds a slot whose thread ended; it is
                // drained one last time below, then forgotten.
                let snapshot = all.clone();
                all.retain(|s| Arc::strong_count(s) > 2);
                snapshot
            }
            Err(_) => return (Vec::new(), Vec::new()),
        };
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for slot in slots {
            let taken = match slot.lock() {
                Ok(mut m) => std::mem::take(&mut *m),
                Err(_) => continue,
            };
            for (version, a) in taken {
                for (provider, reasons) in a.counts {
                    for (reason, n) in reasons {
                        out.push(Drained {
                            app: a.name.clone(),
                            version,
                            provider: provider.clone(),
                            reason,
                            n,
                        });
                    }
                }
                for (kind, n) in a.failures {
                    failures.push((a.name.clone(), kind, n));
                }
            }
        }
        (out, failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(d: &[Drained]) -> u64 {
        d.iter().map(|d| d.n).sum()
    }

    #[test]
    fn threads_count_apart_and_drain_together() {
        let t = Arc::new(Tally::default());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        t.record("www", 7, if i % 2 == 0 { "a" } else { "b" }, "R", None);
                    }
                    t.record("www", 7, "a", "fallback", Some("timeout"));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let (d, f) = t.drain();
        assert_eq!(total(&d), 4004);
        let a: u64 = d
            .iter()
            .filter(|d| d.provider == "a" && d.reason == "R")
            .map(|d| d.n)
            .sum();
        assert_eq!(a, 2000);
        assert_eq!(f.iter().map(|f| f.2).sum::<u64>(), 4);
        // Drained once: the ended threads' slots are gone, nothing repeats.
        let (d, _) = t.drain();
        assert!(d.is_empty());
        assert!(t.slots.lock().unwrap().is_empty());
    }

    #[test]
    fn two_tallies_on_one_thread_stay_apart() {
        let (a, b) = (Tally::default(), Tally::default());
        a.record("x", 1, "p", "", None);
        b.record("y", 2, "q", "", None);
        b.record("y", 2, "q", "", None);
        assert_eq!(total(&a.drain().0), 1);
        assert_eq!(total(&b.drain().0), 2);
        a.record("x", 1, "p", "", None);
        assert_eq!(total(&a.drain().0), 1);
    }
}
