//! The C ABI of xenblock (`include/xenblock.h` is generated from this file).
//!
//! Conventions, for C callers:
//! - Every function that can fail returns a `xenblock_status`; `XENBLOCK_OK`
//!   (0) is success. The message of the last failure of a context, on the
//!   calling thread, is `xenblock_ctx_last_error(ctx)`; failures without a
//!   context (`xenblock_ctx_new`) leave theirs in `xenblock_last_error()`.
//! - No panic crosses this boundary: a panic inside xenblock becomes
//!   `XENBLOCK_INTERNAL`.
//! - Structs passed in start with `abi_size` (set it to `sizeof` the struct
//!   you compiled against), so they can grow without breaking old callers.
//! - Strings returned are owned by xenblock; each function says how long a
//!   returned pointer stays valid and which function frees it.
//! - Thread safety: a `xenblock_ctx` may be used from several threads at
//!   once; attaches are serialised by the hotplug lock where they must be.
//!   Store callbacks may then be called from several threads at once, and
//!   from the library's own worker threads for ops (`xenblock_op_start`).

//!
//! The C ABI is split by concern: [`config`] (the config struct and its
//! `abi_size` rules), [`store`] (caller-supplied xenstore callbacks), [`ctx`]
//! (contexts and the prepare/release/reconcile calls), [`op`] (the
//! fd-driven asynchronous calls, ABI 1.2), [`plan`] (the plan API
//! for hosts that exec scripts themselves); this module has the status codes,
//! the panic boundary and the per-thread error messages.

#![allow(non_camel_case_types)]

pub mod config;
pub mod ctx;
pub mod op;
pub mod plan;
pub mod store;

pub use config::*;
pub use ctx::*;
pub use op::*;
pub use plan::*;
pub use store::*;

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Major version of the C ABI; changes only on incompatible change. It is
/// the SONAME's version (`libxenblock.so.<major>`).
pub const XENBLOCK_ABI_MAJOR: u32 = 1;
/// Minor version of the C ABI; grows with compatible additions.
pub const XENBLOCK_ABI_MINOR: u32 = 4;

/// Result of every fallible xenblock function. Values are stable.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum xenblock_status {
    /// Success.
    XENBLOCK_OK = 0,
    /// A NULL pointer, bad UTF-8/NUL bytes, a malformed path, mode or config.
    XENBLOCK_INVALID_ARGUMENT = 1,
    /// The target (file or device) or another required thing does not exist.
    XENBLOCK_NOT_FOUND = 2,
    /// Refused by the sharing rule: `hotplug-status` is `busy`.
    XENBLOCK_BUSY = 3,
    /// xenstore failed (error reply, lost connection, protocol error).
    XENBLOCK_STORE_ERROR = 4,
    /// A custom hotplug script failed.
    XENBLOCK_SCRIPT_FAILED = 5,
    /// A bounded wait ran out (script, xenstore, hotplug lock).
    XENBLOCK_TIMEOUT = 6,
    /// The backend is not in a state for this request (e.g. not InitWait).
    XENBLOCK_BAD_STATE = 7,
    /// The operating system refused for lack of privilege.
    XENBLOCK_PERMISSION = 8,
    /// An I/O or system call failed.
    XENBLOCK_IO_ERROR = 9,
    /// Valid, but not supported by this flavour or build.
    XENBLOCK_UNSUPPORTED = 10,
    /// A bug in xenblock, including a caught panic.
    XENBLOCK_INTERNAL = 11,
    /// Only with `XENBLOCK_NOWAIT`: the hotplug lock is taken (by a hotplug
    /// script, another toolstack process or another thread). Nothing was
    /// done and nothing was written to xenstore: call again later. This is
    /// not `XENBLOCK_BUSY` (the sharing rule's refusal, which is final).
    /// From `xenblock_op_finish`: the op is still running (wait for its fd).
    XENBLOCK_WOULD_BLOCK = 12,
    /// Only from `xenblock_op_finish`: the op was still queued, not started,
    /// when its context was freed. Nothing was done. (ABI 1.2.)
    XENBLOCK_CANCELLED = 13,
}

use xenblock_status::*;

fn status_of(kind: ErrorKind) -> xenblock_status {
    match kind {
        ErrorKind::InvalidArgument => XENBLOCK_INVALID_ARGUMENT,
        ErrorKind::NotFound => XENBLOCK_NOT_FOUND,
        ErrorKind::Busy => XENBLOCK_BUSY,
        ErrorKind::Store => XENBLOCK_STORE_ERROR,
        ErrorKind::Script => XENBLOCK_SCRIPT_FAILED,
        ErrorKind::Timeout => XENBLOCK_TIMEOUT,
        ErrorKind::BadState => XENBLOCK_BAD_STATE,
        ErrorKind::Permission => XENBLOCK_PERMISSION,
        ErrorKind::Io => XENBLOCK_IO_ERROR,
        ErrorKind::Unsupported => XENBLOCK_UNSUPPORTED,
        ErrorKind::Internal => XENBLOCK_INTERNAL,
        ErrorKind::WouldBlock => XENBLOCK_WOULD_BLOCK,
        ErrorKind::Cancelled => XENBLOCK_CANCELLED,
    }
}

/// An opaque context. Create with `xenblock_ctx_new`, free with `xenblock_ctx_free`.
pub struct xenblock_ctx {
    /// [`CTX_LIVE`] while the context lives; [`CTX_FREED`] once freed
    /// (best effort: reading it after the free reads freed memory).
    pub(crate) magic: u64,
    /// Shared with the context's running ops (`xenblock_op_start`).
    pub(crate) inner: std::sync::Arc<Context>,
    /// Unique for the life of the process (addresses are reused, ids not).
    pub(crate) id: u64,
}

// Every access below is `try_with`: a host may call in while this thread's
// locals are being destroyed (libxl_ctx_free from a thread-exit or atexit
// path); the messages are then dropped, and no panic is raised or printed.
thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// This thread's last failure per context id. Thread-local, so a thread
    /// that ends takes its messages with it.
    static CTX_ERRORS: RefCell<HashMap<u64, CString>> = RefCell::new(HashMap::new());
}

/// `xenblock_ctx.magic` of a live context ("xenblctx").
pub(crate) const CTX_LIVE: u64 = 0x7865_6e62_6c63_7478;
/// `xenblock_ctx.magic` once freed.
pub(crate) const CTX_FREED: u64 = 0x6465_6164_6374_7821;

/// Ids of the contexts not yet freed, to prune messages of freed ones.
/// Fresh in a forked child (a worker may hold it at the fork).
static LIVE_CTX: crate::sys::fork::PerFork<Vec<u64>> = crate::sys::fork::PerFork::new();
static NEXT_CTX_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn to_cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

fn set_thread_error(msg: &str) {
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = to_cstring(msg));
}

impl xenblock_ctx {
    fn set_error(&self, msg: &str) {
        let _ = CTX_ERRORS.try_with(|m| {
            let mut m = m.borrow_mut();
            m.insert(self.id, to_cstring(msg));
            if m.len() > 16 {
                let live = LIVE_CTX.get().lock();
                m.retain(|id, _| live.contains(id));
            }
        });
        set_thread_error(msg);
    }
}

/// Run `f`, turning errors and panics into a status (and a message).
fn guard(ctx: Option<&xenblock_ctx>, f: impl FnOnce() -> Result<()>) -> xenblock_status {
    let (status, msg) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return XENBLOCK_OK,
        Ok(Err(e)) => (status_of(e.kind()), e.to_string()),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            (
                XENBLOCK_INTERNAL,
                format!("internal error in xenblock (please report): {what}"),
            )
        }
    };
    match ctx {
        Some(c) => c.set_error(&msg),
        None => set_thread_error(&msg),
    }
    status
}

/// Read a C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::InvalidArgument(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Error::InvalidArgument(format!("{what} is not valid UTF-8")))
}

/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn opt_path(p: *const c_char, what: &str) -> Result<Option<PathBuf>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    Ok(Some(PathBuf::from(unsafe { c_str(p, what) }?)))
}

/// A struct from a newer caller (`size` > `known`, the size this library
/// knows) is accepted only if every byte past `known` is zero: fields this
/// library does not know must be unset (Linux's `copy_struct_from_user`
/// convention), so nothing the caller asked for is silently ignored.
///
/// # Safety
/// `p` points to at least `size` readable bytes.
pub(crate) unsafe fn check_unknown_tail(
    p: *const u8,
    known: usize,
    size: usize,
    what: &str,
) -> Result<()> {
    if size <= known {
        return Ok(());
    }
    // SAFETY: the caller's struct has `size` readable bytes by contract.
    let tail = unsafe { std::slice::from_raw_parts(p.add(known), size - known) };
    if let Some(i) = tail.iter().position(|&b| b != 0) {
        return Err(Error::InvalidArgument(format!(
            "{what}.abi_size is {size}, larger than the {known} bytes this library (xenblock {}) \
             knows, and byte {} beyond them is set: the caller uses a field this library does \
             not have; use a newer libxenblock or leave that field zero",
            env!("CARGO_PKG_VERSION"),
            known + i
        )));
    }
    Ok(())
}

/// The C ABI version: `(major << 16) | minor`.
#[no_mangle]
pub extern "C" fn xenblock_abi_version() -> u32 {
    (XENBLOCK_ABI_MAJOR << 16) | XENBLOCK_ABI_MINOR
}

/// The library version as a static string (e.g. "0.1.0"). Never freed.
#[no_mangle]
pub extern "C" fn xenblock_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A static, human-readable name for a status ("ok", "busy", ...); unknown
/// values give "unknown status". Never NULL, never freed.
#[no_mangle]
pub extern "C" fn xenblock_status_str(status: u32) -> *const c_char {
    let s: &'static str = match status {
        0 => "ok\0",
        1 => "invalid argument\0",
        2 => "not found\0",
        3 => "busy: refused by the sharing rule\0",
        4 => "xenstore error\0",
        5 => "hotplug script failed\0",
        6 => "timed out\0",
        7 => "bad backend state\0",
        8 => "permission denied\0",
        9 => "I/O error\0",
        10 => "not supported\0",
        11 => "internal error\0",
        12 => "would block: the hotplug lock is taken, try again\0",
        13 => "cancelled: the context was freed before the op started\0",
        _ => "unknown status\0",
    };
    s.as_ptr().cast()
}

/// The message of the last failure on this thread of a call that had no
/// context (or of any call). Valid until the next xenblock call on this
/// thread. Never NULL ("" when none).
#[no_mangle]
pub extern "C" fn xenblock_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.try_with(|e| e.borrow().as_ptr()))
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(c"".as_ptr())
}
