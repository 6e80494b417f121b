//! Two small kernel notifications: a "done" flag an event loop can poll
//! (an eventfd on Linux, a pipe elsewhere), and a watch on the hotplug
//! lock's directory that wakes a waiter when the lock file is closed,
//! unlinked or replaced (inotify on Linux).

use crate::sys::fdreg::Tracked;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A descriptor that polls readable once [`DoneFlag::set`] was called, and
/// stays readable (nobody reads it) until it is dropped. Close-on-exec.
/// Its descriptors are listed under an owner ([`crate::sys::fdreg`]).
pub struct DoneFlag {
    read: Tracked<OwnedFd>,
    #[cfg(not(target_os = "linux"))]
    write: Tracked<OwnedFd>,
}

impl DoneFlag {
    /// A flag not yet set, its descriptors listed under `owner` (0: not).
    pub fn new(owner: u32) -> std::io::Result<DoneFlag> {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::eventfd::{EfdFlags, EventFd};
            let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
            Ok(DoneFlag {
                read: Tracked::new(owner, fd.into()),
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok(DoneFlag {
                read: Tracked::new(owner, read),
                write: Tracked::new(owner, write),
            })
        }
    }

    /// Make the descriptor readable (for good).
    pub fn set(&self) {
        #[cfg(target_os = "linux")]
        let _ = nix::unistd::write(&*self.read, &1u64.to_ne_bytes());
        #[cfg(not(target_os = "linux"))]
        let _ = nix::unistd::write(&*self.write, &[1u8]);
    }

    /// The descriptor to poll for reading.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The same, borrowed.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Wait until the flag is set, or `timeout` (`None`: for ever) passes;
    /// true once set.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        wait_readable(self.read.as_fd(), timeout)
    }
}

/// Poll one descriptor for reading; true when readable. EINTR retries.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Option<Duration>) -> bool {
    wait_readable2(fd, None, timeout)
}

/// Poll `fd` and `other` (if any) for reading; true when one is readable.
fn wait_readable2(
    fd: std::os::fd::BorrowedFd<'_>,
    other: Option<std::os::fd::BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let left = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                // Rounded up, so a wait never ends just short of its deadline.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let mut both;
        let fds: &mut [PollFd] = match other {
            None => &mut fds,
            Some(o) => {
                both = [
                    PollFd::new(fd, PollFlags::POLLIN),
                    PollFd::new(o, PollFlags::POLLIN),
                ];
                &mut both
            }
        };
        match poll(fds, left) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// A watch on a directory for a file in it being closed, deleted or
/// renamed away: what happens when a holder of a `flock` on that file lets
/// it go (Xen's `release_lock` unlinks the lock file; a holder that exits
/// closes it). Spurious wake-ups are possible; the waiter tries again.
pub struct DirWatch {
    #[cfg(target_os = "linux")]
    inotify: Tracked<nix::sys::inotify::Inotify>,
    /// The kernel dropped the watch (its directory was removed).
    gone: bool,
}

impl DirWatch {
    /// Watch `dir` (which must exist); the descriptor is listed under
    /// `owner` (0: not).
    pub fn new(dir: &std::path::Path, owner: u32) -> std::io::Result<DirWatch> {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::inotify::{AddWatchFlags as W, InitFlags, Inotify};
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
            inotify.add_watch(
                dir,
                W::IN_CLOSE_WRITE
                    | W::IN_CLOSE_NOWRITE
                    | W::IN_DELETE
                    | W::IN_MOVED_FROM
                    | W::IN_DELETE_SELF
                    | W::IN_MOVE_SELF,
            )?;
            Ok(DirWatch {
                inotify: Tracked::new(owner, inotify),
                gone: false,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (dir, owner);
            Ok(DirWatch { gone: false })
        }
    }

    /// Wait for an event (or `timeout`, or `stop` polling readable), then
    /// forget every event queued; true when woken by an event or `stop`.
    pub fn wait(&mut self, timeout: Duration, stop: Option<std::os::fd::BorrowedFd<'_>>) -> bool {
        #[cfg(target_os = "linux")]
        {
            if wait_readable2(self.inotify.as_fd(), stop, Some(timeout)) {
                self.drain();
                return true;
            }
            false
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = stop;
            std::thread::sleep(timeout.min(Duration::from_millis(2)));
            false
        }
    }

    /// Forget every event queued, without waiting.
    pub fn drain(&mut self) {
        #[cfg(target_os = "linux")]
        while let Ok(v) = self.inotify.read_events() {
            if v.is_empty() {
                break;
            }
            use nix::sys::inotify::AddWatchFlags as W;
            if v.iter().any(|e| e.mask.contains(W::IN_IGNORED)) {
                self.gone = true;
            }
        }
    }

    /// Whether the kernel dropped the watch (its directory was removed or
    /// its file system unmounted): it will report nothing more.
    pub fn is_gone(&self) -> bool {
        self.gone
    }
}
