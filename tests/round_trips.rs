//! What a prepare asks of xenstored, seen on the wire: a proxy between the
//! library and the embedded xenstored counts round trips (a burst of
//! requests after an answer) and requests by type. With the hotplug lock
//! free, a prepare takes it first and reads the backend in the round trip
//! that also starts the decision (the claims index's sentinel write, or the
//! scan's listing of the roots) and the outcome's transaction; with the
//! lock held elsewhere it reads the backend first, as Xen's script does.
//! These tests hold the round-trip budget BENCHMARKS.md states, and check
//! that every transaction started is ended, whatever the prepare does.
//! Needs root (loop devices).

mod common;

use common::Env;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xenblock::store::client::XsClient;
use xenblock::store::wire::MsgType;
use xenblock::store::{Store, NO_TX};
use xenblock::{Config, Context, ErrorKind};

#[derive(Default)]
struct Counts {
    round_trips: AtomicUsize,
    tx_starts: AtomicUsize,
    tx_ends: AtomicUsize,
    /// Writes of a claims index's sentinel node.
    sentinels: AtomicUsize,
    /// Whether xenstored spoke last (the next request starts a round trip).
    answered: AtomicBool,
}

impl Counts {
    fn snapshot(&self) -> (usize, usize, usize) {
        (
            self.round_trips.load(Ordering::SeqCst),
            self.tx_starts.load(Ordering::SeqCst),
            self.tx_ends.load(Ordering::SeqCst),
        )
    }
}

/// A proxy on `listen` for the xenstored at `target`, one connection.
fn proxy(listen: &Path, target: &Path) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    counts.answered.store(true, Ordering::SeqCst);
    let l = UnixListener::bind(listen).unwrap();
    let target = target.to_path_buf();
    let c = counts.clone();
    std::thread::spawn(move || {
        let (client, _) = l.accept().unwrap();
        let server = UnixStream::connect(&target).unwrap();
        let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = c.clone();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                let n = match c_in.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if up.answered.swap(false, Ordering::SeqCst) {
                    up.round_trips.fetch_add(1, Ordering::SeqCst);
                }
                pending.extend_from_slice(&buf[..n]);
                while pending.len() >= 16 {
                    let w = |i: usize| u32::from_ne_bytes(pending[i..i + 4].try_into().unwrap());
                    let (ty, len) = (w(0), w(12) as usize);
                    if pending.len() < 16 + len {
                        break;
                    }
                    if ty == MsgType::TransactionStart as u32 {
                        up.tx_starts.fetch_add(1, Ordering::SeqCst);
                    } else if ty == MsgType::TransactionEnd as u32 {
                        up.tx_ends.fetch_add(1, Ordering::SeqCst);
                    } else if ty == MsgType::Write as u32
                        && String::from_utf8_lossy(&pending[16..16 + len])
                            .contains("/data/xenblock/sync-")
                    {
                        up.sentinels.fetch_add(1, Ordering::SeqCst);
                    }
                    pending.drain(..16 + len);
                }
                if s_out.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
        let (mut s_in, mut c_out) = (server, client);
        let mut buf = [0u8; 65536];
        loop {
            let n = match s_in.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Set before the answer is passed on: the client's next burst
            // cannot be read before it.
            c.answered.store(true, Ordering::SeqCst);
            if c_out.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    counts
}

fn proxied(env: &Env, claims_index: bool) -> (Context, Arc<Counts>) {
    let sock = env.dir.join("proxy.sock");
    let counts = proxy(&sock, &env.sock);
    let store = Arc::new(XsClient::connect(&sock, Duration::from_secs(10)).unwrap());
    let ctx = Context::new(Config {
        store: Some(store),
        claims_index,
        ..env.config()
    })
    .unwrap();
    (ctx, counts)
}

/// The round trips and transactions (started, ended) of `f`.
fn measure(counts: &Counts, f: impl FnOnce()) -> (usize, usize, usize) {
    let (r0, s0, e0) = counts.snapshot();
    f();
    // The proxy's threads may still be passing on the last answer.
    std::thread::sleep(Duration::from_millis(50));
    let (r1, s1, e1) = counts.snapshot();
    (r1 - r0, s1 - s0, e1 - e0)
}

/// Prepare and release `be` twice: the claims index is built on a
/// context's second decision, so the next one is served by it.
fn warm_up(ctx: &Context, env: &Env, be: &str) {
    for _ in 0..2 {
        ctx.prepare(be).unwrap();
        ctx.release(be).unwrap();
        env.unprepare(be);
    }
}

/// Other guests, so that a scan has domains and backends to read.
fn others(env: &mut Env) {
    for d in 20..23 {
        env.domain(d, &format!("/vm/other-{d}"));
        let img = env.image(&format!("other-{d}.img"), 1 << 20);
        let be = env.backend(d, 51712, &img.display().to_string(), "r");
        env.write(&format!("{be}/physical-device"), &format!("fe:{:x}", d));
    }
}

/// A host with other guests' disks and guest 5's phy backend, and a
/// context (with the claims index or without) whose connection goes
/// through the counting proxy.
fn phy_host(env: &mut Env, claims_index: bool) -> (String, Context, Arc<Counts>) {
    others(env);
    env.domain(5, "/vm/five");
    let dev = env.block_device("phy.img");
    let be = env.backend(5, 51712, &dev.display().to_string(), "w");
    let (ctx, counts) = proxied(env, claims_index);
    (be, ctx, counts)
}

#[test]
fn an_indexed_phy_prepare_takes_three_round_trips() {
    common::require_root();
    let mut env = Env::new();
    let (be, ctx, counts) = phy_host(&mut env, true);
    // The index is built on the second decision; measure the third.
    warm_up(&ctx, &env, &be);
    let (rts, starts, ends) = measure(&counts, || {
        ctx.prepare(&be).unwrap();
    });
    assert!(
        ctx.claims_index_stats().served >= 1,
        "the index was not used"
    );
    // The backend's nodes with the sentinel write and TRANSACTION_START;
    // the existence check with the writes; TRANSACTION_END.
    assert_eq!(rts, 3, "round trips of an indexed phy prepare");
    assert_eq!((starts, ends), (1, 1), "transactions started, ended");
    assert_eq!(
        env.read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    ctx.release(&be).unwrap();
}

/// A context warmed ahead (`Context::warm`, what libxl's plugin does when
/// libxl writes the backend) decides its very first prepare from the index:
/// the same three round trips as any indexed prepare, not the scan's five.
#[test]
fn a_warmed_context_s_first_prepare_takes_three_round_trips() {
    common::require_root();
    let mut env = Env::new();
    let (be, ctx, counts) = phy_host(&mut env, true);
    let ctx = Arc::new(ctx);
    ctx.warm(&be).unwrap();
    let t = std::time::Instant::now();
    while ctx.claims_index_stats().builds == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the warm-up built no index"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (rts, starts, ends) = measure(&counts, || {
        ctx.prepare(&be).unwrap();
    });
    let st = ctx.claims_index_stats();
    assert_eq!((st.scanned, st.builds), (0, 1), "{st:?}");
    assert!(st.served >= 1, "{st:?}");
    assert_eq!(
        rts, 3,
        "round trips of a warmed context's first phy prepare"
    );
    assert_eq!((starts, ends), (1, 1), "transactions started, ended");
    ctx.release(&be).unwrap();
}

#[test]
fn a_scanning_phy_prepare_takes_five_round_trips() {
    common::require_root();
    let mut env = Env::new();
    let (be, ctx, counts) = phy_host(&mut env, false);
    let (rts, starts, ends) = measure(&counts, || {
        ctx.prepare(&be).unwrap();
    });
    // The backend's nodes with the roots' listing and TRANSACTION_START;
    // the domains' listings; the other backends' nodes; the existence check
    // with the writes; TRANSACTION_END.
    assert_eq!(rts, 5, "round trips of a scanning phy prepare");
    assert_eq!((starts, ends), (1, 1), "transactions started, ended");
    ctx.release(&be).unwrap();
}

#[test]
fn every_transaction_started_is_ended_when_a_prepare_is_refused() {
    common::require_root();
    let mut env = Env::new();
    for claims_index in [true, false] {
        env.domain(6, "/vm/six");
        env.domain(7, "/vm/seven");
        let img = env.image(&format!("shared-{claims_index}.img"), 8 << 20);
        let a = env.backend(6, 51712, &img.display().to_string(), "w");
        let b = env.backend(7, 51712, &img.display().to_string(), "w");
        let sock = env.dir.join("proxy.sock");
        let _ = std::fs::remove_file(&sock);
        let (ctx, counts) = proxied(&env, claims_index);
        let (_, starts, ends) = measure(&counts, || {
            for _ in 0..3 {
                ctx.prepare(&a).unwrap();
                let e = ctx.prepare(&b).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
                ctx.release(&a).unwrap();
                env.store
                    .remove(NO_TX, &format!("{a}/physical-device"))
                    .unwrap();
                for be in [&a, &b] {
                    env.write(&format!("{be}/hotplug-status"), "");
                }
            }
        });
        assert!(
            starts >= 6,
            "{starts} transactions started (index {claims_index})"
        );
        assert_eq!(
            starts, ends,
            "every transaction started is ended (index {claims_index})"
        );
        assert!(env.loops_of(&img).is_empty());
        for be in [&a, &b] {
            env.store.remove(NO_TX, be).unwrap();
        }
    }
}

#[test]
fn an_indexed_file_prepare_takes_three_round_trips() {
    common::require_root();
    let mut env = Env::new();
    others(&mut env);
    env.domain(5, "/vm/five");
    let img = env.image("file.img", 8 << 20);
    let be = env.backend(5, 51712, &img.display().to_string(), "w");
    let (ctx, counts) = proxied(&env, true);
    warm_up(&ctx, &env, &be);
    let (rts, starts, ends) = measure(&counts, || {
        ctx.prepare(&be).unwrap();
    });
    // As a phy prepare: `state` is read with the backend, under the lock.
    assert_eq!(rts, 3, "round trips of an indexed file prepare");
    assert_eq!((starts, ends), (1, 1), "transactions started, ended");
    ctx.release(&be).unwrap();
    assert!(env.loops_of(&img).is_empty());
}

/// With the lock held by someone else (Xen's script, another toolstack),
/// the backend is read first and the lock waited for, as before; nothing
/// is started that is not ended.
#[test]
fn a_prepare_that_finds_the_lock_held_reads_first_then_waits() {
    common::require_root();
    let mut env = Env::new();
    let (be, ctx, counts) = phy_host(&mut env, false);
    let lock = xenblock::lock::HotplugLock::new(&env.dir.join("lock"), Duration::from_secs(5));
    let held = lock.acquire().unwrap();
    let (rts, starts, ends) = measure(&counts, || {
        std::thread::scope(|s| {
            let t = s.spawn(|| ctx.prepare(&be));
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
            t.join().unwrap().unwrap();
        });
    });
    // The backend's nodes (before the lock); the roots' listing with
    // TRANSACTION_START; the domains; the backends; check and writes; end.
    assert_eq!(rts, 6, "round trips of a prepare that waited for the lock");
    assert_eq!((starts, ends), (1, 1), "transactions started, ended");
    ctx.release(&be).unwrap();
}

/// A prepare that makes no decision (the backend is already prepared, or
/// has a custom script) still starts its transaction and its sentinel with
/// the backend's read: both are ended, and the next decision proves the
/// index current with a sentinel of its own.
#[test]
fn a_prepare_without_a_decision_ends_what_it_started() {
    common::require_root();
    let mut env = Env::new();
    env.domain(5, "/vm/five");
    env.domain(6, "/vm/six");
    let dev = env.block_device("phy.img");
    let be = env.backend(5, 51712, &dev.display().to_string(), "w");
    let script = env.dir.join("block-custom");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let custom = env.backend(6, 51712, &dev.display().to_string(), "w");
    env.write(&format!("{custom}/script"), &script.display().to_string());
    let (ctx, counts) = proxied(&env, true);
    warm_up(&ctx, &env, &be);
    let (_, starts, ends) = measure(&counts, || {
        ctx.prepare(&be).unwrap();
        assert_eq!(
            ctx.prepare(&be).unwrap(),
            xenblock::Prepared::AlreadyPrepared
        );
        assert_eq!(ctx.prepare(&custom).unwrap(), xenblock::Prepared::Script);
    });
    assert_eq!(starts, ends, "every transaction started is ended");
    ctx.release(&be).unwrap();
    env.unprepare(&be);
    // The sentinels of the two prepares that decided nothing are not taken
    // for the next decision's: another guest's read-write claim written
    // (without the lock) after them is seen.
    env.domain(7, "/vm/seven");
    let other = env.backend(7, 51712, &dev.display().to_string(), "w");
    let num = std::fs::metadata(&dev).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.rdev()
    });
    let rdev = num.unwrap();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    env.write(
        &format!("{other}/physical-device"),
        &format!("{major:x}:{minor:x}"),
    );
    let before = counts.sentinels.load(Ordering::SeqCst);
    let served = ctx.claims_index_stats().served;
    let e = ctx.prepare(&be).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(
        ctx.claims_index_stats().served > served,
        "the index was not used"
    );
    // A refusal decides twice (the second time naming devices), each with
    // a sentinel of its own.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        counts.sentinels.load(Ordering::SeqCst) - before,
        2,
        "sentinels written for the refused prepare's two decisions"
    );
}
