//! The block stack around a decision's targets, read from sysfs, and the
//! backend domain's active swap from `/proc/swaps` (Linux).
//!
//! Per device `/sys/dev/block/<major>:<minor>` leads to its directory:
//! `partition`, `start`, `size` (a partition; its parent directory is the
//! whole disk), subdirectories with a `partition` file (the partitions of a
//! disk), `holders/` and `slaves/` (devices stacked on it and under it),
//! `dm/name` and `md/level` (names for people), `loop/` (a bound loop
//! device; its backing file's identity comes from `LOOP_GET_STATUS64`).
//!
//! [`gather`] runs [`topology::walk`] over sysfs itself, so it reads only
//! the devices the decision needs: what the targets are built on, the
//! neighbours of those, and what is built on anything that overlaps — never
//! the whole of sysfs. Every path is taken from [`Sources`], so tests run
//! over synthetic trees. Entries that cannot be read become doubts in the
//! returned [`Topology`]; the walk is bounded by visited sets and
//! [`topology::MAX_NODES`].
use crate::sharing::{DevNum, Key, Swap};
use crate::sys::stat::FileKind;
use crate::topology::{self, Edge, Graph, Layer, Overlap, Topology};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// Where the facts come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// sysfs mount point (`/sys`).
    pub sys: PathBuf,
    /// `/proc/swaps`.
    pub swaps: PathBuf,
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// How loop devices' backing files are found.
    pub loops: Loops,
}

/// The loop devices' backing files.
#[derive(Debug, Clone)]
pub enum Loops {
    /// Ask the kernel (`LOOP_GET_STATUS64` on `/dev/loopN`).
    Kernel,
    /// A fixed table for tests: (loop device, backing st_dev, backing st_ino).
    Fixed(Vec<(DevNum, u64, u64)>),
}

impl Sources {
    /// The running system's.
    pub fn system() -> Sources {
        Sources {
            sys: PathBuf::from("/sys"),
            swaps: PathBuf::from("/proc/swaps"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            loops: Loops::Kernel,
        }
    }
}

/// The topology around `targets`, and which nodes overlap them.
pub fn gather(src: &Sources, targets: &[Key]) -> (Topology, Overlap) {
    let mut g = SysGraph {
        src,
        dirs: HashMap::new(),
        seen_edges: HashSet::new(),
        topo: Topology::default(),
    };
    if !src.sys.join("dev/block").is_dir() {
        g.topo.doubts.push(format!(
            "{} is not readable (is sysfs mounted?)",
            src.sys.join("dev/block").display()
        ));
    }
    let o = topology::walk(targets, &mut g);
    (g.topo, o)
}

/// The mounts of the backend domain (`Sources::mountinfo`).
pub fn mounts(src: &Sources) -> crate::error::Result<Vec<crate::sharing::Mount>> {
    let text = std::fs::read_to_string(&src.mountinfo).map_err(|e| {
        crate::error::Error::io(
            format!(
                "cannot read {} to check which devices are mounted (is /proc mounted?)",
                src.mountinfo.display()
            ),
            e,
        )
    })?;
    Ok(crate::sys::mountinfo::parse(&text))
}

/// The swap areas in `/proc/swaps` text: their paths, unescaped.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| {
            let p = p.strip_suffix("(deleted)").unwrap_or(p);
            crate::sys::mountinfo::unescape(p)
        })
        .collect()
}

/// Active swap of the backend domain as keys (a block device by number, a
/// swap file by (st_dev, st_ino)); what could not be identified is
/// returned as doubts.
pub fn swaps(src: &Sources) -> (Vec<Swap>, Vec<String>) {
    let text = match std::fs::read_to_string(&src.swaps) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("cannot read {}: {e}", src.swaps.display())],
            )
        }
    };
    let mut out = Vec::new();
    let mut doubts = Vec::new();
    for p in parse_swaps(&text) {
        match crate::sys::stat::stat(Path::new(&p)) {
            Ok(st) => match st.kind {
                FileKind::Block => out.push(Swap {
                    key: Key::Dev(DevNum::from_dev_t(st.rdev)),
                    name: p,
                }),
                FileKind::Regular => out.push(Swap {
                    key: Key::File {
                        dev: st.dev,
                        ino: st.ino,
                    },
                    name: p,
                }),
                _ => doubts.push(format!("swap {p} is neither a file nor a block device")),
            },
            Err(e) => doubts.push(format!("cannot identify swap {p}: {e}")),
        }
    }
    (out, doubts)
}

struct SysGraph<'a> {
    src: &'a Sources,
    /// Device directories found (None: not in sysfs).
    dirs: HashMap<DevNum, Option<PathBuf>>,
    seen_edges: HashSet<Edge>,
    topo: Topology,
}

fn read_trim(p: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(p)?.trim().to_string())
}

fn read_u64(p: &Path) -> io::Result<u64> {
    read_trim(p)?
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not a number"))
}

impl SysGraph<'_> {
    fn doubt(&mut self, what: String) {
        if self.topo.doubts.len() < 16 && !self.topo.doubts.contains(&what) {
            self.topo.doubts.push(what);
        }
    }

    fn edge(&mut self, e: Edge, out: &mut Vec<Edge>) {
        if self.seen_edges.insert(e) {
            self.topo.edges.push(e);
        }
        out.push(e);
    }

    /// The sysfs directory of `d`, named in `topo.names` on first sight.
    fn dir(&mut self, d: DevNum) -> Option<PathBuf> {
        if let Some(v) = self.dirs.get(&d) {
            return v.clone();
        }
        let link = self
            .src
            .sys
            .join(format!("dev/block/{}:{}", d.major, d.minor));
        let found = match std::fs::canonicalize(&link) {
            Ok(p) => Some(p),
            Err(e) => {
                let why = if e.kind() == io::ErrorKind::NotFound {
                    "not in sysfs (removed meanwhile?)".to_string()
                } else {
                    format!("unreadable: {e}")
                };
                self.doubt(format!("device {d}: {why}"));
                None
            }
        };
        if let Some(p) = &found {
            let name = self.name_of(p);
            self.topo.names.insert(Key::Dev(d), name);
        }
        self.dirs.insert(d, found.clone());
        found
    }

    /// `/dev/sdb1`, `dm-2 (vg0-lv1)`, `/dev/md0 (raid1)`.
    fn name_of(&self, dir: &Path) -> String {
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok(n) = read_trim(&dir.join("dm/name")) {
            return format!("{base} ({n})");
        }
        let dev = format!("/dev/{}", base.replace('!', "/"));
        match read_trim(&dir.join("md/level")) {
            Ok(l) if !l.is_empty() => format!("{dev} ({l})"),
            _ => dev,
        }
    }

    /// The device number in `<dir>/dev`, naming it on the way.
    fn dev_in(&mut self, dir: &Path) -> Option<DevNum> {
        match read_trim(&dir.join("dev")) {
            Ok(t) => match DevNum::parse_decimal(&t) {
                Some(d) => {
                    if !self.dirs.contains_key(&d) {
                        let name = self.name_of(dir);
                        self.topo.names.insert(Key::Dev(d), name);
                    }
                    Some(d)
                }
                None => {
                    self.doubt(format!("{}/dev holds {t:?}", dir.display()));
                    None
                }
            },
            Err(e) => {
                self.doubt(format!(
                    "{} vanished or is unreadable while being read ({e})",
                    dir.display()
                ));
                None
            }
        }
    }

    /// Names in `<dir>/<sub>/` (holders, slaves); missing means none.
    fn list(&mut self, dir: &Path, sub: &str) -> Vec<String> {
        match std::fs::read_dir(dir.join(sub)) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.doubt(format!("cannot list {}/{sub}: {e}", dir.display()));
                Vec::new()
            }
        }
    }

    fn class_dev(&mut self, name: &str) -> Option<DevNum> {
        if name.contains('/') || name == ".." || name == "." {
            return None;
        }
        let dir = self.src.sys.join("class/block").join(name);
        self.dev_in(&dir)
    }

    fn part_extent(&mut self, dir: &Path) -> Option<Layer> {
        match (read_u64(&dir.join("start")), read_u64(&dir.join("size"))) {
            (Ok(start), Ok(size)) => Some(Layer::Part { start, size }),
            _ => {
                self.doubt(format!(
                    "the extent of partition {} is unreadable",
                    dir.display()
                ));
                None
            }
        }
    }

    fn loop_backing(&mut self, d: DevNum, dir: &Path) -> Option<Key> {
        match &self.src.loops {
            Loops::Fixed(t) => t
                .iter()
                .find(|(l, _, _)| *l == d)
                .map(|&(_, dev, ino)| Key::File { dev, ino }),
            Loops::Kernel => {
                let node = PathBuf::from("/dev").join(dir.file_name()?);
                match crate::sys::loopdev::status(&node) {
                    Ok(Some(i)) => Some(Key::File {
                        dev: i.backing_dev,
                        ino: i.backing_ino,
                    }),
                    Ok(None) => None,
                    Err(e) => {
                        self.doubt(format!("cannot read loop device {}: {e}", node.display()));
                        None
                    }
                }
            }
        }
    }

    fn loops_over(&mut self, dev: u64, ino: u64) -> Vec<DevNum> {
        match &self.src.loops {
            Loops::Fixed(t) => t
                .iter()
                .filter(|(_, d, i)| (*d, *i) == (dev, ino))
                .map(|(l, _, _)| *l)
                .collect(),
            Loops::Kernel => match crate::sys::loopdev::backed_by(dev, ino) {
                Ok(v) => {
                    for l in &v {
                        self.topo
                            .names
                            .insert(Key::Dev(l.dev), l.path.display().to_string());
                    }
                    v.into_iter().map(|l| l.dev).collect()
                }
                Err(e) => {
                    self.doubt(format!("cannot list the loop devices: {e}"));
                    Vec::new()
                }
            },
        }
    }
}

impl Graph for SysGraph<'_> {
    fn down(&mut self, k: Key) -> Vec<Edge> {
        let mut out = Vec::new();
        let Key::Dev(d) = k else { return out };
        let Some(dir) = self.dir(d) else { return out };
        if dir.join("partition").exists() {
            if let (Some(parent), Some(layer)) = (dir.parent(), self.part_extent(&dir)) {
                if let Some(p) = self.dev_in(&parent.to_path_buf()) {
                    self.edge(
                        Edge {
                            upper: k,
                            lower: Key::Dev(p),
                            layer,
                        },
                        &mut out,
                    );
                }
            }
        }
        for name in self.list(&dir, "slaves") {
            if let Some(s) = self.class_dev(&name) {
                self.edge(
                    Edge {
                        upper: k,
                        lower: Key::Dev(s),
                        layer: Layer::Stacked,
                    },
                    &mut out,
                );
            }
        }
        if dir.join("loop").is_dir() {
            if let Some(f) = self.loop_backing(d, &dir) {
                self.edge(
                    Edge {
                        upper: k,
                        lower: f,
                        layer: Layer::Whole,
                    },
                    &mut out,
                );
            }
        }
        out
    }

    fn up(&mut self, k: Key) -> Vec<Edge> {
        let mut out = Vec::new();
        let d = match k {
            Key::Dev(d) => d,
            Key::File { dev, ino } => {
                for l in self.loops_over(dev, ino) {
                    self.edge(
                        Edge {
                            upper: Key::Dev(l),
                            lower: k,
                            layer: Layer::Whole,
                        },
                        &mut out,
                    );
                }
                return out;
            }
        };
        let Some(dir) = self.dir(d) else { return out };
        // Partitions: subdirectories with a `partition` file (whole disks only).
        if !dir.join("partition").exists() {
            let subdirs: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.join("partition").is_file())
                    .collect(),
                Err(e) => {
                    self.doubt(format!("cannot list {}: {e}", dir.display()));
                    Vec::new()
                }
            };
            for p in subdirs {
                if let (Some(layer), Some(c)) = (self.part_extent(&p), self.dev_in(&p)) {
                    self.edge(
                        Edge {
                            upper: Key::Dev(c),
                            lower: k,
                            layer,
                        },
                        &mut out,
                    );
                }
            }
        }
        for name in self.list(&dir, "holders") {
            if let Some(h) = self.class_dev(&name) {
                self.edge(
                    Edge {
                        upper: Key::Dev(h),
                        lower: k,
                        layer: Layer::Stacked,
                    },
                    &mut out,
                );
            }
        }
        out
    }
}
