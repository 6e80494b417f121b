//! `cargo bench --bench ops` (run as root): the op API (`Context::start`)
//! against the embedded xenstored with N = 10 000 other backends
//! (`XENBLOCK_BENCH_OPS_N` to change it):
//!
//! 1. one xenstore round trip (a read on the context's own connection),
//!    p50/p99 over 2 000 reads;
//! 2. ten rounds of: the hotplug lock held by another process
//!    (`flock(1)`), `start` of 200 ops on distinct backends (phy,
//!    read-only, one shared device; p50/p99 of the call over the 2000),
//!    then the holder exits: the time from its exit to the round's first
//!    op done and to all done;
//! 3. 64 file-backed backends (a loop device each): 64 sequential
//!    `prepare` calls vs 64 ops started together (4 workers), wall time.
//!
//! Every loop device bound to the bench's images is detached on the way
//! out; the lock directory is private (tmpfs).

#[path = "../tests/common/xsd.rs"]
mod xsd;

mod common;
use common::{unprepare, write_many};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenblock::store::client::XsClient;
use xenblock::store::{Store, NO_TX};
use xenblock::{Action, Config, Context, Op};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A backend as libxl writes it (the nodes a decision reads), state 2.
fn backend(kv: &mut Vec<(String, String)>, dom: u32, dev: u32, params: &str, mode: &str, ty: &str) {
    let be = format!("backend/vbd/{dom}/{dev}");
    kv.push((
        format!("/local/domain/{dom}/vm"),
        format!("/vm/bench-{dom}"),
    ));
    for (k, v) in [
        ("params", params),
        ("mode", mode),
        ("type", ty),
        ("script", "/etc/xen/scripts/block"),
        ("frontend-id", &dom.to_string()),
        ("frontend", &format!("/local/domain/{dom}/device/vbd/{dev}")),
        ("state", "2"),
    ] {
        kv.push((format!("{be}/{k}"), v.to_string()));
    }
}

/// Detaches every loop device bound to one of these files when dropped.
struct Images(Vec<(PathBuf, u64, u64)>);
impl Images {
    fn create(&mut self, p: &Path) -> PathBuf {
        std::fs::File::create(p).unwrap().set_len(1 << 20).unwrap();
        let st = xenblock::sys::stat::stat(p).unwrap();
        self.0.push((p.to_path_buf(), st.dev, st.ino));
        p.to_path_buf()
    }
}
impl Drop for Images {
    fn drop(&mut self) {
        if let Ok(all) = xenblock::sys::loopdev::list() {
            for l in all {
                if self.0.iter().any(|(_, d, i)| l.is_backed_by(*d, *i)) {
                    let _ = xenblock::sys::loopdev::detach(&l.path);
                }
            }
        }
    }
}

fn wait_all(ops: &[Op], t0: Instant) -> Vec<Duration> {
    let mut done = vec![None; ops.len()];
    while done.iter().any(Option::is_none) {
        let mut fds: Vec<libc::pollfd> = ops
            .iter()
            .enumerate()
            .filter(|(i, _)| done[*i].is_none())
            .map(|(_, o)| libc::pollfd {
                fd: o.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfd of the given length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 30_000) };
        assert!(r > 0, "ops did not complete in 30 s");
        let now = t0.elapsed();
        for (i, o) in ops.iter().enumerate() {
            if done[i].is_none() && o.is_done() {
                done[i] = Some(now);
            }
        }
    }
    done.into_iter().map(Option::unwrap).collect()
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the ops bench needs root (loop devices)"
    );
    let n: u32 = std::env::var("XENBLOCK_BENCH_OPS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("xenblock-bench-ops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lock_dir =
        Path::new("/dev/shm").join(format!("xenblock-bench-ops-lock-{}", std::process::id()));
    std::fs::create_dir_all(&lock_dir).unwrap();
    let daemon = xsd::Daemon::start_at(dir.clone(), dir.join("xs.sock"));
    let mut images = Images(Vec::new());
    let writer = XsClient::connect(&daemon.socket, Duration::from_secs(60)).unwrap();

    // N other guests' connected disks.
    let mut kv = Vec::new();
    for i in 0..n {
        let dom = 1000 + i / 4;
        let dev = 51712 + 16 * (i % 4);
        let be = format!("backend/vbd/{dom}/{dev}");
        backend(
            &mut kv,
            dom,
            dev,
            &format!("/dev/fake/disk{i}"),
            if i % 2 == 0 { "w" } else { "r" },
            "phy",
        );
        kv.push((format!("{be}/physical-device"), format!("fe:{i:x}")));
        kv.push((format!("{be}/hotplug-status"), "connected".into()));
        kv.push((format!("{be}/state"), "4".into()));
    }
    // The measured backends: 200 phy read-only on one device, 64 files.
    let phy_img = images.create(&dir.join("phy.img"));
    let phy = {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&phy_img)
            .unwrap();
        xenblock::sys::loopdev::attach(&f, false, b"xenblock-bench-ops-phy")
            .unwrap()
            .path
    };
    for i in 0..200 {
        backend(
            &mut kv,
            10 + i,
            51712,
            &phy.display().to_string(),
            "r",
            "phy",
        );
    }
    let mut files = Vec::new();
    for i in 0..64 {
        let img = images.create(&dir.join(format!("f{i}.img")));
        backend(
            &mut kv,
            300 + i,
            51712,
            &img.display().to_string(),
            "w",
            "file",
        );
        files.push(format!("backend/vbd/{}/51712", 300 + i));
    }
    let t = Instant::now();
    write_many(&writer, &kv);
    eprintln!(
        "populated {n} other disks + 264 measured: {} writes in {:.0} ms",
        kv.len(),
        t.elapsed().as_secs_f64() * 1e3
    );

    let store = Arc::new(XsClient::connect(&daemon.socket, Duration::from_secs(60)).unwrap());
    let ctx = Arc::new(
        Context::new(Config {
            store: Some(store.clone()),
            lock_dir: lock_dir.clone(),
            workers: 4,
            ..Config::default()
        })
        .unwrap(),
    );
    // Warm up: the claims index built, the worker threads started.
    let warm = "backend/vbd/209/51712";
    for _ in 0..3 {
        ctx.prepare(warm).unwrap();
        ctx.release(warm).unwrap();
        unprepare(&writer, warm);
    }
    let warm_ops: Vec<Op> = (0..8)
        .map(|_| ctx.start(warm, Action::Remove).unwrap())
        .collect();
    wait_all(&warm_ops, Instant::now());
    let mut sync_prep: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            ctx.prepare(warm).unwrap();
            let d = t.elapsed();
            ctx.release(warm).unwrap();
            unprepare(&writer, warm);
            d
        })
        .collect();
    let sync50 = pct(&mut sync_prep, 0.5);
    // The same, each after 100 ms without a decision (as the first op of a
    // round below, which waited that long for the lock).
    let mut idle_prep: Vec<Duration> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            ctx.prepare(warm).unwrap();
            let d = t.elapsed();
            ctx.release(warm).unwrap();
            unprepare(&writer, warm);
            d
        })
        .collect();
    let idle50 = pct(&mut idle_prep, 0.5);

    // 1. One xenstore round trip.
    let mut rt: Vec<Duration> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            store.read(NO_TX, "backend/vbd/10/51712/params").unwrap();
            t.elapsed()
        })
        .collect();
    let rt50 = pct(&mut rt, 0.5);
    let rt99 = pct(&mut rt, 0.99);

    // 2. The lock held by another process; 10 rounds of 200 ops.
    let lock = lock_dir.join("block");
    let mut starts = Vec::new();
    let mut waking = Vec::new();
    let mut firsts = Vec::new();
    let mut lasts = Vec::new();
    for round in 0..10 {
        let mut holder = std::process::Command::new("sh")
            .args([
                "-c",
                "exec 9>>\"$0\" && flock 9 && echo locked && exec sleep 60",
            ])
            .arg(&lock)
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
        let mut ops = Vec::new();
        for i in 0..200 {
            let be = format!("backend/vbd/{}/51712", 10 + i);
            let t = Instant::now();
            let op = ctx.start(&be, Action::Add).unwrap();
            // The first 4 of a round find idle workers: the first wakes one
            // (a futex wake), which wakes the next; the rest only queue.
            if i < 4 {
                waking.push(t.elapsed());
            } else {
                starts.push(t.elapsed());
            }
            ops.push(op);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            ops.iter().all(|o| !o.is_done()),
            "an op finished while the lock was held"
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        let released = Instant::now();
        let done = wait_all(&ops, released);
        firsts.push(*done.iter().min().unwrap());
        lasts.push(*done.iter().max().unwrap());
        for mut o in ops {
            o.finish().unwrap();
        }
        // As if libxl had made the backends afresh (phy: nothing to release).
        for i in 0..200 {
            unprepare(&writer, &format!("backend/vbd/{}/51712", 10 + i));
        }
        // One decision now, so that the index has read the resets' watch
        // events before the next round (their cost is not the lock's).
        ctx.prepare(warm).unwrap();
        ctx.release(warm).unwrap();
        unprepare(&writer, warm);
        ctx.prepare(warm).unwrap();
        ctx.release(warm).unwrap();
        unprepare(&writer, warm);
        if round == 0 {
            let st = ctx.claims_index_stats();
            eprintln!(
                "index after round 0: served {} scanned {} builds {}",
                st.served, st.scanned, st.builds
            );
        }
    }
    let s50 = pct(&mut starts, 0.5);
    let s99 = pct(&mut starts, 0.99);
    let smax = pct(&mut starts, 1.0);
    let w50 = pct(&mut waking, 0.5);
    let wmax = pct(&mut waking, 1.0);
    let mut all: Vec<Duration> = starts.iter().chain(&waking).copied().collect();
    let a50 = pct(&mut all, 0.5);
    let a99 = pct(&mut all, 0.99);
    let first50 = pct(&mut firsts, 0.5);
    let first_max = pct(&mut firsts, 1.0);
    let last50 = pct(&mut lasts, 0.5);

    // 3. 64 file-backed prepares: sequential vs ops.
    let t = Instant::now();
    for be in &files {
        ctx.prepare(be).unwrap();
    }
    let seq = t.elapsed();
    for be in &files {
        ctx.release(be).unwrap();
        unprepare(&writer, be);
    }
    let t = Instant::now();
    let ops: Vec<Op> = files
        .iter()
        .map(|b| ctx.start(b, Action::Add).unwrap())
        .collect();
    let done = wait_all(&ops, t);
    let par = *done.iter().max().unwrap();
    for mut o in ops {
        o.finish().unwrap();
    }
    let rel: Vec<Op> = files
        .iter()
        .map(|b| ctx.start(b, Action::Remove).unwrap())
        .collect();
    wait_all(&rel, Instant::now());

    println!("ops bench, N = {n} other backends, 4 workers, embedded xenstored");
    println!("| measure | value |\n|---|---:|");
    println!(
        "| xenstore round trip (read), p50 / p99 | {:.1} / {:.1} µs |",
        us(rt50),
        us(rt99)
    );
    println!(
        "| op start that queues, lock held elsewhere (10 × 196 ops), p50 / p99 / max | {:.1} / {:.1} / {:.1} µs |",
        us(s50),
        us(s99),
        us(smax)
    );
    println!(
        "| op start, first 4 of a round (workers idle; the first wakes one), p50 / max | {:.1} / {:.1} µs |",
        us(w50),
        us(wmax)
    );
    println!(
        "| op start, all 2000, p50 / p99 | {:.1} / {:.1} µs |",
        us(a50),
        us(a99)
    );
    println!(
        "| one synchronous phy prepare, lock free, p50 | {:.2} ms |",
        sync50.as_secs_f64() * 1e3
    );
    println!(
        "| one synchronous phy prepare after 100 ms idle, p50 of 5 | {:.2} ms |",
        idle50.as_secs_f64() * 1e3
    );
    println!(
        "| holder's exit → first op done, median / max of 10 rounds | {:.2} / {:.2} ms |",
        first50.as_secs_f64() * 1e3,
        first_max.as_secs_f64() * 1e3
    );
    println!(
        "| holder's exit → all 200 ops of a round done, median | {:.1} ms |",
        last50.as_secs_f64() * 1e3
    );
    println!(
        "| 64 file prepares, sequential `prepare` | {:.1} ms |",
        seq.as_secs_f64() * 1e3
    );
    println!(
        "| 64 file prepares, ops started together | {:.1} ms |",
        par.as_secs_f64() * 1e3
    );
    println!(
        "verdict: op start p99 (all 2000) {} one round trip's p50; first op of every round {} 50 ms after the release",
        if a99 < rt50 { "below" } else { "NOT below" },
        if first_max < Duration::from_millis(50) {
            "within"
        } else {
            "NOT within"
        }
    );
    drop(ctx);
    drop(images);
    let _ = xenblock::sys::loopdev::detach(&phy);
    let _ = std::fs::remove_dir_all(&lock_dir);
    drop(daemon);
}
