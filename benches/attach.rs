//! `cargo bench --bench attach` (run as root): prepare+release latency of a
//! phy target (a loop device the bench makes) and of a file target (loop
//! attach included), with N other disks already in xenstore, through
//!
//! - `rust`:   the library in-process (one shared `Context`, claims index
//!   on), and `rust-scan` the same with the index off,
//! - `cli`:    the `xenblock` binary, one process per call (as a toolstack
//!   that forks would see it): `xenblock prepare|release BACKEND`,
//! - `dropin`: the same binary as Xen's script is run: `xenblock hotplug
//!   add|remove` with libxl's environment (what `xenblock enable` installs),
//! - `script`: Xen's own Linux `block` script (Debian's Xen 4.17 packages via
//!   `scripts/xen-debs.sh`), run as libxl runs it,
//!
//! all against one embedded xenstored (`xenblock-xenstored`). Then: 64
//! attaches from 8 threads sharing a `Context`, the CLI's peak RSS, and the
//! library's RSS over 10 000 prepare/release cycles.
//!
//! Prints a table and writes `bench/results/attach.{csv,json}` (quick mode:
//! `attach-quick.*`). `python3 bench/plot.py` turns the CSV into the PNG.
//!
//! Environment:
//! - `XENBLOCK_BENCH_QUICK=1`   smoke run: few iterations, N up to 1000
//! - `XENBLOCK_BENCH_SCRIPT=0`  skip Xen's script
//! - `XENBLOCK_BENCH_OUT=DIR`   where results go (default `bench/results`)
//! - `XENBLOCK_BENCH_XENSTORED=SOCKET` measure against that (real) xenstored
//!   instead of the embedded one: a dom0 with no guest and no vbd backend
//!   (refused otherwise); the bench's nodes are removed afterwards; no
//!   script, no memory runs; results as `attach-realxen.*`
//!   (`tests/realxen/bench-attach.sh` runs it in the real-Xen VM)
//! - `XENBLOCK_BENCH_CLI=PATH`  the CLI to measure (default: the one built)
//! - `XENBLOCK_BENCH_NS=0,1000` the numbers of other disks to measure at
//! - `XENBLOCK_IMAGE_LOCKS=off` image locks off (the A/B of their cost;
//!   default best-effort), in-process and, inherited, in the CLI
//! - `XENBLOCK_BENCH_SCRATCH=DIR` where images go (default: the temp dir)
//! - `XENBLOCK_BENCH_PROFILE=N` only loop in-process phy prepare at N for 10 s
//!   (for `perf record`); `XENBLOCK_BENCH_PROFILE_SCAN=1` with the index off,
//!   `XENBLOCK_BENCH_PROFILE_CLI=1` the CLI instead (one process per call;
//!   `=dropin` the drop-in; with `XENBLOCK_BENCH_CLI_B=PATH` alternating
//!   blocks of the CLI and that one, compared block by block),
//!   `XENBLOCK_BENCH_PROFILE_SECS=S` for S seconds
//! - `XENBLOCK_BENCH_INDEX_MEMORY=N:C` only the indexed context's RSS at N
//!   other disks over C cycles
//! - `XENBLOCK_DEBS_ROOT=DIR`   unpacked Debian Xen packages (default: run
//!   `scripts/xen-debs.sh`)
//!
//! Every loop device the bench (or the code it drives) binds to one of its
//! image files is detached by a guard on the way out, panics included; no
//! other loop device is touched.

#[path = "../tests/common/xsd.rs"]
mod xsd;

mod common;
use common::write_many;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use xenblock::store::client::XsClient;
use xenblock::store::{Store, NO_TX};
use xenblock::{Config, Context, Prepared};

/// The CLI measured: the one built with the bench, or `XENBLOCK_BENCH_CLI`
/// (where the build tree is elsewhere, as in the real-Xen VM's dom0).
fn cli_path() -> PathBuf {
    std::env::var_os("XENBLOCK_BENCH_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| xsd::exe("xenblock"))
}
const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The guest whose disks are measured, and its two backends.
const DOM: u32 = 5;
const PHY_BE: &str = "backend/vbd/5/51712";
const FILE_BE: &str = "backend/vbd/5/51728";
/// Other guests: four disks each, from this domid up.
const OTHER_DOM0: u32 = 100;
const DISKS_PER_DOM: u32 = 4;

// ---------------------------------------------------------------------------
// Guards

/// The xenstored measured against, and the bench's scratch directory.
/// Embedded: `xenblock-xenstored` on a private socket in the scratch
/// directory (stopped, and the directory removed, when dropped). External
/// (`XENBLOCK_BENCH_XENSTORED=SOCKET`, a dom0's real xenstored): what the
/// bench wrote into it is removed when dropped.
struct Xenstored {
    dir: PathBuf,
    socket: PathBuf,
    embedded: Option<xsd::Daemon>,
    /// External: the process serving `socket`, if found (for its CPU time).
    external_pid: Option<u32>,
}

impl Xenstored {
    fn pid(&self) -> Option<u32> {
        match &self.embedded {
            Some(d) => Some(d.pid() as u32),
            None => self.external_pid,
        }
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        if self.embedded.is_none() {
            // Everything under these roots except domain 0 is the bench's:
            // it refused to start unless that was so.
            if let Ok(c) = XsClient::connect(&self.socket, Duration::from_secs(60)) {
                for root in ["backend/vbd", "/local/domain"] {
                    for d in c.directory(NO_TX, root).ok().flatten().unwrap_or_default() {
                        if d != "0" {
                            let _ = c.remove(NO_TX, &format!("{root}/{d}"));
                        }
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn start_xenstored() -> Xenstored {
    let base = std::env::var_os("XENBLOCK_BENCH_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("xenblock-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(sock) = std::env::var_os("XENBLOCK_BENCH_XENSTORED") {
        let socket = PathBuf::from(sock);
        let c = XsClient::connect(&socket, Duration::from_secs(60)).unwrap_or_else(|e| {
            panic!(
                "cannot connect to the xenstored at {}: {e}",
                socket.display()
            )
        });
        // The bench writes backends of domains 5, 20.. and 100.. and removes
        // them afterwards: only on a host with no guest and no backend.
        let doms = c
            .directory(NO_TX, "/local/domain")
            .unwrap()
            .unwrap_or_default();
        let vbds = c
            .directory(NO_TX, "backend/vbd")
            .unwrap()
            .unwrap_or_default();
        if !(doms.iter().all(|d| d == "0") && vbds.is_empty()) {
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "the external xenstored has guests ({doms:?}) or vbd backends ({vbds:?}); \
                 the bench needs a dom0 with neither, as it writes and removes its own"
            );
        }
        let external_pid = pid_serving(&socket)
            .or_else(|| pid_of("xenstored"))
            .or_else(|| pid_of("oxenstored"));
        return Xenstored {
            dir,
            socket,
            embedded: None,
            external_pid,
        };
    }
    let d = xsd::Daemon::start_at(dir.clone(), dir.join("xs.sock"));
    Xenstored {
        dir,
        socket: d.socket.clone(),
        embedded: Some(d),
        external_pid: None,
    }
}

/// The pid of a process started with `socket` among its arguments.
fn pid_serving(socket: &Path) -> Option<u32> {
    let want = socket.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        (pid != std::process::id() && cmd.split(|&b| b == 0).any(|a| a == want)).then_some(pid)
    })
}

/// The pid of a process whose `comm` is `name`.
fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

fn client(xs: &Xenstored) -> Arc<XsClient> {
    Arc::new(XsClient::connect(&xs.socket, Duration::from_secs(60)).unwrap())
}

/// The bench's private hotplug lock directory (never the host's). A dom0's
/// real one, `/var/run/xen-hotplug`, is on tmpfs (`/run`), and every attach
/// creates and removes the lock file in it (as Xen's `locking.sh` does): on
/// a disk filesystem that is an inode allocation, a block freed and perhaps
/// a discard per attach, which is not what a dom0 pays. So the bench's lives
/// on tmpfs too (`/run` or `/dev/shm`), or in the scratch directory if
/// there is none.
struct LockDir(PathBuf);

impl LockDir {
    fn new(scratch: &Path) -> LockDir {
        let tmpfs = ["/run", "/dev/shm"].into_iter().map(Path::new).find(|p| {
            nix::sys::statfs::statfs(*p)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        });
        let dir = match tmpfs {
            Some(t) => t.join(format!("xenblock-bench-lock-{}", std::process::id())),
            None => scratch.join("lock"),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        LockDir(dir)
    }
}

impl Drop for LockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bench's image files. On drop, every loop device backed by one of them
/// is detached — whoever bound it (the bench, xenblock, `losetup` in Xen's
/// script) — and nothing else.
#[derive(Default)]
struct Images {
    files: Vec<(PathBuf, u64, u64)>,
}

impl Images {
    fn create(&mut self, path: &Path, size: u64) -> PathBuf {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(size).unwrap();
        let st = xenblock::sys::stat::stat(path).unwrap();
        self.files.push((path.to_path_buf(), st.dev, st.ino));
        path.to_path_buf()
    }

    fn detach_all(&self) -> usize {
        let mut n = 0;
        if let Ok(all) = xenblock::sys::loopdev::list() {
            for l in all {
                if self.files.iter().any(|(_, d, i)| l.is_backed_by(*d, *i))
                    && xenblock::sys::loopdev::detach(&l.path).is_ok()
                {
                    n += 1;
                }
            }
        }
        n
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let n = self.detach_all();
        if n > 0 {
            eprintln!("bench cleanup: detached {n} loop device(s) left on bench images");
        }
    }
}

// ---------------------------------------------------------------------------
// Measurements

#[derive(Clone, Debug)]
struct Row {
    imp: &'static str,
    target: &'static str,
    n: u32,
    prepare: Vec<Duration>,
    release: Vec<Duration>,
    /// Peak RSS (KiB) of the measured child processes, CLI/script only.
    max_rss_kb: Option<i64>,
    /// Failed attempts that were retried (Xen's script only).
    failures: u32,
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Row {
    fn cycles(&self) -> Vec<Duration> {
        self.prepare
            .iter()
            .zip(&self.release)
            .map(|(a, b)| *a + *b)
            .collect()
    }
    fn prep_med(&self) -> f64 {
        us(percentile(&self.prepare, 50.0))
    }
}

/// Run a child to completion; its wall time and its own rusage (wait4).
fn run_child(mut cmd: Command) -> (Duration, libc::rusage, bool, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut stderr = child.stderr.take().unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Read stderr after the exit: it is small (a line on failure).
    let pid = child.id() as libc::pid_t;
    // SAFETY: pid is our unreaped child; status and ru point to valid memory.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let elapsed = t.elapsed();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
    std::mem::forget(child); // already reaped
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (elapsed, ru, ok, err)
}

/// The peak RSS (kB) of `cmd` itself, run once under `/usr/bin/time`.
/// `wait4`'s `ru_maxrss` for a child spawned from this (large) process is
/// not its own: `exec` records the high-water mark of the memory the
/// child shared with the parent until then, i.e. the bench's. A child of
/// `time` (a small process) does not carry that. `None` without `time`.
fn peak_rss_kb(cmd: &Command) -> Option<i64> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let out = std::env::temp_dir().join(format!("xenblock-bench-rss-{}", std::process::id()));
    let mut c = Command::new(time);
    c.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&out)
        .arg(cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let (_, _, ok, _) = run_child(c);
    let kb = std::fs::read_to_string(&out).ok()?.trim().parse().ok();
    let _ = std::fs::remove_file(&out);
    ok.then_some(kb).flatten()
}

// ---------------------------------------------------------------------------
// xenstore contents

struct Bench {
    xs: Xenstored,
    store: Arc<XsClient>,
    /// The long-lived context: its own connection, the claims index on.
    ctx: Arc<Context>,
    /// The same with the index off: the full scan on every decision.
    ctx_scan: Arc<Context>,
    lock_dir: PathBuf,
    /// Guard: removes the lock directory when dropped.
    _lock_guard: LockDir,
    /// Guard: detaches loop devices on the bench's images when dropped.
    _images: Images,
    phy_dev: PathBuf,
    file_img: PathBuf,
    script: Option<Script>,
    others: u32,
    /// Other disks get only the nodes a decision reads (a real xenstored
    /// under TCG takes minutes for libxl's full set at 10 000 disks).
    lean: bool,
}

/// The nodes libxl writes for a disk, plus what a connected hotplug left.
fn backend_nodes(
    kv: &mut Vec<(String, String)>,
    be: &str,
    domid: u32,
    devid: u32,
    params: &str,
    mode: &str,
) {
    let fe = format!("/local/domain/{domid}/device/vbd/{devid}");
    for (k, v) in [
        ("frontend", fe.as_str()),
        ("params", params),
        ("script", "/etc/xen/scripts/block"),
        ("frontend-id", &domid.to_string()),
        ("online", "1"),
        ("removable", "0"),
        ("bootable", "1"),
        ("dev", "xvda"),
        ("type", "phy"),
        ("mode", mode),
        ("device-type", "disk"),
        ("discard-enable", "0"),
    ] {
        kv.push((format!("{be}/{k}"), v.to_string()));
    }
}

impl Bench {
    /// Add other guests' connected disks until there are `n`.
    fn populate(&mut self, n: u32) {
        let t = Instant::now();
        let mut kv = Vec::new();
        for i in self.others..n {
            let dom = OTHER_DOM0 + i / DISKS_PER_DOM;
            let dev = 51712 + 16 * (i % DISKS_PER_DOM);
            let be = format!("backend/vbd/{dom}/{dev}");
            if i % DISKS_PER_DOM == 0 {
                kv.push((
                    format!("/local/domain/{dom}/vm"),
                    format!("/vm/other-{dom}"),
                ));
                kv.push((format!("/local/domain/{dom}/name"), format!("guest{dom}")));
            }
            let mode = if i % 2 == 0 { "w" } else { "r" };
            if self.lean {
                // What a decision reads of another disk, and little more.
                for (k, v) in [
                    ("params", format!("/dev/fake/disk{i}")),
                    ("mode", mode.to_string()),
                    ("frontend-id", dom.to_string()),
                ] {
                    kv.push((format!("{be}/{k}"), v));
                }
            } else {
                backend_nodes(&mut kv, &be, dom, dev, &format!("/dev/fake/disk{i}"), mode);
            }
            kv.push((format!("{be}/state"), "4".into()));
            kv.push((format!("{be}/physical-device"), format!("fe:{i:x}")));
            kv.push((
                format!("{be}/physical-device-path"),
                format!("/dev/fake/disk{i}"),
            ));
            kv.push((format!("{be}/hotplug-status"), "connected".into()));
        }
        let writes = kv.len();
        if self.lean {
            // A real xenstored queues the watch events of these writes for
            // the indexed context until it next reads them: let it read
            // them every few thousand writes, as a toolstack deciding now
            // and then would (without this, Xen 4.17's xenstored under TCG
            // once left a populate write unanswered for over 60 s).
            for chunk in kv.chunks(3_000) {
                write_many(&self.store, chunk);
                if self.ctx.claims_index_stats().builds > 0 {
                    let _ = self.rust("phy", 1);
                }
            }
        } else {
            write_many(&self.store, &kv);
        }
        if n > self.others {
            eprintln!(
                "  populated {} -> {n} other disks: {writes} pipelined writes in {:.0} ms",
                self.others,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        self.others = n;
    }

    /// Undo what a prepare wrote, as if libxl had made the backend afresh.
    fn reset(&self, be: &str) {
        common::unprepare(&self.store, be);
    }

    fn check_connected(&self, be: &str, what: &str) {
        let s = self
            .store
            .read(NO_TX, &format!("{be}/hotplug-status"))
            .unwrap()
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        if s.as_deref() != Some("connected") {
            let e = self
                .store
                .read(NO_TX, &format!("{be}/hotplug-error"))
                .unwrap()
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            panic!("{what}: {be}: hotplug-status {s:?}, hotplug-error {e:?}");
        }
    }

    fn be_of(target: &str) -> &'static str {
        if target == "phy" {
            PHY_BE
        } else {
            FILE_BE
        }
    }

    fn rust(&self, target: &'static str, iters: usize) -> Row {
        self.rust_on(&self.ctx, "rust", target, iters)
    }

    fn rust_on(&self, ctx: &Context, imp: &'static str, target: &'static str, iters: usize) -> Row {
        let be = Self::be_of(target);
        let mut row = Row {
            imp,
            target,
            n: self.others,
            prepare: vec![],
            release: vec![],
            max_rss_kb: None,
            failures: 0,
        };
        for _ in 0..iters {
            let t = Instant::now();
            let r = ctx.prepare(be);
            let dp = t.elapsed();
            match r {
                Ok(Prepared::Connected { .. }) => {}
                other => panic!("rust prepare {be}: {other:?}"),
            }
            let t = Instant::now();
            ctx.release(be).unwrap();
            let dr = t.elapsed();
            row.prepare.push(dp);
            row.release.push(dr);
            self.reset(be);
        }
        row
    }

    /// `imp` "cli": `xenblock prepare|release --lock-dir DIR BACKEND`;
    /// "dropin": `xenblock hotplug add|remove --lock-dir DIR` with the
    /// environment libxl gives Xen's script (the script row's invocation).
    fn cli(&self, imp: &'static str, target: &'static str, iters: usize) -> Row {
        let be = Self::be_of(target);
        let mut row = Row {
            imp,
            target,
            n: self.others,
            prepare: vec![],
            release: vec![],
            max_rss_kb: None,
            failures: 0,
        };
        let cmd = |op: &str| {
            let mut c = Command::new(cli_path());
            if imp == "dropin" {
                c.arg("hotplug")
                    .arg(if op == "prepare" { "add" } else { "remove" })
                    .arg("--lock-dir")
                    .arg(&self.lock_dir)
                    .env("XENBUS_TYPE", "vbd")
                    .env("XENBUS_PATH", be)
                    .env("XENBUS_BASE_PATH", "backend");
            } else {
                c.arg(op).arg("--lock-dir").arg(&self.lock_dir).arg(be);
            }
            c.env("XENSTORED_PATH", &self.xs.socket);
            c
        };
        for _ in 0..iters {
            let (dp, _, ok, err) = run_child(cmd("prepare"));
            assert!(ok, "xenblock ({imp}) prepare {be}: {err}");
            self.check_connected(be, imp);
            let (dr, _, ok, err) = run_child(cmd("release"));
            assert!(ok, "xenblock ({imp}) release {be}: {err}");
            row.prepare.push(dp);
            row.release.push(dr);
            self.reset(be);
        }
        // Peak memory: one more prepare and release, each under `time`.
        if let Some(p) = peak_rss_kb(&cmd("prepare")) {
            self.check_connected(be, imp);
            let r = peak_rss_kb(&cmd("release"));
            row.max_rss_kb = r.map(|r| p.max(r));
        }
        self.reset(be);
        row
    }

    fn script(&self, target: &'static str, iters: usize) -> Option<Row> {
        let s = self.script.as_ref()?;
        let be = Self::be_of(target);
        let mut row = Row {
            imp: "script",
            target,
            n: self.others,
            prepare: vec![],
            release: vec![],
            max_rss_kb: None,
            failures: 0,
        };
        let mut failures = 0;
        while row.prepare.len() < iters {
            let (dp, _, ok, err) = run_child(s.cmd("add", be, &self.xs.socket));
            if !ok {
                // The script's `losetup -f` + `losetup DEV FILE` races with
                // anyone else binding loop devices (EBUSY); count and retry.
                failures += 1;
                eprintln!("  script add {be} failed ({failures}): {err}; see /var/log/xen/xen-hotplug.log");
                assert!(failures <= 5, "block add {be} keeps failing");
                let _ = run_child(s.cmd("remove", be, &self.xs.socket));
                self.reset(be);
                continue;
            }
            self.check_connected(be, "script");
            let (dr, _, ok, err) = run_child(s.cmd("remove", be, &self.xs.socket));
            assert!(ok, "block remove {be}: {err}");
            row.prepare.push(dp);
            row.release.push(dr);
            self.reset(be);
        }
        // Peak memory: one more add and remove, each under `time` (the
        // script and every command it runs).
        let p = peak_rss_kb(&s.cmd("add", be, &self.xs.socket));
        let r = peak_rss_kb(&s.cmd("remove", be, &self.xs.socket));
        if p.is_none() || r.is_none() {
            // Not measured (or the add failed): leave nothing behind.
            let _ = run_child(s.cmd("remove", be, &self.xs.socket));
        }
        self.reset(be);
        row.max_rss_kb = p.zip(r).map(|(p, r)| p.max(r));
        row.failures = failures;
        // The script's remove must have detached its loop device.
        if target == "file" {
            let st = xenblock::sys::stat::stat(&self.file_img).unwrap();
            let left = xenblock::sys::loopdev::backed_by(st.dev, st.ino).unwrap();
            assert!(left.is_empty(), "block remove left {left:?}");
        }
        Some(row)
    }
}

// ---------------------------------------------------------------------------
// Xen's script, run as libxl runs it

struct Script {
    block: PathBuf,
    debs: PathBuf,
}

impl Script {
    /// Copy Debian's scripts dir and point its lock at `lock_dir`.
    fn setup(dir: &Path, lock_dir: &Path) -> Result<Script, String> {
        let debs = match std::env::var_os("XENBLOCK_DEBS_ROOT") {
            Some(d) => PathBuf::from(d),
            None => {
                let out = Command::new(Path::new(MANIFEST).join("scripts/xen-debs.sh"))
                    .stderr(Stdio::inherit())
                    .output()
                    .map_err(|e| format!("scripts/xen-debs.sh: {e}"))?;
                if !out.status.success() {
                    return Err("scripts/xen-debs.sh failed".into());
                }
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        let scripts = dir.join("scripts");
        let st = Command::new("cp")
            .arg("-a")
            .arg(debs.join("etc/xen/scripts"))
            .arg(&scripts)
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err("cp of the scripts failed".into());
        }
        let locking = scripts.join("locking.sh");
        let text = std::fs::read_to_string(&locking).map_err(|e| e.to_string())?;
        let from = "LOCK_BASEDIR=/var/run/xen-hotplug";
        if !text.contains(from) {
            return Err(format!("{} has no {from}", locking.display()));
        }
        std::fs::write(
            &locking,
            text.replace(from, &format!("LOCK_BASEDIR={}", lock_dir.display())),
        )
        .map_err(|e| e.to_string())?;
        // xen-hotplug-common.sh sends stderr there.
        std::fs::create_dir_all("/var/log/xen").map_err(|e| e.to_string())?;
        Ok(Script {
            block: scripts.join("block"),
            debs,
        })
    }

    /// libxl's environment for a Linux hotplug script (libxl_linux.c).
    fn cmd(&self, action: &str, be: &str, sock: &Path) -> Command {
        let mut c = Command::new(&self.block);
        c.arg(action)
            .env("script", &self.block)
            .env("XENBUS_TYPE", "vbd")
            .env("XENBUS_PATH", be)
            .env("XENBUS_BASE_PATH", "backend")
            .env("XENSTORED_PATH", sock)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.debs.join("usr/bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env(
                "LD_LIBRARY_PATH",
                self.debs.join("usr/lib/x86_64-linux-gnu"),
            );
        c
    }
}

// ---------------------------------------------------------------------------

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The guest's halt-polling window (`haltpoll` cpuidle driver), when it has
/// one: with 0 an idle vCPU halts at once, and every wake-up of the other
/// side of a round trip goes through the hypervisor; on this bench's VM
/// that alone moves an in-process cycle by a third (BENCHMARKS.md).
fn halt_poll_ns() -> String {
    std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "n/a".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Plan {
    ns: Vec<u32>,
    script_max_n: u32,
    rust_phy: fn(u32) -> usize,
    rust_file: usize,
    cli_phy: usize,
    cli_file: usize,
    script_phy: fn(u32) -> usize,
    script_file: usize,
    mem_cycles: usize,
    index_mem_cycles: usize,
}

/// `XENBLOCK_IMAGE_LOCKS` for the in-process contexts (the CLI reads it itself).
fn bench_image_locks() -> xenblock::imagelock::ImageLocks {
    match std::env::var("XENBLOCK_IMAGE_LOCKS") {
        Ok(v) if !v.is_empty() => xenblock::imagelock::ImageLocks::parse(&v)
            .expect("XENBLOCK_IMAGE_LOCKS: required, best-effort or off"),
        _ => xenblock::imagelock::ImageLocks::default(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    assert!(
        nix::unistd::geteuid().is_root(),
        "the attach bench needs root (loop devices); run `cargo bench --bench attach` as root"
    );
    let quick = std::env::var("XENBLOCK_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let external = std::env::var_os("XENBLOCK_BENCH_XENSTORED").is_some();
    let want_script =
        !external && std::env::var("XENBLOCK_BENCH_SCRIPT").map_or(true, |v| v != "0");
    let plan = if external {
        // A real xenstored, typically in the real-Xen VM under TCG, where
        // everything is many times slower: fewer runs, no script (Xen's
        // script is measured there through `xl`), no memory runs.
        Plan {
            ns: vec![0, 400, 1000, 10_000],
            script_max_n: 0,
            rust_phy: |n| if n >= 10_000 { 20 } else { 40 },
            rust_file: 10,
            cli_phy: 10,
            cli_file: 5,
            script_phy: |_| 0,
            script_file: 0,
            mem_cycles: 0,
            index_mem_cycles: 0,
        }
    } else if quick {
        Plan {
            ns: vec![0, 100, 400, 1000],
            script_max_n: 100,
            rust_phy: |_| 30,
            rust_file: 10,
            cli_phy: 10,
            cli_file: 5,
            script_phy: |_| 2,
            script_file: 2,
            mem_cycles: 1000,
            index_mem_cycles: 2000,
        }
    } else {
        Plan {
            ns: vec![0, 100, 400, 1000, 10_000],
            script_max_n: 1000,
            rust_phy: |n| if n >= 10_000 { 200 } else { 500 },
            rust_file: 100,
            cli_phy: 100,
            cli_file: 50,
            script_phy: |n| match n {
                0 => 10,
                100 => 5,
                _ => 3,
            },
            script_file: 5,
            mem_cycles: 10_000,
            index_mem_cycles: 20_000,
        }
    };
    let mut plan = plan;
    if let Ok(ns) = std::env::var("XENBLOCK_BENCH_NS") {
        plan.ns = ns
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("XENBLOCK_BENCH_NS: numbers, comma-separated")
            })
            .collect();
    }
    let started = Instant::now();
    let load_before = loadavg();
    let xs = start_xenstored();
    let store = client(&xs);
    let lock_guard = LockDir::new(&xs.dir);
    let lock_dir = lock_guard.0.clone();
    let ctx = Arc::new(
        Context::new(Config {
            store: Some(client(&xs)),
            lock_dir: lock_dir.clone(),
            claims_index: true,
            image_locks: bench_image_locks(),
            ..Config::default()
        })
        .unwrap(),
    );
    let ctx_scan = Arc::new(
        Context::new(Config {
            store: Some(client(&xs)),
            lock_dir: lock_dir.clone(),
            claims_index: false,
            image_locks: bench_image_locks(),
            ..Config::default()
        })
        .unwrap(),
    );
    let mut images = Images::default();
    // The phy target: a loop device the bench binds, detached by `images`.
    let phy_img = images.create(&xs.dir.join("phy.img"), 64 << 20);
    let phy_dev = {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&phy_img)
            .unwrap();
        xenblock::sys::loopdev::attach(&f, false, b"xenblock-bench-blockdev")
            .unwrap()
            .path
    };
    let file_img = images.create(&xs.dir.join("file.img"), 64 << 20);
    let script = if want_script {
        match Script::setup(&xs.dir, &lock_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("Xen's block script unavailable ({e}); measuring xenblock only");
                None
            }
        }
    } else {
        None
    };
    let mut b = Bench {
        xs,
        store,
        ctx,
        ctx_scan,
        lock_dir,
        _lock_guard: lock_guard,
        _images: images,
        phy_dev,
        file_img,
        script,
        others: 0,
        lean: external,
    };
    // Our guest and its two disks, as libxl writes them (state 2 = InitWait).
    {
        let mut kv = vec![
            (
                format!("/local/domain/{DOM}/vm"),
                "/vm/bench-guest".to_string(),
            ),
            (
                format!("/local/domain/{DOM}/name"),
                "bench-guest".to_string(),
            ),
        ];
        backend_nodes(
            &mut kv,
            PHY_BE,
            DOM,
            51712,
            &b.phy_dev.display().to_string(),
            "w",
        );
        backend_nodes(
            &mut kv,
            FILE_BE,
            DOM,
            51728,
            &b.file_img.display().to_string(),
            "w",
        );
        kv.push((format!("{PHY_BE}/state"), "2".into()));
        kv.push((format!("{FILE_BE}/state"), "2".into()));
        write_many(&b.store, &kv);
    }
    eprintln!(
        "attach bench ({}): phy target {} , file target {}, load {load_before}, guest_halt_poll_ns {}",
        if quick { "quick" } else { "full" },
        b.phy_dev.display(),
        b.file_img.display(),
        halt_poll_ns()
    );

    // Profiling aid: XENBLOCK_BENCH_PROFILE=N loops in-process phy
    // prepare/release at N other disks for 10 s, then exits.
    if let Some(n) = std::env::var("XENBLOCK_BENCH_PROFILE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        b.populate(n);
        let cli_imp = match std::env::var("XENBLOCK_BENCH_PROFILE_CLI").as_deref() {
            Ok("1") | Ok("cli") => Some("cli"),
            Ok("dropin") => Some("dropin"),
            _ => None,
        };
        let cli = cli_imp.is_some();
        let cpu = |pid: u32| -> f64 {
            // utime + stime, in clock ticks (100/s), fields 14 and 15 (and
            // the waited-for children's, 16 and 17: the CLI's processes).
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let f: Vec<&str> = s.rsplit_once(") ").unwrap().1.split(' ').collect();
            let t = |i: usize| f[i].parse::<f64>().unwrap();
            let children = if cli && pid == std::process::id() {
                t(13) + t(14)
            } else {
                0.0
            };
            (t(11) + t(12) + children) / 100.0
        };
        let xs_cpu = || b.xs.pid().map_or(0.0, cpu);
        let (c0, s0) = (cpu(std::process::id()), xs_cpu());
        let t = Instant::now();
        let mut all = Vec::new();
        let (ctx, imp) = if let Some(imp) = cli_imp {
            (&b.ctx_scan, imp)
        } else if std::env::var("XENBLOCK_BENCH_PROFILE_SCAN").is_ok_and(|v| v == "1") {
            (&b.ctx_scan, "rust-scan")
        } else {
            (&b.ctx, "rust")
        };
        let secs = std::env::var("XENBLOCK_BENCH_PROFILE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        // XENBLOCK_BENCH_CLI_B=PATH: alternate short blocks of two CLIs,
        // so that both see the same host (whose speed drifts by tens of
        // per cent within minutes here), and compare them block by block.
        if let (true, Some(cli_b)) = (cli, std::env::var_os("XENBLOCK_BENCH_CLI_B")) {
            let cli_a = cli_path();
            let (mut a, mut bb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            while t.elapsed() < Duration::from_secs(secs) {
                std::env::set_var("XENBLOCK_BENCH_CLI", &cli_a);
                let ra = b.cli(imp, "phy", 5).prepare;
                std::env::set_var("XENBLOCK_BENCH_CLI", &cli_b);
                let rb = b.cli(imp, "phy", 5).prepare;
                ratios.push(us(percentile(&rb, 50.0)) / us(percentile(&ra, 50.0)));
                a.extend(ra);
                bb.extend(rb);
            }
            ratios.sort_by(f64::total_cmp);
            eprintln!(
                "profile ({imp}) A/B at N={n}: {} blocks; prepare median A {:.1} us, B {:.1} us; B/A per block: median {:.3}, quartiles {:.3}..{:.3}",
                ratios.len(),
                us(percentile(&a, 50.0)),
                us(percentile(&bb, 50.0)),
                ratios[ratios.len() / 2],
                ratios[ratios.len() / 4],
                ratios[ratios.len() * 3 / 4]
            );
            return;
        }
        while t.elapsed() < Duration::from_secs(secs) {
            if cli {
                all.extend(b.cli(imp, "phy", 20).prepare);
            } else {
                all.extend(b.rust_on(ctx, imp, "phy", 50).prepare);
            }
        }
        let (c1, s1) = (cpu(std::process::id()), xs_cpu());
        let k = all.len() as f64;
        eprintln!(
            "profile ({imp}): {} phy prepare+release cycles at N={n}: prepare median {:.1} us; CPU per cycle: client {:.0} us, xenstored {:.0} us",
            all.len(),
            us(percentile(&all, 50.0)),
            (c1 - c0) / k * 1e6,
            (s1 - s0) / k * 1e6
        );
        return;
    }
    // XENBLOCK_BENCH_INDEX_MEMORY=N:CYCLES: only the indexed context's RSS
    // at N other disks over CYCLES prepare/release cycles.
    if let Some((n, cycles)) = std::env::var("XENBLOCK_BENCH_INDEX_MEMORY")
        .ok()
        .and_then(|v| {
            let (n, c) = v.split_once(':')?;
            Some((n.parse().ok()?, c.parse().ok()?))
        })
    {
        b.populate(n);
        let mut extra = BTreeMap::new();
        memory_index(&b, cycles, &mut extra);
        return;
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut extra = BTreeMap::<String, String>::new();
    for &n in &plan.ns {
        b.populate(n);
        eprintln!(
            "N = {n} (t = {:.0} s, load {})",
            started.elapsed().as_secs_f64(),
            loadavg()
        );
        // Warm up the connection, the page cache and the binaries.
        let _ = b.rust("phy", 3);
        let _ = b.rust_on(&b.ctx_scan, "rust-scan", "phy", 3);
        let st0 = b.ctx.claims_index_stats();
        rows.push(b.rust("phy", (plan.rust_phy)(n)));
        let st1 = b.ctx.claims_index_stats();
        extra.insert(
            format!("index_at_{n:05}"),
            format!(
                "{} of {} measured decisions served by the index ({} scanned, {} rebuilds, {} invalidations, {} idle reloads)",
                st1.served - st0.served,
                (plan.rust_phy)(n),
                st1.scanned - st0.scanned,
                st1.builds - st0.builds,
                st1.invalidations - st0.invalidations,
                st1.reloads - st0.reloads
            ),
        );
        rows.push(b.rust_on(&b.ctx_scan, "rust-scan", "phy", (plan.rust_phy)(n)));
        rows.push(b.rust("file", plan.rust_file));
        for imp in ["cli", "dropin"] {
            rows.push(b.cli(imp, "phy", plan.cli_phy));
            rows.push(b.cli(imp, "file", plan.cli_file));
        }
        if n <= plan.script_max_n {
            if let Some(r) = b.script("phy", (plan.script_phy)(n)) {
                rows.push(r);
            }
            if let Some(r) = b.script("file", plan.script_file) {
                rows.push(r);
            }
        }
        for r in rows.iter().filter(|r| r.n == n) {
            eprintln!(
                "  {:6} {:4}: prepare median {:>10.1} us  p99 {:>10.1} us  ({} runs)",
                r.imp,
                r.target,
                r.prep_med(),
                us(percentile(&r.prepare, 99.0)),
                r.prepare.len()
            );
        }
        if n == 100 && plan.mem_cycles > 0 {
            concurrency(&b, &mut extra);
            memory(&b, plan.mem_cycles, &mut extra);
        }
        if Some(&n) == plan.ns.last() && plan.index_mem_cycles > 0 {
            memory_index(&b, plan.index_mem_cycles, &mut extra);
        }
    }
    let script_failures: u32 = rows.iter().map(|r| r.failures).sum();
    extra.insert(
        "script_failed_attempts_retried".into(),
        script_failures.to_string(),
    );
    extra.insert("load_before".into(), load_before);
    extra.insert("guest_halt_poll_ns".into(), halt_poll_ns());
    extra.insert("load_after".into(), loadavg());
    extra.insert(
        "wall_seconds".into(),
        format!("{:.0}", started.elapsed().as_secs_f64()),
    );
    report(&rows, &extra, quick);
    drop(b);
}

/// 64 attaches of distinct images from 8 threads, one shared Context.
fn concurrency(b: &Bench, extra: &mut BTreeMap<String, String>) {
    const THREADS: usize = 8;
    const DISKS: usize = 64;
    // Own guard: only the loop devices of these images are checked and cleaned.
    let mut images = Images::default();
    let mut bes = Vec::new();
    let mut kv = Vec::new();
    for i in 0..DISKS {
        let dom = 20 + (i / 4) as u32;
        let dev = 51712 + 16 * (i % 4) as u32;
        let img = images.create(&b.xs.dir.join(format!("conc-{i}.img")), 16 << 20);
        let be = format!("backend/vbd/{dom}/{dev}");
        if i % 4 == 0 {
            kv.push((format!("/local/domain/{dom}/vm"), format!("/vm/conc-{dom}")));
        }
        backend_nodes(&mut kv, &be, dom, dev, &img.display().to_string(), "w");
        kv.push((format!("{be}/state"), "2".into()));
        bes.push(be);
    }
    write_many(&b.store, &kv);
    let run = |op: &'static str| {
        let barrier = Arc::new(Barrier::new(THREADS));
        let t = Instant::now();
        let handles: Vec<_> = (0..THREADS)
            .map(|k| {
                let mine: Vec<String> = bes.iter().skip(k).step_by(THREADS).cloned().collect();
                let (ctx, barrier) = (b.ctx.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut failed = Vec::new();
                    for be in mine {
                        let r = if op == "prepare" {
                            ctx.prepare(&be)
                                .map(|p| matches!(p, Prepared::Connected { .. }))
                        } else {
                            ctx.release(&be)
                                .map(|r| matches!(r, xenblock::Released::Detached(_)))
                        };
                        match r {
                            Ok(true) => {}
                            Ok(false) => failed.push(format!("{be}: unexpected result")),
                            Err(e) => failed.push(format!("{be}: {e}")),
                        }
                    }
                    failed
                })
            })
            .collect();
        let failed: Vec<String> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (t.elapsed(), failed)
    };
    let (tp, fp) = run("prepare");
    let connected = bes
        .iter()
        .filter(|be| {
            b.store
                .read(NO_TX, &format!("{be}/hotplug-status"))
                .unwrap()
                .as_deref()
                == Some(&b"connected"[..])
        })
        .count();
    let nodes: std::collections::HashSet<Vec<u8>> = bes
        .iter()
        .filter_map(|be| b.store.read(NO_TX, &format!("{be}/node")).unwrap())
        .collect();
    let (tr, fr) = run("release");
    let left = images.detach_all();
    // Remove the 64 backends again so later N stay exact.
    for d in 0..(DISKS / 4) as u32 {
        b.store
            .remove(NO_TX, &format!("backend/vbd/{}", 20 + d))
            .unwrap();
        b.store
            .remove(NO_TX, &format!("/local/domain/{}", 20 + d))
            .unwrap();
    }
    let line = format!(
        "{DISKS} prepares from {THREADS} threads in {:.1} ms ({:.0}/s), {} failed, {connected} connected, \
         {} distinct loop devices; {DISKS} releases in {:.1} ms ({:.0}/s), {} failed; {left} left attached",
        tp.as_secs_f64() * 1e3,
        DISKS as f64 / tp.as_secs_f64(),
        fp.len(),
        nodes.len(),
        tr.as_secs_f64() * 1e3,
        DISKS as f64 / tr.as_secs_f64(),
        fr.len()
    );
    eprintln!("  concurrency: {line}");
    for f in fp.iter().chain(&fr) {
        eprintln!("    failure: {f}");
    }
    assert!(
        fp.is_empty() && fr.is_empty() && connected == DISKS && nodes.len() == DISKS && left == 0
    );
    extra.insert("concurrency".into(), line);
    extra.insert(
        "concurrency_prepare_per_s".into(),
        format!("{:.0}", DISKS as f64 / tp.as_secs_f64()),
    );
    extra.insert(
        "concurrency_release_per_s".into(),
        format!("{:.0}", DISKS as f64 / tr.as_secs_f64()),
    );
    extra.insert(
        "concurrency_failed".into(),
        (fp.len() + fr.len()).to_string(),
    );
}

/// RSS of this process over many phy prepare/release cycles.
fn memory(b: &Bench, cycles: usize, extra: &mut BTreeMap<String, String>) {
    let _ = b.rust("phy", 200);
    let before = rss_kb();
    let t = Instant::now();
    for _ in 0..cycles {
        b.ctx.prepare(PHY_BE).unwrap();
        b.ctx.release(PHY_BE).unwrap();
        b.reset(PHY_BE);
    }
    let after = rss_kb();
    let line = format!(
        "{cycles} phy prepare/release cycles at N={}: VmRSS {before} kB -> {after} kB ({:+} kB) in {:.1} s",
        b.others,
        after as i64 - before as i64,
        t.elapsed().as_secs_f64()
    );
    eprintln!("  memory: {line}");
    extra.insert("memory".into(), line);
    extra.insert("rss_before_kb".into(), before.to_string());
    extra.insert("rss_after_kb".into(), after.to_string());
    extra.insert("mem_cycles".into(), cycles.to_string());
}

/// RSS of a fresh long-lived context with the index at the current N
/// (what building the index added), then over `cycles` prepare/release.
fn memory_index(b: &Bench, cycles: usize, extra: &mut BTreeMap<String, String>) {
    let before_ctx = rss_kb();
    let ctx = Context::new(Config {
        store: Some(client(&b.xs)),
        lock_dir: b.lock_dir.clone(),
        claims_index: true,
        ..Config::default()
    })
    .unwrap();
    let _ = b.rust_on(&ctx, "rust", "phy", 3);
    assert!(ctx.claims_index_stats().served >= 1);
    let built = rss_kb();
    let t = Instant::now();
    for _ in 0..cycles {
        ctx.prepare(PHY_BE).unwrap();
        ctx.release(PHY_BE).unwrap();
        b.reset(PHY_BE);
    }
    let after = rss_kb();
    let st = ctx.claims_index_stats();
    let line = format!(
        "index at N={}: VmRSS {before_ctx} kB before the context, {built} kB with the index built ({:+} kB), {after} kB after {cycles} cycles ({:+} kB) in {:.1} s; {} decisions served by the index, {} scanned, {} builds, {} invalidations, {} idle reloads",
        b.others,
        built as i64 - before_ctx as i64,
        after as i64 - built as i64,
        t.elapsed().as_secs_f64(),
        st.served,
        st.scanned,
        st.builds,
        st.invalidations,
        st.reloads
    );
    eprintln!("  memory: {line}");
    extra.insert("memory_index".into(), line);
    extra.insert("index_rss_built_kb".into(), built.to_string());
    extra.insert("index_rss_after_kb".into(), after.to_string());
    extra.insert("index_mem_cycles".into(), cycles.to_string());
}

fn report(rows: &[Row], extra: &BTreeMap<String, String>, quick: bool) {
    let find = |imp: &str, target: &str, n: u32| {
        rows.iter()
            .find(|r| r.imp == imp && r.target == target && r.n == n)
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| impl | target | N | runs | prepare median | prepare p99 | release median | release p99 | cycle median | cycle p99 | script/this (prepare) | peak RSS |"
    );
    let _ = writeln!(
        table,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut csv = String::from(
        "impl,target,n,runs,prepare_median_us,prepare_p99_us,release_median_us,release_p99_us,cycle_median_us,cycle_p99_us,max_rss_kb\n",
    );
    let fmt = |u: f64| {
        if u >= 1e6 {
            format!("{:.2} s", u / 1e6)
        } else if u >= 1e3 {
            format!("{:.2} ms", u / 1e3)
        } else {
            format!("{u:.0} µs")
        }
    };
    let mut json_rows = Vec::new();
    for r in rows {
        let c = r.cycles();
        let v = [
            us(percentile(&r.prepare, 50.0)),
            us(percentile(&r.prepare, 99.0)),
            us(percentile(&r.release, 50.0)),
            us(percentile(&r.release, 99.0)),
            us(percentile(&c, 50.0)),
            us(percentile(&c, 99.0)),
        ];
        let ratio = match (r.imp, find("script", r.target, r.n)) {
            ("script", _) | (_, None) => "".to_string(),
            (_, Some(s)) => format!("{:.0}×", s.prep_med() / r.prep_med()),
        };
        let rss = r
            .max_rss_kb
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_default();
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {ratio} | {rss} |",
            r.imp,
            r.target,
            r.n,
            r.prepare.len(),
            fmt(v[0]),
            fmt(v[1]),
            fmt(v[2]),
            fmt(v[3]),
            fmt(v[4]),
            fmt(v[5])
        );
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{}",
            r.imp,
            r.target,
            r.n,
            r.prepare.len(),
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            r.max_rss_kb.map(|k| k.to_string()).unwrap_or_default()
        );
        json_rows.push(format!(
            "{{\"impl\":\"{}\",\"target\":\"{}\",\"n\":{},\"runs\":{},\"prepare_median_us\":{:.1},\"prepare_p99_us\":{:.1},\"release_median_us\":{:.1},\"release_p99_us\":{:.1},\"cycle_median_us\":{:.1},\"cycle_p99_us\":{:.1},\"max_rss_kb\":{}}}",
            r.imp, r.target, r.n, r.prepare.len(), v[0], v[1], v[2], v[3], v[4], v[5],
            r.max_rss_kb.map(|k| k.to_string()).unwrap_or_else(|| "null".into())
        ));
    }

    // Targets (issue 7).
    let mut targets = String::new();
    let mut tj = Vec::new();
    let mut target = |name: &str, value: String, ok: Option<bool>| {
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(targets, "| {name} | {value} | {verdict} |");
        tj.push(format!(
            "{{\"target\":{:?},\"value\":{:?},\"verdict\":{:?}}}",
            name, value, verdict
        ));
    };
    match find("rust", "phy", 1000) {
        Some(r) => target(
            "phy prepare in-process at N=1000 ≤ 2 ms median",
            fmt(r.prep_med()),
            Some(r.prep_med() <= 2000.0),
        ),
        None => target(
            "phy prepare in-process at N=1000 ≤ 2 ms median",
            "-".into(),
            None,
        ),
    }
    match (find("rust", "phy", 1000), find("rust", "phy", 10_000)) {
        (Some(a), Some(b)) => {
            let slope = (b.prep_med() - a.prep_med()) / 9000.0;
            target(
                "cost per additional existing disk ≤ 2 µs (N=1000→10000)",
                format!("{slope:.3} µs"),
                Some(slope <= 2.0),
            )
        }
        _ => target(
            "cost per additional existing disk ≤ 2 µs (N=1000→10000)",
            "-".into(),
            None,
        ),
    }
    match find("rust", "file", 0) {
        Some(r) => target(
            "file prepare incl. loop attach at N=0 ≤ 5 ms median",
            fmt(r.prep_med()),
            Some(r.prep_med() <= 5000.0),
        ),
        None => target(
            "file prepare incl. loop attach at N=0 ≤ 5 ms median",
            "-".into(),
            None,
        ),
    }
    for (imp, what) in [("cli", "CLI"), ("dropin", "drop-in")] {
        let name = format!("{what} phy prepare at N=400 ≥ 500× faster than the script");
        match (find(imp, "phy", 400), find("script", "phy", 400)) {
            (Some(c), Some(s)) => {
                let ratio = s.prep_med() / c.prep_med();
                target(
                    &name,
                    format!(
                        "{ratio:.0}× ({} vs {})",
                        fmt(s.prep_med()),
                        fmt(c.prep_med())
                    ),
                    Some(ratio >= 500.0),
                )
            }
            _ => target(&name, "-".into(), None),
        }
    }
    // Issue 15: the long-lived context (claims index) and the one-shot CLI.
    let cyc = |r: &Row| us(percentile(&r.cycles(), 50.0));
    for n in [0, 1000, 10_000] {
        let name = format!("long-lived (index) phy prepare+release at N={n} ≤ 250 µs median");
        match find("rust", "phy", n) {
            Some(r) => target(&name, fmt(cyc(r)), Some(cyc(r) <= 250.0)),
            None => target(&name, "-".into(), None),
        }
    }
    match (find("rust", "phy", 0), find("rust", "phy", 10_000)) {
        (Some(a), Some(b)) => target(
            "long-lived (index) flat within 20 % from N=0 to 10000",
            format!("{:+.0} %", (cyc(b) / cyc(a) - 1.0) * 100.0),
            Some(cyc(b) <= cyc(a) * 1.2),
        ),
        _ => target(
            "long-lived (index) flat within 20 % from N=0 to 10000",
            "-".into(),
            None,
        ),
    }
    for (imp, what) in [("cli", "CLI"), ("dropin", "drop-in")] {
        let name = format!("one-shot ({what}) ≤ 1 µs per other disk (N=1000→10000)");
        match (find(imp, "phy", 1000), find(imp, "phy", 10_000)) {
            (Some(a), Some(b)) => {
                let slope = (b.prep_med() - a.prep_med()) / 9000.0;
                target(&name, format!("{slope:.3} µs"), Some(slope <= 1.0))
            }
            _ => target(&name, "-".into(), None),
        }
    }
    if let (Some(a), Some(b)) = (
        extra.get("index_rss_built_kb"),
        extra.get("index_rss_after_kb"),
    ) {
        let (a, b): (i64, i64) = (a.parse().unwrap(), b.parse().unwrap());
        target(
            &format!(
                "index memory flat over {} cycles at the largest N (growth ≤ 256 kB)",
                extra["index_mem_cycles"]
            ),
            format!("{:+} kB", b - a),
            Some(b - a <= 256),
        );
    }
    if let (Some(a), Some(b)) = (extra.get("rss_before_kb"), extra.get("rss_after_kb")) {
        let (a, b): (i64, i64) = (a.parse().unwrap(), b.parse().unwrap());
        target(
            &format!(
                "memory flat over {} cycles (growth ≤ 256 kB)",
                extra["mem_cycles"]
            ),
            format!("{:+} kB", b - a),
            Some(b - a <= 256),
        );
    }

    println!("\n{table}");
    println!("| target | measured | verdict |\n|---|---|---|\n{targets}");
    for (k, v) in extra {
        println!("{k}: {v}");
    }
    let out = std::env::var_os("XENBLOCK_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(MANIFEST).join("bench/results"));
    std::fs::create_dir_all(&out).unwrap();
    let stem = if std::env::var_os("XENBLOCK_BENCH_XENSTORED").is_some() {
        "attach-realxen"
    } else if quick {
        "attach-quick"
    } else {
        "attach"
    };
    std::fs::write(out.join(format!("{stem}.csv")), csv).unwrap();
    std::fs::write(
        out.join(format!("{stem}.md")),
        format!("{table}\n| target | measured | verdict |\n|---|---|---|\n{targets}"),
    )
    .unwrap();
    let extra_json: Vec<String> = extra.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    std::fs::write(
        out.join(format!("{stem}.json")),
        format!(
            "{{\"quick\":{quick},\"rows\":[\n{}\n],\"targets\":[\n{}\n],\"extra\":{{{}}}}}\n",
            json_rows.join(",\n"),
            tj.join(",\n"),
            extra_json.join(",")
        ),
    )
    .unwrap();
    println!(
        "results: {}/{stem}.{{csv,json,md}}; plot: python3 bench/plot.py {}/{stem}.csv",
        out.display(),
        out.display()
    );
}
