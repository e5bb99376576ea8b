//! The per-thread app runtime: one compiled, initialised instance of each
//! app version per thread.
//!
//! boa `Context`s are `!Send`, so every thread that decides keeps its own
//! instances in a thread-local map. A thread compiles an app lazily on its
//! first decision for it, rebuilds when the registry's version number for
//! the app changes (hot reload) or when a call was abandoned (the context is
//! then unusable), and drops instances of apps that no longer exist.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use super::data::DataSnapshot;
use super::engine::{AppCode, AppError, AppInstance, CallOptions, CallOutcome};
use super::request::Request;

/// This thread's instances. At thread exit, boa's own thread-locals (its
/// garbage-collected heap) may be destroyed before this one, and dropping a
/// `Context` then corrupts the heap (seen as glibc aborting with
/// "corrupted double-linked list"). So the map leaks what it still holds at
/// thread exit; call [`clear`] before a thread ends to free it properly.
struct Instances(HashMap<String, AppInstance>);

impl Drop for Instances {
    fn drop(&mut self) {
        for (_, instance) in self.0.drain() {
            std::mem::forget(instance);
        }
    }
}

thread_local! {
    static INSTANCES: RefCell<Instances> = RefCell::new(Instances(HashMap::new()));
}

/// Drops every instance this thread holds (call before the thread exits).
pub fn clear() {
    let all: Vec<AppInstance> =
        INSTANCES.with_borrow_mut(|m| m.0.drain().map(|(_, v)| v).collect());
    drop(all);
}

/// Runs `onRequest` of `code` on this thread's instance of it.
pub fn decide(
    code: &AppCode,
    request: Request,
    data: &Arc<DataSnapshot>,
    options: CallOptions,
) -> Result<CallOutcome, AppError> {
    // The map stays borrowed while the app runs: nothing an app can call
    // reaches this map, and looking the instance up in place saves a key
    // allocation per decision.
    INSTANCES.with_borrow_mut(|m| {
        ensure(m, code, data)?;
        let Some(instance) = m.0.get_mut(&code.name) else {
            return Err(AppError::NoOnRequest);
        };
        let result = instance.decide(request, data, options);
        if instance.is_poisoned() {
            m.0.remove(&code.name);
        }
        result
    })
}

/// Builds this thread's instance of `code` unless a current, usable one
/// exists; `Ok(true)` when it built one.
fn ensure(m: &mut Instances, code: &AppCode, data: &Arc<DataSnapshot>) -> Result<bool, AppError> {
    let fresh =
        m.0.get(&code.name)
            .is_some_and(|i| i.version() == code.version && !i.is_poisoned());
    if !fresh {
        m.0.remove(&code.name);
        let (instance, _) = AppInstance::load(code, data, None)?;
        m.0.insert(code.name.clone(), instance);
    }
    Ok(!fresh)
}

/// Makes sure this thread has an instance of `code` (compiling it and
/// running `init` if not), so a decision that follows pays only for itself.
/// `Ok(true)` when it built one (the next call is the instance's first).
pub fn warm(code: &AppCode, data: &Arc<DataSnapshot>) -> Result<bool, AppError> {
    INSTANCES.with_borrow_mut(|m| ensure(m, code, data))
}

/// Whether this thread has a current, usable instance of `code`.
pub fn is_current(code: &AppCode) -> bool {
    INSTANCES.with_borrow(|m| {
        m.0.get(&code.name)
            .is_some_and(|i| i.version() == code.version && !i.is_poisoned())
    })
}

/// Drops this thread's instances of apps not in `live`.
pub fn retain_apps(live: &dyn Fn(&str) -> bool) {
    INSTANCES.with_borrow_mut(|m| m.0.retain(|name, _| live(name)));
}

/// Number of app instances this thread holds.
pub fn instance_count() -> usize {
    INSTANCES.with_borrow(|m| m.0.len())
}
