//! The fd-driven asynchronous calls (ABI 1.2): `xenblock_op_start` queues
//! a prepare or release for the context's worker threads and returns at
//! once; the op's descriptor polls readable when it is done;
//! `xenblock_op_finish` gives its outcome. `xenblock_ctx_warm` (1.4) gets
//! a context ready for its first prepare, also without waiting.
//!
//! For a host with an event loop (libxl, libvirt): start the op, add
//! `xenblock_op_fd(op)` to the loop for reading (level-triggered: it stays
//! readable until the op is freed; never read or close it), call
//! `xenblock_op_finish` when it is readable, then `xenblock_op_free`.

use super::xenblock_status::{self, *};
use super::{c_str, ctx::ctx_ref, guard, set_thread_error, status_of, to_cstring, xenblock_ctx};
use crate::error::Error;
use crate::worker::{Action, Op};
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

const LIVE: u64 = 0x7865_6e62_6c6f_6370; // "xenblocp"
const FREED: u64 = 0x6465_6164_6465_6164;

/// An asynchronous prepare or release. Made by `xenblock_op_start`, freed
/// by `xenblock_op_free`; it does not depend on its context's life.
pub struct xenblock_op {
    magic: u64,
    /// The fork generation it was started in (`sys::fork`): in a child
    /// forked since, the op is the parent's.
    generation: u64,
    /// Its descriptor, and the owner it is listed under (`sys::fdreg`).
    fd: std::ffi::c_int,
    fd_owner: u32,
    op: parking_lot::Mutex<Op>,
    /// The outcome's message, made once when first asked after it is done.
    message: OnceLock<CString>,
    status: OnceLock<xenblock_status>,
}

/// The magic check is best effort: after `xenblock_op_free` it reads
/// freed memory, which may by then hold anything (a use after free is the
/// caller's bug; this only makes the common case fail clearly).
///
/// # Safety
/// `op` is NULL or a pointer from `xenblock_op_start` not yet freed.
unsafe fn op_ref<'a>(op: *const xenblock_op, name: &str) -> Result<&'a xenblock_op, String> {
    // SAFETY: NULL or live by contract.
    match unsafe { op.as_ref() } {
        None => Err(format!("{name}: op is NULL")),
        Some(o) if o.magic == LIVE => Ok(o),
        Some(_) => Err(format!(
            "{name}: op is not an op made by xenblock_op_start (or it was freed)"
        )),
    }
}

impl xenblock_op {
    /// The outcome, taken once from the op and kept here.
    fn settle(&self) -> Option<xenblock_status> {
        if let Some(s) = self.status.get() {
            return Some(*s);
        }
        let mut op = self.op.lock();
        // Running-or-done and the take under one lock: an op that completes
        // right after a "still running" answer is not mistaken for one whose
        // outcome is WOULD_BLOCK.
        let (status, msg) = match op.try_finish()? {
            Ok(_) => (XENBLOCK_OK, String::new()),
            Err(e) => (status_of(e.kind()), e.to_string()),
        };
        let _ = self.message.set(to_cstring(&msg));
        let _ = self.status.set(status);
        self.status.get().copied()
    }
}

/// The flags `xenblock_op_start` knows: none yet.
const OP_FLAGS_KNOWN: u32 = 0;

/// Start preparing (`XENBLOCK_ACTION_ADD`) or releasing
/// (`XENBLOCK_ACTION_REMOVE`; `action` is an `xenblock_action`) the backend at `backend_path` (as
/// `xenblock_prepare`) on the context's worker threads. `flags` must be 0.
///
/// It checks its arguments and queues the op: it never waits for xenstore,
/// the hotplug lock, a script, a disk or the loop driver, and reads no
/// file (at most it takes a short internal mutex, makes an eventfd and, the
/// first times, starts a thread). A `stat()` that never returns (another
/// guest's disk on a hung file system) delays the op and, as it holds the
/// hotplug lock, every op needing it until `lock_timeout_ms`, never this
/// call or its thread (docs/integration.md). On
/// `XENBLOCK_OK` `*out` holds the op; otherwise `*out` is NULL, nothing was
/// queued and `xenblock_ctx_last_error(ctx)` says why.
///
/// Ops on one backend run one at a time in the order they were started
/// (also after, and before, the synchronous calls on that backend); ops on
/// different backends run in parallel, up to `xenblock_config.workers`.
/// The work is that of `xenblock_prepare`/`xenblock_release`, with the
/// same xenstore writes, the same lock wait (bounded by `lock_timeout_ms`)
/// and the same outcomes. With `store_ops`, the callbacks are called from
/// the worker threads, possibly several at once, and never from the
/// thread calling `xenblock_op_start`: they must not need a lock that
/// thread holds while it waits for the op.
///
/// # Safety
/// `ctx` is a live context; `backend_path` is NULL or NUL-terminated; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn xenblock_op_start(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
    action: u32,
    flags: u32,
    out: *mut *mut xenblock_op,
) -> xenblock_status {
    // SAFETY: by contract.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        set_thread_error("xenblock_op_start: ctx is NULL or not a live context");
        if !out.is_null() {
            // SAFETY: writable by contract.
            unsafe { *out = std::ptr::null_mut() };
        }
        return XENBLOCK_INVALID_ARGUMENT;
    };
    guard(Some(c), || {
        if out.is_null() {
            return Err(Error::InvalidArgument(
                "xenblock_op_start: out is NULL".into(),
            ));
        }
        // SAFETY: non-NULL and writable by contract.
        unsafe { *out = std::ptr::null_mut() };
        if flags & !OP_FLAGS_KNOWN != 0 {
            return Err(Error::InvalidArgument(format!(
                "xenblock_op_start: flags {flags:#x} has bits this library (ABI {}.{}) does not \
                 know; pass 0 (an op never blocks its caller, and its lock wait is bounded by \
                 lock_timeout_ms)",
                super::XENBLOCK_ABI_MAJOR,
                super::XENBLOCK_ABI_MINOR
            )));
        }
        let action = match action {
            0 => Action::Add,
            1 => Action::Remove,
            a => {
                return Err(Error::InvalidArgument(format!(
                    "xenblock_op_start: action {a} is not XENBLOCK_ACTION_ADD (0) or \
                     XENBLOCK_ACTION_REMOVE (1)"
                )))
            }
        };
        // SAFETY: by contract.
        let p = unsafe { c_str(backend_path, "backend_path") }?;
        let op = c.inner.start(p, action)?;
        let boxed = Box::new(xenblock_op {
            magic: LIVE,
            generation: crate::sys::fork::generation(),
            fd: op.fd(),
            fd_owner: c.inner.fd_owner,
            op: parking_lot::Mutex::new(op),
            message: OnceLock::new(),
            status: OnceLock::new(),
        });
        // SAFETY: writable by contract.
        unsafe { *out = Box::into_raw(boxed) };
        Ok(())
    })
}

/// Get ready for prepares of backends like `backend_path` (ABI 1.4): on
/// one of the context's worker threads, the claims index (the sharing
/// rule's view of every other disk, docs/integration.md) is built now,
/// instead of at the context's second prepare, so that the first prepare
/// does not read every other backend in xenstore. For a host that makes a
/// context shortly before its first attach (`xl` runs one process per
/// command): call it when the backend has been written, before the
/// backend's driver is ready for the hotplug step, and the reads overlap
/// that wait. Returns at once, like `xenblock_op_start`; nothing is done to
/// the backend, and nothing reports the warm-up's end (a prepare that comes
/// during it waits for it; one that comes before it starts reads as
/// usual). Does nothing when the context has no index (its store is
/// `store_ops`, which cannot watch) or the index is built already.
/// `xenblock_ctx_free` waits for a warm-up under way.
///
/// `XENBLOCK_OK`, or `XENBLOCK_INVALID_ARGUMENT` for a path that is not a
/// backend's (message in `xenblock_ctx_last_error(ctx)`).
///
/// # Safety
/// `ctx` is a live context; `backend_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn xenblock_ctx_warm(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
) -> xenblock_status {
    // SAFETY: by contract.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        set_thread_error("xenblock_ctx_warm: ctx is NULL or not a live context");
        return XENBLOCK_INVALID_ARGUMENT;
    };
    guard(Some(c), || {
        // SAFETY: by contract.
        let p = unsafe { c_str(backend_path, "backend_path") }?;
        c.inner.warm(p)
    })
}

/// The op's descriptor: it polls readable (POLLIN) once the op is done and
/// stays readable until the op is freed (level-triggered). It is valid
/// until `xenblock_op_free`; never read, write or close it. -1 for a NULL
/// or foreign `op`.
///
/// # Safety
/// `op` is NULL or an op not yet freed.
#[no_mangle]
pub unsafe extern "C" fn xenblock_op_fd(op: *const xenblock_op) -> std::ffi::c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: by contract.
        match unsafe { op_ref(op, "xenblock_op_fd") } {
            Ok(o) => o.fd,
            Err(m) => {
                set_thread_error(&m);
                -1
            }
        }
    }))
    .unwrap_or(-1)
}

/// The op's outcome: `XENBLOCK_WOULD_BLOCK` while it runs (nothing to do:
/// wait for its descriptor), else the status `xenblock_prepare` or
/// `xenblock_release` would have returned (or `XENBLOCK_CANCELLED`, see
/// `xenblock_ctx_free`), whose message is `xenblock_op_error(op)`. The
/// outcome is returned once: a second call gives
/// `XENBLOCK_INVALID_ARGUMENT` (message in `xenblock_last_error()`).
/// In a child forked after the op was started, `XENBLOCK_BAD_STATE`: the
/// op is the parent's (free it). Never blocks.
///
/// # Safety
/// `op` is NULL or an op not yet freed.
#[no_mangle]
pub unsafe extern "C" fn xenblock_op_finish(op: *mut xenblock_op) -> xenblock_status {
    // SAFETY: by contract.
    let o = match unsafe { op_ref(op, "xenblock_op_finish") } {
        Ok(o) => o,
        Err(m) => {
            set_thread_error(&m);
            return XENBLOCK_INVALID_ARGUMENT;
        }
    };
    let mut status = XENBLOCK_INTERNAL;
    let g = guard(None, || {
        if o.generation != crate::sys::fork::generation() {
            return Err(Error::BadState(
                "xenblock_op_finish: this op was started by the parent process before a fork; \
                 in the child it can only be freed (xenblock_op_free)"
                    .into(),
            ));
        }
        if let Some(s) = o.status.get() {
            let what = o.op.lock();
            return Err(Error::InvalidArgument(format!(
                "xenblock_op_finish: the op on {} was already finished (its status was \"{}\"); \
                 call xenblock_op_finish once per op",
                what.backend(),
                status_text(*s)
            )));
        }
        status = o.settle().unwrap_or(XENBLOCK_WOULD_BLOCK);
        Ok(())
    });
    if g != XENBLOCK_OK {
        return g;
    }
    status
}

fn status_text(s: xenblock_status) -> String {
    let p = super::xenblock_status_str(s as u32);
    // SAFETY: xenblock_status_str returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// The message of the op's outcome: "" on success, and while the op runs;
/// after `xenblock_op_finish` returned a failure, what happened and what to
/// do. Valid until `xenblock_op_free`. Never NULL. The library logs an
/// op's failure only at debug level: report this message once, as a
/// script's `hotplug-error` is reported.
///
/// # Safety
/// `op` is NULL or an op not yet freed.
#[no_mangle]
pub unsafe extern "C" fn xenblock_op_error(op: *const xenblock_op) -> *const c_char {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: by contract.
        match unsafe { op_ref(op, "xenblock_op_error") } {
            Ok(o) => o.message.get().map_or(c"".as_ptr(), |m| m.as_ptr()),
            Err(_) => c"".as_ptr(),
        }
    }))
    .unwrap_or(c"".as_ptr())
}

/// Free an op, at any time. An op freed before it is done still runs to
/// its end in the background (its effects stay; a later release of the
/// backend undoes a prepare); its descriptor is closed when it is done, on
/// a worker thread, so the descriptor number may be reused by then: remove
/// it from the host's poll/epoll set BEFORE this call (an `EPOLL_CTL_DEL`
/// afterwards may hit another file). NULL is ignored. Never blocks. A
/// second free of the same op is caught when its memory still holds the
/// freed mark: best effort, not a guarantee (as for contexts). In a child
/// forked after the op was started, it closes the op's descriptor (unless
/// the child's `xenblock_ctx_free` of the op's context closed it already)
/// and leaves the rest, which the parent's worker shares.
///
/// # Safety
/// `op` is NULL or an op not yet freed; no other thread uses it during or
/// after this call.
#[no_mangle]
pub unsafe extern "C" fn xenblock_op_free(op: *mut xenblock_op) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: by contract.
        if unsafe { op_ref(op, "xenblock_op_free") }.is_err() {
            return;
        }
        // SAFETY: a live op from Box::into_raw in xenblock_op_start.
        let mut b = unsafe { Box::from_raw(op) };
        b.magic = FREED;
        if b.generation != crate::sys::fork::generation() {
            // Inherited through fork: its state is shared with a worker of
            // the parent, whose mutexes may be held here for ever. Close
            // its descriptor (unless the child freed its context first,
            // which closed it) and leave the rest.
            crate::sys::fdreg::close_inherited_fd(b.fd_owner, b.fd);
            std::mem::forget(b);
            return;
        }
        drop(b);
    }));
}
