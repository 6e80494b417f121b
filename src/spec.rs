//! Reading a backend directory and deciding what to do with it.
//!
//! Everything xenblock needs is read from xenstore (in one pipelined batch),
//! so `release` works from another process than `prepare`.

use crate::error::{Error, Result};
use crate::sharing::Mode;
use crate::store::{self, Store, TxId};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The standard script that xenblock replaces in-process.
pub const STANDARD_SCRIPT: &str = "block";

/// The nodes of a backend directory xenblock looks at.
#[derive(Debug, Clone, Default)]
pub struct Backend {
    /// The backend path as given (absolute, or relative to the caller's home).
    pub path: String,
    /// `params`: the disk target, verbatim.
    pub params: Option<Vec<u8>>,
    /// `mode`, raw.
    pub mode_raw: Option<String>,
    /// `script`.
    pub script: Option<String>,
    /// `type`.
    pub dev_type: Option<String>,
    /// `frontend-id`.
    pub frontend_id: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `physical-device` (present once prepared).
    pub physical_device: Option<String>,
    /// `physical-device-path`.
    pub physical_device_path: Option<String>,
    /// `node` (the loop device of a file target).
    pub node: Option<String>,
    /// `diskseq`: the kernel's disk sequence number of the device handed
    /// to the guest, in hex, as prepare recorded it (see `sys::diskseq`).
    pub diskseq: Option<String>,
}

const NODES: &[&str] = &[
    "params",
    "mode",
    "script",
    "type",
    "frontend-id",
    "state",
    "physical-device",
    "physical-device-path",
    "node",
    "diskseq",
];

/// Check and normalise a backend path given by a caller.
pub fn normalise_path(path: &str) -> Result<String> {
    let p = path.trim_end_matches('/');
    if p.is_empty() {
        return Err(Error::InvalidArgument(
            "the backend path is empty; expected e.g. backend/vbd/<domid>/<devid>".into(),
        ));
    }
    store::validate_path(p)?;
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err(Error::InvalidArgument(format!(
            "backend path {} contains '.' or '..' components",
            quoted(p)
        )));
    }
    Ok(p.to_string())
}

/// The check every call that acts on a backend makes first, with that
/// call's reads: `path` (normalised) has the shape of a device backend,
/// `<root>/<domid>/<devid>` with numeric ids, and the directory exists in
/// the store, so that a wrong path (a domain's directory, the root, a leaf
/// such as `.../params`) fails before anything is written. The directory's
/// own node is read in the same round trip as its `nodes`, whose values
/// come back in order.
fn read_existing(store: &dyn Store, path: &str, nodes: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
    let paths = existing_reads(path, nodes)?;
    existing_values(path, store.read_many(store::NO_TX, &paths)?)
}

/// The reads of [`read_existing`]: the directory itself, then `nodes`.
fn existing_reads(path: &str, nodes: &[&str]) -> Result<Vec<String>> {
    check_backend_shape(path)?;
    let mut paths = Vec::with_capacity(nodes.len() + 1);
    paths.push(path.to_string());
    paths.extend(nodes.iter().map(|n| format!("{path}/{n}")));
    Ok(paths)
}

/// The values of `nodes` from the answers to [`existing_reads`], or the
/// error for a missing backend.
fn existing_values(path: &str, mut v: Vec<Option<Vec<u8>>>) -> Result<Vec<Option<Vec<u8>>>> {
    if v.first().is_none_or(Option::is_none) {
        return Err(no_backend(path));
    }
    v.remove(0);
    Ok(v)
}

/// The backend check and the backend's `script` node, in one round trip.
pub fn read_script_of_existing(store: &dyn Store, path: &str) -> Result<Option<String>> {
    let script = read_existing(store, path, &["script"])?.pop().flatten();
    Ok(script.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn no_backend(path: &str) -> Error {
    Error::NotFound(format!(
        "there is no backend at {path}; check the path (e.g. backend/vbd/<domid>/<devid>) \
         and that the toolstack has written the backend"
    ))
}

/// The shape half of the backend check (release accepts a backend that is
/// already gone: it is idempotent).
pub fn check_backend_shape(path: &str) -> Result<()> {
    let shape = || {
        Error::InvalidArgument(format!(
            "{} is not a device backend path: expected <root>/<domid>/<devid> with \
             numeric ids, e.g. backend/vbd/7/51712",
            quoted(path)
        ))
    };
    let mut it = path.rsplitn(3, '/');
    let (dev, dom, root) = (it.next(), it.next(), it.next());
    let numeric = |c: Option<&str>| {
        c.is_some_and(|c| !c.is_empty() && c.len() <= 10 && c.bytes().all(|b| b.is_ascii_digit()))
    };
    if !numeric(dev) || !numeric(dom) || root.is_none_or(|r| r.is_empty() || r == "/") {
        return Err(shape());
    }
    Ok(())
}

impl Backend {
    /// Read the backend directory at `path` (already normalised).
    pub fn read(store: &dyn Store, tx: TxId, path: &str) -> Result<Backend> {
        let paths: Vec<String> = NODES.iter().map(|n| format!("{path}/{n}")).collect();
        Ok(Backend::from_values(path, store.read_many(tx, &paths)?))
    }

    /// The reads of [`Backend::read_existing`], for a caller that sends
    /// them with requests of its own; [`Backend::from_existing`] takes their
    /// answers, in order.
    pub fn existing_reads(path: &str) -> Result<Vec<String>> {
        existing_reads(path, NODES)
    }

    /// [`Backend::read_existing`] from the answers to
    /// [`Backend::existing_reads`].
    pub fn from_existing(path: &str, answers: Vec<Option<Vec<u8>>>) -> Result<Backend> {
        Ok(Backend::from_values(path, existing_values(path, answers)?))
    }

    /// The backend check and [`Backend::read`] in one round trip.
    pub fn read_existing(store: &dyn Store, path: &str) -> Result<Backend> {
        Ok(Backend::from_values(
            path,
            read_existing(store, path, NODES)?,
        ))
    }

    /// A backend from the values of [`NODES`], in order.
    fn from_values(path: &str, values: Vec<Option<Vec<u8>>>) -> Backend {
        let mut v = values.into_iter();
        let params = v.next().flatten();
        let mut text = || {
            v.next()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Backend {
            path: path.to_string(),
            params,
            mode_raw: text(),
            script: text(),
            dev_type: text(),
            frontend_id: text(),
            state: text(),
            physical_device: text(),
            physical_device_path: text(),
            node: text(),
            diskseq: text(),
        }
    }

    /// Canonical mode (missing mode reads as read-only, the safe side).
    pub fn mode(&self) -> Mode {
        Mode::canonicalise(self.mode_raw.as_deref().unwrap_or(""))
    }

    /// The `params` target as a path, checked: not empty, no NUL, sane length.
    pub fn target(&self) -> Result<PathBuf> {
        let raw = self.params.as_deref().unwrap_or(b"");
        if raw.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: no target: 'params' is {}; the disk spec needs target=<file or device>",
                self.path,
                if self.params.is_none() {
                    "missing"
                } else {
                    "empty"
                }
            )));
        }
        if raw.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "{}: the target in 'params' contains a NUL byte",
                self.path
            )));
        }
        if raw.len() > libc::PATH_MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "{}: the target in 'params' is {} bytes long, longer than any path (PATH_MAX {})",
                self.path,
                raw.len(),
                libc::PATH_MAX
            )));
        }
        Ok(PathBuf::from(OsStr::from_bytes(raw)))
    }

    /// The frontend domain id, required for the same-VM rule.
    pub fn frontend_domid(&self) -> Result<u32> {
        let raw = self.frontend_id.as_deref().unwrap_or("");
        raw.trim().parse::<u32>().map_err(|_| {
            Error::InvalidArgument(format!(
                "{}: 'frontend-id' is {}; it must be the frontend's domain id",
                self.path,
                if self.frontend_id.is_none() {
                    "missing".to_string()
                } else {
                    quoted(raw)
                }
            ))
        })
    }
}

/// Who handles a backend: xenblock itself, or a custom hotplug script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// `script` absent, or Xen's standard `block` script: done in-process.
    InProcess,
    /// A custom script: its name as written in `script`.
    Script(String),
}

/// Decide from the `script` node. Only Xen's own script is done
/// in-process: `block` in the configured `script_dir` (named bare, relative,
/// or by its full path), or the drop-in's own path (`drop_in`, when this
/// program runs as `block` from somewhere else). A site's own script that
/// happens to be called `block` elsewhere (`/srv/hooks/block`) is run.
/// Paths compare by their components, so `//` and a trailing `/.` do not
/// matter; `..` and symbolic links are not resolved (such a name is run).
pub fn handler(script: Option<&str>, script_dir: &Path, drop_in: Option<&Path>) -> Handler {
    let Some(s) = script.map(str::trim).filter(|s| !s.is_empty()) else {
        return Handler::InProcess;
    };
    let named = Path::new(s);
    let full = if named.is_absolute() {
        named.to_path_buf()
    } else {
        script_dir.join(named)
    };
    if full == script_dir.join(STANDARD_SCRIPT) || drop_in.is_some_and(|d| full == d) {
        Handler::InProcess
    } else {
        Handler::Script(s.to_string())
    }
}

/// Parent of the parent: `backend/vbd/7/51712` → `backend/vbd`.
pub fn backend_root(path: &str) -> Result<&str> {
    let mut it = path.rsplitn(3, '/');
    let (_dev, _dom, root) = (it.next(), it.next(), it.next());
    match root {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(Error::InvalidArgument(format!(
            "backend path {} is not of the form <root>/<domid>/<devid> \
             (e.g. backend/vbd/7/51712)",
            quoted(path)
        ))),
    }
}

/// `s` in double quotes for a message, as a C programmer would write it:
/// control bytes as `\n`, `\t`, `\r` or `\xNN`, quotes and backslashes
/// escaped, everything else (UTF-8 included) as it is. Never a Rust Debug
/// form (`\u{..}`).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_control_bytes_as_c_does() {
        assert_eq!(quoted("a/b"), "\"a/b\"");
        assert_eq!(quoted("x\ny\tz\u{1}\u{7f}"), "\"x\\ny\\tz\\x01\\x7f\"");
        assert_eq!(quoted("q\"\\é"), "\"q\\\"\\\\é\"");
        let e = check_backend_shape("backend/vbd/\u{1b}[31m")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("\"backend/vbd/\\x1b[31m\" is not"), "{e}");
    }

    #[test]
    fn handler_choice() {
        let dir = Path::new("/etc/xen/scripts");
        let h = |s| handler(s, dir, None);
        assert_eq!(h(None), Handler::InProcess);
        assert_eq!(h(Some("")), Handler::InProcess);
        assert_eq!(h(Some("/etc/xen/scripts/block")), Handler::InProcess);
        assert_eq!(h(Some("/etc/xen//scripts/block")), Handler::InProcess);
        assert_eq!(h(Some("block")), Handler::InProcess);
        assert_eq!(h(Some("./block")), Handler::InProcess);
        assert_eq!(
            h(Some("/etc/xen/scripts/block-iscsi")),
            Handler::Script("/etc/xen/scripts/block-iscsi".into())
        );
        // A site's own script called `block`, elsewhere, is run.
        for own in ["/srv/hooks/block", "/etc/xen/block", "hooks/block"] {
            assert_eq!(h(Some(own)), Handler::Script(own.into()), "{own}");
        }
        // Under another configured directory, that one's `block` is Xen's.
        let other = Path::new("/opt/xen/scripts");
        assert_eq!(
            handler(Some("/opt/xen/scripts/block"), other, None),
            Handler::InProcess
        );
        assert_eq!(
            handler(Some("/etc/xen/scripts/block"), other, None),
            Handler::Script("/etc/xen/scripts/block".into())
        );
        // The drop-in's own path.
        let me = Path::new("/usr/lib/xen/scripts/block");
        assert_eq!(
            handler(Some("/usr/lib/xen/scripts/block"), dir, Some(me)),
            Handler::InProcess
        );
    }

    #[test]
    fn roots_and_paths() {
        assert_eq!(backend_root("backend/vbd/7/51712").unwrap(), "backend/vbd");
        assert_eq!(
            backend_root("/local/domain/0/backend/vbd/7/51712").unwrap(),
            "/local/domain/0/backend/vbd"
        );
        assert!(backend_root("7/51712").is_err());
        assert_eq!(
            normalise_path("backend/vbd/1/2/").unwrap(),
            "backend/vbd/1/2"
        );
        assert!(normalise_path("backend/../x/1/2").is_err());
        assert!(normalise_path("").is_err());
        for good in ["backend/vbd/7/51712", "/local/domain/0/backend/vbd3/1/2"] {
            assert!(check_backend_shape(good).is_ok(), "{good}");
        }
        for bad in [
            "backend",
            "backend/vbd/4",
            "backend/vbd/4/51712/params",
            "7/51712",
            "/7/1",
        ] {
            assert!(check_backend_shape(bad).is_err(), "{bad}");
        }
    }
}
