//! Talking to xenstore: the [`Store`] trait and its implementations.
//!
//! - [`client::XsClient`]: the built-in client, xs_wire over the xenstored
//!   Unix socket or `/dev/xen/xenbus`.
//! - the C-callback store lives in `crate::ffi` (it calls C function pointers).
//!
//! Paths may be absolute (`/local/domain/0/backend/...`) or relative to the
//! connection's home (`backend/vbd/7/51712` = `/local/domain/<self>/backend/...`).

pub mod client;
pub mod wire;

use crate::error::{Error, Result};

/// A transaction id; [`NO_TX`] means "outside any transaction".
pub type TxId = u32;
/// Not inside a transaction.
pub const NO_TX: TxId = 0;

/// How many times [`with_transaction`] re-runs a transaction that commits with EAGAIN.
pub const DEFAULT_TX_ATTEMPTS: u32 = 16;

/// The operations xenblock needs from xenstore.
///
/// Reads of a missing node answer `Ok(None)`, not an error.
pub trait Store: Send + Sync {
    /// Read a node's value.
    fn read(&self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>>;
    /// Write a node (creating parents as xenstored does).
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<()>;
    /// Remove a node and its children; removing a missing node succeeds.
    fn remove(&self, tx: TxId, path: &str) -> Result<()>;
    /// List a node's children.
    fn directory(&self, tx: TxId, path: &str) -> Result<Option<Vec<String>>>;
    /// Start a transaction.
    fn transaction_start(&self) -> Result<TxId>;
    /// End a transaction: commit (`commit = true`) or abort. `Ok(false)` means
    /// the commit lost a race (EAGAIN) and nothing was applied.
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<bool>;

    /// Inside transaction `tx`: whether `check` exists, and if it does, write
    /// `writes` (path, value) in the same transaction. Pipelining stores
    /// send all of it in one round trip; the writes may then reach the
    /// transaction even when `check` is missing, which is harmless only
    /// because the caller aborts the transaction on `Ok(false)` — so a
    /// transaction is required.
    fn write_if_present(
        &self,
        tx: TxId,
        check: &str,
        writes: &[(String, Vec<u8>)],
    ) -> Result<bool> {
        require_tx(tx, check)?;
        if self.read(tx, check)?.is_none() {
            return Ok(false);
        }
        for (p, v) in writes {
            self.write(tx, p, v)?;
        }
        Ok(true)
    }

    /// Read many nodes. Implementations that can pipeline requests override this.
    fn read_many(&self, tx: TxId, paths: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        paths.iter().map(|p| self.read(tx, p)).collect()
    }

    /// Read many nodes, handing each value to `each` as it comes (in any
    /// order; a missing node as `None`) instead of keeping them all: a scan
    /// reads one node per disk on the host. Should the reads have to be
    /// sent again, `each` is told ([`Each::Again`]) before the values come
    /// again. An error other than a missing node fails the whole call.
    /// Pipelining implementations override this.
    fn read_each(&self, tx: TxId, paths: &[String], each: &mut dyn FnMut(Each<'_>)) -> Result<()> {
        for (i, v) in self.read_many(tx, paths)?.iter().enumerate() {
            each(Each::Value(i, v.as_deref()));
        }
        Ok(())
    }

    /// List the children of many nodes. Pipelining implementations override this.
    fn directory_many(&self, tx: TxId, paths: &[String]) -> Result<Vec<Option<Vec<String>>>> {
        paths.iter().map(|p| self.directory(tx, p)).collect()
    }

    /// The built-in client behind this store, if it is one: it can register
    /// watches, which the claims index needs. Other stores answer `None`
    /// and keep the full scan.
    fn xs_client(&self) -> Option<&client::XsClient> {
        None
    }

    /// The absolute home of this connection (`/local/domain/<self>`), against
    /// which relative paths resolve.
    fn home(&self) -> Result<String> {
        Ok("/local/domain/0".to_string())
    }
}

/// What [`Store::read_each`] hands its function.
pub enum Each<'a> {
    /// The value of the node at this index of the paths (`None`: missing).
    Value(usize, Option<&'a [u8]>),
    /// Every value handed so far is void; they all come again.
    Again,
}

/// [`Store::write_if_present`] outside a transaction would leave the
/// writes applied when the node is missing.
fn require_tx(tx: TxId, path: &str) -> Result<()> {
    if tx == NO_TX {
        return Err(Error::InvalidArgument(format!(
            "{path}: a checked write needs a transaction (internal error)"
        )));
    }
    Ok(())
}

/// Read a node as UTF-8 text (lossy), trimmed of nothing.
pub fn read_string(store: &dyn Store, tx: TxId, path: &str) -> Result<Option<String>> {
    Ok(store
        .read(tx, path)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Run `f` inside a transaction; commit; when the commit answers EAGAIN (or
/// `f` itself fails with EAGAIN), run it again, up to `attempts` times.
/// On any other error the transaction is aborted and the error returned.
pub fn with_transaction<T>(
    store: &dyn Store,
    attempts: u32,
    mut f: impl FnMut(TxId) -> Result<T>,
) -> Result<T> {
    let attempts = attempts.max(1);
    for _ in 0..attempts {
        let tx = store.transaction_start()?;
        match f(tx) {
            Ok(v) => {
                if store.transaction_end(tx, true)? {
                    return Ok(v);
                }
            }
            Err(e) => {
                let _ = store.transaction_end(tx, false);
                if !e.is_again() {
                    return Err(e);
                }
            }
        }
    }
    Err(Error::Store {
        op: "transaction",
        path: String::new(),
        errno: crate::error::XsErrno::from_errno(libc::EAGAIN),
        detail: format!("still conflicting after {attempts} attempts; xenstore is too busy"),
    })
}

/// [`with_transaction`], trying first in `first`, a transaction already
/// started (in the round trip of an earlier request, to save one). Whatever
/// goes wrong in `first` (a conflict, an error, a transaction the store no
/// longer knows), it is aborted and `f` runs again in fresh transactions as
/// [`with_transaction`] runs it: `f` must be harmless to repeat, as it is
/// for any transaction that may conflict.
pub fn with_transaction_from<T>(
    store: &dyn Store,
    attempts: u32,
    first: Option<TxId>,
    mut f: impl FnMut(TxId) -> Result<T>,
) -> Result<T> {
    if let Some(tx) = first {
        match f(tx) {
            Ok(v) => {
                if let Ok(true) = store.transaction_end(tx, true) {
                    return Ok(v);
                }
            }
            Err(_) => {
                let _ = store.transaction_end(tx, false);
            }
        }
    }
    with_transaction(store, attempts, f)
}

/// Check a path given by a caller: not empty, no NUL, no `//`, not too long,
/// no trailing `/` (other than the root), only the characters xenstored
/// allows.
pub fn validate_path(path: &str) -> Result<()> {
    // A valid path in one pass (a scan checks thousands); `why_invalid`
    // says what is wrong with any other.
    if plainly_valid(path) {
        Ok(())
    } else {
        why_invalid(path)
    }
}

fn path_max(path: &str) -> usize {
    if path.starts_with('/') {
        wire::ABS_PATH_MAX
    } else {
        wire::REL_PATH_MAX
    }
}

fn allowed_in_path(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@' | b'.' | b':')
}

/// All of [`why_invalid`]'s conditions at once, in one pass.
fn plainly_valid(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut after_slash = false;
    !bytes.is_empty()
        && bytes.len() <= path_max(path)
        && !(bytes.len() > 1 && bytes[bytes.len() - 1] == b'/')
        && bytes.iter().all(|&b| {
            let ok = allowed_in_path(b) && !(after_slash && b == b'/');
            after_slash = b == b'/';
            ok
        })
}

/// The first thing wrong with `path`, as an error.
fn why_invalid(path: &str) -> Result<()> {
    let max = path_max(path);
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "xenstore path {:?} is invalid: {why}",
            truncate_for_message(path)
        )))
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if path.len() > max {
        return bad(&format!(
            "it is {} bytes long, the limit is {max}",
            path.len()
        ));
    }
    if path.contains("//") || (path.len() > 1 && path.ends_with('/')) {
        return bad("it has an empty component");
    }
    if !path.bytes().all(allowed_in_path) {
        let c = path
            .chars()
            .find(|c| !c.is_ascii() || !allowed_in_path(*c as u8))
            .unwrap_or('?');
        return bad(&format!("it contains the character {c:?}"));
    }
    Ok(())
}

/// Shorten a value for an error message.
pub fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_validation() {
        assert!(validate_path("backend/vbd/1/51712").is_ok());
        assert!(validate_path("/local/domain/0").is_ok());
        assert!(validate_path("/").is_ok());
        assert!(validate_path("").is_err());
        assert!(validate_path("a\0b").is_err());
        assert!(validate_path("a//b").is_err());
        assert!(validate_path("a/b/").is_err());
        assert!(validate_path("a b").is_err());
        assert!(validate_path(&"a".repeat(3000)).is_err());
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_explained_one() {
        let mut rng = crate::test_rng::Rng(0x5ca1_ab1e);
        let alphabet: Vec<char> = "a/Z9-_@.:/ \0é/".chars().collect();
        for _ in 0..200_000 {
            let len = rng.below(12) as usize;
            let mut p: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            if rng.below(50) == 0 {
                p = p.repeat(400); // around and past the length limits
            }
            assert_eq!(plainly_valid(&p), why_invalid(&p).is_ok(), "{p:?}");
        }
    }
}
