//! Races: many threads in two processes attach the same image read-write for
//! different VMs; and xenblock racing Xen's own `block` script on one lock.
//! Exactly one may win. Needs root.

mod common;
mod upstream;
use common::{require_root, Env};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use xenblock::store::client::XsClient;
use xenblock::{Config, Context, ErrorKind};

const THREADS: u32 = 8;

/// Prepare `backend/vbd/<dom>/51712` for `doms` from one thread each.
/// Returns (connected, busy, other) counts.
fn race(ctx: &Arc<Context>, doms: Vec<u32>) -> (u32, u32, u32) {
    let barrier = Arc::new(Barrier::new(doms.len()));
    let handles: Vec<_> = doms
        .into_iter()
        .map(|d| {
            let (ctx, barrier) = (ctx.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                ctx.prepare(&format!("backend/vbd/{d}/51712"))
            })
        })
        .collect();
    let mut counts = (0, 0, 0);
    for h in handles {
        match h.join().unwrap() {
            Ok(_) => counts.0 += 1,
            Err(e) if e.kind() == ErrorKind::Busy => counts.1 += 1,
            Err(e) => {
                eprintln!("unexpected: {e}");
                counts.2 += 1
            }
        }
    }
    counts
}

/// The child half of the two-process race (re-entered through this test's
/// own binary): env XENBLOCK_RACE=<socket>|<lock dir>|<first domid>.
fn child_role(spec: &str) {
    let mut it = spec.split('|');
    let (sock, lock, first) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let first: u32 = first.parse().unwrap();
    let store =
        Arc::new(XsClient::connect(Path::new(sock), std::time::Duration::from_secs(10)).unwrap());
    let ctx = Arc::new(
        Context::new(Config {
            store: Some(store),
            lock_dir: PathBuf::from(lock),
            ..Config::default()
        })
        .unwrap(),
    );
    let (ok, busy, other) = race(&ctx, (first..first + THREADS).collect());
    println!("RACE-RESULT {ok} {busy} {other}");
}

#[test]
fn two_processes_eight_threads_each_exactly_one_wins() {
    if let Ok(spec) = std::env::var("XENBLOCK_RACE") {
        return child_role(&spec);
    }
    require_root();
    let mut env = Env::new();
    let img = env.image("contended.img", 1 << 20);
    for d in 10..10 + 2 * THREADS {
        env.domain(d, &format!("/vm/vm-{d}"));
        env.backend(d, 51712, &img.display().to_string(), "w");
    }
    let spec = format!(
        "{}|{}|{}",
        env.sock.display(),
        env.dir.join("lock").display(),
        10 + THREADS
    );
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "two_processes_eight_threads_each_exactly_one_wins",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("XENBLOCK_RACE", spec)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ctx = Arc::new(env.ctx());
    let mine = race(&ctx, (10..10 + THREADS).collect());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text
        .find("RACE-RESULT")
        .unwrap_or_else(|| panic!("no child result in {text:?}"));
    let line = text[at..].lines().next().unwrap();
    let n: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|x| x.parse().unwrap())
        .collect();
    let (ok, busy, other) = (mine.0 + n[0], mine.1 + n[1], mine.2 + n[2]);
    assert_eq!(
        (ok, busy, other),
        (1, 2 * THREADS - 1, 0),
        "exactly one winner"
    );
    assert_eq!(
        env.loops_of(&img).len(),
        1,
        "exactly one loop device backs the image"
    );
    let connected = (10..10 + 2 * THREADS)
        .filter(|d| {
            env.read(&format!("backend/vbd/{d}/51712/hotplug-status"))
                .as_deref()
                == Some("connected")
        })
        .count();
    assert_eq!(connected, 1);
}

#[test]
fn xenblock_and_the_upstream_script_exclude_each_other() {
    if std::env::var("XENBLOCK_RACE").is_ok() {
        return;
    }
    require_root();
    let mut env = Env::new();
    let dev = env.block_device("shared-phy.img");
    let lock_dir = env.dir.join("lock");
    let scripts = upstream::Scripts::install(&env.dir, &env.sock, &lock_dir);
    let doms: Vec<u32> = (20..32).collect();
    for d in &doms {
        env.domain(*d, &format!("/vm/vm-{d}"));
        env.backend(*d, 51712, &dev.display().to_string(), "w");
    }
    // Domains 20..24 go through Xen's script, 24..32 through xenblock, at once.
    let children: Vec<_> = doms[..4]
        .iter()
        .map(|d| scripts.spawn_block("add", &format!("backend/vbd/{d}/51712")))
        .collect();
    let ctx = Arc::new(env.ctx());
    let mine = race(&ctx, doms[4..].to_vec());
    let mut script_ok = 0;
    for c in children {
        if upstream::finish(c).0 == Some(0) {
            script_ok += 1;
        }
    }
    assert_eq!(mine.2, 0);
    assert_eq!(
        mine.0 + script_ok,
        1,
        "exactly one attach wins: xenblock {mine:?}, script {script_ok}"
    );
    let connected: Vec<u32> = doms
        .iter()
        .copied()
        .filter(|d| {
            env.read(&format!("backend/vbd/{d}/51712/hotplug-status"))
                .as_deref()
                == Some("connected")
        })
        .collect();
    assert_eq!(connected.len(), 1, "{connected:?}");
    for d in &doms {
        if !connected.contains(d) {
            assert_eq!(
                env.read(&format!("backend/vbd/{d}/51712/hotplug-status"))
                    .as_deref(),
                Some("busy"),
                "dom {d}"
            );
        }
    }
    assert!(
        !lock_dir.join("block").exists(),
        "the lock was released by everyone"
    );
}
