//! A counting global allocator: the memory half of an app's budget, and the
//! sampler behind `/debug/pprof/heap`.
//!
//! boa has no heap limit, so the runtime measures what the JS worker thread
//! allocates while a call runs (net bytes: allocations minus frees on this
//! thread) and stops the call between polls once it passes the budget. It
//! cannot see inside one native operation; the prelude guards those
//! (`String.prototype.repeat` and friends) before they start.
//!
//! While a [`HeapProfile`] records, allocations are also sampled: each
//! thread takes one sample per [`SAMPLE_RATE`] bytes allocated on average
//! (exponentially distributed gaps, as Go and tcmalloc do, so periodic
//! allocation patterns cannot hide), capturing the stack as raw return
//! addresses into a buffer allocated before the profile starts. Nothing in
//! the allocator path allocates or takes a lock, and when no profile runs
//! the whole cost is one relaxed atomic load.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The process allocator: the system allocator plus a per-thread byte count.
pub struct CountingAlloc;

thread_local! {
    static NET_BYTES: Cell<isize> = const { Cell::new(0) };
    static SAMPLER: Sampler = const {
        Sampler { busy: Cell::new(false), until: Cell::new(0), rng: Cell::new(0) }
    };
}

#[inline]
fn add(delta: isize) {
    // `try_with`: during thread teardown the slot may be gone; counting is
    // best effort there.
    let _ = NET_BYTES.try_with(|c| c.set(c.get().wrapping_add(delta)));
}

/// Counts an allocation of `size` bytes towards the heap profile, if one runs.
#[inline]
fn track(size: usize) {
    // The only cost when no profile runs; `sample` re-checks with SeqCst.
    if !PROFILE.load(Ordering::Relaxed).is_null() {
        sample(size);
    }
}

/// Called with the size of a request the system allocator refused (the
/// process aborts right after); null when none is set.
static ON_FAILURE: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Makes `hook` run, on the failing thread, when an allocation fails, just
/// before Rust aborts the process. It must not allocate.
pub fn on_allocation_failure(hook: fn(usize)) {
    ON_FAILURE.store(hook as *mut (), Ordering::Release);
}

#[cold]
fn failed(size: usize) {
    let hook = ON_FAILURE.load(Ordering::Acquire);
    if !hook.is_null() {
        // SAFETY: only `on_allocation_failure` stores here, a `fn(usize)`.
        let hook: fn(usize) = unsafe { std::mem::transmute::<*mut (), fn(usize)>(hook) };
        hook(size);
    }
}

#[inline]
fn checked(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        failed(size);
    }
    p
}

// SAFETY: every method forwards to `System` unchanged and only updates
// thread-local counters and, while a heap profile records, a preallocated
// sample slot; none of that allocates (nor does the failure hook).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        track(layout.size());
        // SAFETY: forwarded with the caller's layout.
        checked(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        track(layout.size());
        // SAFETY: forwarded with the caller's layout.
        checked(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // A realloc is a new object of the new size, as heap profilers count it.
        track(new_size);
        // SAFETY: forwarded with the caller's arguments.
        checked(unsafe { System.realloc(ptr, layout, new_size) }, new_size)
    }
}

/// Net bytes allocated by this thread since it started.
pub fn thread_net_bytes() -> isize {
    NET_BYTES.try_with(Cell::get).unwrap_or(0)
}

// ------------------------------------------------------------ heap sampling

/// Mean bytes allocated by one thread between two heap profile samples.
pub const SAMPLE_RATE: usize = 512 * 1024;

/// Deepest stack a sample keeps (the innermost frames).
const MAX_FRAMES: usize = 64;

/// Words of one sample slot: allocation size, stack depth, return addresses.
const SLOT_WORDS: usize = MAX_FRAMES + 2;

/// The buffer of the running profile; null when none runs.
static PROFILE: AtomicPtr<Samples> = AtomicPtr::new(ptr::null_mut());

/// Samplers between loading [`PROFILE`] and finishing their slot: the
/// buffer is freed only once this is back to zero after [`PROFILE`] is
/// cleared.
static WRITERS: AtomicUsize = AtomicUsize::new(0);

/// Seeds of the per-thread random generators.
static SEEDS: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);

/// Per-thread sampling state.
struct Sampler {
    /// Set while this thread records a sample, so nothing it does is sampled.
    busy: Cell<bool>,
    /// Bytes left until this thread's next sample.
    until: Cell<isize>,
    /// xorshift64 state; 0 until the thread's first sampled allocation.
    rng: Cell<u64>,
}

impl Sampler {
    /// The gap to the next sample: exponential with mean [`SAMPLE_RATE`].
    fn next_gap(&self) -> isize {
        let mut x = self.rng.get();
        if x == 0 {
            // splitmix64 of a process-wide counter: distinct per thread.
            let mut z = SEEDS.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x = (z ^ (z >> 31)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        // u in (0, 1]: -ln(u) is exponential with mean 1.
        let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * SAMPLE_RATE as f64) as isize).max(1)
    }
}

/// The sample buffer of one profile, allocated before it starts.
struct Samples {
    /// Slot 0 of `storage`; writers go through this raw pointer only.
    base: *mut [usize; SLOT_WORDS],
    /// Slots in `storage`.
    capacity: usize,
    /// The next free slot; past `capacity`, samples are dropped (counted).
    next: AtomicUsize,
    /// Owns the slots; not touched while the profile records.
    storage: Vec<[usize; SLOT_WORDS]>,
}

/// The slow path of [`track`]: counts down this thread's gap and records a
/// sample when it runs out.
#[cold]
#[inline(never)]
fn sample(size: usize) {
    let _ = SAMPLER.try_with(|s| {
        if s.busy.get() {
            return;
        }
        if s.rng.get() == 0 {
            // First allocation seen on this thread: start it mid-gap, not
            // at a sample, or every new thread would be sampled at once.
            s.until.set(s.next_gap());
        }
        let left = s.until.get() - size as isize;
        if left > 0 {
            s.until.set(left);
            return;
        }
        s.until.set(s.next_gap());
        s.busy.set(true);
        record(size);
        s.busy.set(false);
    });
}

/// Records one sample of `size` bytes with the current stack.
fn record(size: usize) {
    // Announce the write before looking at PROFILE (both SeqCst): `stop`
    // clears PROFILE and then waits for WRITERS to drain, so it either sees
    // this writer or this writer sees null.
    WRITERS.fetch_add(1, Ordering::SeqCst);
    let p = PROFILE.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: the buffer stays allocated while WRITERS is non-zero
        // (see `HeapProfile::stop`).
        let samples = unsafe { &*p };
        let i = samples.next.fetch_add(1, Ordering::Relaxed);
        if i < samples.capacity {
            // SAFETY: `fetch_add` hands out each index once, so slot `i`
            // is this writer's alone, and `i < capacity` keeps it in bounds.
            let slot = unsafe { &mut *samples.base.add(i) };
            let mut depth = 0;
            // SAFETY: the unsynchronized variant takes no lock (the
            // synchronized one could wait on a symbolizer that is
            // allocating); on Linux it is `_Unwind_Backtrace`, which is
            // thread-safe and allocates nothing. The callback only writes
            // into the slot.
            unsafe {
                backtrace::trace_unsynchronized(|frame| {
                    slot[2 + depth] = frame.ip() as usize;
                    depth += 1;
                    depth < MAX_FRAMES
                });
            }
            slot[0] = size;
            slot[1] = depth;
        }
    }
    WRITERS.fetch_sub(1, Ordering::Release);
}

/// One sampled allocation.
#[derive(Debug, Clone)]
pub struct HeapSample {
    /// Bytes of the allocation that was sampled.
    pub size: usize,
    /// Return addresses, innermost first, starting inside the sampler.
    pub frames: Vec<usize>,
}

/// What a finished [`HeapProfile`] saw.
#[derive(Debug, Default)]
pub struct HeapSamples {
    /// The samples, in the order they were taken.
    pub samples: Vec<HeapSample>,
    /// Samples lost because the buffer was full.
    pub dropped: usize,
}

/// A running heap profile: allocations on every thread are sampled from
/// [`HeapProfile::start`] until [`HeapProfile::finish`] (or drop, when the
/// request that asked for it goes away).
pub struct HeapProfile {
    _private: (),
}

impl HeapProfile {
    /// Starts sampling into a buffer of `capacity` samples; `None` when a
    /// profile already runs (there is one buffer for the process).
    pub fn start(capacity: usize) -> Option<HeapProfile> {
        // Zeroed slots come from calloc: pages become resident only as
        // samples fill them.
        let mut storage = vec![[0usize; SLOT_WORDS]; capacity];
        let samples = Box::new(Samples {
            base: storage.as_mut_ptr(),
            capacity,
            next: AtomicUsize::new(0),
            storage,
        });
        let p = Box::into_raw(samples);
        match PROFILE.compare_exchange(ptr::null_mut(), p, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => Some(HeapProfile { _private: () }),
            Err(_) => {
                // SAFETY: `p` came from `Box::into_raw` above and was never
                // published.
                drop(unsafe { Box::from_raw(p) });
                None
            }
        }
    }

    /// Stops sampling and returns the samples.
    pub fn finish(self) -> HeapSamples {
        let samples = Self::stop();
        std::mem::forget(self);
        let Some(samples) = samples else {
            return HeapSamples::default();
        };
        let taken = samples.next.load(Ordering::Relaxed);
        let kept = taken.min(samples.capacity);
        HeapSamples {
            samples: samples.storage[..kept]
                .iter()
                .map(|slot| HeapSample {
                    size: slot[0],
                    frames: slot[2..2 + slot[1].min(MAX_FRAMES)].to_vec(),
                })
                .collect(),
            dropped: taken - kept,
        }
    }

    /// Clears [`PROFILE`] and takes the buffer back once no sampler uses it.
    fn stop() -> Option<Box<Samples>> {
        let p = PROFILE.swap(ptr::null_mut(), Ordering::SeqCst);
        if p.is_null() {
            return None;
        }
        // A sampler is inside `record` for one stack walk: microseconds.
        while WRITERS.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        // SAFETY: `p` came from `Box::into_raw` in `start`; PROFILE no
        // longer points to it and no writer holds it any more.
        Some(unsafe { Box::from_raw(p) })
    }
}

impl Drop for HeapProfile {
    fn drop(&mut self) {
        drop(Self::stop());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_allocations_while_a_profile_runs() {
        let profile = HeapProfile::start(1024).expect("no other profile");
        assert!(HeapProfile::start(16).is_none(), "one profile at a time");
        // 64 MiB in 64 KiB pieces: about 128 samples at 512 KiB.
        for _ in 0..1024 {
            std::hint::black_box(vec![1u8; 64 * 1024]);
        }
        let got = profile.finish();
        assert!(got.samples.len() > 32, "{} samples", got.samples.len());
        assert_eq!(got.dropped, 0);
        assert!(got.samples.iter().all(|s| !s.frames.is_empty()));
        // Stopped: nothing more is recorded, and a new profile may start.
        drop(HeapProfile::start(16).expect("the first one finished"));
    }
}
