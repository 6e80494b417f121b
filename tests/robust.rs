//! What a host embedding xenblock relies on (issue 12): loop devices are
//! released and reconciled by their own tag, the hotplug-lock wait is bounded
//! and names its holder (or is not a wait at all), and bad paths write
//! nothing. Needs root (loop devices).

mod common;
use common::{require_root, Env};
use std::path::Path;
use std::time::{Duration, Instant};
use xenblock::store::Store;
use xenblock::sys::loopdev;
use xenblock::{Config, Context, ErrorKind, Released};

/// Detaches a loop device at the end of a test, whatever happened.
struct LoopGuard(std::path::PathBuf);
impl Drop for LoopGuard {
    fn drop(&mut self) {
        let _ = loopdev::detach(&self.0);
    }
}

#[test]
fn release_detaches_its_own_device_after_the_image_was_replaced() {
    require_root();
    let mut env = Env::new();
    let img = env.image("replaced.img", 1 << 20);
    env.domain(5, "/vm/five");
    let be = env.backend(5, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&be).unwrap();
    let node = env.read(&format!("{be}/node")).expect("node written");
    let _guard = LoopGuard(node.clone().into());
    // The image is deleted and another file created at the same path.
    std::fs::remove_file(&img).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    assert_eq!(ctx.release(&be).unwrap(), Released::Detached(node.clone()));
    assert!(
        loopdev::status(Path::new(&node)).unwrap().is_none(),
        "{node} is still attached"
    );
}

#[test]
fn a_backend_path_too_long_for_the_tag_is_refused_before_attaching() {
    require_root();
    let mut env = Env::new();
    let img = env.image("long.img", 1 << 20);
    env.domain(6, "/vm/six");
    let root = "/local/domain/0/backend/vbd-with-a-rather-long-root-name";
    let be = format!("{root}/6/51712");
    for (k, v) in [
        ("params", img.display().to_string()),
        ("mode", "w".into()),
        ("frontend-id", "6".into()),
        ("state", "2".into()),
        ("type", "phy".into()),
    ] {
        env.write(&format!("{be}/{k}"), &v);
    }
    let ctx = env.ctx();
    let e = ctx.prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("at most"), "{e}");
    assert!(env.loops_of(&img).is_empty(), "nothing may be attached");
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("error")
    );
}

#[test]
fn reconcile_leaves_a_device_whose_tag_may_have_been_cut() {
    require_root();
    let mut env = Env::new();
    let img = env.image("cut.img", 1 << 20);
    // A tag as an older xenblock wrote it for a long backend path: the kernel
    // kept 63 bytes, which name a backend that does not exist.
    let tag = "xenblock:/local/domain/0/backend/vbd-with-a-rather-long-root-name/6/51712";
    assert!(tag.len() > 63);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let lo = loopdev::attach(&f, false, tag.as_bytes()).unwrap();
    let _guard = LoopGuard(lo.path.clone());
    assert_eq!(lo.file_name.len(), 63);
    let ctx = env.ctx();
    // The prefix keeps the sweep off the other tests' devices.
    let r = ctx
        .reconcile(Some("/local/domain/0/backend/vbd-with-a-rather"))
        .unwrap();
    assert!(
        !r.detached.contains(&lo.path.display().to_string()),
        "reconcile detached {} on a cut tag",
        lo.path.display()
    );
    assert!(loopdev::status(&lo.path).unwrap().is_some());
}

/// Another process holding the hotplug lock, as a script would.
struct Holder(std::process::Child);
impl Holder {
    fn start(lock_dir: &Path) -> Holder {
        std::fs::create_dir_all(lock_dir).unwrap();
        let lock = lock_dir.join("block");
        // One process that takes the flock and keeps it (no forked helper
        // that would inherit the descriptor and outlive the kill).
        let child = std::process::Command::new("sh")
            .args(["-c", "exec 9>>\"$0\" && flock 9 && exec sleep 60"])
            .arg(&lock)
            .spawn()
            .unwrap();
        let h = Holder(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Wait until the flock is granted (it shows in /proc/locks).
        loop {
            let locks = std::fs::read_to_string("/proc/locks").unwrap();
            if let Ok(st) = std::fs::metadata(&lock) {
                use std::os::unix::fs::MetadataExt;
                if xenblock::lock::flock_holder(&locks, st.dev(), st.ino()).is_some() {
                    return h;
                }
            }
            assert!(Instant::now() < deadline, "flock(1) did not take the lock");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_lock_wait_is_bounded_and_names_the_holder() {
    require_root();
    let env = Env::new();
    assert!(Config::default().lock_timeout <= Duration::from_secs(10));
    env.domain(7, "/vm/seven");
    let be = env.backend(7, 51712, "/dev/null-not-used", "w");
    let disk = {
        // A block device target so that prepare reaches the lock.
        let mut e = env;
        let d = e.block_device("lockdisk.img");
        (e, d)
    };
    let (env, disk) = disk;
    let _disk_guard = LoopGuard(disk.clone());
    env.write(&format!("{be}/params"), &disk.display().to_string());
    let holder = Holder::start(&env.dir.join("lock"));
    let ctx = Context::new(Config {
        lock_timeout: Duration::from_millis(300),
        ..env.config()
    })
    .unwrap();
    let t = Instant::now();
    let e = ctx.prepare(&be).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let pid = holder.0.id().to_string();
    assert!(
        e.to_string().contains(&format!("process {pid} (sleep 60)")),
        "holder {pid} not named: {e}"
    );
    assert!(e.to_string().contains("sleep 60"), "{e}");

    // Not waiting at all: WouldBlock at once, nothing written.
    for node in ["hotplug-status", "hotplug-error"] {
        env.store
            .remove(xenblock::store::NO_TX, &format!("{be}/{node}"))
            .unwrap();
    }
    let ctx = Context::new(Config {
        lock_timeout: Duration::from_secs(10),
        ..env.config()
    })
    .unwrap();
    let t = Instant::now();
    let e = ctx.try_prepare(&be).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    assert!(e.to_string().contains(&pid), "{e}");
    assert_eq!(env.read(&format!("{be}/hotplug-status")), None);
    assert_eq!(env.read(&format!("{be}/hotplug-error")), None);
    drop(holder);
    // Once free, the same call goes through.
    ctx.try_prepare(&be).unwrap();
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
}

#[test]
fn paths_that_are_not_a_backend_write_nothing() {
    let env = Env::new();
    env.domain(4, "/vm/four");
    let be = env.backend(4, 51712, "/dev/null", "w");
    let ctx = env.ctx();
    for bad in [
        "backend/vbd/4".to_string(),
        "backend".to_string(),
        "backend/vbd".to_string(),
        format!("{be}/params"),
        "backend/vbd/4/51713".to_string(),
    ] {
        let e = ctx.prepare(&bad).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::NotFound),
            "{bad}: {e}"
        );
        for node in ["hotplug-status", "hotplug-error"] {
            assert_eq!(env.read(&format!("{bad}/{node}")), None, "{bad}/{node}");
        }
    }
    assert_eq!(
        ctx.plan("backend/vbd/4/51713", true).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        ctx.plan("backend/vbd/4", true).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn a_relative_file_target_says_files_need_an_absolute_path() {
    let env = Env::new();
    env.domain(8, "/vm/eight");
    let be = env.backend(8, 51712, "a.img", "w");
    let e = env.ctx().prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("/dev/a.img") && m.contains("absolute path"),
        "{m}"
    );
}
