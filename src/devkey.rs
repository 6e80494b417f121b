//! What identifies storage: a device number, or a file's (st_dev, st_ino).
//! A leaf module: the sharing rule (`sharing`) and the block-device graph
//! (`topology`) both name storage by these, and neither depends on the other
//! for it. `sharing` re-exports both types.
use std::fmt;

/// A device number, `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// From a kernel `dev_t`.
    pub fn from_dev_t(dev: u64) -> DevNum {
        DevNum {
            major: (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32,
            minor: (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32,
        }
    }
    /// To a kernel `dev_t`.
    pub fn to_dev_t(self) -> u64 {
        let (ma, mi) = (self.major as u64, self.minor as u64);
        ((ma & 0xffff_f000) << 32)
            | ((ma & 0x0000_0fff) << 8)
            | ((mi & 0xffff_ff00) << 12)
            | (mi & 0xff)
    }
    /// Parse xenstore's `physical-device` form: hex `major:minor` (`7:0`, `fd:3`).
    pub fn parse_hex(s: &str) -> Option<DevNum> {
        let (a, b) = s.trim().split_once(':')?;
        let p = |x: &str| {
            if x.is_empty() || x.len() > 8 || !x.bytes().all(|c| c.is_ascii_hexdigit()) {
                None
            } else {
                u32::from_str_radix(x, 16).ok()
            }
        };
        Some(DevNum {
            major: p(a)?,
            minor: p(b)?,
        })
    }
    /// Parse mountinfo's decimal `major:minor`.
    pub fn parse_decimal(s: &str) -> Option<DevNum> {
        let (a, b) = s.split_once(':')?;
        Some(DevNum {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

/// Lower-case hex, no leading zeros: the `physical-device` format.
impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{:x}", self.major, self.minor)
    }
}

/// What identifies the storage a backend uses: a device number (Linux:
/// `physical-device`; for files, the loop devices over them), or a file's
/// (st_dev, st_ino) (FreeBSD flavour, where blkback opens files directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Dev(DevNum),
    File { dev: u64, ino: u64 },
}

/// `7:0` for a device key; `inode 1234 on device 8:1` for a file key (the
/// file's `st_dev` shown as `major:minor` in hex, like `physical-device`).
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Dev(d) => write!(f, "{d}"),
            Key::File { dev, ino } => {
                write!(f, "inode {ino} on device {}", DevNum::from_dev_t(*dev))
            }
        }
    }
}
