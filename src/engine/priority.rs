//! The priority of threads left running an app: a retired JS worker, a
//! loader abandoned in a runaway `init`. They may never stop, so they run
//! only when a core is otherwise idle.

/// Moves a thread to `SCHED_IDLE`: it runs only when a core is otherwise idle.
pub fn lower_priority(tid: i32) {
    if tid <= 0 {
        return;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on a thread id of this process, with a
    // valid parameter; failure only leaves the priority unchanged.
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(tid, error = %std::io::Error::last_os_error(), "cannot lower a retired thread's priority");
    }
}
