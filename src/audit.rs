//! `audit`: every conflict the sharing rule would refuse today, among the
//! disks already handed out (by xenblock, or by Xen's script, which with
//! its hex/decimal bug may have given one image read-write to two guests).
//!
//! Read-only: each backend that names a disk is checked as if it asked for
//! its disk now, with the same facts and the same rule as
//! [`Context::prepare`] (docs/sharing-overlap.md), against every other
//! backend, dom0's mounts and swap. Nothing is written and no lock is taken.

use crate::context::{Context, EarlyTx, Flavour};
use crate::error::Result;
#[cfg(target_os = "linux")]
use crate::sharing::DevNum;
use crate::sharing::{self, Facts, Key, Mode, Refusal, Request};
use crate::store::NO_TX;

/// A backend the rule would refuse today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The backend path (relative to this domain's home, as listed).
    pub backend: String,
    /// Its frontend domain.
    pub domid: String,
    /// Its canonical mode.
    pub mode: Mode,
    /// What conflicts with it, as the refusal of a prepare would say it.
    pub message: String,
}

/// What [`Context::audit`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// How many backends naming a disk were checked.
    pub checked: usize,
    /// Backends in conflict with another backend or with dom0 (a pair of
    /// writers shows once from each side).
    pub conflicts: Vec<Finding>,
    /// Backends whose block stack could not be read completely: the audit
    /// cannot tell whether they conflict.
    pub unsure: Vec<Finding>,
    /// Backends left out, and why (a loop device since bound again, ...).
    pub skipped: Vec<String>,
}

impl Audit {
    /// True when nothing was found and nothing was unclear.
    pub fn clean(&self) -> bool {
        self.conflicts.is_empty() && self.unsure.is_empty()
    }
}

/// The backend roots audited, under this domain's home.
const ROOTS: &[&str] = &["backend/vbd", "backend/vbd3", "backend/qdisk"];

impl Context {
    /// Report every current conflict on this host: two backends of
    /// different VMs on overlapping storage with at least one writer, or a
    /// backend on storage dom0 holds (mounted, swap). Read-only; takes no
    /// lock, so prepares running meanwhile may or may not be seen. Run it
    /// as root (loop devices and block devices are opened to be identified).
    pub fn audit(&self) -> Result<Audit> {
        let s = &*self.store;
        let mut report = Audit::default();
        let roots: Vec<String> = ROOTS.iter().map(|r| r.to_string()).collect();
        let doms = s.directory_many(NO_TX, &roots)?;
        let mut backends = Vec::new();
        for (root, list) in roots.iter().zip(doms) {
            let dom_paths: Vec<String> = list
                .unwrap_or_default()
                .into_iter()
                .map(|d| format!("{root}/{d}"))
                .collect();
            let devs = s.directory_many(NO_TX, &dom_paths)?;
            for (dp, list) in dom_paths.iter().zip(devs) {
                for dev in list.unwrap_or_default() {
                    backends.push(format!("{dp}/{dev}"));
                }
            }
        }
        backends.sort();
        for b in &backends {
            self.audit_one(b, &mut report)?;
        }
        Ok(report)
    }

    fn audit_one(&self, backend: &str, report: &mut Audit) -> Result<()> {
        let kind = backend.rsplit('/').nth(2).unwrap_or("");
        let domid = backend.rsplit('/').nth(1).unwrap_or("").to_string();
        let names = [
            "physical-device",
            "physical-device-path",
            "params",
            "mode",
            "diskseq",
        ];
        let paths: Vec<String> = names.iter().map(|n| format!("{backend}/{n}")).collect();
        let v = self.store.read_many(NO_TX, &paths)?;
        let text = |i: usize| {
            v[i].as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let (pd, pdp, params, mode_raw, diskseq) = (text(0), text(1), text(2), text(3), text(4));
        // What names the disk, as the rule reads other backends' claims.
        let key = if kind == "vbd" {
            if self.config.flavour == Flavour::FreeBsd {
                pdp.as_deref()
                    .and_then(|t| crate::attach::claim_key("physical-device-path", t))
            } else {
                pd.as_deref()
                    .and_then(|t| crate::attach::claim_key("physical-device", t))
            }
        } else {
            params
                .as_deref()
                .and_then(|t| crate::attach::claim_key("params", t))
                .or_else(|| {
                    pd.as_deref()
                        .and_then(|t| crate::attach::claim_key("physical-device", t))
                })
        };
        // (Only Linux looks through a loop device to its file below.)
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let Some(mut key) = key
        else {
            return Ok(()); // not prepared, or names nothing that exists
        };
        let mode = Mode::canonicalise(mode_raw.as_deref().unwrap_or(""));
        if mode == Mode::Force {
            report.skipped.push(format!(
                "{backend}: mode {} (forced sharing, as its administrator asked)",
                mode_raw.unwrap_or_default()
            ));
            return Ok(());
        }
        // A loop device is checked as its file, as prepare checked it; one
        // bound again since (another diskseq) is no longer this backend's.
        #[cfg(target_os = "linux")]
        if let Key::Dev(d) = key {
            match self.loop_file_of(d, diskseq.as_deref()) {
                LoopOf::NotLoop => {}
                LoopOf::File(k) => key = k,
                LoopOf::Stale(why) => {
                    report.skipped.push(format!("{backend}: {why}"));
                    return Ok(());
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = diskseq;
        report.checked += 1;
        // Named as people know it: a file by its path, a device by its node
        // (a qdisk/vbd3 `params` less its `<format>:` prefix).
        let params = match (kind, params) {
            ("vbd", p) => p,
            (_, Some(p)) => Some(crate::attach::params_path(&p).map_or(p.clone(), str::to_string)),
            (_, None) => None,
        };
        let target = match key {
            Key::File { .. } => params.or(pdp),
            Key::Dev(_) => pdp.or(params),
        }
        .unwrap_or_else(|| key.to_string());
        let _early = EarlyTx(self);
        let keys = vec![key];
        #[allow(unused_mut)]
        let (mut topology, overlap, mounts, swaps) = self.gather_stack(&keys, true)?;
        // Ask the kernel too, as prepare does: an exclusive opener (a mount
        // in another mount namespace, an external journal or log device)
        // shows in no table. blkback opens a guest's device without
        // claiming it exclusively, so a running guest's own backend does not
        // show here as a holder.
        #[cfg(target_os = "linux")]
        if mode == Mode::Write && self.config.flavour == Flavour::Linux {
            let src = crate::sys::blockdev::Sources::system();
            crate::sys::blockdev::probe_exclusive(&src, &mut topology, &overlap, true);
        }
        let wanted = |k: &Key| overlap.contains(k);
        let claims = self.gather_claims(backend, &wanted)?;
        let identity = self.identity(&domid)?;
        let req = Request {
            backend: backend.to_string(),
            target,
            mode,
            identity,
            keys,
        };
        // Image files in the stack, the disk's own included, that a user
        // outside Xen (a QEMU guest, qemu-nbd, a virtlockd lease, another
        // host) holds with image locks: claims like the backends'.
        let known: Vec<(Key, String)> = match key {
            k @ Key::File { .. } => vec![(k, req.target.clone())],
            Key::Dev(_) => Vec::new(),
        };
        let locks = self.gather_lock_claims(&overlap, &[], &known, &mut topology);
        let facts = Facts {
            topology: &topology,
            mounts: &mounts,
            swaps: &swaps,
            claims: &claims,
            locks: &locks,
        };
        if let Err(mut r) = sharing::decide(&req, &facts) {
            if let Refusal::Guest {
                backend,
                domid,
                pid,
                ..
            } = &mut r
            {
                if backend
                    .rsplitn(3, '/')
                    .nth(2)
                    .is_some_and(|r| r.ends_with("qdisk"))
                {
                    *pid = self.device_model_pid(domid);
                }
            }
            let message = match r {
                Refusal::Locked { .. } => format!("image locks: {}", r.message(&req)),
                _ => r.message(&req),
            };
            let f = Finding {
                backend: backend.to_string(),
                domid,
                mode,
                message,
            };
            match r {
                Refusal::Doubt { .. } => report.unsure.push(f),
                _ => report.conflicts.push(f),
            }
        }
        Ok(())
    }

    /// Whether device `d` is a loop device, and then the file it serves.
    #[cfg(target_os = "linux")]
    fn loop_file_of(&self, d: DevNum, recorded: Option<&str>) -> LoopOf {
        if d.major != 7 {
            return LoopOf::NotLoop;
        }
        // Its name from sysfs (`/sys/dev/block/7:N` links to `.../loopN`).
        let sys = format!("/sys/dev/block/{}:{}", d.major, d.minor);
        let Some(name) = std::fs::read_link(&sys)
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_os_string()))
        else {
            return LoopOf::Stale(format!("loop device {d} no longer exists"));
        };
        let node = std::path::Path::new("/dev").join(name);
        match crate::sys::loopdev::status(&node) {
            Ok(Some(info)) => {
                let want = recorded.and_then(crate::sys::diskseq::parse);
                if let (Some(w), Some(now)) = (want, info.diskseq) {
                    if w != now {
                        return LoopOf::Stale(format!(
                            "loop device {} was detached and bound again since it was \
                             prepared (diskseq {:x}, recorded {w:x}); not this backend's",
                            info.path.display(),
                            now
                        ));
                    }
                }
                // Over a block device (`losetup /dev/X`): checked as X, as
                // prepare checks it; otherwise as its file.
                let dir = std::path::Path::new(&sys);
                LoopOf::File(
                    crate::sys::blockdev::backing_device(dir, info.backing_dev, info.backing_ino)
                        .unwrap_or(Key::File {
                            dev: info.backing_dev,
                            ino: info.backing_ino,
                        }),
                )
            }
            Ok(None) => LoopOf::Stale(format!("loop device {d} is no longer bound")),
            // Not readable as a loop device: checked as the device itself.
            Err(_) => LoopOf::NotLoop,
        }
    }
}

#[cfg(target_os = "linux")]
enum LoopOf {
    NotLoop,
    File(Key),
    Stale(String),
}
