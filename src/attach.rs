//! The prepare and release flows (docs/contract.md): what Xen's `block` script
//! does for `add` and `remove`, done in-process.

use crate::context::{Context, Flavour, Held, LogLevel};
use crate::error::{Error, ErrorKind, Result};
use crate::hotplug::{self, Invocation, ScriptFlavour};
use crate::sharing::{self, Claim, DevNum, Facts, Key, Mode, Mount, Request, Swap, VmIdentity};
use crate::spec::{self, Backend, Handler};
use crate::store::{self, read_string, Each, TxId, DEFAULT_TX_ATTEMPTS, NO_TX};
use crate::sys::stat::{FileKind, FileStat};
use crate::topology::{self, Overlap, Topology};
use std::path::{Component, Path, PathBuf};

/// What a successful `prepare` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The disk is ready; these nodes were written with `hotplug-status connected`.
    Connected {
        physical_device: Option<String>,
        physical_device_path: String,
        node: Option<String>,
    },
    /// `physical-device` was already present: nothing was changed.
    AlreadyPrepared,
    /// A custom hotplug script ran and succeeded.
    Script,
}

/// What `release` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// A loop device was detached.
    Detached(String),
    /// Nothing to undo (a block device, already released, or never prepared).
    Nothing,
    /// The loop device named in `node` now serves another file; left alone.
    LeftAlone(String),
    /// A custom hotplug script ran.
    Script,
}

/// Domains whose backends one pass of the full scan lists and reads (about
/// four disks each on a typical host: ~1 000 reads, within xenstored's
/// pipeline window of 512 twice).
const SCAN_DOMAINS_PER_PASS: usize = 256;

/// Prefix of the tag xenblock puts in `lo_file_name` of its loop devices.
pub const LOOP_TAG_PREFIX: &str = "xenblock:";

impl Context {
    /// Prepare the disk of the backend at `backend_path` (absolute, or
    /// relative to this domain's home, like libxl's `backend/vbd/7/51712`).
    ///
    /// On refusal the backend gets `hotplug-status busy`, on failure
    /// `hotplug-status error`, with `hotplug-error` set to the returned message.
    pub fn prepare(&self, backend_path: &str) -> Result<Prepared> {
        let path = spec::normalise_path(backend_path)?;
        // When the hotplug lock is free (the usual case) it is taken first,
        // and the backend is read in the round trip that also starts the
        // decision and its transaction (`read_backend_held`). When it is
        // held, the backend is read first and the lock waited for after,
        // as Xen's script does, so that a custom script or a backend
        // already prepared never waits for it.
        let (b, held) = match self.hold_now() {
            Some(held) => (self.read_backend_held(&path)?, Some(held)),
            None => (Backend::read_existing(&*self.store, &path)?, None),
        };
        if let Handler::Script(script) = self.handler(b.script.as_deref()) {
            drop(held);
            return self
                .run_custom_script(&b, &script, true)
                .map(|_| Prepared::Script);
        }
        if b.physical_device.is_some() {
            drop(held);
            self.log(LogLevel::Debug, &format!("{path}: already prepared"));
            return Ok(Prepared::AlreadyPrepared);
        }
        let r = match self.config.flavour {
            Flavour::Linux => self.prepare_linux(&b, held),
            Flavour::FreeBsd => self.prepare_freebsd(&b, held),
            Flavour::NetBsd => self.prepare_netbsd(&b, held),
        };
        match &r {
            Ok(p) => self.log(LogLevel::Debug, &format!("{path}: prepared: {p}")),
            Err(e) => self.report_failure(&path, e),
        }
        r
    }

    /// The backend, read under the hotplug lock (held by the caller) in one
    /// round trip with what the decision will need first: the claims
    /// index's sentinel write when the index is live, else the listing of
    /// the disk roots for the scan; and the `TRANSACTION_START` of the
    /// outcome. What the prepare does not use is ended by its [`Held`].
    fn read_backend_held(&self, path: &str) -> Result<Backend> {
        let Some(xs) = self.store.xs_client() else {
            return Backend::read_existing(&*self.store, path);
        };
        let reads = Backend::existing_reads(path)?;
        let sentinel = self.index.as_ref().and_then(|ix| ix.presync(path));
        let roots = match &sentinel {
            Some(_) => Vec::new(),
            None => self.scan_roots(path).unwrap_or_default(),
        };
        let first = xs.first_round_trip(
            &reads,
            sentinel.as_ref().map(|(p, v)| (p.as_str(), v.as_slice())),
            &roots,
        );
        if let (Some(ix), Some(_)) = (&self.index, &sentinel) {
            ix.presynced(
                first
                    .as_ref()
                    .is_ok_and(|f| matches!(f.write, Some(Ok(())))),
            );
        }
        let first = first?;
        self.set_early_tx(first.tx);
        if let Some(lists) = first.lists.ok().filter(|_| !roots.is_empty()) {
            *self.prefetched_roots.lock() = Some(lists);
        }
        Backend::from_existing(path, first.reads)
    }

    /// The disk roots a scan for `own` lists: its own root first, then the
    /// sibling roots (`vbd3`, `qdisk`).
    fn scan_roots(&self, own: &str) -> Result<Vec<String>> {
        let root = spec::backend_root(own)?;
        let mut roots = vec![root.to_string()];
        if let Some((parent, kind)) = root.rsplit_once('/') {
            for k in OTHER_DISK_ROOTS {
                if *k != kind {
                    roots.push(format!("{parent}/{k}"));
                }
            }
        }
        Ok(roots)
    }

    /// Release the disk of the backend at `backend_path`. Idempotent.
    pub fn release(&self, backend_path: &str) -> Result<Released> {
        let path = spec::normalise_path(backend_path)?;
        spec::check_backend_shape(&path)?;
        let b = Backend::read(&*self.store, NO_TX, &path)?;
        if let Handler::Script(script) = self.handler(b.script.as_deref()) {
            return self
                .run_custom_script(&b, &script, false)
                .map(|_| Released::Script);
        }
        match self.config.flavour {
            Flavour::Linux => self.release_linux(&b),
            Flavour::FreeBsd | Flavour::NetBsd => Ok(Released::Nothing),
        }
    }

    /// Write `hotplug-error` and `hotplug-status` (busy for a refusal, error
    /// otherwise), only if the backend directory still exists.
    fn report_failure(&self, path: &str, e: &Error) {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Cancelled) {
            // Nothing was done and the caller will try again (a cancelled
            // op: with a new context): no failure to record.
            self.log(LogLevel::Debug, &format!("{path}: {e}"));
            return;
        }
        let status = if e.kind() == ErrorKind::Busy {
            "busy"
        } else {
            "error"
        };
        let msg = e.to_string();
        let level = if crate::worker::failure_is_returned() {
            // An op's failure is its outcome: the op's caller logs it once.
            LogLevel::Debug
        } else if status == "busy" {
            LogLevel::Warn
        } else {
            LogLevel::Error
        };
        self.log(level, &format!("{path}: {msg}"));
        let r = store::with_transaction(&*self.store, DEFAULT_TX_ATTEMPTS, |tx| {
            if self.store.read(tx, path)?.is_none() {
                return Ok(());
            }
            self.store
                .write(tx, &format!("{path}/hotplug-error"), msg.as_bytes())?;
            self.store
                .write(tx, &format!("{path}/hotplug-status"), status.as_bytes())
        });
        if let Err(w) = r {
            self.log(
                LogLevel::Error,
                &format!("{path}: could not record the failure in xenstore: {w}"),
            );
        }
    }

    /// Check the nodes every in-process add needs, as upstream's
    /// `xenstore_read` does (params, mode, frontend-id), and resolve the target.
    fn common_inputs(&self, b: &Backend) -> Result<(Mode, u32, PathBuf, FileStat)> {
        let target = b.target()?;
        let mode = match b.mode_raw.as_deref() {
            Some(m) if !m.is_empty() => Mode::canonicalise(m),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{}: 'mode' is missing; expected r, w, ro, rw, w! or rw!",
                    b.path
                )))
            }
        };
        let domid = b.frontend_domid()?;
        let (resolved, st) = resolve_target(&b.path, &target)?;
        Ok((mode, domid, resolved, st))
    }

    fn prepare_linux(&self, b: &Backend, held: Option<Held>) -> Result<Prepared> {
        let (mode, domid, resolved, st) = self.common_inputs(b)?;
        match st.kind {
            FileKind::Block => self.prepare_device(b, mode, domid, &resolved, &st, held),
            FileKind::Regular => self.prepare_linux_file(b, mode, domid, &resolved, held),
            _ => Err(not_file_or_device(&b.path, &resolved)),
        }
    }

    #[cfg(target_os = "linux")]
    fn prepare_linux_file(
        &self,
        b: &Backend,
        mode: Mode,
        domid: u32,
        file_path: &Path,
        held: Option<Held>,
    ) -> Result<Prepared> {
        use crate::sys::loopdev;
        let shown = file_path.display().to_string();
        // Under the lock, as upstream: the backend may have been closed
        // meanwhile (unless it was read under the lock).
        let read_under_lock = held.is_some();
        let _held = held.map_or_else(|| self.hold(), Ok)?;
        let state = if read_under_lock {
            b.state.clone()
        } else {
            read_string(&*self.store, NO_TX, &format!("{}/state", b.path))?
        };
        if state.as_deref() != Some("2") {
            return Err(Error::BadState(format!(
                "{}: path closed or removed during hotplug add: state is {}, expected 2 (InitWait)",
                b.path,
                state
                    .map(|s| format!("'{s}'"))
                    .unwrap_or_else(|| "missing".into())
            )));
        }
        // Open once; the descriptor gives the permissions and the identity
        // checked and the file attached, so a path swapped meanwhile cannot
        // change any of them.
        let file = crate::sys::stat::open_target(file_path, mode != Mode::Read)?;
        let fst = crate::sys::stat::fstat(std::os::fd::AsFd::as_fd(&file))?;
        if fst.kind != FileKind::Regular {
            return Err(not_file_or_device(&b.path, file_path));
        }
        if mode == Mode::Write && fst.mode & 0o222 == 0 {
            return Err(Error::Busy(format!(
                "{shown} is read-only (permissions {:o}), so it will not be attached read-write \
                 to {}; make it writable or use mode 'r'",
                fst.mode & 0o7777,
                b.path
            )));
        }
        // The file itself is the target; the loop devices over it, and what
        // is built on them, come from the topology the rule gathers.
        self.check_sharing(
            b,
            domid,
            &shown,
            mode,
            vec![Key::File {
                dev: fst.dev,
                ino: fst.ino,
            }],
        )?;
        let tag = self.loop_tag(&b.path)?;
        // On the description the loop device gets: kept, the locks live as
        // long as it. On any error below, `locks` lets go of them.
        let locks = crate::imagelock::take(
            &crate::imagelock::Image {
                file: &file,
                dev: fst.dev,
                ino: fst.ino,
                shown: &shown,
            },
            mode,
            self.config.image_locks,
            &|| own_loops(fst.dev, fst.ino),
            &|l, m| self.log(l, m),
        )?;
        let lo = loopdev::attach(&file, mode == Mode::Read, tag.as_bytes())?;
        let node = lo.path.display().to_string();
        let physical = lo.dev.to_string();
        let written =
            self.write_connected(&b.path, Some(&physical), &node, Some(&node), lo.diskseq);
        if let Err(e) = written {
            if let Err(d) = loopdev::detach_if_backed_by(&lo.path, fst.dev, fst.ino) {
                self.log(
                    LogLevel::Error,
                    &format!("{}: could not detach {node} after a failure: {d}", b.path),
                );
                // It still has the image: so do its locks, for QEMU to see.
                locks.keep();
            }
            return Err(e);
        }
        locks.keep();
        Ok(Prepared::Connected {
            physical_device: Some(physical),
            physical_device_path: node.clone(),
            node: Some(node),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn prepare_linux_file(
        &self,
        b: &Backend,
        _mode: Mode,
        _domid: u32,
        _file_path: &Path,
        _held: Option<Held>,
    ) -> Result<Prepared> {
        Err(Error::Unsupported(format!(
            "{}: the Linux flavour's loop devices exist only on Linux",
            b.path
        )))
    }

    /// FreeBSD: blkback opens the target itself; no loop device.
    fn prepare_freebsd(&self, b: &Backend, held: Option<Held>) -> Result<Prepared> {
        let (mode, domid, resolved, st) = self.common_inputs(b)?;
        let Some(key) = key_of(&st) else {
            return Err(not_file_or_device(&b.path, &resolved));
        };
        let shown = resolved.display().to_string();
        let _held = held.map_or_else(|| self.hold(), Ok)?;
        self.check_sharing(b, domid, &shown, mode, vec![key])?;
        self.write_connected(&b.path, None, &shown, None, None)?;
        Ok(Prepared::Connected {
            physical_device: None,
            physical_device_path: shown,
            node: None,
        })
    }

    /// NetBSD: block devices in-process; files need vnd(4), not done here.
    fn prepare_netbsd(&self, b: &Backend, held: Option<Held>) -> Result<Prepared> {
        let (mode, domid, resolved, st) = self.common_inputs(b)?;
        if st.kind != FileKind::Block {
            return Err(Error::Unsupported(format!(
                "{}: {} is not a block device; file targets are not supported in-process on \
                 NetBSD (they need vnd(4)); use the block script for this disk",
                b.path,
                resolved.display()
            )));
        }
        self.prepare_device(b, mode, domid, &resolved, &st, held)
    }

    /// A block device (Linux and NetBSD): check, then record its number.
    fn prepare_device(
        &self,
        b: &Backend,
        mode: Mode,
        domid: u32,
        resolved: &Path,
        st: &FileStat,
        held: Option<Held>,
    ) -> Result<Prepared> {
        let dev = DevNum::from_dev_t(st.rdev);
        let shown = resolved.display().to_string();
        let _held = held.map_or_else(|| self.hold(), Ok)?;
        self.check_sharing(b, domid, &shown, mode, vec![Key::Dev(dev)])?;
        #[cfg(target_os = "linux")]
        let diskseq = crate::sys::diskseq::of_device(resolved, st.rdev)?;
        #[cfg(not(target_os = "linux"))]
        let diskseq = None;
        self.write_connected(&b.path, Some(&dev.to_string()), &shown, None, diskseq)?;
        Ok(Prepared::Connected {
            physical_device: Some(dev.to_string()),
            physical_device_path: shown,
            node: None,
        })
    }

    /// Apply the sharing rule: gather the facts once (the block stack around
    /// `keys`, dom0's mounts and swap, the other backends' claims on anything
    /// that overlaps), then ask [`sharing::decide`]. Call with the lock held.
    fn check_sharing(
        &self,
        b: &Backend,
        domid: u32,
        target: &str,
        mode: Mode,
        keys: Vec<Key>,
    ) -> Result<()> {
        if mode == Mode::Force {
            return Ok(());
        }
        // Decide without reading what only names devices for people; a
        // refusal gathers again, with names, to say who holds what (and that
        // second, complete look is the decision returned).
        match self.decide_sharing(b, domid, target, mode, &keys, false) {
            Err(Error::Busy(_)) => self.decide_sharing(b, domid, target, mode, &keys, true),
            other => other,
        }
    }

    /// One gathering of the facts and [`sharing::decide`] over them.
    fn decide_sharing(
        &self,
        b: &Backend,
        domid: u32,
        target: &str,
        mode: Mode,
        keys: &[Key],
        names: bool,
    ) -> Result<()> {
        let (mut topology, overlap, mounts, swaps) = self.gather_stack(keys, names)?;
        #[cfg(target_os = "linux")]
        if mode == Mode::Write && self.config.flavour == Flavour::Linux {
            // Ask the kernel too: it knows holders mountinfo does not show.
            let src = crate::sys::blockdev::Sources::system();
            crate::sys::blockdev::probe_exclusive(&src, &mut topology, &overlap, names);
        }
        let wanted = |k: &Key| overlap.contains(k);
        let from_index = self.index.as_ref().and_then(|ix| {
            let mut devs = overlap.nodes().iter().filter_map(|k| match k {
                Key::Dev(d) => Some(*d),
                Key::File { .. } => None,
            });
            let mut tx = None;
            let c = ix.candidates(
                &b.path,
                &mut devs,
                &wanted,
                &claim_key,
                &|m| self.log(LogLevel::Warn, m),
                self.wants_early_tx().then_some(&mut tx),
            );
            self.set_early_tx(tx);
            c
        });
        let mut claims = match from_index {
            Some(candidates) => self.candidate_claims(&b.path, candidates, &wanted)?,
            None => self.gather_claims(&b.path, &wanted)?,
        };
        // One order for both paths (the rule names the first conflicting
        // claim): the scan's roots order, then by backend path.
        let rank = |c: &Claim| {
            let kind = c.backend.rsplit('/').nth(2).unwrap_or("");
            let own_kind = b.path.rsplit('/').nth(2).unwrap_or("");
            if kind == own_kind {
                0
            } else {
                1 + OTHER_DISK_ROOTS
                    .iter()
                    .position(|k| *k == kind)
                    .unwrap_or(OTHER_DISK_ROOTS.len())
            }
        };
        claims.sort_by(|x, y| (rank(x), &x.backend).cmp(&(rank(y), &y.backend)));
        let identity = if claims.is_empty() {
            VmIdentity::default()
        } else {
            self.identity(&domid.to_string())?
        };
        let req = Request {
            backend: b.path.clone(),
            target: target.to_string(),
            mode,
            identity,
            keys: keys.to_vec(),
        };
        // Image files in the stack that users outside Xen hold with image
        // locks (a loop device given as `phy`, a loop device over another):
        // claims too. The request's own file is not among them: the image
        // lock of the prepare itself tests it, on its own description.
        let locks = self.gather_lock_claims(&overlap, keys, &[], &mut topology);
        let facts = Facts {
            topology: &topology,
            mounts: &mounts,
            swaps: &swaps,
            claims: &claims,
            locks: &locks,
        };
        sharing::decide(&req, &facts).map_err(|mut r| {
            if let sharing::Refusal::Guest {
                backend,
                domid,
                pid,
                ..
            } = &mut r
            {
                if names
                    && backend
                        .rsplitn(3, '/')
                        .nth(2)
                        .is_some_and(|r| r.ends_with("qdisk"))
                {
                    *pid = self.device_model_pid(domid);
                }
            }
            Error::Busy(r.message(&req))
        })
    }

    /// The pid of the QEMU libxl started as domain `domid`'s device model
    /// (it serves the domain's qdisk backends), if it is running.
    pub(crate) fn device_model_pid(&self, domid: &str) -> Option<u32> {
        let p = format!("/local/domain/{domid}/image/device-model-pid");
        let v = read_string(&*self.store, NO_TX, &p).ok()??;
        let pid: u32 = v.trim().parse().ok()?;
        #[cfg(target_os = "linux")]
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return None;
        }
        Some(pid)
    }

    /// The image files in `overlap` (other than `skip`) that a user outside
    /// Xen holds with QEMU-compatible image locks, as claims
    /// ([`crate::imagelock::lock_claim`]). A file is found by the path
    /// `known` gives it, or by the backing file of a loop device over it in
    /// the overlap; one with neither cannot be tested (an overlayfs layer
    /// reached without a loop device) and is left out. A test that fails is
    /// a doubt. Linux flavour only; nothing is read when the overlap has no
    /// other file.
    #[allow(unused_variables)]
    pub(crate) fn gather_lock_claims(
        &self,
        overlap: &Overlap,
        skip: &[Key],
        known: &[(Key, String)],
        topology: &mut Topology,
    ) -> Vec<sharing::LockClaim> {
        #[cfg(target_os = "linux")]
        {
            if self.config.flavour != Flavour::Linux
                || self.config.image_locks == crate::imagelock::ImageLocks::Off
            {
                return Vec::new();
            }
            let files: Vec<(u64, u64)> = overlap
                .nodes()
                .iter()
                .filter(|k| !skip.contains(k))
                .filter_map(|k| match *k {
                    Key::File { dev, ino } => Some((dev, ino)),
                    Key::Dev(_) => None,
                })
                .collect();
            if files.is_empty() {
                return Vec::new();
            }
            let mut paths: Vec<((u64, u64), String)> = known
                .iter()
                .filter_map(|(k, p)| match *k {
                    Key::File { dev, ino } => Some(((dev, ino), p.clone())),
                    Key::Dev(_) => None,
                })
                .collect();
            for k in overlap.nodes() {
                let Key::Dev(d) = k else { continue };
                if d.major != 7 {
                    continue;
                }
                let sys = format!("/sys/dev/block/{}:{}/loop/backing_file", d.major, d.minor);
                let Ok(p) = std::fs::read_to_string(&sys) else {
                    continue;
                };
                let p = p.trim_end_matches('\n').to_string();
                if let Ok(st) = crate::sys::stat::stat(Path::new(&p)) {
                    if files.contains(&(st.dev, st.ino))
                        && !paths.iter().any(|(f, _)| *f == (st.dev, st.ino))
                    {
                        paths.push(((st.dev, st.ino), p));
                    }
                }
            }
            let mut out = Vec::new();
            for (f, p) in paths {
                if !files.contains(&f) {
                    continue;
                }
                match crate::imagelock::lock_claim(&p, f.0, f.1) {
                    Ok(Some(c)) => out.push(c),
                    Ok(None) => {}
                    Err(m) => topology.doubts.push(m),
                }
            }
            out
        }
        #[cfg(not(target_os = "linux"))]
        Vec::new()
    }

    /// The block stack around `keys` (Linux flavour: from sysfs, with dom0's
    /// active swap), which nodes overlap them, and dom0's mounts. Other
    /// flavours compare identities only.
    pub(crate) fn gather_stack(
        &self,
        keys: &[Key],
        names: bool,
    ) -> Result<(Topology, Overlap, Vec<Mount>, Vec<Swap>)> {
        #[cfg(target_os = "linux")]
        if self.config.flavour == Flavour::Linux {
            use crate::sys::blockdev;
            let mut src = blockdev::Sources::system();
            // Read again only after a change (see `sys::procfile`).
            let mut proc_files = self.proc_files.lock();
            src.overlays = Some(proc_files.overlays());
            let (topo, o) = blockdev::gather(&src, keys, names);
            let mounts = proc_files.mounts()?;
            let (swaps, unknown) = proc_files.swaps();
            drop(proc_files);
            for u in unknown {
                // Not a doubt about this target: an unidentifiable swap area
                // (a deleted swap file) cannot be reached through a path.
                self.log(LogLevel::Warn, &format!("sharing check: {u}"));
            }
            return Ok((topo, o, mounts, swaps));
        }
        #[cfg(not(target_os = "linux"))]
        let _ = names; // no sysfs: nothing is read to name devices
        let topo = Topology::default();
        let o = topology::walk(keys, &mut topo.graph());
        let mounts = if keys.iter().any(|k| matches!(k, Key::Dev(_))) {
            crate::sys::mountinfo::read_self()?
        } else {
            Vec::new()
        };
        Ok((topo, o, mounts, Vec::new()))
    }

    /// Every other backend that names a disk — under the request's own root
    /// (`backend/vbd/*/*`: `physical-device`, or `physical-device-path` for
    /// FreeBSD) and under the sibling roots `vbd3` and `qdisk` (`params` as
    /// libxl writes it, `<format>:<path>`, the file by (st_dev, st_ino) or
    /// the device by number; plus `physical-device` if written) — whose
    /// storage is `wanted`, with its mode and frontend identity. Reads are
    /// pipelined: one round trip per level of the tree, then identities only
    /// for the backends that matter.
    pub(crate) fn gather_claims(
        &self,
        own: &str,
        wanted: &dyn Fn(&Key) -> bool,
    ) -> Result<Vec<Claim>> {
        let s = &*self.store;
        let by_path = self.config.flavour == Flavour::FreeBsd;
        let vbd_node = if by_path {
            "physical-device-path"
        } else {
            "physical-device"
        };
        // The request's own root first (its disks name their storage by
        // `vbd_node`), then the siblings.
        let root_paths = self.scan_roots(own)?;
        // Listed in the backend's read (under the lock: `read_backend_held`),
        // or here with the outcome's transaction started in the same round
        // trip (under the lock, like the whole decision).
        let prefetched = self.prefetched_roots.lock().take();
        let doms = match prefetched {
            Some(lists) => lists,
            None => match s.xs_client().filter(|_| self.wants_early_tx()) {
                Some(xs) => {
                    let (doms, tx) = xs.directory_many_starting_tx(&root_paths)?;
                    self.set_early_tx(tx);
                    doms
                }
                None => s.directory_many(NO_TX, &root_paths)?,
            },
        };
        let mut dom_paths = Vec::new();
        let mut dom_of = Vec::new(); // (root index, domid)
        for (ri, list) in doms.into_iter().enumerate() {
            for d in list.unwrap_or_default() {
                dom_paths.push(join_path(&[&root_paths[ri], &d]));
                dom_of.push((ri, d));
            }
        }
        // Domains go in chunks, so that what a pass holds (paths, requests,
        // replies) stays bounded however many disks the host has: a process
        // that starts cold (the CLI) pays a page fault for every page its
        // heap grows by, which at 10 000 disks cost more than the reads.
        let mut hits: Vec<(String, usize, Key)> = Vec::new(); // (backend, dom index, key)
        let mut reads: Vec<String> = Vec::new();
        let mut nodes: Vec<(usize, &str)> = Vec::new(); // (dom index, node)
        for (chunk_no, chunk) in dom_paths.chunks(SCAN_DOMAINS_PER_PASS).enumerate() {
            let first_dom = chunk_no * SCAN_DOMAINS_PER_PASS;
            let devs = s.directory_many(NO_TX, chunk)?;
            // One or two reads per backend, `<root>/<dom>/<dev>/<node>`; the
            // backend's path is a read's path less its last component.
            reads.clear();
            nodes.clear();
            for (i, list) in devs.into_iter().enumerate() {
                let di = first_dom + i;
                let dom_path = &dom_paths[di];
                for dev in list.unwrap_or_default() {
                    let is_own = own.len() == dom_path.len() + 1 + dev.len()
                        && own.starts_with(dom_path.as_str())
                        && own.as_bytes()[dom_path.len()] == b'/'
                        && own.ends_with(dev.as_str());
                    if is_own {
                        continue;
                    }
                    let wanted_nodes: &[&str] = if dom_of[di].0 == 0 {
                        std::slice::from_ref(&vbd_node)
                    } else {
                        &["params", "physical-device"]
                    };
                    for n in wanted_nodes {
                        reads.push(join_path(&[dom_path, &dev, n]));
                        nodes.push((di, n));
                    }
                }
            }
            // The values are looked at as they arrive, not kept.
            let hits_before = hits.len();
            s.read_each(NO_TX, &reads, &mut |e| {
                let (i, v) = match e {
                    Each::Value(i, Some(v)) => (i, v),
                    Each::Value(_, None) => return,
                    Each::Again => return hits.truncate(hits_before),
                };
                let (path, (di, node)) = (&reads[i], nodes[i]);
                let text = String::from_utf8_lossy(v);
                if let Some(k) = claim_key(node, &text).filter(|k| wanted(k)) {
                    let backend = &path[..path.len() - node.len() - 1];
                    if !hits.iter().any(|(b, _, hk)| b == backend && *hk == k) {
                        hits.push((backend.to_string(), di, k));
                    }
                }
            })?;
        }
        // Each hit's mode and recorded diskseq, in one round trip.
        let paths: Vec<String> = hits
            .iter()
            .flat_map(|(b, _, _)| [format!("{b}/mode"), format!("{b}/diskseq")])
            .collect();
        let mut values = s.read_many(NO_TX, &paths)?.into_iter();
        let mut claims = Vec::with_capacity(hits.len());
        for (backend, di, key) in hits {
            let (m, seq) = (values.next().flatten(), values.next().flatten());
            if self.stale_claim(&backend, &key, seq.as_deref()) {
                continue;
            }
            let m = m
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .unwrap_or_default();
            let dom = &dom_of[di].1;
            claims.push(Claim {
                identity: self.identity(dom)?,
                backend,
                domid: dom.clone(),
                key,
                mode: Mode::canonicalise(&m),
            });
        }
        Ok(claims)
    }

    /// The claims of `candidates` (backend paths the claims index named),
    /// read exactly as [`Self::gather_claims`] reads a backend: the index's
    /// copy of the nodes is never trusted for a claim. One round trip for
    /// the nodes and modes, then identities for the hits.
    fn candidate_claims(
        &self,
        own: &str,
        candidates: Vec<String>,
        wanted: &dyn Fn(&Key) -> bool,
    ) -> Result<Vec<Claim>> {
        let own_kind = own.rsplit('/').nth(2).unwrap_or("");
        let vbd_node = if self.config.flavour == Flavour::FreeBsd {
            "physical-device-path"
        } else {
            "physical-device"
        };
        let mut reads = Vec::new();
        let mut who: Vec<(usize, &str)> = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            let kind = c.rsplit('/').nth(2).unwrap_or("");
            let nodes: &[&str] = if kind == own_kind {
                std::slice::from_ref(&vbd_node)
            } else {
                &["params", "physical-device"]
            };
            for n in nodes.iter().chain(&["mode", "diskseq"]) {
                reads.push(format!("{c}/{n}"));
                who.push((i, n));
            }
        }
        let values = self.store.read_many(NO_TX, &reads)?;
        let mut modes: Vec<Option<Vec<u8>>> = vec![None; candidates.len()];
        let mut seqs: Vec<Option<Vec<u8>>> = vec![None; candidates.len()];
        let mut hits: Vec<(usize, Key)> = Vec::new();
        for ((i, node), v) in who.into_iter().zip(values) {
            let Some(v) = v else { continue };
            if node == "mode" {
                modes[i] = Some(v);
                continue;
            }
            if node == "diskseq" {
                seqs[i] = Some(v);
                continue;
            }
            let text = String::from_utf8_lossy(&v);
            if let Some(k) = claim_key(node, &text).filter(|k| wanted(k)) {
                if !hits.contains(&(i, k)) {
                    hits.push((i, k));
                }
            }
        }
        let mut claims = Vec::with_capacity(hits.len());
        for (i, key) in hits {
            let backend = &candidates[i];
            if self.stale_claim(backend, &key, seqs[i].as_deref()) {
                continue;
            }
            let dom = backend.rsplit('/').nth(1).unwrap_or("").to_string();
            let m = modes[i]
                .as_ref()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default();
            claims.push(Claim {
                identity: self.identity(&dom)?,
                backend: backend.clone(),
                domid: dom,
                key,
                mode: Mode::canonicalise(&m),
            });
        }
        Ok(claims)
    }

    /// Whether `backend`'s claim on `key` is stale: it recorded the
    /// diskseq `recorded` (see `sys::diskseq`) and the device with that
    /// number now has another (detached and bound again since: another
    /// disk). A claim without a recorded diskseq, or on a kernel without
    /// diskseq, stands.
    fn stale_claim(&self, backend: &str, key: &Key, recorded: Option<&[u8]>) -> bool {
        #[cfg(target_os = "linux")]
        if let (Key::Dev(d), Some(text)) = (key, recorded) {
            let rec = crate::sys::diskseq::parse(&String::from_utf8_lossy(text));
            if let (Some(rec), Some(now)) = (rec, crate::sys::diskseq::of_number(*d)) {
                if rec != now {
                    self.log(
                        LogLevel::Debug,
                        &format!(
                            "{backend}: device {d} has diskseq {now:x}, not the {rec:x} it \
                             recorded; not its claim any more"
                        ),
                    );
                    return true;
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (backend, key, recorded);
        false
    }

    /// `/local/domain/<d>/vm`, and the vm of the domain it is a stub for.
    pub(crate) fn identity(&self, domid: &str) -> Result<VmIdentity> {
        let s = &*self.store;
        let v = s.read_many(
            NO_TX,
            &[
                format!("/local/domain/{domid}/vm"),
                format!("/local/domain/{domid}/target"),
            ],
        )?;
        let text = |b: &Option<Vec<u8>>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .filter(|s| !s.is_empty())
        };
        let vm = text(&v[0]);
        let target_vm = match text(&v[1]).and_then(|t| t.trim().parse::<u32>().ok()) {
            Some(t) => {
                read_string(s, NO_TX, &format!("/local/domain/{t}/vm"))?.filter(|s| !s.is_empty())
            }
            None => None,
        };
        Ok(VmIdentity { vm, target_vm })
    }

    /// Write the result nodes in one transaction, after checking the backend
    /// still exists (never recreate a directory the toolstack removed).
    /// `diskseq` (the kernel's, of the device handed over) goes before
    /// `physical-device`, in the same transaction.
    fn write_connected(
        &self,
        path: &str,
        physical_device: Option<&str>,
        physical_path: &str,
        node: Option<&str>,
        diskseq: Option<u64>,
    ) -> Result<()> {
        let s = &*self.store;
        let mut writes = Vec::with_capacity(5);
        if let Some(seq) = diskseq {
            writes.push((format!("{path}/diskseq"), format!("{seq:x}").into_bytes()));
        }
        if let Some(n) = node {
            writes.push((format!("{path}/node"), n.as_bytes().to_vec()));
        }
        if let Some(d) = physical_device {
            writes.push((format!("{path}/physical-device"), d.as_bytes().to_vec()));
        }
        writes.push((
            format!("{path}/physical-device-path"),
            physical_path.as_bytes().to_vec(),
        ));
        writes.push((format!("{path}/hotplug-status"), b"connected".to_vec()));
        // One round trip for the check and the writes; when the backend is
        // gone the transaction is aborted, so none of them is applied.
        // In the transaction the decision started, if it did (see
        // `Context::wants_early_tx`).
        let first = self.take_early_tx();
        store::with_transaction_from(s, DEFAULT_TX_ATTEMPTS, first, |tx: TxId| {
            if s.write_if_present(tx, path, &writes)? {
                Ok(())
            } else {
                Err(Error::BadState(format!(
                    "{path}: the backend directory was removed during hotplug add"
                )))
            }
        })
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    /// The tag put in `lo_file_name`: `xenblock:` + the absolute backend path.
    pub(crate) fn loop_tag(&self, path: &str) -> Result<String> {
        let tag = format!("{LOOP_TAG_PREFIX}{}", self.absolute(path)?);
        #[cfg(target_os = "linux")]
        check_tag_fits(path, &tag)?;
        Ok(tag)
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    /// A backend path made absolute against this connection's home.
    pub(crate) fn absolute(&self, path: &str) -> Result<String> {
        if path.starts_with('/') {
            Ok(path.to_string())
        } else {
            Ok(format!("{}/{path}", self.store.home()?))
        }
    }

    #[cfg(target_os = "linux")]
    fn release_linux(&self, b: &Backend) -> Result<Released> {
        use crate::sys::loopdev;
        let Some(node) = b.node.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
            if b.physical_device.is_none() {
                return self.release_unrecorded(b);
            }
            return Ok(Released::Nothing);
        };
        if !is_loop_node(node) {
            return Err(Error::InvalidArgument(format!(
                "{}: 'node' is '{node}', which is not a loop device (/dev/loopN); not touching it",
                b.path
            )));
        }
        let tag = self.loop_tag(&b.path)?;
        // The file the backend names, if it still exists: a loop device that
        // upstream's script attached carries no xenblock tag but is backed by it.
        let file_id = b
            .target()
            .ok()
            .and_then(|t| crate::sys::stat::stat(&t).ok())
            .filter(|st| st.kind == FileKind::Regular)
            .map(|st| (st.dev, st.ino));
        // The binding prepare handed over, if it recorded one: a device
        // with another diskseq was detached and bound again since (its
        // number reused), and is someone else's.
        let recorded = match b.diskseq.as_deref() {
            None => None,
            Some(text) => Some(crate::sys::diskseq::parse(text).ok_or_else(|| {
                Error::BadState(format!(
                    "{}: 'diskseq' is '{text}', not a disk sequence number in hex, so \
                     xenblock cannot tell whether loop device {node} is still this \
                     backend's; it is left attached. Check with `losetup {node}` that it \
                     serves this backend's disk, then detach it with `losetup -d {node}`",
                    b.path
                ))
            })?),
        };
        let _lock = self.lock.acquire()?;
        let detached = loopdev::detach_if(Path::new(node), |info| {
            owned_by_backend(info, tag.as_bytes(), file_id, recorded)
        })?;
        if detached {
            return Ok(Released::Detached(node.to_string()));
        }
        match loopdev::status(Path::new(node))? {
            None => Ok(Released::Nothing),
            Some(_) => {
                self.log(
                    LogLevel::Warn,
                    &format!(
                        "{}: {node} now serves another file; it was not detached",
                        b.path
                    ),
                );
                Ok(Released::LeftAlone(node.to_string()))
            }
        }
    }

    /// Release a backend that records no device (neither `node` nor
    /// `physical-device`): never prepared, or its add was cut off (the
    /// toolstack killed) after attaching the loop device and before
    /// recording it. Such a device carries this backend's tag: detach it
    /// here, so that the remove undoes what the add did (`reconcile` would
    /// find it only once the backend is gone). Costs a listing of the loop
    /// devices, and the lock only when one is tagged for this backend.
    #[cfg(target_os = "linux")]
    fn release_unrecorded(&self, b: &Backend) -> Result<Released> {
        use crate::sys::loopdev;
        // A backend path too long for a tag never got a loop device.
        let Ok(tag) = self.loop_tag(&b.path) else {
            return Ok(Released::Nothing);
        };
        let tagged = |l: &loopdev::LoopInfo| l.file_name == tag.as_bytes();
        if !loopdev::list()?.iter().any(tagged) {
            return Ok(Released::Nothing);
        }
        let lock = self.lock.acquire()?;
        // Under the lock no add of this backend is half-way: one that
        // finished meanwhile recorded its device, released as usual.
        let now = Backend::read(&*self.store, NO_TX, &b.path)?;
        if now.node.is_some() || now.physical_device.is_some() {
            drop(lock);
            return self.release_linux(&now);
        }
        let mut released = Released::Nothing;
        for lo in loopdev::list()?.into_iter().filter(tagged) {
            if loopdev::detach_if(&lo.path, tagged)? {
                let node = lo.path.display().to_string();
                self.log(
                    LogLevel::Info,
                    &format!(
                        "{}: detached {node}, attached by an add of this backend that \
                         ended before recording it",
                        b.path
                    ),
                );
                released = Released::Detached(node);
            }
        }
        Ok(released)
    }

    #[cfg(not(target_os = "linux"))]
    fn release_linux(&self, _b: &Backend) -> Result<Released> {
        Ok(Released::Nothing)
    }

    /// Detach loop devices that xenblock attached (tagged `xenblock:<backend>`)
    /// and that no backend references any more: what a toolstack killed in
    /// the middle of `prepare` leaves behind. Loop devices xenblock did not
    /// make are never touched. `prefix` limits the sweep to backends whose
    /// absolute path starts with it (e.g. one domain's
    /// `/local/domain/0/backend/vbd/7/`); `None` sweeps all.
    #[cfg(target_os = "linux")]
    pub fn reconcile(&self, prefix: Option<&str>) -> Result<Reconciled> {
        use crate::sys::loopdev;
        let _lock = self.lock.acquire()?;
        let mut report = Reconciled::default();
        for lo in loopdev::list()? {
            let Some(backend) = lo.file_name.strip_prefix(LOOP_TAG_PREFIX.as_bytes()) else {
                continue;
            };
            let backend = String::from_utf8_lossy(backend).into_owned();
            if prefix.is_some_and(|p| !backend.starts_with(p)) {
                continue;
            }
            let node = lo.path.display().to_string();
            if lo.file_name.len() > loopdev::WHOLE_NAME_MAX {
                // Possibly cut by the kernel: the backend it names may not
                // be the one that owns it. Never act on such a tag.
                self.log(
                    LogLevel::Warn,
                    &format!(
                        "reconcile: {node} carries a xenblock tag that may be cut \
                         ({backend}...); left alone, detach it by hand if unused"
                    ),
                );
                continue;
            }
            let referenced = spec::normalise_path(&backend).is_ok()
                && read_string(&*self.store, NO_TX, &format!("{backend}/node"))?.as_deref()
                    == Some(node.as_str());
            if referenced {
                report.kept.push(node);
                continue;
            }
            let tag = lo.file_name.clone();
            if loopdev::detach_if(&lo.path, |now| now.file_name == tag)? {
                self.log(
                    LogLevel::Info,
                    &format!("reconcile: detached {node}, left over for {backend}"),
                );
                report.detached.push(node);
            }
        }
        Ok(report)
    }

    /// What a toolstack with its own event loop should do for `backend_path`:
    /// let xenblock handle it in-process, or exec the returned invocation
    /// itself (libxl runs scripts asynchronously with its own timeout).
    pub fn plan(&self, backend_path: &str, add: bool) -> Result<Plan> {
        let path = spec::normalise_path(backend_path)?;
        let script = spec::read_script_of_existing(&*self.store, &path)?;
        match self.handler(script.as_deref()) {
            Handler::InProcess => Ok(Plan::InProcess),
            Handler::Script(s) => Ok(Plan::Script(hotplug::invocation(
                self.script_flavour(),
                &self.config.script_dir,
                &s,
                &path,
                add,
            )?)),
        }
    }

    /// In-process or a custom script, for this context's script directory
    /// and drop-in path ([`spec::handler`]).
    pub(crate) fn handler(&self, script: Option<&str>) -> Handler {
        spec::handler(
            script,
            &self.config.script_dir,
            self.config.drop_in.as_deref(),
        )
    }

    fn script_flavour(&self) -> ScriptFlavour {
        match self.config.flavour {
            Flavour::Linux => ScriptFlavour::Linux,
            Flavour::FreeBsd => ScriptFlavour::FreeBsd,
            Flavour::NetBsd => ScriptFlavour::NetBsd,
        }
    }

    /// Run a custom hotplug script with its OS's contract. The hotplug lock is
    /// not held: the scripts take it themselves.
    fn run_custom_script(&self, b: &Backend, script: &str, add: bool) -> Result<()> {
        let inv = match hotplug::invocation(
            self.script_flavour(),
            &self.config.script_dir,
            script,
            &b.path,
            add,
        ) {
            Ok(inv) => inv,
            Err(e) => {
                if add {
                    self.report_failure(&b.path, &e);
                }
                return Err(e);
            }
        };
        let action = if add { "add" } else { "remove" };
        self.log(
            LogLevel::Debug,
            &format!("{}: running {} {action}", b.path, inv.program.display()),
        );
        let log = |stderr: bool, line: &str| {
            self.log(
                if stderr {
                    LogLevel::Warn
                } else {
                    LogLevel::Info
                },
                &format!("{} {action}: {line}", inv.program.display()),
            )
        };
        let out = hotplug::run(&inv, self.config.script_timeout, &log)?;
        let status = read_string(&*self.store, NO_TX, &format!("{}/hotplug-status", b.path))?;
        let refused = add && matches!(status.as_deref(), Some("error") | Some("busy"));
        // When the host reaped the script first its exit status is lost:
        // an add then counts as done only if the script said `connected`.
        let succeeded = match out.status {
            Some(st) => st.success(),
            None => !add || status.as_deref() == Some("connected"),
        };
        if succeeded && !refused {
            return Ok(());
        }
        let hotplug_error = read_string(&*self.store, NO_TX, &format!("{}/hotplug-error", b.path))?;
        let msg = hotplug::failure_message(&inv.program, add, &out, hotplug_error.as_deref());
        if status.as_deref() == Some("busy") {
            Err(Error::Busy(msg))
        } else {
            Err(Error::Script(msg))
        }
    }
}

/// What [`Context::reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Loop devices detached: xenblock's, referenced by no backend.
    pub detached: Vec<String>,
    /// xenblock's loop devices still in use by their backend.
    pub kept: Vec<String>,
}

/// What [`Context::plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Call `prepare`/`release`: xenblock does the work in-process.
    InProcess,
    /// Exec this custom script (argv, plus `env` added to the environment).
    Script(Invocation),
}

/// The loop devices over a file, for explaining image locks they hold.
#[cfg(target_os = "linux")]
fn own_loops(dev: u64, ino: u64) -> Result<crate::imagelock::OwnLoops> {
    let loops = crate::sys::loopdev::backed_by(dev, ino)?;
    Ok(crate::imagelock::OwnLoops {
        all: loops.len(),
        rw: loops.iter().filter(|l| !l.read_only).count(),
    })
}

/// Refuse a tag the kernel would cut (`lo_file_name` is 64 bytes with its
/// NUL): reconcile must be able to read it back whole.
#[cfg(target_os = "linux")]
fn check_tag_fits(backend: &str, tag: &str) -> Result<()> {
    let max = crate::sys::loopdev::WHOLE_NAME_MAX;
    if tag.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{backend}: the absolute backend path is {} bytes long; xenblock tags the loop \
             device of a file disk with \"{LOOP_TAG_PREFIX}<absolute backend path>\" and the \
             kernel keeps at most {max} bytes of it, so backend paths of file disks may be at \
             most {} bytes (use a shorter backend root, or a block device)",
            tag.len() - LOOP_TAG_PREFIX.len(),
            max - LOOP_TAG_PREFIX.len()
        )));
    }
    Ok(())
}

/// Whether release may detach the loop device `info` for the backend
/// whose tag is `tag`, whose file (if it still exists) is `file_id` and
/// which recorded the diskseq `recorded`:
/// - the diskseq, when both the backend and the kernel have one, must be
///   the recorded one (the same binding, not a later one on the same number);
/// - and the device carries this backend's own tag, or, attached by another
///   tool (upstream's script: no xenblock tag at all), is backed by the
///   backend's file. A device tagged for another backend is never its.
#[cfg(target_os = "linux")]
fn owned_by_backend(
    info: &crate::sys::loopdev::LoopInfo,
    tag: &[u8],
    file_id: Option<(u64, u64)>,
    recorded: Option<u64>,
) -> bool {
    if let (Some(want), Some(now)) = (recorded, info.diskseq) {
        if want != now {
            return false;
        }
    }
    if info.file_name == tag {
        return true;
    }
    !info.file_name.starts_with(LOOP_TAG_PREFIX.as_bytes())
        && file_id.is_some_and(|id| id == (info.backing_dev, info.backing_ino))
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn is_loop_node(node: &str) -> bool {
    node.strip_prefix("/dev/loop")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

fn not_file_or_device(backend: &str, p: &Path) -> Error {
    Error::InvalidArgument(format!(
        "{backend}: target {} is neither a regular file nor a block device",
        p.display()
    ))
}

/// Backend roots besides the request's own whose backends name a disk.
const OTHER_DISK_ROOTS: &[&str] = &["vbd", "vbd3", "qdisk"];

/// The path in a qdisk/vbd3 `params`: libxl writes `<format>:<path>`
/// (`aio:/srv/a.img` for raw, `qcow2:/...`, `vhd:/...`); older toolstacks
/// nest prefixes (`tap:aio:/...`) or write the bare path.
pub(crate) fn params_path(v: &str) -> Option<&str> {
    let mut rest = v;
    for _ in 0..4 {
        if rest.starts_with('/') {
            return Some(rest);
        }
        let (fmt, tail) = rest.split_once(':')?;
        if fmt.is_empty()
            || !fmt
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return None;
        }
        rest = tail;
    }
    None
}

/// What a backend's storage node names: `physical-device` a device number,
/// `params` (`<format>:<path>`) and `physical-device-path` a path, stat'ed.
pub(crate) fn claim_key(node: &str, text: &str) -> Option<Key> {
    match node {
        "physical-device" => DevNum::parse_hex(text).map(Key::Dev),
        "params" => params_path(text).and_then(|p| key_of_path(Path::new(p))),
        _ => key_of_path(Path::new(text.trim())),
    }
}

/// The identity of a FreeBSD-style claim: a device number or (dev, ino).
fn key_of_path(p: &Path) -> Option<Key> {
    key_of(&crate::sys::stat::stat(p).ok()?)
}

/// A device's number or a regular file's (dev, ino); nothing for others.
fn key_of(st: &FileStat) -> Option<Key> {
    match st.kind {
        FileKind::Block => Some(Key::Dev(DevNum::from_dev_t(st.rdev))),
        FileKind::Regular => Some(Key::File {
            dev: st.dev,
            ino: st.ino,
        }),
        _ => None,
    }
}

/// Resolve `params` to a canonical path and stat it. Relative names are
/// device names under `/dev/` (as upstream's `expand_dev` means to do).
fn resolve_target(backend: &str, target: &Path) -> Result<(PathBuf, FileStat)> {
    let candidate = if target.is_absolute() {
        target.to_path_buf()
    } else {
        if !target
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(Error::InvalidArgument(format!(
                "{backend}: relative target '{}' may only name a device under /dev \
                 (no '.' or '..'); give an absolute path",
                target.display()
            )));
        }
        Path::new("/dev").join(target)
    };
    let relative = !target.is_absolute();
    let resolved = match std::fs::canonicalize(&candidate) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let what = match std::fs::read_link(&candidate) {
                Ok(to) => format!(
                    "{} is a symbolic link to {}, which does not exist",
                    candidate.display(),
                    to.display()
                ),
                Err(_) if relative => format!(
                    "'{}' is relative, so it names a device under /dev, and {} does not exist \
                     (a file needs its absolute path, e.g. target=/srv/xen/{})",
                    target.display(),
                    candidate.display(),
                    target.display()
                ),
                Err(_) => format!("{} does not exist", candidate.display()),
            };
            return Err(Error::NotFound(format!(
                "{backend}: target {what}; check the disk's target= in the domain configuration"
            )));
        }
        Err(e) => {
            return Err(Error::io(
                format!("{backend}: cannot resolve target {}", candidate.display()),
                e,
            ))
        }
    };
    if resolved.starts_with("/proc") || resolved.starts_with("/sys") {
        return Err(Error::InvalidArgument(format!(
            "{backend}: target {} resolves into {}, which holds no disks",
            candidate.display(),
            resolved.display()
        )));
    }
    let st = crate::sys::stat::stat(&resolved)?;
    Ok((resolved, st))
}

/// `parts` joined with `/`, built without the formatting machinery: a scan
/// builds one such path per disk on the host.
fn join_path(parts: &[&str]) -> String {
    let mut p = String::with_capacity(parts.iter().map(|s| s.len() + 1).sum());
    for (i, s) in parts.iter().enumerate() {
        if i > 0 {
            p.push('/');
        }
        p.push_str(s);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdisk_params() {
        assert_eq!(params_path("aio:/srv/a.img"), Some("/srv/a.img"));
        assert_eq!(params_path("qcow2:/srv/a:b.qcow2"), Some("/srv/a:b.qcow2"));
        assert_eq!(params_path("tap:vhd:/srv/x.vhd"), Some("/srv/x.vhd"));
        assert_eq!(params_path("/dev/sdb"), Some("/dev/sdb"));
        assert_eq!(params_path("aio:"), None);
        assert_eq!(params_path("aio:relative"), None);
        assert_eq!(params_path("a b:/x"), None);
        assert_eq!(params_path(""), None);
    }

    #[test]
    fn loop_node_names() {
        assert!(is_loop_node("/dev/loop0"));
        assert!(is_loop_node("/dev/loop123"));
        assert!(!is_loop_node("/dev/loop"));
        assert!(!is_loop_node("/dev/sda"));
        assert!(!is_loop_node("/dev/loop1/../sda"));
    }

    #[test]
    fn relative_targets_stay_under_dev() {
        let e = resolve_target("b", Path::new("../etc/passwd")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = resolve_target("b", Path::new("no-such-device-xyz")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("/dev/no-such-device-xyz"), "{e}");
        let e = resolve_target("b", Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
}
