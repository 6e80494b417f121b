//! `xenblock enable` / `disable` / `status` against a scratch dpkg root
//! (XENBLOCK_DIVERT_ROOT, passed to dpkg-divert as --root): never the
//! host's /etc/xen. Needs root (enable/disable refuse otherwise) and Debian's
//! dpkg-divert; fails, never skips, without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Root {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/divert.rs needs root (enable/disable refuse to run without it)"
    );
    let r = std::env::temp_dir().join(format!("xenblock-divert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&r);
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "usr/sbin"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(r.join("usr/sbin/xenblock"), "stand-in").unwrap();
    Root(r)
}

fn xenblock(root: &Path, args: &[&str]) -> (i32, String) {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_xenblock"))
        .args(args)
        .env("XENBLOCK_DIVERT_ROOT", root)
        .output()
        .expect("run xenblock");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!text.contains("Some(") && !text.contains("Err("), "{text}");
    (o.status.code().unwrap_or(-1), text)
}

const T: &[&str] = &["enable", "--target", "/usr/sbin/xenblock"];

fn diversions(root: &Path) -> String {
    let o = Command::new("dpkg-divert")
        .arg("--root")
        .arg(root)
        .arg("--list")
        .output()
        .expect("dpkg-divert (Debian's dpkg) must be installed");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn enable_without_xens_script_is_refused_and_changes_nothing() {
    let r = scratch("noscript");
    let (rc, out) = xenblock(&r.0, T);
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("does not exist") && out.contains("Nothing was changed"),
        "{out}"
    );
    assert_eq!(diversions(&r.0), "");
    assert!(!r.0.join("etc/xen/scripts/block").exists());
}

#[test]
fn enable_twice_then_disable_twice_restores_the_script_byte_identical() {
    let r = scratch("cycle");
    let dir = r.0.join("etc/xen/scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let original = b"#!/bin/sh\n# Xen's block script\n\x00\xff binary-safe\n".to_vec();
    std::fs::write(dir.join("block"), &original).unwrap();

    let (rc, out) = xenblock(&r.0, T);
    assert_eq!(rc, 0, "{out}");
    assert!(out.starts_with("enabled:"), "{out}");
    assert_eq!(
        std::fs::read_link(dir.join("block")).unwrap(),
        Path::new("/usr/sbin/xenblock")
    );
    assert_eq!(std::fs::read(dir.join("block.xen-orig")).unwrap(), original);
    assert!(diversions(&r.0).contains("by xenblock"));

    let (rc, out) = xenblock(&r.0, T);
    assert_eq!(rc, 0, "{out}");
    assert!(out.starts_with("already enabled"), "{out}");

    let (rc, out) = xenblock(&r.0, &["status"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.starts_with("enabled:"), "{out}");

    let (rc, out) = xenblock(&r.0, &["disable"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.starts_with("disabled:"), "{out}");
    assert_eq!(std::fs::read(dir.join("block")).unwrap(), original);
    assert!(!dir.join("block.xen-orig").exists());
    assert_eq!(diversions(&r.0), "");

    let (rc, out) = xenblock(&r.0, &["disable"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.starts_with("not enabled"), "{out}");
}

#[test]
fn a_hand_made_link_or_a_foreign_file_is_not_touched() {
    let r = scratch("foreign");
    let dir = r.0.join("etc/xen/scripts");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/usr/sbin/xenblock", dir.join("block")).unwrap();
    let (rc, out) = xenblock(&r.0, T);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("linked by hand"), "{out}");
    let (rc, out) = xenblock(&r.0, &["disable"]);
    assert_eq!(rc, 1, "{out}");
    assert_eq!(diversions(&r.0), "");

    // Enabled, then something replaces the link: disable refuses to lose it.
    std::fs::remove_file(dir.join("block")).unwrap();
    std::fs::write(dir.join("block"), "xen").unwrap();
    assert_eq!(xenblock(&r.0, T).0, 0);
    std::fs::remove_file(dir.join("block")).unwrap();
    std::fs::write(dir.join("block"), "someone else's").unwrap();
    let (rc, out) = xenblock(&r.0, &["disable"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("Nothing was changed"), "{out}");
    assert_eq!(std::fs::read(dir.join("block.xen-orig")).unwrap(), b"xen");
}
