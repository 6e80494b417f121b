//! The sharing rule (docs/contract.md) over overlap, against its definition:
//! arbitrary block topologies (partitions with extents, stacked devices,
//! loop devices over files, cycles), requests, claims, mounts and swap
//! through `sharing::decide`.
//!
//! The overlap relation is checked against a brute-force reference of its
//! definition (`topology` module docs): a and b overlap when one is built on
//! the other through any chain, or two different edges into a common lower
//! node, one on each side's way down, meet. So `topology::overlaps` is
//! symmetric, and a conflict through any chain of partitions/holders is
//! found. Then, for every non-Force request, with "on the target" meaning
//! "overlaps a requested key":
//! - `Ok` ⇒ no mount on the target is read-write, none at all for Write;
//!   no swap on the target; no claim on the target from another VM (per
//!   `same_vm`, ignoring our own backend) holds it Write, none at all for
//!   Write; for Write, no device dom0 stacks over the target, no doubt;
//! - `Err` ⇒ the refusal names the first offender in the rule's order
//!   (mounts, swap, claims, holders, doubts), which really offends (so
//!   `decide` refuses exactly when the definition says so);
//! - with no topology, `decide` is `check` (identity only);
//! - the message for people is one line.
//!
//! Plus: `same_vm` is symmetric and a frontend with an identity is the same
//! VM as itself; `DevNum` text and `dev_t` forms round-trip; the mountinfo
//! parser takes any text.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use xenblock::sharing::{
    self, Claim, DevNum, Facts, Key, Mode, Mount, Refusal, Request, Swap, VmIdentity,
};
use xenblock::topology::{self, Edge, Layer, Topology};

/// Small values collide often, which is where the rule is interesting.
#[derive(Arbitrary, Debug)]
enum Text {
    Small(u8),
    Raw(String),
}

impl Text {
    fn get(&self, prefix: &str) -> String {
        match self {
            Text::Small(n) => format!("{prefix}{}", n % 4),
            Text::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AMode {
    Read,
    Write,
    Force,
}

impl AMode {
    fn get(&self) -> Mode {
        match self {
            AMode::Read => Mode::Read,
            AMode::Write => Mode::Write,
            AMode::Force => Mode::Force,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AKey {
    Dev(u8, u8),
    File(u8, u8),
    BigDev(u32, u32),
}

impl AKey {
    fn get(&self) -> Key {
        match *self {
            AKey::Dev(a, b) => Key::Dev(DevNum {
                major: u32::from(a % 3),
                minor: u32::from(b % 3),
            }),
            AKey::File(d, i) => Key::File {
                dev: u64::from(d % 3),
                ino: u64::from(i % 3),
            },
            AKey::BigDev(major, minor) => Key::Dev(DevNum { major, minor }),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct AId {
    vm: Option<Text>,
    target_vm: Option<Text>,
}

impl AId {
    fn get(&self) -> VmIdentity {
        VmIdentity {
            vm: self.vm.as_ref().map(|t| t.get("/vm/")),
            target_vm: self.target_vm.as_ref().map(|t| t.get("/vm/")),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct AClaim {
    backend: Text,
    domid: Text,
    key: AKey,
    mode: AMode,
    identity: AId,
}

#[derive(Arbitrary, Debug)]
struct AMount {
    dev: AKey,
    mount_point: String,
    read_only: bool,
}

#[derive(Arbitrary, Debug)]
enum ALayer {
    Part(u8, u8),
    Stacked,
    Whole,
}

#[derive(Arbitrary, Debug)]
struct AEdge {
    upper: AKey,
    lower: AKey,
    layer: ALayer,
}

#[derive(Arbitrary, Debug)]
struct Input {
    edges: Vec<AEdge>,
    swaps: Vec<AKey>,
    doubt: bool,
    backend: Text,
    target: String,
    mode: AMode,
    identity: AId,
    keys: Vec<AKey>,
    claims: Vec<AClaim>,
    mounts: Vec<AMount>,
    mountinfo: String,
}

const BACKEND: &str = "backend/vbd/";
const MAX_EDGES: usize = 24;

/// Everything `a` is built on, `a` included.
fn down_star(edges: &[Edge], a: Key) -> HashSet<Key> {
    let mut seen = HashSet::from([a]);
    let mut todo = vec![a];
    while let Some(x) = todo.pop() {
        for e in edges.iter().filter(|e| e.upper == x) {
            if seen.insert(e.lower) {
                todo.push(e.lower);
            }
        }
    }
    seen
}

/// The overlap relation, straight from its definition.
fn ref_overlap(edges: &[Edge], a: Key, b: Key) -> bool {
    let (da, db) = (down_star(edges, a), down_star(edges, b));
    if da.contains(&b) || db.contains(&a) {
        return true;
    }
    edges.iter().any(|e| {
        da.contains(&e.upper)
            && edges.iter().any(|f| {
                f != e
                    && f.lower == e.lower
                    && db.contains(&f.upper)
                    && topology::edges_meet(&e.layer, &f.layer)
            })
    })
}

struct Oracle<'a> {
    edges: &'a [Edge],
    keys: &'a [Key],
}

impl Oracle<'_> {
    fn on_target(&self, k: &Key) -> bool {
        self.keys.iter().any(|t| ref_overlap(self.edges, *t, *k))
    }
    fn below_target(&self, k: &Key) -> bool {
        self.keys
            .iter()
            .any(|t| down_star(self.edges, *t).contains(k))
    }
    /// Devices dom0 stacks over the target: on it, not what it is built on,
    /// the upper end of a Stacked edge onto something on it.
    fn holders(&self) -> Vec<Key> {
        self.edges
            .iter()
            .filter(|e| e.layer == Layer::Stacked)
            .filter(|e| self.on_target(&e.upper) && self.on_target(&e.lower))
            .filter(|e| !self.below_target(&e.upper))
            .map(|e| e.upper)
            .collect()
    }
}

fn mount_offends(o: &Oracle, req: &Request, m: &Mount) -> bool {
    o.on_target(&Key::Dev(m.dev)) && (req.mode == Mode::Write || !m.read_only)
}

fn claim_offends(o: &Oracle, req: &Request, c: &Claim) -> bool {
    c.backend != req.backend
        && o.on_target(&c.key)
        && !sharing::same_vm(&req.identity, &c.identity)
        && (req.mode == Mode::Write || c.mode == Mode::Write)
}

fn layer(l: &ALayer) -> Layer {
    match *l {
        ALayer::Part(start, size) => Layer::Part {
            start: u64::from(start % 16),
            size: u64::from(size % 8),
        },
        ALayer::Stacked => Layer::Stacked,
        ALayer::Whole => Layer::Whole,
    }
}

fuzz_target!(|inp: Input| {
    let edges: Vec<Edge> = inp
        .edges
        .iter()
        .take(MAX_EDGES)
        .map(|e| Edge {
            upper: e.upper.get(),
            lower: e.lower.get(),
            layer: layer(&e.layer),
        })
        .collect();
    let mut topo = Topology {
        edges: edges.clone(),
        ..Topology::default()
    };
    if inp.doubt {
        topo.doubts.push("an entry vanished".into());
    }
    let req = Request {
        backend: inp.backend.get(BACKEND),
        target: inp.target.clone(),
        mode: inp.mode.get(),
        identity: inp.identity.get(),
        keys: inp.keys.iter().take(4).map(AKey::get).collect(),
    };
    let claims: Vec<Claim> = inp
        .claims
        .iter()
        .take(16)
        .map(|c| Claim {
            backend: c.backend.get(BACKEND),
            domid: c.domid.get(""),
            key: c.key.get(),
            mode: c.mode.get(),
            identity: c.identity.get(),
        })
        .collect();
    let mounts: Vec<Mount> = inp
        .mounts
        .iter()
        .take(16)
        .map(|m| Mount {
            dev: match m.dev.get() {
                Key::Dev(d) => d,
                Key::File { dev, ino } => DevNum {
                    major: dev as u32,
                    minor: ino as u32,
                },
            },
            mount_point: m.mount_point.clone(),
            read_only: m.read_only,
        })
        .collect();
    let swaps: Vec<Swap> = inp
        .swaps
        .iter()
        .take(4)
        .map(|k| Swap {
            key: k.get(),
            name: "swap".into(),
        })
        .collect();

    // The overlap relation: the definition, hence symmetric; every chain found.
    let mut nodes: Vec<Key> = edges.iter().flat_map(|e| [e.upper, e.lower]).collect();
    nodes.extend(req.keys.iter().copied());
    nodes.sort_by_key(|k| format!("{k:?}"));
    nodes.dedup();
    for a in &nodes {
        let o = topology::walk(&[*a], &mut topo.graph());
        for b in &nodes {
            let want = ref_overlap(&edges, *a, *b);
            assert_eq!(o.contains(b), want, "overlap({a:?}, {b:?}) over {edges:?}");
            if want {
                assert!(o.path(b).is_some());
                assert_eq!(o.path(b).unwrap().is_empty(), a == b);
            }
        }
    }

    let facts = Facts {
        topology: &topo,
        mounts: &mounts,
        swaps: &swaps,
        claims: &claims,
        locks: &[],
    };
    let verdict = sharing::decide(&req, &facts);
    let o = Oracle {
        edges: &edges,
        keys: &req.keys,
    };

    if req.mode == Mode::Force {
        assert_eq!(verdict, Ok(()), "mode ! skips all checks");
    } else {
        let first_mount = mounts.iter().find(|m| mount_offends(&o, &req, m));
        let first_swap = swaps.iter().find(|s| o.on_target(&s.key));
        let first_claim = claims.iter().find(|c| claim_offends(&o, &req, c));
        let holders = if req.mode == Mode::Write {
            o.holders()
        } else {
            Vec::new()
        };
        match &verdict {
            Ok(()) => {
                assert!(first_mount.is_none(), "passed over {first_mount:?}");
                assert!(first_swap.is_none(), "passed over swap {first_swap:?}");
                assert!(first_claim.is_none(), "passed over {first_claim:?}");
                assert!(holders.is_empty(), "wrote under {holders:?}");
                assert!(
                    req.mode != Mode::Write || !inp.doubt,
                    "wrote despite a doubt"
                );
            }
            Err(Refusal::Local {
                dev,
                mount_point,
                read_only,
                ..
            }) => {
                let first = first_mount.expect("a local refusal has an offending mount");
                assert_eq!(
                    (&first.dev, &first.mount_point, &first.read_only),
                    (dev, mount_point, read_only)
                );
            }
            Err(Refusal::Swap { .. }) => {
                assert!(first_mount.is_none(), "mounts are checked first");
                assert!(
                    first_swap.is_some(),
                    "a swap refusal has swap on the target"
                );
            }
            Err(Refusal::Guest {
                backend,
                domid,
                key,
                mode,
                ..
            }) => {
                assert!(first_mount.is_none() && first_swap.is_none(), "order");
                let first = first_claim.expect("a guest refusal has an offending claim");
                assert_eq!(
                    (&first.backend, &first.domid, &first.key, &first.mode),
                    (backend, domid, key, mode)
                );
            }
            Err(Refusal::Locked { .. }) => panic!("a lock refusal without any lock claim given"),
            Err(Refusal::Held { via }) => {
                assert!(first_mount.is_none() && first_swap.is_none() && first_claim.is_none());
                assert!(!holders.is_empty(), "held by nothing: {via:?}");
                assert!(!via.is_empty());
            }
            Err(Refusal::Exclusive { .. }) => {
                panic!("an exclusive refusal without any device held exclusively")
            }
            Err(Refusal::Doubt { .. }) => {
                assert!(first_mount.is_none() && first_swap.is_none() && first_claim.is_none());
                assert!(holders.is_empty());
                assert!(req.mode == Mode::Write && inp.doubt);
            }
        }
    }
    if let Err(r) = &verdict {
        let msg = r.message(&req);
        assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
    }
    // Without topology or swap, decide is the identity-only check.
    let plain = sharing::check(&req, &mounts, &claims);
    let bare = sharing::decide(
        &req,
        &Facts {
            topology: &Topology::default(),
            mounts: &mounts,
            swaps: &[],
            claims: &claims,
            locks: &[],
        },
    );
    assert_eq!(plain, bare);

    // same_vm: symmetric; reflexive exactly when there is an identity.
    for c in &claims {
        assert_eq!(
            sharing::same_vm(&req.identity, &c.identity),
            sharing::same_vm(&c.identity, &req.identity)
        );
    }
    let id = &req.identity;
    assert_eq!(
        sharing::same_vm(id, id),
        id.vm.is_some() || id.target_vm.is_some()
    );

    // Device numbers: the physical-device text and dev_t forms round-trip.
    for k in &req.keys {
        if let Key::Dev(d) = k {
            assert_eq!(DevNum::parse_hex(&d.to_string()), Some(*d));
            assert_eq!(DevNum::from_dev_t(d.to_dev_t()), *d);
        }
        let _ = k.to_string();
    }
    for m in xenblock::sys::mountinfo::parse(&inp.mountinfo) {
        let _ = DevNum::parse_decimal(&format!("{}:{}", m.dev.major, m.dev.minor));
    }
    let _ = xenblock::sys::blockdev::parse_swaps(&inp.mountinfo);
});
