//! In-process prepare/release on Linux against the embedded xenstored with
//! real loop devices (docs/contract.md). Needs root: fails, never skips, without.

mod common;
use common::{require_root, Env};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use xenblock::{Config, Context, ErrorKind, LogLevel, Prepared, Released};

fn hex(path: &std::path::Path) -> String {
    let st = xenblock::sys::stat::stat(path).unwrap();
    xenblock::sharing::DevNum::from_dev_t(st.rdev).to_string()
}

#[test]
fn phy_device_is_connected_with_its_number() {
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("phy.img");
    env.domain(5, "/vm/a");
    let be = env.backend(5, 51712, &dev.display().to_string(), "w");
    let ctx = env.ctx();
    let r = ctx.prepare(&be).unwrap();
    assert!(matches!(r, Prepared::Connected { node: None, .. }), "{r:?}");
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    assert_eq!(env.read(&format!("{be}/physical-device")), Some(hex(&dev)));
    assert_eq!(
        env.read(&format!("{be}/physical-device-path")),
        Some(dev.display().to_string())
    );
    assert_eq!(env.read(&format!("{be}/node")), None);
    assert_eq!(ctx.release(&be).unwrap(), Released::Nothing);
    assert_eq!(
        env.loops_of(&env.dir.join("phy.img")).len(),
        1,
        "phy release touches nothing"
    );
}

#[test]
fn relative_device_names_are_expanded_under_dev() {
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("rel.img");
    env.domain(5, "/vm/a");
    let name = dev.file_name().unwrap().to_str().unwrap().to_string();
    let be = env.backend(5, 51712, &name, "r");
    env.ctx().prepare(&be).unwrap();
    assert_eq!(env.read(&format!("{be}/physical-device")), Some(hex(&dev)));
    assert_eq!(
        env.read(&format!("{be}/physical-device-path")),
        Some(dev.display().to_string())
    );
}

#[test]
fn symlinked_targets_are_resolved() {
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("sym.img");
    let link = env.dir.join("disk-link");
    std::os::unix::fs::symlink(&dev, &link).unwrap();
    env.domain(5, "/vm/a");
    let be = env.backend(5, 51712, &link.display().to_string(), "w");
    env.ctx().prepare(&be).unwrap();
    assert_eq!(
        env.read(&format!("{be}/physical-device-path")),
        Some(dev.display().to_string())
    );

    let img = env.image("file.img", 1 << 20);
    let flink = env.dir.join("file-link");
    std::os::unix::fs::symlink(&img, &flink).unwrap();
    let be2 = env.backend(5, 51728, &flink.display().to_string(), "w");
    env.ctx().prepare(&be2).unwrap();
    let loops = env.loops_of(&img);
    assert_eq!(loops.len(), 1, "the symlink's target is what gets attached");
}

#[test]
fn file_rw_gets_a_writable_loop_device_and_release_detaches_it() {
    require_root();
    let mut env = Env::new();
    let img = env.image("rw.img", 4 << 20);
    // A domid no other test here uses: the second release below looks at
    // the loop device `node` still names, which a test running alongside
    // may have bound meanwhile; with the same backend path its tag would
    // be this backend's too (one xenstored per host makes that impossible
    // outside tests).
    env.domain(17, "/vm/seventeen");
    let be = env.backend(17, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&be).unwrap();
    let loops = env.loops_of(&img);
    assert_eq!(loops.len(), 1);
    let lo = &loops[0];
    assert!(!lo.read_only);
    let node = lo.path.display().to_string();
    assert_eq!(env.read(&format!("{be}/node")), Some(node.clone()));
    assert_eq!(
        env.read(&format!("{be}/physical-device-path")),
        Some(node.clone())
    );
    assert_eq!(
        env.read(&format!("{be}/physical-device")),
        Some(lo.dev.to_string())
    );
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    assert!(
        String::from_utf8_lossy(&lo.file_name)
            .starts_with("xenblock:/local/domain/0/backend/vbd/17/51712"),
        "loop device is tagged with its backend: {:?}",
        String::from_utf8_lossy(&lo.file_name)
    );
    assert_eq!(ctx.release(&be).unwrap(), Released::Detached(node));
    assert!(env.loops_of(&img).is_empty());
    // Idempotent: nothing more to detach (the number may already serve
    // someone else's file, which must be left alone).
    let again = ctx.release(&be).unwrap();
    assert!(
        matches!(again, Released::Nothing | Released::LeftAlone(_)),
        "{again:?}"
    );
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn file_r_is_attached_read_only_and_shared_between_vms() {
    require_root();
    let mut env = Env::new();
    let img = env.image("ro.img", 1 << 20);
    env.domain(1, "/vm/one");
    env.domain(2, "/vm/two");
    let a = env.backend(1, 51712, &img.display().to_string(), "r");
    let b = env.backend(2, 51712, &img.display().to_string(), "ro");
    let ctx = env.ctx();
    ctx.prepare(&a).unwrap();
    ctx.prepare(&b).unwrap();
    let loops = env.loops_of(&img);
    assert_eq!(loops.len(), 2);
    assert!(loops.iter().all(|l| l.read_only));
    // A writer now is refused.
    env.domain(3, "/vm/three");
    let c = env.backend(3, 51712, &img.display().to_string(), "w");
    let e = ctx.prepare(&c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert_eq!(
        env.read(&format!("{c}/hotplug-status")).as_deref(),
        Some("busy")
    );
    assert_eq!(env.loops_of(&img).len(), 2, "a refusal attaches nothing");
}

#[test]
fn file_rw_conflict_with_another_vm_is_refused_with_who_holds_it() {
    require_root();
    let mut env = Env::new();
    let img = env.image("conflict.img", 1 << 20);
    env.domain(7, "/vm/seven");
    env.domain(9, "/vm/nine");
    let a = env.backend(7, 51712, &img.display().to_string(), "w");
    let b = env.backend(9, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&a).unwrap();
    let e = ctx.prepare(&b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    let msg = env.read(&format!("{b}/hotplug-error")).unwrap();
    assert_eq!(msg, e.to_string());
    assert!(msg.contains(&img.display().to_string()), "{msg}");
    assert!(
        msg.contains("domain 7") && msg.contains("backend/vbd/7/51712"),
        "{msg}"
    );
    assert!(msg.contains("read-write"), "{msg}");
    assert_eq!(
        env.read(&format!("{b}/hotplug-status")).as_deref(),
        Some("busy")
    );
    assert_eq!(env.read(&format!("{b}/node")), None);
    assert_eq!(env.read(&format!("{b}/physical-device")), None);
    assert_eq!(env.loops_of(&img).len(), 1);
    // r against a w holder is refused too.
    let c = env.backend(9, 51728, &img.display().to_string(), "r");
    assert_eq!(ctx.prepare(&c).unwrap_err().kind(), ErrorKind::Busy);
}

#[test]
fn phy_rw_conflict_with_another_vm_is_refused() {
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("phyconf.img");
    env.domain(7, "/vm/seven");
    env.domain(9, "/vm/nine");
    let a = env.backend(7, 51712, &dev.display().to_string(), "w");
    let b = env.backend(9, 51712, &dev.display().to_string(), "r");
    let ctx = env.ctx();
    ctx.prepare(&a).unwrap();
    let e = ctx.prepare(&b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert_eq!(env.read(&format!("{b}/physical-device")), None);
}

#[test]
fn same_vm_may_share_directly_and_through_a_stub_domain() {
    require_root();
    let mut env = Env::new();
    let img = env.image("same.img", 1 << 20);
    env.domain(4, "/vm/guest");
    env.domain(5, "/vm/guest");
    // Domain 6 is the device-model stub domain of domain 4.
    env.domain(6, "/vm/stubdom-of-4");
    env.write("/local/domain/6/target", "4");
    let ctx = env.ctx();
    let a = env.backend(4, 51712, &img.display().to_string(), "w");
    let b = env.backend(5, 51712, &img.display().to_string(), "w");
    let c = env.backend(6, 51712, &img.display().to_string(), "w");
    ctx.prepare(&a).unwrap();
    ctx.prepare(&b).unwrap();
    ctx.prepare(&c).unwrap();
    assert_eq!(env.loops_of(&img).len(), 3);
}

#[test]
fn forced_mode_skips_the_checks() {
    require_root();
    let mut env = Env::new();
    let img = env.image("force.img", 1 << 20);
    env.domain(1, "/vm/one");
    env.domain(2, "/vm/two");
    let ctx = env.ctx();
    ctx.prepare(&env.backend(1, 51712, &img.display().to_string(), "w"))
        .unwrap();
    let b = env.backend(2, 51712, &img.display().to_string(), "w!");
    ctx.prepare(&b).unwrap();
    let loops = env.loops_of(&img);
    assert_eq!(loops.len(), 2);
    assert!(loops.iter().all(|l| !l.read_only), "w! attaches read-write");
}

#[test]
fn read_only_file_is_refused_for_write() {
    require_root();
    let mut env = Env::new();
    let img = env.image("perm.img", 1 << 20);
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o444)).unwrap();
    env.domain(1, "/vm/one");
    let be = env.backend(1, 51712, &img.display().to_string(), "w");
    let e = env.ctx().prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("busy")
    );
    assert!(env.loops_of(&img).is_empty());
    // Read-only use is fine.
    let r = env.backend(1, 51728, &img.display().to_string(), "r");
    env.ctx().prepare(&r).unwrap();
}

#[test]
fn file_requires_initwait_state() {
    require_root();
    let mut env = Env::new();
    let img = env.image("state.img", 1 << 20);
    env.domain(1, "/vm/one");
    let be = env.backend(1, 51712, &img.display().to_string(), "w");
    env.write(&format!("{be}/state"), "6");
    let e = env.ctx().prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadState, "{e}");
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("error")
    );
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn already_prepared_backend_is_left_unchanged() {
    require_root();
    let mut env = Env::new();
    let img = env.image("twice.img", 1 << 20);
    env.domain(1, "/vm/one");
    let be = env.backend(1, 51712, &img.display().to_string(), "w");
    env.write(&format!("{be}/physical-device"), "ca:fe");
    assert_eq!(env.ctx().prepare(&be).unwrap(), Prepared::AlreadyPrepared);
    assert_eq!(
        env.read(&format!("{be}/physical-device")).as_deref(),
        Some("ca:fe")
    );
    assert_eq!(env.read(&format!("{be}/hotplug-status")), None);
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn empty_missing_and_dangling_targets_are_errors() {
    require_root();
    let env = Env::new();
    env.domain(1, "/vm/one");
    let ctx = env.ctx();
    let empty = env.backend(1, 1, "", "w");
    let e = ctx.prepare(&empty).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("no target"), "{e}");
    assert_eq!(
        env.read(&format!("{empty}/hotplug-status")).as_deref(),
        Some("error")
    );

    let missing = env.backend(1, 2, "/nonexistent/disk.img", "w");
    let e = ctx.prepare(&missing).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        env.read(&format!("{missing}/hotplug-status")).as_deref(),
        Some("error")
    );
    assert!(env
        .read(&format!("{missing}/hotplug-error"))
        .unwrap()
        .contains("/nonexistent/disk.img"));

    let link = env.dir.join("dangling");
    std::os::unix::fs::symlink("/nonexistent/target.img", &link).unwrap();
    let dangling = env.backend(1, 3, &link.display().to_string(), "r");
    let e = ctx.prepare(&dangling).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("symbolic link"), "{e}");
}

#[test]
fn hostile_inputs_get_clear_errors() {
    require_root();
    let env = Env::new();
    env.domain(1, "/vm/one");
    let ctx = env.ctx();
    for bad in ["", "backend/vbd/1/../2", "backend vbd", "/local//x"] {
        assert_eq!(
            ctx.prepare(bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
    }
    let be = env.backend(1, 9, "../../etc/passwd", "r");
    assert_eq!(
        ctx.prepare(&be).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let be = env.backend(1, 10, "/etc", "r");
    assert_eq!(
        ctx.prepare(&be).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let be = env.backend(1, 11, &"x".repeat(3000), "r");
    assert!(ctx.prepare(&be).is_err());
    let be = env.backend(1, 12, "/dev/null", "r");
    assert_eq!(
        ctx.prepare(&be).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn custom_scripts_are_not_silently_accepted() {
    require_root();
    let env = Env::new();
    env.domain(1, "/vm/one");
    let be = env.backend(1, 51712, "/dev/null", "r");
    env.write(&format!("{be}/script"), "/nonexistent/scripts/block-custom");
    let e = env.ctx().prepare(&be).unwrap_err();
    assert_ne!(e.kind(), ErrorKind::Busy);
    assert_ne!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
}

#[test]
fn release_leaves_a_reused_loop_device_alone() {
    require_root();
    let mut env = Env::new();
    let img = env.image("mine.img", 1 << 20);
    let other = env.image("someone-else.img", 1 << 20);
    env.domain(1, "/vm/one");
    let be = env.backend(1, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&be).unwrap();
    // Our device goes away behind our back; its number now serves another file.
    let mine = env.loops_of(&img).remove(0).path;
    xenblock::sys::loopdev::detach(&mine).unwrap();
    let f = std::fs::File::open(&other).unwrap();
    let theirs = xenblock::sys::loopdev::attach(&f, true, b"not-xenblock").unwrap();
    env.write(&format!("{be}/node"), &theirs.path.display().to_string());
    let r = ctx.release(&be).unwrap();
    assert_eq!(r, Released::LeftAlone(theirs.path.display().to_string()));
    assert_eq!(
        env.loops_of(&other).len(),
        1,
        "someone else's device is never detached"
    );
}

#[test]
fn an_empty_file_given_read_write_is_not_given_read_write_again() {
    require_root();
    let mut env = Env::new();
    // Empty now; its first writer may make it grow.
    let img = env.image("empty.img", 0);
    env.domain(31, "/vm/thirty-one");
    env.domain(32, "/vm/thirty-two");
    let a = env.backend(31, 51712, &img.display().to_string(), "w");
    let b = env.backend(32, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&a).unwrap();
    let e = ctx.prepare(&b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("backend/vbd/31/51712"), "{e}");
    assert_eq!(env.loops_of(&img).len(), 1, "a refusal attaches nothing");
}

/// The diskseq the kernel reports for a device node, from sysfs (decimal).
fn sysfs_diskseq(node: &std::path::Path) -> u64 {
    let name = node.file_name().unwrap().to_str().unwrap();
    std::fs::read_to_string(format!("/sys/block/{name}/diskseq"))
        .expect("this kernel reports diskseq")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_devices_diskseq_is_recorded_in_hex() {
    require_root();
    let mut env = Env::new();
    let img = env.image("seq.img", 1 << 20);
    let dev = env.block_device("seqdev.img");
    env.domain(33, "/vm/thirty-three");
    let f = env.backend(33, 51712, &img.display().to_string(), "w");
    let d = env.backend(33, 51728, &dev.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&f).unwrap();
    ctx.prepare(&d).unwrap();
    let lo = env.loops_of(&img).remove(0);
    let want = format!("{:x}", sysfs_diskseq(&lo.path));
    assert_eq!(env.read(&format!("{f}/diskseq")), Some(want));
    let want = format!("{:x}", sysfs_diskseq(&dev));
    assert_eq!(env.read(&format!("{d}/diskseq")), Some(want));
    ctx.release(&f).unwrap();
}

#[test]
fn a_second_release_leaves_the_next_backends_device_alone() {
    require_root();
    let mut env = Env::new();
    let img = env.image("shared-in-turn.img", 1 << 20);
    env.domain(34, "/vm/thirty-four");
    env.domain(35, "/vm/thirty-five");
    let a = env.backend(34, 51712, &img.display().to_string(), "w");
    let b = env.backend(35, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&a).unwrap();
    let a_node = env.read(&format!("{a}/node")).unwrap();
    assert_eq!(ctx.release(&a).unwrap(), Released::Detached(a_node.clone()));
    // A's nodes stay (the toolstack removes the directory later); B now
    // gets the file, and (usually) the same loop number.
    ctx.prepare(&b).unwrap();
    let b_node = env.read(&format!("{b}/node")).unwrap();
    // Tests run alongside may have taken A's number: point A at B's
    // device, which is what a reused number means.
    env.write(&format!("{a}/node"), &b_node);
    let again = ctx.release(&a).unwrap();
    assert_eq!(again, Released::LeftAlone(b_node.clone()));
    let loops = env.loops_of(&img);
    assert_eq!(loops.len(), 1, "B's device is still attached");
    assert_eq!(loops[0].path.display().to_string(), b_node);
    assert_eq!(ctx.release(&b).unwrap(), Released::Detached(b_node));
}

#[test]
fn release_detaches_only_the_binding_it_recorded() {
    require_root();
    let mut env = Env::new();
    let img = env.image("rebound.img", 1 << 20);
    env.domain(36, "/vm/thirty-six");
    let a = env.backend(36, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&a).unwrap();
    let lo = env.loops_of(&img).remove(0);
    // The device is detached behind the backend's back and the file bound
    // again with the very same tag (another xenstored on this host, a
    // restored backend...): same number possible, another binding.
    xenblock::sys::loopdev::detach(&lo.path).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let again = xenblock::sys::loopdev::attach(&file, false, &lo.file_name).unwrap();
    assert_ne!(
        Some(format!("{:x}", sysfs_diskseq(&again.path))),
        env.read(&format!("{a}/diskseq"))
    );
    let node = again.path.display().to_string();
    env.write(&format!("{a}/node"), &node);
    assert_eq!(ctx.release(&a).unwrap(), Released::LeftAlone(node));
    assert_eq!(env.loops_of(&img).len(), 1, "the new binding stays");
}

#[test]
fn a_claim_on_a_number_bound_again_since_is_not_a_claim() {
    require_root();
    let mut env = Env::new();
    let img = env.image("first.img", 1 << 20);
    let next = env.image("next.img", 1 << 20);
    env.domain(37, "/vm/thirty-seven");
    env.domain(39, "/vm/thirty-nine");
    let a = env.backend(37, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&a).unwrap();
    // A's device goes away behind its back and its number (here: a number)
    // is bound again, to another file; A's nodes still name it.
    let lo = env.loops_of(&img).remove(0);
    xenblock::sys::loopdev::detach(&lo.path).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&next)
        .unwrap();
    let again = xenblock::sys::loopdev::attach(&f, false, b"someone-else").unwrap();
    env.write(&format!("{a}/physical-device"), &again.dev.to_string());
    env.write(&format!("{a}/node"), &again.path.display().to_string());
    // A guest wanting that other file: A's diskseq says its claim is gone.
    let d = env.backend(39, 51712, &next.display().to_string(), "w");
    // Through the scan (a context's first decision)...
    let fresh = env.ctx();
    fresh.prepare(&d).unwrap();
    fresh.release(&d).unwrap();
    env.unprepare(&d);
    // ...and through the claims index (`ctx` decided before).
    ctx.prepare(&d).unwrap();
    ctx.release(&d).unwrap();
    env.unprepare(&d);
    // Without a recorded diskseq (Xen's script), the number is a claim.
    xenblock::store::Store::remove(&*env.store, 0, &format!("{a}/diskseq")).unwrap();
    let e = ctx.prepare(&d).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains(&a), "{e}");
}

/// Unmounts on drop (panics included).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
    }
}

/// An ext4 filesystem made on `dev`.
fn mkfs(dev: &std::path::Path) {
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(dev)
        .status()
        .expect("mkfs.ext4 (e2fsprogs) must be installed");
    assert!(status.success());
}

/// `dev`'s filesystem mounted on a new directory `mnt`, until the guard drops.
fn mount(dev: &std::path::Path, mnt: std::path::PathBuf) -> Unmount {
    std::fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some(dev),
        &mnt,
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    Unmount(mnt)
}

#[test]
fn local_mounts_refuse_conflicting_modes() {
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("fs.img");
    mkfs(&dev);
    let mnt = env.dir.join("mnt");
    let guard = mount(&dev, mnt.clone());
    env.domain(1, "/vm/one");
    let ctx = env.ctx();
    for (devid, mode) in [(1, "r"), (2, "w")] {
        let be = env.backend(1, devid, &dev.display().to_string(), mode);
        let e = ctx.prepare(&be).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy, "mode {mode}: {e}");
        assert!(e.to_string().contains("mounted"), "{e}");
    }
    // Read-only mount: readers are allowed, writers are not.
    nix::mount::mount(
        None::<&str>,
        &mnt,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    let r = env.backend(1, 3, &dev.display().to_string(), "r");
    ctx.prepare(&r).unwrap();
    let w = env.backend(1, 4, &dev.display().to_string(), "w");
    assert_eq!(ctx.prepare(&w).unwrap_err().kind(), ErrorKind::Busy);
    drop(guard);
}

/// A context keeps the mount table and the swap list between decisions
/// and reads them again only when the kernel reports a change: a device
/// mounted, or made swap, after a decision is refused by the next one, and
/// allowed again once unmounted (or swapped off).
#[test]
fn a_long_lived_context_sees_mounts_and_swap_made_after_its_last_decision() {
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("later.img");
    let swap = env.block_device("later-swap.img");
    mkfs(&dev);
    env.domain(1, "/vm/one");
    let ctx = env.ctx();
    let be = env.backend(1, 1, &dev.display().to_string(), "w");
    // Decisions that read (and keep) the tables.
    for _ in 0..2 {
        ctx.prepare(&be).unwrap();
        ctx.release(&be).unwrap();
        env.unprepare(&be);
    }
    let guard = mount(&dev, env.dir.join("mnt-later"));
    let e = ctx.prepare(&be).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Busy,
        "mounted after the last decision: {e}"
    );
    assert!(e.to_string().contains("mounted"), "{e}");
    env.unprepare(&be);
    drop(guard);
    ctx.prepare(&be).unwrap();
    ctx.release(&be).unwrap();
    env.unprepare(&be);
    // The same for swap.
    let ok = std::process::Command::new("mkswap")
        .arg(&swap)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mkswap (util-linux) must be installed");
    assert!(ok.success());
    let sbe = env.backend(1, 2, &swap.display().to_string(), "w");
    ctx.prepare(&sbe).unwrap();
    ctx.release(&sbe).unwrap();
    env.unprepare(&sbe);
    struct SwapOff(std::path::PathBuf);
    impl Drop for SwapOff {
        fn drop(&mut self) {
            let _ = std::process::Command::new("swapoff").arg(&self.0).status();
        }
    }
    let ok = std::process::Command::new("swapon")
        .arg(&swap)
        .status()
        .expect("swapon (util-linux) must be installed");
    assert!(ok.success());
    let guard = SwapOff(swap.clone());
    let e = ctx.prepare(&sbe).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Busy,
        "swap after the last decision: {e}"
    );
    env.unprepare(&sbe);
    drop(guard);
    ctx.prepare(&sbe).unwrap();
    ctx.release(&sbe).unwrap();
}

#[test]
fn a_successful_prepare_logs_only_a_debug_sentence() {
    // Under libxl's logger anything at info or above is printed by every
    // `xl create`; the script prints nothing on success, nor may xenblock.
    require_root();
    let mut env = Env::new();
    let img = env.image("quiet.img", 4 << 20);
    env.domain(7, "/vm/seven");
    let be = env.backend(7, 51712, &img.display().to_string(), "w");
    let lines: Arc<Mutex<Vec<(LogLevel, String)>>> = Arc::default();
    let sink = lines.clone();
    let ctx = Context::new(Config {
        logger: Some(Arc::new(move |l: LogLevel, m: &str| {
            sink.lock().unwrap().push((l, m.to_string()))
        })),
        ..env.config()
    })
    .unwrap();
    ctx.prepare(&be).unwrap();
    ctx.release(&be).unwrap();
    let lines = lines.lock().unwrap();
    let prepared: Vec<_> = lines
        .iter()
        .filter(|(_, m)| m.contains("prepared"))
        .collect();
    assert_eq!(prepared.len(), 1, "{lines:?}");
    for (l, m) in lines.iter() {
        assert_eq!(
            *l,
            LogLevel::Debug,
            "a successful prepare logged above debug: {m}"
        );
        assert!(
            !m.contains("Some(") && !m.contains(" { "),
            "a Rust Debug form in a log line: {m}"
        );
    }
    assert!(
        prepared[0].1.contains("connected to /dev/loop"),
        "{}",
        prepared[0].1
    );
}

#[test]
fn release_with_a_garbled_diskseq_leaves_the_device_and_says_what_to_do() {
    require_root();
    let mut env = Env::new();
    let img = env.image("garbled-seq.img", 1 << 20);
    env.domain(36, "/vm/thirty-six");
    let be = env.backend(36, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&be).unwrap();
    let node = env.read(&format!("{be}/node")).unwrap();
    env.write(&format!("{be}/diskseq"), "not-hex");
    let e = ctx.release(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadState, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("'not-hex'")
            && !msg.contains("\"not-hex\"")
            && msg.contains(&node)
            && msg.contains(&format!("losetup -d {node}")),
        "{msg}"
    );
    assert_eq!(env.loops_of(&img).len(), 1, "the device is left attached");
}
