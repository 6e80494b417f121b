//! Fault injection through a store wrapper (the same `Store` seam a caller's
//! callback store plugs into): failed writes, commits that keep answering
//! EAGAIN, reads failing mid-scan — and a soak of thousands of
//! prepare/release cycles with random faults across threads and processes.
//! Afterwards: no loop device leaked, no half-written nodes, flat memory.
//! Needs root.

mod common;
use common::{require_root, Env};
use parking_lot::Mutex;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenblock::error::XsErrno;
use xenblock::store::client::XsClient;
use xenblock::store::{Store, TxId};
use xenblock::{Config, Context, Error, ErrorKind};

#[derive(Default)]
struct Faults {
    /// Writes to paths ending with this fail with EIO.
    write_suffix: Option<String>,
    /// Every commit answers EAGAIN.
    always_again: bool,
    /// The Nth directory listing fails (1-based).
    fail_directory_at: Option<u64>,
    /// Random faults: probability per operation in 1/1000, and the rng state.
    random_per_mille: u64,
    rng: u64,
}

struct FaultStore {
    inner: Arc<dyn Store>,
    faults: Mutex<Faults>,
    directories: AtomicU64,
    injected: AtomicU64,
}

impl FaultStore {
    fn new(inner: Arc<dyn Store>, f: Faults) -> FaultStore {
        FaultStore {
            inner,
            faults: Mutex::new(f),
            directories: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }
    fn random(&self, op: &'static str, path: &str) -> xenblock::Result<()> {
        let mut f = self.faults.lock();
        if f.random_per_mille == 0 {
            return Ok(());
        }
        f.rng ^= f.rng << 13;
        f.rng ^= f.rng >> 7;
        f.rng ^= f.rng << 17;
        if f.rng % 1000 < f.random_per_mille {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(Error::store(op, path, XsErrno::from_errno(libc::EIO)));
        }
        Ok(())
    }
    fn set_random(&self, per_mille: u64) {
        self.faults.lock().random_per_mille = per_mille;
    }
}

impl Store for FaultStore {
    fn read(&self, tx: TxId, p: &str) -> xenblock::Result<Option<Vec<u8>>> {
        self.random("read", p)?;
        self.inner.read(tx, p)
    }
    fn write(&self, tx: TxId, p: &str, v: &[u8]) -> xenblock::Result<()> {
        self.random("write", p)?;
        if self
            .faults
            .lock()
            .write_suffix
            .as_deref()
            .is_some_and(|s| p.ends_with(s))
        {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(Error::store("write", p, XsErrno::from_errno(libc::EIO)));
        }
        self.inner.write(tx, p, v)
    }
    fn remove(&self, tx: TxId, p: &str) -> xenblock::Result<()> {
        self.random("rm", p)?;
        self.inner.remove(tx, p)
    }
    fn directory(&self, tx: TxId, p: &str) -> xenblock::Result<Option<Vec<String>>> {
        self.random("directory", p)?;
        let n = self.directories.fetch_add(1, Ordering::SeqCst) + 1;
        if self.faults.lock().fail_directory_at == Some(n) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(Error::store("directory", p, XsErrno::from_errno(libc::EIO)));
        }
        self.inner.directory(tx, p)
    }
    fn directory_many(&self, tx: TxId, p: &[String]) -> xenblock::Result<Vec<Option<Vec<String>>>> {
        p.iter().map(|p| self.directory(tx, p)).collect()
    }
    fn read_many(&self, tx: TxId, p: &[String]) -> xenblock::Result<Vec<Option<Vec<u8>>>> {
        self.random("read", p.first().map(String::as_str).unwrap_or(""))?;
        self.inner.read_many(tx, p)
    }
    fn transaction_start(&self) -> xenblock::Result<TxId> {
        self.random("transaction-start", "")?;
        self.inner.transaction_start()
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> xenblock::Result<bool> {
        if commit && self.faults.lock().always_again {
            self.injected.fetch_add(1, Ordering::Relaxed);
            self.inner.transaction_end(tx, false)?;
            return Ok(false);
        }
        if commit {
            if let Err(e) = self.random("transaction-end", "") {
                self.inner.transaction_end(tx, false)?;
                return Err(e);
            }
        }
        self.inner.transaction_end(tx, commit)
    }
}

fn no_result_nodes(env: &Env, be: &str) {
    for k in ["node", "physical-device", "physical-device-path"] {
        assert_eq!(
            env.read(&format!("{be}/{k}")),
            None,
            "{be}/{k} must not be half-written"
        );
    }
}

#[test]
fn failed_result_write_leaves_no_loop_device_and_no_nodes() {
    require_root();
    let mut env = Env::new();
    let img = env.image("wfail.img", 1 << 20);
    env.domain(1, "/vm/one");
    let be = env.backend(1, 51712, &img.display().to_string(), "w");
    let fs = Arc::new(FaultStore::new(
        env.store.clone(),
        Faults {
            write_suffix: Some("/physical-device".into()),
            ..Faults::default()
        },
    ));
    let e = env.ctx_with(fs.clone()).prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    assert!(fs.injected.load(Ordering::Relaxed) > 0);
    assert!(
        env.loops_of(&img).is_empty(),
        "the attached loop device was detached again"
    );
    no_result_nodes(&env, &be);
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("error")
    );
}

#[test]
fn commits_that_keep_conflicting_leave_nothing_behind() {
    require_root();
    let mut env = Env::new();
    let img = env.image("again.img", 1 << 20);
    env.domain(1, "/vm/one");
    let be = env.backend(1, 51712, &img.display().to_string(), "w");
    let fs = Arc::new(FaultStore::new(
        env.store.clone(),
        Faults {
            always_again: true,
            ..Faults::default()
        },
    ));
    let e = env.ctx_with(fs.clone()).prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    assert!(e.to_string().contains("EAGAIN"), "{e}");
    assert!(
        fs.injected.load(Ordering::Relaxed) >= 16,
        "retried before giving up"
    );
    assert!(env.loops_of(&img).is_empty());
    no_result_nodes(&env, &be);
}

#[test]
fn a_read_failing_mid_scan_refuses_safely() {
    require_root();
    let mut env = Env::new();
    let img = env.image("scan.img", 1 << 20);
    env.domain(1, "/vm/one");
    env.domain(2, "/vm/two");
    let a = env.backend(1, 51712, &img.display().to_string(), "r");
    env.ctx().prepare(&a).unwrap();
    let b = env.backend(2, 51712, &img.display().to_string(), "r");
    // Listing 1 is backend/vbd, 2 and 3 the domains: fail in the middle.
    let fs = Arc::new(FaultStore::new(
        env.store.clone(),
        Faults {
            fail_directory_at: Some(2),
            ..Faults::default()
        },
    ));
    let e = env.ctx_with(fs).prepare(&b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    assert_eq!(env.loops_of(&img).len(), 1, "no second loop device");
    no_result_nodes(&env, &b);
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// One soak worker: `cycles` prepare/release rounds on its own image.
/// Returns (cycles, prepared, faults).
fn soak_worker(
    sock: &Path,
    lock: &Path,
    dom: u32,
    img: &Path,
    cycles: u32,
    seed: u64,
) -> (u32, u32, u64) {
    let client: Arc<dyn Store> =
        Arc::new(XsClient::connect(sock, Duration::from_secs(10)).unwrap());
    let fs = Arc::new(FaultStore::new(
        client.clone(),
        Faults {
            rng: seed | 1,
            random_per_mille: 30,
            ..Faults::default()
        },
    ));
    let ctx = Context::new(Config {
        store: Some(fs.clone()),
        lock_dir: lock.to_path_buf(),
        ..Config::default()
    })
    .unwrap();
    let be = format!("backend/vbd/{dom}/51712");
    let mut prepared = 0;
    for i in 0..cycles {
        let mode = if i % 3 == 0 { "r" } else { "w" };
        for (k, v) in [
            ("params", img.display().to_string()),
            ("mode", mode.into()),
            ("frontend-id", dom.to_string()),
            ("state", "2".into()),
        ] {
            client.write(0, &format!("{be}/{k}"), v.as_bytes()).unwrap();
        }
        fs.set_random(30);
        let r = ctx.prepare(&be);
        fs.set_random(0);
        let node = client.read(0, &format!("{be}/node")).unwrap();
        match r {
            Ok(_) => {
                prepared += 1;
                assert!(node.is_some(), "prepared without node");
            }
            Err(_) => assert!(node.is_none(), "failed prepare left node {node:?}"),
        }
        fs.set_random(30);
        if ctx.release(&be).is_err() {
            fs.set_random(0);
            ctx.release(&be).expect("release without faults succeeds");
        }
        fs.set_random(0);
        client.remove(0, &be).unwrap();
    }
    (cycles, prepared, fs.injected.load(Ordering::Relaxed))
}

#[test]
fn soak_with_random_faults_threads_and_processes() {
    if let Ok(spec) = std::env::var("XENBLOCK_SOAK_CHILD") {
        let v: Vec<&str> = spec.split('|').collect();
        let (sock, lock, base, dir) = (
            Path::new(v[0]),
            Path::new(v[1]),
            v[2].parse::<u32>().unwrap(),
            Path::new(v[3]),
        );
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (sock, lock, dir) = (sock.to_path_buf(), lock.to_path_buf(), dir.to_path_buf());
                std::thread::spawn(move || {
                    let img = dir.join(format!("soak-{}.img", base + t));
                    soak_worker(
                        &sock,
                        &lock,
                        base + t,
                        &img,
                        600,
                        0x9e37_79b9 * (base + t) as u64,
                    )
                })
            })
            .collect();
        let mut tot = (0, 0, 0);
        for h in handles {
            let r = h.join().unwrap();
            tot = (tot.0 + r.0, tot.1 + r.1, tot.2 + r.2);
        }
        println!("SOAK-CHILD {} {} {}", tot.0, tot.1, tot.2);
        return;
    }
    require_root();
    let mut env = Env::new();
    for d in 700..716 {
        env.domain(d, &format!("/vm/soak-{d}"));
        env.image(&format!("soak-{d}.img"), 1 << 20);
    }
    let start = Instant::now();
    let lock = env.dir.join("lock");
    // Two child processes with 4 threads each, and 4 threads here.
    let children: Vec<_> = [704u32, 708]
        .iter()
        .map(|base| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "soak_with_random_faults_threads_and_processes",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    "XENBLOCK_SOAK_CHILD",
                    format!(
                        "{}|{}|{base}|{}",
                        env.sock.display(),
                        lock.display(),
                        env.dir.display()
                    ),
                )
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Memory: warm up, then measure growth over the rest of the cycles.
    let sock = env.sock.clone();
    let warm = soak_worker(&sock, &lock, 712, &env.dir.join("soak-712.img"), 100, 7);
    let rss_before = rss_kib();
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let (sock, lock, dir) = (sock.clone(), lock.clone(), env.dir.clone());
            std::thread::spawn(move || {
                soak_worker(
                    &sock,
                    &lock,
                    712 + t,
                    &dir.join(format!("soak-{}.img", 712 + t)),
                    1000,
                    31 + t as u64,
                )
            })
        })
        .collect();
    let mut tot = warm;
    for h in handles {
        let r = h.join().unwrap();
        tot = (tot.0 + r.0, tot.1 + r.1, tot.2 + r.2);
    }
    let rss_after = rss_kib();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "soak child failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let at = text.find("SOAK-CHILD").expect("child summary");
        let n: Vec<u64> = text[at..]
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        tot = (tot.0 + n[0] as u32, tot.1 + n[1] as u32, tot.2 + n[2]);
    }
    // Exactly as expected: no backends left, no loop device over any image.
    for d in env
        .store
        .directory(0, "backend/vbd")
        .unwrap()
        .unwrap_or_default()
    {
        let left = env
            .store
            .directory(0, &format!("backend/vbd/{d}"))
            .unwrap()
            .unwrap_or_default();
        assert!(left.is_empty(), "backend/vbd/{d} still has {left:?}");
    }
    for d in 700..716 {
        let img = env.dir.join(format!("soak-{d}.img"));
        assert!(
            env.loops_of(&img).is_empty(),
            "leaked loop device over {}",
            img.display()
        );
    }
    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "soak: {} prepare/release cycles ({} prepared) in {:.1?} across 3 processes x 4 threads, {} faults injected, RSS {} KiB -> {} KiB",
        tot.0, tot.1, start.elapsed(), tot.2, rss_before, rss_after
    );
    assert!(tot.0 >= 2000 && tot.2 >= 100, "soak too small: {tot:?}");
    assert!(growth < 4096, "memory grew by {growth} KiB over the soak");
}
