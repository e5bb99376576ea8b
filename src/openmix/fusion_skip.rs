//! Fusion values whose `onFusion` ran away, so no instance runs it again.
//!
//! A call stopped by its budget poisons the instance, which is rebuilt;
//! a rebuilt instance is told every current Fusion value on its first
//! decision. Were the value that ran away among them, every rebuilt
//! instance would run it again, and the app would be on its fallback until
//! the value changed. So the value is recorded here as delivered (per app
//! version, for every thread) and skipped from then on: the next decision
//! is the app's again.

use std::sync::Mutex;

/// Most values remembered; the oldest are forgotten first.
const KEPT: usize = 256;

/// (app, version, provider alias, value).
type Entry = (String, u64, String, String);

static SKIPPED: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Records that `onFusion(alias, body)` of `app` at `version` ran away.
pub fn record(app: &str, version: u64, alias: &str, body: &str) {
    if let Ok(mut s) = SKIPPED.lock() {
        if s.len() >= KEPT {
            s.remove(0);
        }
        s.push((app.into(), version, alias.into(), body.into()));
    }
}

/// Whether `onFusion(alias, body)` of `app` at `version` ran away before.
pub fn contains(app: &str, version: u64, alias: &str, body: &str) -> bool {
    SKIPPED.lock().is_ok_and(|s| {
        s.iter()
            .any(|(a, v, p, b)| a == app && *v == version && p == alias && b == body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_version_and_forgets_the_oldest() {
        record("fz", 1, "cdn_a", "{}");
        assert!(contains("fz", 1, "cdn_a", "{}"));
        assert!(!contains("fz", 2, "cdn_a", "{}"));
        assert!(!contains("fz", 1, "cdn_a", "{\"x\":1}"));
        for i in 0..KEPT {
            record("other", i as u64, "p", "v");
        }
        assert!(!contains("fz", 1, "cdn_a", "{}"));
    }
}
