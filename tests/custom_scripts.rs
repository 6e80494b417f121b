//! Custom hotplug scripts run through xenblock with the Linux contract:
//! Xen's own `block-dummy`, Xen's own `block` under another name, the
//! `plan` API, and `xenblock` installed as a drop-in `/etc/xen/scripts/block`.
//! Needs root. Tests here change the process environment (the scripts
//! inherit it), so they run one at a time.

mod common;
mod upstream;
use common::{require_root, Env};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::process::Command;
use xenblock::store::Store;
use xenblock::{Config, Context, ErrorKind, Plan, Prepared, Released};

static SERIAL: Mutex<()> = Mutex::new(());

/// Debian's scripts copied next to the test (lock in the test's lock dir),
/// and the environment the scripts inherit pointed at the test's xenstored.
fn scripts(env: &Env) -> PathBuf {
    let installed = upstream::Scripts::install(&env.dir, &env.sock, &env.dir.join("lock"));
    let root = upstream::debs_root();
    let path = std::env::var("PATH").unwrap_or_default();
    let bin = root.join("usr/bin");
    if !path.split(':').any(|p| Path::new(p) == bin) {
        std::env::set_var("PATH", format!("{}:{path}", bin.display()));
    }
    std::env::set_var("LD_LIBRARY_PATH", upstream::lib_dir(root));
    std::env::set_var("XENSTORED_PATH", &env.sock);
    installed.dir
}

fn ctx(env: &Env, script_dir: &Path) -> Context {
    Context::new(Config {
        script_dir: script_dir.to_path_buf(),
        ..env.config()
    })
    .unwrap()
}

#[test]
fn xens_block_dummy_runs_through_prepare_and_release() {
    let _s = SERIAL.lock();
    require_root();
    let mut env = Env::new();
    let dir = scripts(&env);
    let img = env.image("dummy.img", 1 << 20);
    env.domain(3, "/vm/three");
    let be = env.backend(3, 51712, &format!("dummy:{}", img.display()), "w");
    env.write(
        &format!("{be}/script"),
        &dir.join("block-dummy").display().to_string(),
    );
    let ctx = ctx(&env, &dir);
    assert!(matches!(ctx.plan(&be, true).unwrap(), Plan::Script(_)));
    assert_eq!(ctx.prepare(&be).unwrap(), Prepared::Script);
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    let node = env
        .read(&format!("{be}/node"))
        .expect("block-dummy writes node");
    assert_eq!(env.loops_of(&img).len(), 1);
    assert_eq!(env.loops_of(&img)[0].path.display().to_string(), node);
    assert_eq!(ctx.release(&be).unwrap(), Released::Script);
    assert!(
        env.loops_of(&img).is_empty(),
        "remove detached the loop device"
    );
}

#[test]
fn xens_own_block_script_under_another_name_proves_the_linux_contract() {
    let _s = SERIAL.lock();
    require_root();
    let mut env = Env::new();
    let dir = scripts(&env);
    std::fs::copy(dir.join("block"), dir.join("block-upstream")).unwrap();
    let img = env.image("upstream.img", 1 << 20);
    env.domain(4, "/vm/four");
    let be = env.backend(4, 51712, &img.display().to_string(), "r");
    env.write(&format!("{be}/script"), "block-upstream"); // relative: under script_dir
    let ctx = ctx(&env, &dir);
    match ctx.plan(&be, true).unwrap() {
        Plan::Script(inv) => {
            assert_eq!(inv.argv.len(), 2);
            assert_eq!(inv.argv[1], "add");
            let envs: Vec<String> = inv
                .env
                .iter()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect();
            assert!(envs.contains(&format!("XENBUS_PATH={be}")), "{envs:?}");
            assert!(envs.contains(&"XENBUS_TYPE=vbd".to_string()));
            assert!(envs.contains(&"XENBUS_BASE_PATH=backend".to_string()));
        }
        p => panic!("expected a script plan, got {p:?}"),
    }
    ctx.prepare(&be).unwrap();
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    let loops = env.loops_of(&img);
    assert_eq!(loops.len(), 1);
    assert!(loops[0].read_only, "upstream attaches mode r read-only");
    assert_eq!(
        env.read(&format!("{be}/node")),
        Some(loops[0].path.display().to_string())
    );
    ctx.release(&be).unwrap();
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn failing_script_reports_its_hotplug_error() {
    let _s = SERIAL.lock();
    require_root();
    let env = Env::new();
    let dir = scripts(&env);
    let failing = dir.join("block-fails");
    std::fs::write(
        &failing,
        "#!/bin/sh\nxenstore-write \"$XENBUS_PATH/hotplug-error\" 'iSCSI target unreachable' \"$XENBUS_PATH/hotplug-status\" error\necho noise >&2\nexit 1\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&failing)
        .status()
        .unwrap();
    env.domain(5, "/vm/five");
    let be = env.backend(5, 51712, "iqn.2001-05.com.example:disk", "w");
    env.write(&format!("{be}/script"), &failing.display().to_string());
    let e = ctx(&env, &dir).prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Script);
    assert!(e.to_string().contains("iSCSI target unreachable"), "{e}");

    // A script that does not exist is refused before anything runs.
    let be2 = env.backend(5, 51728, "x", "w");
    env.write(&format!("{be2}/script"), "block-does-not-exist");
    let e = ctx(&env, &dir).prepare(&be2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        env.read(&format!("{be2}/hotplug-status")).as_deref(),
        Some("error")
    );
}

/// Run one hotplug invocation the way libxl does.
fn hotplug(script: &Path, action: &str, be: &str) -> std::process::ExitStatus {
    Command::new(script)
        .arg(action)
        .env("script", script)
        .env("XENBUS_TYPE", "vbd")
        .env("XENBUS_PATH", be)
        .env("XENBUS_BASE_PATH", "backend")
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap()
}

fn nodes(env: &Env, be: &str) -> Vec<(String, Option<String>)> {
    [
        "hotplug-status",
        "physical-device",
        "physical-device-path",
        "node",
    ]
    .iter()
    .map(|k| (k.to_string(), env.read(&format!("{be}/{k}"))))
    .collect()
}

#[test]
fn drop_in_hotplug_binary_gives_upstreams_nodes() {
    let _s = SERIAL.lock();
    require_root();
    let mut env = Env::new();
    let upstream = scripts(&env);
    // A second scripts directory where `block` is xenblock itself.
    let ours = env.dir.join("ours");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&upstream)
        .arg(&ours)
        .status()
        .unwrap()
        .success());
    std::fs::remove_file(ours.join("block")).unwrap();
    std::os::unix::fs::symlink(common::exe("xenblock"), ours.join("block")).unwrap();
    let dev = env.block_device("dropin-phy.img");
    let img = env.image("dropin.img", 1 << 20);
    env.domain(6, "/vm/six");
    env.domain(7, "/vm/seven");
    for (which, script) in [
        ("upstream", upstream.join("block")),
        ("xenblock", ours.join("block")),
    ] {
        let phy = env.backend(6, 51712, &dev.display().to_string(), "w");
        let file = env.backend(6, 51728, &img.display().to_string(), "r");
        assert!(hotplug(&script, "add", &phy).success(), "{which} phy add");
        assert!(hotplug(&script, "add", &file).success(), "{which} file add");
        let got = (nodes(&env, &phy), nodes(&env, &file));
        assert_eq!(got.0[0].1.as_deref(), Some("connected"), "{which}");
        assert_eq!(got.1[0].1.as_deref(), Some("connected"), "{which}");
        let loops = env.loops_of(&img);
        assert_eq!(loops.len(), 1, "{which}");
        assert!(loops[0].read_only, "{which}");
        // A second guest wanting the phy device read-write: both refuse.
        let other = env.backend(7, 51712, &dev.display().to_string(), "w");
        assert!(
            !hotplug(&script, "add", &other).success(),
            "{which} must refuse"
        );
        assert_eq!(
            env.read(&format!("{other}/hotplug-status")).as_deref(),
            Some("busy"),
            "{which}"
        );
        assert!(
            hotplug(&script, "remove", &file).success(),
            "{which} file remove"
        );
        assert!(
            hotplug(&script, "remove", &phy).success(),
            "{which} phy remove"
        );
        assert!(env.loops_of(&img).is_empty(), "{which} remove detaches");
        // Record then wipe, so the next run starts from identical contents.
        if which == "upstream" {
            std::env::set_var("XENBLOCK_TEST_UPSTREAM_NODES", format!("{got:?}"));
        } else {
            let up = std::env::var("XENBLOCK_TEST_UPSTREAM_NODES").unwrap();
            let norm = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "#");
            assert_eq!(
                norm(&format!("{got:?}")),
                norm(&up),
                "xenblock's nodes match upstream's"
            );
        }
        for be in [&phy, &file, &other] {
            env.store.remove(0, be).unwrap();
        }
    }
}

#[test]
fn a_sites_own_script_called_block_is_run() {
    let _s = SERIAL.lock();
    require_root();
    let mut env = Env::new();
    let img = env.image("own-block.img", 1 << 20);
    // A site's hook that happens to be called `block`, outside the
    // configured scripts directory: it is not Xen's, so it must run.
    let hooks = env.dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let own = hooks.join("block");
    let calls = env.dir.join("calls");
    std::fs::write(
        &own,
        format!(
            "#!/bin/sh\necho \"$1 $XENBUS_PATH\" >> {}\nexit 0\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&own, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.domain(8, "/vm/eight");
    let be = env.backend(8, 51712, &img.display().to_string(), "w");
    env.write(&format!("{be}/script"), &own.display().to_string());
    let ctx = ctx(&env, Path::new("/etc/xen/scripts"));
    assert!(matches!(ctx.plan(&be, true).unwrap(), Plan::Script(_)));
    assert_eq!(ctx.prepare(&be).unwrap(), Prepared::Script);
    assert_eq!(ctx.release(&be).unwrap(), Released::Script);
    let got = std::fs::read_to_string(&calls).unwrap_or_default();
    let abs = format!("/local/domain/0/{be}");
    let want_be = |l: &str| l.ends_with(&be) || l.ends_with(&abs);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 2, "{got}");
    assert!(lines[0].starts_with("add ") && want_be(lines[0]), "{got}");
    assert!(
        lines[1].starts_with("remove ") && want_be(lines[1]),
        "{got}"
    );
    assert!(env.loops_of(&img).is_empty(), "nothing attached in-process");
    // Xen's own, in the configured directory, is still done in-process.
    env.write(&format!("{be}/script"), "/etc/xen/scripts/block");
    assert_eq!(ctx.plan(&be, true).unwrap(), Plan::InProcess);
}

#[test]
fn the_drop_in_run_from_its_own_path_is_done_in_process() {
    let _s = SERIAL.lock();
    require_root();
    let mut env = Env::new();
    let img = env.image("dropin-elsewhere.img", 1 << 20);
    // xenblock installed as `block` outside /etc/xen/scripts, and named by
    // that path in the backend: it is the drop-in itself, not a site's
    // script (which it would run, again and again).
    let dir = env.dir.join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    let me = dir.join("block");
    std::os::unix::fs::symlink(common::exe("xenblock"), &me).unwrap();
    env.domain(9, "/vm/nine");
    let be = env.backend(9, 51712, &img.display().to_string(), "r");
    env.write(&format!("{be}/script"), &me.display().to_string());
    std::env::set_var("XENSTORED_PATH", &env.sock);
    std::env::set_var("XENBLOCK_LOCK_DIR", env.dir.join("lock"));
    let added = hotplug(&me, "add", &be);
    let loops = env.loops_of(&img);
    let removed = hotplug(&me, "remove", &be);
    std::env::remove_var("XENBLOCK_LOCK_DIR");
    assert!(added.success());
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    assert_eq!(loops.len(), 1, "attached in-process");
    assert!(removed.success());
    assert!(env.loops_of(&img).is_empty());
}
