//! Waiting for a child (a custom hotplug script) in a host process that may
//! reap children itself.
//!
//! A toolstack that links xenblock may set `SIGCHLD` to `SIG_IGN` (the
//! kernel then reaps every child at once) or reap with `waitpid(-1)` from
//! its own event loop. Waiting by pid then fails with `ECHILD`, and a pid
//! (or process group id) that is no longer ours may already name someone
//! else. On Linux a [`Child`] therefore holds a pidfd, opened right after
//! the fork: exit is seen by polling it, whoever reaps; the status is
//! collected with `waitid(P_PIDFD)` when nobody took it first; and the
//! script's process group is signalled only while its leader is still ours
//! (alive, or a zombie not yet reaped, which keeps the group id reserved).
//! What is left: the pidfd is opened just after the spawn returns (the
//! script has exec'd); a script that exits and is reaped by the host within
//! those microseconds is seen as gone (its status then unknown), and a host
//! that reaps between the ownership check and `killpg` leaves a window of
//! two system calls, in which the group id would have to be reused by a new
//! process group (a full cycle of the pid space) to hit anyone else.
//! Elsewhere, and where `pidfd_open` is missing (kernels before 5.3,
//! valgrind), the same interface waits by pid (`waitid` with `WNOWAIT`).

use std::io;
use std::process::ExitStatus;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A started child process and the means to wait for it.
pub struct Child {
    inner: std::process::Child,
    watch: Watch,
}

enum Watch {
    /// Linux: a pidfd on the child.
    #[cfg(target_os = "linux")]
    Pidfd(std::os::fd::OwnedFd),
    /// The child was gone (reaped by someone else) before it could be watched.
    #[cfg(target_os = "linux")]
    Gone,
    /// No pidfds (other systems, kernels before 5.3, valgrind): by pid.
    ByPid,
}

impl Child {
    /// Take charge of a just-spawned child (call immediately after the
    /// spawn). Fails only when no pidfd can be had for a child that still
    /// exists (e.g. out of descriptors); the child is then killed.
    pub fn new(mut inner: std::process::Child) -> io::Result<Child> {
        #[cfg(target_os = "linux")]
        {
            let watch = match linux::pidfd_open(inner.id()) {
                Ok(fd) => Watch::Pidfd(fd),
                // Already exited and reaped by someone else.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Watch::Gone,
                // No pidfd_open here: wait by pid, as without pidfds.
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Watch::ByPid,
                Err(e) => {
                    // Still ours (not waited for): kill it by its pid at once.
                    let _ = inner.kill();
                    return Err(e);
                }
            };
            Ok(Child { inner, watch })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = &mut inner;
            Ok(Child {
                inner,
                watch: Watch::ByPid,
            })
        }
    }

    /// The std handle (for its pipes).
    pub fn std(&mut self) -> &mut std::process::Child {
        &mut self.inner
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(self.inner.id() as i32)
    }

    /// Whether the child has exited (reaped or not, by anyone).
    pub fn exited(&mut self) -> io::Result<bool> {
        match &self.watch {
            #[cfg(target_os = "linux")]
            Watch::Pidfd(fd) => linux::readable(fd),
            #[cfg(target_os = "linux")]
            Watch::Gone => Ok(true),
            Watch::ByPid => bypid::has_exited(&mut self.inner),
        }
    }

    /// Whether the child's pid, and so its process group id, is still ours:
    /// it runs or is a zombie nobody has reaped.
    fn owned(&mut self) -> bool {
        match &self.watch {
            #[cfg(target_os = "linux")]
            Watch::Pidfd(fd) => linux::unreaped(fd),
            #[cfg(target_os = "linux")]
            Watch::Gone => false,
            Watch::ByPid => bypid::unreaped(&mut self.inner),
        }
    }

    /// Send `sig` to the child's process group, only if the group id still
    /// names our child's group. Returns false when it did not.
    pub fn signal_group(&mut self, sig: Signal) -> bool {
        if !self.owned() {
            return false;
        }
        // ESRCH: nobody left. EPERM: the remaining members changed
        // credentials; nothing more we can do about them.
        let _ = killpg(self.pgid(), sig);
        true
    }

    /// Reap the child once it has exited. `None` when its status was taken
    /// by someone else (the host's `waitpid(-1)`, or `SIGCHLD` ignored).
    pub fn reap(&mut self) -> io::Result<Option<ExitStatus>> {
        match &self.watch {
            #[cfg(target_os = "linux")]
            Watch::Pidfd(fd) => linux::reap(fd),
            #[cfg(target_os = "linux")]
            Watch::Gone => Ok(None),
            Watch::ByPid => match self.inner.wait() {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall with integer arguments; returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor (close-on-exec by
        // default for pidfds); nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// A pidfd polls readable once its process has exited.
    pub fn readable(fd: &OwnedFd) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, zero timeout.
            let r = unsafe { libc::poll(&mut p, 1, 0) };
            if r >= 0 {
                return Ok(r > 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// `waitid(P_PIDFD, fd, flags)`: Ok(Some(info)) when an exited child was
    /// found, Ok(None) when it still runs (WNOHANG), Err(ECHILD) when it is
    /// not (any more) a waitable child of ours.
    fn waitid(fd: &OwnedFd, flags: libc::c_int) -> io::Result<Option<libc::siginfo_t>> {
        loop {
            // SAFETY: zeroed siginfo_t is a valid out-buffer.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid pidfd and out-pointer.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    fd.as_raw_fd() as libc::id_t,
                    &mut info,
                    flags | libc::WEXITED,
                )
            };
            if r == 0 {
                // SAFETY: filled by waitid for SIGCHLD (si_pid 0 = none yet).
                let pid = unsafe { info.si_pid() };
                return Ok(if pid == 0 { None } else { Some(info) });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn unreaped(fd: &OwnedFd) -> bool {
        waitid(fd, libc::WNOHANG | libc::WNOWAIT).is_ok()
    }

    pub fn reap(fd: &OwnedFd) -> io::Result<Option<ExitStatus>> {
        match waitid(fd, 0) {
            Ok(Some(info)) => {
                // SAFETY: an exited child's siginfo carries si_status.
                let st = unsafe { info.si_status() };
                let raw = match info.si_code {
                    libc::CLD_EXITED => (st & 0xff) << 8,
                    libc::CLD_DUMPED => (st & 0x7f) | 0x80,
                    _ => st & 0x7f,
                };
                Ok(Some(ExitStatus::from_raw(raw)))
            }
            Ok(None) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Waiting by pid with `waitid(WNOWAIT)`, which leaves the zombie (and so
/// the process group id) in place until the status is collected.
#[cfg(any(
    target_os = "freebsd",
    all(target_os = "linux", not(target_env = "uclibc"))
))]
mod bypid {
    use nix::errno::Errno;
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;
    use std::io;

    fn peek(child: &mut std::process::Child) -> io::Result<Option<bool>> {
        let pid = Pid::from_raw(child.id() as i32);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::Pid(pid), flags) {
                Ok(WaitStatus::StillAlive) => return Ok(Some(false)),
                Ok(_) => return Ok(Some(true)),
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return Ok(None),
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    pub fn has_exited(child: &mut std::process::Child) -> io::Result<bool> {
        Ok(peek(child)?.unwrap_or(true))
    }

    pub fn unreaped(child: &mut std::process::Child) -> bool {
        matches!(peek(child), Ok(Some(_)))
    }
}

/// Systems without a usable `waitid`: the child is reaped as soon as it is
/// seen to exit (std keeps the status for the later `wait`), so its group is
/// no longer provably ours then and is left alone.
#[cfg(not(any(
    target_os = "freebsd",
    all(target_os = "linux", not(target_env = "uclibc"))
)))]
mod bypid {
    use std::io;

    pub fn has_exited(child: &mut std::process::Child) -> io::Result<bool> {
        Ok(child.try_wait()?.is_some())
    }

    pub fn unreaped(child: &mut std::process::Child) -> bool {
        matches!(child.try_wait(), Ok(None))
    }
}
