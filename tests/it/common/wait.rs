//! Polling: tests wait for a server to reach a state, never a fixed time.

use std::time::{Duration, Instant};

/// Waits until `cond` holds, checking every 50 ms; false on timeout.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
