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
//!   Store callbacks may then be called from several threads at once.

#![allow(non_camel_case_types)]

use crate::context::{Config, Context, Flavour, LogLevel};
use crate::error::{Error, ErrorKind, Result, XsErrno};
use crate::store::{Store, TxId};
use parking_lot::Mutex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Major version of the C ABI; changes only on incompatible change. It is
/// the SONAME's version (`libxenblock.so.<major>`).
pub const XENBLOCK_ABI_MAJOR: u32 = 1;
/// Minor version of the C ABI; grows with compatible additions.
pub const XENBLOCK_ABI_MINOR: u32 = 0;

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
    }
}

/// Operating-system contract (`xenblock_config.flavour`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum xenblock_flavour {
    /// The OS xenblock was built for.
    XENBLOCK_FLAVOUR_NATIVE = 0,
    XENBLOCK_FLAVOUR_LINUX = 1,
    XENBLOCK_FLAVOUR_FREEBSD = 2,
    XENBLOCK_FLAVOUR_NETBSD = 3,
}

/// Severity passed to the log callback.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum xenblock_log_level {
    XENBLOCK_LOG_DEBUG = 0,
    XENBLOCK_LOG_INFO = 1,
    XENBLOCK_LOG_WARN = 2,
    XENBLOCK_LOG_ERROR = 3,
}

/// Log callback: `msg` is valid only during the call. May be called from
/// any thread that uses the context.
pub type xenblock_log_fn =
    Option<unsafe extern "C" fn(data: *mut c_void, level: xenblock_log_level, msg: *const c_char)>;

/// A xenstore supplied by the caller (e.g. libxl's own `xs_handle`), instead
/// of xenblock's built-in client. Every callback returns 0 on success or a
/// positive errno value (`ENOENT` for a missing node, `EAGAIN` from
/// `transaction_end` for a conflict). Transaction ids are the caller's
/// (`xs_transaction_t`); 0 means none. Callbacks may be called from several
/// threads at once if the context is shared.
#[repr(C)]
pub struct xenblock_store_ops {
    /// `sizeof(struct xenblock_store_ops)` as compiled by the caller.
    pub abi_size: u32,
    /// Passed back as the first argument of every callback.
    pub opaque: *mut c_void,
    /// Read `path`; on success set `*value` (malloc'd or as `free_fn` frees,
    /// need not be NUL-terminated) and `*len`.
    pub read: Option<
        unsafe extern "C" fn(
            opaque: *mut c_void,
            tx: u32,
            path: *const c_char,
            value: *mut *mut c_char,
            len: *mut usize,
        ) -> c_int,
    >,
    /// Write `len` bytes of `value` at `path`.
    pub write: Option<
        unsafe extern "C" fn(
            opaque: *mut c_void,
            tx: u32,
            path: *const c_char,
            value: *const c_char,
            len: usize,
        ) -> c_int,
    >,
    /// Remove `path` and its children.
    pub remove:
        Option<unsafe extern "C" fn(opaque: *mut c_void, tx: u32, path: *const c_char) -> c_int>,
    /// List the children of `path`: `*entries` is an array of `*count`
    /// NUL-terminated names, freed with one call of `free_fn` on the array
    /// (as libxenstore's `xs_directory` allocates it) — or, when
    /// `directory_frees_each` is true, `free_fn` on each name then the array.
    pub directory: Option<
        unsafe extern "C" fn(
            opaque: *mut c_void,
            tx: u32,
            path: *const c_char,
            entries: *mut *mut *mut c_char,
            count: *mut usize,
        ) -> c_int,
    >,
    /// Start a transaction; set `*tx`.
    pub transaction_start: Option<unsafe extern "C" fn(opaque: *mut c_void, tx: *mut u32) -> c_int>,
    /// End a transaction: commit when `commit` is true. Return `EAGAIN` when
    /// the commit conflicted (xenblock then retries the whole transaction).
    pub transaction_end:
        Option<unsafe extern "C" fn(opaque: *mut c_void, tx: u32, commit: bool) -> c_int>,
    /// Frees memory returned by `read` and `directory`; NULL means `free(3)`.
    pub free_fn: Option<unsafe extern "C" fn(opaque: *mut c_void, ptr: *mut c_void)>,
    /// See `directory`.
    pub directory_frees_each: bool,
    /// The domain id of the caller's own domain (the home of relative
    /// paths, `/local/domain/<self_domid>`); 0 for dom0, the default.
    pub self_domid: u32,
}

/// How to set up a context. Zero-initialise, set `abi_size =
/// sizeof(struct xenblock_config)`, then fill what you need; zero/NULL
/// fields take the defaults.
#[repr(C)]
pub struct xenblock_config {
    /// `sizeof(struct xenblock_config)` as compiled by the caller.
    pub abi_size: u32,
    /// `xenblock_flavour` value; 0 = native.
    pub flavour: u32,
    /// NULL: connect the built-in client (`$XENSTORED_PATH`, else the usual
    /// sockets, else `/dev/xen/xenbus`). Otherwise copied at `xenblock_ctx_new`;
    /// `opaque` must stay valid for the life of the context.
    pub store: *const xenblock_store_ops,
    /// Hotplug lock directory; NULL = `/var/run/xen-hotplug` (as the scripts).
    pub lock_dir: *const c_char,
    /// Directory for relative custom script names; NULL = `/etc/xen/scripts`.
    pub script_dir: *const c_char,
    /// Custom script timeout in milliseconds; 0 = 40000 (as libxl).
    pub script_timeout_ms: u32,
    /// Bound on each wait for xenstored and the lock, in ms; 0 = 30000.
    pub store_timeout_ms: u32,
    /// Optional log callback.
    pub log_fn: xenblock_log_fn,
    /// Passed to `log_fn`.
    pub log_data: *mut c_void,
}

/// The smallest `xenblock_config` accepted: ABI 1.0 callers set at least
/// `abi_size`..`script_dir`.
const CONFIG_MIN_SIZE: usize = std::mem::offset_of!(xenblock_config, script_timeout_ms);
const STORE_OPS_MIN_SIZE: usize = std::mem::offset_of!(xenblock_store_ops, free_fn);

/// An opaque context. Create with `xenblock_ctx_new`, free with `xenblock_ctx_free`.
pub struct xenblock_ctx {
    inner: Context,
    /// Unique for the life of the process (addresses are reused, ids not).
    id: u64,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// This thread's last failure per context id. Thread-local, so a thread
    /// that ends takes its messages with it.
    static CTX_ERRORS: RefCell<HashMap<u64, CString>> = RefCell::new(HashMap::new());
}

/// Ids of the contexts not yet freed, to prune messages of freed ones.
static LIVE_CTX: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static NEXT_CTX_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn to_cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

fn set_thread_error(msg: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = to_cstring(msg));
}

impl xenblock_ctx {
    fn set_error(&self, msg: &str) {
        CTX_ERRORS.with(|m| {
            let mut m = m.borrow_mut();
            m.insert(self.id, to_cstring(msg));
            if m.len() > 16 {
                let live = LIVE_CTX.lock();
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
        _ => "unknown status\0",
    };
    s.as_ptr().cast()
}

/// The message of the last failure on this thread of a call that had no
/// context (or of any call). Valid until the next xenblock call on this
/// thread. Never NULL ("" when none).
#[no_mangle]
pub extern "C" fn xenblock_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr())).unwrap_or(c"".as_ptr())
}

/// Create a context. `cfg` may be NULL for all defaults. On success `*out`
/// holds a context to free with `xenblock_ctx_free`; on failure `*out` is
/// NULL and `xenblock_last_error()` says why.
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
            inner: Context::new(config)?,
            id,
        });
        LIVE_CTX.lock().push(id);
        // SAFETY: as above.
        unsafe { *out = Box::into_raw(ctx) };
        Ok(())
    })
}

/// Read a caller's config, honouring `abi_size`.
///
/// # Safety
/// See `xenblock_ctx_new`.
unsafe fn config_from_c(cfg: *const xenblock_config) -> Result<Config> {
    let mut config = Config::default();
    if cfg.is_null() {
        return Ok(config);
    }
    // SAFETY: cfg is non-NULL; abi_size is the first field of every version.
    let size = unsafe { (*cfg).abi_size } as usize;
    let full = std::mem::size_of::<xenblock_config>();
    if size < CONFIG_MIN_SIZE || size > full.max(4096) {
        return Err(Error::InvalidArgument(format!(
            "xenblock_config.abi_size is {size}; expected sizeof(struct xenblock_config) \
             ({full} for this library, at least {CONFIG_MIN_SIZE}); set it before the call"
        )));
    }
    // Copy what the caller has; fields beyond its size stay zero (defaults).
    let mut c: xenblock_config = xenblock_config {
        abi_size: 0,
        flavour: 0,
        store: std::ptr::null(),
        lock_dir: std::ptr::null(),
        script_dir: std::ptr::null(),
        script_timeout_ms: 0,
        store_timeout_ms: 0,
        log_fn: None,
        log_data: std::ptr::null_mut(),
    };
    // SAFETY: the caller's struct has at least min(size, full) readable bytes;
    // ours has `full`; they do not overlap. A newer caller's extra fields are
    // ignored.
    unsafe {
        std::ptr::copy_nonoverlapping(
            cfg.cast::<u8>(),
            (&mut c as *mut xenblock_config).cast::<u8>(),
            size.min(full),
        )
    };
    config.flavour = match c.flavour {
        0 => Flavour::native(),
        1 => Flavour::Linux,
        2 => Flavour::FreeBsd,
        3 => Flavour::NetBsd,
        f => {
            return Err(Error::InvalidArgument(format!(
                "xenblock_config.flavour is {f}; expected 0 (native), 1 (linux), 2 (freebsd) \
                 or 3 (netbsd)"
            )))
        }
    };
    // SAFETY: strings are NULL or NUL-terminated by contract.
    if let Some(p) = unsafe { opt_path(c.lock_dir, "xenblock_config.lock_dir") }? {
        config.lock_dir = p;
    }
    // SAFETY: as above.
    if let Some(p) = unsafe { opt_path(c.script_dir, "xenblock_config.script_dir") }? {
        config.script_dir = p;
    }
    if c.script_timeout_ms != 0 {
        config.script_timeout = Duration::from_millis(c.script_timeout_ms.into());
    }
    if c.store_timeout_ms != 0 {
        config.store_timeout = Duration::from_millis(c.store_timeout_ms.into());
    }
    if let Some(f) = c.log_fn {
        let data = SendPtr(c.log_data);
        config.logger = Some(Arc::new(move |level: LogLevel, msg: &str| {
            let level = match level {
                LogLevel::Debug => xenblock_log_level::XENBLOCK_LOG_DEBUG,
                LogLevel::Info => xenblock_log_level::XENBLOCK_LOG_INFO,
                LogLevel::Warn => xenblock_log_level::XENBLOCK_LOG_WARN,
                LogLevel::Error => xenblock_log_level::XENBLOCK_LOG_ERROR,
            };
            let m = to_cstring(msg);
            // SAFETY: the caller gave this callback and data for the life of
            // the context; m lives across the call.
            unsafe { f(data.get(), level, m.as_ptr()) };
        }));
    }
    if !c.store.is_null() {
        // SAFETY: non-NULL store pointer from the caller's config.
        config.store = Some(Arc::new(unsafe { CallbackStore::from_c(c.store) }?));
    }
    Ok(config)
}

/// A raw pointer the caller promised may be used from any thread.
#[derive(Clone, Copy)]
struct SendPtr(*mut c_void);
// SAFETY: the C API documents that callbacks and their data may be used from
// any thread that uses the context.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut c_void {
        self.0
    }
}

/// Free a context. NULL is ignored.
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
        // SAFETY: ctx came from Box::into_raw in xenblock_ctx_new.
        let ctx = unsafe { Box::from_raw(ctx) };
        LIVE_CTX.lock().retain(|id| *id != ctx.id);
        CTX_ERRORS.with(|m| m.borrow_mut().remove(&ctx.id));
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
        // SAFETY: live context by contract.
        let id = unsafe { &*ctx }.id;
        // The CString's heap buffer stays put until this thread replaces it.
        CTX_ERRORS
            .with(|m| m.borrow().get(&id).map(|s| s.as_ptr()))
            .unwrap_or(c"".as_ptr())
    }))
    .unwrap_or(c"".as_ptr())
}

/// # Safety
/// `ctx` is NULL or a live context.
unsafe fn ctx_ref<'a>(ctx: *const xenblock_ctx) -> Option<&'a xenblock_ctx> {
    // SAFETY: NULL or live by contract.
    unsafe { ctx.as_ref() }
}

/// Prepare the disk of a backend: what `block add` does. `backend_path` is
/// absolute or relative to this domain's home (libxl passes
/// `backend/vbd/<domid>/<devid>`). On `XENBLOCK_BUSY` the backend has
/// `hotplug-status busy`, on other failures `error`, and `hotplug-error`
/// holds the message, which `xenblock_ctx_last_error` also gives.
///
/// # Safety
/// `ctx` is a live context; `backend_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn xenblock_prepare(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
) -> xenblock_status {
    // SAFETY: by contract.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        set_thread_error("xenblock_prepare: ctx is NULL");
        return XENBLOCK_INVALID_ARGUMENT;
    };
    guard(Some(c), || {
        // SAFETY: by contract.
        let p = unsafe { c_str(backend_path, "backend_path") }?;
        c.inner.prepare(p).map(|_| ())
    })
}

/// Release the disk of a backend: what `block remove` does (detach the loop
/// device of a file target, if it still serves that file). Idempotent.
///
/// # Safety
/// `ctx` is a live context; `backend_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn xenblock_release(
    ctx: *mut xenblock_ctx,
    backend_path: *const c_char,
) -> xenblock_status {
    // SAFETY: by contract.
    let Some(c) = (unsafe { ctx_ref(ctx) }) else {
        set_thread_error("xenblock_release: ctx is NULL");
        return XENBLOCK_INVALID_ARGUMENT;
    };
    guard(Some(c), || {
        // SAFETY: by contract.
        let p = unsafe { c_str(backend_path, "backend_path") }?;
        c.inner.release(p).map(|_| ())
    })
}

/// The store behind a caller's `xenblock_store_ops`.
struct CallbackStore {
    ops: xenblock_store_ops,
}

// SAFETY: the C API documents that the callbacks may be called from any
// thread that uses the context.
unsafe impl Send for CallbackStore {}
// SAFETY: as above.
unsafe impl Sync for CallbackStore {}

impl CallbackStore {
    /// # Safety
    /// `p` points to a `xenblock_store_ops` of at least `abi_size` bytes.
    unsafe fn from_c(p: *const xenblock_store_ops) -> Result<CallbackStore> {
        // SAFETY: readable by contract; abi_size comes first.
        let size = unsafe { (*p).abi_size } as usize;
        let full = std::mem::size_of::<xenblock_store_ops>();
        if size < STORE_OPS_MIN_SIZE || size > full.max(4096) {
            return Err(Error::InvalidArgument(format!(
                "xenblock_store_ops.abi_size is {size}; expected sizeof(struct xenblock_store_ops) \
                 ({full} for this library, at least {STORE_OPS_MIN_SIZE})"
            )));
        }
        let mut ops = xenblock_store_ops {
            abi_size: 0,
            opaque: std::ptr::null_mut(),
            read: None,
            write: None,
            remove: None,
            directory: None,
            transaction_start: None,
            transaction_end: None,
            free_fn: None,
            directory_frees_each: false,
            self_domid: 0,
        };
        // SAFETY: copy min(size, full) bytes of the caller's struct into ours.
        unsafe {
            std::ptr::copy_nonoverlapping(
                p.cast::<u8>(),
                (&mut ops as *mut xenblock_store_ops).cast::<u8>(),
                size.min(full),
            )
        };
        let missing: Vec<&str> = [
            ("read", ops.read.is_none()),
            ("write", ops.write.is_none()),
            ("remove", ops.remove.is_none()),
            ("directory", ops.directory.is_none()),
            ("transaction_start", ops.transaction_start.is_none()),
            ("transaction_end", ops.transaction_end.is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
        if !missing.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "xenblock_store_ops lacks the callback(s) {}",
                missing.join(", ")
            )));
        }
        Ok(CallbackStore { ops })
    }

    fn free(&self, p: *mut c_void) {
        if p.is_null() {
            return;
        }
        match self.ops.free_fn {
            // SAFETY: the caller's free function for memory its callbacks returned.
            Some(f) => unsafe { f(self.ops.opaque, p) },
            // SAFETY: NULL free_fn means the memory came from malloc.
            None => unsafe { libc::free(p) },
        }
    }

    fn check(&self, rc: c_int, op: &'static str, path: &str) -> Result<()> {
        match rc {
            0 => Ok(()),
            e if e > 0 => Err(Error::store(op, path, XsErrno::from_errno(e))),
            e => Err(Error::store(op, path, XsErrno::from_errno(-e))),
        }
    }
}

fn c_path(path: &str) -> Result<CString> {
    CString::new(path).map_err(|_| Error::InvalidArgument(format!("path {path:?} contains NUL")))
}

impl Store for CallbackStore {
    fn read(&self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>> {
        crate::store::validate_path(path)?;
        let cp = c_path(path)?;
        let mut value: *mut c_char = std::ptr::null_mut();
        let mut len: usize = 0;
        let f = self.ops.read.expect("checked at creation");
        // SAFETY: valid C string and out-pointers; callback given by the caller.
        let rc = unsafe { f(self.ops.opaque, tx, cp.as_ptr(), &mut value, &mut len) };
        if rc == libc::ENOENT || rc == -libc::ENOENT {
            self.free(value.cast());
            return Ok(None);
        }
        if let Err(e) = self.check(rc, "read", path) {
            self.free(value.cast());
            return Err(e);
        }
        if value.is_null() {
            return Ok(Some(Vec::new()));
        }
        if len > crate::store::wire::PAYLOAD_MAX {
            self.free(value.cast());
            return Err(Error::StoreProtocol(format!(
                "the store's read callback returned {len} bytes for {path}, more than xenstore allows"
            )));
        }
        // SAFETY: the callback returned `len` readable bytes at `value`.
        let v = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len) }.to_vec();
        self.free(value.cast());
        Ok(Some(v))
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        crate::store::validate_path(path)?;
        let cp = c_path(path)?;
        let f = self.ops.write.expect("checked at creation");
        // SAFETY: valid pointers for the duration of the call.
        let rc = unsafe {
            f(
                self.ops.opaque,
                tx,
                cp.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
            )
        };
        self.check(rc, "write", path)
    }

    fn remove(&self, tx: TxId, path: &str) -> Result<()> {
        crate::store::validate_path(path)?;
        let cp = c_path(path)?;
        let f = self.ops.remove.expect("checked at creation");
        // SAFETY: valid C string for the duration of the call.
        let rc = unsafe { f(self.ops.opaque, tx, cp.as_ptr()) };
        if rc == libc::ENOENT || rc == -libc::ENOENT {
            return Ok(());
        }
        self.check(rc, "rm", path)
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Option<Vec<String>>> {
        crate::store::validate_path(path)?;
        let cp = c_path(path)?;
        let mut entries: *mut *mut c_char = std::ptr::null_mut();
        let mut count: usize = 0;
        let f = self.ops.directory.expect("checked at creation");
        // SAFETY: valid C string and out-pointers.
        let rc = unsafe { f(self.ops.opaque, tx, cp.as_ptr(), &mut entries, &mut count) };
        let free_all = |entries: *mut *mut c_char, n: usize| {
            if entries.is_null() {
                return;
            }
            if self.ops.directory_frees_each {
                for i in 0..n {
                    // SAFETY: `n` entries returned by the callback.
                    self.free(unsafe { *entries.add(i) }.cast());
                }
            }
            self.free(entries.cast());
        };
        if rc == libc::ENOENT || rc == -libc::ENOENT {
            free_all(entries, count);
            return Ok(None);
        }
        if let Err(e) = self.check(rc, "directory", path) {
            free_all(entries, count);
            return Err(e);
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: the callback returned `count` entries.
            let p = unsafe { *entries.add(i) };
            if !p.is_null() {
                // SAFETY: each entry is a NUL-terminated string.
                out.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
            }
        }
        free_all(entries, count);
        Ok(Some(out))
    }

    fn transaction_start(&self) -> Result<TxId> {
        let mut tx: u32 = 0;
        let f = self.ops.transaction_start.expect("checked at creation");
        // SAFETY: valid out-pointer.
        let rc = unsafe { f(self.ops.opaque, &mut tx) };
        self.check(rc, "transaction-start", "")?;
        Ok(tx)
    }

    fn home(&self) -> Result<String> {
        Ok(format!("/local/domain/{}", self.ops.self_domid))
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<bool> {
        let f = self.ops.transaction_end.expect("checked at creation");
        // SAFETY: plain values.
        let rc = unsafe { f(self.ops.opaque, tx, commit) };
        if rc == libc::EAGAIN || rc == -libc::EAGAIN {
            return Ok(false);
        }
        self.check(rc, "transaction-end", "")?;
        Ok(true)
    }
}

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

/// `xenblock_plan_new` actions.
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
/// free with `xenblock_plan_free`; on failure `*out` is NULL.
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
        set_thread_error("xenblock_plan_new: ctx is NULL");
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

/// Detach the loop devices xenblock attached that no backend references any
/// more (left behind by a toolstack killed during `xenblock_prepare`); never
/// touches loop devices xenblock did not make. `backend_prefix` (NULL = all)
/// limits the sweep to backends whose absolute path starts with it, e.g.
/// "/local/domain/0/backend/vbd/7/". `detached` (may be NULL) receives the
/// number of devices detached. Linux only (`XENBLOCK_UNSUPPORTED` elsewhere).
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
        set_thread_error("xenblock_reconcile: ctx is NULL");
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
