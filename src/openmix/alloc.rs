//! A counting global allocator: the memory half of an app's budget.
//!
//! boa has no heap limit, so the runtime measures what the JS worker thread
//! allocates while a call runs (net bytes: allocations minus frees on this
//! thread) and stops the call between polls once it passes the budget. It
//! cannot see inside one native operation; the prelude guards those
//! (`String.prototype.repeat` and friends) before they start.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The process allocator: the system allocator plus a per-thread byte count.
pub struct CountingAlloc;

thread_local! {
    static NET_BYTES: Cell<isize> = const { Cell::new(0) };
}

#[inline]
fn add(delta: isize) {
    // `try_with`: during thread teardown the slot may be gone; counting is
    // best effort there.
    let _ = NET_BYTES.try_with(|c| c.set(c.get().wrapping_add(delta)));
}

// SAFETY: every method forwards to `System` unchanged and only updates a
// thread-local counter, which allocates nothing.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Net bytes allocated by this thread since it started.
pub fn thread_net_bytes() -> isize {
    NET_BYTES.try_with(Cell::get).unwrap_or(0)
}
