//! Settings of the library's own threads.

/// Run the calling thread under `SCHED_BATCH` (Linux): the scheduler
/// then never lets it preempt the thread that woke it, so the caller of
/// `xenblock_op_start`, whose start may wake an idle worker, keeps its
/// CPU and returns at once; the worker runs at the caller's next sleep or
/// tick. A worker spends its time waiting for xenstore, the lock and the
/// kernel, so it loses nothing else by it. Best effort: elsewhere, or if
/// refused, nothing changes.
pub fn set_batch() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid
        // sched_param that outlives the call.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}
