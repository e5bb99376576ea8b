//! The priority of threads that must not take a core from live decisions:
//! threads left running an app (a retired JS worker, a loader abandoned in
//! a runaway `init`), which may never stop and so run only when a core is
//! otherwise idle, and the shadow thread, which runs last.

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

/// Moves a thread to nice 19: it gets a core after every thread at the
/// normal level that wants one (the shadow thread: it must never slow live
/// decisions), yet is not starved outright as under `SCHED_IDLE`.
pub fn lowest_nice(tid: i32) {
    if tid <= 0 {
        return;
    }
    // SAFETY: setpriority on a thread id of this process; failure only
    // leaves the priority unchanged.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
    if rc != 0 {
        tracing::debug!(tid, error = %std::io::Error::last_os_error(), "cannot lower a thread's nice level");
    }
}
