//! Loop devices (Linux): attach a file, query, list and detach them through
//! ioctls on `/dev/loop-control` and `/dev/loopN` — numbers only, never the
//! text `losetup` prints.
//!
//! Attached devices are not auto-clearing: they must outlive the process
//! (xl exits after `xl create`; `xl destroy` is another process).
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::stat::{self, FileKind};
use crate::error::{Error, Result};
use crate::sharing::DevNum;

/// `LO_NAME_SIZE` of linux/loop.h.
const LO_NAME_SIZE: usize = 64;
/// The longest `lo_file_name` that is known to be whole when read back: a
/// name of `LO_NAME_SIZE - 1` bytes may have been cut by the kernel.
pub const WHOLE_NAME_MAX: usize = LO_NAME_SIZE - 2;
/// `LO_KEY_SIZE` of linux/loop.h.
const LO_KEY_SIZE: usize = 32;
/// `LO_FLAGS_READ_ONLY` of linux/loop.h.
const LO_FLAGS_READ_ONLY: u32 = 1;

/// `struct loop_info64` of linux/loop.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` of linux/loop.h (for `LOOP_CONFIGURE`, Linux >= 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

const ZERO_INFO: LoopInfo64 = LoopInfo64 {
    lo_device: 0,
    lo_inode: 0,
    lo_rdevice: 0,
    lo_offset: 0,
    lo_sizelimit: 0,
    lo_number: 0,
    lo_encrypt_type: 0,
    lo_encrypt_key_size: 0,
    lo_flags: 0,
    lo_file_name: [0; LO_NAME_SIZE],
    lo_crypt_name: [0; LO_NAME_SIZE],
    lo_encrypt_key: [0; LO_KEY_SIZE],
    lo_init: [0; 2],
};

nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);

/// How many free devices [`attach`] tries to claim before giving up.
const ATTACH_TRIES: usize = 64;
/// How long [`attach`] waits for a new `/dev/loopN` node to appear.
const NODE_WAIT: Duration = Duration::from_millis(500);
/// How many times [`detach`] retries `EBUSY` (old kernels), 10 ms apart.
const DETACH_TRIES: usize = 50;
/// How long [`detach`] waits for the kernel to finish unbinding.
const UNBIND_WAIT: Duration = Duration::from_millis(500);

/// A bound loop device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopInfo {
    /// Its device node, `/dev/loopN` (or the path the caller gave).
    pub path: PathBuf,
    /// `N`.
    pub number: u32,
    /// Its device number (`st_rdev` of the node), e.g. `7:0`.
    pub dev: DevNum,
    /// `st_dev` of the backing file (`lo_device`), same encoding as `stat`.
    pub backing_dev: u64,
    /// `st_ino` of the backing file (`lo_inode`).
    pub backing_ino: u64,
    /// `lo_file_name` up to its NUL (the tag given to [`attach`], at most 63 bytes).
    pub file_name: Vec<u8>,
    /// True when the device is read-only.
    pub read_only: bool,
    /// The kernel's disk sequence number of this binding (`None` on kernels
    /// without diskseq): a detached and re-attached `/dev/loopN` gets a new one.
    pub diskseq: Option<u64>,
}

impl LoopInfo {
    /// Whether this device is backed by the file with this (st_dev, st_ino).
    pub fn is_backed_by(&self, dev: u64, ino: u64) -> bool {
        // Both numbers come from the kernel's own encoding of the same
        // dev_t (`new_encode_dev`), so they compare as plain integers.
        self.backing_dev == dev && self.backing_ino == ino
    }
}

/// `/dev/loopN`.
fn dev_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

/// `N` from a name `loopN`.
fn loop_number(name: &OsStr) -> Option<u32> {
    let digits = name.as_bytes().strip_prefix(b"loop")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Open a device node with `O_CLOEXEC` (always added by std) and `O_NOCTTY`.
/// Read-only opens do not make udev re-probe the device on close.
fn open_dev(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
}

/// True for the open errors that mean "no such (bound) device".
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV)
    )
}

/// `LOOP_GET_STATUS64` on an open loop device.
fn get_status(dev: &File) -> nix::Result<LoopInfo64> {
    let mut info = ZERO_INFO;
    // SAFETY: `dev` is an open descriptor for the call's duration and `info`
    // is a valid, writable `loop_info64` that the kernel fills in.
    unsafe { loop_get_status64(dev.as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// The status of the open device `dev` (whose node is `path`); `None` when
/// it is not bound.
fn query(path: &Path, dev: &File) -> Result<Option<LoopInfo>> {
    let st = stat::fstat(dev.as_fd())?;
    if st.kind != FileKind::Block {
        return Err(Error::InvalidArgument(format!(
            "{} is not a loop device (not even a block device)",
            path.display()
        )));
    }
    let raw = match get_status(dev) {
        Ok(raw) => raw,
        Err(Errno::ENXIO) => return Ok(None),
        Err(Errno::ENOTTY) | Err(Errno::EINVAL) => {
            return Err(Error::InvalidArgument(format!(
                "{} (device {}) is not a loop device",
                path.display(),
                DevNum::from_dev_t(st.rdev)
            )))
        }
        Err(e) => {
            return Err(Error::sys(
                format!("cannot read the status of loop device {}", path.display()),
                e,
            ))
        }
    };
    let name = &raw.lo_file_name;
    let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    Ok(Some(LoopInfo {
        path: path.to_path_buf(),
        number: raw.lo_number,
        dev: DevNum::from_dev_t(st.rdev),
        backing_dev: raw.lo_device,
        backing_ino: raw.lo_inode,
        file_name: name[..len].to_vec(),
        read_only: raw.lo_flags & LO_FLAGS_READ_ONLY != 0,
        diskseq: super::diskseq::of_file(dev, path)?,
    }))
}

/// The status of the loop device at `path` (`LOOP_GET_STATUS64`); `None`
/// when it is not bound to a file or its node does not exist.
pub fn status(path: &Path) -> Result<Option<LoopInfo>> {
    match open_dev(path, false) {
        Ok(dev) => query(path, &dev),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(Error::io(
            format!("cannot open loop device {}", path.display()),
            e,
        )),
    }
}

/// Where the kernel keeps every loop device's sysfs directory (they are
/// virtual devices); `/sys/block` holds links to them.
const LOOP_SYSFS: &str = "/sys/devices/virtual/block";

/// The numbers of the bound loop devices: those with a `loop/` directory
/// in their sysfs directory (it exists exactly while the device is bound,
/// whatever the size of its backing file), in order. One directory listing,
/// then one `fstatat` relative to it per loop device (no path walk through
/// `/sys/block`'s links): a few microseconds per loop device, bound or not,
/// which is why [`bound_numbers`] keeps the result.
fn scan_bound() -> Result<Vec<u32>> {
    let listing = || {
        Error::io(
            format!("cannot list {LOOP_SYSFS} to find the loop devices (is sysfs mounted?)"),
            io::Error::last_os_error(),
        )
    };
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(LOOP_SYSFS)
        .map_err(|e| {
            Error::io(
                format!("cannot open {LOOP_SYSFS} to find the loop devices (is sysfs mounted?)"),
                e,
            )
        })?;
    let entries = std::fs::read_dir(LOOP_SYSFS).map_err(|_| listing())?;
    let mut numbers: Vec<u32> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let n = loop_number(&name)?;
            let mut sub = std::os::unix::ffi::OsStringExt::into_vec(name);
            sub.extend_from_slice(b"/loop");
            let bound = nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                sub.as_slice(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok();
            bound.then_some(n)
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// The kernel's count of the uevents it has sent (`/sys/kernel/uevent_seqnum`).
fn uevent_seqnum() -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = io::Read::read(&mut File::open("/sys/kernel/uevent_seqnum").ok()?, &mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The last scan of the bound loop devices, and the uevent count read just
/// before it.
/// Fresh in a forked child (a worker may hold it at the fork).
static BOUND: super::fork::PerFork<Option<(u64, Vec<u32>)>> = super::fork::PerFork::new();

/// [`scan_bound`], reused while the kernel has sent no uevent since: binding
/// a loop device sends one (`change`, once its `loop/` directory exists),
/// so an unchanged count means no device was bound since the scan. Devices
/// unbound since are found out by their status. Without the count (no
/// sysfs), every call scans.
fn bound_numbers() -> Result<Vec<u32>> {
    let seq = uevent_seqnum();
    if let Some(s) = seq {
        let cache = BOUND.get().lock();
        if let Some((_, numbers)) = cache.as_ref().filter(|(at, _)| *at == s) {
            return Ok(numbers.clone());
        }
    }
    let numbers = scan_bound()?;
    if let Some(s) = seq {
        *BOUND.get().lock() = Some((s, numbers.clone()));
    }
    Ok(numbers)
}

/// Every bound loop device: found by what it is (a `loop/` directory in
/// sysfs, then `LOOP_GET_STATUS64`), never through the partition list,
/// which leaves out a device whose backing file is empty. Unbound devices
/// cost one `stat` each.
pub fn list() -> Result<Vec<LoopInfo>> {
    list_reusing(&[])
}

/// [`list`], taking the status of the devices in `known` (statuses the
/// caller has just read) as given instead of asking the kernel again.
pub fn list_reusing(known: &[LoopInfo]) -> Result<Vec<LoopInfo>> {
    let numbers = bound_numbers()?;
    let mut out = Vec::with_capacity(numbers.len());
    for n in numbers {
        let info = match known.iter().find(|k| k.number == n) {
            Some(k) => Some(k.clone()),
            // A device unbound since the directory was read answers `None`.
            None => status(&dev_path(n))?,
        };
        out.extend(info);
    }
    Ok(out)
}

/// Every bound loop device whose backing file has this (st_dev, st_ino),
/// empty ones included: a file attached while empty may grow, and its
/// first writer must still be seen.
pub fn backed_by(dev: u64, ino: u64) -> Result<Vec<LoopInfo>> {
    backed_by_reusing(dev, ino, &[])
}

/// [`backed_by`], reusing the statuses in `known` (see [`list`]); what the
/// sharing rule calls while it walks the block stack.
pub fn backed_by_reusing(dev: u64, ino: u64, known: &[LoopInfo]) -> Result<Vec<LoopInfo>> {
    let mut all = list_reusing(known)?;
    all.retain(|l| l.is_backed_by(dev, ino));
    Ok(all)
}

/// A person-readable name for an open file: its path if /proc knows it.
fn describe(file: &File) -> String {
    let fd = file.as_raw_fd();
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(p) => p.display().to_string(),
        Err(_) => format!("the file open as descriptor {fd}"),
    }
}

/// Open a device node that `LOOP_CTL_GET_FREE` just named, waiting briefly
/// for the node to appear.
fn open_new(path: &Path, write: bool) -> Result<File> {
    let start = Instant::now();
    loop {
        match open_dev(path, write) {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && start.elapsed() < NODE_WAIT => {
                sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(Error::io(
                    format!("cannot open the free loop device {}", path.display()),
                    e,
                ))
            }
        }
    }
}

/// `LOOP_CLR_FD` on an open device, best effort (used to undo a half-done attach).
fn clear_quietly(dev: &File) {
    // SAFETY: `dev` is an open descriptor; LOOP_CLR_FD takes no argument.
    let _ = unsafe { loop_clr_fd(dev.as_raw_fd()) };
}

/// Pre-5.8 kernels: `LOOP_SET_FD` then `LOOP_SET_STATUS64` for the name.
/// Read-only comes from the device having been opened read-only.
fn attach_legacy(dev: &File, file: &File, info: &LoopInfo64) -> nix::Result<()> {
    // SAFETY: both descriptors are open for the call's duration; LOOP_SET_FD
    // takes the backing file descriptor as its integer argument.
    unsafe { loop_set_fd(dev.as_raw_fd(), file.as_raw_fd()) }?;
    let mut info = *info;
    info.lo_flags = 0; // READ_ONLY is not settable through SET_STATUS.
                       // SAFETY: `dev` is open and `info` is a valid `loop_info64` the kernel
                       // only reads.
    if let Err(e) = unsafe { loop_set_status64(dev.as_raw_fd(), &info) } {
        clear_quietly(dev);
        return Err(e);
    }
    Ok(())
}

/// Bind a free loop device to `file`, read-only if asked, with `tag` (cut to
/// 63 bytes) as its `lo_file_name`. The device is not auto-clearing: it stays
/// until [`detach`]. Claims with `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE`,
/// retrying when another process takes the same free device first; falls
/// back to `LOOP_SET_FD` + `LOOP_SET_STATUS64` on kernels before 5.8.
pub fn attach(file: &File, read_only: bool, tag: &[u8]) -> Result<LoopInfo> {
    let ctl = open_dev(Path::new("/dev/loop-control"), true).map_err(|e| {
        Error::io(
            "cannot open /dev/loop-control to get a free loop device \
             (is the loop module loaded, and are we root?)",
            e,
        )
    })?;
    let mut info = ZERO_INFO;
    let n = tag.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&tag[..n]);
    if read_only {
        info.lo_flags = LO_FLAGS_READ_ONLY;
    }
    let fd = u32::try_from(file.as_raw_fd())
        .map_err(|_| Error::InvalidArgument("invalid file descriptor to attach".into()))?;
    let config = LoopConfig {
        fd,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    let what = || describe(file);
    let mut legacy = false;
    for _ in 0..ATTACH_TRIES {
        // SAFETY: `ctl` is an open descriptor; LOOP_CTL_GET_FREE takes no
        // argument and returns a device number.
        let number = unsafe { loop_ctl_get_free(ctl.as_raw_fd()) }
            .map_err(|e| Error::sys("cannot get a free loop device from /dev/loop-control", e))?;
        let number = u32::try_from(number)
            .map_err(|_| Error::Internal(format!("LOOP_CTL_GET_FREE answered {number}")))?;
        let path = dev_path(number);
        // Opening read-only makes the legacy path read-only too.
        let dev = open_new(&path, !read_only)?;
        let res = if legacy {
            attach_legacy(&dev, file, &info)
        } else {
            // SAFETY: `dev` and `config.fd` are open for the call's duration;
            // `config` is a valid `loop_config` the kernel only reads.
            match unsafe { loop_configure(dev.as_raw_fd(), &config) } {
                Err(Errno::ENOTTY) | Err(Errno::EINVAL) => {
                    legacy = true;
                    attach_legacy(&dev, file, &info)
                }
                other => other.map(drop),
            }
        };
        match res {
            Ok(()) => return finish(&path, &dev, read_only, &what),
            // Another process bound this device between GET_FREE and now.
            Err(Errno::EBUSY) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("cannot attach {} to loop device {}", what(), path.display()),
                    e,
                ))
            }
        }
    }
    Err(Error::Busy(format!(
        "cannot attach {}: other processes took each of {ATTACH_TRIES} free loop devices first",
        what()
    )))
}

/// Read back a freshly attached device; undo the attach if it is not what
/// was asked for.
fn finish(path: &Path, dev: &File, read_only: bool, what: &dyn Fn() -> String) -> Result<LoopInfo> {
    let undo = |e: Error| {
        clear_quietly(dev);
        e
    };
    let info = query(path, dev)
        .map_err(undo)?
        .ok_or_else(|| {
            Error::Internal(format!(
                "loop device {} is unbound right after attaching {}",
                path.display(),
                what()
            ))
        })
        .map_err(undo)?;
    if read_only && !info.read_only {
        return Err(undo(Error::Internal(format!(
            "loop device {} for {} is read-write though read-only was asked; detached it",
            path.display(),
            what()
        ))));
    }
    Ok(info)
}

/// Detach the loop device at `path` (`LOOP_CLR_FD`). Not bound, or no such
/// node, is success. On current kernels the unbinding completes when the
/// last opener (often udev, briefly) closes it; this waits a little for that.
pub fn detach(path: &Path) -> Result<()> {
    detach_if(path, |_| true).map(drop)
}

/// Detach the loop device at `path` only if it is still backed by the file
/// with this (st_dev, st_ino): a device number can be reused, and someone
/// else's device is never detached. Returns whether it detached.
pub fn detach_if_backed_by(path: &Path, dev: u64, ino: u64) -> Result<bool> {
    detach_if(path, |l| l.is_backed_by(dev, ino))
}

/// Detach the loop device at `path` if it is bound and `pred` accepts its
/// status (read on the same descriptor used to detach). Returns whether it
/// detached.
pub fn detach_if(path: &Path, pred: impl Fn(&LoopInfo) -> bool) -> Result<bool> {
    let dev = match open_dev(path, false) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(false),
        Err(e) => {
            return Err(Error::io(
                format!("cannot open loop device {} to detach it", path.display()),
                e,
            ))
        }
    };
    match query(path, &dev)? {
        Some(info) if pred(&info) => {}
        _ => return Ok(false),
    }
    let mut tries = 0;
    loop {
        // SAFETY: `dev` is an open descriptor; LOOP_CLR_FD takes no argument.
        match unsafe { loop_clr_fd(dev.as_raw_fd()) } {
            Ok(_) => break,
            // Unbound by someone else in the meantime.
            Err(Errno::ENXIO) => return Ok(false),
            // Old kernels refuse while another process has it open.
            Err(Errno::EBUSY) if tries < DETACH_TRIES => {
                tries += 1;
                sleep(Duration::from_millis(10));
            }
            Err(Errno::EBUSY) => {
                return Err(Error::Busy(format!(
                    "cannot detach loop device {}: it stays in use by another process",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("cannot detach loop device {}", path.display()),
                    e,
                ))
            }
        }
    }
    drop(dev);
    let start = Instant::now();
    while start.elapsed() < UNBIND_WAIT {
        match status(path) {
            Ok(Some(_)) => sleep(Duration::from_millis(2)),
            _ => break,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root to create loop devices; run it as root \
             (it fails rather than skips so CI without root is noticed)"
        );
    }

    /// A 1 MiB file in /tmp, removed on drop.
    struct TempImage {
        path: PathBuf,
        file: File,
    }

    impl TempImage {
        fn new() -> TempImage {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let path = PathBuf::from(format!(
                "/tmp/xenblock-loop-test-{}-{}.img",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            let mut file = File::create_new(&path).unwrap();
            file.write_all(&vec![0u8; 1 << 20]).unwrap();
            drop(file);
            let file = stat::open_target(&path, true).unwrap();
            TempImage { path, file }
        }
        fn id(&self) -> (u64, u64) {
            let st = stat::fstat(self.file.as_fd()).unwrap();
            (st.dev, st.ino)
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// A loop device this test made; detached on drop, only if still ours.
    struct Attached {
        info: LoopInfo,
    }

    impl Attached {
        fn new(img: &TempImage, file: &File, read_only: bool, tag: &[u8]) -> Attached {
            let info = attach(file, read_only, tag).unwrap();
            let (dev, ino) = img.id();
            assert!(info.is_backed_by(dev, ino), "{info:?}");
            Attached { info }
        }
    }

    impl Drop for Attached {
        fn drop(&mut self) {
            let i = &self.info;
            let _ = detach_if_backed_by(&i.path, i.backing_dev, i.backing_ino);
        }
    }

    #[test]
    fn attach_status_backed_by_detach() {
        require_root();
        let img = TempImage::new();
        let (dev, ino) = img.id();

        let rw = Attached::new(&img, &img.file, false, b"xenblock-test rw");
        let st = status(&rw.info.path).unwrap().expect("bound");
        assert_eq!((st.backing_dev, st.backing_ino), (dev, ino));
        assert_eq!(st.file_name, b"xenblock-test rw");
        assert!(!st.read_only);
        assert_eq!(st.dev.major, 7);
        assert_eq!(
            st.path,
            PathBuf::from(format!("/dev/loop{}", st.number)),
            "{st:?}"
        );
        assert_eq!(
            st.dev,
            DevNum::from_dev_t(stat::stat(&st.path).unwrap().rdev)
        );

        let ro = Attached::new(&img, &img.file, true, b"xenblock-test ro");
        assert!(ro.info.read_only);
        assert!(status(&ro.info.path).unwrap().unwrap().read_only);

        let found = backed_by(dev, ino).unwrap();
        let mut paths: Vec<_> = found.iter().map(|l| l.path.clone()).collect();
        paths.sort();
        let mut want = vec![rw.info.path.clone(), ro.info.path.clone()];
        want.sort();
        assert_eq!(paths, want);
        assert!(list().unwrap().iter().any(|l| l.path == rw.info.path));
        // The listing that reuses known statuses finds the same two.
        let fast = |known: &[LoopInfo]| {
            let mut v: Vec<_> = backed_by_reusing(dev, ino, known)
                .unwrap()
                .into_iter()
                .map(|l| l.path)
                .collect();
            v.sort();
            v
        };
        assert_eq!(fast(&[]), want);
        // A status the caller has just read is used, not asked for again.
        assert_eq!(fast(std::slice::from_ref(&rw.info)), want);
        let elsewhere = LoopInfo {
            backing_ino: ino + 1,
            ..rw.info.clone()
        };
        assert_eq!(fast(&[elsewhere]), vec![ro.info.path.clone()]);

        // Wrong inode: refused, still bound.
        assert!(!detach_if_backed_by(&rw.info.path, dev, ino + 1).unwrap());
        assert!(status(&rw.info.path).unwrap().is_some());
        // Right one: detached.
        assert!(detach_if_backed_by(&rw.info.path, dev, ino).unwrap());
        assert_eq!(status(&rw.info.path).unwrap(), None);
        // Twice is fine.
        detach(&rw.info.path).unwrap();
        detach(&rw.info.path).unwrap();
        assert!(!detach_if_backed_by(&rw.info.path, dev, ino).unwrap());

        detach(&ro.info.path).unwrap();
        assert!(backed_by(dev, ino).unwrap().is_empty());
    }

    #[test]
    fn empty_backing_file_is_found() {
        require_root();
        let img = TempImage::new();
        img.file.set_len(0).unwrap();
        let (dev, ino) = img.id();
        // A listing just before: the binding must not be hidden by it.
        assert!(backed_by(dev, ino).unwrap().is_empty());
        let a = Attached::new(&img, &img.file, false, b"xenblock-test empty");
        // Bound with no sector yet: absent from /proc/partitions, found all
        // the same (the file may grow under its writer).
        assert!(backed_by(dev, ino)
            .unwrap()
            .iter()
            .any(|l| l.path == a.info.path));
        assert!(backed_by_reusing(dev, ino, &[])
            .unwrap()
            .iter()
            .any(|l| l.path == a.info.path));
    }

    #[test]
    fn a_rebound_device_gets_a_new_diskseq() {
        require_root();
        let img = TempImage::new();
        let a = Attached::new(&img, &img.file, true, b"xenblock-test seq");
        let first = a.info.diskseq.expect("this kernel reports diskseq");
        assert_eq!(status(&a.info.path).unwrap().unwrap().diskseq, Some(first));
        assert!(detach(&a.info.path).is_ok());
        let b = Attached::new(&img, &img.file, true, b"xenblock-test seq");
        assert_ne!(b.info.diskseq, Some(first), "{:?}", b.info);
    }

    #[test]
    fn read_only_file_and_long_tag() {
        require_root();
        let img = TempImage::new();
        let ro_file = stat::open_target(&img.path, false).unwrap();
        let tag = [b'x'; 100];
        let a = Attached::new(&img, &ro_file, true, &tag);
        assert!(a.info.read_only);
        assert_eq!(a.info.file_name, vec![b'x'; 63]);
    }

    #[test]
    fn concurrent_attaches_get_distinct_devices() {
        require_root();
        let img = TempImage::new();
        let devs: Vec<Attached> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| Attached::new(&img, &img.file, true, b"xenblock-test par")))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut nums: Vec<u32> = devs.iter().map(|a| a.info.number).collect();
        nums.sort_unstable();
        nums.dedup();
        assert_eq!(nums.len(), 4);
    }

    #[test]
    fn not_loop_devices() {
        assert_eq!(status(Path::new("/dev/loop-does-not-exist")).unwrap(), None);
        assert!(status(Path::new("/dev/null")).is_err());
        assert!(!detach_if(Path::new("/dev/loop-does-not-exist"), |_| true).unwrap());
        assert_eq!(loop_number(OsStr::new("loop12")), Some(12));
        assert_eq!(loop_number(OsStr::new("loop")), None);
        assert_eq!(loop_number(OsStr::new("loop-control")), None);
        assert_eq!(loop_number(OsStr::new("loop1p2")), None);
    }
}
