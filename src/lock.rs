//! The hotplug lock shared with Xen's shell scripts.
//!
//! Upstream's `locking.sh` (`claim_lock "block"`) uses the with-lock-ex
//! protocol on `/var/run/xen-hotplug/block`: open with O_CREAT, `flock`
//! exclusively, then compare the inode of the descriptor with the inode the
//! path names now; equal means the lock is held, otherwise another holder
//! unlinked it meanwhile and we retry. Release unlinks the path while still
//! holding the flock. Taking the very same lock makes in-process attaches and
//! script attaches on one host exclude each other. An in-process mutex orders
//! the threads of this process first, so they do not spin on `flock`.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use parking_lot::{Mutex, MutexGuard};
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where upstream's scripts keep their locks.
pub const DEFAULT_LOCK_DIR: &str = "/var/run/xen-hotplug";
/// The lock's name, as in `claim_lock "block"`.
pub const LOCK_NAME: &str = "block";

/// The `block` hotplug lock of one lock directory.
pub struct HotplugLock {
    path: PathBuf,
    dir: PathBuf,
    mutex: Mutex<()>,
    timeout: Duration,
}

/// Proof of holding the lock; dropping it releases (unlinks, then unlocks).
pub struct LockGuard<'a> {
    _thread: MutexGuard<'a, ()>,
    file: Option<Flock<File>>,
    path: &'a Path,
}

impl HotplugLock {
    /// The lock `<dir>/block`. The directory is created on first use.
    pub fn new(dir: &Path, timeout: Duration) -> HotplugLock {
        HotplugLock {
            path: dir.join(LOCK_NAME),
            dir: dir.to_path_buf(),
            mutex: Mutex::new(()),
            timeout,
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the lock, waiting at most the configured timeout.
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        let deadline = Instant::now() + self.timeout;
        let thread = match self.mutex.try_lock_until(deadline) {
            Some(g) => g,
            None => return Err(self.timed_out()),
        };
        if !self.dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&self.dir)
                .map_err(|e| {
                    Error::io(
                        format!(
                            "cannot create the hotplug lock directory {}",
                            self.dir.display()
                        ),
                        e,
                    )
                })?;
        }
        let mut pause = Duration::from_micros(20);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&self.path)
                .map_err(|e| {
                    Error::io(
                        format!("cannot open the hotplug lock {}", self.path.display()),
                        e,
                    )
                })?;
            let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) | Err((_, nix::errno::Errno::EINTR)) => {
                    if Instant::now() >= deadline {
                        return Err(self.timed_out());
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(2));
                    continue;
                }
                Err((_, e)) => {
                    return Err(Error::sys(
                        format!("cannot flock the hotplug lock {}", self.path.display()),
                        e,
                    ))
                }
            };
            let held = locked
                .metadata()
                .map_err(|e| Error::io("cannot fstat the hotplug lock", e))?;
            match std::fs::symlink_metadata(&self.path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(LockGuard {
                        _thread: thread,
                        file: Some(locked),
                        path: &self.path,
                    })
                }
                // Unlinked (or replaced) by the previous holder: try again.
                _ => continue,
            }
        }
    }

    fn timed_out(&self) -> Error {
        Error::Timeout(format!(
            "waited {:?} for the hotplug lock {} and another holder (a hotplug script or \
             another toolstack process) still has it",
            self.timeout,
            self.path.display()
        ))
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Unlink while still holding the flock, as the protocol requires.
        let _ = std::fs::remove_file(self.path);
        drop(self.file.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn lock_excludes_threads_and_removes_its_file() {
        let dir = std::env::temp_dir().join(format!("xenblock-lock-{}", std::process::id()));
        let lock = Arc::new(HotplugLock::new(&dir, Duration::from_secs(10)));
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (lock, inside) = (lock.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _g = lock.acquire().unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(!lock.path().exists(), "release unlinks the lock file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn held_flock_from_elsewhere_times_out() {
        let dir = std::env::temp_dir().join(format!("xenblock-lock2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = File::create(dir.join(LOCK_NAME)).unwrap();
        let _held = Flock::lock(f, FlockArg::LockExclusive).unwrap();
        let lock = HotplugLock::new(&dir, Duration::from_millis(50));
        let e = lock.acquire().err().expect("must time out");
        assert_eq!(e.kind(), crate::ErrorKind::Timeout);
        assert!(e.to_string().contains("hotplug lock"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
