//! The safe Rust API: [`Config`] and [`Context`].

use crate::error::{Error, Result};
use crate::index::{ClaimsIndex, IndexStats};
use crate::lock::{HotplugLock, DEFAULT_LOCK_DIR};
use crate::store::client::XsClient;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Which operating system's toolstack contract to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Linux: loop devices for files, `physical-device` numbers; scripts get
    /// `[script, add|remove]` and `XENBUS_*` in the environment.
    Linux,
    /// FreeBSD: blkback opens files directly; scripts get `[script, path, add|remove]`.
    FreeBsd,
    /// NetBSD: scripts get `[script, path, 2|6]`; files need vnd(4).
    NetBsd,
}

impl Flavour {
    /// The flavour of the operating system this was built for.
    pub fn native() -> Flavour {
        if cfg!(target_os = "freebsd") {
            Flavour::FreeBsd
        } else if cfg!(target_os = "netbsd") {
            Flavour::NetBsd
        } else {
            Flavour::Linux
        }
    }

    /// Parse `linux`, `freebsd` or `netbsd`.
    pub fn parse(s: &str) -> Result<Flavour> {
        match s {
            "linux" => Ok(Flavour::Linux),
            "freebsd" => Ok(Flavour::FreeBsd),
            "netbsd" => Ok(Flavour::NetBsd),
            _ => Err(Error::InvalidArgument(format!(
                "unknown flavour {s:?}; expected linux, freebsd or netbsd"
            ))),
        }
    }
}

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A log sink.
pub type Logger = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// How a [`Context`] is set up. `Config::default()` is what a Linux dom0 wants.
#[derive(Clone)]
pub struct Config {
    /// The store to use; `None` connects the built-in client.
    pub store: Option<Arc<dyn Store>>,
    /// Directory of the hotplug lock (upstream: `/var/run/xen-hotplug`).
    pub lock_dir: PathBuf,
    /// Where relative custom script names resolve (upstream: `/etc/xen/scripts`).
    pub script_dir: PathBuf,
    /// How long a custom script may run (libxl: 40 s).
    pub script_timeout: Duration,
    /// Bound on each wait for xenstored (built-in client).
    pub store_timeout: Duration,
    /// How long prepare and release wait for the hotplug lock (default 10 s).
    pub lock_timeout: Duration,
    /// OS contract to follow.
    pub flavour: Flavour,
    /// Where messages go; `None` drops them.
    pub logger: Option<Logger>,
    /// Keep a claims index (`crate::index`) from the second decision on,
    /// when the store can watch (the built-in client). The index reads only
    /// its own watch events (by token): contexts may share a client, each
    /// with its index, and the caller's own watch events on it stay queued
    /// for the caller (who must read them: past the client's queue limit
    /// events are dropped, and every index on the client then falls back to
    /// scanning until it is rebuilt).
    pub claims_index: bool,
    /// The path this program was run as when it is installed as the
    /// drop-in `block` script (the CLI sets it): a backend whose `script`
    /// names it is done in-process, like one naming `<script_dir>/block`.
    /// Any other script whose name is `block` is a site's own, and is run.
    pub drop_in: Option<PathBuf>,
    /// QEMU-compatible image locks on file targets (docs/image-locks.md):
    /// `BestEffort` by default.
    pub image_locks: crate::imagelock::ImageLocks,
    /// How many threads run the ops of [`Context::start`] (at least 1;
    /// default [`crate::worker::DEFAULT_WORKERS`]). They are started on
    /// demand: a context that starts no op has none.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            store: None,
            lock_dir: PathBuf::from(DEFAULT_LOCK_DIR),
            script_dir: PathBuf::from("/etc/xen/scripts"),
            script_timeout: Duration::from_secs(40),
            store_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            flavour: Flavour::native(),
            logger: None,
            claims_index: true,
            drop_in: None,
            image_locks: crate::imagelock::ImageLocks::BestEffort,
            workers: crate::worker::DEFAULT_WORKERS,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("store", &self.store.as_ref().map(|_| "custom"))
            .field("lock_dir", &self.lock_dir)
            .field("script_dir", &self.script_dir)
            .field("script_timeout", &self.script_timeout)
            .field("store_timeout", &self.store_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("flavour", &self.flavour)
            .field("claims_index", &self.claims_index)
            .field("drop_in", &self.drop_in)
            .field("image_locks", &self.image_locks)
            .field("workers", &self.workers)
            .finish()
    }
}

/// A handle for preparing and releasing disks. Cheap to share between
/// threads (`Send + Sync`); calls from several threads are serialised where
/// they must be (the hotplug lock) and run in parallel elsewhere.
pub struct Context {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Config,
    pub(crate) lock: HotplugLock,
    pub(crate) index: Option<ClaimsIndex>,
    /// A transaction started, under the hotplug lock, in the round trip of
    /// the decision's first request (with the connection generation it
    /// belongs to), for the outcome's writes: one round trip less per
    /// prepare. See [`EarlyTx`].
    pub(crate) early_tx: parking_lot::Mutex<Option<(crate::store::TxId, u64)>>,
    /// The mount table and active swap, read again only after a change
    /// (two descriptors, close-on-exec, for the context's life).
    #[cfg(target_os = "linux")]
    pub(crate) proc_files: parking_lot::Mutex<crate::sys::blockdev::ProcFiles>,
    /// The child lists of the disk roots a scan for this prepare lists
    /// (`None`: no such root), listed under the hotplug lock in the
    /// backend's read, for the decision's scan.
    pub(crate) prefetched_roots: parking_lot::Mutex<Option<Vec<Option<Vec<String>>>>>,
    /// The worker threads and per-backend lanes of the ops
    /// ([`crate::worker`]).
    pub(crate) pool: crate::worker::Pool,
    /// The owner number its descriptors (and its ops') are listed under,
    /// for a forked child ([`crate::sys::fdreg`]).
    pub(crate) fd_owner: u32,
}

/// Ends what a prepare started under the hotplug lock for its decision and
/// did not use: the outcome's transaction started early (a refusal, a
/// failure: it is aborted), the roots' listing, the index's sentinel.
/// Made right after the lock is taken and dropped before it, so what it
/// ends is this prepare's own.
pub(crate) struct EarlyTx<'a>(pub(crate) &'a Context);

impl Drop for EarlyTx<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take_early_tx() {
            let _ = self.0.store.transaction_end(tx, false);
        }
        self.0.prefetched_roots.lock().take();
        if let Some(ix) = &self.0.index {
            ix.presync_unused();
        }
    }
}

/// The hotplug lock held for a prepare, with what the prepare starts under
/// it ([`EarlyTx`]); the fields drop in order: that first, then the lock.
pub(crate) struct Held<'a> {
    _early: EarlyTx<'a>,
    _lock: crate::lock::LockGuard<'a>,
}

impl Context {
    /// Take the hotplug lock (waiting as configured) for a prepare.
    pub(crate) fn hold(&self) -> Result<Held<'_>> {
        self.lock.acquire().map(|lock| Held {
            _early: EarlyTx(self),
            _lock: lock,
        })
    }

    /// The hotplug lock for a prepare if it is free now, else `None`
    /// (nothing waited for).
    pub(crate) fn hold_now(&self) -> Option<Held<'_>> {
        self.lock.try_acquire().map(|lock| Held {
            _early: EarlyTx(self),
            _lock: lock,
        })
    }
}

impl Context {
    /// Set up a context; connects the built-in client when no store is given.
    pub fn new(config: Config) -> Result<Context> {
        let store: Arc<dyn Store> = match &config.store {
            Some(s) => s.clone(),
            None => Arc::new(XsClient::connect_default(config.store_timeout)?),
        };
        if config.lock_dir.as_os_str().is_empty() || !config.lock_dir.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "lock directory {} must be an absolute path",
                config.lock_dir.display()
            )));
        }
        if config.script_dir.as_os_str().is_empty() || !config.script_dir.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "script directory {} must be an absolute path",
                config.script_dir.display()
            )));
        }
        let fd_owner = crate::sys::fdreg::new_owner();
        if config.store.is_none() {
            if let Some(xs) = store.xs_client() {
                xs.set_fd_owner(fd_owner);
            }
        }
        let index = if config.claims_index {
            ClaimsIndex::new(&store, config.flavour == Flavour::FreeBsd)
        } else {
            None
        };
        Ok(Context {
            lock: HotplugLock::new_owned(&config.lock_dir, config.lock_timeout, fd_owner),
            index,
            early_tx: parking_lot::Mutex::new(None),
            prefetched_roots: parking_lot::Mutex::new(None),
            pool: crate::worker::Pool::new(config.workers, fd_owner),
            #[cfg(target_os = "linux")]
            proc_files: parking_lot::Mutex::new(crate::sys::blockdev::ProcFiles::new_owned(
                &crate::sys::blockdev::Sources::system(),
                fd_owner,
            )),
            fd_owner,
            store,
            config,
        })
    }

    /// Whether the decision's first request should start the outcome's
    /// transaction: the built-in client (it pipelines) and none started yet.
    pub(crate) fn wants_early_tx(&self) -> bool {
        self.store.xs_client().is_some() && self.early_tx.lock().is_none()
    }

    /// Keep a transaction started early (see [`Self::wants_early_tx`]).
    pub(crate) fn set_early_tx(&self, tx: Option<crate::store::TxId>) {
        if let (Some(tx), Some(xs)) = (tx, self.store.xs_client()) {
            *self.early_tx.lock() = Some((tx, xs.generation()));
        }
    }

    /// The transaction started early, if it is still on the connection it
    /// was started on (after a reconnection its id means nothing, or
    /// another transaction).
    pub(crate) fn take_early_tx(&self) -> Option<crate::store::TxId> {
        let (tx, generation) = self.early_tx.lock().take()?;
        let xs = self.store.xs_client()?;
        (xs.generation() == generation).then_some(tx)
    }

    /// [`Context::prepare`], but never waiting for the hotplug lock: when
    /// another holder has it, nothing is done and the error is
    /// [`ErrorKind::WouldBlock`](crate::ErrorKind::WouldBlock) (try again
    /// later; `hotplug-status` is not written). Custom scripts still run to
    /// their end; hosts with an event loop run them themselves (see
    /// [`Context::plan`]).
    pub fn try_prepare(&self, backend_path: &str) -> Result<crate::Prepared> {
        crate::lock::no_wait(|| self.prepare(backend_path))
    }

    /// [`Context::release`], never waiting for the hotplug lock (see
    /// [`Context::try_prepare`]).
    pub fn try_release(&self, backend_path: &str) -> Result<crate::Released> {
        crate::lock::no_wait(|| self.release(backend_path))
    }

    /// The store this context talks to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How the claims index has served so far (all zero without one).
    pub fn claims_index_stats(&self) -> IndexStats {
        self.index
            .as_ref()
            .map(ClaimsIndex::stats)
            .unwrap_or_default()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn log(&self, level: LogLevel, msg: &str) {
        if let Some(l) = &self.config.logger {
            l(level, msg);
        }
    }
}
