//! Contexts and the calls on them: create, free, last error, prepare,
//! release, reconcile.

use super::config::{config_from_c, xenblock_config};
use super::xenblock_status::{self, *};
use super::{c_str, guard, set_thread_error, xenblock_ctx, CTX_ERRORS, LIVE_CTX, NEXT_CTX_ID};
use crate::context::Context;
use crate::error::Error;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Create a context. `cfg` may be NULL for all defaults. On success `*out`
/// holds a context to free with `xenblock_ctx_free`; on failure `*out` is
/// NULL and `xenblock_last_error()` says why. Blocking: at most opening the
/// xenstored socket or xenbus device (no round trip, never the lock).
///
/// # Safety
/// `cfg` is NULL or points to a `xenblock_config` of at least `cfg->abi_size`
/// bytes; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn xenblock_ctx_new(
    cfg: *const xenblock_config,
    out: *mut *mut xenblock_ctx,
) -> xenblock_status {
    guard(None, || {
        if out.is_null() {
            return Err(Error::InvalidArgument(
                "xenblock_ctx_new: out is NULL".into(),
            ));
        }
        // SAFETY: out is non-NULL and writable by contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: forwarded contract on cfg.
        let config = unsafe { config_from_c(cfg) }?;
        let id = NEXT_CTX_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ctx = Box::new(xenblock_ctx {
            magic: super::CTX_LIVE,
            inner: std::sync::Arc::new(Context::new(config)?),
            id,
        });
        LIVE_CTX.get().lock().push(id);
        // SAFETY: as above.
        unsafe { *out = Box::into_raw(ctx) };
        Ok(())
    })
}

/// Free a context. NULL is ignored. Ops started on it
/// (`xenblock_op_start`) and not yet started by a worker, and ops waiting
/// for the hotplug lock, are cancelled: they become done at once (a lock
/// waiter is woken, it does not wait for the holder),
/// `xenblock_op_finish` gives `XENBLOCK_CANCELLED`, and nothing of them was
/// done (no `hotplug-status` written). Ops past the lock are waited for:
/// this call then blocks until they end, which is their xenstore round
/// trips (each bounded by `store_timeout_ms`, or by the callbacks with
/// `store_ops`), their disk and loop-device system calls (a `stat` of a
/// target on a dead network filesystem is not bounded) and, for a
/// custom-script backend, the script (`script_timeout_ms` plus 2 s). The
/// caller's event loop need not run meanwhile.
/// When it returns, the context's threads have ended and its descriptors
/// are closed; ops not yet freed stay valid (finish, fd, error, free).
/// Without ops in flight it never blocks (closes the built-in client's
/// connection, if any).
///
/// Deadlock rule: with `store_ops`, the running ops call the callbacks on
/// the worker threads while this call waits for them. Do not hold, across
/// this call, a lock those callbacks take (libxl: the ctx lock; with
/// `libxl__ctx_lock` held, finish or let the ops end first), or the worker
/// waits for the lock, this call waits for the worker, and neither returns.
///
/// In a child process forked while the context existed, the context is not
/// the child's: this call then touches none of its threads (they are not in
/// the child) or locks (a parent's thread may have held one at the fork)
/// and leaves its memory, but closes every descriptor the context and its
/// ops had open at the fork (the xenstore connection, the eventfds, the
/// lock directory's watch, a waiting op's lock file, the `/proc` files),
/// read from a lock-free table. It closes them by number: call it before
/// the child closes or reuses descriptors it did not open itself (or not
/// at all: they are all close-on-exec). Make a new context in the child.
///
/// # Safety
/// `ctx` is NULL or was returned by `xenblock_ctx_new` and not yet freed; no
/// other thread uses it during or after this call.
#[no_mangle]
pub unsafe extern "C" fn xenblock_ctx_free(ctx: *mut xenblock_ctx) {
    if ctx.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: NULL-checked; live or (best effort) caught by its magic.
        if unsafe { ctx_ref(ctx) }.is_none() {
            set_thread_error(
                "xenblock_ctx_free: not a live context (freed already, or not made by \
                 xenblock_ctx_new); nothing was freed",
            );
            return;
        }
        // SAFETY: ctx came from Box::into_raw in xenblock_ctx_new.
        let mut ctx = unsafe { Box::from_raw(ctx) };
        ctx.magic = super::CTX_FREED;
        if !ctx.inner.is_own_process() {
            // Inherited through fork: its mutexes may be held by threads
            // that do not exist here, so its structures are not touched
            // (the memory is left); only the descriptors it and its ops
            // had open at the fork are closed, from the lock-free table
            // they are listed in.
            ctx.inner.close_inherited_fds();
            std::mem::forget(ctx);
            return;
        }
        ctx.inner.shutdown_workers();
        LIVE_CTX.get().lock().retain(|id| *id != ctx.id);
        let _ = CTX_ERRORS.try_with(|m| m.borrow_mut().remove(&ctx.id));
        drop(ctx);
    }));
}

/// The message of this thread's last failed call on `ctx`, or "" if none.
/// Valid until this thread's next call on `ctx` fails, or `ctx` is freed.
/// Never NULL (a NULL `ctx` gives "").
///
/// # Safety
/// `ctx` is NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn xenblock_ctx_last_error(ctx: *const xenblock_ctx) -> *const c_char {
    if ctx.is_null() {
        return c"".as_ptr();
    }
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: live context by contract (its magic checked, best effort).
        let Some(c) = (unsafe { ctx_ref(ctx) }) else {
            return c"".as_ptr();
        };
        let id = c.id;
        // The CString's heap buffer stays put until this thread replaces it.
        CTX_ERRORS
            .try_with(|m| m.borrow().get(&id).map(|s| s.as_ptr()))
            .ok()
            .flatten()
            .unwrap_or(c"".as_ptr())
    }))
    .unwrap_or(c"".as_ptr())
}

/// The context, or `None` for NULL or a pointer that is not a live
/// context (its magic is checked: a best-effort catch of a use after
/// `xenblock_ctx_free` or of a foreign pointer, as for ops).
///
/// # Safety
/// `ctx` is NULL or a live context.
pub(crate) unsafe fn ctx_ref<'a>(ctx: *const xenblock_ctx) -> Option<&'a xenblock_ctx> {
    // SAFETY: NULL or live by contract.
    unsafe { ctx.as_ref() }.filter(|c| c.magic == super::CTX_LIVE)
}

/// `flags` of `xenblock_prepare_ex` and `xenblock_release_ex`: never wait
/// for the hotplug lock. When it is taken the call returns
/// `XENBLOCK_WOULD_BLOCK` at once, having done and written nothing.
pub const XENBLOCK_NOWAIT: u32 = 1;

/// Prepare the disk of a backend: what `block add` does. `backend_path` is
/// absolute or relative to this domain's home (libxl passes
/// `backend/vbd/<domid>/<devid>`) and must name an existing backend
/// directory of that shape; otherwise nothing is written. On `XENBLOCK_BUSY`
/// the backend has `hotplug-status busy`, on other failures `error`, and
/// `hotplug-error` holds the message, which `xenblock_ctx_last_error` also
/// gives.
///
/// Transactions: prepare joins no caller transaction. It reads and writes
/// outside any transaction and in transactions of its own (through the same
/// store), so a caller must not hold an open transaction on the backend
/// across the call: commit (or end) it first, so that the backend's nodes
/// are visible, and start a new one afterwards if needed.
///
/// Blocking, worst case: the hotplug lock wait (`lock_timeout_ms`, 10 s by
/// default), plus about a dozen xenstore round trips each bounded by
/// `store_timeout_ms` with the built-in client (by the caller's callbacks
/// with `store_ops`), plus loop-device system calls. For a custom-script
/// backend instead: the script's run, `script_timeout_ms` (40 s by default)
/// plus a 2 s grace to kill it, without the lock. Hosts with an event loop
/// use `xenblock_prepare_ex(..., XENBLOCK_NOWAIT)` and `xenblock_plan_new`.
///
/// Ops in flight on the same backend (`xenblock_op_start`) go first: this
/// call waits for them to end (with `XENBLOCK_NOWAIT` it returns
/// `XENBLOCK_WOULD_BLOCK` instead). Deadlock rule: with `store_ops`, those
/// ops call the callbacks on the worker threads while this thread waits, so
/// do not hold, across this call, a lock the callbacks take (libxl: the ctx
/// lock) while an op runs on that backend; or use `XENBLOCK_NOWAIT`.
///
/// # Safety
/// `ctx` is a live context; `backend_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn xenblock_prepare(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
) -> xenblock_status {
    // SAFETY: forwarded contract.
    unsafe { call(ctx, backend_path, 0, "xenblock_prepare", true) }
}

/// `xenblock_prepare` with `flags`: 0, or `XENBLOCK_NOWAIT` (return
/// `XENBLOCK_WOULD_BLOCK` at once, writing nothing, when the hotplug lock is
/// taken; then the worst case is the xenstore round trips and system calls).
/// `XENBLOCK_NOWAIT` does not shorten a custom script's run: ask
/// `xenblock_plan_new` first and run scripts from the event loop. Unknown
/// flags give `XENBLOCK_INVALID_ARGUMENT`.
///
/// # Safety
/// As `xenblock_prepare`.
#[no_mangle]
pub unsafe extern "C" fn xenblock_prepare_ex(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
    flags: u32,
) -> xenblock_status {
    // SAFETY: forwarded contract.
    unsafe { call(ctx, backend_path, flags, "xenblock_prepare_ex", true) }
}

/// Release the disk of a backend: what `block remove` does (detach the loop
/// device of a file target only when it carries this backend's tag, or no
/// xenblock tag and serves that file, and, where the kernel has diskseq, is
/// the binding prepare recorded in `diskseq`). Idempotent. Transactions,
/// blocking, the wait for ops in flight on the backend and its deadlock
/// rule as `xenblock_prepare` (release writes nothing to the backend).
///
/// # Safety
/// `ctx` is a live context; `backend_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn xenblock_release(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
) -> xenblock_status {
    // SAFETY: forwarded contract.
    unsafe { call(ctx, backend_path, 0, "xenblock_release", false) }
}

/// `xenblock_release` with `flags` (see `xenblock_prepare_ex`).
///
/// # Safety
/// As `xenblock_release`.
#[no_mangle]
pub unsafe extern "C" fn xenblock_release_ex(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
    flags: u32,
) -> xenblock_status {
    // SAFETY: forwarded contract.
    unsafe { call(ctx, backend_path, flags, "xenblock_release_ex", false) }
}

/// The body of the prepare and release calls.
///
/// # Safety
/// `ctx` is NULL or live; `backend_path` is NULL or NUL-terminated.
unsafe fn call(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
    flags: u32,
    name: &str,
    add: bool,
) -> xenblock_status {
    // SAFETY: by contract.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        set_thread_error(&format!("{name}: ctx is NULL or not a live context"));
        return XENBLOCK_INVALID_ARGUMENT;
    };
    guard(Some(c), || {
        if flags & !XENBLOCK_NOWAIT != 0 {
            return Err(Error::InvalidArgument(format!(
                "{name}: flags {flags:#x} has bits this library does not know; the only \
                 flag is XENBLOCK_NOWAIT ({XENBLOCK_NOWAIT})"
            )));
        }
        // SAFETY: by contract.
        let p = unsafe { c_str(backend_path, "backend_path") }?;
        // In the backend's turn: after the ops started on it before.
        let run = || {
            if add {
                c.inner.prepare_ordered(p).map(|_| ())
            } else {
                c.inner.release_ordered(p).map(|_| ())
            }
        };
        if flags & XENBLOCK_NOWAIT != 0 {
            crate::lock::no_wait(run)
        } else {
            run()
        }
    })
}

/// Detach the loop devices xenblock attached that no backend references any
/// more (left behind by a toolstack killed during `xenblock_prepare`); never
/// touches loop devices xenblock did not make. `backend_prefix` (NULL = all)
/// limits the sweep to backends whose absolute path starts with it, e.g.
/// "/local/domain/0/backend/vbd/7/". `detached` (may be NULL) receives the
/// number of devices detached. Linux only (`XENBLOCK_UNSUPPORTED` elsewhere).
/// A device whose tag may have been cut by the kernel (63 bytes) is never
/// detached. Blocking, worst case: the hotplug lock wait (`lock_timeout_ms`)
/// plus one xenstore read per xenblock loop device (each bounded by
/// `store_timeout_ms` with the built-in client).
///
/// # Safety
/// `ctx` is a live context; `backend_prefix` is NULL or NUL-terminated;
/// `detached` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn xenblock_reconcile(
    ctx: *mut xenblock_ctx,
    backend_prefix: *const c_char,
    detached: *mut u32,
) -> xenblock_status {
    // SAFETY: by contract.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        set_thread_error("xenblock_reconcile: ctx is NULL or not a live context");
        return XENBLOCK_INVALID_ARGUMENT;
    };
    guard(Some(c), || {
        if !detached.is_null() {
            // SAFETY: writable by contract.
            unsafe { *detached = 0 };
        }
        let prefix = if backend_prefix.is_null() {
            None
        } else {
            // SAFETY: by contract.
            Some(unsafe { c_str(backend_prefix, "backend_prefix") }?)
        };
        #[cfg(target_os = "linux")]
        {
            let r = c.inner.reconcile(prefix)?;
            if !detached.is_null() {
                // SAFETY: writable by contract.
                unsafe { *detached = r.detached.len() as u32 };
            }
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = prefix;
            Err(Error::Unsupported(
                "reconcile concerns Linux loop devices only".into(),
            ))
        }
    })
}
