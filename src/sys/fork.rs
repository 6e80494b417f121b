//! Fork safety of the library's process-wide state.
//!
//! A `fork` while a worker thread holds a process-wide mutex would leave
//! that mutex locked for ever in the child (the thread is not there). So
//! such state lives in a [`PerFork`]: a `pthread_atfork` child handler bumps
//! a fork generation (one atomic add: async-signal-safe), and the first use
//! in a new generation gets a fresh, unlocked value; the inherited one is
//! left untouched (never freed, as it may be half-changed and locked; kept
//! reachable from the new one). The generation also
//! tells a context whether it was made in this process ([`generation`]),
//! which a pid cannot across PID namespaces.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn in_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Register the child handler (once per process; children inherit it).
/// Called when a context is made, before any worker thread exists.
pub fn install() {
    if !INSTALLED.swap(true, Ordering::SeqCst) {
        // SAFETY: registers a handler that only does an atomic add.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        if rc != 0 {
            INSTALLED.store(false, Ordering::SeqCst);
        }
    }
}

/// This process's fork generation: changes in every child of a fork made
/// after [`install`].
pub fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

struct Slot<T> {
    generation: u64,
    value: Mutex<T>,
    /// The slot of the generation before (inherited, never used again):
    /// kept reachable, so that a leak checker run at the child's exit
    /// (LeakSanitizer, valgrind) does not report it as lost.
    _prev: *mut Slot<T>,
}

/// A process-wide `Mutex<T>` that a forked child gets fresh (`T::default()`),
/// whatever state a parent's thread left it in.
pub struct PerFork<T> {
    slot: AtomicPtr<Slot<T>>,
}

impl<T: Default> Default for PerFork<T> {
    fn default() -> PerFork<T> {
        PerFork::new()
    }
}

impl<T: Default> PerFork<T> {
    pub const fn new() -> PerFork<T> {
        PerFork {
            slot: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The mutex of this fork generation.
    pub fn get(&self) -> &Mutex<T> {
        self.get_at(generation())
    }

    fn get_at(&self, generation: u64) -> &Mutex<T> {
        loop {
            let p = self.slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: slots are leaked, never freed, once published.
                let s = unsafe { &*p };
                if s.generation == generation {
                    return &s.value;
                }
            }
            let fresh = Box::into_raw(Box::new(Slot {
                generation,
                value: Mutex::new(T::default()),
                _prev: p,
            }));
            match self
                .slot
                .compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                // SAFETY: published now, so never freed (the old slot, of a
                // parent's generation, is leaked as it may be locked).
                Ok(_) => return unsafe { &(*fresh).value },
                Err(_) => {
                    // SAFETY: `fresh` was never published; this thread owns it.
                    drop(unsafe { Box::from_raw(fresh) });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_generation_gets_a_fresh_unlocked_value() {
        static S: PerFork<Vec<u32>> = PerFork::new();
        // (Generations given explicitly: bumping the process's own would
        // disown the contexts of the tests running alongside.)
        S.get_at(7).lock().push(1);
        let held = S.get_at(7).lock();
        assert_eq!(*held, vec![1]);
        // A child's generation while a parent's thread holds the lock.
        assert!(S.get_at(8).try_lock().is_some(), "fresh, unlocked");
        assert!(S.get_at(8).lock().is_empty());
        drop(held);
    }
}
