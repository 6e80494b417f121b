//! The sharing rule: a file or device given to one VM read-write is given to
//! no other VM. A pure function over gathered facts, so it is testable
//! without root, loop devices or xenstore.
//! (Types are fixed here; the rule itself is implemented below.)
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
        ((ma & 0xffff_f000) << 32) | ((ma & 0x0000_0fff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
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
        Some(DevNum { major: p(a)?, minor: p(b)? })
    }
    /// Parse mountinfo's decimal `major:minor`.
    pub fn parse_decimal(s: &str) -> Option<DevNum> {
        let (a, b) = s.split_once(':')?;
        Some(DevNum { major: a.parse().ok()?, minor: b.parse().ok()? })
    }
}

/// Lower-case hex, no leading zeros: the `physical-device` format.
impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{:x}", self.major, self.minor)
    }
}

/// A canonical access mode (DESIGN §2): no `w` → Read; `w` and `!` → Force
/// (no checks); otherwise Write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Read,
    Write,
    Force,
}

impl Mode {
    /// Canonicalise a raw `mode` node value.
    pub fn canonicalise(raw: &str) -> Mode {
        if !raw.contains('w') {
            Mode::Read
        } else if raw.contains('!') {
            Mode::Force
        } else {
            Mode::Write
        }
    }
    /// "read-only", "read-write" or "read-write without checks".
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Read => "read-only",
            Mode::Write => "read-write",
            Mode::Force => "read-write (forced, no sharing checks)",
        }
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

/// Who a frontend domain is, for the same-VM exception.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmIdentity {
    /// `/local/domain/<id>/vm` of the frontend domain.
    pub vm: Option<String>,
    /// `/local/domain/<t>/vm` where `t` = `/local/domain/<id>/target`
    /// (the frontend is a device-model stub domain serving `t`).
    pub target_vm: Option<String>,
}

/// The attach being asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// Backend path of the request, as given.
    pub backend: String,
    /// The target as a person knows it (resolved file or device path).
    pub target: String,
    /// Canonical requested mode.
    pub mode: Mode,
    /// Frontend identity.
    pub identity: VmIdentity,
    /// The set D: every key that carries the target.
    pub keys: Vec<Key>,
}

/// Another backend's claim on some storage.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Its backend path (e.g. `backend/vbd/7/51712`).
    pub backend: String,
    /// The frontend domain id (the `backend/vbd/<domid>` directory name).
    pub domid: String,
    /// What it holds.
    pub key: Key,
    /// Its canonical mode.
    pub mode: Mode,
    /// Its frontend's identity.
    pub identity: VmIdentity,
}

/// A mounted filesystem in the backend domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: DevNum,
    pub mount_point: String,
    pub read_only: bool,
}

/// Why an attach is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Mounted in the backend domain.
    Local { dev: DevNum, mount_point: String, read_only: bool },
    /// Held by another VM's backend.
    Guest { backend: String, domid: String, key: Key, mode: Mode },
}
