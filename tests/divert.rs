//! `xenblock enable` / `disable` / `status` against a scratch dpkg root
//! (XENBLOCK_DIVERT_ROOT, passed to dpkg-divert as --root): never the
//! host's /etc/xen. Needs root (enable/disable refuse otherwise) and Debian's
//! dpkg-divert; fails, never skips, without them.

mod common;

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
    let o: Output = Command::new(common::exe("xenblock"))
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
    // Xen's script is a conffile: a plain reinstall would not restore it.
    assert!(out.contains("--force-confmiss xen-utils-common"), "{out}");
    let (rc, out) = xenblock(&r.0, &["disable"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("--force-confmiss xen-utils-common"), "{out}");
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

/// A dpkg-divert that fails (as with dpkg's database unwritable) to add or
/// remove a diversion while `fail` exists, and is the real one otherwise.
struct FakeDivert {
    bin: PathBuf,
    fail: PathBuf,
}

impl FakeDivert {
    fn new(root: &Path) -> FakeDivert {
        let bin = root.join("fake-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fail = root.join("dpkg-fails");
        let real = which("dpkg-divert");
        let script = format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --add|--remove)\n  \
             if [ -e '{}' ]; then echo 'dpkg-divert: error: unable to write the database \
             (simulated)' >&2; exit 2; fi;; esac; done\nexec '{}' \"$@\"\n",
            fail.display(),
            real.display()
        );
        let p = bin.join("dpkg-divert");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        FakeDivert { bin, fail }
    }
    fn failing(&self, on: bool) {
        if on {
            std::fs::write(&self.fail, "").unwrap();
        } else {
            let _ = std::fs::remove_file(&self.fail);
        }
    }
    fn run(&self, root: &Path, args: &[&str]) -> (i32, String) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let o = Command::new(common::exe("xenblock"))
            .args(args)
            .env("XENBLOCK_DIVERT_ROOT", root)
            .env("PATH", path)
            .output()
            .expect("run xenblock");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code().unwrap_or(-1), text)
    }
}

fn which(name: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} (Debian's dpkg) must be installed"))
}

fn with_xens_script(name: &str) -> (Root, PathBuf, Vec<u8>) {
    let r = scratch(name);
    let dir = r.0.join("etc/xen/scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let original = b"#!/bin/sh\n# Xen's block script\n".to_vec();
    std::fs::write(dir.join("block"), &original).unwrap();
    (r, dir, original)
}

#[test]
fn a_failed_enable_changes_nothing_and_is_retried() {
    let (r, dir, original) = with_xens_script("enable-fails");
    let fake = FakeDivert::new(&r.0);
    fake.failing(true);
    let (rc, out) = fake.run(&r.0, T);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("simulated") && out.contains("enable"), "{out}");
    assert_eq!(std::fs::read(dir.join("block")).unwrap(), original);
    assert!(std::fs::read_link(dir.join("block")).is_err());
    assert!(!dir.join("block.xen-orig").exists());
    assert_eq!(diversions(&r.0), "");
    fake.failing(false);
    let (rc, out) = fake.run(&r.0, T);
    assert_eq!(rc, 0, "{out}");
    assert!(is_our_link(&dir));
    assert_eq!(std::fs::read(dir.join("block.xen-orig")).unwrap(), original);
}

fn is_our_link(dir: &Path) -> bool {
    std::fs::read_link(dir.join("block")).ok().as_deref() == Some(Path::new("/usr/sbin/xenblock"))
}

#[test]
fn a_failed_disable_keeps_xens_script_and_both_commands_recover() {
    let (r, dir, original) = with_xens_script("disable-fails");
    let fake = FakeDivert::new(&r.0);
    assert_eq!(fake.run(&r.0, T).0, 0);
    fake.failing(true);
    let (rc, out) = fake.run(&r.0, &["disable"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("disable` again"), "{out}");
    // Xen's script is in place (not absent, not the link).
    assert_eq!(std::fs::read(dir.join("block")).unwrap(), original);
    assert!(std::fs::read_link(dir.join("block")).is_err());
    assert!(diversions(&r.0).contains("by xenblock"));
    // `enable` picks it up from there...
    let (rc, out) = fake.run(&r.0, T);
    assert_eq!(rc, 0, "{out}");
    assert!(is_our_link(&dir));
    // ...and so does `disable`, once dpkg-divert works again.
    assert_eq!(fake.run(&r.0, &["disable"]).0, 1);
    fake.failing(false);
    let (rc, out) = fake.run(&r.0, &["disable"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.starts_with("disabled:"), "{out}");
    assert_eq!(std::fs::read(dir.join("block")).unwrap(), original);
    assert!(!dir.join("block.xen-orig").exists());
    assert_eq!(diversions(&r.0), "");
}

#[test]
fn the_script_is_never_missing_while_enable_and_disable_run() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (r, dir, _) = with_xens_script("never-missing");
    let block = dir.join("block");
    let stop = AtomicBool::new(false);
    let missing = AtomicUsize::new(0);
    let looks = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                // What libxl's exec needs: something at the path.
                if block.symlink_metadata().is_err() {
                    missing.fetch_add(1, Ordering::Relaxed);
                }
                looks.fetch_add(1, Ordering::Relaxed);
            }
        });
        for _ in 0..5 {
            let (rc, out) = xenblock(&r.0, T);
            assert_eq!(rc, 0, "{out}");
            let (rc, out) = xenblock(&r.0, &["disable"]);
            assert_eq!(rc, 0, "{out}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(looks.load(Ordering::Relaxed) > 1000);
    assert_eq!(
        missing.load(Ordering::Relaxed),
        0,
        "{} was absent during a switch",
        block.display()
    );
}

/// `undo_enable` of a maintainer script in debian/, run against the scratch
/// root (its paths moved there, dpkg-divert given --root).
fn maintainer_undo(script: &str, root: &Path, fake: &FakeDivert) -> (i32, String) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("debian")
            .join(script),
    )
    .unwrap();
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("same_file()"))
        .take_while(|l| !l.starts_with("case "))
        .collect::<Vec<_>>()
        .join("\n");
    // The scripts' paths are moved under `root`; dpkg-divert gets them
    // back relative to it.
    let shim = root.join("shim-bin");
    std::fs::create_dir_all(&shim).unwrap();
    let p = shim.join("dpkg-divert");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nR='{1}'\nfor a do\n  shift\n  case \"$a\" in \"$R\"/*) a=\"${{a#\"$R\"}}\";; esac\n  \
             set -- \"$@\" \"$a\"\ndone\nexec '{0}' --root \"$R\" \"$@\"\n",
            fake.bin.join("dpkg-divert").display(),
            root.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = root.join("etc/xen/scripts");
    let prog = format!(
        "set -e\nSCRIPT='{0}/block'\nDIVERTED='{0}/block.xen-orig'\n{body}\nundo_enable\n",
        dir.display()
    );
    let o = Command::new("sh")
        .arg("-c")
        .arg(prog)
        .env(
            "PATH",
            format!("{}:{}", shim.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

#[test]
fn the_maintainer_scripts_undo_enable_keeping_a_script_in_place() {
    for script in ["xenblock.prerm", "xenblock.postrm"] {
        let (r, dir, original) = with_xens_script(&format!("maint-{script}"));
        let fake = FakeDivert::new(&r.0);
        assert_eq!(fake.run(&r.0, T).0, 0);
        // dpkg's database unwritable: the script fails, Xen's is in place.
        fake.failing(true);
        let (rc, out) = maintainer_undo(script, &r.0, &fake);
        assert_ne!(rc, 0, "{script}: {out}");
        assert_eq!(
            std::fs::read(dir.join("block")).unwrap(),
            original,
            "{script}"
        );
        assert!(diversions(&r.0).contains("by xenblock"), "{script}");
        // Run again once it works: done.
        fake.failing(false);
        let (rc, out) = maintainer_undo(script, &r.0, &fake);
        assert_eq!(rc, 0, "{script}: {out}");
        assert_eq!(
            std::fs::read(dir.join("block")).unwrap(),
            original,
            "{script}"
        );
        assert!(std::fs::read_link(dir.join("block")).is_err(), "{script}");
        assert!(!dir.join("block.xen-orig").exists(), "{script}");
        assert_eq!(diversions(&r.0), "", "{script}");
    }
}

#[test]
fn a_target_not_named_xenblock_is_refused_and_changes_nothing() {
    let (r, dir, original) = with_xens_script("othername");
    std::fs::create_dir_all(r.0.join("usr/local/sbin")).unwrap();
    std::fs::write(r.0.join("usr/local/sbin/xenblock-0.3"), "stand-in").unwrap();
    let (rc, out) = xenblock(
        &r.0,
        &["enable", "--target", "/usr/local/sbin/xenblock-0.3"],
    );
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("must be named xenblock") && out.contains("Nothing was changed"),
        "{out}"
    );
    assert_eq!(std::fs::read(dir.join("block")).unwrap(), original);
    assert!(!dir.join("block.xen-orig").exists());
    assert_eq!(diversions(&r.0), "");
    // A link named xenblock to that program is accepted, and undone.
    std::os::unix::fs::symlink("xenblock-0.3", r.0.join("usr/local/sbin/xenblock")).unwrap();
    let (rc, out) = xenblock(&r.0, &["enable", "--target", "/usr/local/sbin/xenblock"]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = xenblock(&r.0, &["status"]);
    assert!(rc == 0 && out.starts_with("enabled:"), "{out}");
    assert!(
        out.contains("in this shell's environment; hotplugs use the toolstack's"),
        "{out}"
    );
    let (rc, out) = xenblock(&r.0, &["disable"]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(std::fs::read(dir.join("block")).unwrap(), original);
}

#[test]
fn disable_without_xens_script_says_it_is_absent() {
    let r = scratch("absent");
    let (rc, out) = xenblock(&r.0, &["disable"]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.starts_with("not enabled") && out.contains("does not exist"),
        "{out}"
    );
    assert!(!out.contains("Xen's own script"), "{out}");
}
