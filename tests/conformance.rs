//! Differential conformance against Xen's own Linux `block` hotplug script
//! (how CONFORMANCE.md is made). Every `scenario_*` test builds the same xenstore contents
//! three times, each time on a fresh embedded xenstored: once it runs the
//! subject through upstream `block` (Debian 12, Xen 4.17, see
//! `tests/upstream/`), once through xenblock in-process
//! (`Context::prepare`/`release`), once through the `xenblock` binary
//! installed as `block` (the drop-in, which must match in-process exactly).
//! The observed outcomes are compared with the scenario's row in [`ROWS`]; the same rows
//! generate the table in `CONFORMANCE.md`, and
//! `conformance_table_matches_the_suite` fails when the two drift apart
//! (`XENBLOCK_BLESS=1` rewrites the table from the rows).
//!
//! Needs root (loop devices, mounts): fails, never skips, without it.
//! Scenarios run one at a time (a static mutex): the script's global checks
//! (`losetup -f` then `losetup /dev/loopN`, `losetup -a`, `/proc/mounts`) are
//! not atomic against loop devices that a parallel scenario creates.

mod common;
mod upstream;

use common::{require_root, Env};
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use upstream::Scripts;
use xenblock::sharing::DevNum;
use xenblock::store::Store;
use xenblock::Context;

static SERIAL: Mutex<()> = Mutex::new(());

/// Who runs the subject of a scenario.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Upstream,
    Xenblock,
    /// xenblock's CLI installed as `block` (the drop-in), run as libxl runs
    /// the script; it must give exactly the in-process outcome.
    Hotplug,
}

/// One prepare or release call: succeeded (exit 0 / `Ok`) or not.
struct Step {
    ok: bool,
}

/// One run of a scenario: a fresh xenstored, a scripts copy sharing the
/// lock directory with the xenblock context, and symbolic names for the
/// disks and files, so outcomes read the same whatever loop numbers the
/// kernel hands out.
struct Run {
    imp: Impl,
    mounts: Vec<PathBuf>,
    /// Devices this run made active swap (swapoff on drop).
    swaps: Vec<PathBuf>,
    syms: Vec<(String, PathBuf)>,
    trace: RefCell<Vec<String>>,
    scripts: Scripts,
    ctx: Context,
    env: Env,
}

const DEVID: u32 = 51712;

impl Run {
    fn new(imp: Impl) -> Run {
        let env = Env::new();
        let scripts = Scripts::install(&env.dir, &env.sock, &env.config().lock_dir);
        Run {
            imp,
            mounts: Vec::new(),
            swaps: Vec::new(),
            syms: Vec::new(),
            trace: RefCell::new(Vec::new()),
            scripts,
            ctx: env.ctx(),
            env,
        }
    }

    /// `xenblock` installed as `<dir>/dropin/block`, run like the script.
    fn spawn_dropin(&self, command: &str, be: &str) -> std::process::Child {
        let dir = self.env.dir.join("dropin");
        let block = dir.join("block");
        if !block.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(common::exe("xenblock"), &block).unwrap();
        }
        self.scripts.spawn_script(&block, command, be)
    }

    fn path_of(&self, sym: &str) -> PathBuf {
        self.syms
            .iter()
            .find(|(n, _)| n == sym)
            .unwrap_or_else(|| panic!("no symbol {sym}"))
            .1
            .clone()
    }

    /// A 4 MiB image file, known as `sym`.
    fn file(&mut self, sym: &str) -> String {
        let p = self
            .env
            .image(&format!("{}.img", sym.to_lowercase()), 4 << 20);
        self.syms.push((sym.into(), p.clone()));
        p.display().to_string()
    }

    /// A block device (a loop device the test makes), known as `sym`.
    fn disk(&mut self, sym: &str) -> String {
        let d = self
            .env
            .block_device(&format!("{}-backing.img", sym.to_lowercase()));
        self.syms.push((sym.into(), d.clone()));
        d.display().to_string()
    }

    /// Make an ext4 filesystem on disk `sym` and mount it under the test
    /// directory (unmounted when the run is dropped, even on panic).
    fn mount(&mut self, sym: &str, read_only: bool) {
        let dev = self.path_of(sym);
        let st = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&dev)
            .status()
            .expect("mkfs.ext4 (e2fsprogs) must be installed");
        assert!(st.success(), "mkfs.ext4 {}", dev.display());
        let mnt = self.env.dir.join(format!("mnt-{}", sym.to_lowercase()));
        std::fs::create_dir_all(&mnt).unwrap();
        let flags = if read_only {
            nix::mount::MsFlags::MS_RDONLY
        } else {
            nix::mount::MsFlags::empty()
        };
        nix::mount::mount(Some(&dev), &mnt, Some("ext4"), flags, None::<&str>).unwrap();
        self.mounts.push(mnt);
    }

    fn domain(&self, domid: u32, vm: &str) {
        self.env.domain(domid, vm);
    }

    fn backend(&self, domid: u32, devid: u32, params: &str, mode: &str) -> String {
        self.env.backend(domid, devid, params, mode)
    }

    fn prepare(&self, be: &str) -> Step {
        self.call(self.imp, "add", be)
    }

    fn release(&self, be: &str) -> Step {
        self.call(self.imp, "remove", be)
    }

    fn call(&self, imp: Impl, command: &str, be: &str) -> Step {
        let (ok, detail) = match imp {
            Impl::Upstream => {
                let (code, out) = upstream::finish(self.scripts.spawn_block(command, be));
                (code == Some(0), format!("exit {code:?} {out}"))
            }
            Impl::Hotplug => {
                let (code, out) = upstream::finish(self.spawn_dropin(command, be));
                (code == Some(0), format!("exit {code:?} {out}"))
            }
            Impl::Xenblock => {
                if command == "add" {
                    let r = self.ctx.prepare(be);
                    (r.is_ok(), format!("{r:?}"))
                } else {
                    let r = self.ctx.release(be);
                    (r.is_ok(), format!("{r:?}"))
                }
            }
        };
        self.trace
            .borrow_mut()
            .push(format!("{imp:?} {command} {be}: {detail}"));
        Step { ok }
    }

    /// Set-up attach that must succeed (an earlier disk of the scenario).
    fn holder(&self, imp: Impl, be: &str) {
        let s = self.call(imp, "add", be);
        let status = self.env.read(&format!("{be}/hotplug-status"));
        assert!(
            s.ok && status.as_deref() == Some("connected"),
            "set-up attach of {be} by {imp:?} failed: {:?}",
            self.trace.borrow()
        );
    }

    fn read(&self, be: &str, node: &str) -> Option<String> {
        self.env.read(&format!("{be}/{node}"))
    }

    /// Decision and written nodes, in symbols: `ok connected pd=#DISK
    /// pdp=DISK node=- herr=-`. `pd=#X` means physical-device is the number
    /// of device X; `loop(IMG)` a loop device backed by file IMG.
    fn outcome(&self, s: &Step, be: &str) -> String {
        let status = self
            .read(be, "hotplug-status")
            .unwrap_or_else(|| "no-status".into());
        let pdp = self.read(be, "physical-device-path");
        let pd = match self.read(be, "physical-device") {
            None => "-".to_string(),
            Some(v) => self.show_devnum(&v, pdp.as_deref()),
        };
        let show = |v: Option<String>| v.map(|v| self.show(&v)).unwrap_or_else(|| "-".into());
        format!(
            "{} {status} pd={pd} pdp={} node={} herr={}",
            if s.ok { "ok" } else { "fail" },
            show(pdp),
            show(self.read(be, "node")),
            if self.read(be, "hotplug-error").is_some() {
                "yes"
            } else {
                "-"
            }
        )
    }

    fn show(&self, v: &str) -> String {
        if let Some((n, _)) = self.syms.iter().find(|(_, p)| p.as_os_str() == v) {
            return n.clone();
        }
        if v.starts_with("/dev/loop") {
            return match xenblock::sys::loopdev::status(Path::new(v)) {
                Ok(Some(info)) => {
                    let name = self.syms.iter().find(|(_, p)| {
                        xenblock::sys::stat::stat(p)
                            .is_ok_and(|st| info.is_backed_by(st.dev, st.ino))
                    });
                    format!("loop({})", name.map(|(n, _)| n.as_str()).unwrap_or("?"))
                }
                _ => "loop(detached)".into(),
            };
        }
        v.to_string()
    }

    fn show_devnum(&self, v: &str, pdp: Option<&str>) -> String {
        let hex = |p: &Path| {
            xenblock::sys::stat::stat(p)
                .ok()
                .filter(|st| st.kind == xenblock::sys::stat::FileKind::Block)
                .map(|st| DevNum::from_dev_t(st.rdev).to_string())
        };
        if let Some(p) = pdp {
            if hex(Path::new(p)).as_deref() == Some(v) {
                return format!("#{}", self.show(p));
            }
        }
        for (n, p) in &self.syms {
            if hex(p).as_deref() == Some(v) {
                return format!("#{n}");
            }
        }
        v.to_string()
    }

    /// Read-only flags of the loop devices backed by file `sym`: `loops(IMG)=[ro,rw]`.
    fn loops(&self, sym: &str) -> String {
        let mut flags: Vec<&str> = self
            .env
            .loops_of(&self.path_of(sym))
            .iter()
            .map(|l| if l.read_only { "ro" } else { "rw" })
            .collect();
        flags.sort();
        format!("loops({sym})=[{}]", flags.join(","))
    }

    /// Whether the test's own block device `sym` is still attached.
    fn disk_state(&self, sym: &str) -> String {
        let attached = matches!(
            xenblock::sys::loopdev::status(&self.path_of(sym)),
            Ok(Some(_))
        );
        format!("{sym} {}", if attached { "attached" } else { "detached" })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for d in &self.swaps {
            let _ = std::process::Command::new("swapoff").arg(d).status();
        }
        // Before Env's drop detaches the loop devices under the mounts.
        for m in self.mounts.iter().rev() {
            if nix::mount::umount(m).is_err() {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Upstream picks a free loop device with `losetup -f`, then binds it with a
/// second `losetup /dev/loopN <file>`. Another process on the machine (not
/// another scenario: they are serialised) can take that device in between;
/// util-linux then logs this and the script fails. That race, recognised by
/// this message in the script's log, is the only thing a scenario retries.
const LOOP_RACE: &str = "failed to set up loop device";
const ATTEMPTS: usize = 3;

/// Run `body` through upstream, then through xenblock, each on a fresh
/// `Run`, and compare the observations with the scenario's row.
fn scenario(name: &str, body: impl Fn(&mut Run) -> Vec<String>) {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut got = Vec::new();
    for imp in [Impl::Upstream, Impl::Xenblock, Impl::Hotplug] {
        let mut attempt = 1;
        loop {
            let mut run = Run::new(imp);
            let seen = std::panic::catch_unwind(AssertUnwindSafe(|| body(&mut run)));
            let trace = run.trace.borrow().join("\n    ");
            let log = run.scripts.log_text();
            drop(run);
            if log.contains(LOOP_RACE) && attempt < ATTEMPTS {
                eprintln!(
                    "{name} ({imp:?}): upstream lost a loop device to another process; again"
                );
                attempt += 1;
                continue;
            }
            match seen {
                Ok(seen) => got.push((seen.join("; "), trace, log)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
            break;
        }
    }
    let Some(row) = ROWS.iter().find(|r| r.name == name) else {
        panic!(
            "no row for scenario {name} in ROWS; observed:\n  upstream: {}\n  xenblock: {}",
            got[0].0, got[1].0
        );
    };
    // The drop-in must give exactly what xenblock in-process gives.
    let want = [row.upstream, row.xenblock(), row.xenblock()];
    if got.iter().zip(want).any(|(g, w)| g.0 != w) {
        let mut msg = format!("scenario {name} does not match its row:\n");
        let imps = ["upstream", "xenblock", "xenblock as /etc/xen/scripts/block"];
        for ((imp, w), (seen, trace, log)) in imps.iter().zip(want).zip(&got) {
            msg.push_str(&format!(
                "  {imp}:\n    want: {w}\n    got:  {seen}\n    {trace}\n"
            ));
            if *imp == "upstream" && !log.is_empty() {
                msg.push_str(&format!("    script log:\n{log}\n"));
            }
        }
        panic!("{msg}");
    }
}

// ---------------------------------------------------------------- helpers

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Phy,
    File,
}

/// A target of `kind`, known as DISK or IMG.
fn target(r: &mut Run, kind: Kind) -> String {
    match kind {
        Kind::Phy => r.disk("DISK"),
        Kind::File => r.file("IMG"),
    }
}

/// One VM (domain 7, vm /vm/a) attaches a target of `kind` in `mode`.
fn single(r: &mut Run, kind: Kind, mode: &str) -> Vec<String> {
    let t = target(r, kind);
    r.domain(7, "/vm/a");
    let be = r.backend(7, DEVID, &t, mode);
    let s = r.prepare(&be);
    let mut v = vec![r.outcome(&s, &be)];
    if kind == Kind::File {
        v.push(r.loops("IMG"));
    }
    v
}

/// Domain 7 (vm /vm/a) holds the target in `held` mode (attached by
/// `holder`, or by the implementation under test); domain `domid` then asks
/// for it in `mode`. `ids` sets up the domains.
fn second(
    r: &mut Run,
    kind: Kind,
    held: &str,
    holder: Option<Impl>,
    domid: u32,
    mode: &str,
    ids: impl Fn(&Run),
) -> Vec<String> {
    let t = target(r, kind);
    ids(r);
    let a = r.backend(7, DEVID, &t, held);
    r.holder(holder.unwrap_or(r.imp), &a);
    let b = r.backend(domid, DEVID, &t, mode);
    let s = r.prepare(&b);
    let mut v = vec![r.outcome(&s, &b)];
    if kind == Kind::File {
        v.push(r.loops("IMG"));
    }
    v
}

/// Two different VMs: 7 (/vm/a) and 9 (/vm/b).
fn two_vms(r: &Run) {
    r.domain(7, "/vm/a");
    r.domain(9, "/vm/b");
}

fn other_vm(r: &mut Run, kind: Kind, held: &str, mode: &str) -> Vec<String> {
    second(r, kind, held, None, 9, mode, two_vms)
}

/// A disk mounted in the backend domain, then attached in `mode`.
fn mounted(r: &mut Run, read_only: bool, mode: &str) -> Vec<String> {
    let d = r.disk("DISK");
    r.mount("DISK", read_only);
    r.domain(7, "/vm/a");
    let be = r.backend(7, DEVID, &d, mode);
    let s = r.prepare(&be);
    vec![r.outcome(&s, &be)]
}

/// Attach a file (by `by`, or the implementation under test), then release
/// it with the implementation under test.
fn release_file(r: &mut Run, by: Option<Impl>) -> Vec<String> {
    let img = r.file("IMG");
    r.domain(7, "/vm/a");
    let be = r.backend(7, DEVID, &img, "w");
    r.holder(by.unwrap_or(r.imp), &be);
    let attached = r.loops("IMG");
    let s = r.release(&be);
    vec![
        attached,
        format!("remove {}", if s.ok { "ok" } else { "fail" }),
        r.loops("IMG"),
    ]
}

// -------------------------------------------------------------- scenarios

#[test]
fn scenario_phy_r() {
    scenario("phy_r", |r| single(r, Kind::Phy, "r"));
}

#[test]
fn scenario_phy_w() {
    scenario("phy_w", |r| single(r, Kind::Phy, "w"));
}

#[test]
fn scenario_phy_w_force() {
    scenario("phy_w_force", |r| single(r, Kind::Phy, "w!"));
}

#[test]
fn scenario_phy_rw() {
    scenario("phy_rw", |r| single(r, Kind::Phy, "rw"));
}

#[test]
fn scenario_phy_ro() {
    scenario("phy_ro", |r| single(r, Kind::Phy, "ro"));
}

#[test]
fn scenario_file_r() {
    scenario("file_r", |r| single(r, Kind::File, "r"));
}

#[test]
fn scenario_file_w() {
    scenario("file_w", |r| single(r, Kind::File, "w"));
}

#[test]
fn scenario_file_w_force() {
    scenario("file_w_force", |r| single(r, Kind::File, "w!"));
}

#[test]
fn scenario_file_rw() {
    scenario("file_rw", |r| single(r, Kind::File, "rw"));
}

#[test]
fn scenario_file_ro() {
    scenario("file_ro", |r| single(r, Kind::File, "ro"));
}

#[test]
fn scenario_phy_shared_read_only() {
    scenario("phy_shared_read_only", |r| other_vm(r, Kind::Phy, "r", "r"));
}

#[test]
fn scenario_file_shared_read_only() {
    scenario("file_shared_read_only", |r| {
        other_vm(r, Kind::File, "r", "ro")
    });
}

#[test]
fn scenario_phy_w_vs_other_vm_w() {
    scenario("phy_w_vs_other_vm_w", |r| other_vm(r, Kind::Phy, "w", "w"));
}

#[test]
fn scenario_phy_r_vs_other_vm_w() {
    scenario("phy_r_vs_other_vm_w", |r| other_vm(r, Kind::Phy, "w", "r"));
}

#[test]
fn scenario_phy_w_vs_other_vm_r() {
    scenario("phy_w_vs_other_vm_r", |r| other_vm(r, Kind::Phy, "r", "w"));
}

#[test]
fn scenario_file_w_vs_other_vm_w() {
    scenario("file_w_vs_other_vm_w", |r| {
        other_vm(r, Kind::File, "w", "w")
    });
}

#[test]
fn scenario_file_r_vs_other_vm_w() {
    scenario("file_r_vs_other_vm_w", |r| {
        other_vm(r, Kind::File, "w", "r")
    });
}

#[test]
fn scenario_file_w_vs_other_vm_r() {
    scenario("file_w_vs_other_vm_r", |r| {
        other_vm(r, Kind::File, "r", "w")
    });
}

#[test]
fn scenario_phy_force_vs_other_vm_w() {
    scenario("phy_force_vs_other_vm_w", |r| {
        other_vm(r, Kind::Phy, "w", "w!")
    });
}

#[test]
fn scenario_file_force_vs_other_vm_w() {
    scenario("file_force_vs_other_vm_w", |r| {
        other_vm(r, Kind::File, "w", "w!")
    });
}

#[test]
fn scenario_phy_same_vm_direct() {
    scenario("phy_same_vm_direct", |r| {
        second(r, Kind::Phy, "w", None, 8, "w", |r| {
            r.domain(7, "/vm/a");
            r.domain(8, "/vm/a");
        })
    });
}

#[test]
fn scenario_file_same_vm_direct() {
    scenario("file_same_vm_direct", |r| {
        second(r, Kind::File, "w", None, 8, "w", |r| {
            r.domain(7, "/vm/a");
            r.domain(8, "/vm/a");
        })
    });
}

#[test]
fn scenario_phy_same_vm_stubdom() {
    // Domain 8 is the device-model stub domain of domain 7.
    scenario("phy_same_vm_stubdom", |r| {
        second(r, Kind::Phy, "w", None, 8, "w", |r| {
            r.domain(7, "/vm/a");
            r.domain(8, "/vm/stubdom-of-7");
            r.env.write("/local/domain/8/target", "7");
        })
    });
}

#[test]
fn scenario_phy_holder_without_vm_node() {
    // Domain 7 holds the disk read-write but has no /local/domain/7/vm.
    scenario("phy_holder_without_vm_node", |r| {
        second(r, Kind::Phy, "w", None, 9, "w", |r| {
            r.env.write("/local/domain/7/name", "guest7");
            r.domain(9, "/vm/b");
        })
    });
}

#[test]
fn scenario_mounted_rw_phy_r() {
    scenario("mounted_rw_phy_r", |r| mounted(r, false, "r"));
}

#[test]
fn scenario_mounted_rw_phy_w() {
    scenario("mounted_rw_phy_w", |r| mounted(r, false, "w"));
}

#[test]
fn scenario_mounted_ro_phy_r() {
    scenario("mounted_ro_phy_r", |r| mounted(r, true, "r"));
}

#[test]
fn scenario_mounted_ro_phy_w() {
    scenario("mounted_ro_phy_w", |r| mounted(r, true, "w"));
}

fn unwritable_file(r: &mut Run, mode: &str) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let img = r.file("IMG");
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o444)).unwrap();
    r.domain(7, "/vm/a");
    let be = r.backend(7, DEVID, &img, mode);
    let s = r.prepare(&be);
    vec![r.outcome(&s, &be), r.loops("IMG")]
}

#[test]
fn scenario_file_unwritable_w() {
    scenario("file_unwritable_w", |r| unwritable_file(r, "w"));
}

#[test]
fn scenario_file_unwritable_r() {
    scenario("file_unwritable_r", |r| unwritable_file(r, "r"));
}

fn closed_state(r: &mut Run, kind: Kind) -> Vec<String> {
    let t = target(r, kind);
    r.domain(7, "/vm/a");
    let be = r.backend(7, DEVID, &t, "w");
    r.env.write(&format!("{be}/state"), "6");
    let s = r.prepare(&be);
    let mut v = vec![r.outcome(&s, &be)];
    if kind == Kind::File {
        v.push(r.loops("IMG"));
    }
    v
}

#[test]
fn scenario_file_state_not_initwait() {
    scenario("file_state_not_initwait", |r| closed_state(r, Kind::File));
}

#[test]
fn scenario_phy_state_not_initwait() {
    scenario("phy_state_not_initwait", |r| closed_state(r, Kind::Phy));
}

#[test]
fn scenario_already_prepared() {
    scenario("already_prepared", |r| {
        let img = r.file("IMG");
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &img, "w");
        r.env.write(&format!("{be}/physical-device"), "ca:fe");
        let s = r.prepare(&be);
        vec![r.outcome(&s, &be), r.loops("IMG")]
    });
}

fn params_only(r: &mut Run, params: &str) -> Vec<String> {
    r.domain(7, "/vm/a");
    let be = r.backend(7, DEVID, params, "w");
    let s = r.prepare(&be);
    vec![r.outcome(&s, &be)]
}

#[test]
fn scenario_empty_target() {
    scenario("empty_target", |r| params_only(r, ""));
}

#[test]
fn scenario_missing_target() {
    scenario("missing_target", |r| {
        let p = r.env.dir.join("no-such-disk.img");
        params_only(r, &p.display().to_string())
    });
}

#[test]
fn scenario_dangling_symlink() {
    scenario("dangling_symlink", |r| {
        let link = r.env.dir.join("dangling");
        std::os::unix::fs::symlink(r.env.dir.join("no-such-disk.img"), &link).unwrap();
        params_only(r, &link.display().to_string())
    });
}

#[test]
fn scenario_relative_device_name() {
    scenario("relative_device_name", |r| {
        let d = r.disk("DISK");
        let name = d.strip_prefix("/dev/").unwrap().to_string();
        params_only(r, &name)
    });
}

#[test]
fn scenario_symlink_to_device() {
    scenario("symlink_to_device", |r| {
        let d = r.disk("DISK");
        let link = r.env.dir.join("disk-link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        params_only(r, &link.display().to_string())
    });
}

#[test]
fn scenario_symlink_to_file() {
    scenario("symlink_to_file", |r| {
        let img = r.file("IMG");
        let link = r.env.dir.join("img-link");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        let mut v = params_only(r, &link.display().to_string());
        v.push(r.loops("IMG"));
        v
    });
}

#[test]
fn scenario_release_phy() {
    scenario("release_phy", |r| {
        let d = r.disk("DISK");
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &d, "w");
        r.holder(r.imp, &be);
        let s = r.release(&be);
        vec![
            format!("remove {}", if s.ok { "ok" } else { "fail" }),
            r.disk_state("DISK"),
        ]
    });
}

#[test]
fn scenario_release_file() {
    scenario("release_file", |r| release_file(r, None));
}

#[test]
fn scenario_release_file_attached_by_upstream() {
    scenario("release_file_attached_by_upstream", |r| {
        release_file(r, Some(Impl::Upstream))
    });
}

#[test]
fn scenario_release_file_attached_by_xenblock() {
    scenario("release_file_attached_by_xenblock", |r| {
        release_file(r, Some(Impl::Xenblock))
    });
}

#[test]
fn scenario_release_reused_loop_device() {
    // The disk's loop device goes away behind the toolstack's back and its
    // number is taken by another file; release must leave that one alone.
    scenario("release_reused_loop_device", |r| {
        let img = r.file("IMG");
        let other = r.file("OTHER");
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &img, "w");
        r.holder(r.imp, &be);
        let node = r.read(&be, "node").unwrap();
        xenblock::sys::loopdev::detach(Path::new(&node)).unwrap();
        let st = std::process::Command::new("losetup")
            .args(["-r", &node, &other])
            .status()
            .unwrap();
        assert!(st.success(), "losetup -r {node} {other}");
        assert_eq!(r.show(&node), "loop(OTHER)");
        let s = r.release(&be);
        vec![
            format!("remove {}", if s.ok { "ok" } else { "fail" }),
            r.loops("IMG"),
            r.loops("OTHER"),
        ]
    });
}

#[test]
fn scenario_mixed_phy_upstream_attached_first() {
    scenario("mixed_phy_upstream_attached_first", |r| {
        second(r, Kind::Phy, "w", Some(Impl::Upstream), 9, "w", two_vms)
    });
}

#[test]
fn scenario_mixed_phy_xenblock_attached_first() {
    scenario("mixed_phy_xenblock_attached_first", |r| {
        second(r, Kind::Phy, "w", Some(Impl::Xenblock), 9, "w", two_vms)
    });
}

#[test]
fn scenario_mixed_file_upstream_attached_first() {
    scenario("mixed_file_upstream_attached_first", |r| {
        second(r, Kind::File, "w", Some(Impl::Upstream), 9, "w", two_vms)
    });
}

#[test]
fn scenario_mixed_file_xenblock_attached_first() {
    scenario("mixed_file_xenblock_attached_first", |r| {
        second(r, Kind::File, "w", Some(Impl::Xenblock), 9, "w", two_vms)
    });
}

#[test]
fn scenario_lock_held_by_the_other_side() {
    // The subject must wait while the *other* implementation holds the
    // `block` lock: upstream waits for xenblock's HotplugLock, xenblock for
    // locking.sh's claim_lock.
    scenario("lock_held_by_the_other_side", |r| {
        let img = r.file("IMG");
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &img, "w");
        let pause = Duration::from_millis(400);
        let (waited, s) = match r.imp {
            Impl::Upstream => {
                let lock = xenblock::lock::HotplugLock::new(
                    &r.env.config().lock_dir,
                    Duration::from_secs(10),
                );
                let guard = lock.acquire().unwrap();
                let child = r.scripts.spawn_block("add", &be);
                std::thread::sleep(pause);
                let waited = r.read(&be, "hotplug-status").is_none();
                drop(guard);
                let (code, out) = upstream::finish(child);
                r.trace.borrow_mut().push(format!("upstream add: {out}"));
                (
                    waited,
                    Step {
                        ok: code == Some(0),
                    },
                )
            }
            Impl::Hotplug => {
                let held = r.env.dir.join("held");
                let go = r.env.dir.join("go");
                let mut holder = r.scripts.spawn_lock_holder(&held, &go);
                let t = Instant::now();
                while !held.exists() {
                    assert!(t.elapsed() < Duration::from_secs(10), "claim_lock hangs");
                    std::thread::sleep(Duration::from_millis(5));
                }
                let child = r.spawn_dropin("add", &be);
                std::thread::sleep(pause);
                let waited = r.read(&be, "hotplug-status").is_none();
                std::fs::write(&go, b"").unwrap();
                let (code, out) = upstream::finish(child);
                assert!(holder.wait().unwrap().success(), "lock holder failed");
                r.trace.borrow_mut().push(format!("drop-in add: {out}"));
                (
                    waited,
                    Step {
                        ok: code == Some(0),
                    },
                )
            }
            Impl::Xenblock => {
                let held = r.env.dir.join("held");
                let go = r.env.dir.join("go");
                let mut holder = r.scripts.spawn_lock_holder(&held, &go);
                let t = Instant::now();
                while !held.exists() {
                    assert!(t.elapsed() < Duration::from_secs(10), "claim_lock hangs");
                    std::thread::sleep(Duration::from_millis(5));
                }
                let ctx = &r.ctx;
                let (waited, res) = std::thread::scope(|sc| {
                    let h = sc.spawn(|| ctx.prepare(&be));
                    std::thread::sleep(pause);
                    let waited = !h.is_finished();
                    std::fs::write(&go, b"").unwrap();
                    (waited, h.join().unwrap())
                });
                assert!(holder.wait().unwrap().success(), "lock holder failed");
                r.trace.borrow_mut().push(format!("xenblock add: {res:?}"));
                (waited, Step { ok: res.is_ok() })
            }
        };
        vec![
            format!("waited={waited}"),
            r.outcome(&s, &be),
            r.loops("IMG"),
        ]
    });
}

#[test]
fn scenario_phy_r_vs_other_vm_force() {
    scenario("phy_r_vs_other_vm_force", |r| {
        other_vm(r, Kind::Phy, "w!", "r")
    });
}

#[test]
fn scenario_phy_same_vm_stubdom_holds() {
    // The stub domain (8, target 7) holds the disk; its guest (7) asks.
    scenario("phy_same_vm_stubdom_holds", |r| {
        let d = r.disk("DISK");
        r.domain(7, "/vm/a");
        r.domain(8, "/vm/stubdom-of-7");
        r.env.write("/local/domain/8/target", "7");
        let a = r.backend(8, DEVID, &d, "w");
        r.holder(r.imp, &a);
        let b = r.backend(7, DEVID, &d, "w");
        let s = r.prepare(&b);
        vec![r.outcome(&s, &b)]
    });
}

#[test]
fn scenario_phy_requester_without_vm_node() {
    scenario("phy_requester_without_vm_node", |r| {
        second(r, Kind::Phy, "w", None, 9, "w", |r| {
            r.domain(7, "/vm/a");
            r.env.write("/local/domain/9/name", "guest9");
        })
    });
}

#[test]
fn scenario_phy_both_without_vm_node() {
    scenario("phy_both_without_vm_node", |r| {
        second(r, Kind::Phy, "w", None, 9, "w", |r| {
            r.env.write("/local/domain/7/name", "guest7");
            r.env.write("/local/domain/9/name", "guest9");
        })
    });
}

#[test]
fn scenario_phy_other_vm_claim_zero_padded() {
    // Another VM's backend says physical-device = 07:0N (blkback reads it
    // with %x:%x, so it serves this very device); written by hand here.
    scenario("phy_other_vm_claim_zero_padded", |r| {
        let d = r.disk("DISK");
        two_vms(r);
        let a = r.backend(7, DEVID, &d, "w");
        let st = xenblock::sys::stat::stat(Path::new(&d)).unwrap();
        let n = DevNum::from_dev_t(st.rdev);
        r.env.write(
            &format!("{a}/physical-device"),
            &format!("{:02x}:{:02x}", n.major, n.minor),
        );
        r.env.write(&format!("{a}/physical-device-path"), &d);
        r.env.write(&format!("{a}/hotplug-status"), "connected");
        let b = r.backend(9, DEVID, &d, "w");
        let s = r.prepare(&b);
        vec![r.outcome(&s, &b)]
    });
}

#[test]
fn scenario_file_loop_mounted_in_backend() {
    // The backend domain itself loop-mounts the image read-write.
    scenario("file_loop_mounted_in_backend", |r| {
        let img = r.file("IMG");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let lo = xenblock::sys::loopdev::attach(&f, false, b"xenblock-test-hostloop").unwrap();
        r.syms.push(("HOSTLOOP".into(), lo.path.clone()));
        r.mount("HOSTLOOP", false);
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &img, "r");
        let s = r.prepare(&be);
        vec![r.outcome(&s, &be), r.loops("IMG")]
    });
}

#[test]
fn scenario_target_is_directory() {
    scenario("target_is_directory", |r| {
        let d = r.env.dir.join("a-directory");
        std::fs::create_dir(&d).unwrap();
        params_only(r, &d.display().to_string())
    });
}

#[test]
fn scenario_symlink_with_space_to_device() {
    scenario("symlink_with_space_to_device", |r| {
        let d = r.disk("DISK");
        let link = r.env.dir.join("my disk");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        params_only(r, &link.display().to_string())
    });
}

#[test]
fn scenario_missing_mode() {
    scenario("missing_mode", |r| {
        let d = r.disk("DISK");
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &d, "w");
        r.env
            .store
            .remove(xenblock::store::NO_TX, &format!("{be}/mode"))
            .unwrap();
        let s = r.prepare(&be);
        vec![r.outcome(&s, &be)]
    });
}

#[test]
fn scenario_missing_frontend_id() {
    scenario("missing_frontend_id", |r| {
        let d = r.disk("DISK");
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &d, "w");
        r.env
            .store
            .remove(xenblock::store::NO_TX, &format!("{be}/frontend-id"))
            .unwrap();
        let s = r.prepare(&be);
        vec![r.outcome(&s, &be)]
    });
}

#[test]
fn scenario_release_file_never_prepared() {
    scenario("release_file_never_prepared", |r| {
        let img = r.file("IMG");
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &img, "w");
        let s = r.release(&be);
        vec![r.outcome(&s, &be)]
    });
}

#[test]
fn scenario_release_file_renamed_after_attach() {
    // The image is renamed (or deleted) while the guest runs; `params` then
    // names nothing, but the loop device still serves the disk.
    scenario("release_file_renamed_after_attach", |r| {
        let img = r.file("IMG");
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &img, "w");
        r.holder(r.imp, &be);
        let moved = r.env.dir.join("img-moved.img");
        std::fs::rename(&img, &moved).unwrap();
        r.env.track(&moved);
        r.syms.retain(|(n, _)| n != "IMG");
        r.syms.push(("IMG".into(), moved));
        let s = r.release(&be);
        vec![
            format!("remove {}", if s.ok { "ok" } else { "fail" }),
            r.loops("IMG"),
        ]
    });
}

/// Another VM's disk served by QEMU (`backend/qdisk`) or tapdisk
/// (`backend/vbd3`), written as libxl writes it: `params` = `<format>:<path>`,
/// never seen by a hotplug script (so written here, for domain 7).
fn other_backend(r: &Run, root: &str, params: &str, mode: &str) -> String {
    let be = format!("backend/{root}/7/{DEVID}");
    for (k, v) in [
        (
            "frontend",
            format!("/local/domain/7/device/vbd/{DEVID}").as_str(),
        ),
        ("params", params),
        ("frontend-id", "7"),
        ("online", "1"),
        ("state", "4"),
        ("dev", "xvda"),
        ("type", root),
        ("mode", mode),
        ("device-type", "disk"),
    ] {
        r.env.write(&format!("{be}/{k}"), v);
    }
    be
}

/// VM a (7) has the target through `root` with `params` = `<format>:<target>`
/// in `held` mode; VM b (9) asks for it through `backend/vbd` in `mode`.
fn other_type(
    r: &mut Run,
    kind: Kind,
    root: &str,
    format: &str,
    held: &str,
    mode: &str,
) -> Vec<String> {
    let t = target(r, kind);
    two_vms(r);
    other_backend(r, root, &format!("{format}:{t}"), held);
    let b = r.backend(9, DEVID, &t, mode);
    let s = r.prepare(&b);
    let mut v = vec![r.outcome(&s, &b)];
    if kind == Kind::File {
        v.push(r.loops("IMG"));
    }
    v
}

#[test]
fn scenario_qdisk_file_w_vs_vbd_w() {
    scenario("qdisk_file_w_vs_vbd_w", |r| {
        other_type(r, Kind::File, "qdisk", "aio", "w", "w")
    });
}

#[test]
fn scenario_qdisk_file_w_vs_vbd_r() {
    scenario("qdisk_file_w_vs_vbd_r", |r| {
        other_type(r, Kind::File, "qdisk", "qcow2", "w", "r")
    });
}

#[test]
fn scenario_qdisk_file_r_vs_vbd_r() {
    scenario("qdisk_file_r_vs_vbd_r", |r| {
        other_type(r, Kind::File, "qdisk", "aio", "r", "r")
    });
}

#[test]
fn scenario_qdisk_phy_w_vs_vbd_w() {
    scenario("qdisk_phy_w_vs_vbd_w", |r| {
        other_type(r, Kind::Phy, "qdisk", "aio", "w", "w")
    });
}

#[test]
fn scenario_vbd3_file_w_vs_vbd_w() {
    scenario("vbd3_file_w_vs_vbd_w", |r| {
        other_type(r, Kind::File, "vbd3", "vhd", "w", "w")
    });
}

#[test]
fn scenario_qdisk_file_w_vs_vbd_force() {
    scenario("qdisk_file_w_vs_vbd_force", |r| {
        other_type(r, Kind::File, "qdisk", "aio", "w", "w!")
    });
}

#[test]
fn scenario_swap_phy_r() {
    // The device is active swap in the backend domain.
    scenario("swap_phy_r", |r| {
        let d = r.disk("DISK");
        let ok = std::process::Command::new("mkswap")
            .arg("-q")
            .arg(&d)
            .status()
            .expect("mkswap (util-linux) must be installed");
        assert!(ok.success(), "mkswap {d}");
        let ok = std::process::Command::new("swapon")
            .arg(&d)
            .status()
            .unwrap();
        assert!(ok.success(), "swapon {d}");
        r.swaps.push(PathBuf::from(&d));
        r.domain(7, "/vm/a");
        let be = r.backend(7, DEVID, &d, "r");
        let s = r.prepare(&be);
        vec![r.outcome(&s, &be)]
    });
}

// ------------------------------------------------------------------ rows

/// A scenario's expected outcomes; the source of CONFORMANCE.md's table.
struct Row {
    name: &'static str,
    what: &'static str,
    upstream: &'static str,
    /// [`SAME`] when xenblock must do exactly what upstream does.
    xenblock: &'static str,
    /// Why xenblock's outcome is right, for each divergence.
    why: &'static str,
}

const SAME: &str = "same";

impl Row {
    fn xenblock(&self) -> &'static str {
        if self.xenblock == SAME {
            self.upstream
        } else {
            self.xenblock
        }
    }
}

const ROWS: &[Row] = &[
    Row {
        name: "phy_r",
        what: "phy target, mode `r`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_w",
        what: "phy target, mode `w`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_w_force",
        what: "phy target, mode `w!`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_rw",
        what: "phy target, mode `rw`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_ro",
        what: "phy target, mode `ro`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_r",
        what: "file target, mode `r`: read-only loop device",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_w",
        what: "file target, mode `w`: read-write loop device",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_w_force",
        what: "file target, mode `w!`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_rw",
        what: "file target, mode `rw`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_ro",
        what: "file target, mode `ro`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_shared_read_only",
        what: "phy held `r` by VM a; VM b asks `r`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_shared_read_only",
        what: "file held `r` by VM a; VM b asks `ro`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro,ro]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_w_vs_other_vm_w",
        what: "phy held `w` by VM a; VM b asks `w`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_r_vs_other_vm_w",
        what: "phy held `w` by VM a; VM b asks `r`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_w_vs_other_vm_r",
        what: "phy held `r` by VM a; VM b asks `w`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_w_vs_other_vm_w",
        what: "file held `w` by VM a; VM b asks `w`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw,rw]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[rw]",
        why: "Upstream bug (a): check_sharing matches `losetup -a` lines against `stat -c %D`, which is hex (`fe00`), while util-linux 2.38 prints the backing device in decimal (`[65024]`); it never finds the loop devices over the file, so it attaches the file again. docs/contract.md: a file given to one VM read-write is given to no other VM; xenblock compares (st_dev, st_ino) numbers.",
    },
    Row {
        name: "file_r_vs_other_vm_w",
        what: "file held `w` by VM a; VM b asks `r`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro,rw]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[rw]",
        why: "Upstream bug (a): check_sharing matches `losetup -a` lines against `stat -c %D`, which is hex (`fe00`), while util-linux 2.38 prints the backing device in decimal (`[65024]`); it never finds the loop devices over the file, so it attaches the file again. A reader must not share a file another VM writes (docs/contract.md guest rule).",
    },
    Row {
        name: "file_w_vs_other_vm_r",
        what: "file held `r` by VM a; VM b asks `w`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro,rw]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[ro]",
        why: "Upstream bug (a): check_sharing matches `losetup -a` lines against `stat -c %D`, which is hex (`fe00`), while util-linux 2.38 prints the backing device in decimal (`[65024]`); it never finds the loop devices over the file, so it attaches the file again. A writer must not get a file another VM reads (docs/contract.md guest rule).",
    },
    Row {
        name: "phy_force_vs_other_vm_w",
        what: "phy held `w` by VM a; VM b asks `w!` (no checks)",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_force_vs_other_vm_w",
        what: "file held `w` by VM a; VM b asks `w!` (no checks)",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw,rw]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_same_vm_direct",
        what: "phy held `w` by domain 7; domain 8 of the same vm asks `w`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_same_vm_direct",
        what: "file held `w` by domain 7; domain 8 of the same vm asks `w`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw,rw]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_same_vm_stubdom",
        what: "phy held `w` by guest 7; its stub domain 8 (`target` 7) asks `w`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_holder_without_vm_node",
        what: "phy held `w` by domain 7 that has no `vm` node; VM b asks `w`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes",
        why: "Deliberate: upstream's same_vm defaults a missing `/local/domain/<id>/vm` to the requester's own vm, so an unidentified holder counts as the same VM and the disk goes read-write to two domains. xenblock never treats a missing vm as the same VM (`sharing::same_vm`): refusing is the safe side of the one safety rule.",
    },
    Row {
        name: "mounted_rw_phy_r",
        what: "device mounted read-write in the backend domain; asks `r`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "mounted_rw_phy_w",
        what: "device mounted read-write in the backend domain; asks `w`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "mounted_ro_phy_r",
        what: "device mounted read-only in the backend domain; asks `r`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "mounted_ro_phy_w",
        what: "device mounted read-only in the backend domain; asks `w`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_unwritable_w",
        what: "file with mode 0444, asks `w`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_unwritable_r",
        what: "file with mode 0444, asks `r`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "file_state_not_initwait",
        what: "file target, backend `state` 6, not 2",
        upstream: "fail error pd=- pdp=- node=- herr=yes; loops(IMG)=[]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_state_not_initwait",
        what: "phy target, backend `state` 6 (neither checks state for devices)",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "already_prepared",
        what: "`physical-device` already present (`ca:fe`): nothing changes",
        upstream: "ok no-status pd=ca:fe pdp=- node=- herr=-; loops(IMG)=[]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "empty_target",
        what: "`params` empty",
        upstream: "fail error pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "missing_target",
        what: "`params` names a file that does not exist",
        upstream: "fail connected pd=- pdp=- node=- herr=-",
        xenblock: "fail error pd=- pdp=- node=- herr=yes",
        why: "Upstream bug (c): neither `-b` nor `-f` holds, so the script takes the empty-type branch, writes `hotplug-status connected` with no device, then exits 1 (no `block-phy` helper); whoever watches `hotplug-status` sees a connected disk with nothing behind it and the guest hangs. docs/contract.md: a target naming nothing → `error` with `hotplug-error`.",
    },
    Row {
        name: "dangling_symlink",
        what: "`params` is a symlink to nothing",
        upstream: "fail connected pd=- pdp=- node=- herr=-",
        xenblock: "fail error pd=- pdp=- node=- herr=yes",
        why: "As `missing_target` (bug (c)); xenblock's `hotplug-error` says the link's target is missing.",
    },
    Row {
        name: "relative_device_name",
        what: "`params` is `loopN` (relative device name)",
        upstream: "fail connected pd=- pdp=- node=- herr=-",
        xenblock: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        why: "Upstream bug (b): the script tests `-b \"$p\"` before `expand_dev` adds `/dev/`, so `loopN` takes the empty-type branch: connected, no device, exit 1. docs/contract.md: relative names get `/dev/` prefixed.",
    },
    Row {
        name: "symlink_to_device",
        what: "`params` is a symlink to the device: the resolved path is written",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "symlink_to_file",
        what: "`params` is a symlink to the image: the image is attached",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "release_phy",
        what: "prepare then remove a phy disk: the device is left alone",
        upstream: "remove ok; DISK attached",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "release_file",
        what: "prepare then remove a file disk: its loop device is detached",
        upstream: "loops(IMG)=[rw]; remove ok; loops(IMG)=[]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "release_file_attached_by_upstream",
        what: "remove a file disk that upstream `block add` attached",
        upstream: "loops(IMG)=[rw]; remove ok; loops(IMG)=[]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "release_file_attached_by_xenblock",
        what: "remove a file disk that xenblock attached",
        upstream: "loops(IMG)=[rw]; remove ok; loops(IMG)=[]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "release_reused_loop_device",
        what: "after prepare, the loop device is detached behind our back and its number reused for another file (OTHER); then remove",
        upstream: "remove ok; loops(IMG)=[]; loops(OTHER)=[]",
        xenblock: "remove ok; loops(IMG)=[]; loops(OTHER)=[ro]",
        why: "Upstream runs `losetup -d $node` without looking at what the device now serves, and detaches another user's disk. docs/contract.md release: detach only while still backed by the same file; never detach someone else's.",
    },
    Row {
        name: "mixed_phy_upstream_attached_first",
        what: "upstream attached the device `w` for VM a; VM b asks `w`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "mixed_phy_xenblock_attached_first",
        what: "xenblock attached the device `w` for VM a; VM b asks `w`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "mixed_file_upstream_attached_first",
        what: "upstream attached the file `w` for VM a; VM b asks `w`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw,rw]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[rw]",
        why: "Upstream bug (a): check_sharing matches `losetup -a` lines against `stat -c %D`, which is hex (`fe00`), while util-linux 2.38 prints the backing device in decimal (`[65024]`); it never finds the loop devices over the file, so it attaches the file again. xenblock finds upstream's loop device by (st_dev, st_ino) and refuses.",
    },
    Row {
        name: "mixed_file_xenblock_attached_first",
        what: "xenblock attached the file `w` for VM a; VM b asks `w`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw,rw]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[rw]",
        why: "Upstream bug (a): check_sharing matches `losetup -a` lines against `stat -c %D`, which is hex (`fe00`), while util-linux 2.38 prints the backing device in decimal (`[65024]`); it never finds the loop devices over the file, so it attaches the file again. xenblock refuses (docs/contract.md guest rule).",
    },
    Row {
        name: "lock_held_by_the_other_side",
        what: "the other side holds the `block` lock (upstream: xenblock's HotplugLock; xenblock: `claim_lock block` of locking.sh); the attach waits for it",
        upstream: "waited=true; ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_r_vs_other_vm_force",
        what: "phy held `w!` by VM a; VM b asks `r` (a `!` holder blocks writers only)",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_same_vm_stubdom_holds",
        what: "phy held `w` by stub domain 8 (`target` 7); guest 7 asks `w`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_requester_without_vm_node",
        what: "phy held `w` by VM a; domain 9 without `vm` node asks `w`",
        upstream: "fail busy pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "phy_both_without_vm_node",
        what: "phy held `w` by domain 7; domain 9 asks `w`; neither has a `vm` node",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes",
        why: "Deliberate, as `phy_holder_without_vm_node`: two unidentified domains are not known to be one VM, so read-write sharing is refused.",
    },
    Row {
        name: "phy_other_vm_claim_zero_padded",
        what: "another VM's backend holds the device `w` with `physical-device` written zero-padded (`07:0N`)",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes",
        why: "Upstream compares `physical-device` as text (`7:3` vs `07:03`); blkback reads it with `%x:%x`, so that backend serves this very device. docs/contract.md: compare numbers, never formatted text.",
    },
    Row {
        name: "file_loop_mounted_in_backend",
        what: "the backend domain loop-mounts the image read-write itself; asks `r`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro,rw]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[rw]",
        why: "Upstream bug (a): check_sharing matches `losetup -a` lines against `stat -c %D`, which is hex (`fe00`), while util-linux 2.38 prints the backing device in decimal (`[65024]`); it never finds the loop devices over the file, so it attaches the file again. So upstream never sees that a loop device over the file is mounted read-write in dom0; docs/contract.md local rule refuses (for `r`, read-write mounts count).",
    },
    Row {
        name: "target_is_directory",
        what: "`params` names a directory",
        upstream: "fail connected pd=- pdp=- node=- herr=-",
        xenblock: "fail error pd=- pdp=- node=- herr=yes",
        why: "As `missing_target`: upstream says connected with no device. A directory is neither a file nor a block device; there is nothing to serve, so `error` with a message.",
    },
    Row {
        name: "symlink_with_space_to_device",
        what: "`params` is a symlink named `my disk` to the device",
        upstream: "fail error pd=- pdp=- node=- herr=yes",
        xenblock: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        why: "Upstream calls `expand_dev $p` unquoted: the path splits at the space and `test -e` fails on its first word (`fatal ... does not exist`). The path is a valid symlink to a block device (docs/contract.md: symlinks resolved).",
    },
    Row {
        name: "missing_mode",
        what: "no `mode` node",
        upstream: "fail error pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "missing_frontend_id",
        what: "no `frontend-id` node",
        upstream: "fail error pd=- pdp=- node=- herr=yes",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "release_file_never_prepared",
        what: "remove of a file backend that was never prepared (no `node`)",
        upstream: "fail error pd=- pdp=- node=- herr=yes",
        xenblock: "ok no-status pd=- pdp=- node=- herr=-",
        why: "Upstream's remove reads `node` with `xenstore_read`, which calls `fatal` when it is missing: `hotplug-status error` on a backend being torn down, exit 1. docs/contract.md: release is idempotent; nothing to undo is success.",
    },
    Row {
        name: "release_file_renamed_after_attach",
        what: "the image is renamed while attached, then remove",
        upstream: "remove ok; loops(IMG)=[rw]",
        xenblock: "remove ok; loops(IMG)=[]",
        why: "Upstream picks file/phy on remove from `-f \"$params\"`; once the image is renamed or deleted the type is empty and remove exits 0 without detaching: the loop device leaks. xenblock recognises its own loop device by the tag it put in `lo_file_name` (its backend path) and detaches it.",
    },
    Row {
        name: "qdisk_file_w_vs_vbd_w",
        what: "file used `w` by VM a through QEMU (`backend/qdisk`, `params` `aio:IMG`); VM b asks `w` through `backend/vbd`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[]",
        why: "Upstream allows: double writer. The script's check_sharing looks only at `backend/vbd` entries (their `physical-device`, and loop devices via `losetup`); it never reads `backend/qdisk` or `backend/vbd3`, where QEMU or tapdisk open the file themselves. xenblock reads every backend root that names a disk and compares the file by (st_dev, st_ino): the refusal names `backend/qdisk/7/51712` and QEMU.",
    },
    Row {
        name: "qdisk_file_w_vs_vbd_r",
        what: "file used `w` by VM a through QEMU (`qcow2:IMG`); VM b asks `r`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[]",
        why: "Upstream allows: double writer. The script's check_sharing looks only at `backend/vbd` entries (their `physical-device`, and loop devices via `losetup`); it never reads `backend/qdisk` or `backend/vbd3`, where QEMU or tapdisk open the file themselves. A reader must not share a file another VM writes (guest rule), whichever backend serves the writer.",
    },
    Row {
        name: "qdisk_file_r_vs_vbd_r",
        what: "file used `r` by VM a through QEMU; VM b asks `r`: read-only sharing",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[ro]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "qdisk_phy_w_vs_vbd_w",
        what: "block device used `w` by VM a through QEMU (`aio:DISK`); VM b asks `w`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes",
        why: "Upstream allows: double writer. The script's check_sharing looks only at `backend/vbd` entries (their `physical-device`, and loop devices via `losetup`); it never reads `backend/qdisk` or `backend/vbd3`, where QEMU or tapdisk open the file themselves. xenblock compares a qdisk naming a block device by its device number.",
    },
    Row {
        name: "vbd3_file_w_vs_vbd_w",
        what: "file used `w` by VM a through tapdisk (`backend/vbd3`, `vhd:IMG`); VM b asks `w`",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw]",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes; loops(IMG)=[]",
        why: "Upstream allows: double writer. The script's check_sharing looks only at `backend/vbd` entries (their `physical-device`, and loop devices via `losetup`); it never reads `backend/qdisk` or `backend/vbd3`, where QEMU or tapdisk open the file themselves. As for qdisk.",
    },
    Row {
        name: "qdisk_file_w_vs_vbd_force",
        what: "file used `w` by VM a through QEMU; VM b asks `w!` (no checks)",
        upstream: "ok connected pd=#loop(IMG) pdp=loop(IMG) node=loop(IMG) herr=-; loops(IMG)=[rw]",
        xenblock: SAME,
        why: "",
    },
    Row {
        name: "swap_phy_r",
        what: "device is active swap in the backend domain; asks `r`",
        upstream: "ok connected pd=#DISK pdp=DISK node=- herr=-",
        xenblock: "fail busy pd=- pdp=- node=- herr=yes",
        why: "Upstream checks only `/proc/mounts` in dom0, where swap never appears: it hands dom0's swap device to a guest. xenblock reads `/proc/swaps` and treats active swap as a read-write user in dom0 (docs/contract.md local rule, over overlap).",
    },
];

// ------------------------------------------------------- the table check

const BEGIN: &str =
    "<!-- BEGIN GENERATED: tests/conformance.rs ROWS; XENBLOCK_BLESS=1 rewrites -->";
const END: &str = "<!-- END GENERATED -->";

fn render_table() -> String {
    let mut t = String::from(
        "| Scenario | What | Upstream `block` | xenblock | Why xenblock differs |\n|---|---|---|---|---|\n",
    );
    for r in ROWS {
        t.push_str(&format!(
            "| `scenario_{}` | {} | `{}` | {} | {} |\n",
            r.name,
            r.what,
            r.upstream,
            if r.xenblock == SAME {
                "same".to_string()
            } else {
                format!("`{}`", r.xenblock)
            },
            r.why
        ));
    }
    t
}

#[test]
fn conformance_table_matches_the_suite() {
    let src = include_str!("conformance.rs");
    let mut fns: Vec<&str> = src
        .split("\nfn scenario_")
        .skip(1)
        .map(|s| s.split('(').next().unwrap())
        .collect();
    for f in &fns {
        let start = src.find(&format!("\nfn scenario_{f}() {{\n")).unwrap();
        let body = &src[start..];
        let body = &body[..body.find("\n}\n").unwrap()];
        assert!(
            body.contains(&format!("scenario(\"{f}\", ")),
            "scenario_{f} must run scenario(\"{f}\", ...)"
        );
    }
    assert!(
        !src.contains(concat!("#[", "ignore")),
        "no scenario may be ignored"
    );
    let mut rows: Vec<&str> = ROWS.iter().map(|r| r.name).collect();
    fns.sort();
    rows.sort();
    let n = rows.len();
    rows.dedup();
    assert_eq!(n, rows.len(), "duplicate rows");
    assert_eq!(fns, rows, "scenario functions and ROWS differ");
    assert!(fns.len() >= 25, "at least 25 scenarios");
    for r in ROWS {
        let differs = r.xenblock() != r.upstream;
        assert_eq!(
            differs,
            !r.why.is_empty(),
            "{}: a row explains why exactly when xenblock differs",
            r.name
        );
        assert!(
            r.xenblock != r.upstream,
            "{}: write SAME for identical outcomes",
            r.name
        );
    }

    let md_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("CONFORMANCE.md");
    let md = std::fs::read_to_string(&md_path).unwrap_or_default();
    let table = render_table();
    let (Some(b), Some(e)) = (md.find(BEGIN), md.find(END)) else {
        panic!("CONFORMANCE.md lacks the markers {BEGIN} ... {END}");
    };
    let current = &md[b + BEGIN.len()..e];
    let wanted = format!("\n{table}");
    if current != wanted {
        if std::env::var_os("XENBLOCK_BLESS").is_some() {
            let new = format!("{}{BEGIN}{wanted}{}", &md[..b], &md[e..]);
            std::fs::write(&md_path, new).unwrap();
        } else {
            panic!(
                "CONFORMANCE.md's table is not the one ROWS in tests/conformance.rs generates; \
                 run `XENBLOCK_BLESS=1 cargo test --release --test conformance \
                 conformance_table` and commit CONFORMANCE.md"
            );
        }
    }
}
