//! Crash recovery and privilege hygiene: a toolstack killed with SIGKILL at
//! every store operation inside `prepare`, then `reconcile`; descriptors not
//! inherited by scripts; safe lock permissions. Needs root. Tests in this
//! file touch only loop devices tagged for their own domain ids.

mod common;
use common::{require_root, Env};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xenblock::store::client::XsClient;
use xenblock::store::{Store, TxId};
use xenblock::{Config, Context};

/// A store that stops the process dead (well: parks it, for the parent to
/// SIGKILL) at its Nth operation.
struct PauseAt {
    inner: XsClient,
    n: usize,
    seen: AtomicUsize,
}

impl PauseAt {
    fn tick(&self) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            println!("PAUSED {}", self.n);
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    }
}

impl Store for PauseAt {
    fn read(&self, tx: TxId, p: &str) -> xenblock::Result<Option<Vec<u8>>> {
        self.tick();
        self.inner.read(tx, p)
    }
    fn write(&self, tx: TxId, p: &str, v: &[u8]) -> xenblock::Result<()> {
        self.tick();
        self.inner.write(tx, p, v)
    }
    fn remove(&self, tx: TxId, p: &str) -> xenblock::Result<()> {
        self.tick();
        self.inner.remove(tx, p)
    }
    fn directory(&self, tx: TxId, p: &str) -> xenblock::Result<Option<Vec<String>>> {
        self.tick();
        self.inner.directory(tx, p)
    }
    fn transaction_start(&self) -> xenblock::Result<TxId> {
        self.tick();
        self.inner.transaction_start()
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> xenblock::Result<bool> {
        self.tick();
        self.inner.transaction_end(tx, commit)
    }
    fn read_many(&self, tx: TxId, p: &[String]) -> xenblock::Result<Vec<Option<Vec<u8>>>> {
        self.tick();
        self.inner.read_many(tx, p)
    }
    fn directory_many(&self, tx: TxId, p: &[String]) -> xenblock::Result<Vec<Option<Vec<String>>>> {
        self.tick();
        self.inner.directory_many(tx, p)
    }
}

/// Child role: prepare one backend, parking at store operation N.
fn child(spec: &str) {
    let v: Vec<&str> = spec.split('|').collect();
    let store = PauseAt {
        inner: XsClient::connect(Path::new(v[0]), Duration::from_secs(10)).unwrap(),
        n: v[2].parse().unwrap(),
        seen: AtomicUsize::new(0),
    };
    let ctx = Context::new(Config {
        store: Some(Arc::new(store)),
        lock_dir: PathBuf::from(v[1]),
        ..Config::default()
    })
    .unwrap();
    let r = ctx.prepare(v[3]);
    println!("DONE {r:?}");
}

#[test]
fn sigkill_anywhere_in_prepare_then_reconcile_leaks_nothing() {
    if let Ok(spec) = std::env::var("XENBLOCK_CRASH_CHILD") {
        return child(&spec);
    }
    require_root();
    kill_anywhere(
        "sigkill_anywhere_in_prepare_then_reconcile_leaks_nothing",
        Recover::Reconcile,
        900,
    );
}

/// The toolstack's remove after the crash (libxl's `xl destroy`, which
/// runs the plugin's remove): it alone, with no `reconcile`, must leave no
/// device of the backend, also one attached and never recorded in `node`.
#[test]
fn sigkill_anywhere_in_prepare_then_release_leaks_nothing() {
    if let Ok(spec) = std::env::var("XENBLOCK_CRASH_CHILD") {
        return child(&spec);
    }
    require_root();
    kill_anywhere(
        "sigkill_anywhere_in_prepare_then_release_leaks_nothing",
        Recover::Release,
        2900,
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Recover {
    Reconcile,
    Release,
}

/// Prepare one backend in a child killed at its Nth store operation, for
/// every N until prepare completes; after each kill, recover as asked and
/// check what is left. Domains `base + 1 ..`.
fn kill_anywhere(test: &str, recover: Recover, base: u32) {
    let mut env = Env::new();
    let img = env.image("crash.img", 1 << 20);
    let ctx = env.ctx();
    let mut points = 0;
    let mut finished = false;
    let mut unrecorded = 0;
    for n in 1..64 {
        let dom = base + n;
        env.domain(dom, &format!("/vm/crash-{n}"));
        let be = env.backend(dom, 51712, &img.display().to_string(), "r");
        let spec = format!(
            "{}|{}|{n}|{be}",
            env.sock.display(),
            env.dir.join("lock").display()
        );
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("XENBLOCK_CRASH_CHILD", spec)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        let mut outcome = String::new();
        while out.read_line(&mut line).unwrap() > 0 {
            if line.contains("PAUSED") || line.contains("DONE") {
                outcome = line.clone();
                break;
            }
            line.clear();
        }
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
        assert!(!outcome.is_empty(), "child at point {n} said nothing");
        let mine = |env: &Env| -> Vec<_> {
            env.loops_of(&img)
                .into_iter()
                .filter(|l| {
                    l.file_name
                        .ends_with(format!("/vbd/{dom}/51712").as_bytes())
                })
                .collect()
        };
        if recover == Recover::Release {
            let node = env.read(&format!("{be}/node"));
            if node.is_none() && !mine(&env).is_empty() {
                unrecorded += 1;
            }
            let r = ctx.release(&be).unwrap();
            assert!(
                mine(&env).is_empty(),
                "point {n}: release ({r:?}) left {:?} (node {node:?})",
                mine(&env)
            );
            if outcome.contains("DONE") {
                finished = true;
                break;
            }
            points += 1;
            continue;
        }
        let prefix = format!("/local/domain/0/backend/vbd/{dom}/");
        let report = ctx.reconcile(Some(&prefix)).unwrap();
        // The invariant: a loop device over the image for this backend exists
        // exactly when the backend names it in `node`.
        let node = env.read(&format!("{be}/node"));
        let mine = mine(&env);
        match &node {
            Some(n) => {
                assert_eq!(mine.len(), 1, "point {n}: live backend keeps its device");
                assert_eq!(&mine[0].path.display().to_string(), n);
                assert!(
                    report.detached.is_empty(),
                    "never detach a device in use: {report:?}"
                );
            }
            None => assert!(
                mine.is_empty(),
                "point {n}: leaked {mine:?} (report {report:?})"
            ),
        }
        if outcome.contains("DONE") {
            finished = true;
            break;
        }
        points += 1;
        if let Some(n) = node {
            xenblock::sys::loopdev::detach(Path::new(&n)).unwrap();
        }
    }
    assert!(
        finished,
        "prepare never completed within 63 store operations"
    );
    assert!(points >= 5, "killed at only {points} points");
    if recover == Recover::Release {
        assert!(
            unrecorded > 0,
            "no kill point fell between the attach and the record of its node"
        );
    }
    eprintln!(
        "killed prepare with SIGKILL at {points} store operations ({unrecorded} with a \
         device attached and not recorded), then recovered"
    );
    assert!(env.loops_of(&img).len() <= 1);
}

#[test]
fn reconcile_never_touches_foreign_or_live_devices() {
    require_root();
    let mut env = Env::new();
    let img = env.image("live.img", 1 << 20);
    let foreign = env.image("foreign.img", 1 << 20);
    env.domain(880, "/vm/live");
    let be = env.backend(880, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&be).unwrap();
    let f = std::fs::File::open(&foreign).unwrap();
    // A device someone else made, even one whose name looks like a path.
    xenblock::sys::loopdev::attach(&f, true, b"/local/domain/0/backend/vbd/881/51712").unwrap();
    // A stale xenblock device: tagged for a backend that no longer exists.
    let f2 = std::fs::File::open(&img).unwrap();
    let stale = xenblock::sys::loopdev::attach(
        &f2,
        true,
        b"xenblock:/local/domain/0/backend/vbd/882/51712",
    )
    .unwrap();
    let r = ctx
        .reconcile(Some("/local/domain/0/backend/vbd/88"))
        .unwrap();
    assert_eq!(r.detached, vec![stale.path.display().to_string()]);
    assert_eq!(r.kept, vec![env.read(&format!("{be}/node")).unwrap()]);
    assert_eq!(env.loops_of(&foreign).len(), 1, "foreign device untouched");
    assert_eq!(env.loops_of(&img).len(), 1, "live device kept");
}

#[test]
fn scripts_inherit_no_descriptor_of_xenblock() {
    require_root();
    let mut env = Env::new();
    let img = env.image("fd.img", 1 << 20);
    let dir = env.dir.join("scripts");
    std::fs::create_dir(&dir).unwrap();
    // Descriptors this test process already had without close-on-exec (the
    // harness's, e.g. cargo's jobserver pipe): not xenblock's doing.
    let inherited_from_harness: Vec<u32> = std::fs::read_dir("/proc/self/fdinfo")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let info = std::fs::read_to_string(e.path()).ok()?;
            let flags = info
                .lines()
                .find(|l| l.starts_with("flags:"))?
                .split_whitespace()
                .nth(1)?
                .to_string();
            let flags = u32::from_str_radix(&flags, 8).ok()?;
            (flags & libc::O_CLOEXEC as u32 == 0).then_some(fd)
        })
        .collect();
    let pidfile = env.dir.join("script.pid");
    let script = dir.join("block-fds");
    // The shell execs `sleep`, which keeps exactly what it inherited.
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho $$ > {}\nexec sleep 1\n", pidfile.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.domain(3, "/vm/fd");
    // Hold an attached file target and a connection, then run a script.
    let ctx = Arc::new(
        Context::new(Config {
            script_dir: dir.clone(),
            ..env.config()
        })
        .unwrap(),
    );
    let file_be = env.backend(3, 51712, &img.display().to_string(), "w");
    // Xen's script as named under this context's scripts directory (a
    // `block` anywhere else is a site's own script, and would be run).
    env.write(&format!("{file_be}/script"), "block");
    ctx.prepare(&file_be).unwrap();
    let be = env.backend(3, 51728, "whatever", "w");
    env.write(&format!("{be}/script"), "block-fds");
    let runner = {
        let (ctx, be) = (ctx.clone(), be.clone());
        std::thread::spawn(move || ctx.prepare(&be))
    };
    let t = std::time::Instant::now();
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "script did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // Wait until the shell has exec'd sleep.
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() != "sleep")
        .unwrap_or(false)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut fds = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let target = std::fs::read_link(e.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        fds.push((
            e.file_name().to_string_lossy().parse::<u32>().unwrap(),
            target,
        ));
    }
    fds.sort();
    runner.join().unwrap().unwrap();
    let extra: Vec<&(u32, String)> = fds
        .iter()
        .filter(|(fd, _)| *fd > 2 && !inherited_from_harness.contains(fd))
        .collect();
    assert!(
        extra.is_empty(),
        "the script inherited xenblock's descriptors: {extra:?} (all {fds:?})"
    );
    assert!(
        !fds.iter()
            .any(|(_, t)| t.starts_with("socket:") || t.contains("loop") || t.ends_with(".img")),
        "{fds:?}"
    );
    assert_eq!(fds[0].1, "/dev/null", "stdin is /dev/null");
}

#[test]
fn lock_file_and_directory_have_safe_permissions() {
    require_root();
    let env = Env::new();
    let lock =
        xenblock::lock::HotplugLock::new(&env.dir.join("newlock/sub"), Duration::from_secs(5));
    let g = lock.acquire().unwrap();
    let f = std::fs::metadata(lock.path()).unwrap();
    assert_eq!(f.permissions().mode() & 0o777, 0o600);
    let d = std::fs::metadata(env.dir.join("newlock/sub")).unwrap();
    assert_eq!(
        d.permissions().mode() & 0o022,
        0,
        "lock dir not writable by others"
    );
    drop(g);
    assert!(!lock.path().exists());
}

#[test]
fn the_target_is_opened_without_following_a_swapped_in_symlink() {
    // prepare resolves params to a canonical path, then opens that path once
    // with O_NOFOLLOW and takes permissions and identity from the descriptor:
    // a last component swapped for a symlink in between is refused.
    let env = Env::new();
    let real = env.dir.join("real.img");
    std::fs::write(&real, b"x").unwrap();
    let link = env.dir.join("swapped.img");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    let e = xenblock::sys::stat::open_target(&link, false).unwrap_err();
    assert_eq!(e.kind(), xenblock::ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let f = xenblock::sys::stat::open_target(&real, true).unwrap();
    let st = xenblock::sys::stat::fstat(std::os::fd::AsFd::as_fd(&f)).unwrap();
    assert_eq!(st.ino, xenblock::sys::stat::stat(&real).unwrap().ino);
}
