//! A host may call into the C API while the calling thread's locals are
//! being destroyed: libxl frees its context (and so ours) on exit paths, and
//! a thread-local destructor of the host may run after xenblock's own. Such
//! calls must neither panic nor print a panic message (seen under real Xen as
//! "cannot access a Thread Local Storage value during or after
//! destruction"); they return their status and drop the message. One test in
//! a binary of its own: it installs a process-wide panic hook.

mod common;
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use xenblock::ffi::xenblock_status::XENBLOCK_OK;
use xenblock::ffi::*;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Calls xenblock from its destructor, with a live context.
struct HostLocal(std::cell::Cell<*mut xenblock_ctx>);

impl Drop for HostLocal {
    fn drop(&mut self) {
        let ctx = self.0.get();
        let bogus = CString::new("backend/vbd/not-a-domain").unwrap();
        // SAFETY: ctx is live until xenblock_ctx_free below; strings are NUL-terminated.
        unsafe {
            assert_ne!(xenblock_prepare(ctx, bogus.as_ptr()), XENBLOCK_OK);
            let _ = xenblock_ctx_last_error(ctx);
            assert_ne!(
                xenblock_prepare(std::ptr::null_mut(), bogus.as_ptr()),
                XENBLOCK_OK
            );
            let _ = xenblock_last_error();
            xenblock_ctx_free(ctx);
        }
    }
}

thread_local! {
    static HOST: HostLocal = const { HostLocal(std::cell::Cell::new(std::ptr::null_mut())) };
}

#[test]
fn calls_during_thread_teardown_do_not_panic() {
    let xsd = common::xsd::Daemon::start();
    std::env::set_var("XENSTORED_PATH", &xsd.socket);
    let lock_dir = CString::new(xsd.dir.join("lock").to_str().unwrap()).unwrap();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(info);
    }));
    let lock_ptr = lock_dir.as_ptr() as usize;
    std::thread::spawn(move || {
        // The host's local first, so its destructor is registered first and
        // runs after xenblock's (thread-local destructors run last-in,
        // first-out).
        HOST.with(|_| ());
        let cfg = xenblock_config {
            lock_dir: lock_ptr as *const std::ffi::c_char,
            ..Default::default()
        };
        let mut ctx: *mut xenblock_ctx = std::ptr::null_mut();
        // SAFETY: cfg is a complete struct; ctx receives the new context.
        let st = unsafe { xenblock_ctx_new(&cfg, &mut ctx) };
        assert_eq!(st, XENBLOCK_OK, "ctx_new against the embedded xenstored");
        // A failure now touches (and registers) xenblock's thread-locals.
        let bogus = CString::new("backend").unwrap();
        // SAFETY: live ctx, NUL-terminated path.
        assert_ne!(
            unsafe { xenblock_prepare(ctx, bogus.as_ptr()) },
            XENBLOCK_OK
        );
        HOST.with(|h| h.0.set(ctx));
    })
    .join()
    .expect("thread ends cleanly");
    drop(lock_dir);
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a call made during thread teardown panicked"
    );
}
