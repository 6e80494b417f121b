//! Two contexts sharing one xenstore client, each with its claims index
//! (issue 25, item 6): each index reads only its own watch events, so
//! neither drains the other's and serves stale claims; a caller's own
//! watch events on that client are left for it. Needs root (loop devices).

mod common;

use common::{require_root, Env};
use std::time::Duration;
use xenblock::ErrorKind;

const DEVID: u32 = 51712;

#[test]
fn two_indexes_on_one_client_each_see_every_change() {
    require_root();
    let mut env = Env::new();
    let x = env.image("x.img", 4 << 20);
    let y = env.image("y.img", 4 << 20);
    let z = env.image("z.img", 4 << 20);
    for d in [5, 6, 7, 9] {
        env.domain(d, &format!("/vm/{d}"));
    }
    // The caller's own watch on the shared client.
    env.store.watch("/caller", "caller-token").unwrap();
    let a = env.ctx();
    let b = env.ctx();
    assert!(a.config().claims_index && b.config().claims_index);
    // Two decisions each: both indexes are built (the first scans).
    for (i, ctx) in [&a, &b].iter().enumerate() {
        for j in 0..2u32 {
            let be = env.backend(7, DEVID + 10 * i as u32 + j, &z.display().to_string(), "r");
            ctx.prepare(&be).unwrap();
            ctx.release(&be).unwrap();
            env.unprepare(&be);
        }
    }
    assert_eq!(a.claims_index_stats().builds, 1);
    assert_eq!(b.claims_index_stats().builds, 1);
    // Through A: domain 5 gets x read-write, then A decides again (its sync
    // reads the events of that change).
    let b5 = env.backend(5, DEVID, &x.display().to_string(), "w");
    a.prepare(&b5).expect("x to domain 5");
    let b6 = env.backend(6, DEVID, &y.display().to_string(), "w");
    a.prepare(&b6).expect("y to domain 6");
    env.write("/caller/n", "1");
    // Through B: x is refused to domain 9, from B's index.
    let served = b.claims_index_stats().served;
    let b9 = env.backend(9, DEVID, &x.display().to_string(), "w");
    let e = b.prepare(&b9).expect_err("x is domain 5's");
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("domain 5"), "{e}");
    assert!(
        b.claims_index_stats().served > served,
        "decided by the index"
    );
    // And the other way round: y is refused through A after B decided.
    let b9y = env.backend(9, DEVID + 1, &y.display().to_string(), "w");
    let e = a.prepare(&b9y).expect_err("y is domain 6's");
    assert!(e.to_string().contains("domain 6"), "{e}");
    // The caller's own events were left for it.
    let mut mine = Vec::new();
    while let Some(ev) = env.store.read_watch(Duration::from_millis(200)).unwrap() {
        if ev.token == "caller-token" {
            mine.push(ev.path);
        }
    }
    assert!(mine.iter().any(|p| p == "/caller/n"), "{mine:?}");
    for be in [&b5, &b6] {
        a.release(be).unwrap();
    }
}
