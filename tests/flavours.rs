//! The FreeBSD and NetBSD in-process contracts, selected at run time and so
//! tested on Linux. Needs root (a loop device stands in for a disk).

mod common;
use common::{require_root, Env};
use xenblock::{Config, Context, ErrorKind, Flavour, Prepared};

fn ctx(env: &Env, flavour: Flavour) -> Context {
    Context::new(Config {
        flavour,
        ..env.config()
    })
    .unwrap()
}

#[test]
fn freebsd_hands_the_file_itself_to_blkback_and_checks_sharing_by_inode() {
    require_root();
    let mut env = Env::new();
    let img = env.image("fbsd.img", 1 << 20);
    let link = env.dir.join("fbsd-link.img");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    env.domain(1, "/vm/one");
    env.domain(2, "/vm/two");
    let c = ctx(&env, Flavour::FreeBsd);
    let a = env.backend(1, 51712, &img.display().to_string(), "w");
    let r = c.prepare(&a).unwrap();
    assert_eq!(
        r,
        Prepared::Connected {
            physical_device: None,
            physical_device_path: img.display().to_string(),
            node: None
        }
    );
    assert_eq!(
        env.read(&format!("{a}/hotplug-status")).as_deref(),
        Some("connected")
    );
    assert_eq!(
        env.read(&format!("{a}/physical-device-path")),
        Some(img.display().to_string())
    );
    assert_eq!(env.read(&format!("{a}/physical-device")), None);
    assert_eq!(env.read(&format!("{a}/node")), None);
    assert!(env.loops_of(&img).is_empty(), "no loop device on FreeBSD");
    // Another VM reaching the same inode through a symlink is refused.
    let b = env.backend(2, 51712, &link.display().to_string(), "r");
    let e = c.prepare(&b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert_eq!(
        env.read(&format!("{b}/hotplug-status")).as_deref(),
        Some("busy")
    );
    // Readers share.
    let img2 = env.image("fbsd-ro.img", 1 << 20);
    c.prepare(&env.backend(1, 51728, &img2.display().to_string(), "r"))
        .unwrap();
    c.prepare(&env.backend(2, 51728, &img2.display().to_string(), "r"))
        .unwrap();
    assert_eq!(c.release(&a).unwrap(), xenblock::Released::Nothing);
}

#[test]
fn freebsd_devices_conflict_by_device_number() {
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("fbsd-dev.img");
    env.domain(1, "/vm/one");
    env.domain(2, "/vm/two");
    let c = ctx(&env, Flavour::FreeBsd);
    c.prepare(&env.backend(1, 51712, &dev.display().to_string(), "w"))
        .unwrap();
    let b = env.backend(2, 51712, &dev.display().to_string(), "w");
    assert_eq!(c.prepare(&b).unwrap_err().kind(), ErrorKind::Busy);
}

#[test]
fn netbsd_serves_devices_and_says_files_need_vnd() {
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("nbsd-dev.img");
    let img = env.image("nbsd.img", 1 << 20);
    env.domain(1, "/vm/one");
    let c = ctx(&env, Flavour::NetBsd);
    let a = env.backend(1, 51712, &dev.display().to_string(), "w");
    c.prepare(&a).unwrap();
    let st = xenblock::sys::stat::stat(&dev).unwrap();
    assert_eq!(
        env.read(&format!("{a}/physical-device")),
        Some(xenblock::sharing::DevNum::from_dev_t(st.rdev).to_string())
    );
    let b = env.backend(1, 51728, &img.display().to_string(), "w");
    let e = c.prepare(&b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("vnd"), "{e}");
    assert_eq!(
        env.read(&format!("{b}/hotplug-status")).as_deref(),
        Some("error")
    );
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn cli_selects_the_flavour_at_run_time() {
    require_root();
    let mut env = Env::new();
    let img = env.image("cli.img", 1 << 20);
    env.domain(1, "/vm/one");
    let be = env.backend(1, 51712, &img.display().to_string(), "w");
    let out = std::process::Command::new(common::exe("xenblock"))
        .args(["prepare", "--flavour", "freebsd", "--lock-dir"])
        .arg(env.dir.join("lock"))
        .arg(&be)
        .env("XENSTORED_PATH", &env.sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.read(&format!("{be}/physical-device-path")),
        Some(img.display().to_string())
    );
    let bad = std::process::Command::new(common::exe("xenblock"))
        .args(["prepare", "--flavour", "plan9", &be])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown flavour"));
}
