//! The plan API, for hosts that run custom scripts from their own event
//! loop: `xenblock_plan_new` says in-process or which script to exec.

use super::ctx::ctx_ref;
use super::xenblock_status::{self, *};
use super::{c_str, guard, set_thread_error, xenblock_ctx};
use crate::error::Error;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a backend needs, for toolstacks that exec scripts from their own
/// event loop. Returned by `xenblock_plan_new`, freed by `xenblock_plan_free`.
#[repr(C)]
pub struct xenblock_plan {
    /// True: call `xenblock_prepare`/`xenblock_release` (in-process work).
    /// False: exec `argv[0]` with `argv` and the caller's environment plus `env`.
    pub in_process: bool,
    /// Number of entries of `argv` (0 when `in_process`).
    pub argc: usize,
    /// NULL-terminated argument vector; `argv[0]` is the script's path.
    pub argv: *const *const c_char,
    /// Number of entries of `env`.
    pub envc: usize,
    /// NULL-terminated `NAME=value` strings to add to the environment.
    pub env: *const *const c_char,
}

/// The owner of a plan's strings; `public` first so the pointer handed out
/// is also a pointer to this.
#[repr(C)]
struct PlanBox {
    public: xenblock_plan,
    _strings: Vec<CString>,
    _argv: Vec<*const c_char>,
    _env: Vec<*const c_char>,
}

/// `xenblock_plan_new` and `xenblock_op_start` actions.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum xenblock_action {
    XENBLOCK_ACTION_ADD = 0,
    XENBLOCK_ACTION_REMOVE = 1,
}

/// Say whether xenblock handles `backend_path` in-process, or which custom
/// script the toolstack should run itself (argv and added environment,
/// exactly as xenblock would run it: Linux `[script, add|remove]` with
/// `XENBUS_*`, FreeBSD `[script, path, add|remove]`, NetBSD `[script, path,
/// 2|6]`). `action` is an `xenblock_action`. On success `*out` is a plan to
/// free with `xenblock_plan_free`; on failure `*out` is NULL. A path that is
/// not of the form `<root>/<domid>/<devid>` gives `XENBLOCK_INVALID_ARGUMENT`,
/// a backend that does not exist `XENBLOCK_NOT_FOUND`. Blocking: two
/// xenstore reads and a stat of the script; never the hotplug lock.
///
/// # Safety
/// `ctx` is a live context; `backend_path` is NULL or NUL-terminated; `out`
/// points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn xenblock_plan_new(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
    action: u32,
    out: *mut *mut xenblock_plan,
) -> xenblock_status {
    // SAFETY: by contract.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        set_thread_error("xenblock_plan_new: ctx is NULL or not a live context");
        return XENBLOCK_INVALID_ARGUMENT;
    };
    guard(Some(c), || {
        if out.is_null() {
            return Err(Error::InvalidArgument(
                "xenblock_plan_new: out is NULL".into(),
            ));
        }
        // SAFETY: non-NULL, writable by contract.
        unsafe { *out = std::ptr::null_mut() };
        let add = match action {
            0 => true,
            1 => false,
            a => {
                return Err(Error::InvalidArgument(format!(
                    "xenblock_plan_new: action {a} is neither XENBLOCK_ACTION_ADD (0) nor \
                     XENBLOCK_ACTION_REMOVE (1)"
                )))
            }
        };
        // SAFETY: by contract.
        let p = unsafe { c_str(backend_path, "backend_path") }?;
        let plan = c.inner.plan(p, add)?;
        let mut b = Box::new(PlanBox {
            public: xenblock_plan {
                in_process: true,
                argc: 0,
                argv: std::ptr::null(),
                envc: 0,
                env: std::ptr::null(),
            },
            _strings: Vec::new(),
            _argv: Vec::new(),
            _env: Vec::new(),
        });
        if let crate::attach::Plan::Script(inv) = plan {
            use std::os::unix::ffi::OsStrExt;
            let cs = |b: &[u8]| {
                CString::new(b)
                    .map_err(|_| Error::InvalidArgument("a script argument contains NUL".into()))
            };
            let mut strings = Vec::new();
            for a in &inv.argv {
                strings.push(cs(a.as_bytes())?);
            }
            let argc = strings.len();
            for (k, v) in &inv.env {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                strings.push(cs(&kv)?);
            }
            // CString buffers do not move when the Vec holding them moves.
            let ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
            b._argv = ptrs[..argc]
                .iter()
                .copied()
                .chain([std::ptr::null()])
                .collect();
            b._env = ptrs[argc..]
                .iter()
                .copied()
                .chain([std::ptr::null()])
                .collect();
            b._strings = strings;
            b.public = xenblock_plan {
                in_process: false,
                argc,
                argv: b._argv.as_ptr(),
                envc: b._env.len() - 1,
                env: b._env.as_ptr(),
            };
        }
        // SAFETY: as above; PlanBox is repr(C) with `public` first.
        unsafe { *out = Box::into_raw(b).cast::<xenblock_plan>() };
        Ok(())
    })
}

/// Free a plan from `xenblock_plan_new`. NULL is ignored.
///
/// # Safety
/// `plan` is NULL or was returned by `xenblock_plan_new` and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn xenblock_plan_free(plan: *mut xenblock_plan) {
    if plan.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: it came from Box::<PlanBox>::into_raw, cast to its first field.
        drop(unsafe { Box::from_raw(plan.cast::<PlanBox>()) });
    }));
}
