//! The sharing rule: a file or device given to one VM read-write is given to
//! no other VM. A pure function over gathered facts, so it is testable
//! without root, loop devices or xenstore.
//! (Types are fixed here; the rule itself is implemented below.)
pub use crate::devkey::{DevNum, Key};
use crate::topology::{self, How, Topology};

/// A canonical access mode (docs/contract.md): no `w` → Read; `w` and `!` → Force
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
    /// The target's own keys (normally one: a device number, or a file's
    /// (st_dev, st_ino)). Everything that overlaps them comes from the
    /// topology given to [`decide`]; [`check`] compares these alone.
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

/// An image file someone outside xenstore holds with QEMU-compatible image
/// locks (docs/image-locks.md): a QEMU or qemu-img/qemu-io/qemu-nbd
/// process, a libvirt virtlockd lease, or another host on a shared file
/// system. A claim like a backend's, but of nobody the sharing rule can
/// ask to share (no same-VM exception).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockClaim {
    /// The file.
    pub key: Key,
    /// Its path, as the lock test found it.
    pub path: String,
    /// `Write` when the holder writes (or forbids reading, or holds a
    /// read-write lease): it conflicts with every request. `Read` when it
    /// only forbids others to write (a read-only QEMU, a shareable lease):
    /// it conflicts with read-write requests.
    pub mode: Mode,
    /// What the holder does, e.g. "a QEMU-compatible user writes to it
    /// (lock byte 101)".
    pub what: String,
    /// Who holds it, as far as this host can tell.
    pub holder: String,
}

/// A mounted filesystem in the backend domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: DevNum,
    pub mount_point: String,
    pub read_only: bool,
}

/// Why an attach is refused. `via` is the chain from the target to the
/// device the other user holds (empty when it holds the target itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Mounted in the backend domain.
    Local {
        dev: DevNum,
        mount_point: String,
        read_only: bool,
        via: Vec<Step>,
    },
    /// Held by another VM's backend.
    Guest {
        backend: String,
        domid: String,
        key: Key,
        mode: Mode,
        via: Vec<Step>,
        /// The process serving that backend, when known (the QEMU of a
        /// qdisk backend); [`decide`] leaves it `None`, the caller fills it.
        pid: Option<u32>,
    },
    /// An image file in the target's stack is held by a user outside Xen
    /// with QEMU-compatible image locks ([`LockClaim`]).
    Locked {
        path: String,
        what: String,
        holder: String,
        via: Vec<Step>,
    },
    /// Active swap in the backend domain.
    Swap { via: Vec<Step> },
    /// A read-write request under a device the backend domain's kernel
    /// stacks on the target (dm, md, ...): the last step names it.
    Held { via: Vec<Step> },
    /// A read-write request on blocks the backend domain's kernel holds
    /// exclusively (an `O_EXCL` open failed with `EBUSY`): the last step of
    /// `via` (or the target) is the held device, `by` what holds it when it
    /// could be told (empty otherwise).
    Exclusive { via: Vec<Step>, by: String },
    /// The block stack around the target could not be read completely, and
    /// a read-write request is refused while unsure.
    Doubt { what: String },
}

/// One step of a refusal's chain, named for people: "<previous> <how> <name>".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub how: How,
}

/// A device or file the backend domain uses as swap (`/proc/swaps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub key: Key,
    pub name: String,
}

/// Everything one decision looks at, gathered once.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub topology: &'a Topology,
    pub mounts: &'a [Mount],
    pub swaps: &'a [Swap],
    pub claims: &'a [Claim],
    /// Image files in the stack held by users outside Xen (image locks).
    pub locks: &'a [LockClaim],
}

/// Whether two frontends belong to the same VM: any of `a.vm == b.vm`,
/// `a.target_vm == b.vm`, `a.vm == b.target_vm`, `a.target_vm == b.target_vm`
/// holds, comparing only present values.
///
/// A missing value never matches anything, not even another missing value.
/// This is a deliberate divergence from upstream's `same_vm` in
/// `block-common.sh`, which treats a missing `vm` as "same" and so lets two
/// unidentified frontends share a disk read-write.
pub fn same_vm(a: &VmIdentity, b: &VmIdentity) -> bool {
    let eq =
        |x: &Option<String>, y: &Option<String>| matches!((x, y), (Some(x), Some(y)) if x == y);
    eq(&a.vm, &b.vm)
        || eq(&a.target_vm, &b.vm)
        || eq(&a.vm, &b.target_vm)
        || eq(&a.target_vm, &b.target_vm)
}

/// Apply the sharing rule (docs/contract.md) by identity only: [`decide`] with no
/// block topology and no swap, so `req.keys` are the only devices that
/// carry the target.
///
/// - `req.mode == Mode::Force`: no checks at all, `Ok`.
/// - Local (checked first): a mount on a device in `req.keys` refuses; for a
///   `Read` request only read-write mounts count.
/// - Guest: a claim on a key in `req.keys` refuses when the request or the
///   claim is `Write` and the two frontends are not the same VM
///   ([`same_vm`]). A claim with `req.backend` as its backend is our own and
///   is ignored. A `Force` holder conflicts with a `Write` request but not with
///   a `Read` one.
///
/// The first offender in input order is reported (mounts before claims).
pub fn check(req: &Request, mounts: &[Mount], claims: &[Claim]) -> Result<(), Refusal> {
    decide(
        req,
        &Facts {
            topology: &Topology::default(),
            mounts,
            swaps: &[],
            claims,
            locks: &[],
        },
    )
}

/// The sharing rule over overlap: every device or file whose blocks can
/// meet the target's ([`topology::walk`] from `req.keys`) carries it, and
/// its users are the target's users.
///
/// In order, the first offender refuses:
/// 1. a mount in the backend domain on an overlapping device (for `Read`,
///    only read-write mounts);
/// 2. active swap on an overlapping device or file (any mode);
/// 3. another backend's claim on an overlapping key, under the guest rule of
///    [`check`] (same-VM and stubdom exceptions, `!` holders block writers);
///    then an image file in the overlap held with image locks by a user
///    outside Xen ([`LockClaim`]: writers block everyone, users that only
///    forbid writing block writers);
/// 4. for `Write` only: a device the backend domain stacks over the target
///    (dm, md, ... built on it: writing under it corrupts it), then any doubt
///    about the topology (unreadable entries, too many devices).
///
/// `Force` skips everything. Read-only sharing stays allowed.
pub fn decide(req: &Request, f: &Facts<'_>) -> Result<(), Refusal> {
    if req.mode == Mode::Force {
        return Ok(());
    }
    let o = topology::walk(&req.keys, &mut f.topology.graph());
    let name = |k: &Key| {
        if req.keys.contains(k) {
            req.target.clone()
        } else {
            f.topology.name(k)
        }
    };
    let via = |k: &Key| -> Vec<Step> {
        o.path(k)
            .unwrap_or_default()
            .into_iter()
            .map(|h| Step {
                name: name(&h.to),
                how: h.how,
            })
            .collect()
    };
    if let Some(m) = f
        .mounts
        .iter()
        .find(|m| o.contains(&Key::Dev(m.dev)) && (req.mode == Mode::Write || !m.read_only))
    {
        return Err(Refusal::Local {
            dev: m.dev,
            mount_point: m.mount_point.clone(),
            read_only: m.read_only,
            via: via(&Key::Dev(m.dev)),
        });
    }
    if let Some(s) = f.swaps.iter().find(|s| o.contains(&s.key)) {
        return Err(Refusal::Swap { via: via(&s.key) });
    }
    if let Some(c) = f.claims.iter().find(|c| {
        c.backend != req.backend
            && o.contains(&c.key)
            && (req.mode == Mode::Write || c.mode == Mode::Write)
            && !same_vm(&req.identity, &c.identity)
    }) {
        return Err(Refusal::Guest {
            backend: c.backend.clone(),
            domid: c.domid.clone(),
            key: c.key,
            mode: c.mode,
            via: via(&c.key),
            pid: None,
        });
    }
    if let Some(l) = f
        .locks
        .iter()
        .find(|l| o.contains(&l.key) && (req.mode == Mode::Write || l.mode == Mode::Write))
    {
        return Err(Refusal::Locked {
            path: l.path.clone(),
            what: l.what.clone(),
            holder: l.holder.clone(),
            via: via(&l.key),
        });
    }
    if req.mode == Mode::Write {
        if let Some(h) = o.holders().next() {
            return Err(Refusal::Held { via: via(h) });
        }
        // What a target is built on is held by the target's own stack (a
        // partition's disk, an LV's PV): only the target and what meets it
        // from beside or above count.
        if let Some((k, by)) = f
            .topology
            .exclusive
            .iter()
            .find(|(k, _)| o.contains(k) && !o.is_below(k))
        {
            return Err(Refusal::Exclusive {
                via: via(k),
                by: by.clone(),
            });
        }
        let mut doubts = f.topology.doubts.clone();
        if o.truncated {
            doubts.push(format!(
                "more than {} devices are stacked with it; not all were examined",
                topology::MAX_NODES
            ));
        }
        if !doubts.is_empty() {
            return Err(Refusal::Doubt {
                what: doubts.join("; "),
            });
        }
    }
    Ok(())
}

/// "<target> is part of /dev/sdb, which is held by dm-2 (vg0-lv1)".
fn chain(target: &str, via: &[Step]) -> String {
    let mut s = target.to_string();
    for (i, st) in via.iter().enumerate() {
        s.push_str(if i == 0 { " " } else { ", which " });
        s.push_str(match st.how {
            How::PartOf => "is part of",
            How::BuiltOn => "is built on",
            How::LoopOver => "is a loop device over",
            How::Contains { beside: false } => "contains",
            How::Contains { beside: true } => "contains the overlapping partition",
            How::HeldBy { beside: false } => "is held by",
            How::HeldBy { beside: true } => "is also held by",
            How::BackingOf => "is the backing file of",
            How::SameFile => "is the same file as",
        });
        s.push(' ');
        s.push_str(&one_line(&st.name));
    }
    s
}

/// "through QEMU" for a qdisk backend, "through tapdisk" for vbd3.
fn through(backend: &str) -> Option<&'static str> {
    let root = backend.rsplitn(3, '/').nth(2)?;
    match root.rsplit('/').next()? {
        "qdisk" => Some("through QEMU"),
        "vbd3" => Some("through tapdisk (vbd3)"),
        _ => None,
    }
}

/// Make text from xenstore or mountinfo safe for a one-line message: control
/// characters (newlines included) are shown escaped.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Refusal {
    /// A one-line message for people: names the target, the requested mode
    /// and who holds it (through which chain of devices), and says what to
    /// do about it.
    pub fn message(&self, req: &Request) -> String {
        let target = one_line(&req.target);
        let ours = one_line(&req.backend);
        let want = req.mode.describe();
        match self {
            Refusal::Local {
                dev,
                mount_point,
                read_only,
                via,
            } => {
                let how = if *read_only { Mode::Read } else { Mode::Write }.describe();
                if via.is_empty() {
                    format!(
                        "{target} (device {dev}) is mounted {how} at {} in the backend domain; \
                         refusing to attach it {want} to {ours}. Unmount it first.",
                        one_line(mount_point)
                    )
                } else {
                    format!(
                        "{}, mounted {how} on {} in dom0; refusing to attach {target} {want} \
                         to {ours}. Unmount it first.",
                        chain(&target, via),
                        one_line(mount_point)
                    )
                }
            }
            Refusal::Locked {
                path,
                what,
                holder,
                via,
            } => {
                let what = format!(
                    "{} {}; {}",
                    one_line(path),
                    one_line(what),
                    one_line(holder)
                );
                let chain = if via.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", chain(&target, via))
                };
                format!(
                    "{chain}{what}; refusing to attach {target} {want} to {ours}. Stop that \
                     user first."
                )
            }
            Refusal::Guest {
                backend,
                domid,
                key,
                mode,
                via,
                pid,
            } => {
                let (domid, backend) = (one_line(domid), one_line(backend));
                // The QEMU serving a qdisk backend, by pid when known.
                let served = through(&backend).map(|t| match pid {
                    Some(p) => (t, format!("pid {p}, {backend}")),
                    None => (t, backend.clone()),
                });
                let advice = "Detach it there first, or use mode 'r' on both to share it \
                              read-only.";
                match (via.is_empty(), served) {
                    (true, None) => {
                        let what = match key {
                            Key::Dev(d) => format!("device {d}"),
                            k @ Key::File { .. } => k.to_string(),
                        };
                        format!(
                            "{target} ({what}) is attached {} to domain {domid} ({backend}); \
                             refusing to attach it {want} to {ours}. {advice}",
                            mode.describe(),
                        )
                    }
                    (true, Some((through, backend))) => format!(
                        "{target} is used {} by domain {domid} {through} ({backend}); refusing \
                         to attach it {want} to {ours}. {advice}",
                        mode.describe()
                    ),
                    (false, None) => format!(
                        "{}, which domain {domid} has {} ({backend}); refusing to attach \
                         {target} {want} to {ours}. {advice}",
                        chain(&target, via),
                        mode.describe()
                    ),
                    (false, Some((through, backend))) => format!(
                        "{}, which domain {domid} uses {} {through} ({backend}); refusing to \
                         attach {target} {want} to {ours}. {advice}",
                        chain(&target, via),
                        mode.describe()
                    ),
                }
            }
            Refusal::Swap { via } => {
                let what = if via.is_empty() {
                    format!("{target} is active swap in dom0")
                } else {
                    format!("{}, which is active swap in dom0", chain(&target, via))
                };
                format!(
                    "{what}; refusing to attach {target} {want} to {ours}. Turn that swap off \
                     first (swapoff)."
                )
            }
            Refusal::Held { via } => format!(
                "{} in dom0; refusing to attach {target} {want} to {ours}: a guest writing \
                 under a device dom0 stacks on it corrupts both. Take that device down first \
                 (e.g. vgchange -an, mdadm --stop, kpartx -d, dmsetup remove), or use mode 'r'.",
                chain(&target, via)
            ),
            Refusal::Exclusive { via, by } => {
                let by = if by.is_empty() {
                    "held open exclusively by the kernel (a mount in another mount namespace, \
                     a member of a multi-device filesystem, an external journal or log device \
                     of a mounted filesystem, or a program that opened it with O_EXCL)"
                        .to_string()
                } else {
                    one_line(by)
                };
                let what = if via.is_empty() {
                    format!("{target} is {by}")
                } else {
                    format!("{}, which is {by}", chain(&target, via))
                };
                format!(
                    "{what}; refusing to attach {target} {want} to {ours}: a guest writing \
                     there corrupts it. Release it in dom0 first (unmount it wherever it is \
                     mounted, e.g. `findmnt -N PID` or `grep DEVICE /proc/*/mountinfo` for other \
                     namespaces), or use mode 'r'."
                )
            }
            Refusal::Doubt { what } => format!(
                "cannot tell what else uses the blocks of {target}: {}; refusing to attach it \
                 {want} to {ours} while unsure. Retry, or use mode 'r' (or 'w!' to skip all \
                 sharing checks).",
                one_line(what)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "backend/vbd/9/51712";
    const THEIRS: &str = "backend/vbd/7/51712";

    fn dev(major: u32, minor: u32) -> DevNum {
        DevNum { major, minor }
    }
    fn id(vm: Option<&str>, target_vm: Option<&str>) -> VmIdentity {
        VmIdentity {
            vm: vm.map(str::to_owned),
            target_vm: target_vm.map(str::to_owned),
        }
    }
    fn vm(v: &str) -> VmIdentity {
        id(Some(v), None)
    }
    fn req(mode: Mode, identity: VmIdentity, keys: Vec<Key>) -> Request {
        Request {
            backend: OURS.into(),
            target: "/srv/disk.img".into(),
            mode,
            identity,
            keys,
        }
    }
    fn claim(backend: &str, domid: &str, key: Key, mode: Mode, identity: VmIdentity) -> Claim {
        Claim {
            backend: backend.into(),
            domid: domid.into(),
            key,
            mode,
            identity,
        }
    }
    fn theirs(key: Key, mode: Mode) -> Claim {
        claim(THEIRS, "7", key, mode, vm("/vm/other"))
    }
    fn mount(d: DevNum, read_only: bool) -> Mount {
        Mount {
            dev: d,
            mount_point: "/mnt/data".into(),
            read_only,
        }
    }
    const LOOP0: Key = Key::Dev(DevNum { major: 7, minor: 0 });
    const LOOP1: Key = Key::Dev(DevNum { major: 7, minor: 1 });

    fn guest_refusal(backend: &str, domid: &str, key: Key, mode: Mode) -> Result<(), Refusal> {
        Err(Refusal::Guest {
            backend: backend.into(),
            domid: domid.into(),
            key,
            mode,
            via: vec![],
            pid: None,
        })
    }
    fn local_refusal(d: DevNum, read_only: bool) -> Result<(), Refusal> {
        Err(Refusal::Local {
            dev: d,
            mount_point: "/mnt/data".into(),
            read_only,
            via: vec![],
        })
    }

    // ---- DevNum ----

    #[test]
    fn devnum_parse_hex() {
        assert_eq!(DevNum::parse_hex("fd:3"), Some(dev(0xfd, 3)));
        assert_eq!(DevNum::parse_hex("7:0"), Some(dev(7, 0)));
        assert_eq!(DevNum::parse_hex("103:10000"), Some(dev(259, 65536)));
        for bad in ["", "7", "g:1", "7:0:1", ":1", "7:", "-1:0", "123456789:0"] {
            assert_eq!(DevNum::parse_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn devnum_display_lower_hex_no_leading_zeros() {
        assert_eq!(dev(0xfd, 3).to_string(), "fd:3");
        assert_eq!(dev(7, 0).to_string(), "7:0");
        assert_eq!(dev(259, 65536).to_string(), "103:10000");
        assert_eq!(DevNum::parse_hex("00FD:0003").unwrap().to_string(), "fd:3");
    }

    #[test]
    fn devnum_dev_t_round_trip() {
        for d in [
            dev(0, 0),
            dev(7, 0),
            dev(8, 1),
            dev(259, 65536),
            dev(4095, 255),
            dev(4096, 256),
            dev(0xffff_ffff, 0xffff_ffff),
        ] {
            assert_eq!(DevNum::from_dev_t(d.to_dev_t()), d, "{d}");
        }
        assert_eq!(dev(8, 1).to_dev_t(), 0x801);
        assert_eq!(DevNum::from_dev_t(0x801), dev(8, 1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn devnum_matches_libc_makedev() {
        for (ma, mi) in [
            (8, 1),
            (259, 65536),
            (4096, 1 << 20),
            (0xffff_ffff, 0xffff_ffff),
        ] {
            let raw = libc::makedev(ma, mi);
            assert_eq!(dev(ma, mi).to_dev_t(), raw);
            assert_eq!(
                DevNum::from_dev_t(raw),
                dev(libc::major(raw), libc::minor(raw))
            );
        }
    }

    #[test]
    fn key_display() {
        assert_eq!(LOOP0.to_string(), "7:0");
        assert_eq!(Key::Dev(dev(0xfd, 0x1a)).to_string(), "fd:1a");
        assert_eq!(
            Key::File {
                dev: dev(8, 1).to_dev_t(),
                ino: 1234
            }
            .to_string(),
            "inode 1234 on device 8:1"
        );
    }

    // ---- same_vm ----

    #[test]
    fn same_vm_cases() {
        assert!(same_vm(&vm("/vm/a"), &vm("/vm/a")));
        assert!(!same_vm(&vm("/vm/a"), &vm("/vm/b")));
        assert!(same_vm(&id(Some("/vm/stub"), Some("/vm/a")), &vm("/vm/a")));
        assert!(same_vm(&vm("/vm/a"), &id(Some("/vm/stub"), Some("/vm/a"))));
        assert!(same_vm(
            &id(Some("/vm/s1"), Some("/vm/a")),
            &id(Some("/vm/s2"), Some("/vm/a"))
        ));
        assert!(!same_vm(&id(None, None), &id(None, None)));
        assert!(!same_vm(&id(None, Some("/vm/a")), &id(None, Some("/vm/b"))));
        assert!(!same_vm(&vm("/vm/a"), &id(None, None)));
    }

    // ---- check: Force ----

    #[test]
    fn force_skips_everything() {
        let r = req(Mode::Force, vm("/vm/mine"), vec![LOOP0]);
        let mounts = [mount(dev(7, 0), false)];
        let claims = [theirs(LOOP0, Mode::Write)];
        assert_eq!(check(&r, &mounts, &claims), Ok(()));
        // ...whereas the same facts refuse a plain Write.
        let w = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(check(&w, &mounts, &claims), local_refusal(dev(7, 0), false));
    }

    // ---- check: local ----

    #[test]
    fn rw_mount_refuses_read_and_write() {
        let mounts = [mount(dev(7, 0), false)];
        for mode in [Mode::Read, Mode::Write] {
            let r = req(mode, vm("/vm/mine"), vec![LOOP0]);
            assert_eq!(
                check(&r, &mounts, &[]),
                local_refusal(dev(7, 0), false),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn ro_mount_refuses_write_only() {
        let mounts = [mount(dev(7, 0), true)];
        let r = req(Mode::Read, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(check(&r, &mounts, &[]), Ok(()));
        let w = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(check(&w, &mounts, &[]), local_refusal(dev(7, 0), true));
    }

    #[test]
    fn mount_on_other_device_ignored() {
        let mounts = [mount(dev(8, 1), false), mount(dev(7, 1), false)];
        let w = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(check(&w, &mounts, &[]), Ok(()));
    }

    #[test]
    fn mount_does_not_match_file_key() {
        // A File key's st_dev is the filesystem the file lives on, not a
        // device that carries the target: a mount there is no conflict.
        let k = Key::File {
            dev: dev(8, 1).to_dev_t(),
            ino: 12,
        };
        let w = req(Mode::Write, vm("/vm/mine"), vec![k]);
        assert_eq!(check(&w, &[mount(dev(8, 1), false)], &[]), Ok(()));
    }

    #[test]
    fn local_checked_before_guest() {
        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0, LOOP1]);
        let mounts = [mount(dev(7, 1), true)];
        let claims = [theirs(LOOP0, Mode::Write)];
        assert_eq!(check(&r, &mounts, &claims), local_refusal(dev(7, 1), true));
    }

    #[test]
    fn first_offender_in_input_order() {
        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0, LOOP1]);
        let claims = [
            claim("backend/vbd/5/1", "5", LOOP1, Mode::Read, vm("/vm/x")),
            claim("backend/vbd/6/1", "6", LOOP0, Mode::Write, vm("/vm/y")),
        ];
        assert_eq!(
            check(&r, &[], &claims),
            guest_refusal("backend/vbd/5/1", "5", LOOP1, Mode::Read)
        );
        let mounts = [
            Mount {
                dev: dev(7, 1),
                mount_point: "/a".into(),
                read_only: false,
            },
            Mount {
                dev: dev(7, 0),
                mount_point: "/b".into(),
                read_only: false,
            },
        ];
        assert_eq!(
            check(&r, &mounts, &claims),
            Err(Refusal::Local {
                dev: dev(7, 1),
                mount_point: "/a".into(),
                read_only: false,
                via: vec![],
            })
        );
    }

    // ---- check: guest ----

    #[test]
    fn read_holder_read_request_ok() {
        let r = req(Mode::Read, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(check(&r, &[], &[theirs(LOOP0, Mode::Read)]), Ok(()));
    }

    #[test]
    fn read_holder_write_request_refused() {
        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(
            check(&r, &[], &[theirs(LOOP0, Mode::Read)]),
            guest_refusal(THEIRS, "7", LOOP0, Mode::Read)
        );
    }

    #[test]
    fn write_holder_read_request_refused() {
        let r = req(Mode::Read, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(
            check(&r, &[], &[theirs(LOOP0, Mode::Write)]),
            guest_refusal(THEIRS, "7", LOOP0, Mode::Write)
        );
    }

    #[test]
    fn write_holder_write_request_refused() {
        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(
            check(&r, &[], &[theirs(LOOP0, Mode::Write)]),
            guest_refusal(THEIRS, "7", LOOP0, Mode::Write)
        );
    }

    #[test]
    fn holder_on_other_key_ignored() {
        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(check(&r, &[], &[theirs(LOOP1, Mode::Write)]), Ok(()));
    }

    #[test]
    fn same_vm_direct_allows_write_write() {
        let r = req(Mode::Write, vm("/vm/a"), vec![LOOP0]);
        let c = claim(THEIRS, "7", LOOP0, Mode::Write, vm("/vm/a"));
        assert_eq!(check(&r, &[], &[c]), Ok(()));
    }

    #[test]
    fn stub_domain_request_target_matches_claim_vm() {
        // We are the device-model stub domain of the VM that holds it.
        let r = req(
            Mode::Write,
            id(Some("/vm/stub"), Some("/vm/a")),
            vec![LOOP0],
        );
        let c = claim(THEIRS, "7", LOOP0, Mode::Write, vm("/vm/a"));
        assert_eq!(check(&r, &[], &[c]), Ok(()));
    }

    #[test]
    fn stub_domain_claim_target_matches_request_vm() {
        // The holder is the stub domain of our VM.
        let r = req(Mode::Write, vm("/vm/a"), vec![LOOP0]);
        let c = claim(
            THEIRS,
            "7",
            LOOP0,
            Mode::Write,
            id(Some("/vm/stub"), Some("/vm/a")),
        );
        assert_eq!(check(&r, &[], &[c]), Ok(()));
    }

    #[test]
    fn missing_vm_on_both_sides_refused() {
        let r = req(Mode::Write, id(None, None), vec![LOOP0]);
        let c = claim(THEIRS, "7", LOOP0, Mode::Write, id(None, None));
        assert_eq!(
            check(&r, &[], &[c]),
            guest_refusal(THEIRS, "7", LOOP0, Mode::Write)
        );
    }

    #[test]
    fn own_backend_ignored() {
        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        let c = claim(OURS, "9", LOOP0, Mode::Write, vm("/vm/other"));
        assert_eq!(check(&r, &[], std::slice::from_ref(&c)), Ok(()));
        // The same claim under another backend path does refuse.
        let c2 = Claim {
            backend: THEIRS.into(),
            ..c
        };
        assert!(check(&r, &[], &[c2]).is_err());
    }

    #[test]
    fn force_holder_read_request_ok() {
        let r = req(Mode::Read, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(check(&r, &[], &[theirs(LOOP0, Mode::Force)]), Ok(()));
    }

    #[test]
    fn force_holder_write_request_refused() {
        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        assert_eq!(
            check(&r, &[], &[theirs(LOOP0, Mode::Force)]),
            guest_refusal(THEIRS, "7", LOOP0, Mode::Force)
        );
    }

    #[test]
    fn file_behind_two_loop_devices_second_matches() {
        let r = req(Mode::Read, vm("/vm/mine"), vec![LOOP0, LOOP1]);
        let claims = [
            theirs(Key::Dev(dev(7, 2)), Mode::Write),
            theirs(LOOP1, Mode::Write),
        ];
        assert_eq!(
            check(&r, &[], &claims),
            guest_refusal(THEIRS, "7", LOOP1, Mode::Write)
        );
        assert_eq!(
            check(&r, &[mount(dev(7, 1), false)], &[]),
            local_refusal(dev(7, 1), false)
        );
        // Only the unrelated device held: fine.
        assert_eq!(check(&r, &[], &claims[..1]), Ok(()));
    }

    #[test]
    fn file_keys_compare_by_dev_and_ino() {
        let d = dev(0, 0x5a).to_dev_t();
        let k = Key::File { dev: d, ino: 1234 };
        let r = req(Mode::Write, vm("/vm/mine"), vec![k]);
        assert_eq!(
            check(
                &r,
                &[],
                &[theirs(Key::File { dev: d, ino: 1234 }, Mode::Read)]
            ),
            guest_refusal(THEIRS, "7", k, Mode::Read)
        );
        assert_eq!(
            check(
                &r,
                &[],
                &[theirs(Key::File { dev: d, ino: 1235 }, Mode::Write)]
            ),
            Ok(())
        );
        let other_dev = dev(0, 0x5b).to_dev_t();
        assert_eq!(
            check(
                &r,
                &[],
                &[theirs(
                    Key::File {
                        dev: other_dev,
                        ino: 1234
                    },
                    Mode::Write
                )]
            ),
            Ok(())
        );
        // A device key with the same number as the file's st_dev is something else.
        assert_eq!(
            check(&r, &[], &[theirs(Key::Dev(dev(0, 0x5a)), Mode::Write)]),
            Ok(())
        );
    }

    // ---- messages ----

    #[test]
    fn guest_message_names_everything() {
        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        let refusal = check(&r, &[], &[theirs(LOOP0, Mode::Write)]).unwrap_err();
        let m = refusal.message(&r);
        assert_eq!(
            m,
            "/srv/disk.img (device 7:0) is attached read-write to domain 7 (backend/vbd/7/51712); \
             refusing to attach it read-write to backend/vbd/9/51712. Detach it there first, or use \
             mode 'r' on both to share it read-only."
        );

        let r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        let m = check(&r, &[], &[theirs(LOOP0, Mode::Read)])
            .unwrap_err()
            .message(&r);
        assert!(m.contains("/srv/disk.img"), "{m}");
        assert!(m.contains("attached read-only to domain 7"), "{m}");
        assert!(
            m.contains("attach it read-write to backend/vbd/9/51712"),
            "{m}"
        );
        assert!(m.contains(THEIRS), "{m}");
        assert!(!m.contains('\n'));

        let r = req(Mode::Read, vm("/vm/mine"), vec![LOOP0]);
        let m = check(&r, &[], &[theirs(LOOP0, Mode::Write)])
            .unwrap_err()
            .message(&r);
        assert!(m.contains("attached read-write to domain 7"), "{m}");
        assert!(
            m.contains("attach it read-only to backend/vbd/9/51712"),
            "{m}"
        );
    }

    #[test]
    fn guest_message_file_key() {
        let k = Key::File {
            dev: dev(8, 1).to_dev_t(),
            ino: 1234,
        };
        let r = req(Mode::Write, vm("/vm/mine"), vec![k]);
        let m = check(&r, &[], &[theirs(k, Mode::Write)])
            .unwrap_err()
            .message(&r);
        assert!(m.contains("(inode 1234 on device 8:1)"), "{m}");
    }

    #[test]
    fn local_message_names_everything() {
        let mut r = req(Mode::Read, vm("/vm/mine"), vec![Key::Dev(dev(8, 0x11))]);
        r.target = "/dev/sdb1".into();
        let m = check(&r, &[mount(dev(8, 0x11), false)], &[])
            .unwrap_err()
            .message(&r);
        assert_eq!(
            m,
            "/dev/sdb1 (device 8:11) is mounted read-write at /mnt/data in the backend domain; \
             refusing to attach it read-only to backend/vbd/9/51712. Unmount it first."
        );
        r.mode = Mode::Write;
        let m = check(&r, &[mount(dev(8, 0x11), true)], &[])
            .unwrap_err()
            .message(&r);
        assert!(m.contains("mounted read-only at /mnt/data"), "{m}");
        assert!(
            m.contains("attach it read-write to backend/vbd/9/51712"),
            "{m}"
        );
    }

    #[test]
    fn messages_stay_one_line() {
        let mut r = req(Mode::Write, vm("/vm/mine"), vec![LOOP0]);
        r.target = "/srv/evil\nname".into();
        let refusal = Refusal::Local {
            dev: dev(7, 0),
            mount_point: "/mnt/a\nb".into(),
            read_only: false,
            via: vec![],
        };
        let m = refusal.message(&r);
        assert!(!m.contains('\n'), "{m}");
        assert!(
            m.contains("/srv/evil\\nname") && m.contains("/mnt/a\\nb"),
            "{m}"
        );
        let refusal = guest_refusal("backend/vbd/7/\n1", "7\r", LOOP0, Mode::Write).unwrap_err();
        let m = refusal.message(&r);
        assert!(!m.contains('\n') && !m.contains('\r'), "{m}");
    }

    // ---- property-style ----

    use crate::test_rng::Rng;

    fn random_mode(rng: &mut Rng) -> Mode {
        rng.pick(&[Mode::Read, Mode::Write, Mode::Force])
    }

    fn random_identity(rng: &mut Rng) -> VmIdentity {
        let vms = [None, Some("/vm/a"), Some("/vm/b"), Some("/vm/c")];
        let vm = rng.pick(&vms);
        // Mostly no target; sometimes a stub domain serving some VM.
        let target_vm = if rng.below(3) == 0 {
            rng.pick(&vms)
        } else {
            None
        };
        id(vm, target_vm)
    }

    #[test]
    fn property_ok_means_no_conflict() {
        let keys = [
            LOOP0,
            LOOP1,
            Key::Dev(dev(8, 1)),
            Key::Dev(dev(253, 3)),
            Key::File { dev: 0x5a, ino: 1 },
            Key::File { dev: 0x5a, ino: 2 },
        ];
        let devs = [dev(7, 0), dev(7, 1), dev(8, 1), dev(253, 3), dev(0, 0x5a)];
        let backends = [OURS, THEIRS, "backend/vbd/3/768", "backend/vbd/4/51728"];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut oks, mut locals, mut guests) = (0u32, 0u32, 0u32);

        for _ in 0..20_000 {
            let n = rng.below(3) + 1;
            let r = Request {
                backend: OURS.into(),
                target: "/srv/disk.img".into(),
                mode: random_mode(&mut rng),
                identity: random_identity(&mut rng),
                keys: (0..n).map(|_| rng.pick(&keys)).collect(),
            };
            let mounts: Vec<Mount> = (0..rng.below(3))
                .map(|i| Mount {
                    dev: rng.pick(&devs),
                    mount_point: format!("/mnt/{i}"),
                    read_only: rng.below(2) == 0,
                })
                .collect();
            let claims: Vec<Claim> = (0..rng.below(5))
                .map(|_| {
                    let b = rng.pick(&backends);
                    let domid = b.split('/').nth(2).unwrap().to_owned();
                    Claim {
                        backend: b.into(),
                        domid,
                        key: rng.pick(&keys),
                        mode: random_mode(&mut rng),
                        identity: random_identity(&mut rng),
                    }
                })
                .collect();

            let on_req_key = |k: &Key| r.keys.contains(k);
            let foreign = |c: &&Claim| {
                c.backend != r.backend && on_req_key(&c.key) && !same_vm(&r.identity, &c.identity)
            };

            match check(&r, &mounts, &claims) {
                Ok(()) => {
                    oks += 1;
                    if r.mode == Mode::Force {
                        continue;
                    }
                    for c in claims.iter().filter(foreign) {
                        assert_ne!(
                            c.mode,
                            Mode::Write,
                            "Ok despite a foreign writer: {r:?} {c:?}"
                        );
                        assert_ne!(
                            r.mode,
                            Mode::Write,
                            "Ok for a writer despite a foreign holder: {r:?} {c:?}"
                        );
                    }
                    for m in mounts.iter().filter(|m| on_req_key(&Key::Dev(m.dev))) {
                        assert!(m.read_only, "Ok despite a read-write mount: {r:?} {m:?}");
                        assert_ne!(
                            r.mode,
                            Mode::Write,
                            "Ok for a writer despite a mount: {r:?} {m:?}"
                        );
                    }
                }
                Err(refusal) => {
                    // A refusal names a real offender, and never for Force.
                    assert_ne!(r.mode, Mode::Force);
                    assert!(!refusal.message(&r).contains('\n'));
                    match &refusal {
                        Refusal::Local {
                            dev,
                            mount_point,
                            read_only,
                            ..
                        } => {
                            locals += 1;
                            let m = mounts
                                .iter()
                                .find(|m| &m.mount_point == mount_point)
                                .unwrap();
                            assert_eq!((m.dev, m.read_only), (*dev, *read_only));
                            assert!(on_req_key(&Key::Dev(*dev)));
                            assert!(r.mode == Mode::Write || !read_only);
                        }
                        Refusal::Guest {
                            backend,
                            domid,
                            key,
                            mode,
                            ..
                        } => {
                            guests += 1;
                            assert!(
                                claims.iter().filter(foreign).any(|c| {
                                    &c.backend == backend
                                        && &c.domid == domid
                                        && &c.key == key
                                        && &c.mode == mode
                                }),
                                "refusal names no foreign claim: {refusal:?}"
                            );
                            assert!(r.mode == Mode::Write || *mode == Mode::Write);
                            // Locals come first: none would have refused.
                            assert!(!mounts.iter().any(|m| on_req_key(&Key::Dev(m.dev))
                                && (r.mode == Mode::Write || !m.read_only)));
                        }
                        other => panic!("identity-only check gave {other:?}"),
                    }
                }
            }
        }
        // The generator exercises every outcome substantially.
        assert!(
            oks > 2_000 && locals > 1_000 && guests > 1_000,
            "ok {oks} local {locals} guest {guests}"
        );
    }

    // ---- lock claims ----

    #[test]
    fn lock_claims_writers_block_all_write_forbidders_block_writers() {
        let img = Key::File {
            dev: 0x801,
            ino: 12,
        };
        let lock = |mode| LockClaim {
            key: img,
            path: "/srv/disk.img".into(),
            mode,
            what: "is in use: a QEMU-compatible user writes to it (lock byte 101)".into(),
            holder: "process 42 (qemu-io) holds that lock".into(),
        };
        let decide_with = |r: &Request, locks: &[LockClaim], claims: &[Claim]| {
            decide(
                r,
                &Facts {
                    topology: &Topology::default(),
                    mounts: &[],
                    swaps: &[],
                    claims,
                    locks,
                },
            )
        };
        let w = req(Mode::Write, vm("/vm/a"), vec![img]);
        let r = req(Mode::Read, vm("/vm/a"), vec![img]);
        let f = req(Mode::Force, vm("/vm/a"), vec![img]);
        let writer = [lock(Mode::Write)];
        let reader = [lock(Mode::Read)];
        for q in [&w, &r] {
            let e = decide_with(q, &writer, &[]).unwrap_err();
            assert!(matches!(e, Refusal::Locked { .. }), "{e:?}");
            let m = e.message(q);
            assert!(
                m.starts_with("/srv/disk.img is in use: a QEMU-compatible user writes to it")
                    && m.contains("process 42 (qemu-io)")
                    && m.contains(&format!(
                        "refusing to attach /srv/disk.img {}",
                        q.mode.describe()
                    )),
                "{m}"
            );
        }
        assert!(decide_with(&w, &reader, &[]).is_err());
        assert_eq!(decide_with(&r, &reader, &[]), Ok(()));
        assert_eq!(decide_with(&f, &writer, &[]), Ok(()));
        // Not in the overlap: no claim.
        let other = req(Mode::Write, vm("/vm/a"), vec![LOOP1]);
        assert_eq!(decide_with(&other, &writer, &[]), Ok(()));
        // Another VM's backend is named first; the same VM's is no refusal,
        // but the lock still is (no same-VM exception outside Xen).
        let theirs = [theirs(img, Mode::Write)];
        assert!(matches!(
            decide_with(&w, &writer, &theirs),
            Err(Refusal::Guest { .. })
        ));
        let mine = [claim(THEIRS, "7", img, Mode::Write, vm("/vm/a"))];
        assert!(matches!(
            decide_with(&w, &writer, &mine),
            Err(Refusal::Locked { .. })
        ));
    }

    #[test]
    fn a_qdisk_holder_is_named_with_its_qemu_pid() {
        let r = req(Mode::Write, vm("/vm/a"), vec![LOOP0]);
        let mut e = Refusal::Guest {
            backend: "backend/qdisk/7/51712".into(),
            domid: "7".into(),
            key: LOOP0,
            mode: Mode::Write,
            via: vec![],
            pid: None,
        };
        let m = e.message(&r);
        assert!(
            m.contains("by domain 7 through QEMU (backend/qdisk/7/51712)"),
            "{m}"
        );
        if let Refusal::Guest { pid, .. } = &mut e {
            *pid = Some(594);
        }
        let m = e.message(&r);
        assert!(
            m.contains("by domain 7 through QEMU (pid 594, backend/qdisk/7/51712)"),
            "{m}"
        );
    }
}
