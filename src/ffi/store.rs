//! A xenstore supplied by the caller: `struct xenblock_store_ops` and the
//! [`Store`] over its callbacks.

use crate::error::{Error, Result, XsErrno};
use crate::store::{Store, TxId};
use std::ffi::{c_char, c_int, c_void, CStr, CString};

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

const STORE_OPS_MIN_SIZE: usize = std::mem::offset_of!(xenblock_store_ops, free_fn);

/// The store behind a caller's `xenblock_store_ops`.
pub(crate) struct CallbackStore {
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
    pub(crate) unsafe fn from_c(p: *const xenblock_store_ops) -> Result<CallbackStore> {
        // SAFETY: readable by contract; abi_size comes first.
        let size = unsafe { (*p).abi_size } as usize;
        let full = std::mem::size_of::<xenblock_store_ops>();
        if size < STORE_OPS_MIN_SIZE || size > full.max(4096) {
            return Err(Error::InvalidArgument(format!(
                "xenblock_store_ops.abi_size is {size}; expected sizeof(struct xenblock_store_ops) \
                 ({full} for this library, at least {STORE_OPS_MIN_SIZE})"
            )));
        }
        // SAFETY: the caller's struct has `size` readable bytes.
        unsafe { super::check_unknown_tail(p.cast(), full, size, "xenblock_store_ops") }?;
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
