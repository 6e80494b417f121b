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
//!
//! Waiting is bounded by the context's `lock_timeout`; inside [`no_wait`]
//! the lock is only tried, and a held lock gives [`Error::WouldBlock`] at
//! once (for hosts driven by an event loop). Whoever holds the lock is named
//! in those errors: the process holding the `flock` (from `/proc/locks`, with
//! its command line) and, when the holder is xenblock, the owner record it
//! writes into the lock file while holding it. (Xen's `locking.sh` itself
//! writes no owner record, so a script holder is known by its pid only.)

use crate::error::{Error, Result};
use crate::sys::fdreg::Tracked;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::{Mutex, MutexGuard};
use std::cell::Cell;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where upstream's scripts keep their locks.
pub const DEFAULT_LOCK_DIR: &str = "/var/run/xen-hotplug";
/// The lock's name, as in `claim_lock "block"`.
pub const LOCK_NAME: &str = "block";

thread_local! {
    /// Set while the calling thread runs inside [`no_wait`].
    static NO_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with every hotplug-lock acquisition on this thread turned into a
/// single attempt: a lock held by someone else gives [`Error::WouldBlock`]
/// at once instead of a wait.
pub fn no_wait<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            NO_WAIT.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(NO_WAIT.with(|c| c.replace(true)));
    f()
}

/// Whether this thread runs inside [`no_wait`].
pub fn is_no_wait() -> bool {
    NO_WAIT.with(Cell::get)
}

/// The `block` hotplug lock of one lock directory.
pub struct HotplugLock {
    path: PathBuf,
    dir: PathBuf,
    /// The in-process mutex, with what its holder keeps between turns.
    mutex: Mutex<Turn>,
    timeout: Duration,
    /// Set by [`HotplugLock::close`]: waits end with [`Error::Cancelled`].
    closed: AtomicBool,
    /// Polls readable once closed, so a waiter's poll wakes at once.
    closing: Option<crate::sys::notify::DoneFlag>,
    /// The owner its descriptors are listed under (`sys::fdreg`; 0: none).
    owner: u32,
}

/// Proof of holding the lock; dropping it releases (unlinks, then unlocks).
pub struct LockGuard<'a> {
    _thread: MutexGuard<'a, Turn>,
    file: Option<Flock<File>>,
    path: &'a Path,
    owner: u32,
}

impl HotplugLock {
    /// The lock `<dir>/block`. The directory is created on first use.
    pub fn new(dir: &Path, timeout: Duration) -> HotplugLock {
        HotplugLock::new_owned(dir, timeout, 0)
    }

    /// The same, its descriptors (the lock file while open, the watch on
    /// its directory, the close flag) listed under `owner` for a forked
    /// child ([`crate::sys::fdreg`]).
    pub fn new_owned(dir: &Path, timeout: Duration, owner: u32) -> HotplugLock {
        exe();
        HotplugLock {
            path: dir.join(LOCK_NAME),
            dir: dir.to_path_buf(),
            mutex: Mutex::new(Turn::default()),
            timeout,
            closed: AtomicBool::new(false),
            // Without it (no descriptor left), waiters notice the close
            // within their 100 ms re-check.
            closing: crate::sys::notify::DoneFlag::new(owner).ok(),
            owner,
        }
    }

    /// The context is going away: every wait for the lock, now or later,
    /// ends at once with [`Error::Cancelled`]; a holder keeps the lock until
    /// its guard drops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(f) = &self.closing {
            f.set();
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Cancelled(format!(
                "the context was freed while this call waited for the hotplug lock {}; \
                 nothing was done",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// The in-process mutex, waited for in slices so that a close ends the
    /// wait.
    fn lock_thread(&self, deadline: Instant, nowait: bool) -> Result<MutexGuard<'_, Turn>> {
        loop {
            self.check_open()?;
            let slice = (Instant::now() + Duration::from_millis(20)).min(deadline);
            if let Some(g) = self.mutex.try_lock_until(slice) {
                return Ok(g);
            }
            if Instant::now() >= deadline {
                return Err(self.not_taken(
                    nowait,
                    "another thread of this process (the same xenblock context)".into(),
                ));
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the lock, waiting at most the configured timeout (not at all
    /// inside [`no_wait`]).
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.acquire_as(NO_WAIT.with(Cell::get), false)
    }

    /// Take the lock if it is free now; `None` (nothing waited for, and no
    /// message made: finding the holder reads `/proc`) when it is taken.
    pub fn try_acquire(&self) -> Option<LockGuard<'_>> {
        self.acquire_as(true, true).ok()
    }

    fn acquire_as(&self, nowait: bool, quiet: bool) -> Result<LockGuard<'_>> {
        let deadline = Instant::now() + if nowait { Duration::ZERO } else { self.timeout };
        let mut thread = self.lock_thread(deadline, nowait)?;
        let mut waiter = Waiter {
            quiet,
            ..Waiter::default()
        };
        let mut dir_made = false;
        // The file of a failed try, kept open for the next: a waiter that
        // closed and reopened it on every wake-up would wake every other
        // waiter with its close. It is reopened only once the path names
        // another file (the holder unlinked it).
        // Listed for a forked child (`sys::fdreg`) while it waits.
        let mut pending: Option<Tracked<File>> = None;
        loop {
            if let Some(f) = pending.take() {
                if same_file(&f, &self.path) {
                    match Flock::lock(f.into_inner(), FlockArg::LockExclusiveNonblock) {
                        Ok(locked) => {
                            if let Some(g) = self.claimed(locked, &thread)? {
                                return Ok(self.guard(thread, g));
                            }
                            continue;
                        }
                        Err((f, nix::errno::Errno::EWOULDBLOCK))
                        | Err((f, nix::errno::Errno::EINTR)) => {
                            pending = Some(Tracked::new(self.owner, f));
                            self.wait_turn(deadline, nowait, &mut waiter, &mut thread)?;
                            continue;
                        }
                        Err((_, e)) => {
                            return Err(Error::sys(
                                format!("cannot flock the hotplug lock {}", self.path.display()),
                                e,
                            ))
                        }
                    }
                }
            }
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&self.path);
            let file = match opened {
                Ok(f) => f,
                // The directory is made when the lock file cannot be
                // opened for its want (once), not looked for every time.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir_made => {
                    dir_made = true;
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
                    continue;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("cannot open the hotplug lock {}", self.path.display()),
                        e,
                    ))
                }
            };
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    if let Some(g) = self.claimed(locked, &thread)? {
                        return Ok(self.guard(thread, g));
                    }
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) | Err((f, nix::errno::Errno::EINTR)) => {
                    pending = Some(Tracked::new(self.owner, f));
                    self.wait_turn(deadline, nowait, &mut waiter, &mut thread)?;
                }
                Err((_, e)) => {
                    return Err(Error::sys(
                        format!("cannot flock the hotplug lock {}", self.path.display()),
                        e,
                    ))
                }
            }
        }
    }

    /// The guard of a lock taken, its file listed for a forked child.
    fn guard<'a>(&'a self, thread: MutexGuard<'a, Turn>, file: Flock<File>) -> LockGuard<'a> {
        crate::sys::fdreg::register(self.owner, file.as_raw_fd());
        LockGuard {
            _thread: thread,
            file: Some(file),
            path: &self.path,
            owner: self.owner,
        }
    }

    /// The flock is ours: if the path still names its file, the lock is
    /// held (the owner record is written); `None` when the previous holder
    /// unlinked or replaced it meanwhile (try again).
    fn claimed(
        &self,
        locked: Flock<File>,
        _thread: &MutexGuard<'_, Turn>,
    ) -> Result<Option<Flock<File>>> {
        let held = locked
            .metadata()
            .map_err(|e| Error::io("cannot fstat the hotplug lock", e))?;
        match std::fs::symlink_metadata(&self.path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                // The owner record, for whoever waits: best effort.
                let mut f: &File = &locked;
                if held.len() != 0 {
                    let _ = f.set_len(0);
                }
                let _ = f.write_all(owner_record().as_bytes());
                Ok(Some(locked))
            }
            _ => Ok(None),
        }
    }

    /// After a failed try: the error once the deadline has passed, else
    /// wait until the holder may have let go. Woken when it does: Xen's
    /// `release_lock` unlinks the file, a holder that exits closes it. The
    /// watch on the lock directory is made once and kept by the lock (it
    /// lives in the in-process mutex, so one thread at a time uses it):
    /// closing an inotify descriptor waits for an RCU grace period, 10 to
    /// 40 ms, which a watch per wait would add to every wait. At the first
    /// failed try of an acquisition the events queued since the last one
    /// (this process's own opens and closes of the lock file) are dropped
    /// and the lock tried again at once, so a release between the try and
    /// the wait is seen. The kernel reports a close just before it drops
    /// the closing file's flock, so a try right after a close event can
    /// still fail: then it is tried again after 1, 2, 4, ... 32 ms (the
    /// exiting holder may be preempted between the two on a loaded host;
    /// no event marks the flock's end). A holder that only unlocks
    /// (`flock -u`) sends no event: each wait is cut at 100 ms.
    fn wait_turn(
        &self,
        deadline: Instant,
        nowait: bool,
        w: &mut Waiter,
        turn: &mut Turn,
    ) -> Result<()> {
        self.check_open()?;
        let now = Instant::now();
        if now >= deadline {
            let holder = if w.quiet {
                String::new()
            } else {
                self.holder()
            };
            return Err(self.not_taken(nowait, holder));
        }
        if !w.made {
            w.made = true;
            match &mut turn.watch {
                Some(watch) => watch.drain(),
                None => turn.watch = crate::sys::notify::DirWatch::new(&self.dir, self.owner).ok(),
            }
            return Ok(());
        }
        let cap = match w.recheck {
            0 => Duration::from_millis(100),
            n => Duration::from_millis(1 << (QUICK_RETRIES - n.min(QUICK_RETRIES))),
        };
        w.recheck = w.recheck.saturating_sub(1);
        match &mut turn.watch {
            Some(watch) => {
                let stop = self.closing.as_ref().map(|f| f.as_fd());
                if watch.wait((deadline - now).min(cap), stop) {
                    w.recheck = QUICK_RETRIES;
                }
                if watch.is_gone() {
                    // The directory was removed or moved: watch it anew.
                    turn.watch = crate::sys::notify::DirWatch::new(&self.dir, self.owner).ok();
                }
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
        Ok(())
    }

    fn not_taken(&self, nowait: bool, holder: String) -> Error {
        if nowait {
            Error::WouldBlock(format!(
                "the hotplug lock {} is taken, by {holder}; try again later",
                self.path.display()
            ))
        } else {
            Error::Timeout(format!(
                "waited {} for the hotplug lock {} and it is still taken, by {holder}; \
                 if that process is stuck, find out why (or raise the lock timeout)",
                seconds(self.timeout),
                self.path.display()
            ))
        }
    }

    /// Who holds the lock file's flock now, for messages.
    fn holder(&self) -> String {
        let Ok(st) = std::fs::metadata(&self.path) else {
            return "a process that has just released it".into();
        };
        let record = std::fs::read(&self.path)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|r| !r.is_empty());
        let pid = std::fs::read_to_string("/proc/locks")
            .ok()
            .and_then(|t| flock_holder(&t, st.dev(), st.ino()));
        let mut who = match pid.map(|p| (p, command_line(p))) {
            Some((pid, Some(cmd))) => format!("process {pid} ({cmd})"),
            // The flock was taken by a process that has exited since (a
            // script runs flock(1) as a child); its descriptor lives on in
            // the processes that have the lock file open.
            other => {
                let mut w = match other {
                    Some((pid, None)) => format!("process {pid}, which has exited"),
                    _ => "a process that /proc/locks does not show".to_string(),
                };
                let open = openers(st.dev(), st.ino());
                if !open.is_empty() {
                    w.push_str("; the lock file is open in ");
                    w.push_str(&open.join(", "));
                }
                w
            }
        };
        if let Some(r) = record {
            who.push_str(&format!(", whose owner record says \"{r}\""));
        }
        who
    }
}

/// The executable, read once per process image. Read when a lock is made
/// (on the caller's thread), so that a worker never initialises it: a child
/// forked while a worker did would find it half-made.
fn exe() -> &'static str {
    static EXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "?".into())
    })
}

/// Quick re-tries after an event, at 1, 2, 4 ... 2^(n-1) ms.
const QUICK_RETRIES: u32 = 6;

/// One acquisition's wait: whether it has failed a try yet, and how many
/// quick re-tries follow the last event.
#[derive(Default)]
struct Waiter {
    /// No message wanted on failure (`try_acquire`).
    quiet: bool,
    made: bool,
    recheck: u32,
}

/// What the holder of the in-process mutex keeps from one acquisition to
/// the next: the watch on the lock directory, made at the first wait.
#[derive(Default)]
pub(crate) struct Turn {
    watch: Option<crate::sys::notify::DirWatch>,
}

/// Whether `path` names the file `f` is open on.
fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What xenblock writes into the lock file while it holds it.
fn owner_record() -> String {
    let exe = exe();
    format!(
        "xenblock in process {} ({exe}), since {} s after the epoch\n",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    )
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

/// The pid holding a granted FLOCK on (dev, ino), from `/proc/locks` text
/// (`1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`; waiters have `->`).
pub fn flock_holder(proc_locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want_major = libc::major(dev) as u64;
    let want_minor = libc::minor(dev) as u64;
    for line in proc_locks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            continue;
        }
        let mut id = f[5].split(':');
        let (Some(ma), Some(mi), Some(i)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        if hex(ma) == Some(want_major)
            && hex(mi) == Some(want_minor)
            && i.parse::<u64>().ok() == Some(ino)
        {
            return f[4].parse().ok();
        }
    }
    None
}

/// The processes (other than this one) with a descriptor on (dev, ino),
/// as "process N (command line)", at most 4.
fn openers(dev: u64, ino: u64) -> Vec<String> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let has = fds
            .flatten()
            .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino));
        if has {
            out.push(match command_line(pid) {
                Some(cmd) => format!("process {pid} ({cmd})"),
                None => format!("process {pid}"),
            });
            if out.len() == 4 {
                break;
            }
        }
    }
    out
}

/// A process's command line, spaces between arguments, at most 200 bytes.
fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text: String = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let text = text.trim().to_string();
    if text.is_empty() {
        return None;
    }
    Some(if text.len() > 200 {
        let mut cut = 200;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &text[..cut])
    } else {
        text
    })
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Unlink while still holding the flock, as the protocol requires.
        let _ = std::fs::remove_file(self.path);
        if let Some(f) = self.file.take() {
            crate::sys::fdreg::unregister(self.owner, f.as_raw_fd());
            drop(f);
        }
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
    fn a_missing_lock_directory_is_made_and_an_impossible_one_is_named() {
        let base = std::env::temp_dir().join(format!("xenblock-lockdir-{}", std::process::id()));
        let dir = base.join("run/xen-hotplug");
        let lock = HotplugLock::new(&dir, Duration::from_secs(1));
        drop(lock.acquire().unwrap());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&dir).unwrap().permissions(),
        ) & 0o777;
        assert_eq!(mode & !0o022, 0o755 & !0o022, "{mode:o}");
        // A file where a directory should be: a sentence, not a loop.
        std::fs::write(base.join("file"), b"").unwrap();
        let lock = HotplugLock::new(&base.join("file/sub"), Duration::from_secs(1));
        let e = match lock.acquire() {
            Ok(_) => panic!("locked under a file"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("hotplug lock") && e.contains("file/sub") && !e.contains("os error"),
            "{e}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn flock_holder_reads_proc_locks() {
        let dev = libc::makedev(0xfd, 0x01);
        let text = "1: POSIX  ADVISORY  WRITE 77 fd:01:42 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 1234 fd:01:42 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 999 fd:01:42 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 555 08:02:42 0 EOF\n";
        assert_eq!(flock_holder(text, dev, 42), Some(1234));
        assert_eq!(flock_holder(text, dev, 43), None);
        assert_eq!(flock_holder(text, libc::makedev(8, 2), 42), Some(555));
    }

    /// A private lock directory whose lock file this process holds through
    /// a description of its own, as another process would.
    fn held_elsewhere(tag: &str) -> (std::path::PathBuf, Flock<File>) {
        let dir = std::env::temp_dir().join(format!("xenblock-lock{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = File::create(dir.join(LOCK_NAME)).unwrap();
        (dir, Flock::lock(f, FlockArg::LockExclusive).unwrap())
    }

    #[test]
    fn nowait_gives_wouldblock_at_once_and_names_the_holder() {
        let (dir, _held) = held_elsewhere("3");
        let lock = HotplugLock::new(&dir, Duration::from_secs(30));
        let t = Instant::now();
        let e = no_wait(|| lock.acquire()).err().expect("must not wait");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(e.kind(), crate::ErrorKind::WouldBlock);
        assert!(
            e.to_string()
                .contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn held_flock_from_elsewhere_times_out() {
        let (dir, _held) = held_elsewhere("2");
        let lock = HotplugLock::new(&dir, Duration::from_millis(50));
        let e = lock.acquire().err().expect("must time out");
        assert_eq!(e.kind(), crate::ErrorKind::Timeout);
        assert!(e.to_string().contains("hotplug lock"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn close_wakes_the_waiters_of_the_flock_and_of_the_mutex_at_once() {
        let (dir, _held) = held_elsewhere("4");
        let lock = HotplugLock::new(&dir, Duration::from_secs(30));
        let t0 = Instant::now();
        let errs = std::thread::scope(|s| {
            // One waits on the flock, the other on the in-process mutex.
            let a = s.spawn(|| lock.acquire().err());
            let b = s.spawn(|| lock.acquire().err());
            std::thread::sleep(Duration::from_millis(300));
            lock.close();
            [a.join().unwrap(), b.join().unwrap()]
        });
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        for e in errs {
            let e = e.expect("a closed lock is not taken");
            assert_eq!(e.kind(), crate::ErrorKind::Cancelled, "{e}");
            assert!(e.to_string().contains("nothing was done"), "{e}");
        }
        // Later calls are cancelled too.
        assert_eq!(
            lock.acquire().err().unwrap().kind(),
            crate::ErrorKind::Cancelled
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
