//! Holders only the kernel knows (issue 25, items 1 and 2), end to end
//! against the embedded xenstored with real loop devices, filesystems and
//! mount namespaces:
//!
//! - the members of a btrfs mounted read-write (mountinfo shows an
//!   anonymous `0:N`), an ext4's external journal, an XFS log device, and a
//!   filesystem mounted in another mount namespace are refused read-write:
//!   the kernel is asked with an `O_EXCL` open;
//! - a loop device over a block device is stacked on it: the two are not
//!   given read-write to two guests, and the device is not given read-write
//!   while a filesystem on the loop device is mounted.
//!
//! Needs root, mkfs.btrfs (btrfs-progs), mkfs.xfs (xfsprogs), mke2fs,
//! unshare: fails, never skips, without them. Every mount, namespace
//! process and loop device a test makes is undone by a guard.

mod common;

use common::{require_root, Env};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use xenblock::ErrorKind;

const DEVID: u32 = 51712;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} must be installed: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loop device over a sparse image of `size` bytes, detached by the
/// environment's guard.
fn disk(env: &mut Env, name: &str, size: u64) -> PathBuf {
    let img = env.image(name, size);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    xenblock::sys::loopdev::attach(&f, false, b"xenblock-test-kernel")
        .unwrap()
        .path
}

/// A mount in this namespace for the life of the guard.
struct Mounted(PathBuf);
impl Mounted {
    fn new(env: &Env, dev: &Path, name: &str, opts: &[&str]) -> Mounted {
        let dir = env.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<&str> = opts.to_vec();
        args.push(dev.to_str().unwrap());
        args.push(dir.to_str().unwrap());
        run("mount", &args);
        Mounted(dir)
    }
}
impl Drop for Mounted {
    fn drop(&mut self) {
        // Loop devices left over files under the mount (a failed test's
        // attaches) would keep it busy.
        if let Ok(rd) = std::fs::read_dir("/sys/block") {
            for e in rd.flatten() {
                let backing = std::fs::read_to_string(e.path().join("loop/backing_file"));
                if backing.is_ok_and(|b| Path::new(b.trim()).starts_with(&self.0)) {
                    let _ = xenblock::sys::loopdev::detach(&Path::new("/dev").join(e.file_name()));
                }
            }
        }
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A process in a mount namespace of its own that keeps `dev` mounted
/// (invisible from ours) until the guard kills it.
struct OtherNamespace(Child);
impl OtherNamespace {
    fn mount(env: &Env, dev: &Path) -> OtherNamespace {
        let dir = env.dir.join("ns-mnt");
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount {} {} && echo ready && exec sleep 600",
                dev.display(),
                dir.display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) must be installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "mount in another namespace failed");
        OtherNamespace(child)
    }
}
impl Drop for OtherNamespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Refused as busy, with every needle in the message (and hotplug-error).
fn refused(env: &Env, ctx: &xenblock::Context, be: &str, needles: &[&str]) -> String {
    let e = ctx.prepare(be).expect_err("must be refused");
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    let msg = e.to_string();
    eprintln!("refused: {msg}");
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in: {msg}");
    }
    assert_eq!(
        env.read(&format!("{be}/hotplug-error")).as_deref(),
        Some(msg.as_str())
    );
    assert_eq!(env.read(&format!("{be}/physical-device")), None);
    msg
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn btrfs_members_mounted_read_write_are_refused() {
    require_root();
    let mut env = Env::new();
    let a = disk(&mut env, "btrfs-a.img", 256 << 20);
    let b = disk(&mut env, "btrfs-b.img", 256 << 20);
    run(
        "mkfs.btrfs",
        &[
            "-q",
            "-f",
            "-d",
            "raid1",
            "-m",
            "raid1",
            &shown(&a),
            &shown(&b),
        ],
    );
    run("btrfs", &["device", "scan", &shown(&a), &shown(&b)]);
    let m = Mounted::new(&env, &a, "btrfs-mnt", &[]);
    env.domain(9, "/vm/b");
    let ctx = env.ctx();
    // The named source: refused even read-only (mounted read-write), as
    // Xen's script refuses it.
    let be = env.backend(9, DEVID, &shown(&a), "r");
    refused(&env, &ctx, &be, &["mounted read-write", &shown(&m.0)]);
    let be = env.backend(9, DEVID + 1, &shown(&a), "w");
    refused(&env, &ctx, &be, &["mounted read-write", &shown(&m.0)]);
    // The second member, named nowhere in mountinfo: the kernel says.
    let be = env.backend(9, DEVID + 2, &shown(&b), "w");
    refused(
        &env,
        &ctx,
        &be,
        &[
            "a device of the mounted btrfs filesystem",
            "Release it in dom0",
        ],
    );
    // Its image file, through the loop device: the same.
    let img = env.dir.join("btrfs-b.img");
    let be = env.backend(9, DEVID + 3, &shown(&img), "w");
    refused(&env, &ctx, &be, &["btrfs"]);
    drop(m);
    // Unmounted: given.
    let be = env.backend(9, DEVID + 4, &shown(&b), "w");
    ctx.prepare(&be).expect("free once unmounted");
    ctx.release(&be).unwrap();
}

#[test]
fn external_journal_and_log_devices_are_refused() {
    require_root();
    let mut env = Env::new();
    // ext4 with its journal on another device.
    let j = disk(&mut env, "journal.img", 16 << 20);
    let e = disk(&mut env, "ext4.img", 64 << 20);
    run(
        "mke2fs",
        &["-q", "-F", "-O", "journal_dev", "-b", "4096", &shown(&j)],
    );
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-J",
            &format!("device={}", shown(&j)),
            &shown(&e),
        ],
    );
    // XFS with an external log.
    let l = disk(&mut env, "xfslog.img", 80 << 20);
    let x = disk(&mut env, "xfs.img", 320 << 20);
    run(
        "mkfs.xfs",
        &[
            "-q",
            "-f",
            "-l",
            &format!("logdev={},size=64m", shown(&l)),
            &shown(&x),
        ],
    );
    let _me = Mounted::new(&env, &e, "ext4-mnt", &[]);
    let logdev = format!("logdev={}", shown(&l));
    let mx = Mounted::new(&env, &x, "xfs-mnt", &["-o", &logdev]);
    env.domain(9, "/vm/b");
    let ctx = env.ctx();
    let be = env.backend(9, DEVID, &shown(&j), "w");
    refused(
        &env,
        &ctx,
        &be,
        &["external journal of a mounted ext3/ext4 filesystem"],
    );
    let be = env.backend(9, DEVID + 1, &shown(&l), "w");
    refused(
        &env,
        &ctx,
        &be,
        &[
            "logdev device of the xfs filesystem mounted read-write at",
            &shown(&mx.0),
        ],
    );
    // Read-only requests are decided on what dom0 shows, as before: the
    // journal is not a mount.
    let be = env.backend(9, DEVID + 2, &shown(&j), "r");
    ctx.prepare(&be).expect("read-only: not asked");
    ctx.release(&be).unwrap();
}

#[test]
fn a_mount_in_another_namespace_is_refused() {
    require_root();
    let mut env = Env::new();
    let d = disk(&mut env, "ns.img", 32 << 20);
    run("mke2fs", &["-q", "-F", "-t", "ext4", &shown(&d)]);
    let ns = OtherNamespace::mount(&env, &d);
    let dev = std::fs::metadata(&d).unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let num = {
        use std::os::unix::fs::MetadataExt;
        format!(" {}:{} ", libc::major(dev.rdev()), libc::minor(dev.rdev()))
    };
    assert!(
        !mountinfo.contains(&num),
        "the mount must be invisible here"
    );
    env.domain(9, "/vm/b");
    let ctx = env.ctx();
    let be = env.backend(9, DEVID, &shown(&d), "w");
    refused(
        &env,
        &ctx,
        &be,
        &["held open exclusively by the kernel (a mount in another mount namespace"],
    );
    // The image under it, as a file: through the loop device.
    let img = env.dir.join("ns.img");
    let be = env.backend(9, DEVID + 1, &shown(&img), "w");
    refused(
        &env,
        &ctx,
        &be,
        &["is the backing file of", "held open exclusively"],
    );
    assert_eq!(env.loops_of(&img).len(), 1, "only the test's own");
    drop(ns);
    let be = env.backend(9, DEVID + 2, &shown(&d), "w");
    // The namespace's mount goes with its last process, asynchronously.
    let mut tries = 0;
    loop {
        match ctx.prepare(&be) {
            Ok(_) => break,
            Err(e) if tries < 100 => {
                let _ = e;
                env.unprepare(&be);
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("still refused after the namespace ended: {e}"),
        }
    }
    ctx.release(&be).unwrap();
}

/// A loop device over the block device `x` (`losetup /dev/X`), detached by
/// the guard.
struct LoopOver(PathBuf);
impl LoopOver {
    fn new(x: &Path) -> LoopOver {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(x)
            .unwrap();
        LoopOver(
            xenblock::sys::loopdev::attach(&f, false, b"xenblock-test-loop-over-dev")
                .unwrap()
                .path,
        )
    }
}
impl Drop for LoopOver {
    fn drop(&mut self) {
        let _ = xenblock::sys::loopdev::detach(&self.0);
    }
}

#[test]
fn a_loop_device_over_a_block_device_is_stacked_on_it() {
    require_root();
    let mut env = Env::new();
    let x = disk(&mut env, "x.img", 32 << 20);
    let l = LoopOver::new(&x);
    env.domain(5, "/vm/a");
    env.domain(9, "/vm/b");
    let ctx = env.ctx();
    // X to one guest read-write: its loop device is refused to another...
    let bx = env.backend(5, DEVID, &shown(&x), "w");
    ctx.prepare(&bx).expect("X alone");
    let be = env.backend(9, DEVID, &shown(&l.0), "w");
    refused(
        &env,
        &ctx,
        &be,
        &[
            &format!("{} is a loop device over {}", shown(&l.0), shown(&x)),
            "domain 5",
        ],
    );
    // ...even read-only.
    let be = env.backend(9, DEVID + 1, &shown(&l.0), "r");
    refused(&env, &ctx, &be, &["domain 5"]);
    ctx.release(&bx).unwrap();
    env.unprepare(&bx);
    // The other way round.
    let bl = env.backend(5, DEVID + 1, &shown(&l.0), "w");
    ctx.prepare(&bl).expect("the loop device alone");
    let be = env.backend(9, DEVID + 2, &shown(&x), "w");
    refused(
        &env,
        &ctx,
        &be,
        &[
            &format!("{} is the backing file of {}", shown(&x), shown(&l.0)),
            "domain 5",
        ],
    );
    // The image file under X, two levels down.
    let img = env.dir.join("x.img");
    let be = env.backend(9, DEVID + 3, &shown(&img), "w");
    refused(&env, &ctx, &be, &["domain 5"]);
    ctx.release(&bl).unwrap();
    env.unprepare(&bl);
    // A filesystem on the loop device, mounted read-write in dom0.
    run("mke2fs", &["-q", "-F", "-t", "ext4", &shown(&l.0)]);
    let m = Mounted::new(&env, &l.0, "loop-over-mnt", &[]);
    let be = env.backend(9, DEVID + 4, &shown(&x), "w");
    refused(&env, &ctx, &be, &["mounted read-write", &shown(&m.0)]);
    let be = env.backend(9, DEVID + 5, &shown(&x), "r");
    refused(&env, &ctx, &be, &["mounted read-write", &shown(&m.0)]);
    drop(m);
    let be = env.backend(9, DEVID + 6, &shown(&x), "r");
    ctx.prepare(&be).expect("read-only once unmounted");
    ctx.release(&be).unwrap();
}

#[test]
fn one_image_through_overlayfs_and_its_lower_directory() {
    require_root();
    let mut env = Env::new();
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(env.dir.join(d)).unwrap();
    }
    let lower = env.image("lower/img", 8 << 20);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        shown(&env.dir.join("lower")),
        shown(&env.dir.join("upper")),
        shown(&env.dir.join("work"))
    );
    // `Mounted` mounts its first argument on a directory of its own name.
    let m = Mounted::new(
        &env,
        Path::new("overlay"),
        "merged",
        &["-t", "overlay", "-o", &opts],
    );
    let merged = m.0.join("img");
    let (a, b) = (
        std::fs::metadata(&lower).unwrap(),
        std::fs::metadata(&merged).unwrap(),
    );
    {
        use std::os::unix::fs::MetadataExt;
        assert_ne!((a.dev(), a.ino()), (b.dev(), b.ino()), "two identities");
    }
    env.domain(5, "/vm/a");
    env.domain(9, "/vm/b");
    let ctx = env.ctx();
    // The lower file read-write to one guest: the merged path is refused
    // to another, even read-only.
    let bl = env.backend(5, DEVID, &shown(&lower), "w");
    ctx.prepare(&bl).expect("the lower file alone");
    let be = env.backend(9, DEVID, &shown(&merged), "r");
    refused(&env, &ctx, &be, &["domain 5", "overlayfs"]);
    ctx.release(&bl).unwrap();
    env.unprepare(&bl);
    // The merged path (read-only: no copy-up) to one guest: the lower file
    // is refused read-write to another.
    let bm = env.backend(5, DEVID + 1, &shown(&merged), "r");
    ctx.prepare(&bm).expect("the merged path alone");
    let be = env.backend(9, DEVID + 1, &shown(&lower), "w");
    refused(&env, &ctx, &be, &["domain 5"]);
    // Read-only on both sides stays shared.
    let be = env.backend(9, DEVID + 2, &shown(&lower), "r");
    ctx.prepare(&be).expect("read-only sharing");
    ctx.release(&be).unwrap();
    env.unprepare(&be);
    ctx.release(&bm).unwrap();
    env.unprepare(&bm);
    assert!(
        !env.dir.join("upper/img").exists(),
        "no copy-up happened: the two paths stayed one file"
    );
    drop(m);
}
