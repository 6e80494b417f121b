//! Byte-range locks on an open file description (Linux OFD locks,
//! `F_OFD_SETLK` / `F_OFD_GETLK`), and the kernel's list of held locks
//! (`/proc/locks`) for explaining a conflict.
//!
//! An OFD lock belongs to the open file description, not to the process: it
//! lasts while any reference to that description lasts, including one held
//! by the kernel (a loop device's backing file). `docs/image-locks.md`
//! says which bytes mean what.
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A lock that stands in the way, as `F_OFD_GETLK` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// First byte of the conflicting lock.
    pub start: u64,
    /// Its length in bytes (0: to the end of the file).
    pub len: u64,
    /// True for an exclusive (write) lock, false for a shared (read) one.
    pub exclusive: bool,
    /// The owning process, for a classic (process-owned) POSIX lock held on
    /// this host; `None` for an OFD lock (the kernel reports -1) or a lock
    /// it cannot attribute to a process here (0).
    pub pid: Option<u32>,
}

fn flock(kind: libc::c_int, start: u64, len: u64) -> io::Result<libc::flock> {
    let bad = || io::Error::from_raw_os_error(libc::EINVAL);
    // SAFETY: `flock` is plain data; all-zero is a valid value (l_pid must
    // be 0 for the OFD commands).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::try_from(start).map_err(|_| bad())?;
    fl.l_len = libc::off_t::try_from(len).map_err(|_| bad())?;
    Ok(fl)
}

/// Take a shared (read) OFD lock on `len` bytes from `start`, without
/// waiting. `EAGAIN`: someone holds an exclusive lock there. `EINVAL`
/// (kernels before 3.15), `EOPNOTSUPP` or `ENOLCK` (file systems without
/// locks): no lock taken.
pub fn lock_shared(file: &File, start: u64, len: u64) -> io::Result<()> {
    set(file, libc::F_RDLCK, start, len)
}

/// Let go of this open file description's locks on `len` bytes from
/// `start` (bytes it does not lock are left as they are). Closing a
/// descriptor is not enough when the description has other references: a
/// child forked meanwhile by any thread of the process holds one until its
/// `exec`, and the locks last as long as that.
pub fn unlock(file: &File, start: u64, len: u64) -> io::Result<()> {
    set(file, libc::F_UNLCK, start, len)
}

fn set(file: &File, kind: libc::c_int, start: u64, len: u64) -> io::Result<()> {
    let fl = flock(kind, start, len)?;
    // SAFETY: `file` is open for the call; `fl` is a valid `struct flock`
    // the kernel only reads for F_OFD_SETLK.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Would a lock of this kind (`exclusive`: a write lock, else a read lock)
/// on `len` bytes from `start` conflict with a lock someone else holds?
/// Locks of `file`'s own open file description never conflict. Returns the
/// first conflicting lock (`F_OFD_GETLK`).
pub fn test(file: &File, start: u64, len: u64, exclusive: bool) -> io::Result<Option<Conflict>> {
    let kind = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    let mut fl = flock(kind, start, len)?;
    // SAFETY: `file` is open for the call; `fl` is a valid, writable
    // `struct flock` the kernel reads and overwrites for F_OFD_GETLK.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    Ok(Some(Conflict {
        start: u64::try_from(fl.l_start).unwrap_or(0),
        len: u64::try_from(fl.l_len).unwrap_or(0),
        exclusive: fl.l_type == libc::F_WRLCK as libc::c_short,
        pid: u32::try_from(fl.l_pid).ok().filter(|&p| p > 0),
    }))
}

/// One line of `/proc/locks`, for the locks on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// An OFD lock (`OFDLCK`), else a classic POSIX one (`POSIX`).
    pub ofd: bool,
    /// An exclusive (write) lock.
    pub exclusive: bool,
    /// First and last byte (inclusive); `None` for "to the end".
    pub start: u64,
    pub end: Option<u64>,
}

impl Held {
    /// Whether this lock covers `byte`.
    pub fn covers(&self, byte: u64) -> bool {
        self.start <= byte && self.end.is_none_or(|e| byte <= e)
    }
}

/// The byte-range locks (`OFDLCK` and `POSIX`, granted ones only) held on
/// the file with this `st_dev` and `st_ino`, from `/proc/locks` text.
pub fn parse_proc_locks(text: &str, dev: u64, ino: u64) -> Vec<Held> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t)
    );
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            // "N:" then the class; a waiter has "->" between them.
            let _id = f.next()?;
            let class = f.next()?;
            let ofd = match class {
                "OFDLCK" => true,
                "POSIX" => false,
                _ => return None,
            };
            let _advisory = f.next()?;
            let exclusive = match f.next()? {
                "WRITE" => true,
                "READ" => false,
                _ => return None,
            };
            let _pid = f.next()?;
            if f.next()? != want {
                return None;
            }
            let start = f.next()?.parse().ok()?;
            let end = match f.next()? {
                "EOF" => None,
                e => Some(e.parse().ok()?),
            };
            Some(Held {
                ofd,
                exclusive,
                start,
                end,
            })
        })
        .collect()
}

/// The locks held on the file with this `st_dev` and `st_ino`
/// (`/proc/locks`, this host's view only).
pub fn held_on(dev: u64, ino: u64) -> io::Result<Vec<Held>> {
    let text = std::fs::read_to_string("/proc/locks")?;
    Ok(parse_proc_locks(&text, dev, ino))
}

/// The short name (`comm`) of a process, if it still exists.
pub fn process_name(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two open descriptions of a new file (read-write, then read-only),
    /// removed at once so that nothing is left behind.
    pub(crate) fn two_descriptions(name: &str) -> (File, File) {
        let path = std::env::temp_dir().join(format!("xenblock-{name}-{}", std::process::id()));
        // A read lock needs a description open for reading.
        let a = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let b = File::open(&path);
        std::fs::remove_file(&path).unwrap();
        (a, b.unwrap())
    }

    /// A child process, killed and reaped when dropped (a test's panic
    /// included).
    pub(crate) struct Child(pub std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `sleep 30` with `file`'s description as its stdin: another
    /// reference to it, as a child forked by another thread holds one
    /// until its exec.
    pub(crate) fn sharing_child(file: &File) -> Child {
        Child(
            std::process::Command::new("sleep")
                .arg("30")
                .stdin(std::process::Stdio::from(file.try_clone().unwrap()))
                .spawn()
                .unwrap(),
        )
    }

    #[test]
    fn proc_locks_lines() {
        let dev = libc::makedev(0xfe, 0) as u64;
        let text = "1: OFDLCK ADVISORY  READ -1 fe:00:42 201 201\n\
                    2: OFDLCK ADVISORY  READ -1 fe:00:42 100 101\n\
                    2: -> OFDLCK ADVISORY  WRITE -1 fe:00:42 100 101\n\
                    3: POSIX  ADVISORY  WRITE 977 fe:00:42 0 0\n\
                    4: FLOCK  ADVISORY  WRITE 12 fe:00:42 0 EOF\n\
                    5: OFDLCK ADVISORY  READ -1 fe:00:43 100 101\n\
                    6: POSIX  ADVISORY  READ 5 fe:00:42 300 EOF\n";
        let h = parse_proc_locks(text, dev, 42);
        assert_eq!(h.len(), 4, "{h:?}");
        assert!(h[0].ofd && !h[0].exclusive && h[0].covers(201) && !h[0].covers(200));
        assert!(h[1].covers(100) && h[1].covers(101) && !h[1].covers(102));
        assert!(!h[2].ofd && h[2].exclusive && h[2].covers(0));
        assert!(h[3].covers(1 << 40) && !h[3].covers(299));
    }

    #[test]
    fn own_locks_never_conflict_others_do() {
        let (a, b) = two_descriptions("ofd");
        lock_shared(&a, 100, 2).unwrap();
        // A's own description: no conflict with itself.
        assert_eq!(test(&a, 100, 2, true).unwrap(), None);
        // Another description of the same file sees A's read lock...
        let c = test(&b, 101, 1, true).unwrap().expect("conflict");
        assert_eq!((c.start, c.len, c.exclusive, c.pid), (100, 2, false, None));
        // ...which does not stand in the way of another reader.
        assert_eq!(test(&b, 100, 2, false).unwrap(), None);
        assert_eq!(test(&b, 102, 1, true).unwrap(), None);
        // Dropping A's descriptor (the last reference) releases it.
        drop(a);
        assert_eq!(test(&b, 100, 2, true).unwrap(), None);
    }

    /// Another reference to the description (here a child's stdin, as a
    /// child forked by another thread holds one until its exec) keeps the
    /// locks past a close; `unlock` lets go of them at once.
    #[test]
    fn unlock_lets_go_while_a_child_shares_the_description() {
        let (a, b) = two_descriptions("ofd-u");
        let child = sharing_child(&a);
        lock_shared(&a, 100, 2).unwrap();
        unlock(&a, 100, 102).unwrap();
        assert_eq!(test(&b, 100, 2, true).unwrap(), None, "unlocked");
        // Closing alone is not enough while the child shares it.
        lock_shared(&a, 201, 1).unwrap();
        drop(a);
        assert!(
            test(&b, 201, 1, true).unwrap().is_some(),
            "the child's reference kept the lock"
        );
        drop(child);
        // Gone with the child; a child another test forked meanwhile may
        // hold the description until its exec: allow for that.
        let start = std::time::Instant::now();
        while test(&b, 201, 1, true).unwrap().is_some() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "the lock outlived the child"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
