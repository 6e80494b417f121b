//! The one error type of xenblock, and its mapping to the C status codes.
use std::fmt;

/// What kind of failure an [`Error`] is; maps 1:1 to a C status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something malformed (NUL bytes, relative path, bad mode...).
    InvalidArgument,
    /// The disk target (or another required thing) does not exist.
    NotFound,
    /// The sharing rule refused the request (`hotplug-status busy`).
    Busy,
    /// xenstore answered with an error or the connection failed.
    Store,
    /// A custom hotplug script failed.
    Script,
    /// A bounded wait ran out (script, xenstore reply, lock).
    Timeout,
    /// The backend is not in a state where the request makes sense.
    BadState,
    /// The operating system refused for lack of privilege.
    Permission,
    /// An I/O or system call failed.
    Io,
    /// The request is valid but not supported by this flavour or build.
    Unsupported,
    /// A bug in xenblock (including a caught panic).
    Internal,
    /// Asked not to wait, and the hotplug lock is taken: nothing was done;
    /// try again later. Not a refusal by the sharing rule.
    WouldBlock,
    /// An op queued but not started when its context was freed: nothing
    /// was done.
    Cancelled,
}

/// A xenstore error, carrying the protocol's error name (`ENOENT`, `EAGAIN`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsErrno {
    /// The errno value (Linux numbering), or `libc::EIO` when the name is unknown.
    pub errno: i32,
    /// The name xenstored sent (or the name of `errno`).
    pub name: String,
}

impl XsErrno {
    /// An error from its errno value.
    pub fn from_errno(errno: i32) -> XsErrno {
        let name = crate::store::wire::errno_name(errno).unwrap_or("EIO");
        XsErrno {
            errno,
            name: name.to_string(),
        }
    }
    /// An error from the name xenstored sent.
    pub fn from_name(name: &str) -> XsErrno {
        XsErrno {
            errno: crate::store::wire::errno_from_name(name).unwrap_or(libc::EIO),
            name: name.to_string(),
        }
    }
    /// True for `EAGAIN` (a transaction conflict).
    pub fn is_again(&self) -> bool {
        self.errno == libc::EAGAIN
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)
    }
}

/// Every failure xenblock reports. Messages are for people: they say what was
/// asked, what was found and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Busy(String),
    #[error("xenstore {op} {path}: {errno}{}", detail_suffix(.detail))]
    Store {
        op: &'static str,
        path: String,
        errno: XsErrno,
        detail: String,
    },
    #[error("{0}")]
    StoreProtocol(String),
    #[error("{0}")]
    Script(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    BadState(String),
    #[error("{}", io_text(.context, .source, *.explained))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
        /// The context already says why in words; the OS's text is not repeated.
        explained: bool,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    WouldBlock(String),
    #[error("{0}")]
    Cancelled(String),
}

/// `context: reason`, where the reason is the OS's text without the
/// "(os error N)" tail; when the context already says why
/// ([`Error::io_explained`]), the OS's text is left out rather than said twice.
fn io_text(context: &str, source: &std::io::Error, explained: bool) -> String {
    if explained {
        return context.to_string();
    }
    let os = source.to_string();
    let os = match os.rfind(" (os error ") {
        Some(i) if os.ends_with(')') => os[..i].to_string(),
        _ => os,
    };
    format!("{context}: {os}")
}

fn detail_suffix(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kind of this error (and so its C status code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Busy(_) => ErrorKind::Busy,
            Error::Store { errno, .. } if errno.errno == libc::ETIMEDOUT => ErrorKind::Timeout,
            Error::Store { .. } | Error::StoreProtocol(_) => ErrorKind::Store,
            Error::Script(_) => ErrorKind::Script,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::BadState(_) => ErrorKind::BadState,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::Permission,
                Some(libc::ENOENT) => ErrorKind::NotFound,
                _ => ErrorKind::Io,
            },
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Internal(_) => ErrorKind::Internal,
            Error::WouldBlock(_) => ErrorKind::WouldBlock,
            Error::Cancelled(_) => ErrorKind::Cancelled,
        }
    }

    /// An I/O error with a sentence of context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
            explained: false,
        }
    }

    /// An I/O error whose sentence already says why (e.g. "...: it is on a
    /// read-only filesystem"); its message does not repeat the OS's text.
    pub fn io_explained(sentence: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: sentence.into(),
            source,
            explained: true,
        }
    }

    /// An I/O error from a nix errno.
    pub fn sys(context: impl Into<String>, errno: nix::errno::Errno) -> Error {
        Error::io(context, std::io::Error::from_raw_os_error(errno as i32))
    }

    /// A xenstore error reply.
    pub fn store(op: &'static str, path: &str, errno: XsErrno) -> Error {
        Error::Store {
            op,
            path: path.to_string(),
            errno,
            detail: String::new(),
        }
    }

    /// The xenstore errno of this error, if it is one.
    pub fn xs_errno(&self) -> Option<i32> {
        match self {
            Error::Store { errno, .. } => Some(errno.errno),
            _ => None,
        }
    }

    /// True when this is a xenstore `EAGAIN` (transaction conflict).
    pub fn is_again(&self) -> bool {
        self.xs_errno() == Some(libc::EAGAIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_say_the_reason_once() {
        let e = Error::io_explained(
            "cannot open /x rw: it is on a read-only filesystem",
            std::io::Error::from_raw_os_error(libc::EROFS),
        );
        assert_eq!(
            e.to_string(),
            "cannot open /x rw: it is on a read-only filesystem"
        );
        let e = Error::io(
            "cannot attach /x",
            std::io::Error::from_raw_os_error(libc::EROFS),
        );
        assert_eq!(e.to_string(), "cannot attach /x: Read-only file system");
    }
}
