//! The descriptors a context keeps open, by owner, in a table a forked
//! child can read without taking any lock.
//!
//! A child forked while a context exists inherits its descriptors (the
//! xenstore connection, the eventfds, the inotify watch, the open lock
//! file of a waiting op, the `/proc` files), but not its threads, and the
//! context's mutexes may be held by threads that are not there. So
//! `xenblock_ctx_free` in the child cannot go through the context's
//! structures: it closes instead the descriptors this table lists under the
//! context's owner number. The table is a fixed array of atomics: no
//! lock, no allocation, the same in the child as in the parent at the
//! fork.
//!
//! A descriptor is listed right after it is opened and unlisted right
//! before it is closed, so the table never names a closed descriptor of
//! ours (whose number the host may have reused): a child forked in the
//! instant between an open and its listing keeps that one descriptor (it
//! is close-on-exec, like all of ours). Past [`SLOTS`] descriptors at once
//! the rest are not listed (and a child keeps them); a context needs a
//! handful plus one per op waiting for the lock.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// How many descriptors the table lists at once, over all contexts.
const SLOTS: usize = 512;

static TABLE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static NEXT_OWNER: AtomicU32 = AtomicU32::new(1);

/// A new owner number (never 0, which means "not listed").
pub fn new_owner() -> u32 {
    loop {
        let o = NEXT_OWNER.fetch_add(1, Ordering::Relaxed);
        if o != 0 {
            return o;
        }
    }
}

fn entry(owner: u32, fd: RawFd) -> u64 {
    (u64::from(owner) << 32) | u64::from(fd as u32)
}

/// List `fd` under `owner` (0: nothing listed). False when the table is full.
pub fn register(owner: u32, fd: RawFd) -> bool {
    if owner == 0 || fd < 0 {
        return false;
    }
    let e = entry(owner, fd);
    slots_from(fd).any(|slot| {
        slot.load(Ordering::Relaxed) == 0
            && slot
                .compare_exchange(0, e, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    })
}

/// Every slot, starting at the one of `fd` (descriptor numbers are
/// distinct among open files, so that one is usually free, or the entry):
/// one probe instead of a scan past every listed descriptor.
fn slots_from(fd: RawFd) -> impl Iterator<Item = &'static AtomicU64> {
    let start = fd as usize % SLOTS;
    TABLE[start..].iter().chain(TABLE[..start].iter())
}

/// Unlist `fd` of `owner`; call it before closing the descriptor.
pub fn unregister(owner: u32, fd: RawFd) {
    if owner == 0 || fd < 0 {
        return;
    }
    let e = entry(owner, fd);
    for slot in slots_from(fd) {
        if slot.load(Ordering::Relaxed) == e
            && slot
                .compare_exchange(e, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
    }
}

/// The descriptors listed under `owner`.
pub fn listed(owner: u32) -> Vec<RawFd> {
    TABLE
        .iter()
        .map(|s| s.load(Ordering::Acquire))
        .filter(|e| *e != 0 && (e >> 32) as u32 == owner)
        .map(|e| e as u32 as RawFd)
        .collect()
}

/// In a forked child: close every descriptor listed under `owner` and
/// unlist them. Only for an owner whose threads are not in this process
/// (they would close them too). Returns how many were closed.
pub fn close_inherited(owner: u32) -> usize {
    if owner == 0 {
        return 0;
    }
    let mut n = 0;
    for slot in &TABLE {
        let e = slot.load(Ordering::Acquire);
        if e == 0 || (e >> 32) as u32 != owner {
            continue;
        }
        if slot
            .compare_exchange(e, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the descriptor was listed as this owner's, and an
            // owner's descriptors are unlisted before they are closed, so
            // it is still the one the owner opened; nobody else in this
            // process closes it (the owner's threads are in the parent).
            unsafe { libc::close(e as u32 as RawFd) };
            n += 1;
        }
    }
    n
}

/// In a forked child: close `fd` if it is still listed under `owner` (an
/// op's descriptor, which the child's free of the op's context may have
/// closed already), and unlist it. True when closed here.
pub fn close_inherited_fd(owner: u32, fd: RawFd) -> bool {
    if owner == 0 || fd < 0 {
        return false;
    }
    let e = entry(owner, fd);
    for slot in slots_from(fd) {
        if slot.load(Ordering::Relaxed) == e
            && slot
                .compare_exchange(e, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: listed as this owner's until now, so still open and
            // the owner's (see `close_inherited`).
            unsafe { libc::close(fd) };
            return true;
        }
    }
    false
}

/// A descriptor-holding value (a file, a socket) listed under an owner for
/// as long as it lives: unlisted, then closed, when dropped.
pub struct Tracked<T: AsFd> {
    inner: Option<T>,
    owner: u32,
}

impl<T: AsFd> Tracked<T> {
    /// List `t`'s descriptor under `owner` (0: not listed).
    pub fn new(owner: u32, t: T) -> Tracked<T> {
        register(owner, t.as_fd().as_raw_fd());
        Tracked {
            inner: Some(t),
            owner,
        }
    }

    /// Unlist and hand back the value (its descriptor stays open).
    pub fn into_inner(mut self) -> T {
        let t = self.inner.take().expect("present until dropped");
        unregister(self.owner, t.as_fd().as_raw_fd());
        t
    }

    /// The owner it is listed under.
    pub fn owner(&self) -> u32 {
        self.owner
    }
}

impl<T: AsFd> std::ops::Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.inner.as_ref().expect("present until dropped")
    }
}

impl<T: AsFd> std::ops::DerefMut for Tracked<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.inner.as_mut().expect("present until dropped")
    }
}

impl<T: AsFd> Drop for Tracked<T> {
    fn drop(&mut self) {
        if let Some(t) = self.inner.take() {
            unregister(self.owner, t.as_fd().as_raw_fd());
            drop(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_while_alive_unlisted_before_close() {
        let owner = new_owner();
        let f = Tracked::new(owner, std::fs::File::open("/dev/null").unwrap());
        let fd = f.as_fd().as_raw_fd();
        assert_eq!(listed(owner), vec![fd]);
        drop(f);
        assert!(listed(owner).is_empty());
        let g = Tracked::new(owner, std::fs::File::open("/dev/null").unwrap());
        let raw = g.into_inner();
        assert!(listed(owner).is_empty(), "into_inner unlists");
        drop(raw);
    }
}
