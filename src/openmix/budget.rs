//! What one call into an app may spend: time and memory, and the longest
//! input a regular expression may be matched against.

use std::time::Duration;

/// Longest string a regular expression may be matched against (UTF-16
/// units): matching runs inside one native call, which no budget check
/// can interrupt, so long inputs are refused up front.
pub const MAX_REGEX_INPUT: usize = 1 << 20;

/// Time and memory allowed for one call into an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Budget {
    /// Wall time for one `onRequest` or `onFusion`.
    pub decision: Duration,
    /// Wall time for loading the app's top level, and for `init`.
    pub load: Duration,
    /// Net bytes the call may allocate.
    pub memory: usize,
}

impl Budget {
    /// The time budget of the first call on a fresh instance, which also
    /// compiles the functions it reaches: ten decision budgets, at most the
    /// load budget (50 ms by default).
    pub fn first_call(&self) -> Duration {
        (self.decision * 10).min(self.load).max(self.decision)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            decision: Duration::from_millis(5),
            load: Duration::from_millis(250),
            memory: 64 << 20,
        }
    }
}
