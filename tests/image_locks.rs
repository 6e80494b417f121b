//! QEMU-compatible image locks held by the loop device (docs/image-locks.md),
//! proven both ways against Debian's QEMU (qemu-utils, qemu-system-x86):
//! embedded xenstored, real loop devices, real QEMU processes. Needs root
//! and QEMU: fails, never skips, without.

mod common;
use common::{require_root, Env};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use xenblock::imagelock::ImageLocks;
use xenblock::{Config, Context, ErrorKind};

const QEMU_LOCK: &str = "Failed to get \"write\" lock";
const SIZE: u64 = 4 << 20;

fn need(tool: &str) -> String {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(tool))
        .find(|p| p.exists());
    found
        .unwrap_or_else(|| {
            panic!(
                "{tool} is not installed; install qemu-utils and qemu-system-x86 \
                 (scripts/test-all.sh does)"
            )
        })
        .display()
        .to_string()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `qemu-io` writing one sector.
fn qemu_io_write(img: &Path) -> Output {
    run(Command::new(need("qemu-io"))
        .args(["-f", "raw", "-c", "write 0 512"])
        .arg(img))
}

/// `qemu-io` reading one sector, read-only.
fn qemu_io_read(img: &Path) -> Output {
    run(Command::new(need("qemu-io"))
        .args(["-r", "-f", "raw", "-c", "read 0 512"])
        .arg(img))
}

/// `qemu-img convert` into the image (opened read-write).
fn qemu_img_write(img: &Path, src: &Path) -> Output {
    run(Command::new(need("qemu-img"))
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(src)
        .arg(img))
}

fn qemu_system_args(img: &Path, read_only: bool) -> Vec<String> {
    let ro = if read_only { ",readonly=on" } else { "" };
    [
        "-S",
        "-nographic",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-nodefaults",
        "-drive",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("file={},format=raw,if=virtio{ro}", img.display())])
    .collect()
}

/// A process this test started; killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The OFD locks on a file, as /proc/locks lists them.
fn ofd_locks(img: &Path) -> usize {
    let st = xenblock::sys::stat::stat(img).unwrap();
    xenblock::sys::ofdlock::held_on(st.dev, st.ino)
        .unwrap()
        .iter()
        .filter(|l| l.ofd)
        .count()
}

/// How many OFD locks cover `byte` of the file.
fn ofd_locks_on(img: &Path, byte: u64) -> usize {
    let st = xenblock::sys::stat::stat(img).unwrap();
    xenblock::sys::ofdlock::held_on(st.dev, st.ino)
        .unwrap()
        .iter()
        .filter(|l| l.ofd && l.covers(byte))
        .count()
}

/// A check that each of `bytes` has gained a lock since it was made.
fn more_locks_on(img: &Path, bytes: &[u64]) -> impl Fn() -> bool {
    let img = img.to_path_buf();
    let before: Vec<(u64, usize)> = bytes.iter().map(|&b| (b, ofd_locks_on(&img, b))).collect();
    move || before.iter().all(|&(b, n)| ofd_locks_on(&img, b) > n)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A QEMU guest (stopped, -S) with the image as its disk; returns once its
/// locks are in /proc/locks: all of them, as QEMU takes them in steps (the
/// image is opened, then the device adds its permissions). The image must
/// be left alone meanwhile.
fn qemu_system(img: &Path, read_only: bool) -> Proc {
    let want: &[u64] = if read_only { &[100, 201] } else { &[101, 201] };
    let locked = more_locks_on(img, want);
    let child = Command::new(need("qemu-system-x86_64"))
        .args(qemu_system_args(img, read_only))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    wait_until("QEMU holds its image locks", || {
        if let Some(st) = p.0.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("qemu-system-x86_64 exited ({st}) before locking: {err}");
        }
        locked()
    });
    p
}

/// `qemu-io` with the image open read-write, kept running (its stdin open).
fn qemu_io_holding(img: &Path) -> Proc {
    let locked = more_locks_on(img, &[101]);
    let child = Command::new(need("qemu-io"))
        .args(["-f", "raw"])
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    // qemu-io holds 100 and 101 (read, write) and shares everything.
    wait_until("qemu-io holds its image locks", locked);
    p
}

fn setup(env: &mut Env, name: &str) -> (PathBuf, PathBuf) {
    let img = env.image(name, SIZE);
    let src = env.dir.join(format!("{name}.src"));
    std::fs::File::create(&src).unwrap().set_len(SIZE).unwrap();
    (img, src)
}

fn prepare_err(ctx: &Context, be: &str) -> xenblock::Error {
    let e = ctx.prepare(be).expect_err("the prepare must be refused");
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    e
}

#[test]
fn xenblock_writer_refuses_qemu_writers() {
    require_root();
    let mut env = Env::new();
    let (img, src) = setup(&mut env, "w.img");
    env.domain(5, "/vm/a");
    let be = env.backend(5, 51712, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&be).unwrap();

    let o = qemu_io_write(&img);
    assert!(
        !o.status.success() && text(&o).contains(QEMU_LOCK),
        "{}",
        text(&o)
    );
    let o = qemu_img_write(&img, &src);
    assert!(
        !o.status.success() && text(&o).contains(QEMU_LOCK),
        "{}",
        text(&o)
    );
    let o = run(Command::new(need("qemu-system-x86_64")).args(qemu_system_args(&img, false)));
    assert!(
        !o.status.success() && text(&o).contains(QEMU_LOCK),
        "{}",
        text(&o)
    );

    // After release, QEMU may write again.
    ctx.release(&be).unwrap();
    wait_until("the locks are gone", || ofd_locks(&img) == 0);
    let o = qemu_io_write(&img);
    assert!(o.status.success(), "{}", text(&o));
    let o = qemu_img_write(&img, &src);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn qemu_writer_refuses_xenblock() {
    require_root();
    let mut env = Env::new();
    let (img, _src) = setup(&mut env, "q.img");
    env.domain(5, "/vm/a");
    let w = env.backend(5, 51712, &img.display().to_string(), "w");
    let r = env.backend(5, 51728, &img.display().to_string(), "r");
    let ctx = env.ctx();
    for holder in ["qemu-system", "qemu-io"] {
        let q = if holder == "qemu-system" {
            qemu_system(&img, false)
        } else {
            qemu_io_holding(&img)
        };
        let holders = ofd_locks(&img);
        for be in [&w, &r] {
            let e = prepare_err(&ctx, be);
            let m = e.to_string();
            // A writable QEMU drive holds write (101) and denies it (201).
            assert!(
                m.contains("writes to it (lock byte 101)")
                    || m.contains("lets nobody else write to it (lock byte 201)"),
                "{holder}: {m}"
            );
            assert!(m.contains("names no process"), "{holder}: {m}");
            assert!(
                env.loops_of(&img).is_empty(),
                "{holder}: no loop device stays"
            );
            assert_eq!(
                env.read(&format!("{be}/hotplug-status")).as_deref(),
                Some("busy")
            );
            // The refusal let go of the locks it took before it returned
            // (even if a child forked meanwhile shares its description).
            assert_eq!(ofd_locks(&img), holders, "{holder}: only its locks stay");
            env.unprepare(be);
        }
        drop(q);
        wait_until("the holder's locks are gone", || ofd_locks(&img) == 0);
        ctx.prepare(&w).unwrap();
        ctx.release(&w).unwrap();
        env.unprepare(&w);
    }
}

#[test]
fn readers_of_both_kinds_coexist() {
    require_root();
    let mut env = Env::new();
    let (img, src) = setup(&mut env, "r.img");
    env.domain(5, "/vm/a");
    env.domain(6, "/vm/b");
    let a = env.backend(5, 51712, &img.display().to_string(), "r");
    let b = env.backend(6, 51712, &img.display().to_string(), "r");
    let ctx = env.ctx();
    ctx.prepare(&a).unwrap();
    let q = qemu_system(&img, true);
    let o = qemu_io_read(&img);
    assert!(o.status.success(), "{}", text(&o));
    ctx.prepare(&b).unwrap();
    assert_eq!(env.loops_of(&img).len(), 2);
    // Writers stay out while the readers are there.
    let o = qemu_img_write(&img, &src);
    assert!(
        !o.status.success() && text(&o).contains(QEMU_LOCK),
        "{}",
        text(&o)
    );
    env.domain(7, "/vm/c");
    let c = env.backend(7, 51712, &img.display().to_string(), "w");
    prepare_err(&ctx, &c);
    env.unprepare(&c);
    ctx.release(&a).unwrap();
    ctx.release(&b).unwrap();
    // With only the QEMU reader left, the image locks refuse the writer.
    let m = prepare_err(&ctx, &c).to_string();
    assert!(
        m.contains("lets nobody else write to it (lock byte 201)"),
        "{m}"
    );
    drop(q);
}

#[test]
fn own_loop_devices_do_not_refuse_what_the_sharing_rule_allows() {
    require_root();
    let mut env = Env::new();
    let (img, _src) = setup(&mut env, "own.img");
    env.domain(5, "/vm/a");
    env.domain(6, "/vm/b");
    let ctx = env.ctx();
    // The same VM twice read-write: allowed by the rule, and by the locks.
    let a1 = env.backend(5, 51712, &img.display().to_string(), "w");
    let a2 = env.backend(5, 51728, &img.display().to_string(), "w");
    ctx.prepare(&a1).unwrap();
    ctx.prepare(&a2).unwrap();
    // Another VM forcing (`w!`) checks nothing.
    let b = env.backend(6, 51712, &img.display().to_string(), "w!");
    ctx.prepare(&b).unwrap();
    assert_eq!(env.loops_of(&img).len(), 3);
    // A QEMU writer still sees them.
    let o = qemu_io_write(&img);
    assert!(
        !o.status.success() && text(&o).contains(QEMU_LOCK),
        "{}",
        text(&o)
    );
    for be in [&a1, &a2, &b] {
        ctx.release(be).unwrap();
    }
}

#[test]
fn a_virtlockd_lease_refuses_with_its_process() {
    require_root();
    let mut env = Env::new();
    let (img, _src) = setup(&mut env, "lease.img");
    env.domain(5, "/vm/a");
    // virtlockd's direct lease: a classic POSIX write lock on byte 0. Taken
    // here by this process, so the pid to expect is ours.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: a valid descriptor and `struct flock` for F_SETLK.
    assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) }, 0);
    let ctx = env.ctx();
    let be = env.backend(5, 51712, &img.display().to_string(), "r");
    let m = prepare_err(&ctx, &be).to_string();
    assert!(m.contains("virtlockd read-write lease"), "{m}");
    assert!(
        m.contains(&format!("process {}", std::process::id())),
        "{m}"
    );
    assert!(env.loops_of(&img).is_empty());
    drop(f); // closing releases a POSIX lock
    env.unprepare(&be);
    ctx.prepare(&be).unwrap();
    ctx.release(&be).unwrap();
}

#[test]
fn off_takes_and_checks_nothing() {
    require_root();
    let mut env = Env::new();
    let (img, _src) = setup(&mut env, "off.img");
    env.domain(5, "/vm/a");
    let be = env.backend(5, 51712, &img.display().to_string(), "w");
    let ctx = Context::new(Config {
        image_locks: ImageLocks::Off,
        ..env.config()
    })
    .unwrap();
    let q = qemu_io_holding(&img);
    let held = ofd_locks(&img);
    ctx.prepare(&be).unwrap();
    assert_eq!(ofd_locks(&img), held, "off takes no lock");
    drop(q);
    ctx.release(&be).unwrap();
}

/// `xenblock audit` finds nothing, then (while qemu-io writes `img`) exits 3
/// with exactly one conflict: the whole output and that line.
fn audit_clean_then_while_qemu_writes(env: &Env, img: &Path) -> (String, String) {
    let o = xenblock_cli(env, &["audit"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let q = qemu_io_holding(img);
    let o = xenblock_cli(env, &["audit"]);
    drop(q);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    let conflicts = common::audit_conflicts(&out);
    assert_eq!(conflicts.len(), 1, "{out}");
    let one = conflicts[0].to_string();
    (out, one)
}

fn xenblock_cli(env: &Env, args: &[&str]) -> Output {
    run(Command::new(common::exe("xenblock"))
        .args(args)
        .env("XENSTORED_PATH", &env.sock)
        .env("XENBLOCK_LOCK_DIR", env.dir.join("lock")))
}

#[test]
fn the_lock_outlives_the_preparer_and_ends_with_the_loop_device() {
    require_root();
    let mut env = Env::new();
    let (img, _src) = setup(&mut env, "life.img");
    env.domain(5, "/vm/a");
    let be = env.backend(5, 51712, &img.display().to_string(), "w");
    // Prepared by another process, which exits.
    let o = xenblock_cli(&env, &["prepare", &be]);
    assert!(o.status.success(), "{}", text(&o));
    let loops = env.loops_of(&img);
    assert_eq!(loops.len(), 1);
    let o = qemu_io_write(&img);
    assert!(
        !o.status.success() && text(&o).contains(QEMU_LOCK),
        "{}",
        text(&o)
    );
    // Detached by hand: the lock goes with the loop device.
    let o = run(Command::new("losetup").arg("-d").arg(&loops[0].path));
    assert!(o.status.success(), "{}", text(&o));
    wait_until("the locks are gone", || ofd_locks(&img) == 0);
    let o = qemu_io_write(&img);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn status_shows_the_setting_and_bad_values_are_usage_errors() {
    let env = Env::new();
    let o = run(Command::new(common::exe("xenblock"))
        .arg("status")
        .env("XENBLOCK_IMAGE_LOCKS", "required"));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("image locks: required (XENBLOCK_IMAGE_LOCKS"),
        "{}",
        text(&o)
    );
    let o = run(Command::new(common::exe("xenblock"))
        .arg("status")
        .env_remove("XENBLOCK_IMAGE_LOCKS"));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("image locks: best-effort (default"),
        "{}",
        text(&o)
    );
    let o = run(Command::new(common::exe("xenblock"))
        .args(["prepare", "backend/vbd/5/51712"])
        .env("XENSTORED_PATH", &env.sock)
        .env("XENBLOCK_IMAGE_LOCKS", "sometimes"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o)
            .contains("XENBLOCK_IMAGE_LOCKS is 'sometimes'; expected required, best-effort or off"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("image_locks"), "{}", text(&o));
}

/// What the locks add to a file prepare with nothing in the way: `take` on
/// a fresh description, as the prepare calls it (2 F_OFD_SETLK + 3
/// F_OFD_GETLK for `w`). Run: `cargo test --release --test image_locks --
/// --ignored --nocapture cost_of_taking`.
#[test]
#[ignore]
fn cost_of_taking_the_locks() {
    use xenblock::imagelock::{take, Image, OwnLoops};
    use xenblock::sharing::Mode;
    let mut env = Env::new();
    let img = env.image("cost.img", SIZE);
    let st = xenblock::sys::stat::stat(&img).unwrap();
    for mode in [Mode::Write, Mode::Read] {
        let mut t = Vec::new();
        for _ in 0..20_000 {
            let f = xenblock::sys::stat::open_target(&img, mode != Mode::Read).unwrap();
            let i = Image {
                file: &f,
                dev: st.dev,
                ino: st.ino,
                shown: "cost.img",
            };
            let start = Instant::now();
            take(
                &i,
                mode,
                ImageLocks::BestEffort,
                &|| Ok(OwnLoops::default()),
                &|_, _| {},
            )
            .unwrap()
            .keep(); // as a successful prepare does
            t.push(start.elapsed());
        }
        t.sort();
        println!(
            "take {mode:?}: median {:?}, p90 {:?}, p99 {:?} over {} runs",
            t[t.len() / 2],
            t[t.len() * 9 / 10],
            t[t.len() * 99 / 100],
            t.len()
        );
    }
}

/// What the locks add to a whole in-process file prepare (and release) at
/// N=0: two contexts on one embedded xenstored, image locks `off` and
/// `best-effort`, in alternating blocks so that the machine's load falls
/// on both alike; the difference of the medians, and the median of the
/// per-block differences. Run: `cargo test --release --test image_locks --
/// --ignored --nocapture cost_in_a_whole_file_prepare`
/// (`XENBLOCK_COST_BLOCKS`, default 40 blocks of 50 cycles per setting).
#[test]
#[ignore]
fn cost_in_a_whole_file_prepare() {
    require_root();
    let mut env = Env::new();
    let img = env.image("whole.img", SIZE);
    env.domain(5, "/vm/a");
    let be = env.backend(5, 51712, &img.display().to_string(), "w");
    let ctx = |l| {
        Context::new(Config {
            image_locks: l,
            ..env.config()
        })
        .unwrap()
    };
    let (off, on) = (ctx(ImageLocks::Off), ctx(ImageLocks::BestEffort));
    let blocks: usize = std::env::var("XENBLOCK_COST_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let cycle = |c: &Context| {
        let t = Instant::now();
        c.prepare(&be).unwrap();
        let p = t.elapsed();
        c.release(&be).unwrap();
        env.unprepare(&be);
        p
    };
    // Warm both (and build their claims indexes).
    for _ in 0..20 {
        cycle(&off);
        cycle(&on);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut all_off, mut all_on, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    for b in 0..blocks {
        let (mut o, mut n) = (Vec::new(), Vec::new());
        // Which goes first alternates too.
        for first_on in [b % 2 == 0, b % 2 != 0] {
            let (c, v) = if first_on {
                (&on, &mut n)
            } else {
                (&off, &mut o)
            };
            for _ in 0..50 {
                v.push(cycle(c));
            }
        }
        let d = median(&mut n).as_nanos() as i128 - median(&mut o).as_nanos() as i128;
        diffs.push(d);
        all_off.extend(o);
        all_on.extend(n);
    }
    diffs.sort();
    let (mo, mn) = (median(&mut all_off), median(&mut all_on));
    println!(
        "file prepare at N=0, in-process: image_locks=off median {mo:?} p90 {:?}; \
         best-effort median {mn:?} p90 {:?}; difference of medians {:.1} µs; median of \
         {} per-block differences {:.1} µs (middle half {:.1} .. {:.1} µs)",
        all_off[all_off.len() * 9 / 10],
        all_on[all_on.len() * 9 / 10],
        (mn.as_nanos() as f64 - mo.as_nanos() as f64) / 1000.0,
        diffs.len(),
        diffs[diffs.len() / 2] as f64 / 1000.0,
        diffs[diffs.len() / 4] as f64 / 1000.0,
        diffs[diffs.len() * 3 / 4] as f64 / 1000.0,
    );
}

#[test]
fn reconcile_ends_the_lock_with_the_loop_device() {
    require_root();
    let mut env = Env::new();
    let (img, _src) = setup(&mut env, "rec.img");
    env.domain(93, "/vm/rec");
    let be = env.backend(93, 61713, &img.display().to_string(), "w");
    let ctx = env.ctx();
    ctx.prepare(&be).unwrap();
    assert!(ofd_locks(&img) > 0);
    // The toolstack lost the backend: reconcile detaches its loop device,
    // and the lock goes with it.
    xenblock::store::Store::remove(&*env.store, xenblock::store::NO_TX, &be).unwrap();
    ctx.reconcile(Some("/local/domain/0/backend/vbd/93/61713"))
        .unwrap();
    assert!(env.loops_of(&img).is_empty());
    wait_until("the locks are gone", || ofd_locks(&img) == 0);
    let o = qemu_io_write(&img);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn audit_reports_a_qemu_writer_on_an_image_a_guest_uses() {
    require_root();
    let mut env = Env::new();
    env.domain(61, "/vm/sixty-one");
    env.domain(62, "/vm/sixty-two");
    let mine = env.image("audit-mine.img", SIZE);
    let img = env.image("audit-stock.img", SIZE);
    // A disk xenblock prepared (its loop device holds the locks), and one
    // Xen's script attached (a loop device without locks).
    let a = env.backend(61, 51712, &mine.display().to_string(), "w");
    env.ctx().prepare(&a).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let lo = xenblock::sys::loopdev::attach(&f, false, b"stock-script").unwrap();
    drop(f);
    let b = env.backend(62, 51712, &img.display().to_string(), "w");
    let node = lo.path.display().to_string();
    env.write(&format!("{b}/physical-device"), &lo.dev.to_string());
    env.write(&format!("{b}/physical-device-path"), &node);
    env.write(&format!("{b}/node"), &node);
    env.write(&format!("{b}/hotplug-status"), "connected");
    // qemu-io then writes the image guest 62 uses.
    let (out, conflict) = audit_clean_then_while_qemu_writes(&env, &img);
    assert!(
        conflict.starts_with(&format!(
            "conflict: {b} (domain 62, read-write): image locks: "
        )) && conflict.contains(&img.display().to_string())
            && conflict.contains("writes to it"),
        "{out}"
    );
    let o = xenblock_cli(&env, &["audit"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A loop device the test binds by hand (no xenblock tag, no image locks),
/// detached on drop.
struct HandLoop(PathBuf);

impl HandLoop {
    fn over(target: &Path) -> HandLoop {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(target)
            .unwrap();
        HandLoop(
            xenblock::sys::loopdev::attach(&f, false, b"by-hand")
                .unwrap()
                .path,
        )
    }
    fn shown(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for HandLoop {
    fn drop(&mut self) {
        let _ = xenblock::sys::loopdev::detach(&self.0);
    }
}

/// An image a QEMU holds is a claim of the sharing rule wherever it sits in
/// the target's stack: here under a loop device bound by hand and given as
/// a `phy` disk (no image lock of the prepare itself touches that file).
/// A writer refuses both modes, a read-only QEMU only read-write; the
/// claims index (built by the first decisions) serves those decisions.
#[test]
fn an_image_qemu_holds_under_a_loop_device_is_a_claim() {
    require_root();
    let mut env = Env::new();
    let img = env.image("under.img", SIZE);
    let lo = HandLoop::over(&img);
    env.domain(5, "/vm/a");
    let w = env.backend(5, 51712, &lo.shown(), "w");
    let r = env.backend(5, 51728, &lo.shown(), "r");
    let ctx = env.ctx();
    // Free: given (twice, so that the claims index is built).
    for _ in 0..2 {
        ctx.prepare(&w).unwrap();
        ctx.release(&w).unwrap();
        env.unprepare(&w);
    }
    let served = ctx.claims_index_stats().served;

    let q = qemu_io_holding(&img);
    for be in [&w, &r] {
        let m = prepare_err(&ctx, be).to_string();
        assert!(
            m.contains(&format!(
                "{} is a loop device over {}: {} is in use: a QEMU-compatible user writes to it \
                 (lock byte 101)",
                lo.shown(),
                img.display(),
                img.display()
            )) && m.contains("names no process"),
            "{m}"
        );
        assert_eq!(
            env.read(&format!("{be}/hotplug-status")).as_deref(),
            Some("busy")
        );
        env.unprepare(be);
    }
    drop(q);
    assert!(
        ctx.claims_index_stats().served > served,
        "the index decided: {:?}",
        ctx.claims_index_stats()
    );

    // A read-only QEMU forbids writing only.
    let q = qemu_system(&img, true);
    ctx.prepare(&r).unwrap();
    ctx.release(&r).unwrap();
    env.unprepare(&r);
    let m = prepare_err(&ctx, &w).to_string();
    assert!(
        m.contains("lets nobody else write to it (lock byte 201)"),
        "{m}"
    );
    env.unprepare(&w);
    drop(q);
    wait_until("QEMU's locks are gone", || ofd_locks(&img) == 0);
    ctx.prepare(&w).unwrap();
    ctx.release(&w).unwrap();
}

/// A virtlockd lease on an image under a loop device: a claim naming the
/// leaseholder's process. The lease (a classic POSIX write lock on byte 0,
/// as virtlockd takes it) is held by another process, as virtlockd is:
/// a process's POSIX locks go when it closes any descriptor of the file,
/// which the lock test itself does.
#[test]
fn a_lease_under_a_loop_device_is_a_claim_naming_its_process() {
    require_root();
    let mut env = Env::new();
    let img = env.image("lease-under.img", SIZE);
    let lo = HandLoop::over(&img);
    env.domain(5, "/vm/a");
    let be = env.backend(5, 51712, &lo.shown(), "r");
    let script = "use Fcntl; $| = 1; open(my $f, '+<', $ARGV[0]) or die \"open: $!\"; \
                  fcntl($f, F_SETLK, pack('s s x4 q q i x4', F_WRLCK, SEEK_SET, 0, 1, 0)) \
                  or die \"lock: $!\"; print \"locked\\n\"; sleep 60";
    let mut child = Command::new("perl")
        .args(["-e", script])
        .arg(&img)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let holder = Proc(child);
    assert_eq!(line, "locked\n");
    let ctx = env.ctx();
    let m = prepare_err(&ctx, &be).to_string();
    assert!(
        m.contains("is leased by libvirt (a virtlockd read-write lease: lock byte 0)")
            && m.contains(&format!("the lease is held by process {pid} (perl)")),
        "{m}"
    );
    drop(holder);
    env.unprepare(&be);
    ctx.prepare(&be).unwrap();
    ctx.release(&be).unwrap();
}

/// `xenblock audit` reports a disk whose stack holds an image a QEMU
/// writes: a `phy` disk on a loop device over another loop device over the
/// image (the audit checks the disk as the lower device, so the image is
/// found only as a claim in its stack).
#[test]
fn audit_reports_an_image_qemu_holds_in_a_disks_stack() {
    require_root();
    let mut env = Env::new();
    env.domain(63, "/vm/sixty-three");
    let img = env.image("audit-under.img", SIZE);
    let lower = HandLoop::over(&img);
    let upper = HandLoop::over(&lower.0);
    let b = env.backend(63, 51712, &upper.shown(), "w");
    env.ctx().prepare(&b).unwrap();
    let (out, conflict) = audit_clean_then_while_qemu_writes(&env, &img);
    assert!(
        conflict.starts_with(&format!(
            "conflict: {b} (domain 63, read-write): image locks: "
        )) && conflict.contains(&format!(
            "is a loop device over {}: {} is in use: a QEMU-compatible user writes to it",
            img.display(),
            img.display()
        )),
        "{out}"
    );
    env.ctx().release(&b).unwrap();
    drop(upper);
}

/// The C field (ABI 1.3): `xenblock_config.image_locks` reaches the
/// context. 0 takes the locks, `XENBLOCK_IMAGE_LOCKS_OFF` takes none, a
/// 1.2-sized struct gets the default whatever lies beyond it, and an
/// unknown value is refused naming it.
#[test]
fn the_c_config_field_sets_image_locks() {
    use std::ffi::{CStr, CString};
    use xenblock::ffi::xenblock_image_locks::*;
    use xenblock::ffi::xenblock_status::*;
    use xenblock::ffi::*;
    require_root();
    let mut env = Env::new();
    let img = env.image("c-field.img", SIZE);
    env.domain(5, "/vm/a");
    let lock_dir = CString::new(env.dir.join("lock").to_str().unwrap()).unwrap();
    std::env::set_var("XENSTORED_PATH", &env.sock);
    let cfg = |image_locks: u32, abi_size: usize| xenblock_config {
        abi_size: abi_size as u32,
        lock_dir: lock_dir.as_ptr(),
        image_locks,
        ..Default::default()
    };
    let full = std::mem::size_of::<xenblock_config>();
    let v12 = std::mem::offset_of!(xenblock_config, image_locks);
    for (value, size, locks) in [
        (XENBLOCK_IMAGE_LOCKS_DEFAULT as u32, full, true),
        (XENBLOCK_IMAGE_LOCKS_OFF as u32, full, false),
        (XENBLOCK_IMAGE_LOCKS_OFF as u32, v12, true),
    ] {
        let c = cfg(value, size);
        let mut ctx: *mut xenblock_ctx = std::ptr::null_mut();
        // SAFETY: a complete config, at least `size` bytes; ctx receives it.
        assert_eq!(unsafe { xenblock_ctx_new(&c, &mut ctx) }, XENBLOCK_OK);
        let be = env.backend(5, 51712, &img.display().to_string(), "w");
        let cbe = CString::new(be.clone()).unwrap();
        // SAFETY: a live context and a NUL-terminated path.
        assert_eq!(unsafe { xenblock_prepare(ctx, cbe.as_ptr()) }, XENBLOCK_OK);
        assert_eq!(
            ofd_locks(&img) > 0,
            locks,
            "image_locks {value} with abi_size {size}"
        );
        // SAFETY: as above; then the context is freed once.
        unsafe {
            assert_eq!(xenblock_release(ctx, cbe.as_ptr()), XENBLOCK_OK);
            xenblock_ctx_free(ctx);
        }
        env.unprepare(&be);
        wait_until("the locks are gone", || ofd_locks(&img) == 0);
    }
    let c = cfg(7, full);
    let mut ctx: *mut xenblock_ctx = std::ptr::null_mut();
    // SAFETY: a complete config; ctx receives the context (none here).
    assert_eq!(
        unsafe { xenblock_ctx_new(&c, &mut ctx) },
        XENBLOCK_INVALID_ARGUMENT
    );
    assert!(ctx.is_null());
    // SAFETY: the thread's last error, a NUL-terminated string.
    let m = unsafe { CStr::from_ptr(xenblock_last_error()) }.to_string_lossy();
    assert!(
        m.contains("image_locks is 7; expected 0 (default: best-effort), 1 (required), 2 (best-effort) or 3 (off)"),
        "{m}"
    );
}
