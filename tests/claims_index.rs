//! The claims index (`src/index.rs`) against the embedded xenstored:
//! every decision a long-lived context makes with the index equals the
//! decision of a context that scans, over random interleavings of other
//! writers (adds, removes, mode and identity changes, domains destroyed,
//! between and during prepares); and under faults (a watch storm, a
//! xenstored restart, a dropped-event queue) it falls back to the scan,
//! never decides wrongly, never blocks past its bounds. Needs root (the
//! block devices are loop devices the test makes): fails, never skips.

mod common;

use common::{require_root, Env};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use xenblock::store::client::XsClient;
use xenblock::store::{Store, NO_TX};
use xenblock::{Config, Context, Flavour};

const PROBE: &str = "backend/vbd/99/51712";
const PROBE_VM: &str = "vm-probe";
const ROOTS: [&str; 3] = ["vbd", "vbd3", "qdisk"];
const DOMS: u32 = 6;
const DEVS: u32 = 3;

/// The storage other backends (and the probe) name: loop devices the test
/// made, and plain files (named by path in vbd3/qdisk `params`).
struct Targets {
    devs: Vec<(PathBuf, String)>, // (node, physical-device hex)
    files: Vec<PathBuf>,
    /// FreeBSD contract: `vbd` backends name storage only by path.
    by_path: bool,
}

fn targets(env: &mut Env) -> Targets {
    let mut devs = Vec::new();
    for i in 0..3 {
        let node = env.block_device(&format!("dev{i}.img"));
        let st = xenblock::sys::stat::stat(&node).unwrap();
        let hex = format!(
            "{:x}:{:x}",
            nix::sys::stat::major(st.rdev),
            nix::sys::stat::minor(st.rdev)
        );
        devs.push((node, hex));
    }
    let files = (0..2)
        .map(|i| env.image(&format!("f{i}.img"), 1 << 20))
        .collect();
    Targets {
        devs,
        files,
        by_path: false,
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A backend under `ROOTS[root]` naming target `t` (devices first, then files).
    Add {
        root: usize,
        dom: u32,
        dev: u32,
        t: usize,
        mode: &'static str,
    },
    Remove {
        root: usize,
        dom: u32,
        dev: u32,
    },
    /// Only `physical-device` written (as a hotplug script does, later).
    Repoint {
        root: usize,
        dom: u32,
        dev: u32,
        d: usize,
    },
    Mode {
        root: usize,
        dom: u32,
        dev: u32,
        mode: &'static str,
    },
    /// The toolstack destroyed the domain: its backends and its home go.
    Destroy {
        dom: u32,
    },
    /// The domain's VM identity (some share the probe's VM).
    Vm {
        dom: u32,
        same_as_probe: bool,
    },
    /// A write the index must ignore (state, hotplug-status).
    Noise {
        root: usize,
        dom: u32,
        dev: u32,
    },
    /// Decide for the probe on target `t` with `mode`, both ways, and compare.
    Probe {
        t: usize,
        mode: &'static str,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop_oneof![Just("r"), Just("w"), Just("w!")];
    prop_oneof![
        6 => (0..3usize, 1..=DOMS, 0..DEVS, 0..5usize, mode.clone())
            .prop_map(|(root, dom, dev, t, mode)| Op::Add { root, dom, dev, t, mode }),
        2 => (0..3usize, 1..=DOMS, 0..DEVS).prop_map(|(root, dom, dev)| Op::Remove { root, dom, dev }),
        2 => (0..3usize, 1..=DOMS, 0..DEVS, 0..3usize)
            .prop_map(|(root, dom, dev, d)| Op::Repoint { root, dom, dev, d }),
        2 => (0..3usize, 1..=DOMS, 0..DEVS, mode.clone())
            .prop_map(|(root, dom, dev, mode)| Op::Mode { root, dom, dev, mode }),
        1 => (1..=DOMS).prop_map(|dom| Op::Destroy { dom }),
        1 => (1..=DOMS, any::<bool>()).prop_map(|(dom, same_as_probe)| Op::Vm { dom, same_as_probe }),
        2 => (0..3usize, 1..=DOMS, 0..DEVS).prop_map(|(root, dom, dev)| Op::Noise { root, dom, dev }),
        3 => (0..5usize, prop_oneof![Just("r"), Just("w")]).prop_map(|(t, mode)| Op::Probe { t, mode }),
    ]
}

fn be(root: usize, dom: u32, dev: u32) -> String {
    format!("backend/{}/{dom}/{}", ROOTS[root], 51712 + dev)
}

fn w(s: &dyn Store, p: &str, v: &str) {
    s.write(NO_TX, p, v.as_bytes()).unwrap();
}

/// Apply one writer op (not `Probe`).
fn apply(s: &dyn Store, tg: &Targets, op: &Op) {
    match op {
        Op::Add {
            root,
            dom,
            dev,
            t,
            mode,
        } => {
            let b = be(*root, *dom, *dev);
            let (params, phys) = match (*t < tg.devs.len(), *root) {
                (true, 0) => {
                    // As each flavour's result nodes name it (FreeBSD: by path).
                    let node = tg.devs[*t].0.display().to_string();
                    w(s, &format!("{b}/physical-device-path"), &node);
                    let phys = (!tg.by_path).then(|| tg.devs[*t].1.clone());
                    (node, phys)
                }
                (true, _) => (format!("aio:{}", tg.devs[*t].0.display()), None),
                (false, _) => (
                    format!("aio:{}", tg.files[*t - tg.devs.len()].display()),
                    None,
                ),
            };
            // Written as a toolstack does, node by node (each one an event).
            w(s, &format!("{b}/params"), &params);
            w(s, &format!("{b}/mode"), mode);
            w(s, &format!("{b}/frontend-id"), &dom.to_string());
            match phys {
                Some(p) => w(s, &format!("{b}/physical-device"), &p),
                None => s.remove(NO_TX, &format!("{b}/physical-device")).unwrap(),
            }
        }
        Op::Remove { root, dom, dev } => s.remove(NO_TX, &be(*root, *dom, *dev)).unwrap(),
        Op::Repoint { root, dom, dev, d } => {
            w(
                s,
                &format!("{}/physical-device", be(*root, *dom, *dev)),
                &tg.devs[*d].1,
            );
        }
        Op::Mode {
            root,
            dom,
            dev,
            mode,
        } => {
            let b = be(*root, *dom, *dev);
            if s.read(NO_TX, &b).unwrap().is_some() {
                w(s, &format!("{b}/mode"), mode);
            }
        }
        Op::Destroy { dom } => {
            for r in ROOTS {
                s.remove(NO_TX, &format!("backend/{r}/{dom}")).unwrap();
            }
            s.remove(NO_TX, &format!("/local/domain/{dom}")).unwrap();
        }
        Op::Vm { dom, same_as_probe } => {
            let vm = if *same_as_probe {
                PROBE_VM.to_string()
            } else {
                format!("vm-{dom}")
            };
            w(s, &format!("/local/domain/{dom}/vm"), &vm);
        }
        Op::Noise { root, dom, dev } => {
            let b = be(*root, *dom, *dev);
            w(s, &format!("{b}/state"), "4");
            w(s, &format!("{b}/hotplug-status"), "connected");
        }
        Op::Probe { .. } => {}
    }
}

/// Point the probe at target `t` with `mode`, as not yet prepared.
fn reset_probe(s: &dyn Store, tg: &Targets, t: usize, mode: &str) {
    let target = if t < tg.devs.len() {
        tg.devs[t].0.clone()
    } else {
        tg.files[t - tg.devs.len()].clone()
    };
    common::unprepare(s, PROBE);
    w(s, &format!("{PROBE}/params"), &target.display().to_string());
    w(s, &format!("{PROBE}/mode"), mode);
    w(s, &format!("{PROBE}/frontend-id"), "99");
    w(s, &format!("{PROBE}/state"), "2");
}

/// A decision, as comparable text; releases what a success attached.
fn decide(ctx: &Context, s: &dyn Store, tg: &Targets, t: usize, mode: &str) -> String {
    reset_probe(s, tg, t, mode);
    let r = ctx.prepare(PROBE);
    let out = match &r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{:?}: {e}", e.kind()),
    };
    if r.is_ok() {
        ctx.release(PROBE).unwrap();
    }
    reset_probe(s, tg, t, mode);
    out
}

fn clear(s: &dyn Store) {
    for r in ROOTS {
        for d in 1..=DOMS {
            s.remove(NO_TX, &format!("backend/{r}/{d}")).unwrap();
            s.remove(NO_TX, &format!("/local/domain/{d}")).unwrap();
        }
    }
}

/// `n` other domains (1001..), one read-write disk each, on device numbers
/// nobody uses (`fe:N`).
fn fake_others(s: &dyn Store, n: u32) {
    for d in 1..=n {
        let b = format!("backend/vbd/{}/51712", 1000 + d);
        w(s, &format!("{b}/params"), &format!("/dev/fake{d}"));
        w(s, &format!("{b}/mode"), "w");
        w(s, &format!("{b}/physical-device"), &format!("fe:{d:x}"));
    }
}

/// A context with its own connection and the index on.
fn indexed(env: &Env, flavour: Flavour) -> Context {
    let own = Arc::new(XsClient::connect(&env.sock, Duration::from_secs(10)).unwrap());
    Context::new(Config {
        store: Some(own),
        claims_index: true,
        flavour,
        ..env.config()
    })
    .unwrap()
}

fn scanning(env: &Env, flavour: Flavour) -> Context {
    Context::new(Config {
        claims_index: false,
        flavour,
        ..env.config()
    })
    .unwrap()
}

#[test]
fn index_decides_as_the_scan_over_random_interleavings() {
    differential(Flavour::Linux, 160);
}

/// FreeBSD's contract: `vbd` backends name their storage by path
/// (`physical-device-path`), so every one is stat'ed at each decision.
#[test]
fn index_decides_as_the_scan_freebsd_flavour() {
    differential(Flavour::FreeBsd, 40);
}

fn differential(flavour: Flavour, default_cases: u32) {
    require_root();
    let mut env = Env::new();
    let mut tg = targets(&mut env);
    tg.by_path = flavour == Flavour::FreeBsd;
    let store: Arc<dyn Store> = env.store.clone();
    env.domain(99, PROBE_VM);
    let ix = indexed(&env, flavour);
    let scan = scanning(&env, flavour);
    let probes = std::sync::atomic::AtomicU64::new(0);
    let refused = std::sync::atomic::AtomicU64::new(0);
    let cases = std::env::var("XENBLOCK_INDEX_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    });
    // Each case: a run of ops; a `true` flag runs the writes in another
    // thread while the indexed context prepares (during), else between.
    let strategy = proptest::collection::vec((op(), any::<bool>()), 1..40);
    runner
        .run(&strategy, |ops| {
            clear(&*store);
            for (op, during) in &ops {
                match op {
                    Op::Probe { t, mode } => {
                        let a = decide(&ix, &*store, &tg, *t, mode);
                        let b = decide(&scan, &*store, &tg, *t, mode);
                        probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if a.starts_with("Busy") {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        prop_assert_eq!(&a, &b, "index vs scan after {:?}", ops);
                    }
                    _ if *during => {
                        let s2 = store.clone();
                        let op2 = op.clone();
                        let burst = std::thread::scope(|sc| {
                            let h = sc.spawn(|| {
                                for _ in 0..3 {
                                    apply(&*s2, &tg, &op2);
                                }
                            });
                            let r = decide(&ix, &*store, &tg, 0, "r");
                            h.join().unwrap();
                            r
                        });
                        // Racing: either answer may be right, but never an error
                        // other than a refusal.
                        prop_assert!(
                            burst == "ok" || burst.starts_with("Busy"),
                            "decision during writes failed: {}",
                            burst
                        );
                    }
                    _ => apply(&*store, &tg, op),
                }
            }
            Ok(())
        })
        .unwrap();
    let st = ix.claims_index_stats();
    let (probes, refused) = (probes.into_inner(), refused.into_inner());
    eprintln!("probes compared: {probes}, refused: {refused}; index stats: {st:?}");
    // Both answers were exercised.
    assert!(refused > 0 && refused < probes, "{refused} of {probes}");
    // The index really decided (not a silent fallback to the scan).
    assert_eq!(st.builds, 1, "{st:?}");
    assert_eq!(st.invalidations, 0, "{st:?}");
    assert!(st.scanned <= 1, "only the first decision may scan: {st:?}");
    assert_eq!(scan.claims_index_stats().served, 0);
}

/// The index leaves the deciding backend's own changes unread (it is never
/// its own candidate); the next decision for *another* backend must see
/// them: a disk one backend of the context just prepared read-write is
/// refused to the next, and free again once that backend is gone.
#[test]
fn own_changes_are_seen_by_the_next_decision_for_another_backend() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let s: Arc<dyn Store> = env.store.clone();
    env.domain(99, PROBE_VM);
    env.domain(98, "vm-other");
    let ix = indexed(&env, Flavour::Linux);
    let scan = scanning(&env, Flavour::Linux);
    // Two decisions for the probe: the index is built and serving.
    assert_eq!(decide(&ix, &*s, &tg, 1, "w"), "ok");
    assert_eq!(decide(&ix, &*s, &tg, 1, "w"), "ok");
    let other = "backend/vbd/98/51712";
    for round in 0..3 {
        w(
            &*s,
            &format!("{other}/params"),
            &tg.devs[0].0.display().to_string(),
        );
        w(&*s, &format!("{other}/mode"), "w");
        w(&*s, &format!("{other}/frontend-id"), "98");
        w(&*s, &format!("{other}/state"), "2");
        // `other` decides (its own writes above are left unread) and
        // prepares: it now names dev 0 read-write.
        ix.prepare(other).unwrap();
        for (name, ctx) in [("index", &ix), ("scan", &scan)] {
            let d = decide(ctx, &*s, &tg, 0, "w");
            assert!(
                d.starts_with("Busy") && d.contains(other),
                "round {round}, {name}: {d}"
            );
            assert_eq!(decide(ctx, &*s, &tg, 1, "w"), "ok", "round {round}, {name}");
        }
        ix.release(other).unwrap();
        // The domain goes: its backend directory with it.
        s.remove(NO_TX, "backend/vbd/98").unwrap();
        assert_eq!(decide(&ix, &*s, &tg, 0, "w"), "ok", "round {round}");
        assert_eq!(decide(&scan, &*s, &tg, 0, "w"), "ok", "round {round}");
    }
    let st = ix.claims_index_stats();
    assert_eq!(st.invalidations, 0, "{st:?}");
    assert!(st.served >= 12, "the index decided: {st:?}");
}

/// The scan reads the other backends a bounded number of domains at a time:
/// a claim is found whichever pass its domain falls in (first, middle,
/// last), and the index agrees.
#[test]
fn the_scan_finds_a_claim_in_any_of_its_passes() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let s: Arc<dyn Store> = env.store.clone();
    env.domain(99, PROBE_VM);
    // 700 other domains, one disk each, on device numbers nobody uses:
    // three passes of the scan.
    const MANY: u32 = 700;
    fake_others(&*s, MANY);
    let ix = indexed(&env, Flavour::Linux);
    let scan = scanning(&env, Flavour::Linux);
    assert_eq!(decide(&scan, &*s, &tg, 0, "w"), "ok");
    for d in [1, 300, MANY] {
        let b = format!("backend/vbd/{}/51712", 1000 + d);
        env.domain(1000 + d, &format!("vm-{d}"));
        w(&*s, &format!("{b}/physical-device"), &tg.devs[0].1);
        for (name, ctx) in [("scan", &scan), ("index", &ix), ("index", &ix)] {
            let got = decide(ctx, &*s, &tg, 0, "w");
            assert!(
                got.starts_with("Busy") && got.contains(&b),
                "claim in domain {}, {name}: {got}",
                1000 + d
            );
        }
        w(&*s, &format!("{b}/physical-device"), &format!("fe:{d:x}"));
        assert_eq!(decide(&scan, &*s, &tg, 0, "w"), "ok", "domain {}", 1000 + d);
        assert_eq!(decide(&ix, &*s, &tg, 0, "w"), "ok", "domain {}", 1000 + d);
    }
}

/// A context on `sock` with its own connection; the lock dir is private.
fn ctx_on(env: &Env, sock: &std::path::Path, index: bool) -> Context {
    let own = Arc::new(XsClient::connect(sock, Duration::from_secs(10)).unwrap());
    Context::new(Config {
        store: Some(own),
        claims_index: index,
        ..env.config()
    })
    .unwrap()
}

/// Other disks: dom 1 writes dev 0 (vm-1), dom 2 reads dev 1 (the probe's VM).
fn seed(s: &dyn Store, tg: &Targets) {
    w(s, "/local/domain/99/vm", PROBE_VM);
    apply(
        s,
        tg,
        &Op::Vm {
            dom: 1,
            same_as_probe: false,
        },
    );
    apply(
        s,
        tg,
        &Op::Vm {
            dom: 2,
            same_as_probe: true,
        },
    );
    apply(
        s,
        tg,
        &Op::Add {
            root: 0,
            dom: 1,
            dev: 0,
            t: 0,
            mode: "w",
        },
    );
    apply(
        s,
        tg,
        &Op::Add {
            root: 2,
            dom: 2,
            dev: 0,
            t: 1,
            mode: "r",
        },
    );
    apply(
        s,
        tg,
        &Op::Add {
            root: 1,
            dom: 1,
            dev: 1,
            t: 3,
            mode: "w",
        },
    );
}

/// Every probe both ways; returns the index's answers.
fn compare_all(ix: &Context, scan: &Context, s: &dyn Store, tg: &Targets) -> Vec<String> {
    let mut out = Vec::new();
    for t in 0..5 {
        for mode in ["r", "w"] {
            let a = decide(ix, s, tg, t, mode);
            let b = decide(scan, s, tg, t, mode);
            assert_eq!(a, b, "target {t} mode {mode}");
            out.push(a);
        }
    }
    assert!(out.iter().any(|a| a == "ok") && out.iter().any(|a| a.starts_with("Busy")));
    out
}

/// `n` writes pipelined on one connection (as a busy toolstack makes them).
fn storm(sock: &std::path::Path, paths: impl Iterator<Item = String>) {
    let c = XsClient::connect(sock, Duration::from_secs(30)).unwrap();
    let payloads: Vec<Vec<u8>> = paths
        .map(|p| {
            let mut v = p.into_bytes();
            v.push(0);
            v.extend_from_slice(b"x");
            v
        })
        .collect();
    for r in c
        .pipeline(
            xenblock::store::wire::MsgType::Write,
            NO_TX,
            payloads,
            "storm",
        )
        .unwrap()
    {
        r.unwrap();
    }
}

#[test]
fn watch_storm_neither_misleads_nor_stalls_the_index() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let store: Arc<dyn Store> = env.store.clone();
    seed(&*store, &tg);
    let ix = ctx_on(&env, &env.sock, true);
    let scan = ctx_on(&env, &env.sock, false);
    compare_all(&ix, &scan, &*store, &tg);
    let sock = env.sock.clone();
    let mut worst = Duration::ZERO;
    std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            // Unrelated writes, then writes under a watched root that name
            // no storage (state nodes of 4000 backends).
            storm(
                &sock,
                (0..4000).map(|i| format!("/local/domain/5/data/n{i}")),
            );
            storm(&sock, (0..4000).map(|i| format!("backend/vbd/3/{i}/state")));
        });
        for _ in 0..10 {
            let t0 = std::time::Instant::now();
            let r = decide(&ix, &*store, &tg, 2, "w");
            worst = worst.max(t0.elapsed());
            assert!(r == "ok" || r.starts_with("Busy"), "{r}");
        }
        h.join().unwrap();
    });
    compare_all(&ix, &scan, &*store, &tg);
    let st = ix.claims_index_stats();
    eprintln!("storm: worst decision {worst:?}; {st:?}");
    // The documented bound: one sentinel wait (1 s) plus the reads, far
    // below the store timeout; the storm did not cost the index.
    assert!(worst < Duration::from_secs(3), "{worst:?}");
    assert_eq!(st.invalidations, 0, "{st:?}");
    assert_eq!(st.builds, 1, "{st:?}");
}

#[test]
fn xenstored_restart_falls_back_to_the_scan_then_rebuilds() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let dir = common::xsd::temp_dir("index-restart");
    let sock = dir.join("xs.sock");
    let mut xsd = common::xsd::Daemon::start_at(dir.clone(), sock.clone());
    let writer = XsClient::connect(&sock, Duration::from_secs(10)).unwrap();
    seed(&writer, &tg);
    let ix = ctx_on(&env, &sock, true);
    let scan = ctx_on(&env, &sock, false);
    let before = compare_all(&ix, &scan, &writer, &tg);
    assert_eq!(ix.claims_index_stats().builds, 1);
    // Restart: the new daemon starts empty; a toolstack writes the same
    // state again, except that dom 1 no longer holds dev 0.
    drop(xsd);
    std::fs::create_dir_all(&dir).unwrap();
    xsd = common::xsd::Daemon::start_at(dir.clone(), sock.clone());
    let writer = XsClient::connect(&sock, Duration::from_secs(10)).unwrap();
    seed(&writer, &tg);
    writer.remove(NO_TX, "backend/vbd/1/51712").unwrap();
    let after = compare_all(&ix, &scan, &writer, &tg);
    assert_ne!(before, after, "the restart changed what is claimed");
    let st = ix.claims_index_stats();
    eprintln!("restart: {st:?}");
    assert_eq!(st.invalidations, 1, "{st:?}");
    assert_eq!(st.builds, 2, "rebuilt after the fallback: {st:?}");
    drop(xsd);
}

#[test]
fn dropped_events_fall_back_to_the_scan() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let store: Arc<dyn Store> = env.store.clone();
    seed(&*store, &tg);
    let ix = ctx_on(&env, &env.sock, true);
    let scan = ctx_on(&env, &env.sock, false);
    compare_all(&ix, &scan, &*store, &tg);
    // More events than the client queues, and among them a change that
    // matters: dom 1 lets go of dev 0.
    let n = xenblock::store::client::MAX_QUEUED_EVENTS + 2000;
    storm(
        &env.sock,
        (0..n).map(|i| format!("backend/vbd/4/{i}/state")),
    );
    store.remove(NO_TX, "backend/vbd/1/51712").unwrap();
    let a = decide(&ix, &*store, &tg, 0, "w");
    let b = decide(&scan, &*store, &tg, 0, "w");
    assert_eq!(a, b);
    assert_eq!(a, "ok");
    compare_all(&ix, &scan, &*store, &tg);
    let st = ix.claims_index_stats();
    eprintln!("overflow: {st:?}");
    assert_eq!(st.invalidations, 1, "{st:?}");
    assert_eq!(st.builds, 2, "{st:?}");
}

/// A store that cannot watch (as the C callback store): always the scan.
struct NoWatch(Arc<XsClient>);

impl Store for NoWatch {
    fn read(&self, tx: u32, p: &str) -> xenblock::Result<Option<Vec<u8>>> {
        self.0.read(tx, p)
    }
    fn write(&self, tx: u32, p: &str, v: &[u8]) -> xenblock::Result<()> {
        self.0.write(tx, p, v)
    }
    fn remove(&self, tx: u32, p: &str) -> xenblock::Result<()> {
        self.0.remove(tx, p)
    }
    fn directory(&self, tx: u32, p: &str) -> xenblock::Result<Option<Vec<String>>> {
        self.0.directory(tx, p)
    }
    fn transaction_start(&self) -> xenblock::Result<u32> {
        self.0.transaction_start()
    }
    fn transaction_end(&self, tx: u32, commit: bool) -> xenblock::Result<bool> {
        self.0.transaction_end(tx, commit)
    }
}

#[test]
fn stores_without_watches_always_scan() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let store: Arc<dyn Store> = env.store.clone();
    seed(&*store, &tg);
    let cb = env.ctx_with(Arc::new(NoWatch(env.store.clone())));
    let scan = ctx_on(&env, &env.sock, false);
    compare_all(&cb, &scan, &*store, &tg);
    assert_eq!(
        cb.claims_index_stats(),
        xenblock::index::IndexStats::default()
    );
}

#[test]
fn a_connection_dropped_for_unread_events_neither_fails_nor_misleads() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    // A xenstored that disconnects clients with more than 64 KiB unread.
    let dir = common::xsd::temp_dir("index-slow-reader");
    let sock = dir.join("xs.sock");
    let xsd = common::xsd::Daemon::start_with(
        dir.clone(),
        sock.clone(),
        &["--max-queued-bytes", "65536"],
    );
    let writer = XsClient::connect(&sock, Duration::from_secs(10)).unwrap();
    seed(&writer, &tg);
    let ix = ctx_on(&env, &sock, true);
    let scan = ctx_on(&env, &sock, false);
    compare_all(&ix, &scan, &writer, &tg);
    // While the indexed context is idle: far more than 64 KiB of events
    // for it, and a change that matters.
    storm(&sock, (0..5000).map(|i| format!("backend/vbd/4/{i}/state")));
    writer.remove(NO_TX, "backend/vbd/1/51712").unwrap();
    // The next prepare finds its connection closed: it must reconnect and
    // decide as the scan does, not fail.
    compare_all(&ix, &scan, &writer, &tg);
    let st = ix.claims_index_stats();
    eprintln!("slow reader: {st:?}");
    assert_eq!(st.invalidations, 1, "{st:?}");
    assert_eq!(st.builds, 2, "{st:?}");
    drop(xsd);
}

#[test]
fn after_an_idle_spell_the_index_rereads_everything() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let store: Arc<dyn Store> = env.store.clone();
    seed(&*store, &tg);
    let ix = ctx_on(&env, &env.sock, true);
    let scan = ctx_on(&env, &env.sock, false);
    compare_all(&ix, &scan, &*store, &tg);
    assert_eq!(ix.claims_index_stats().reloads, 0);
    store.remove(NO_TX, "backend/vbd/1/51712").unwrap();
    std::thread::sleep(xenblock::index::IDLE_LIMIT + Duration::from_millis(500));
    compare_all(&ix, &scan, &*store, &tg);
    let st = ix.claims_index_stats();
    assert_eq!(st.reloads, 1, "{st:?}");
    assert_eq!((st.builds, st.invalidations), (1, 0), "{st:?}");
}

/// Waits (at most 20 s) until `ctx`'s index has been built `n` times.
fn wait_builds(ctx: &Context, n: u64) {
    let t = std::time::Instant::now();
    while ctx.claims_index_stats().builds < n {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the warm-up did not build the index: {:?}",
            ctx.claims_index_stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `Context::warm` (C: `xenblock_ctx_warm`) builds the index on a worker
/// thread before the first decision, which the index then serves (no
/// scan). A claim written after the warm-up and before the decision is
/// seen: the decision proves the index current first. Without the
/// warm-up the first decision scans.
#[test]
fn warm_serves_the_first_decision_and_misses_no_later_claim() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let s: Arc<dyn Store> = env.store.clone();
    env.domain(99, PROBE_VM);
    fake_others(&*s, 40);
    // Without: the first decision scans.
    let cold = indexed(&env, Flavour::Linux);
    assert_eq!(decide(&cold, &*s, &tg, 0, "w"), "ok");
    let st = cold.claims_index_stats();
    assert_eq!((st.scanned, st.served, st.builds), (1, 0, 0), "{st:?}");

    let ix = Arc::new(indexed(&env, Flavour::Linux));
    ix.warm(PROBE).unwrap();
    wait_builds(&ix, 1);
    // Warming again, once built, does nothing.
    ix.warm(PROBE).unwrap();
    // Written after the warm-up: domain 1041 has dev 0 read-write.
    let late = "backend/vbd/1041/51712";
    env.domain(1041, "vm-late");
    w(
        &*s,
        &format!("{late}/params"),
        &tg.devs[0].0.display().to_string(),
    );
    w(&*s, &format!("{late}/mode"), "w");
    w(&*s, &format!("{late}/physical-device"), &tg.devs[0].1);
    let got = decide(&ix, &*s, &tg, 0, "w");
    assert!(got.starts_with("Busy") && got.contains(late), "{got}");
    s.remove(NO_TX, "backend/vbd/1041").unwrap();
    assert_eq!(decide(&ix, &*s, &tg, 0, "w"), "ok");
    let st = ix.claims_index_stats();
    assert_eq!(
        (st.scanned, st.builds, st.invalidations),
        (0, 1, 0),
        "{st:?}"
    );
    assert!(st.served >= 2, "{st:?}");
}

/// What `warm` refuses, and where it does nothing: a path that is not a
/// backend's is an error for people; a context without an index, or a
/// backend outside `.../backend/vbd`, gets no index (and no error).
#[test]
fn warm_checks_its_path_and_is_a_no_op_without_an_index() {
    require_root();
    let env = Env::new();
    let ix = Arc::new(ctx_on(&env, &env.sock, true));
    for bad in [
        "",
        "relative/../x",
        "backend/vbd/1",
        "/local/domain/0/backend/vbd/x\0y/5",
    ] {
        let e = ix.warm(bad).unwrap_err();
        assert_eq!(
            e.kind(),
            xenblock::ErrorKind::InvalidArgument,
            "{bad:?}: {e}"
        );
        assert!(!e.to_string().contains("Error {"), "{e}");
    }
    let scan = Arc::new(ctx_on(&env, &env.sock, false));
    scan.warm(PROBE).unwrap();
    ix.warm("backend/vif/3/0").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(scan.claims_index_stats().builds, 0);
    assert_eq!(ix.claims_index_stats().builds, 0);
}

/// A warm-up races the host's own writes and a prepare: a claim written
/// while the index is being built (before, during or after its reads) is
/// seen by a prepare that comes while the warm-up may still run (it waits
/// for the warm-up, then proves the index current). Many rounds, each with
/// a fresh context and a claim written after a different delay.
#[test]
fn a_claim_written_during_the_warm_up_is_refused() {
    require_root();
    let mut env = Env::new();
    let tg = targets(&mut env);
    let s: Arc<dyn Store> = env.store.clone();
    env.domain(99, PROBE_VM);
    fake_others(&*s, 200);
    let late = "backend/vbd/1300/51712";
    env.domain(1300, "vm-late");
    for round in 0..12u64 {
        let ix = Arc::new(indexed(&env, Flavour::Linux));
        reset_probe(&*s, &tg, 0, "w");
        ix.warm(PROBE).unwrap();
        std::thread::sleep(Duration::from_micros(round * round * 150));
        w(
            &*s,
            &format!("{late}/params"),
            &tg.devs[0].0.display().to_string(),
        );
        w(&*s, &format!("{late}/mode"), "w");
        w(&*s, &format!("{late}/physical-device"), &tg.devs[0].1);
        let got = decide(&ix, &*s, &tg, 0, "w");
        assert!(
            got.starts_with("Busy") && got.contains(late),
            "round {round}: {got}"
        );
        s.remove(NO_TX, "backend/vbd/1300").unwrap();
        assert_eq!(decide(&ix, &*s, &tg, 0, "w"), "ok", "round {round}");
        let st = ix.claims_index_stats();
        assert_eq!(st.invalidations, 0, "round {round}: {st:?}");
    }
}
