//! The sharing rule over every backend type and the block stack, end to end
//! against the embedded xenstored with real files and loop devices: a file
//! or device that QEMU (`backend/qdisk`) or tapdisk (`backend/vbd3`) serves
//! read-write to one VM is not given to another through `backend/vbd`,
//! whatever path names it; a device that is active swap in dom0 is not given
//! at all. Needs root (loop devices, swapon): fails, never skips, without it.

mod common;

use common::{require_root, Env};
use std::path::Path;
use xenblock::ErrorKind;

const DEVID: u32 = 51712;

/// A disk backend as libxl's device_disk_add writes it for QEMU (`qdisk`)
/// or tapdisk (`vbd3`): `params` = `<format>:<path>`, no hotplug script for
/// qdisk.
fn other_backend(env: &Env, root: &str, domid: u32, params: &str, mode: &str) -> String {
    let be = format!("backend/{root}/{domid}/{DEVID}");
    let fe = format!("/local/domain/{domid}/device/vbd/{DEVID}");
    for (k, v) in [
        ("frontend", fe.as_str()),
        ("params", params),
        ("frontend-id", &domid.to_string()),
        ("online", "1"),
        ("removable", "0"),
        ("bootable", "1"),
        ("state", "4"),
        ("dev", "xvda"),
        ("type", root),
        ("mode", mode),
        ("device-type", "disk"),
        ("discard-enable", "0"),
    ] {
        env.write(&format!("{be}/{k}"), v);
    }
    if root == "vbd3" {
        env.write(&format!("{be}/script"), "/etc/xen/scripts/block-tap");
    }
    be
}

/// Refused with `busy`, `hotplug-error` = the returned message, which
/// contains every `needle`; no loop device left on `img`.
fn assert_refused(env: &Env, be: &str, r: xenblock::Result<xenblock::Prepared>, needles: &[&str]) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in: {msg}");
    }
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("busy")
    );
    assert_eq!(
        env.read(&format!("{be}/hotplug-error")).as_deref(),
        Some(msg.as_str())
    );
    assert_eq!(env.read(&format!("{be}/physical-device")), None);
}

#[test]
fn qdisk_writer_blocks_vbd_of_the_same_file_by_any_path() {
    require_root();
    let mut env = Env::new();
    let img = env.image("a.img", 4 << 20);
    env.domain(5, "/vm/a");
    env.domain(9, "/vm/b");
    other_backend(&env, "qdisk", 5, &format!("aio:{}", img.display()), "w");
    // Through a symlink and through a hard link: the same inode.
    let sym = env.dir.join("a-link.img");
    std::os::unix::fs::symlink(&img, &sym).unwrap();
    let hard = env.dir.join("a-hard.img");
    std::fs::hard_link(&img, &hard).unwrap();
    let ctx = env.ctx();
    for (i, p) in [&img, &sym, &hard].iter().enumerate() {
        let be = env.backend(9, DEVID + i as u32, &p.display().to_string(), "r");
        let r = ctx.prepare(&be);
        assert_refused(
            &env,
            &be,
            r,
            &["used read-write by domain 5 through QEMU (backend/qdisk/5/51712)"],
        );
        assert!(env.loops_of(&img).is_empty());
    }
}

#[test]
fn qdisk_formats_and_vbd3() {
    require_root();
    let mut env = Env::new();
    let q = env.image("q.qcow2", 4 << 20);
    let v = env.image("v.vhd", 4 << 20);
    env.domain(5, "/vm/a");
    env.domain(6, "/vm/c");
    env.domain(9, "/vm/b");
    other_backend(&env, "qdisk", 5, &format!("qcow2:{}", q.display()), "w");
    other_backend(&env, "vbd3", 6, &format!("vhd:{}", v.display()), "w");
    let ctx = env.ctx();
    let be = env.backend(9, DEVID, &q.display().to_string(), "w");
    let r = ctx.prepare(&be);
    assert_refused(&env, &be, r, &["through QEMU (backend/qdisk/5/51712)"]);
    let be = env.backend(9, DEVID + 1, &v.display().to_string(), "w");
    let r = ctx.prepare(&be);
    assert_refused(
        &env,
        &be,
        r,
        &["through tapdisk (vbd3) (backend/vbd3/6/51712)"],
    );
}

#[test]
fn qdisk_read_only_shares_and_exceptions_hold() {
    require_root();
    let mut env = Env::new();
    let img = env.image("a.img", 4 << 20);
    env.domain(5, "/vm/a");
    env.domain(9, "/vm/b");
    // The stub domain 8 of guest 5.
    env.domain(8, "/vm/stub-of-5");
    env.write("/local/domain/8/target", "5");
    other_backend(&env, "qdisk", 5, &format!("aio:{}", img.display()), "r");
    let ctx = env.ctx();
    // Read-only on both sides: shared.
    let be = env.backend(9, DEVID, &img.display().to_string(), "r");
    ctx.prepare(&be).expect("read-only sharing stays allowed");
    ctx.release(&be).unwrap();
    // A writer is refused while QEMU reads it for another VM...
    let be = env.backend(9, DEVID + 1, &img.display().to_string(), "w");
    let r = ctx.prepare(&be);
    assert_refused(&env, &be, r, &["used read-only by domain 5 through QEMU"]);
    // ...but not for the same VM's stub domain, nor with w!.
    let be = env.backend(8, DEVID, &img.display().to_string(), "w");
    ctx.prepare(&be).expect("same VM through its stub domain");
    ctx.release(&be).unwrap();
    let be = env.backend(9, DEVID + 2, &img.display().to_string(), "w!");
    ctx.prepare(&be).expect("w! skips the checks");
    ctx.release(&be).unwrap();
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn qdisk_naming_a_block_device_and_its_backing_file() {
    require_root();
    let mut env = Env::new();
    let disk = env.block_device("disk-backing.img");
    let backing = env.dir.join("disk-backing.img");
    env.domain(5, "/vm/a");
    env.domain(9, "/vm/b");
    let ctx = env.ctx();
    // QEMU serves the block device itself: the device number matches.
    let q = other_backend(&env, "qdisk", 5, &format!("aio:{}", disk.display()), "w");
    let be = env.backend(9, DEVID, &disk.display().to_string(), "r");
    let r = ctx.prepare(&be);
    assert_refused(&env, &be, r, &["used read-write by domain 5 through QEMU"]);
    // QEMU serves the file under the loop device: found through the loop.
    env.write(
        &format!("{q}/params"),
        &format!("aio:{}", backing.display()),
    );
    let be = env.backend(9, DEVID + 1, &disk.display().to_string(), "r");
    let r = ctx.prepare(&be);
    assert_refused(
        &env,
        &be,
        r,
        &[
            &format!(
                "{} is a loop device over {}",
                disk.display(),
                backing.display()
            ),
            "which domain 5 uses read-write through QEMU (backend/qdisk/5/51712)",
        ],
    );
}

/// `swapon` on a device for the life of the guard.
struct SwapOn(std::path::PathBuf);
impl Drop for SwapOn {
    fn drop(&mut self) {
        let _ = std::process::Command::new("swapoff").arg(&self.0).status();
    }
}

#[test]
fn active_swap_in_dom0_is_refused() {
    require_root();
    let mut env = Env::new();
    let disk = env.block_device("swap-backing.img");
    let ok = std::process::Command::new("mkswap")
        .arg("-q")
        .arg(&disk)
        .status()
        .expect("mkswap (util-linux) must be installed");
    assert!(ok.success());
    let ok = std::process::Command::new("swapon")
        .arg(&disk)
        .status()
        .unwrap();
    assert!(ok.success(), "swapon {}", disk.display());
    let _swap = SwapOn(disk.clone());
    env.domain(9, "/vm/b");
    let ctx = env.ctx();
    let be = env.backend(9, DEVID, &disk.display().to_string(), "r");
    let r = ctx.prepare(&be);
    assert_refused(
        &env,
        &be,
        r,
        &[
            &format!("{} is active swap in dom0", disk.display()),
            "swapoff",
        ],
    );
    // The image under the swap device, as a file: found through the loop.
    let img = env.dir.join("swap-backing.img");
    let be = env.backend(9, DEVID + 1, &img.display().to_string(), "r");
    let r = ctx.prepare(&be);
    assert_refused(&env, &be, r, &["which is active swap in dom0"]);
    assert_eq!(
        env.loops_of(Path::new(&img)).len(),
        1,
        "only the test's own"
    );
}
