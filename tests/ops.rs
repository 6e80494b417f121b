//! The op API (`Context::start`, `Op::fd`, `Op::finish`): work on the
//! library's threads, completion on a descriptor, per-backend order,
//! parallel backends, lock waits woken by the holder's release, shutdown.
//! Needs root (loop devices).

mod common;
use common::{require_root, Env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenblock::{Action, Config, Context, ErrorKind, Outcome, Prepared, Released};

/// Whether `fd` (an op's, kept open by the op) polls readable now.
fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// Another process holding the hotplug lock, as a script would; released
/// by killing it (its descriptor closes).
struct Holder(Option<std::process::Child>);
impl Holder {
    fn start(lock_dir: &Path) -> Holder {
        std::fs::create_dir_all(lock_dir).unwrap();
        let lock = lock_dir.join("block");
        let child = std::process::Command::new("sh")
            .args(["-c", "exec 9>>\"$0\" && flock 9 && exec sleep 60"])
            .arg(&lock)
            .spawn()
            .unwrap();
        let h = Holder(Some(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let locks = std::fs::read_to_string("/proc/locks").unwrap();
            if let Ok(st) = std::fs::metadata(&lock) {
                use std::os::unix::fs::MetadataExt;
                if xenblock::lock::flock_holder(&locks, st.dev(), st.ino()).is_some() {
                    return h;
                }
            }
            assert!(Instant::now() < deadline, "flock(1) did not take the lock");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    /// Let the lock go; returns when the holder is gone.
    fn release(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
impl Drop for Holder {
    fn drop(&mut self) {
        self.release();
    }
}

fn arc_ctx(env: &Env, f: impl FnOnce(&mut Config)) -> Arc<Context> {
    let mut c = env.config();
    f(&mut c);
    Arc::new(Context::new(c).unwrap())
}

/// A file-backed backend of domain `dom`, device `dev`.
fn file_backend(env: &mut Env, dom: u32, dev: u32) -> (String, PathBuf) {
    let img = env.image(&format!("d{dom}-{dev}.img"), 1 << 20);
    env.domain(dom, &format!("/vm/{dom}"));
    let be = env.backend(dom, dev, &img.display().to_string(), "w");
    env.write(&format!("{be}/type"), "file");
    (be, img)
}

#[test]
fn an_op_prepares_and_releases_and_its_fd_stays_readable() {
    require_root();
    let mut env = Env::new();
    let (be, img) = file_backend(&mut env, 7, 51712);
    let ctx = arc_ctx(&env, |_| {});
    let mut op = ctx.start(&be, Action::Add).unwrap();
    assert!(op.wait_timeout(Duration::from_secs(10)), "the op completed");
    assert!(readable(op.fd()));
    match op.finish().unwrap() {
        Outcome::Prepared(Prepared::Connected { .. }) => {}
        o => panic!("unexpected outcome {o:?}"),
    }
    // Level-triggered: still readable after the outcome was taken.
    assert!(readable(op.fd()));
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    assert_eq!(env.loops_of(&img).len(), 1);
    // A second finish is refused, clearly.
    let e = op.finish().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("already returned"), "{e}");
    let mut rel = ctx.start(&be, Action::Remove).unwrap();
    assert!(matches!(
        rel.wait().unwrap(),
        Outcome::Released(Released::Detached(_))
    ));
    assert!(env.loops_of(&img).is_empty());
}

/// The blocked-signal mask (`SigBlk`) in a `/proc/.../status` file.
fn sig_blk(status: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .expect("a SigBlk line");
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The library's worker threads block the asynchronous signals (the host's
/// handlers run on the host's threads) and leave the faults' signals to
/// them; the thread that started the op keeps its own mask.
#[test]
fn workers_block_the_hosts_asynchronous_signals_and_the_callers_mask_is_kept() {
    require_root();
    let mut env = Env::new();
    let (be, _img) = file_backend(&mut env, 7, 51712);
    let ctx = arc_ctx(&env, |_| {});
    let mine = || sig_blk(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
    let before = mine();
    let op = ctx.start(&be, Action::Add).unwrap();
    assert_eq!(mine(), before, "the caller's mask is its own again");
    assert!(op.wait_timeout(Duration::from_secs(10)), "the op completed");
    let bit = |s: libc::c_int| 1u64 << (s - 1);
    let mut workers = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("status")),
        ) else {
            continue; // a thread that ended meanwhile
        };
        if comm.trim_end() != "xenblock-op" {
            continue;
        }
        workers += 1;
        let m = sig_blk(&status);
        for s in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGCHLD,
            libc::SIGUSR1,
            libc::SIGALRM,
        ] {
            assert!(m & bit(s) != 0, "signal {s} blocked on a worker: {m:x}");
        }
        for s in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            assert!(m & bit(s) == 0, "fault signal {s} left to a worker: {m:x}");
        }
    }
    assert!(workers > 0, "no worker thread found");
    ctx.start(&be, Action::Remove).unwrap().wait().unwrap();
}

#[test]
fn bad_paths_are_refused_at_start_and_nothing_is_queued() {
    let env = Env::new();
    let ctx = arc_ctx(&env, |_| {});
    for bad in [
        "",
        "backend/vbd/x/1",
        "/local/domain/0",
        "backend/vbd/7/51712/params",
        "a/../b/1/2",
    ] {
        let e = ctx.start(bad, Action::Add).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
    }
    // A well-formed path of a backend that does not exist: the op says so.
    let mut op = ctx.start("backend/vbd/9/51712", Action::Add).unwrap();
    let e = op.wait().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

/// Functional only: how fast the start returns and the op follows the
/// release is measured by `cargo bench --bench ops` (BENCHMARKS.md).
#[test]
fn start_returns_while_the_lock_is_held_and_the_op_completes_after_its_release() {
    require_root();
    let mut env = Env::new();
    let (be, img) = file_backend(&mut env, 7, 51712);
    let mut holder = Holder::start(&env.dir.join("lock"));
    let ctx = arc_ctx(&env, |_| {});
    let t = Instant::now();
    let mut op = ctx.start(&be, Action::Add).unwrap();
    eprintln!("op_start took {:?}", t.elapsed());
    assert!(
        !op.wait_timeout(Duration::from_millis(300)),
        "the op waits for the lock"
    );
    assert_eq!(op.finish().unwrap_err().kind(), ErrorKind::WouldBlock);
    holder.release();
    let released = Instant::now();
    assert!(op.wait_timeout(Duration::from_secs(5)));
    let after = released.elapsed();
    eprintln!("the op completed {after:?} after the lock's release");
    op.finish().unwrap();
    assert_eq!(env.loops_of(&img).len(), 1);
    ctx.release(&be).unwrap();
    env.unprepare(&be);
    let t = Instant::now();
    ctx.prepare(&be).unwrap();
    eprintln!("a synchronous prepare of it takes {:?}", t.elapsed());
    ctx.release(&be).unwrap();
}

#[test]
fn the_lock_timeout_bounds_an_op() {
    require_root();
    let mut env = Env::new();
    let (be, _img) = file_backend(&mut env, 7, 51712);
    let _holder = Holder::start(&env.dir.join("lock"));
    let ctx = arc_ctx(&env, |c| c.lock_timeout = Duration::from_millis(300));
    let t = Instant::now();
    let mut op = ctx.start(&be, Action::Add).unwrap();
    assert!(op.wait_timeout(Duration::from_secs(5)));
    let took = t.elapsed();
    assert_eq!(op.finish().unwrap_err().kind(), ErrorKind::Timeout);
    // Never before its deadline (how long after is the bench's matter).
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[test]
fn ops_on_one_backend_run_in_order_and_a_sync_call_takes_its_turn() {
    require_root();
    let mut env = Env::new();
    let (be, img) = file_backend(&mut env, 7, 51712);
    let mut holder = Holder::start(&env.dir.join("lock"));
    let ctx = arc_ctx(&env, |_| {});
    let mut add = ctx.start(&be, Action::Add).unwrap();
    let mut remove = ctx.start(&be, Action::Remove).unwrap();
    // A synchronous prepare on the same backend, after both ops.
    let c2 = ctx.clone();
    let b2 = be.clone();
    let sync = std::thread::spawn(move || c2.prepare_ordered(&b2).map(|_| ()));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!add.is_done() && !remove.is_done() && !sync.is_finished());
    holder.release();
    assert!(add.wait_timeout(Duration::from_secs(5)));
    assert!(remove.wait_timeout(Duration::from_secs(5)));
    add.finish().unwrap();
    remove.finish().unwrap();
    sync.join().unwrap().unwrap();
    // Add, then remove: no loop device at the end (remove first would
    // have left the add's). The sync prepare came after both: the backend
    // still names the released device, so it had nothing to do.
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn nowait_sync_call_gives_would_block_while_an_op_runs_on_its_backend() {
    require_root();
    let mut env = Env::new();
    let (be, _img) = file_backend(&mut env, 7, 51712);
    let mut holder = Holder::start(&env.dir.join("lock"));
    let ctx = arc_ctx(&env, |_| {});
    let mut add = ctx.start(&be, Action::Add).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let e = xenblock::lock::no_wait(|| ctx.release_ordered(&be)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    holder.release();
    add.wait().unwrap();
    ctx.release(&be).unwrap();
}

fn sleepy_script(dir: &Path, ms: u32) -> PathBuf {
    let p = dir.join("sleepy");
    std::fs::write(
        &p,
        format!("#!/bin/sh\nsleep {}.{:03}\nexit 0\n", ms / 1000, ms % 1000),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A script that proves where it ran: `meet` waits (up to 20 s) until the
/// scripts of all `n` backends have started, so it succeeds only when they
/// run at the same time; `alone` fails when another script runs meanwhile.
fn rendezvous_script(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("rendezvous");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n\
             d={dir}\n\
             me=$(echo \"$XENBUS_PATH\" | tr / _)\n\
             if [ \"$1\" = add ]; then\n\
               touch \"$d/started$me\"\n\
               i=0\n\
               while [ \"$(ls \"$d\" | grep -c '^started')\" -lt {n} ]; do\n\
                 i=$((i + 1)); [ $i -gt 2000 ] && exit 1; sleep 0.01\n\
               done\n\
               exit 0\n\
             fi\n\
             mkdir \"$d/running\" || exit 1\n\
             sleep 0.05\n\
             rmdir \"$d/running\"\n",
            dir = dir.join("meet").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("meet")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn ops_on_different_backends_run_in_parallel() {
    let env = Env::new();
    let script = rendezvous_script(&env.dir, 4);
    let mut bes = Vec::new();
    for dev in 0..4 {
        env.domain(8, "/vm/8");
        let be = env.backend(8, 51712 + dev, "/nonexistent", "w");
        env.write(&format!("{be}/script"), &script.display().to_string());
        bes.push(be);
    }
    // Four workers: the four scripts meet (each waits for all to start).
    let ctx = arc_ctx(&env, |c| c.workers = 4);
    let mut ops: Vec<_> = bes
        .iter()
        .map(|b| ctx.start(b, Action::Add).unwrap())
        .collect();
    for op in &mut ops {
        assert!(matches!(
            op.wait().unwrap(),
            Outcome::Prepared(Prepared::Script)
        ));
    }
    // One worker: they queue, never two at once (each checks it is alone).
    let one = arc_ctx(&env, |c| c.workers = 1);
    let mut ops: Vec<_> = bes
        .iter()
        .map(|b| one.start(b, Action::Remove).unwrap())
        .collect();
    for op in &mut ops {
        op.wait().unwrap();
    }
}

#[test]
fn a_dropped_op_still_completes_and_its_effects_stay() {
    require_root();
    let mut env = Env::new();
    let (be, img) = file_backend(&mut env, 7, 51712);
    let ctx = arc_ctx(&env, |_| {});
    drop(ctx.start(&be, Action::Add).unwrap());
    // A release started after it runs after it: wait for that one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.read(&format!("{be}/hotplug-status")).is_none() {
        assert!(Instant::now() < deadline, "the dropped op did not complete");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(env.loops_of(&img).len(), 1);
    ctx.start(&be, Action::Remove).unwrap().wait().unwrap();
    assert!(env.loops_of(&img).is_empty());
}

#[test]
fn shutdown_cancels_queued_and_lock_waiting_ops_and_waits_for_the_running_one() {
    require_root();
    let mut env = Env::new();
    let (be1, img1) = file_backend(&mut env, 7, 51712);
    let (be2, img2) = file_backend(&mut env, 7, 51728);
    let be3 = env.backend(7, 51744, "/nonexistent", "w");
    // be3 runs a custom script (no hotplug lock): an op past the lock.
    let script = sleepy_script(&env.dir, 600);
    env.write(&format!("{be3}/script"), &script.display().to_string());
    let _holder = Holder::start(&env.dir.join("lock"));
    let ctx = arc_ctx(&env, |c| c.workers = 2);
    let mut scripted = ctx.start(&be3, Action::Add).unwrap();
    let mut waiting = ctx.start(&be1, Action::Add).unwrap();
    let mut queued = ctx.start(&be2, Action::Add).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(!waiting.is_done() && !scripted.is_done());
    let c2 = ctx.clone();
    let t0 = Instant::now();
    let shut = std::thread::spawn(move || c2.shutdown_workers());
    for (op, img) in [(&mut queued, &img2), (&mut waiting, &img1)] {
        // The holder never lets go: done at all means not waiting for it.
        assert!(
            op.wait_timeout(Duration::from_secs(10)),
            "cancelled without waiting for the lock's holder"
        );
        let e = op.finish().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
        assert!(e.to_string().contains("nothing was done"), "{e}");
        assert!(env.loops_of(img).is_empty());
    }
    assert!(env.read(&format!("{be1}/hotplug-status")).is_none());
    assert!(env.read(&format!("{be2}/hotplug-status")).is_none());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !shut.is_finished(),
        "shutdown waits for the op past the lock"
    );
    shut.join().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert!(scripted.is_done());
    scripted.finish().unwrap();
    // No op can start any more; the holder still holds the lock.
    assert_eq!(
        ctx.start(&be2, Action::Add).unwrap_err().kind(),
        ErrorKind::BadState
    );
}

#[test]
fn a_holder_that_unlinks_as_xens_release_lock_wakes_the_op_while_it_keeps_its_descriptor() {
    require_root();
    let mut env = Env::new();
    let (be, img) = file_backend(&mut env, 7, 51712);
    let lock_dir = env.dir.join("lock");
    std::fs::create_dir_all(&lock_dir).unwrap();
    let lock = lock_dir.join("block");
    // Xen's locking.sh: flock, then release_lock removes the file; the
    // script's descriptor (and so the flock on the old file) lives on.
    let mut holder = std::process::Command::new("sh")
        .args([
            "-c",
            "exec 9>>\"$0\" && flock 9 && echo locked && read x && rm -f \"$0\" && exec sleep 60",
        ])
        .arg(&lock)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let ctx = arc_ctx(&env, |_| {});
    let mut op = ctx.start(&be, Action::Add).unwrap();
    assert!(!op.wait_timeout(Duration::from_millis(300)));
    {
        use std::io::Write;
        holder.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    // The removal is the release: wait for it, then time the op.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    let released = Instant::now();
    assert!(op.wait_timeout(Duration::from_secs(5)));
    let after = released.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    op.finish().unwrap();
    eprintln!("the op completed {after:?} after the holder removed the lock file");
    assert_eq!(env.loops_of(&img).len(), 1);
    ctx.release(&be).unwrap();
}

/// xenblock_op_finish polled in a tight loop while ops complete: once the
/// op's descriptor polls readable, the outcome is the op's own, never a
/// "still running" kept as final (the check and the take are one critical
/// section). Not deterministic: many short ops widen the window the old
/// code had between them.
#[test]
fn op_finish_polled_while_the_op_completes_never_keeps_would_block() {
    use std::ffi::{CStr, CString};
    use xenblock::ffi::xenblock_status::*;
    use xenblock::ffi::*;
    let env = Env::new();
    let sock = CString::new(env.sock.to_str().unwrap()).unwrap();
    let lock_dir = CString::new(env.dir.join("lock").to_str().unwrap()).unwrap();
    std::env::set_var("XENSTORED_PATH", sock.to_str().unwrap());
    let cfg = xenblock_config {
        lock_dir: lock_dir.as_ptr(),
        ..Default::default()
    };
    let mut ctx: *mut xenblock_ctx = std::ptr::null_mut();
    // SAFETY: a complete config; ctx receives the context.
    assert_eq!(unsafe { xenblock_ctx_new(&cfg, &mut ctx) }, XENBLOCK_OK);
    // A backend that does not exist: the op fails at once on the worker.
    let be = CString::new("backend/vbd/4242/51712").unwrap();
    for i in 0..2000 {
        let mut op: *mut xenblock_op = std::ptr::null_mut();
        // SAFETY: live ctx, NUL-terminated path, op receives the op.
        let st = unsafe { xenblock_op_start(ctx, be.as_ptr(), 0, 0, &mut op) };
        assert_eq!(st, XENBLOCK_OK);
        // SAFETY: a live op.
        let fd = unsafe { xenblock_op_fd(op) };
        let st = loop {
            // SAFETY: a live op.
            let st = unsafe { xenblock_op_finish(op) };
            if st != XENBLOCK_WOULD_BLOCK {
                break st;
            }
            if readable(fd) {
                // Done before this call: the next answer must be the outcome.
                // SAFETY: a live op.
                let st = unsafe { xenblock_op_finish(op) };
                assert_ne!(
                    st, XENBLOCK_WOULD_BLOCK,
                    "op {i}: WOULD_BLOCK kept as final"
                );
                break st;
            }
        };
        assert!(
            st != XENBLOCK_OK && st != XENBLOCK_INVALID_ARGUMENT,
            "op {i}: {st:?}"
        );
        // SAFETY: a live op; the message is NUL-terminated.
        let msg = unsafe { CStr::from_ptr(xenblock_op_error(op)) };
        assert!(!msg.to_bytes().is_empty(), "op {i}: no message");
        // SAFETY: a live op, freed once.
        unsafe { xenblock_op_free(op) };
    }
    // SAFETY: live ctx, no op left.
    unsafe { xenblock_ctx_free(ctx) };
}

/// One line per failure in the caller's log: an op's failure is its outcome
/// (the caller reports `Op::finish`'s error, as libxl reports a script's
/// `hotplug-error`), so the library logs it only at debug level; the
/// synchronous prepare, whose caller may not log, logs it at error level.
#[test]
fn an_ops_failure_is_logged_once_by_its_caller_not_by_the_library() {
    require_root();
    let mut env = Env::new();
    let lines: Arc<parking_lot::Mutex<Vec<(xenblock::LogLevel, String)>>> = Arc::default();
    let sink = lines.clone();
    let ctx = arc_ctx(&env, |c| {
        c.logger = Some(Arc::new(move |l, m: &str| {
            sink.lock().push((l, m.to_string()))
        }));
    });
    env.domain(3, "/vm/3");
    let gone = env.image("gone.img", 1 << 20);
    std::fs::remove_file(&gone).unwrap();
    let be = env.backend(3, 51712, &gone.display().to_string(), "w");
    env.write(&format!("{be}/type"), "file");
    let about_be = |lines: &[(xenblock::LogLevel, String)]| {
        lines
            .iter()
            .filter(|(l, m)| *l >= xenblock::LogLevel::Warn && m.contains(&be))
            .map(|(_, m)| m.clone())
            .collect::<Vec<_>>()
    };

    let e = ctx.start(&be, Action::Add).unwrap().wait().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("error"),
        "the failure is still recorded in xenstore"
    );
    assert!(
        about_be(&lines.lock()).is_empty(),
        "the op's failure was logged by the library too: {:?}",
        lines.lock()
    );
    assert!(
        lines
            .lock()
            .iter()
            .any(|(l, m)| *l == xenblock::LogLevel::Debug && m.contains(&e.to_string())),
        "the op's failure is at debug level: {:?}",
        lines.lock()
    );

    lines.lock().clear();
    let e = ctx.prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(about_be(&lines.lock()).len(), 1, "{:?}", lines.lock());
}
