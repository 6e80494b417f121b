//! A `/proc` file kept open and read again only when it has changed.
//!
//! `/proc/self/mountinfo` (and `mounts`) and `/proc/swaps` tell `poll(2)` of
//! a change with `POLLPRI` (proc(5)): a mount or unmount in the process's
//! mount namespace, a `swapon` or `swapoff`. Generating them is not cheap
//! (about 30 µs for a small dom0's mount table on the bench VM, where the
//! whole long-lived prepare takes about 270 µs), and every decision of the
//! sharing rule needs both; a context that makes many decisions reads each
//! once, then again only after a change.
//!
//! The kernel compares an event counter with the one it recorded for this
//! open file at its last report: a change made after the last read is
//! reported at the next poll, and a change made between a report and the
//! read that follows it is in that read. So the text returned is never
//! older than the poll made for it: the same guarantee as reading the file.
//!
//! Any other file (a test's fixed tree) has no such events and is read
//! every time.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One watched file.
pub struct Watched {
    path: PathBuf,
    /// The open file, when it is a procfs file whose changes `poll` reports
    /// (listed for a forked child under `owner`: `sys::fdreg`).
    file: Option<crate::sys::fdreg::Tracked<File>>,
    text: String,
    owner: u32,
}

impl Watched {
    /// Nothing is opened until the first [`Watched::text`].
    pub fn new(path: impl Into<PathBuf>) -> Watched {
        Watched::new_owned(path, 0)
    }

    /// The same, its descriptor listed under `owner` (`sys::fdreg`).
    pub fn new_owned(path: impl Into<PathBuf>, owner: u32) -> Watched {
        Watched {
            path: path.into(),
            file: None,
            text: String::new(),
            owner,
        }
    }

    /// The path watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text as of now.
    pub fn text(&mut self) -> io::Result<&str> {
        let fresh = match &mut self.file {
            Some(f) => {
                if !changed(f)? {
                    return Ok(&self.text);
                }
                f.seek(SeekFrom::Start(0))?;
                read_all(f)
            }
            None => {
                let mut f = File::open(&self.path)?;
                let text = read_all(&mut f);
                if is_proc(&f) {
                    self.file = Some(crate::sys::fdreg::Tracked::new(self.owner, f));
                }
                text
            }
        };
        match fresh {
            Ok(t) => {
                self.text = t;
                Ok(&self.text)
            }
            Err(e) => {
                // Read again from scratch next time.
                self.file = None;
                Err(e)
            }
        }
    }
}

/// Whether `poll` reports a change of `f` since its last report.
fn changed(f: &File) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the call; a zero timeout returns
    // at once; the descriptor stays open, borrowed from `f`.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(p.revents & (libc::POLLPRI | libc::POLLERR | libc::POLLNVAL) != 0)
}

fn is_proc(f: &File) -> bool {
    nix::sys::statfs::fstatfs(f)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

/// A `/proc` file's whole text, read into a buffer of one page that
/// doubles when a read fills it (`read_to_end` would first ask for a size
/// that `/proc` files do not give). One page holds a small dom0's mount
/// table, and a one-shot command pays a page fault for every page it
/// touches: the 16 KiB this started with cost it 9 faults for the mount
/// table, `/proc/swaps` and `/proc/partitions`.
pub(crate) fn read_all(f: &mut File) -> io::Result<String> {
    let mut buf = vec![0u8; 4 << 10];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_change_events_is_read_every_time() {
        let dir = std::env::temp_dir().join(format!("xenblock-procfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("mountinfo");
        std::fs::write(&p, "one\n").unwrap();
        let mut w = Watched::new(&p);
        assert_eq!(w.text().unwrap(), "one\n");
        std::fs::write(&p, "two\n").unwrap();
        assert_eq!(w.text().unwrap(), "two\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mountinfo_is_kept_open_and_unchanged_text_is_reused() {
        let mut w = Watched::new("/proc/self/mountinfo");
        let first = w.text().unwrap().to_string();
        assert!(w.file.is_some(), "procfs mountinfo was not kept open");
        assert!(first.contains(" / "), "{first}");
        assert_eq!(w.text().unwrap(), first);
    }
}
