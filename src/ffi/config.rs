//! The configuration of a context: `struct xenblock_config` and its
//! `abi_size` rules, the flavour and log-level enums, the log callback.

use super::store::{xenblock_store_ops, CallbackStore};
use super::{opt_path, to_cstring};
use crate::context::{Config, Flavour, LogLevel};
use crate::error::{Error, Result};
use crate::imagelock::ImageLocks;
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

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

/// What to do about QEMU-compatible image locks on file disks
/// (`xenblock_config.image_locks`, ABI 1.3; docs/image-locks.md).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum xenblock_image_locks {
    /// The default: `XENBLOCK_IMAGE_LOCKS_BEST_EFFORT`.
    XENBLOCK_IMAGE_LOCKS_DEFAULT = 0,
    /// Take and check them; refuse a file on a file system without locks.
    XENBLOCK_IMAGE_LOCKS_REQUIRED = 1,
    /// Take and check them; on a file system without locks, warn once per
    /// image and attach without.
    XENBLOCK_IMAGE_LOCKS_BEST_EFFORT = 2,
    /// Neither take nor check them.
    XENBLOCK_IMAGE_LOCKS_OFF = 3,
}

/// Log callback: `msg` is valid only during the call. May be called from
/// any thread that uses the context.
pub type xenblock_log_fn =
    Option<unsafe extern "C" fn(data: *mut c_void, level: xenblock_log_level, msg: *const c_char)>;

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
    /// Bound on each wait for a reply of xenstored (built-in client only), in
    /// ms; 0 = 30000.
    pub store_timeout_ms: u32,
    /// Optional log callback.
    pub log_fn: xenblock_log_fn,
    /// Passed to `log_fn`.
    pub log_data: *mut c_void,
    /// How long prepare, release and reconcile wait for the hotplug lock, in
    /// ms; 0 = 10000. (ABI 1.1; older callers get the default.)
    pub lock_timeout_ms: u32,
    /// Ignored, never read as a value: ABI 1.1 compilers left these 4 bytes as
    /// tail padding, so a 1.1 caller may leave anything here. (ABI 1.2.)
    pub reserved0: u32,
    /// How many threads of the library run the ops of `xenblock_op_start`
    /// (started on demand; ops on more backends wait in a queue); 0 = 4.
    /// (ABI 1.2; older callers get the default.)
    pub workers: u32,
    /// Ignored, never read as a value: the 4 bytes of ABI 1.2's tail
    /// padding, where a 1.2 caller may leave anything. (ABI 1.3.)
    pub reserved1: u32,
    /// `xenblock_image_locks` value: QEMU-compatible image locks on file
    /// disks; 0 = best-effort. (ABI 1.3; older callers get the default.)
    pub image_locks: u32,
    /// Must be zero (anything else is refused), for a later field: the 4
    /// bytes that would otherwise be tail padding. (ABI 1.3.)
    pub reserved2: u32,
}

/// What a C caller gets by zero-initialising the struct and setting
/// `abi_size` to its size: every field takes its default.
impl Default for xenblock_config {
    fn default() -> Self {
        xenblock_config {
            abi_size: std::mem::size_of::<xenblock_config>() as u32,
            flavour: 0,
            store: std::ptr::null(),
            lock_dir: std::ptr::null(),
            script_dir: std::ptr::null(),
            script_timeout_ms: 0,
            store_timeout_ms: 0,
            log_fn: None,
            log_data: std::ptr::null_mut(),
            lock_timeout_ms: 0,
            reserved0: 0,
            workers: 0,
            reserved1: 0,
            image_locks: 0,
            reserved2: 0,
        }
    }
}

/// The smallest `xenblock_config` accepted: ABI 1.0 callers set at least
/// `abi_size`..`script_dir`.
const CONFIG_MIN_SIZE: usize = std::mem::offset_of!(xenblock_config, script_timeout_ms);

// The layout is ABI: `workers` (1.2) must lie beyond the 64 bytes of a 1.1
// struct, tail padding included, so that the struct grows and a 1.2 caller's
// `workers` reaches an older library's zero-tail check. (On 32-bit targets
// the 1.1 struct had no tail padding; `reserved0` is simply unused there.)
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::offset_of!(xenblock_config, reserved0) == 60);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::offset_of!(xenblock_config, workers) == 64);
// `image_locks` (1.3) lies beyond the 72 bytes of a 1.2 struct, tail
// padding (now `reserved1`) included, so a 1.2 library refuses a 1.3
// caller's setting rather than ignore it: a caller asking for `required` is
// never silently given `best-effort`. That is why neither `reserved0` nor
// the 1.2 tail padding is reused: a 1.2 library ignores both. `reserved2`
// keeps the new tail explicit and zero.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::offset_of!(xenblock_config, reserved1) == 68);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::offset_of!(xenblock_config, image_locks) == 72);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<xenblock_config>() == 80);

/// Read a caller's config, honouring `abi_size`.
///
/// # Safety
/// See `xenblock_ctx_new`.
pub(crate) unsafe fn config_from_c(cfg: *const xenblock_config) -> Result<Config> {
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
    // SAFETY: the caller's struct has `size` readable bytes.
    unsafe { super::check_unknown_tail(cfg.cast(), full, size, "xenblock_config") }?;
    // Copy what the caller has; fields beyond its size stay zero (defaults).
    let mut c: xenblock_config = xenblock_config {
        abi_size: 0,
        ..Default::default()
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
    if c.lock_timeout_ms != 0 {
        config.lock_timeout = Duration::from_millis(c.lock_timeout_ms.into());
    }
    if c.workers != 0 {
        config.workers = c.workers.min(1024) as usize;
    }
    config.image_locks = match c.image_locks {
        0 | 2 => ImageLocks::BestEffort,
        1 => ImageLocks::Required,
        3 => ImageLocks::Off,
        v => {
            return Err(Error::InvalidArgument(format!(
                "xenblock_config.image_locks is {v}; expected 0 (default: best-effort), \
                 1 (required), 2 (best-effort) or 3 (off)"
            )))
        }
    };
    if c.reserved2 != 0 {
        return Err(Error::InvalidArgument(format!(
            "xenblock_config.reserved2 is {}; it must be zero (a field of a later \
             libxenblock?): zero-initialise the struct",
            c.reserved2
        )));
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
