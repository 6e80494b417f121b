//! `stat` and opening disk targets, portable between Linux and FreeBSD.
//!
//! Numbers come straight from the kernel (`st_dev`, `st_ino`, `st_rdev`);
//! nothing here formats or parses text.
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::stat as nstat;

use crate::error::{Error, Result};

/// The type of a file, as far as xenblock cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A block device.
    Block,
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// Anything else (character device, socket, fifo, symlink for `lstat`).
    Other,
}

/// The parts of `struct stat` that xenblock uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Device of the filesystem holding the file (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
    /// Device number for device files (`st_rdev`), else 0.
    pub rdev: u64,
    /// `st_mode`: permission bits and file type bits.
    pub mode: u32,
    /// The file type decoded from `mode`.
    pub kind: FileKind,
}

impl FileStat {
    // Field widths differ between platforms (FreeBSD: 16-bit mode, ...), so
    // the casts are needed there even where they are no-ops here.
    #[allow(clippy::unnecessary_cast)]
    fn from_nix(st: &nstat::FileStat) -> FileStat {
        let mode = st.st_mode as u32;
        let kind = match mode & (libc::S_IFMT as u32) {
            m if m == libc::S_IFBLK as u32 => FileKind::Block,
            m if m == libc::S_IFREG as u32 => FileKind::Regular,
            m if m == libc::S_IFDIR as u32 => FileKind::Directory,
            _ => FileKind::Other,
        };
        FileStat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            rdev: st.st_rdev as u64,
            mode,
            kind,
        }
    }
}

/// The error for a failed `stat`/`lstat` of `path`.
fn stat_error(call: &str, path: &Path, errno: Errno) -> Error {
    match errno {
        Errno::ENOENT => Error::NotFound(format!("{} does not exist", path.display())),
        Errno::ENOTDIR => Error::NotFound(format!(
            "{} does not exist (a component of the path is not a directory)",
            path.display()
        )),
        e => Error::sys(format!("cannot {call} {}", path.display()), e),
    }
}

/// `stat(2)`: the file `path` names, following symbolic links.
pub fn stat(path: &Path) -> Result<FileStat> {
    nstat::stat(path)
        .map(|st| FileStat::from_nix(&st))
        .map_err(|e| stat_error("stat", path, e))
}

/// `lstat(2)`: like [`stat`] but a symbolic link is described itself.
pub fn lstat(path: &Path) -> Result<FileStat> {
    nstat::lstat(path)
        .map(|st| FileStat::from_nix(&st))
        .map_err(|e| stat_error("lstat", path, e))
}

/// `fstat(2)` of an open descriptor.
pub fn fstat(fd: BorrowedFd<'_>) -> Result<FileStat> {
    nstat::fstat(fd.as_raw_fd())
        .map(|st| FileStat::from_nix(&st))
        .map_err(|e| {
            Error::sys(
                format!("cannot fstat file descriptor {}", fd.as_raw_fd()),
                e,
            )
        })
}

/// Open a disk target once, read-only or read-write, with `O_CLOEXEC` and
/// `O_NOCTTY`; use the descriptor for everything after (stat, loop attach) so
/// the file cannot be swapped underneath.
pub fn open_target(path: &Path, write: bool) -> Result<File> {
    let how = if write { "read-write" } else { "read-only" };
    // std's open always adds O_CLOEXEC. O_NOFOLLOW: callers pass a canonical
    // path, so a symlink in its last component now means it was swapped.
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let p = path.display();
            match e.raw_os_error() {
                Some(libc::ELOOP) => Error::InvalidArgument(format!(
                    "cannot open {p}: it became a symbolic link after it was resolved; refusing"
                )),
                Some(libc::ENOENT) => {
                    Error::NotFound(format!("cannot open {p}: it does not exist"))
                }
                Some(libc::ENOTDIR) => Error::NotFound(format!(
                    "cannot open {p}: it does not exist (a component of the path is not a directory)"
                )),
                Some(libc::EACCES) | Some(libc::EPERM) => Error::io_explained(
                    format!("cannot open {p} {how}: permission denied"),
                    e,
                ),
                Some(libc::EROFS) => Error::io_explained(
                    format!("cannot open {p} {how}: it is on a read-only filesystem"),
                    e,
                ),
                Some(libc::ETXTBSY) => Error::io_explained(
                    format!("cannot open {p} {how}: it is a running program or an active swap file"),
                    e,
                ),
                Some(libc::EISDIR) => {
                    Error::InvalidArgument(format!("cannot open {p} {how}: it is a directory"))
                }
                Some(libc::ENXIO) | Some(libc::ENODEV) => Error::NotFound(format!(
                    "cannot open {p}: the device it names is not present"
                )),
                _ => Error::io(format!("cannot open {p} {how}"), e),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn kinds() {
        assert_eq!(stat(Path::new("/")).unwrap().kind, FileKind::Directory);
        assert_eq!(stat(Path::new("/dev/null")).unwrap().kind, FileKind::Other);
        let me = std::env::current_exe().unwrap();
        let st = stat(&me).unwrap();
        assert_eq!(st.kind, FileKind::Regular);
        let f = open_target(&me, false).unwrap();
        let fst = fstat(f.as_fd()).unwrap();
        assert_eq!((fst.dev, fst.ino), (st.dev, st.ino));
    }

    #[test]
    fn missing_is_not_found() {
        let p = Path::new("/nonexistent/xenblock-test");
        let e = stat(p).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(e.to_string().contains("/nonexistent/xenblock-test"), "{e}");
        let e = open_target(p, true).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(lstat(p).is_err());
    }

    #[test]
    fn directory_is_refused() {
        let e = open_target(Path::new("/"), true).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }
}
