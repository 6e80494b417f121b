//! The kernel's disk sequence number (`BLKGETDISKSEQ`, Linux >= 5.15): a
//! 64-bit number that the kernel never gives to two disks in one boot, so a
//! major:minor that was freed and reused (a loop device detached and
//! attached again) is told apart from the device it was before.
//!
//! Written to a backend as `diskseq`: lowercase hex without `0x` or leading
//! zeros, the form xen-blkback's diskseq patches and Qubes' block script use.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;

use crate::error::{Error, Result};

// `_IOR(0x12, 128, __u64)` of linux/fs.h.
nix::ioctl_read!(blk_get_diskseq, 0x12, 128, u64);

/// The diskseq of the open block device `dev` (whose node is `shown`);
/// `None` when the kernel has none (ENOTTY/EINVAL: before Linux 5.15, or a
/// device without one).
pub fn of_file(dev: &File, shown: &Path) -> Result<Option<u64>> {
    let mut seq: u64 = 0;
    // SAFETY: `dev` is an open descriptor for the call's duration and `seq`
    // is a valid, writable u64 that the kernel fills in.
    match unsafe { blk_get_diskseq(dev.as_raw_fd(), &mut seq) } {
        Ok(_) if seq != 0 => Ok(Some(seq)),
        Ok(_) | Err(Errno::ENOTTY) | Err(Errno::EINVAL) => Ok(None),
        Err(e) => Err(Error::sys(
            format!(
                "cannot read the disk sequence number of {}",
                shown.display()
            ),
            e,
        )),
    }
}

/// The diskseq of the block device at `path`, which a `stat` found to be
/// device `rdev`: opened read-only (no udev re-probe on close) and checked
/// to be that same device. `None` when the kernel has none or the device
/// cannot be opened (no medium): prepare then records none, as before.
pub fn of_device(path: &Path, rdev: u64) -> Result<Option<u64>> {
    use std::os::unix::fs::OpenOptionsExt;
    let dev = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    let st = super::stat::fstat(std::os::fd::AsFd::as_fd(&dev))?;
    if st.kind != super::stat::FileKind::Block || st.rdev != rdev {
        return Err(Error::BadState(format!(
            "{} changed while it was being prepared (it is no longer the device it was a \
             moment ago); try again",
            path.display()
        )));
    }
    of_file(&dev, path)
}

/// The diskseq of the device numbered `d` now, from sysfs
/// (`/sys/dev/block/M:m/diskseq`, decimal); `None` when there is no such
/// device or the kernel shows none.
pub fn of_number(d: crate::sharing::DevNum) -> Option<u64> {
    let p = format!("/sys/dev/block/{}:{}/diskseq", d.major, d.minor);
    let mut buf = [0u8; 32];
    let n = std::io::Read::read(&mut File::open(p).ok()?, &mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The form of a diskseq in a backend's `diskseq` node.
pub fn format(seq: u64) -> String {
    format!("{seq:x}")
}

/// A `diskseq` node's value; `None` when it is not one this module writes
/// (hex digits, no leading zero, at most 16 digits, not zero).
pub fn parse(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() || t.len() > 16 || t.starts_with('0') {
        return None;
    }
    if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(t, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse() {
        assert_eq!(format(0x3eb), "3eb");
        assert_eq!(format(u64::MAX), "ffffffffffffffff");
        assert_eq!(parse("3eb"), Some(0x3eb));
        assert_eq!(parse("3EB"), Some(0x3eb));
        assert_eq!(parse(" 3eb\n"), Some(0x3eb));
        for bad in ["", "0", "03eb", "0x3eb", "1ffffffffffffffff", "zz", "-1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn not_a_block_device() {
        let f = File::open("/dev/null").unwrap();
        assert_eq!(of_file(&f, Path::new("/dev/null")).unwrap(), None);
    }
}
