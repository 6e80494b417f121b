//! Image locks that QEMU and libvirt understand, held by the loop device
//! itself (docs/image-locks.md).
//!
//! For a file target, the prepare takes shared OFD locks on the open file
//! description it then hands to the loop device (`LOOP_CONFIGURE`). The
//! loop device keeps that description open, so the locks last exactly as
//! long as the loop device: past the toolstack's exit, gone at detach.
//!
//! The bytes are QEMU's (block/file-posix.c): for each block permission
//! bit `i`, byte `100 + i` held means "I use permission i" and byte
//! `200 + i` held means "I let nobody else use permission i". Byte 0 is
//! libvirt's (virtlockd's "direct" leases, classic POSIX locks).
use std::collections::HashSet;
use std::fs::File;
#[cfg(target_os = "linux")]
use std::io;

#[cfg(target_os = "linux")]
use crate::context::LogLevel;
use crate::error::{Error, Result};
use crate::sharing::Mode;
#[cfg(target_os = "linux")]
use crate::sys::ofdlock::{self, Conflict};

/// What to do about image locks (`image_locks` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageLocks {
    /// Take and check them; refuse a file system that has no locks.
    Required,
    /// Take and check them; on a file system without locks, warn once per
    /// image and go on without.
    #[default]
    BestEffort,
    /// Neither take nor check them.
    Off,
}

impl ImageLocks {
    /// Parse `required`, `best-effort` or `off`.
    pub fn parse(s: &str) -> Result<ImageLocks> {
        match s {
            "required" => Ok(ImageLocks::Required),
            "best-effort" => Ok(ImageLocks::BestEffort),
            "off" => Ok(ImageLocks::Off),
            _ => Err(Error::InvalidArgument(format!(
                "image_locks is '{s}'; expected required, best-effort or off"
            ))),
        }
    }

    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageLocks::Required => "required",
            ImageLocks::BestEffort => "best-effort",
            ImageLocks::Off => "off",
        }
    }
}

impl std::fmt::Display for ImageLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first word of every log message of this module.
pub const LOG_PREFIX: &str = "image locks: ";

/// libvirt's byte: virtlockd's direct lease on the image file itself.
#[cfg(target_os = "linux")]
pub(crate) const LEASE_BYTE: u64 = 0;
/// QEMU's "permission held" bytes start here (`+ bit`).
#[cfg(target_os = "linux")]
pub(crate) const PERM_BASE: u64 = 100;
/// QEMU's "permission not shared" bytes start here (`+ bit`).
#[cfg(target_os = "linux")]
pub(crate) const SHARED_BASE: u64 = 200;
/// QEMU's permission bits used here.
pub(crate) const CONSISTENT_READ: u64 = 0;
pub(crate) const WRITE: u64 = 1;

/// What a request holds and denies, as QEMU's bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Permission bits held (bytes `100 + bit`).
    pub hold: &'static [u64],
    /// Permission bits not shared (bytes `200 + bit`).
    pub deny: &'static [u64],
    /// Test byte 0 for a virtlockd lease: `Some(exclusive)` says how.
    pub lease_test: Option<bool>,
    /// Test for conflicts at all (`w!` does not: it forces).
    pub check: bool,
}

/// The locks of a mode: what QEMU 7.2+ holds for a raw image opened the
/// same way (checked in tests/image_locks.rs against a running QEMU).
pub fn plan(mode: Mode) -> Plan {
    match mode {
        // A read-only raw drive: consistent read, and no other writer.
        Mode::Read => Plan {
            hold: &[CONSISTENT_READ],
            deny: &[WRITE],
            lease_test: Some(false),
            check: true,
        },
        // A writable raw drive: read and write, and no other writer.
        Mode::Write => Plan {
            hold: &[CONSISTENT_READ, WRITE],
            deny: &[WRITE],
            lease_test: Some(true),
            check: true,
        },
        // `w!`: like QEMU's share-rw=on, a writer that lets others write;
        // it checks nothing (the mode forces), but others see the writer.
        Mode::Force => Plan {
            hold: &[CONSISTENT_READ, WRITE],
            deny: &[],
            lease_test: None,
            check: false,
        },
    }
}

/// What the prepare knows about its own loop devices over the image: the
/// sharing rule has already judged their claims (same VM, `w!`...), so a
/// lock they explain is not a refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnLoops {
    /// Loop devices over the file.
    pub all: usize,
    /// Of those, the read-write ones.
    pub rw: usize,
}

/// The image being locked.
pub struct Image<'a> {
    /// Its open description: the one the loop device will get.
    pub file: &'a File,
    /// `st_dev`, `st_ino`.
    pub dev: u64,
    pub ino: u64,
    /// How people know it (its path).
    pub shown: &'a str,
}

#[cfg(target_os = "linux")]
/// The image locks a prepare took on its open description, let go of when
/// this is dropped unless [`Taken::keep`] hands them to the loop device.
///
/// Closing the description is not enough on an error path: a child that
/// any thread of the process forks meanwhile (a toolstack spawning a
/// helper) holds a reference to it until its `exec`, and the locks would
/// last as long, refusing the next prepare and QEMU for that while.
#[must_use = "dropping it lets go of the locks"]
pub struct Taken<'a> {
    file: Option<&'a File>,
}

#[cfg(target_os = "linux")]
impl Taken<'_> {
    /// Keep the locks: the loop device has the description now, and they
    /// last as long as it.
    pub fn keep(mut self) {
        self.file = None;
    }
}

#[cfg(target_os = "linux")]
impl Drop for Taken<'_> {
    fn drop(&mut self) {
        // While unwinding from a panic, a loop device may hold the
        // description already: its locks then go with it, as before.
        if std::thread::panicking() {
            return;
        }
        if let Some(f) = self.file {
            // Every QEMU byte (100..=299), whichever bits a plan takes. Should
            // this fail, the locks still go when the description does.
            let _ = ofdlock::unlock(f, PERM_BASE, 2 * (SHARED_BASE - PERM_BASE));
        }
    }
}

#[cfg(target_os = "linux")]
/// Take the locks of `mode` on `img.file`, then check nobody else's stand
/// in the way (QEMU's order: take, then test, so two racing openers cannot
/// both miss each other). On an error, the locks taken are let go of
/// before it returns; on success, the returned [`Taken`] holds them.
/// `own` is asked only when a conflict is found.
pub fn take<'a>(
    img: &Image<'a>,
    mode: Mode,
    policy: ImageLocks,
    own: &dyn Fn() -> Result<OwnLoops>,
    log: &dyn Fn(LogLevel, &str),
) -> Result<Taken<'a>> {
    if policy == ImageLocks::Off {
        return Ok(Taken { file: None });
    }
    // Armed before the first lock, so every return below lets go.
    let taken = Taken {
        file: Some(img.file),
    };
    let p = plan(mode);
    let hold = |bits: &[u64], base: u64| -> io::Result<()> {
        // Adjacent bits in one call (they are 0 and 1 here).
        if let (Some(&lo), Some(&hi)) = (bits.first(), bits.last()) {
            ofdlock::lock_shared(img.file, base + lo, hi - lo + 1)?;
        }
        Ok(())
    };
    match hold(p.hold, PERM_BASE).and_then(|()| hold(p.deny, SHARED_BASE)) {
        Ok(()) => {}
        Err(e) if unsupported(&e) => {
            // Lets go of a first range taken before the second failed
            // (NFSv3's lock manager out of resources).
            drop(taken);
            without_locks(img, policy, &e, log)?;
            return Ok(Taken { file: None });
        }
        // An exclusive lock on a QEMU byte: not QEMU's, but in the way.
        Err(e) if busy(&e) => return Err(exclusive_in_the_way(img, mode, &p)),
        Err(e) => {
            return Err(Error::io(
                format!("cannot lock {} (image locks)", img.shown),
                e,
            ))
        }
    }
    if p.check && any_conflict(img, &p)? {
        refuse_unless_own(img, mode, &p, own)?;
    }
    // The common case: one test per run of bytes, nothing found.
    Ok(taken)
}

#[cfg(target_os = "linux")]
/// Someone holds an exclusive lock where we take shared ones: find it to
/// name it.
fn exclusive_in_the_way(img: &Image<'_>, mode: Mode, p: &Plan) -> Error {
    let bytes = p.hold.iter().map(|b| PERM_BASE + b);
    for byte in bytes.chain(p.deny.iter().map(|b| SHARED_BASE + b)) {
        if let Ok(Some(c)) = ofdlock::test(img.file, byte, 1, false) {
            return Error::Busy(refusal(img.shown, mode, byte, &c));
        }
    }
    Error::Busy(format!(
        "{} is locked by another user (its image locks could not be taken, and the \
         holder let go meanwhile); try again",
        img.shown
    ))
}

#[cfg(target_os = "linux")]
/// The bytes a plan tests, with the kind of lock it would need there:
/// others' "not shared" bytes of what it holds, others' "held" bytes of
/// what it denies, and libvirt's lease byte.
fn tests(p: &Plan) -> Vec<(u64, bool)> {
    let mut v: Vec<(u64, bool)> = p.hold.iter().map(|b| (SHARED_BASE + b, true)).collect();
    v.extend(p.deny.iter().map(|b| (PERM_BASE + b, true)));
    if let Some(x) = p.lease_test {
        v.push((LEASE_BYTE, x));
    }
    v
}

#[cfg(target_os = "linux")]
/// One `F_OFD_GETLK` per run of adjacent bytes: is any in the way?
fn any_conflict(img: &Image<'_>, p: &Plan) -> Result<bool> {
    let t = tests(p);
    let mut i = 0;
    while i < t.len() {
        let (start, x) = t[i];
        let mut len = 1;
        while i + (len as usize) < t.len() && t[i + len as usize] == (start + len, x) {
            len += 1;
        }
        if test(img, start, len, x)?.is_some() {
            return Ok(true);
        }
        i += len as usize;
    }
    Ok(false)
}

#[cfg(target_os = "linux")]
fn test(img: &Image<'_>, start: u64, len: u64, exclusive: bool) -> Result<Option<Conflict>> {
    ofdlock::test(img.file, start, len, exclusive)
        .map_err(|e| Error::io(format!("cannot test the image locks of {}", img.shown), e))
}

#[cfg(target_os = "linux")]
/// A conflict was found: test byte by byte, and let pass the bytes whose
/// holders are all explained by our own loop devices over the file.
///
/// A lock that names no process (an OFD lock, or one held through a network
/// file system's server) is looked up in this host's `/proc/locks`: if no
/// lock of this host explains the conflict, the holder is another host
/// sharing the file system (NFSv4 forwards locks to the server, and the
/// server refuses for every client; docs/image-locks.md, "Across hosts").
fn refuse_unless_own(
    img: &Image<'_>,
    mode: Mode,
    p: &Plan,
    own: &dyn Fn() -> Result<OwnLoops>,
) -> Result<()> {
    let mut own_loops: Option<OwnLoops> = None;
    let mut held: Option<Vec<ofdlock::Held>> = None;
    for (byte, x) in tests(p) {
        let Some(c) = test(img, byte, 1, x)? else {
            continue;
        };
        if c.pid.is_some() {
            return Err(Error::Busy(refusal(img.shown, mode, byte, &c)));
        }
        let h = match &held {
            Some(h) => h,
            // Nothing to explain the holder with: refuse, in general words.
            None => match ofdlock::held_on(img.dev, img.ino) {
                Ok(v) => held.insert(v),
                Err(_) => return Err(Error::Busy(refusal(img.shown, mode, byte, &c))),
            },
        };
        // /proc/locks lists this prepare's own (shared) lock on the byte
        // too; it is in the way of an exclusive test only.
        let mine = x
            && (p.hold.iter().any(|b| PERM_BASE + b == byte)
                || p.deny.iter().any(|b| SHARED_BASE + b == byte));
        let local = local_holders(h, byte, x, mine);
        if local == 0 {
            return Err(Error::Busy(elsewhere_refusal(img.shown, mode, byte, &c)));
        }
        // Our loop devices hold shared OFD locks on 101 (read-write ones)
        // and 201 (all but `w!`), never on 0 or 200.
        let ours = match byte {
            b if b == PERM_BASE + WRITE => Some(true),
            b if b == SHARED_BASE + WRITE => Some(false),
            _ => None,
        };
        if let (Some(ours), false) = (ours, c.exclusive) {
            let o = match own_loops {
                Some(o) => o,
                None => *own_loops.insert(own()?),
            };
            let n = h
                .iter()
                .filter(|l| l.ofd && !l.exclusive && l.covers(byte))
                .count();
            if n.saturating_sub(usize::from(mine)) <= if ours { o.rw } else { o.all } {
                continue;
            }
        }
        return Err(Error::Busy(refusal(img.shown, mode, byte, &c)));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
/// How many of this host's locks (`/proc/locks`) are in the way of a test
/// of `byte` (exclusive or shared), not counting the prepare's own shared
/// lock on it (`mine`). Zero means the holder is on another host.
fn local_holders(held: &[ofdlock::Held], byte: u64, exclusive: bool, mine: bool) -> usize {
    held.iter()
        .filter(|l| l.covers(byte) && (exclusive || l.exclusive))
        .count()
        .saturating_sub(usize::from(mine))
}

#[cfg(target_os = "linux")]
/// The refusal when no lock of this host is in the way: the holder is on
/// another host sharing the file system.
pub fn elsewhere_refusal(shown: &str, mode: Mode, byte: u64, c: &Conflict) -> String {
    if byte == LEASE_BYTE {
        return refusal(shown, mode, byte, c);
    }
    let asked = match mode {
        Mode::Read => "read-only",
        _ => "read-write",
    };
    format!(
        "{shown} is in use on another host: a QEMU-compatible user (a guest prepared by \
         xenblock, or a QEMU) {} (lock byte {byte}); no process on this host holds that \
         lock, so another host sharing this file system does (NFSv4 keeps the locks on the \
         server), or a process in a PID namespace this one cannot see. It will not be \
         attached {asked}; stop that user first (a host that died keeps its locks until \
         the server's lease on them ends)",
        what_it_does(byte)
    )
}

#[cfg(target_os = "linux")]
fn what_it_does(byte: u64) -> &'static str {
    match byte {
        b if b == PERM_BASE + WRITE => "writes to it",
        b if b == SHARED_BASE + WRITE => "lets nobody else write to it",
        b if b == SHARED_BASE + CONSISTENT_READ => "lets nobody else read it",
        _ => "holds a lock on it",
    }
}

#[cfg(target_os = "linux")]
fn process(pid: u32) -> String {
    match ofdlock::process_name(pid) {
        Some(n) => format!("process {pid} ({n})"),
        None => format!("process {pid}"),
    }
}

#[cfg(target_os = "linux")]
/// What a conflicting lock on `byte` means and who holds it, in words:
/// ("is in use: a QEMU-compatible user writes to it (lock byte 101)",
/// "the lock is an OFD lock, which names no process: ...").
pub fn holder_words(byte: u64, c: &Conflict) -> (String, String) {
    if byte == LEASE_BYTE {
        let kind = if c.exclusive {
            "read-write"
        } else {
            "shareable"
        };
        let holder = match c.pid {
            Some(pid) => format!("the lease is held by {}", process(pid)),
            None => {
                "the lease is held from another host (no process on this host owns it)".to_string()
            }
        };
        return (
            format!("is leased by libvirt (a virtlockd {kind} lease: lock byte 0)"),
            holder,
        );
    }
    let what = what_it_does(byte);
    let holder = match c.pid {
        Some(pid) => format!("{} holds that lock", process(pid)),
        None => "the lock is an OFD lock, which names no process: another process on this \
                 host (a QEMU guest, qemu-img, qemu-io, qemu-nbd; `fuser -v` on the file \
                 finds it) or another host sharing this file system"
            .to_string(),
    };
    (
        format!("is in use: a QEMU-compatible user {what} (lock byte {byte})"),
        holder,
    )
}

#[cfg(target_os = "linux")]
/// Who holds the image, in words.
pub fn refusal(shown: &str, mode: Mode, byte: u64, c: &Conflict) -> String {
    let asked = match mode {
        Mode::Read => "read-only",
        _ => "read-write",
    };
    let (what, holder) = holder_words(byte, c);
    if byte == LEASE_BYTE {
        return format!(
            "{shown} {what}, {holder}, so it will not be attached {asked}; stop the libvirt \
             guest that uses it"
        );
    }
    format!("{shown} {what}; {holder}. It will not be attached {asked}; stop that user first")
}

#[cfg(target_os = "linux")]
/// Whether a user other than xenblock's own loop devices over the file
/// holds it with image locks, as a claim for the sharing rule
/// ([`crate::sharing::LockClaim`]): tested from a fresh read-only open that
/// takes no lock (so other hosts on NFSv4 are seen too). Each of
/// xenblock's (tagged) loop devices over the file explains one shared lock
/// on the write bytes, as in [`take`]; untagged ones (Xen's script,
/// `losetup`) hold none. `Err` says why it cannot be told.
pub fn lock_claim(
    path: &str,
    dev: u64,
    ino: u64,
) -> std::result::Result<Option<crate::sharing::LockClaim>, String> {
    let cannot = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot test the image locks of {path} ({what}: {e})")
    };
    let Ok(file) = File::open(path) else {
        return Ok(None); // not a path that opens: nothing to test here
    };
    match crate::sys::stat::fstat(std::os::fd::AsFd::as_fd(&file)) {
        Ok(st) if st.dev == dev && st.ino == ino => {}
        _ => return Ok(None), // the path names another file now
    }
    // The holder's mode per byte: writers and read-forbidders conflict
    // with everyone; write-forbidders with writers; a lease as its kind.
    let tests = [
        (PERM_BASE + WRITE, Some(Mode::Write)),
        (SHARED_BASE + CONSISTENT_READ, Some(Mode::Write)),
        (LEASE_BYTE, None),
        (SHARED_BASE + WRITE, Some(Mode::Read)),
    ];
    let mut held: Option<Vec<ofdlock::Held>> = None;
    let mut loops: Option<(usize, usize)> = None;
    for (byte, mode) in tests {
        let c = match ofdlock::test(&file, byte, 1, true) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => return Err(cannot("F_OFD_GETLK", &e)),
        };
        let mode = mode.unwrap_or(if c.exclusive { Mode::Write } else { Mode::Read });
        let claim = |what: String, holder: String| crate::sharing::LockClaim {
            key: crate::sharing::Key::File { dev, ino },
            path: path.to_string(),
            mode,
            what,
            holder,
        };
        if c.pid.is_none() {
            let h = match &held {
                Some(h) => h,
                None => {
                    held.insert(ofdlock::held_on(dev, ino).map_err(|e| cannot("/proc/locks", &e))?)
                }
            };
            // No lock of this host in the way: another host's (NFSv4).
            if local_holders(h, byte, true, false) == 0 {
                return Ok(Some(claim(
                    format!(
                        "is in use on another host: a QEMU-compatible user {} (lock byte {byte})",
                        what_it_does(byte)
                    ),
                    "no process on this host holds that lock, so another host sharing this \
                     file system does (NFSv4 keeps the locks on the server), or a process in a \
                     PID namespace this one cannot see"
                        .to_string(),
                )));
            }
        }
        let ours = match byte {
            b if b == PERM_BASE + WRITE => Some(true),
            b if b == SHARED_BASE + WRITE => Some(false),
            _ => None,
        };
        if let (Some(rw_only), false, None) = (ours, c.exclusive, c.pid) {
            let (all, rw) = match loops {
                Some(l) => l,
                None => {
                    let tag = crate::attach::LOOP_TAG_PREFIX.as_bytes();
                    let l: Vec<_> = crate::sys::loopdev::backed_by(dev, ino)
                        .map_err(|e| cannot("loop devices", &e))?
                        .into_iter()
                        .filter(|l| l.file_name.starts_with(tag))
                        .collect();
                    *loops.insert((l.len(), l.iter().filter(|l| !l.read_only).count()))
                }
            };
            let h = match &held {
                Some(h) => h,
                None => {
                    held.insert(ofdlock::held_on(dev, ino).map_err(|e| cannot("/proc/locks", &e))?)
                }
            };
            let n = h
                .iter()
                .filter(|l| l.ofd && !l.exclusive && l.covers(byte))
                .count();
            if n <= if rw_only { rw } else { all } {
                continue;
            }
        }
        let (what, holder) = holder_words(byte, &c);
        return Ok(Some(claim(what, holder)));
    }
    Ok(None)
}

#[cfg(target_os = "linux")]
/// The errors that mean "this file system has no byte-range locks" (and
/// `EINVAL`: a kernel without OFD locks).
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOLCK) | Some(libc::EINVAL)
    )
}

#[cfg(target_os = "linux")]
fn busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
}

#[cfg(target_os = "linux")]
/// No locks on this file system: refuse (`required`) or warn once per
/// image and go on (`best-effort`).
fn without_locks(
    img: &Image<'_>,
    policy: ImageLocks,
    e: &io::Error,
    log: &dyn Fn(LogLevel, &str),
) -> Result<()> {
    let why = e;
    if policy == ImageLocks::Required {
        return Err(Error::Unsupported(format!(
            "{} cannot be locked ({why}: its file system has no byte-range locks), and \
             image_locks is 'required', so it is not attached; move it to a file system \
             with locks (a local one, NFSv4, NFSv3 without 'nolock') or set image_locks \
             to best-effort",
            img.shown
        )));
    }
    if first_warning(img.dev, img.ino) {
        log(
            LogLevel::Warn,
            &format!(
                "{LOG_PREFIX}{} cannot be locked ({why}: its file system has no byte-range \
                 locks); attaching it without: QEMU and other hosts will not see that a \
                 guest uses it (image_locks=required would refuse instead)",
                img.shown
            ),
        );
    }
    Ok(())
}

/// True the first time an image is named in this process.
pub fn first_warning(dev: u64, ino: u64) -> bool {
    // Fresh in a forked child (a worker may hold it at the fork).
    static WARNED: crate::sys::fork::PerFork<HashSet<(u64, u64)>> =
        crate::sys::fork::PerFork::new();
    WARNED.get().lock().insert((dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_words() {
        for p in [
            ImageLocks::Required,
            ImageLocks::BestEffort,
            ImageLocks::Off,
        ] {
            assert_eq!(ImageLocks::parse(p.as_str()).unwrap(), p);
        }
        assert_eq!(ImageLocks::default(), ImageLocks::BestEffort);
        let e = ImageLocks::parse("on").unwrap_err().to_string();
        assert!(e.contains("required, best-effort or off"), "{e}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn bytes_of_each_mode() {
        // Read: others' "no read" and "no write"-sharing bytes; a lease if exclusive.
        assert_eq!(
            tests(&plan(Mode::Read)),
            vec![(200, true), (101, true), (0, false)]
        );
        assert_eq!(
            tests(&plan(Mode::Write)),
            vec![(200, true), (201, true), (101, true), (0, true)]
        );
        assert!(!plan(Mode::Force).check);
    }

    /// A refused or dropped take lets go of its locks before it returns, on
    /// the description that is still open; a kept one holds them past the
    /// close while another reference to the description lives (here a
    /// child's stdin, as a loop device's or a forked child's).
    #[test]
    #[cfg(target_os = "linux")]
    fn a_refused_or_dropped_take_lets_go_a_kept_one_outlives_the_close() {
        // A QEMU reader: holds consistent read, lets nobody write.
        let (file, reader) = ofdlock::tests::two_descriptions("take");
        ofdlock::lock_shared(&reader, 100, 1).unwrap();
        ofdlock::lock_shared(&reader, 201, 1).unwrap();
        let st = crate::sys::stat::fstat(std::os::fd::AsFd::as_fd(&reader)).unwrap();
        // Locks on the QEMU bytes beside the reader's two.
        let others = || {
            let n = ofdlock::held_on(st.dev, st.ino)
                .unwrap()
                .iter()
                .filter(|l| (100..300).any(|b| l.covers(b)))
                .count();
            n.checked_sub(2)
                .expect("/proc/locks lists the reader's two locks on this file")
        };
        let _child = ofdlock::tests::sharing_child(&file);
        let img = Image {
            file: &file,
            dev: st.dev,
            ino: st.ino,
            shown: "/img",
        };
        let none = || Ok(OwnLoops::default());
        let quiet = |_: LogLevel, _: &str| {};
        let e = take(&img, Mode::Write, ImageLocks::Required, &none, &quiet)
            .err()
            .expect("a writer is refused beside a reader");
        assert_eq!(e.kind(), crate::ErrorKind::Busy, "{e}");
        assert_eq!(others(), 0, "the refusal let go of its locks");
        let t = take(&img, Mode::Read, ImageLocks::Required, &none, &quiet).unwrap();
        assert!(others() > 0, "a take holds locks");
        drop(t);
        assert_eq!(others(), 0, "a dropped take let go of its locks");
        take(&img, Mode::Read, ImageLocks::Required, &none, &quiet)
            .unwrap()
            .keep();
        drop(file);
        assert!(others() > 0, "a kept take's locks outlive the close");
    }

    #[test]
    fn warned_once_per_image() {
        assert!(first_warning(u64::MAX, 1));
        assert!(!first_warning(u64::MAX, 1));
        assert!(first_warning(u64::MAX, 2));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn refusals_name_the_holder() {
        let ofd = Conflict {
            start: 201,
            len: 1,
            exclusive: false,
            pid: None,
        };
        let m = refusal("/img", Mode::Write, 201, &ofd);
        assert!(
            m.contains("lets nobody else write") && m.contains("another host"),
            "{m}"
        );
        let lease = Conflict {
            start: 0,
            len: 1,
            exclusive: true,
            pid: Some(std::process::id()),
        };
        let m = refusal("/img", Mode::Read, 0, &lease);
        assert!(m.contains("virtlockd read-write lease"), "{m}");
        assert!(
            m.contains(&format!("process {}", std::process::id())),
            "{m}"
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn holders_on_this_host() {
        let shared = |start, end| ofdlock::Held {
            ofd: true,
            exclusive: false,
            start,
            end: Some(end),
        };
        // Only the prepare's own lock on 201: the holder is elsewhere.
        let mine_only = [shared(100, 101), shared(201, 201)];
        assert_eq!(local_holders(&mine_only, 201, true, true), 0);
        assert_eq!(local_holders(&mine_only, 101, true, true), 0);
        // A local QEMU's lock on 201 too: one holder here.
        let with_qemu = [shared(100, 101), shared(201, 201), shared(200, 201)];
        assert_eq!(local_holders(&with_qemu, 201, true, true), 1);
        // A shared test (the lease byte) is in the way of exclusive locks only.
        let lease = ofdlock::Held {
            ofd: false,
            exclusive: true,
            start: 0,
            end: Some(0),
        };
        assert_eq!(local_holders(&[shared(0, 0)], 0, false, false), 0);
        assert_eq!(local_holders(&[lease], 0, false, false), 1);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_holder_no_local_lock_explains_is_on_another_host() {
        let remote = Conflict {
            start: 201,
            len: 1,
            exclusive: false,
            pid: None,
        };
        let m = elsewhere_refusal("/nfs/img", Mode::Write, 201, &remote);
        assert!(
            m.contains("in use on another host")
                && m.contains("lets nobody else write")
                && m.contains("lease"),
            "{m}"
        );
        // A lease on byte 0 keeps libvirt's words.
        let m = elsewhere_refusal("/nfs/img", Mode::Read, 0, &remote);
        assert!(m.contains("virtlockd") && m.contains("another host"), "{m}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn unsupported_errors() {
        for e in [libc::EOPNOTSUPP, libc::ENOLCK, libc::EINVAL] {
            assert!(unsupported(&io::Error::from_raw_os_error(e)));
        }
        assert!(!unsupported(&io::Error::from_raw_os_error(libc::EAGAIN)));
    }
}
