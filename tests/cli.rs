//! The `xenblock` program as people and scripts see it: sentences (never
//! Debug forms), `--json`, the documented exit codes, `--help`/`--version`
//! on every subcommand. Runs against an embedded xenstored with real loop
//! devices; needs root (fails, never skips, without).

mod common;

use common::Env;
use std::process::Command;

fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(common::exe("xenblock"))
        .args(args)
        .arg("--lock-dir")
        .arg(env.dir.join("lock"))
        .env("XENSTORED_PATH", &env.sock)
        .env_remove("XENBUS_PATH")
        .output()
        .expect("run xenblock");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    for text in [&out, &err] {
        for debug in [
            "Connected {",
            "Detached(",
            "LeftAlone(",
            "AlreadyPrepared",
            "Some(",
            "(Busy)",
            "os error",
            "\x1b[",
        ] {
            assert!(!text.contains(debug), "{args:?} printed {debug:?}: {text}");
        }
    }
    (o.status.code().unwrap_or(-1), out, err)
}

#[test]
fn prepare_release_print_sentences_and_json() {
    common::require_root();
    let mut env = Env::new();
    env.domain(1, "/vm/one");
    env.domain(2, "/vm/two");
    let img = env.image("disk.img", 8 << 20);
    let b1 = env.backend(1, 51712, &img.display().to_string(), "w");
    let b2 = env.backend(2, 51712, &img.display().to_string(), "w");

    let (rc, out, err) = run(&env, &["prepare", &b1]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("{b1}: connected to /dev/loop")),
        "{out}"
    );

    let (rc, out, err) = run(&env, &["prepare", &b1, "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!(r#"{{"backend":"{b1}","result":"already-prepared","ok":true}}"#)
    );

    // Refused by the sharing rule: exit 3, a sentence, JSON on stdout.
    let (rc, out, err) = run(&env, &["prepare", &b2]);
    assert_eq!(rc, 3, "{out}{err}");
    assert!(
        err.starts_with("xenblock: ") && err.contains("refusing"),
        "{err}"
    );
    let (rc, out, _) = run(&env, &["prepare", "--json", &b2]);
    assert_eq!(rc, 3);
    assert!(
        out.starts_with(r#"{"ok":false,"exit_code":3,"error":""#),
        "{out}"
    );

    let node = env.read(&format!("{b1}/node")).unwrap();
    let (rc, out, err) = run(&env, &["release", "--json", &b1]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!(r#"{{"backend":"{b1}","result":"detached","device":"{node}","ok":true}}"#)
    );
    let (rc, out, _) = run(&env, &["release", &b1]);
    assert_eq!(rc, 0);
    assert!(out.contains("nothing to undo"), "{out}");
    assert!(env.loops_of(&img).is_empty());

    let (rc, out, err) = run(
        &env,
        &["reconcile", "--json", "/local/domain/0/backend/vbd/"],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains(r#""detached":[],"kept":[]"#), "{out}");
}

#[test]
fn exit_codes_for_missing_things_and_usage() {
    common::require_root();
    let env = Env::new();
    env.domain(3, "/vm/three");
    let b = env.backend(3, 51712, "/nonexistent/xenblock-disk.img", "w");
    let (rc, _, err) = run(&env, &["prepare", &b]);
    assert_eq!(rc, 4, "{err}");
    let (rc, _, err) = run(&env, &["prepare"]);
    assert_eq!(rc, 2, "{err}");
    let (rc, _, err) = run(&env, &["prepare", "--lock-timeout", "soon", &b]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("expected a number of seconds"), "{err}");
    let (rc, _, err) = run(&env, &["prepare", "--store-timeout", "0", &b]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("greater than 0 and at most 86400"), "{err}");
    // The drop-in keeps the script's contract: every error exits 1.
    let (rc, _, err) = run(&env, &["hotplug", "add"]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("XENBUS_PATH"), "{err}");
    let (rc, _, err) = run(&env, &["hotplug", "frobnicate"]);
    assert_eq!(rc, 1, "{err}");
}

#[test]
fn xenstored_unreachable_is_exit_6_with_what_to_do() {
    let o = Command::new(common::exe("xenblock"))
        .args(["prepare", "backend/vbd/1/51712"])
        .env("XENSTORED_PATH", "/nonexistent/xenblock-test.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("/nonexistent/xenblock-test.sock"), "{err}");
}

#[test]
fn every_subcommand_has_help_and_version() {
    for sub in [
        "prepare",
        "release",
        "reconcile",
        "plan",
        "hotplug",
        "enable",
        "disable",
        "status",
        "demo",
    ] {
        for (flag, want) in [
            ("--help", "Usage: xenblock"),
            ("--version", env!("CARGO_PKG_VERSION")),
        ] {
            let o = Command::new(common::exe("xenblock"))
                .args([sub, flag])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(o.status.code(), Some(0), "{sub} {flag}");
            assert!(out.contains(want), "{sub} {flag}: {out}");
        }
    }
    let o = Command::new(common::exe("xenblock"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("Exit status:"));
}

#[test]
fn lock_timeout_bounds_the_wait_for_the_hotplug_lock() {
    common::require_root();
    let mut env = Env::new();
    env.domain(4, "/vm/four");
    let img = env.image("locked.img", 1 << 20);
    let b = env.backend(4, 51712, &img.display().to_string(), "w");
    // Another holder (as Xen's script would be) keeps the lock.
    let lock =
        xenblock::lock::HotplugLock::new(&env.dir.join("lock"), std::time::Duration::from_secs(5));
    let held = lock.acquire().unwrap();
    let t = std::time::Instant::now();
    let (rc, out, err) = run(&env, &["prepare", "--lock-timeout", "0.3", &b]);
    let took = t.elapsed();
    drop(held);
    assert_eq!(rc, 5, "{out}{err}");
    assert!(err.contains("lock"), "{err}");
    assert!(
        took >= std::time::Duration::from_millis(300) && took < std::time::Duration::from_secs(5),
        "waited {took:?} with --lock-timeout 0.3"
    );
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn plan_says_in_process_or_the_script_to_run() {
    common::require_root();
    let env = Env::new();
    env.domain(5, "/vm/five");
    let b = env.backend(5, 51712, "/dev/null", "w");
    let (rc, out, err) = run(&env, &["plan", "--json", &b, "add"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!(r#"{{"backend":"{b}","in_process":true,"ok":true}}"#)
    );
    let script = env.dir.join("block-custom");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = script.display().to_string();
    env.write(&format!("{b}/script"), &script);
    let (rc, out, err) = run(&env, &["plan", "--json", &b, "remove"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            r#""in_process":false,"argv":["{script}","remove"]"#
        )) && out.contains(&format!(r#""XENBUS_PATH":"{b}""#)),
        "{out}"
    );
    let (rc, out, _) = run(&env, &["plan", &b, "add"]);
    assert_eq!(rc, 0);
    assert!(
        out.contains("run the custom script") && out.contains(&format!("{script} add")),
        "{out}"
    );
}

/// The program skips Rust's runtime start-up (`#![no_main]`) but keeps
/// what of it changes behaviour: a closed standard descriptor is reopened
/// on /dev/null, so that neither the store connection nor the lock file
/// becomes the program's stdin, stdout or stderr (where a printed line
/// would land in them).
#[test]
fn closed_standard_descriptors_are_reopened_on_dev_null() {
    common::require_root();
    let mut env = Env::new();
    env.domain(4, "/vm/four");
    let img = env.image("disk.img", 8 << 20);
    let b = env.backend(4, 51712, &img.display().to_string(), "w");
    let lock_dir = env.dir.join("lock");
    // Hold the lock, so that the program waits with its connection open.
    let lock = xenblock::lock::HotplugLock::new(&lock_dir, std::time::Duration::from_secs(5));
    let held = lock.acquire().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"exec "$0" "$@" <&- >&- 2>&-"#)
        .arg(common::exe("xenblock"))
        .args(["prepare", "--lock-timeout", "10", "--lock-dir"])
        .arg(&lock_dir)
        .arg(&b)
        .env("XENSTORED_PATH", &env.sock)
        .spawn()
        .expect("run sh");
    let fd = |n: u32| std::fs::read_link(format!("/proc/{}/fd/{n}", child.id()));
    let t = std::time::Instant::now();
    // Its socket: the first descriptor it opens itself.
    while !fd(3).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "no connection at fd 3 (fds 0-2: {:?}): it took a closed standard descriptor, or never came",
            (0..3).map(fd).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let std_fds: Vec<_> = (0..3).map(fd).collect();
    drop(held);
    let status = child.wait().unwrap();
    for (n, l) in std_fds.iter().enumerate() {
        assert_eq!(
            l.as_ref().map(|l| l.to_string_lossy().into_owned()).ok(),
            Some("/dev/null".to_string()),
            "fd {n}"
        );
    }
    assert!(status.success(), "{status}");
    assert!(
        env.read(&format!("{b}/physical-device")).is_some(),
        "prepare with closed descriptors did not connect"
    );
    let (rc, out, err) = run(&env, &["release", &b]);
    assert_eq!(rc, 0, "{out}{err}");
}

/// The program carries GCC's unwinder instead of loading `libgcc_s.so.1`
/// (build.rs): one shared library fewer for every disk event. glibc stays
/// shared, so its security updates reach the program without a rebuild.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_program_loads_glibc_and_no_other_library() {
    let o = Command::new("readelf")
        .args(["--dynamic", "--wide"])
        .arg(common::exe("xenblock"))
        .output()
        .expect("run readelf (binutils, which the Rust toolchain's linker needs)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{text}");
    assert!(
        needed
            .iter()
            .all(|n| *n == "libc.so.6" || n.starts_with("ld-linux")),
        "libraries besides glibc's: {needed:?}"
    );
}

#[test]
fn audit_finds_an_image_xens_script_gave_read_write_to_two_guests() {
    common::require_root();
    let mut env = Env::new();
    env.domain(41, "/vm/forty-one");
    env.domain(42, "/vm/forty-two");
    let img = env.image("twice.img", 4 << 20);
    let other = env.image("alone.img", 4 << 20);

    // A clean host: one disk, handed out by xenblock.
    let alone = env.backend(41, 51728, &other.display().to_string(), "w");
    let (rc, out, err) = run(&env, &["prepare", &alone]);
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = run(&env, &["audit"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(out.trim(), "no conflict found among 1 disk handed out");
    let (rc, out, _) = run(&env, &["audit", "--json"]);
    assert_eq!(rc, 0);
    assert_eq!(
        out.trim(),
        r#"{"checked":1,"conflicts":[],"unsure":[],"skipped":[],"ok":true,"exit_code":0}"#
    );

    // What Xen's script can leave: two loop devices read-write over one
    // image, each named by a backend of another guest.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut bes = Vec::new();
    for (dom, tag) in [(41u32, "stock-a"), (42, "stock-b")] {
        let lo = xenblock::sys::loopdev::attach(&f, false, tag.as_bytes()).unwrap();
        let be = env.backend(dom, 51712, &img.display().to_string(), "w");
        let node = lo.path.display().to_string();
        env.write(&format!("{be}/physical-device"), &lo.dev.to_string());
        env.write(&format!("{be}/physical-device-path"), &node);
        env.write(&format!("{be}/node"), &node);
        env.write(&format!("{be}/hotplug-status"), "connected");
        bes.push(be);
    }
    let (rc, out, err) = run(&env, &["audit"]);
    assert_eq!(rc, 3, "{out}{err}");
    let conflicts = common::audit_conflicts(&out);
    assert_eq!(conflicts.len(), 2, "{out}");
    assert!(
        conflicts[0].contains(&bes[0]) && conflicts[0].contains(&bes[1]),
        "{out}"
    );
    assert!(
        conflicts[1].contains(&bes[1]) && conflicts[1].contains(&bes[0]),
        "{out}"
    );
    assert!(!out.contains(&alone), "the lone disk is fine: {out}");
    assert!(
        out.ends_with("2 of 3 disks handed out in conflict, 0 undecided\n"),
        "{out}"
    );
    let (rc, out, _) = run(&env, &["audit", "--json"]);
    assert_eq!(rc, 3);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["checked"], 3);
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 2);
    assert_eq!(v["conflicts"][0]["backend"], bes[0].as_str());
    assert_eq!(v["conflicts"][0]["mode"], "read-write");
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 3);
    // Read-only: nothing was written to the backends.
    for be in &bes {
        assert_eq!(env.read(&format!("{be}/hotplug-error")), None);
        assert_eq!(
            env.read(&format!("{be}/hotplug-status")).as_deref(),
            Some("connected")
        );
    }
}

#[test]
fn audit_finds_a_guests_disk_that_dom0_has_mounted() {
    common::require_root();
    let mut env = Env::new();
    env.domain(43, "/vm/forty-three");
    let dev = env.block_device("mounted-later.img");
    let be = env.backend(43, 51712, &dev.display().to_string(), "w");
    let (rc, out, err) = run(&env, &["prepare", &be]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(run(&env, &["audit"]).0, 0);
    // dom0 then mounts the guest's disk read-write.
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&dev)
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.success());
    let mnt = env.dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    nix::mount::mount(
        Some(&dev),
        &mnt,
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let (rc, out, err) = run(&env, &["audit"]);
    let _ = nix::mount::umount(&mnt);
    assert_eq!(rc, 3, "{out}{err}");
    assert!(
        out.starts_with(&format!("conflict: {be} (domain 43, read-write): "))
            && out.contains("mounted")
            && out.contains(&mnt.display().to_string()),
        "{out}"
    );
}

/// Detaches a loop device the test made outside [`Env`]'s images.
struct Detach(std::path::PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = xenblock::sys::loopdev::detach(&self.0);
    }
}

#[test]
fn audit_finds_a_guests_disk_held_exclusively_in_dom0() {
    common::require_root();
    let mut env = Env::new();
    env.domain(44, "/vm/forty-four");
    let dev = env.block_device("held.img");
    let be = env.backend(44, 51712, &dev.display().to_string(), "w");
    let (rc, out, err) = run(&env, &["prepare", &be]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(run(&env, &["audit"]).0, 0);
    // Something in dom0 then claims the device exclusively, as a mount in
    // another mount namespace or an external journal does: only the
    // kernel knows.
    use std::os::unix::fs::OpenOptionsExt;
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&dev)
        .unwrap();
    let (rc, out, err) = run(&env, &["audit"]);
    drop(held);
    assert_eq!(rc, 3, "{out}{err}");
    assert!(
        out.starts_with(&format!("conflict: {be} (domain 44, read-write): "))
            && out.contains("exclusively"),
        "{out}"
    );
    // Released: clean again.
    assert_eq!(run(&env, &["audit"]).0, 0);
}

#[test]
fn audit_sees_a_loop_device_over_a_block_device_as_that_device() {
    common::require_root();
    let mut env = Env::new();
    env.domain(45, "/vm/forty-five");
    env.domain(46, "/vm/forty-six");
    let dev = env.block_device("under.img");
    // Xen's script for guest 45: `losetup` over the block device node.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .unwrap();
    let lo = xenblock::sys::loopdev::attach(&f, false, b"stock-over-dev").unwrap();
    let _outer = Detach(lo.path.clone());
    drop(f);
    let node = lo.path.display().to_string();
    let a = env.backend(45, 51712, &dev.display().to_string(), "w");
    env.write(&format!("{a}/physical-device"), &lo.dev.to_string());
    env.write(&format!("{a}/physical-device-path"), &node);
    env.write(&format!("{a}/node"), &node);
    env.write(&format!("{a}/hotplug-status"), "connected");
    let (rc, out, err) = run(&env, &["audit"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(out.trim(), "no conflict found among 1 disk handed out");
    // Guest 46 is given the block device itself read-write.
    let b = env.backend(46, 51712, &dev.display().to_string(), "w");
    env.write(&format!("{b}/physical-device"), &xenblock_dev(&dev));
    env.write(
        &format!("{b}/physical-device-path"),
        &dev.display().to_string(),
    );
    env.write(&format!("{b}/hotplug-status"), "connected");
    let (rc, out, err) = run(&env, &["audit"]);
    assert_eq!(rc, 3, "{out}{err}");
    let conflicts = common::audit_conflicts(&out);
    assert_eq!(conflicts.len(), 2, "{out}");
    assert!(
        conflicts[0].contains(&a) && conflicts[0].contains(&b),
        "{out}"
    );
}

/// The `physical-device` text (`MAJOR:MINOR` in hex) of block node `p`.
fn xenblock_dev(p: &std::path::Path) -> String {
    let st = xenblock::sys::stat::stat(p).unwrap();
    xenblock::sharing::DevNum::from_dev_t(st.rdev).to_string()
}

#[test]
fn audit_exits_only_with_the_codes_its_help_lists() {
    common::require_root();
    let o = Command::new(common::exe("xenblock"))
        .args(["audit", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for code in ["0", "1", "2", "3", "6", "7"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{code}  "))),
            "exit {code} not in audit --help: {help}"
        );
    }
    let o = Command::new(common::exe("xenblock"))
        .arg("audit")
        .env("XENSTORED_PATH", "/nonexistent/xenblock-test.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
}
