//! The block stack as plain data, and which of its nodes can share a block
//! with a target: the overlap relation the sharing rule decides on.
//!
//! A node is a [`Key`]: a block device (`major:minor`) or a file (st_dev,
//! st_ino). An [`Edge`] says that an *upper* node is made of (part of) a
//! *lower* one:
//! - [`Layer::Part`]: a partition of a whole disk, with its extent in
//!   512-byte sectors (`/sys/class/block/<part>/{start,size}`);
//! - [`Layer::Stacked`]: a device the kernel builds on another (`holders/`
//!   and `slaves/` in sysfs: device-mapper, LVM, md, bcache, ...), extent
//!   unknown;
//! - [`Layer::Whole`]: the upper covers all of the lower (a loop device over
//!   its backing file).
//!
//! Two nodes overlap when one is built on the other (through any chain), or
//! when both are built on a common lower node L through two different edges
//! into L that can share a block: two partitions whose sector ranges
//! intersect; two device-mapper devices whose tables map intersecting
//! sectors of L ([`Layer::Mapped`], read by `sys::dm`; a target that cannot
//! be reasoned about covers all of L), or such a device and a partition
//! that intersect; a partition and a stacked device of unknown extent
//! (assumed to meet); anything and a `Whole` edge. Two stacked devices of
//! unknown extent on the same lower device (md, bcache: the kernel lets
//! only one claim it) are taken to be disjoint. The relation is symmetric
//! by construction.
//!
//! [`walk`] computes every node that overlaps a set of targets, with the
//! shortest chain of hops that explains why, over any [`Graph`]: the facts
//! gathered from sysfs ([`Topology`]) or a generator in the fuzzer. The
//! gatherer in `sys::blockdev` runs the same walk over sysfs itself, so it
//! reads exactly the entries the decision needs.
use crate::devkey::Key;
use std::collections::{HashMap, HashSet, VecDeque};

/// How an upper node sits on a lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// A partition: `start` and `size` in 512-byte sectors of the lower disk.
    Part { start: u64, size: u64 },
    /// A device stacked on the lower one (md, bcache, ...): extent unknown.
    Stacked,
    /// A device-mapper device's targets map these sectors of the lower one
    /// (`start`, `size` in 512-byte sectors; from its table, one edge per
    /// range; a target the table does not let us reason about covers the
    /// whole lower device: `0`, [`u64::MAX`]).
    Mapped { start: u64, size: u64 },
    /// The upper node covers all of the lower one (loop device over a file).
    Whole,
    /// The upper node is the lower one seen another way: a file through
    /// overlayfs over the layer file its blocks live on.
    Same,
}

/// `upper` is made of (a part of) `lower`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Edge {
    pub upper: Key,
    pub lower: Key,
    pub layer: Layer,
}

/// Whether two different edges into the same lower node can share a block.
pub fn edges_meet(a: &Layer, b: &Layer) -> bool {
    match (extent(a), extent(b)) {
        _ if matches!(a, Layer::Whole | Layer::Same) || matches!(b, Layer::Whole | Layer::Same) => {
            true
        }
        (Some((s1, n1)), Some((s2, n2))) => {
            n1 > 0
                && n2 > 0
                && u128::from(s1) < u128::from(s2) + u128::from(n2)
                && u128::from(s2) < u128::from(s1) + u128::from(n1)
        }
        // Two stacked devices of unknown extent (md, bcache, ...): taken to
        // be disjoint, as the kernel lets only one of them claim a device.
        // Thin devices of one pool, and a snapshot beside its origin, are
        // kept apart by the kernel too (`dmtable::Extent::Arbitrated`).
        (None, None) => false,
        // A device-mapper range beside a stacked device of unknown extent:
        // either the kernel lets only one of them hold the device (md,
        // bcache exclude dm), or the unknown one is a thin device or a
        // snapshot whose blocks the kernel arbitrates (LVM's read-only pool
        // device is a linear map over the pool beside its thin devices).
        (Some(_), None) if matches!(a, Layer::Mapped { .. }) => false,
        (None, Some(_)) if matches!(b, Layer::Mapped { .. }) => false,
        // A partition beside a stacked device of unknown extent: assumed
        // to meet.
        _ => true,
    }
}

/// The sectors of the lower node an edge covers, when known.
fn extent(l: &Layer) -> Option<(u64, u64)> {
    match *l {
        Layer::Part { start, size } | Layer::Mapped { start, size } => Some((start, size)),
        Layer::Stacked | Layer::Whole | Layer::Same => None,
    }
}

/// Whether the upper node of such an edge is a device stacked by the
/// kernel (dm, md, ...).
pub fn is_stacked(l: &Layer) -> bool {
    matches!(l, Layer::Stacked | Layer::Mapped { .. })
}

/// A source of edges around a node. Implementations may fail to read some
/// entries; they say so through their own channel (see [`Topology::doubts`]).
pub trait Graph {
    /// Edges whose upper node is `k` (what `k` is made of).
    fn down(&mut self, k: Key) -> Vec<Edge>;
    /// Edges whose lower node is `k` (what is made of `k`).
    fn up(&mut self, k: Key) -> Vec<Edge>;
}

/// One step of an explanation, from the previous node to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub to: Key,
    pub how: How,
}

/// The kind of a [`Hop`], read as "<from> <how> <to>".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// from is a partition of to.
    PartOf,
    /// from is a device stacked on to.
    BuiltOn,
    /// from is a loop device over the file to.
    LoopOver,
    /// to is a partition of from; `beside` when it is not the way down from
    /// the target but a neighbour whose sectors meet it.
    Contains { beside: bool },
    /// to is a device stacked on from.
    HeldBy { beside: bool },
    /// to is a loop device over the file from.
    BackingOf,
    /// to is the same file as from, seen another way (overlayfs).
    SameFile,
}

fn hop_down(layer: Layer) -> How {
    match layer {
        Layer::Part { .. } => How::PartOf,
        Layer::Stacked | Layer::Mapped { .. } => How::BuiltOn,
        Layer::Whole => How::LoopOver,
        Layer::Same => How::SameFile,
    }
}

fn hop_up(layer: Layer, beside: bool) -> How {
    match layer {
        Layer::Part { .. } => How::Contains { beside },
        Layer::Stacked | Layer::Mapped { .. } => How::HeldBy { beside },
        Layer::Whole => How::BackingOf,
        Layer::Same => How::SameFile,
    }
}

/// Upper bound on the nodes one decision examines; beyond it the walk stops
/// and says so (the caller refuses a read-write request it cannot judge).
pub const MAX_NODES: usize = 1 << 16;

/// What [`walk`] found.
#[derive(Debug, Clone, Default)]
pub struct Overlap {
    /// Every node that overlaps a target (targets included), with the node
    /// it was reached from and how; targets have no predecessor.
    reached: HashMap<Key, (Option<Key>, How)>,
    /// Nodes the targets are built on (through any chain).
    below: HashSet<Key>,
    /// Nodes that are the upper end of a `Stacked` edge among the reached.
    stacked: HashSet<Key>,
    /// Reached nodes in the order they were found (targets first).
    order: Vec<Key>,
    /// The walk stopped at [`MAX_NODES`].
    pub truncated: bool,
}

impl Overlap {
    /// Whether `k` overlaps a target.
    pub fn contains(&self, k: &Key) -> bool {
        self.reached.contains_key(k)
    }

    /// Whether a target is built on `k` (and `k` is not itself a target).
    pub fn is_below(&self, k: &Key) -> bool {
        self.below.contains(k)
    }

    /// Whether a target is built on `k` (or `k` is a target).
    pub fn is_below_or_target(&self, k: &Key) -> bool {
        self.below.contains(k) || matches!(self.reached.get(k), Some((None, _)))
    }

    /// Reached nodes in discovery order.
    pub fn nodes(&self) -> &[Key] {
        &self.order
    }

    /// Reached devices that are stacked on something (dm, md, ...) and are
    /// not what a target is built on: dom0's own stacking over the target.
    pub fn holders(&self) -> impl Iterator<Item = &Key> {
        self.order
            .iter()
            .filter(|k| self.stacked.contains(k) && !self.is_below_or_target(k))
    }

    /// The hops from a target to `k` (empty for a target itself); `None`
    /// when `k` does not overlap.
    pub fn path(&self, k: &Key) -> Option<Vec<Hop>> {
        let mut hops = Vec::new();
        let mut cur = *k;
        let mut guard = 0usize;
        loop {
            let (pred, how) = *self.reached.get(&cur)?;
            let Some(p) = pred else { break };
            hops.push(Hop { to: cur, how });
            cur = p;
            guard += 1;
            if guard > self.reached.len() {
                break; // unreachable: predecessors form a forest
            }
        }
        hops.reverse();
        Some(hops)
    }
}

/// Every node that overlaps one of `targets`, over `g`.
///
/// 1. Down: everything the targets are built on (`D`, targets included).
/// 2. For each L in D: the edges into L from D are the targets' ways down;
///    every edge into L that meets *another* of them ([`edges_meet`]) brings
///    its upper node in; for a target, every edge into it does.
/// 3. Up: everything built on a node brought in by 2, transitively.
///
/// So `a` overlaps `b` exactly when one is built on the other, or some L
/// has two different edges e (from `a`'s way down) and e' (from `b`'s) that
/// meet: a symmetric relation.
///
/// Visited sets bound everything; loops in the data cannot hang it.
pub fn walk(targets: &[Key], g: &mut impl Graph) -> Overlap {
    let mut o = Overlap::default();
    let reach = |o: &mut Overlap, k: Key, pred: Option<Key>, how: How| -> bool {
        if o.reached.contains_key(&k) {
            return false;
        }
        if o.reached.len() >= MAX_NODES {
            o.truncated = true;
            return false;
        }
        o.reached.insert(k, (pred, how));
        o.order.push(k);
        true
    };
    let target_set: HashSet<Key> = targets.iter().copied().collect();
    // 1. down
    let mut queue: VecDeque<Key> = VecDeque::new();
    for t in targets {
        if reach(&mut o, *t, None, How::PartOf) {
            queue.push_back(*t);
        }
    }
    let mut down_order: Vec<Key> = targets.to_vec();
    while let Some(x) = queue.pop_front() {
        for e in g.down(x) {
            if e.upper != x {
                continue;
            }
            if is_stacked(&e.layer) {
                o.stacked.insert(x);
            }
            if reach(&mut o, e.lower, Some(x), hop_down(e.layer)) {
                o.below.insert(e.lower);
                down_order.push(e.lower);
                queue.push_back(e.lower);
            }
        }
    }
    let own: HashSet<Key> = down_order.iter().copied().collect();
    // 2. beside, and straight up from the targets
    let mut up_seen: HashSet<Key> = HashSet::new();
    let mut up_queue: VecDeque<Key> = VecDeque::new();
    for l in &down_order {
        let ups: Vec<Edge> = g.up(*l).into_iter().filter(|e| e.lower == *l).collect();
        let mine: Vec<Edge> = ups
            .iter()
            .filter(|e| own.contains(&e.upper))
            .copied()
            .collect();
        let is_target = target_set.contains(l);
        for e in &ups {
            if is_stacked(&e.layer) {
                o.stacked.insert(e.upper);
            }
            let meets = is_target
                || mine
                    .iter()
                    .any(|m| m != e && edges_meet(&m.layer, &e.layer));
            if !meets {
                continue;
            }
            if !own.contains(&e.upper) {
                reach(&mut o, e.upper, Some(*l), hop_up(e.layer, !is_target));
            }
            if !o.truncated && up_seen.insert(e.upper) {
                up_queue.push_back(e.upper);
            }
        }
    }
    // 3. up: everything built on what 2 brought in
    while let Some(x) = up_queue.pop_front() {
        for e in g.up(x) {
            if e.lower != x {
                continue;
            }
            if is_stacked(&e.layer) {
                o.stacked.insert(e.upper);
            }
            reach(&mut o, e.upper, Some(x), hop_up(e.layer, false));
            if !o.truncated && up_seen.insert(e.upper) {
                up_queue.push_back(e.upper);
            }
        }
    }
    o
}

/// Gathered facts about the block stack around a decision's targets.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Every edge read.
    pub edges: Vec<Edge>,
    /// Names for people: `/dev/sdb1`, `dm-2 (vg0-lv1)`, `/srv/a.img`.
    pub names: HashMap<Key, String>,
    /// What could not be read (a device vanished, an entry unreadable, too
    /// many devices): reasons to refuse a read-write request.
    pub doubts: Vec<String>,
    /// Devices the kernel refused to open exclusively (`O_EXCL`: `EBUSY`)
    /// while the decision was made: a mount (in any mount namespace), a
    /// multi-device filesystem, an external journal, dm, md, swap or any
    /// other exclusive opener holds them. With what holds each, when it
    /// could be told (empty otherwise). Read for read-write requests only.
    pub exclusive: Vec<(Key, String)>,
}

impl Topology {
    /// The name of `k` for people, or its numbers.
    pub fn name(&self, k: &Key) -> String {
        self.names.get(k).cloned().unwrap_or_else(|| match k {
            Key::Dev(d) => format!("device {d}"),
            Key::File { .. } => k.to_string(),
        })
    }

    /// An indexed view for [`walk`].
    pub fn graph(&self) -> Indexed<'_> {
        let mut by_upper: HashMap<Key, Vec<usize>> = HashMap::new();
        let mut by_lower: HashMap<Key, Vec<usize>> = HashMap::new();
        for (i, e) in self.edges.iter().enumerate() {
            by_upper.entry(e.upper).or_default().push(i);
            by_lower.entry(e.lower).or_default().push(i);
        }
        Indexed {
            t: self,
            by_upper,
            by_lower,
        }
    }
}

/// A [`Topology`] indexed by node.
pub struct Indexed<'a> {
    t: &'a Topology,
    by_upper: HashMap<Key, Vec<usize>>,
    by_lower: HashMap<Key, Vec<usize>>,
}

impl Graph for Indexed<'_> {
    fn down(&mut self, k: Key) -> Vec<Edge> {
        self.by_upper
            .get(&k)
            .map(|v| v.iter().map(|&i| self.t.edges[i]).collect())
            .unwrap_or_default()
    }
    fn up(&mut self, k: Key) -> Vec<Edge> {
        self.by_lower
            .get(&k)
            .map(|v| v.iter().map(|&i| self.t.edges[i]).collect())
            .unwrap_or_default()
    }
}

/// Whether `a` and `b` overlap in `t` (the relation [`walk`] computes).
pub fn overlaps(t: &Topology, a: Key, b: Key) -> bool {
    walk(&[a], &mut t.graph()).contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devkey::DevNum;

    fn d(major: u32, minor: u32) -> Key {
        Key::Dev(DevNum { major, minor })
    }
    fn part(upper: Key, lower: Key, start: u64, size: u64) -> Edge {
        Edge {
            upper,
            lower,
            layer: Layer::Part { start, size },
        }
    }
    fn stacked(upper: Key, lower: Key) -> Edge {
        Edge {
            upper,
            lower,
            layer: Layer::Stacked,
        }
    }
    fn topo(edges: Vec<Edge>) -> Topology {
        Topology {
            edges,
            ..Topology::default()
        }
    }

    const SDB: Key = Key::Dev(DevNum {
        major: 8,
        minor: 16,
    });
    const SDB1: Key = Key::Dev(DevNum {
        major: 8,
        minor: 17,
    });
    const SDB2: Key = Key::Dev(DevNum {
        major: 8,
        minor: 18,
    });

    #[test]
    fn partition_and_disk() {
        let t = topo(vec![
            part(SDB1, SDB, 2048, 1000),
            part(SDB2, SDB, 4096, 1000),
        ]);
        assert!(overlaps(&t, SDB1, SDB));
        assert!(overlaps(&t, SDB, SDB1));
        assert!(overlaps(&t, SDB, SDB2));
        assert!(!overlaps(&t, SDB1, SDB2));
        assert!(!overlaps(&t, SDB2, SDB1));
        let o = walk(&[SDB1], &mut t.graph());
        assert_eq!(
            o.path(&SDB).unwrap(),
            vec![Hop {
                to: SDB,
                how: How::PartOf
            }]
        );
    }

    #[test]
    fn overlapping_partition_ranges_meet() {
        let t = topo(vec![
            part(SDB1, SDB, 2048, 3000),
            part(SDB2, SDB, 4096, 1000),
        ]);
        assert!(overlaps(&t, SDB1, SDB2));
        assert!(overlaps(&t, SDB2, SDB1));
        let o = walk(&[SDB1], &mut t.graph());
        assert_eq!(
            o.path(&SDB2).unwrap()[1].how,
            How::Contains { beside: true }
        );
    }

    #[test]
    fn lvm_volumes_on_one_pv_are_disjoint_but_the_pv_is_not() {
        let (lv1, lv2) = (d(253, 1), d(253, 2));
        let t = topo(vec![
            part(SDB1, SDB, 2048, 1000),
            stacked(lv1, SDB1),
            stacked(lv2, SDB1),
        ]);
        assert!(!overlaps(&t, lv1, lv2));
        assert!(overlaps(&t, lv1, SDB));
        assert!(overlaps(&t, SDB, lv1));
        assert!(overlaps(&t, SDB1, lv2));
        let o = walk(&[SDB], &mut t.graph());
        let holders: Vec<&Key> = o.holders().collect();
        assert_eq!(holders, vec![&lv1, &lv2]);
        // From an LV, the LV itself and its PV are not "holders over it".
        let o = walk(&[lv1], &mut t.graph());
        assert_eq!(o.holders().count(), 0);
    }

    #[test]
    fn stacked_device_beside_a_partition_meets_it() {
        // A dm device over the whole disk, and a partition of that disk.
        let dm = d(253, 0);
        let t = topo(vec![part(SDB1, SDB, 2048, 1000), stacked(dm, SDB)]);
        assert!(overlaps(&t, SDB1, dm));
        assert!(overlaps(&t, dm, SDB1));
        let o = walk(&[SDB1], &mut t.graph());
        assert_eq!(o.holders().collect::<Vec<_>>(), vec![&dm]);
    }

    #[test]
    fn loop_over_file_and_what_is_on_the_loop() {
        let f = Key::File { dev: 0x801, ino: 5 };
        let (lo, lo_p1, lo2) = (d(7, 0), d(259, 0), d(7, 1));
        let t = topo(vec![
            Edge {
                upper: lo,
                lower: f,
                layer: Layer::Whole,
            },
            Edge {
                upper: lo2,
                lower: f,
                layer: Layer::Whole,
            },
            part(lo_p1, lo, 0, 100),
        ]);
        assert!(overlaps(&t, f, lo_p1));
        assert!(overlaps(&t, lo_p1, f));
        assert!(overlaps(&t, lo, lo2));
        assert!(overlaps(&t, lo_p1, lo2));
    }

    #[test]
    fn cycles_terminate() {
        let (a, b, c) = (d(253, 0), d(253, 1), d(253, 2));
        let t = topo(vec![stacked(a, b), stacked(b, c), stacked(c, a)]);
        assert!(overlaps(&t, a, c));
        let o = walk(&[a], &mut t.graph());
        assert_eq!(o.nodes().len(), 3);
        assert!(o.path(&c).is_some());
    }

    #[test]
    fn thousands_of_partitions() {
        let mut edges = Vec::new();
        for i in 0..5000u32 {
            edges.push(part(d(259, i), SDB, u64::from(i) * 10, 10));
        }
        let t = topo(edges);
        let o = walk(&[d(259, 17)], &mut t.graph());
        assert_eq!(o.nodes(), &[d(259, 17), SDB]);
        let o = walk(&[SDB], &mut t.graph());
        assert_eq!(o.nodes().len(), 5001);
    }

    #[test]
    fn edges_meet_is_symmetric_and_ranges_are_half_open() {
        let p = |start, size| Layer::Part { start, size };
        assert!(!edges_meet(&p(0, 10), &p(10, 10)));
        assert!(edges_meet(&p(0, 11), &p(10, 10)));
        assert!(!edges_meet(&p(0, 0), &p(0, 10)));
        assert!(edges_meet(&p(u64::MAX - 1, 5), &p(u64::MAX, 5)));
        let m = |start, size| Layer::Mapped { start, size };
        for a in [p(0, 5), p(3, 5), m(4, 2), Layer::Stacked, Layer::Whole] {
            for b in [p(0, 5), p(5, 5), m(9, 1), Layer::Stacked, Layer::Whole] {
                assert_eq!(edges_meet(&a, &b), edges_meet(&b, &a));
            }
        }
    }

    #[test]
    fn dm_extents_meet_by_their_sectors() {
        let p = |start, size| Layer::Part { start, size };
        let m = |start, size| Layer::Mapped { start, size };
        // Two dm devices: by their ranges (side by side LVs stay apart).
        assert!(!edges_meet(&m(0, 10), &m(10, 10)));
        assert!(edges_meet(&m(0, 11), &m(10, 10)));
        // A target we cannot reason about covers everything.
        assert!(edges_meet(&m(0, u64::MAX), &m(1 << 40, 8)));
        // Against a partition: by sectors too.
        assert!(!edges_meet(&m(0, 2048), &p(2048, 10)));
        assert!(edges_meet(&m(0, 2049), &p(2048, 10)));
        // Against a stacked device of unknown extent: md and bcache exclude
        // dm, and thin devices and snapshots are arbitrated by the kernel.
        assert!(!edges_meet(&m(0, 1), &Layer::Stacked));
        assert!(!edges_meet(&Layer::Stacked, &m(0, u64::MAX)));
        // A partition beside one is still assumed to meet it.
        assert!(edges_meet(&p(0, 1), &Layer::Stacked));
        // A thin pool: two thin LVs and LVM's read-only pool device (a
        // linear map over the pool) are side by side; the pool under them
        // stays held by each.
        let (tpool, t1, t2, pooldev) = (d(253, 2), d(253, 4), d(253, 5), d(253, 3));
        let on_pool = |u, layer| Edge {
            upper: u,
            lower: tpool,
            layer,
        };
        let thin = topo(vec![
            on_pool(t1, Layer::Stacked),
            on_pool(t2, Layer::Stacked),
            on_pool(pooldev, m(0, 1 << 20)),
        ]);
        for (x, y) in [(t1, t2), (t2, t1), (t1, pooldev), (pooldev, t2)] {
            assert!(!overlaps(&thin, x, y));
        }
        assert!(overlaps(&thin, t1, tpool) && overlaps(&thin, tpool, t2));
        // Two LVs on one PV through the walk: apart side by side, met when
        // their tables overlap, and the PV under both stays held by each.
        let (pv, a, b) = (d(8, 17), d(253, 1), d(253, 2));
        let mapped = |u, start, size| Edge {
            upper: u,
            lower: pv,
            layer: m(start, size),
        };
        let apart = topo(vec![mapped(a, 2048, 2048), mapped(b, 4096, 2048)]);
        assert!(!overlaps(&apart, a, b) && !overlaps(&apart, b, a));
        assert!(overlaps(&apart, a, pv) && overlaps(&apart, pv, b));
        let met = topo(vec![
            mapped(a, 2048, 2048),
            mapped(b, 0, 8),
            mapped(b, 4000, 8),
        ]);
        assert!(overlaps(&met, a, b) && overlaps(&met, b, a));
        // Before tables were read, two dm devices on one disk were taken
        // to be disjoint whatever they mapped (issue 25, item 7): the
        // stacked edges of unknown extent stay so for md and bcache.
        let old = topo(vec![stacked(a, pv), stacked(b, pv)]);
        assert!(!overlaps(&old, a, b));
    }

    // ---- property-style: walk against the definition ----

    use crate::test_rng::Rng;

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

    /// The definition in the module docs, by brute force.
    fn reference(edges: &[Edge], a: Key, b: Key) -> bool {
        let (da, db) = (down_star(edges, a), down_star(edges, b));
        da.contains(&b)
            || db.contains(&a)
            || edges.iter().any(|e| {
                da.contains(&e.upper)
                    && edges.iter().any(|f| {
                        f != e
                            && f.lower == e.lower
                            && db.contains(&f.upper)
                            && edges_meet(&e.layer, &f.layer)
                    })
            })
    }

    #[test]
    fn property_walk_is_the_definition_symmetric_and_finds_chains() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let nodes: Vec<Key> = (0..6)
            .map(|i| d(8, i))
            .chain((0..2).map(|i| Key::File { dev: 1, ino: i }))
            .collect();
        let (mut pairs, mut overlapping) = (0u32, 0u32);
        for _ in 0..3000 {
            let n = rng.below(9) as usize;
            let edges: Vec<Edge> = (0..n)
                .map(|_| Edge {
                    upper: nodes[rng.below(8) as usize],
                    lower: nodes[rng.below(8) as usize],
                    layer: match rng.below(3) {
                        0 => Layer::Part {
                            start: rng.below(8),
                            size: rng.below(5),
                        },
                        1 => Layer::Stacked,
                        _ => Layer::Whole,
                    },
                })
                .collect();
            let t = topo(edges.clone());
            for a in &nodes {
                let o = walk(&[*a], &mut t.graph());
                for b in &nodes {
                    let want = reference(&edges, *a, *b);
                    assert_eq!(o.contains(b), want, "{a:?} {b:?} {edges:?}");
                    assert_eq!(want, reference(&edges, *b, *a), "symmetric");
                    // Any chain down (partitions, holders, loops) overlaps.
                    if down_star(&edges, *a).contains(b) {
                        assert!(o.contains(b));
                        assert!(o.path(b).is_some());
                    }
                    pairs += 1;
                    overlapping += u32::from(want && a != b);
                }
            }
        }
        assert!(overlapping > pairs / 10, "{overlapping} of {pairs}");
    }
}
