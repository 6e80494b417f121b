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
    /// The overlayfs mounts, when the caller has them at hand (`None`:
    /// read from `mountinfo` when a file is first met).
    pub overlays: Option<Vec<Overlay>>,
    /// How device-mapper tables are read.
    pub dm: DmTables,
}

/// Device-mapper devices' tables.
#[derive(Debug, Clone)]
pub enum DmTables {
    /// Ask the kernel (`DM_TABLE_STATUS`).
    Kernel,
    /// A fixed table for tests: (dm device, its targets); a device not
    /// listed has a table that cannot be read.
    Fixed(Vec<(DevNum, Vec<crate::dmtable::Target>)>),
}

/// An overlayfs mount: what a file's identity through it says about the
/// file its blocks live on. All its layers on one filesystem (the usual
/// case): a non-directory's `st_ino` is its layer file's, and `st_dev` the
/// overlay's own; layers on several filesystems without `xino`: `stat`
/// already gives the layer file's identity; with `xino` (or when the
/// layers cannot be read), the layer file cannot be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The overlay's `st_dev` (a `dev_t`).
    pub dev: u64,
    /// Where it is mounted, for people.
    pub mount_point: String,
    pub layers: Layers,
}

/// See [`Overlay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    /// All on the filesystem with this `st_dev`.
    Same(u64),
    /// `stat` through the overlay gives the layer file.
    Real,
    /// Cannot be told.
    Unknown,
}

/// Split overlayfs' option value or list on unescaped `sep`, dropping the
/// backslashes that escape.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut esc = false;
    for c in s.chars() {
        if esc {
            out.last_mut().unwrap_or(&mut String::new()).push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(String::new());
        } else if let Some(l) = out.last_mut() {
            l.push(c);
        }
    }
    out
}

/// The overlayfs mounts in a mountinfo text, their layers examined
/// (`stat`). Costs nothing on a host without overlayfs.
pub fn overlays_in(text: &str) -> Vec<Overlay> {
    if !text.contains(" - overlay ") {
        return Vec::new();
    }
    crate::sys::mountinfo::parse_full(text)
        .into_iter()
        .filter(|f| f.fstype == "overlay")
        .map(|f| {
            let mut dirs = Vec::new();
            let mut xino = true; // `auto` unless shown off
            let opts = split_escaped(&f.super_options, ',');
            for o in &opts {
                match o.split_once('=') {
                    Some(("lowerdir", v)) => dirs.extend(split_escaped(v, ':')),
                    Some(("lowerdir+" | "datadir+" | "upperdir", v)) => dirs.push(v.to_string()),
                    Some(("xino", "off")) => xino = false,
                    _ => {}
                }
            }
            let devs: Option<Vec<u64>> = dirs
                .iter()
                .filter(|d| !d.is_empty())
                .map(|d| crate::sys::stat::stat(Path::new(d)).ok().map(|st| st.dev))
                .collect();
            let layers = match devs {
                Some(v) if !v.is_empty() && v.iter().all(|d| *d == v[0]) => Layers::Same(v[0]),
                Some(v) if !v.is_empty() && !xino => Layers::Real,
                _ => Layers::Unknown,
            };
            Overlay {
                dev: f.mount.dev.to_dev_t(),
                mount_point: f.mount.mount_point,
                layers,
            }
        })
        .collect()
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
            overlays: None,
            dm: DmTables::Kernel,
        }
    }
}

/// The topology around `targets`, and which nodes overlap them. With
/// `names` off, nothing is read only to name devices for people (`dm/name`,
/// `md/level`, `loop/backing_file`): a decision needs the graph, and a
/// refusal can gather again with names to explain itself.
pub fn gather(src: &Sources, targets: &[Key], names: bool) -> (Topology, Overlap) {
    let mut g = SysGraph {
        src,
        names,
        dirs: HashMap::new(),
        seen_edges: HashSet::new(),
        topo: Topology::default(),
        loops_read: Vec::new(),
        all_loops: None,
        overlays: src.overlays.clone(),
        dm_tables: HashMap::new(),
    };
    let o = topology::walk(targets, &mut g);
    if g.dirs.values().all(Option::is_none) && !src.sys.join("dev/block").is_dir() {
        g.topo.doubts.push(format!(
            "{} is not readable (is sysfs mounted?)",
            src.sys.join("dev/block").display()
        ));
    }
    (g.topo, o)
}

/// The backend domain's mount table (`Sources::mountinfo`) and active swap
/// (`Sources::swaps`). A context keeps them for its life: each file is read
/// again only after the kernel reports a change ([`crate::sys::procfile`]).
pub struct ProcFiles {
    mountinfo: crate::sys::procfile::Watched,
    swaps: crate::sys::procfile::Watched,
}

impl ProcFiles {
    /// The files of `src`.
    pub fn new(src: &Sources) -> ProcFiles {
        ProcFiles::new_owned(src, 0)
    }

    /// The same, their descriptors listed under `owner` (`sys::fdreg`).
    pub fn new_owned(src: &Sources, owner: u32) -> ProcFiles {
        ProcFiles {
            mountinfo: crate::sys::procfile::Watched::new_owned(&src.mountinfo, owner),
            swaps: crate::sys::procfile::Watched::new_owned(&src.swaps, owner),
        }
    }

    /// The mounts.
    pub fn mounts(&mut self) -> crate::error::Result<Vec<crate::sharing::Mount>> {
        match self.mountinfo.text() {
            Ok(text) => {
                let mut mounts = crate::sys::mountinfo::parse(text);
                mounts.extend(by_source(text));
                Ok(mounts)
            }
            Err(e) => Err(crate::error::Error::io(
                format!(
                    "cannot read {} to check which devices are mounted (is /proc mounted?)",
                    self.mountinfo.path().display()
                ),
                e,
            )),
        }
    }

    /// The overlayfs mounts ([`overlays_in`]).
    pub fn overlays(&mut self) -> Vec<Overlay> {
        self.mountinfo.text().map(overlays_in).unwrap_or_default()
    }

    /// Active swap as keys (a block device by number, a swap file by
    /// (st_dev, st_ino)); what could not be identified is returned as
    /// doubts.
    pub fn swaps(&mut self) -> (Vec<Swap>, Vec<String>) {
        let text = match self.swaps.text() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
            Err(e) => {
                return (
                    Vec::new(),
                    vec![format!("cannot read {}: {e}", self.swaps.path().display())],
                )
            }
        };
        swaps_in(text)
    }
}

/// The mounts mountinfo lists under an anonymous device number (btrfs)
/// whose source is a block device: that device, as mounted there (what
/// Xen's script compares). A source that cannot be identified is left out:
/// for read-write requests the kernel is asked ([`probe_exclusive`]).
fn by_source(text: &str) -> Vec<crate::sharing::Mount> {
    crate::sys::mountinfo::named_sources(text)
        .into_iter()
        .filter_map(|f| {
            let st = crate::sys::stat::stat(Path::new(&f.source)).ok()?;
            (st.kind == FileKind::Block).then(|| crate::sharing::Mount {
                dev: DevNum::from_dev_t(st.rdev),
                ..f.mount
            })
        })
        .collect()
}

/// Ask the kernel which devices that meet the targets are held
/// exclusively: the targets and what meets them from beside or above
/// (never what they are built on, which their own stack holds). An
/// `O_EXCL` open of a block device fails with `EBUSY` while a mount (in any
/// mount namespace), a multi-device filesystem, an external journal or log,
/// dm, md, swap or any other exclusive opener holds it; a partition's open
/// also fails while its whole disk is held, and the disk's while a
/// partition is. The first such device found is recorded in
/// `topo.exclusive`, with what holds it when `names` (read only to explain
/// a refusal). A device without a node in `/dev` is not asked.
pub fn probe_exclusive(src: &Sources, topo: &mut Topology, o: &Overlap, names: bool) {
    for k in o.nodes() {
        let Key::Dev(d) = *k else { continue };
        if o.is_below(k) {
            continue;
        }
        let Some(node) = dev_node(src, d) else {
            continue;
        };
        if held_exclusively(&node, d) {
            let by = if names {
                what_holds(src, d, &node)
            } else {
                String::new()
            };
            topo.exclusive.push((*k, by));
            return;
        }
    }
}

/// A loop device's backing file when it is a block device node (`losetup
/// /dev/X`): X, as a device. The node is named by sysfs `loop/backing_file`
/// and must be the file the kernel reports (`lo_device`, `lo_inode`).
pub fn backing_device(loop_dir: &Path, dev: u64, ino: u64) -> Option<Key> {
    // Device nodes live on devtmpfs (or a tmpfs /dev): an anonymous device
    // number. An image on a disk's filesystem costs nothing more.
    if DevNum::from_dev_t(dev).major != 0 {
        return None;
    }
    let p = read_trim(&loop_dir.join("loop/backing_file")).ok()?;
    let st = crate::sys::stat::stat(Path::new(&p)).ok()?;
    (st.kind == FileKind::Block && st.dev == dev && st.ino == ino)
        .then(|| Key::Dev(DevNum::from_dev_t(st.rdev)))
}

/// `/dev/<name>` of device `d`, by its sysfs name (`!` for `/`).
fn dev_node(src: &Sources, d: DevNum) -> Option<PathBuf> {
    let link = src.sys.join(format!("dev/block/{}:{}", d.major, d.minor));
    let rel = std::fs::read_link(link).ok()?;
    let name = rel.file_name()?.to_str()?.replace('!', "/");
    Some(PathBuf::from("/dev").join(name))
}

/// Whether the block device node `node`, which must be device `d`, cannot
/// be opened exclusively (`EBUSY`). Any other outcome (no such node, a
/// node of another device, no medium) says nothing and answers false.
fn held_exclusively(node: &Path, d: DevNum) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    match crate::sys::stat::stat(node) {
        Ok(st) if st.kind == FileKind::Block && DevNum::from_dev_t(st.rdev) == d => {}
        _ => return false,
    }
    // Read-only, non-blocking (no medium wait), closed at once: the claim
    // lasts only this open.
    let r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(node);
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
}

/// What holds device `d` (node `node`) exclusively, for people; empty when
/// it cannot be told (a mount in another mount namespace, an opener with
/// `O_EXCL`).
fn what_holds(src: &Sources, d: DevNum, node: &Path) -> String {
    let is_d = |p: &str| {
        crate::sys::stat::stat(Path::new(p))
            .is_ok_and(|st| st.kind == FileKind::Block && DevNum::from_dev_t(st.rdev) == d)
    };
    if let Ok(text) = read_proc(&src.mountinfo) {
        for f in crate::sys::mountinfo::parse_full(&text) {
            let how = if f.mount.read_only {
                "read-only"
            } else {
                "read-write"
            };
            let mp = &f.mount.mount_point;
            if f.source.starts_with('/') && is_d(&f.source) {
                return format!("mounted {how} at {mp} ({}) in dom0", f.fstype);
            }
            // XFS `logdev=`/`rtdev=`, and any other device named in the
            // superblock options.
            for o in f.super_options.split(',') {
                if let Some((opt, v)) = o.split_once('=') {
                    if v.starts_with('/') && is_d(v) {
                        return format!(
                            "the {opt} device of the {} filesystem mounted {how} at {mp} in dom0",
                            f.fstype
                        );
                    }
                }
            }
        }
    }
    let name = node
        .strip_prefix("/dev")
        .map(|p| p.to_string_lossy().replace('/', "!"))
        .unwrap_or_default();
    if name.is_empty() {
        return String::new();
    }
    // ext3/ext4 (jbd2) name an external journal after its device alone; an
    // internal one is `<device>-<inode>`.
    let proc = src.swaps.parent().unwrap_or(Path::new("/proc"));
    if proc.join("fs/jbd2").join(&name).is_dir() {
        return "the external journal of a mounted ext3/ext4 filesystem in dom0".into();
    }
    if let Ok(rd) = std::fs::read_dir(src.sys.join("fs/btrfs")) {
        for e in rd.flatten() {
            if e.path().join("devices").join(&name).exists() {
                return format!(
                    "a device of the mounted btrfs filesystem {} in dom0",
                    e.file_name().to_string_lossy()
                );
            }
        }
    }
    String::new()
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

/// [`ProcFiles::swaps`] of the `/proc/swaps` text.
fn swaps_in(text: &str) -> (Vec<Swap>, Vec<String>) {
    let mut out = Vec::new();
    let mut doubts = Vec::new();
    for p in parse_swaps(text) {
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

/// A `/proc` file, whose size `stat` does not tell, read whole.
fn read_proc(p: &Path) -> io::Result<String> {
    crate::sys::procfile::read_all(&mut std::fs::File::open(p)?)
}

/// What one listing of a device's sysfs directory tells.
#[derive(Debug, Clone)]
struct DevDir {
    path: PathBuf,
    /// It is a partition (a `partition` attribute).
    partition: bool,
    /// A bound loop device (a `loop/` subdirectory).
    bound_loop: bool,
    /// Entries named after the device and longer: its partitions, if it is
    /// a whole disk (`sdb1`, `nvme0n1p1`, `loop0p1`).
    subparts: Vec<PathBuf>,
}

struct SysGraph<'a> {
    src: &'a Sources,
    /// Read what names devices for people.
    names: bool,
    /// Device directories found (None: not in sysfs).
    dirs: HashMap<DevNum, Option<DevDir>>,
    seen_edges: HashSet<Edge>,
    topo: Topology,
    /// The loop devices whose status this walk has asked the kernel for,
    /// so that listing them all does not ask again.
    loops_read: Vec<crate::sys::loopdev::LoopInfo>,
    /// Every loop device with blocks, listed once per walk when first
    /// needed.
    all_loops: Option<Vec<crate::sys::loopdev::LoopInfo>>,
    /// The overlayfs mounts, once read.
    overlays: Option<Vec<Overlay>>,
    /// Device-mapper devices' extents on their lower devices, once read
    /// (`None`: the table could not be read).
    dm_tables: HashMap<DevNum, Option<Vec<(DevNum, crate::dmtable::Extent)>>>,
}

/// `base` joined with the relative link target `rel`, `..` taken lexically.
fn lexical_join(base: &Path, rel: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = base.to_path_buf();
    for c in rel.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            Component::RootDir => out = PathBuf::from("/"),
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => {}
        }
    }
    out
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

    /// The sysfs directory of `d` and what its listing tells (named in
    /// `topo.names` on first sight when names are wanted). The
    /// `dev/block/<major>:<minor>` link is read once and resolved by hand:
    /// it points into `devices/`, where no component is a link.
    fn dir(&mut self, d: DevNum) -> Option<DevDir> {
        if let Some(v) = self.dirs.get(&d) {
            return v.clone();
        }
        let base = self.src.sys.join("dev/block");
        let link = base.join(format!("{}:{}", d.major, d.minor));
        let found = match std::fs::read_link(&link) {
            Ok(rel) => {
                let path = lexical_join(&base, &rel);
                match self.list_dir(&path) {
                    Ok(dd) => Some(dd),
                    Err(e) => {
                        self.doubt(format!("device {d}: cannot list {}: {e}", path.display()));
                        None
                    }
                }
            }
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
        if let (Some(dd), true) = (&found, self.names) {
            let name = self.name_of(&dd.path);
            self.topo.names.insert(Key::Dev(d), name);
        }
        self.dirs.insert(d, found.clone());
        found
    }

    /// One listing of a device directory.
    fn list_dir(&self, path: &Path) -> io::Result<DevDir> {
        let own = path
            .file_name()
            .map(|n| n.as_encoded_bytes().to_vec())
            .unwrap_or_default();
        let mut dd = DevDir {
            path: path.to_path_buf(),
            partition: false,
            bound_loop: false,
            subparts: Vec::new(),
        };
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let n = e.file_name();
            match n.as_encoded_bytes() {
                b"partition" => dd.partition = true,
                b"loop" => dd.bound_loop = true,
                n if !own.is_empty() && n.len() > own.len() && n.starts_with(&own) => {
                    dd.subparts.push(e.path())
                }
                _ => {}
            }
        }
        Ok(dd)
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
                    if self.names && !self.dirs.contains_key(&d) {
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
        let key = self.loop_backing_key(d, dir)?;
        if !self.names {
            return Some(key);
        }
        if let Ok(p) = read_trim(&dir.join("loop/backing_file")) {
            if !p.is_empty() {
                self.topo.names.entry(key).or_insert(p);
            }
        }
        Some(key)
    }

    fn loop_backing_key(&mut self, d: DevNum, dir: &Path) -> Option<Key> {
        match &self.src.loops {
            Loops::Fixed(t) => t
                .iter()
                .find(|(l, _, _)| *l == d)
                .map(|&(_, dev, ino)| Key::File { dev, ino }),
            Loops::Kernel => {
                let node = PathBuf::from("/dev").join(dir.file_name()?);
                match crate::sys::loopdev::status(&node) {
                    Ok(Some(i)) => {
                        let key = backing_device(dir, i.backing_dev, i.backing_ino).unwrap_or(
                            Key::File {
                                dev: i.backing_dev,
                                ino: i.backing_ino,
                            },
                        );
                        self.loops_read.push(i);
                        Some(key)
                    }
                    Ok(None) => None,
                    Err(e) => {
                        self.doubt(format!("cannot read loop device {}: {e}", node.display()));
                        None
                    }
                }
            }
        }
    }

    /// The loop devices over block device `d` (`losetup /dev/X`): those
    /// whose backing file is `d`'s node in `/dev` (any name of it: udev's
    /// symlinks lead there).
    /// The edges of `upper` stacked on `lower` (a `slaves/`, `holders/`
    /// entry): for a device-mapper device (`dm-N`), one per range its table
    /// maps onto `lower`, the whole of `lower` for a target we cannot
    /// reason about, or when the table cannot be read or names no range on
    /// `lower`; for anything else, one of unknown extent.
    fn stacked(&mut self, upper: DevNum, upper_name: &str, lower: DevNum, out: &mut Vec<Edge>) {
        let (u, l) = (Key::Dev(upper), Key::Dev(lower));
        if !upper_name.starts_with("dm-") {
            self.edge(
                Edge {
                    upper: u,
                    lower: l,
                    layer: Layer::Stacked,
                },
                out,
            );
            return;
        }
        if !self.dm_tables.contains_key(&upper) {
            let t = match &self.src.dm {
                DmTables::Fixed(v) => v.iter().find(|(d, _)| *d == upper).map(|(_, t)| t.clone()),
                DmTables::Kernel => crate::sys::dm::table(upper).ok(),
            };
            self.dm_tables
                .insert(upper, t.map(|t| crate::dmtable::lower_extents(&t)));
        }
        let whole = Layer::Mapped {
            start: 0,
            size: u64::MAX,
        };
        let mut layers: Vec<Layer> = match self.dm_tables.get(&upper) {
            Some(Some(ext)) => ext
                .iter()
                .filter(|(d, _)| *d == lower)
                .map(|(_, e)| match *e {
                    crate::dmtable::Extent::Range { start, size } => Layer::Mapped { start, size },
                    crate::dmtable::Extent::Whole => whole,
                    crate::dmtable::Extent::Arbitrated => Layer::Stacked,
                })
                .collect(),
            _ => Vec::new(),
        };
        if layers.is_empty() {
            layers.push(whole);
        }
        for layer in layers {
            self.edge(
                Edge {
                    upper: u,
                    lower: l,
                    layer,
                },
                out,
            );
        }
    }

    fn overlays(&mut self) -> &[Overlay] {
        if self.overlays.is_none() {
            let text = read_proc(&self.src.mountinfo).unwrap_or_default();
            self.overlays = Some(overlays_in(&text));
        }
        self.overlays.as_deref().unwrap_or_default()
    }

    /// Files through overlayfs: a file reached through an overlay (its
    /// `st_dev`) is over the layer file its blocks live on (`down`), and a
    /// layer file is under the same inode seen through every overlay whose
    /// layers all live on its filesystem (`up`).
    fn overlay_edges(&mut self, k: Key, down: bool, out: &mut Vec<Edge>) {
        let Key::File { dev, ino } = k else { return };
        let names = self.names;
        let mut found = Vec::new();
        let mut doubt = None;
        for o in self.overlays() {
            match (down, o.layers) {
                (true, Layers::Same(l)) if o.dev == dev => {
                    found.push((k, Key::File { dev: l, ino }, o.mount_point.clone()))
                }
                (true, Layers::Unknown) if o.dev == dev => {
                    doubt = Some(format!(
                        "the file (inode {ino}) through the overlayfs at {} cannot be traced to \
                         the layer file it lives on (layers on several filesystems, or unreadable)",
                        o.mount_point
                    ))
                }
                (false, Layers::Same(l)) if l == dev && o.dev != dev => {
                    found.push((Key::File { dev: o.dev, ino }, k, o.mount_point.clone()))
                }
                _ => {}
            }
        }
        if let Some(d) = doubt {
            self.doubt(d);
        }
        for (upper, lower, mp) in found {
            if names {
                let (k, name) = if down {
                    (
                        lower,
                        format!("{lower} (the layer file under the overlayfs at {mp})"),
                    )
                } else {
                    (upper, format!("{upper} (through the overlayfs at {mp})"))
                };
                self.topo.names.entry(k).or_insert(name);
            }
            self.edge(
                Edge {
                    upper,
                    lower,
                    layer: Layer::Same,
                },
                out,
            );
        }
    }

    fn loops_over_device(&mut self, d: DevNum, dir: &Path) -> Vec<DevNum> {
        if !matches!(self.src.loops, Loops::Kernel) {
            return Vec::new();
        }
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            return Vec::new();
        };
        let node = PathBuf::from("/dev").join(name.replace('!', "/"));
        match crate::sys::stat::stat(&node) {
            Ok(st) if st.kind == FileKind::Block && DevNum::from_dev_t(st.rdev) == d => {
                self.loops_over(st.dev, st.ino)
            }
            _ => Vec::new(),
        }
    }

    fn loops_over(&mut self, dev: u64, ino: u64) -> Vec<DevNum> {
        match &self.src.loops {
            Loops::Fixed(t) => t
                .iter()
                .filter(|(_, d, i)| (*d, *i) == (dev, ino))
                .map(|(l, _, _)| *l)
                .collect(),
            Loops::Kernel => {
                // Listed once per decision: a walk asks for the loop devices
                // over each file and each device it meets.
                if self.all_loops.is_none() {
                    match crate::sys::loopdev::list_reusing(&self.loops_read) {
                        Ok(v) => self.all_loops = Some(v),
                        Err(e) => {
                            self.doubt(format!("cannot list the loop devices: {e}"));
                            self.all_loops = Some(Vec::new());
                        }
                    }
                }
                let v: Vec<(DevNum, PathBuf)> = self
                    .all_loops
                    .iter()
                    .flatten()
                    .filter(|l| l.is_backed_by(dev, ino))
                    .map(|l| (l.dev, l.path.clone()))
                    .collect();
                if self.names {
                    for (d, p) in &v {
                        self.topo
                            .names
                            .insert(Key::Dev(*d), p.display().to_string());
                    }
                }
                v.into_iter().map(|(d, _)| d).collect()
            }
        }
    }
}

impl Graph for SysGraph<'_> {
    fn down(&mut self, k: Key) -> Vec<Edge> {
        let mut out = Vec::new();
        let Key::Dev(d) = k else {
            self.overlay_edges(k, true, &mut out);
            return out;
        };
        let Some(dd) = self.dir(d) else { return out };
        let dir = &dd.path;
        if dd.partition {
            if let (Some(parent), Some(layer)) = (dir.parent(), self.part_extent(dir)) {
                if let Some(p) = self.dev_in(parent) {
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
        let own_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for name in self.list(dir, "slaves") {
            if let Some(s) = self.class_dev(&name) {
                self.stacked(d, &own_name, s, &mut out);
            }
        }
        if dd.bound_loop {
            if let Some(f) = self.loop_backing(d, dir) {
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
                self.overlay_edges(k, false, &mut out);
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
        let Some(dd) = self.dir(d) else { return out };
        let dir = &dd.path;
        // Partitions (whole disks only): the entries named after the disk
        // that have a `partition` attribute.
        if !dd.partition {
            let subdirs: Vec<&PathBuf> = dd
                .subparts
                .iter()
                .filter(|p| p.join("partition").is_file())
                .collect();
            for p in subdirs {
                if let (Some(layer), Some(c)) = (self.part_extent(p), self.dev_in(p)) {
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
        for l in self.loops_over_device(d, dir) {
            self.edge(
                Edge {
                    upper: Key::Dev(l),
                    lower: k,
                    layer: Layer::Whole,
                },
                &mut out,
            );
        }
        for name in self.list(dir, "holders") {
            if let Some(h) = self.class_dev(&name) {
                self.stacked(h, &name, d, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::{self, Claim, Facts, Mode, Mount, Refusal, Request, VmIdentity};
    use std::os::unix::fs::symlink;

    /// A synthetic sysfs tree in a private directory, removed on drop.
    struct Tree {
        root: PathBuf,
        /// Device-mapper tables (`DmTables::Fixed`).
        dm: std::cell::RefCell<Vec<(DevNum, Vec<crate::dmtable::Target>)>>,
    }

    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    impl Tree {
        fn new() -> Tree {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let root =
                std::env::temp_dir().join(format!("xenblock-sysfs-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("sys/class/block")).unwrap();
            std::fs::create_dir_all(root.join("sys/dev/block")).unwrap();
            Tree {
                root,
                dm: Default::default(),
            }
        }
        fn sys(&self) -> PathBuf {
            self.root.join("sys")
        }
        fn write(&self, rel: &str, v: &str) {
            let p = self.sys().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        }
        /// A whole disk (or dm/md/loop device) `name` with number `dev`.
        fn disk(&self, name: &str, dev: (u32, u32)) -> Key {
            self.write(
                &format!("class/block/{name}/dev"),
                &format!("{}:{}\n", dev.0, dev.1),
            );
            std::fs::create_dir_all(self.sys().join(format!("class/block/{name}/holders")))
                .unwrap();
            std::fs::create_dir_all(self.sys().join(format!("class/block/{name}/slaves"))).unwrap();
            symlink(
                format!("../../class/block/{name}"),
                self.sys().join(format!("dev/block/{}:{}", dev.0, dev.1)),
            )
            .unwrap();
            Key::Dev(DevNum {
                major: dev.0,
                minor: dev.1,
            })
        }
        /// Partition `name` of `disk`, sectors [start, start+size).
        fn part(&self, disk: &str, name: &str, dev: (u32, u32), start: u64, size: u64) -> Key {
            let rel = format!("class/block/{disk}/{name}");
            self.write(&format!("{rel}/dev"), &format!("{}:{}\n", dev.0, dev.1));
            self.write(&format!("{rel}/partition"), "1\n");
            self.write(&format!("{rel}/start"), &format!("{start}\n"));
            self.write(&format!("{rel}/size"), &format!("{size}\n"));
            std::fs::create_dir_all(self.sys().join(format!("{rel}/holders"))).unwrap();
            std::fs::create_dir_all(self.sys().join(format!("{rel}/slaves"))).unwrap();
            symlink(
                format!("{disk}/{name}"),
                self.sys().join(format!("class/block/{name}")),
            )
            .unwrap();
            symlink(
                format!("../../class/block/{disk}/{name}"),
                self.sys().join(format!("dev/block/{}:{}", dev.0, dev.1)),
            )
            .unwrap();
            Key::Dev(DevNum {
                major: dev.0,
                minor: dev.1,
            })
        }
        /// The table of dm device `dev`: (start, length, type, params).
        fn table(&self, dev: (u32, u32), targets: &[(u64, u64, &str, &str)]) {
            let t = targets
                .iter()
                .map(|&(start, length, kind, params)| crate::dmtable::Target {
                    start,
                    length,
                    kind: kind.into(),
                    params: params.into(),
                })
                .collect();
            self.dm.borrow_mut().push((
                DevNum {
                    major: dev.0,
                    minor: dev.1,
                },
                t,
            ));
        }
        /// `upper` is stacked on `lower` (holders/ and slaves/ entries).
        fn stack(&self, upper: &str, lower: &str) {
            self.write(&format!("class/block/{lower}/holders/{upper}"), "");
            self.write(&format!("class/block/{upper}/slaves/{lower}"), "");
        }
        fn sources(&self, loops: Vec<(DevNum, u64, u64)>) -> Sources {
            Sources {
                sys: self.sys(),
                swaps: self.root.join("swaps"),
                mountinfo: self.root.join("mountinfo"),
                loops: Loops::Fixed(loops),
                overlays: Some(Vec::new()),
                dm: DmTables::Fixed(self.dm.borrow().clone()),
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn req(target: &str, key: Key, mode: Mode) -> Request {
        Request {
            backend: "backend/vbd/9/51712".into(),
            target: target.into(),
            mode,
            identity: VmIdentity {
                vm: Some("/vm/mine".into()),
                target_vm: None,
            },
            keys: vec![key],
        }
    }

    fn claim(domid: &str, root: &str, key: Key, mode: Mode) -> Claim {
        Claim {
            backend: format!("backend/{root}/{domid}/51712"),
            domid: domid.into(),
            key,
            mode,
            identity: VmIdentity {
                vm: Some(format!("/vm/{domid}")),
                target_vm: None,
            },
        }
    }

    fn decide(
        src: &Sources,
        r: &Request,
        mounts: &[Mount],
        swaps: &[Swap],
        claims: &[Claim],
    ) -> Result<(), String> {
        let (topo, o) = gather(src, &r.keys, true);
        // What the gatherer found overlapping is what the rule computes.
        let again = topology::walk(&r.keys, &mut topo.graph());
        assert_eq!(o.nodes(), again.nodes());
        // Without names (how a decision is first made): the same graph,
        // overlap, doubts and verdict, and nothing read to name anything.
        let (bare, bare_o) = gather(src, &r.keys, false);
        let set = |t: &Topology| t.edges.iter().copied().collect::<HashSet<Edge>>();
        assert_eq!(set(&bare), set(&topo));
        assert_eq!(bare_o.nodes(), o.nodes());
        assert_eq!(bare.doubts, topo.doubts);
        assert!(bare.names.is_empty(), "{:?}", bare.names);
        let verdict = |t: &Topology| {
            let f = Facts {
                topology: t,
                mounts,
                swaps,
                claims,
                locks: &[],
            };
            sharing::decide(r, &f).map_err(|e| e.message(r))
        };
        assert_eq!(verdict(&bare).is_ok(), verdict(&topo).is_ok());
        verdict(&topo)
    }

    #[test]
    fn partition_against_whole_disk_both_ways() {
        let t = Tree::new();
        let sdb = t.disk("sdb", (8, 16));
        let sdb1 = t.part("sdb", "sdb1", (8, 17), 2048, 4096);
        let sdb2 = t.part("sdb", "sdb2", (8, 18), 6144, 4096);
        let src = t.sources(vec![]);
        let m = decide(
            &src,
            &req("/dev/sdb1", sdb1, Mode::Write),
            &[],
            &[],
            &[claim("3", "vbd", sdb, Mode::Write)],
        )
        .unwrap_err();
        assert!(
            m.starts_with(
                "/dev/sdb1 is part of /dev/sdb, which domain 3 has read-write \
                 (backend/vbd/3/51712); refusing to attach /dev/sdb1 read-write"
            ),
            "{m}"
        );
        let m = decide(
            &src,
            &req("/dev/sdb", sdb, Mode::Read),
            &[],
            &[],
            &[claim("3", "vbd", sdb1, Mode::Write)],
        )
        .unwrap_err();
        assert!(
            m.starts_with("/dev/sdb contains /dev/sdb1, which domain 3"),
            "{m}"
        );
        // Disjoint partitions share nothing; read-only sharing stays allowed.
        let c = [claim("3", "vbd", sdb1, Mode::Write)];
        assert_eq!(
            decide(&src, &req("/dev/sdb2", sdb2, Mode::Write), &[], &[], &c),
            Ok(())
        );
        let c = [claim("3", "vbd", sdb, Mode::Read)];
        assert_eq!(
            decide(&src, &req("/dev/sdb1", sdb1, Mode::Read), &[], &[], &c),
            Ok(())
        );
        // A mount of the partition in dom0 blocks the whole disk.
        let mounts = [Mount {
            dev: DevNum {
                major: 8,
                minor: 17,
            },
            mount_point: "/data".into(),
            read_only: true,
        }];
        let m = decide(&src, &req("/dev/sdb", sdb, Mode::Write), &mounts, &[], &[]).unwrap_err();
        assert!(
            m.starts_with("/dev/sdb contains /dev/sdb1, mounted read-only on /data in dom0"),
            "{m}"
        );
    }

    #[test]
    fn overlapping_partition_table_entries() {
        let t = Tree::new();
        t.disk("sdb", (8, 16));
        let sdb1 = t.part("sdb", "sdb1", (8, 17), 2048, 8192);
        let sdb2 = t.part("sdb", "sdb2", (8, 18), 6144, 4096);
        let src = t.sources(vec![]);
        let m = decide(
            &src,
            &req("/dev/sdb2", sdb2, Mode::Write),
            &[],
            &[],
            &[claim("3", "vbd", sdb1, Mode::Write)],
        )
        .unwrap_err();
        assert!(
            m.starts_with(
                "/dev/sdb2 is part of /dev/sdb, which contains the overlapping partition \
                 /dev/sdb1, which domain 3"
            ),
            "{m}"
        );
    }

    #[test]
    fn dm_over_disk_mounted_in_dom0() {
        let t = Tree::new();
        let sdb = t.disk("sdb", (8, 16));
        t.disk("dm-2", (253, 2));
        t.write("class/block/dm-2/dm/name", "vg0-lv1\n");
        t.stack("dm-2", "sdb");
        let src = t.sources(vec![]);
        let mounts = [Mount {
            dev: DevNum {
                major: 253,
                minor: 2,
            },
            mount_point: "/srv".into(),
            read_only: false,
        }];
        for mode in [Mode::Read, Mode::Write] {
            let m = decide(&src, &req("/dev/sdb", sdb, mode), &mounts, &[], &[]).unwrap_err();
            assert!(
                m.starts_with(
                    "/dev/sdb is held by dm-2 (vg0-lv1), mounted read-write on /srv in dom0"
                ),
                "{m}"
            );
        }
        // Not mounted: reading is fine, writing under it is not.
        assert_eq!(
            decide(&src, &req("/dev/sdb", sdb, Mode::Read), &[], &[], &[]),
            Ok(())
        );
        let m = decide(&src, &req("/dev/sdb", sdb, Mode::Write), &[], &[], &[]).unwrap_err();
        assert!(
            m.starts_with("/dev/sdb is held by dm-2 (vg0-lv1) in dom0"),
            "{m}"
        );
        // The LV itself is an ordinary guest disk.
        let lv = Key::Dev(DevNum {
            major: 253,
            minor: 2,
        });
        assert_eq!(
            decide(&src, &req("/dev/vg0/lv1", lv, Mode::Write), &[], &[], &[]),
            Ok(())
        );
        // ...but not while another VM has the disk under it.
        let m = decide(
            &src,
            &req("/dev/vg0/lv1", lv, Mode::Read),
            &[],
            &[],
            &[claim("4", "vbd", sdb, Mode::Write)],
        )
        .unwrap_err();
        assert!(
            m.starts_with("/dev/vg0/lv1 is built on /dev/sdb, which domain 4 has read-write"),
            "{m}"
        );
    }

    #[test]
    fn two_logical_volumes_on_one_pv_are_separate() {
        let t = Tree::new();
        t.disk("sdb", (8, 16));
        t.part("sdb", "sdb1", (8, 17), 2048, 1 << 20);
        let lv1 = t.disk("dm-1", (253, 1));
        let lv2 = t.disk("dm-2", (253, 2));
        t.write("class/block/dm-1/dm/name", "vg0-a\n");
        t.write("class/block/dm-2/dm/name", "vg0-b\n");
        t.stack("dm-1", "sdb1");
        t.stack("dm-2", "sdb1");
        // Side by side on the PV, as LVM allocates them (lv1 in two
        // segments around lv2).
        t.table(
            (253, 1),
            &[
                (0, 2048, "linear", "8:17 2048"),
                (2048, 2048, "linear", "8:17 6144"),
            ],
        );
        t.table((253, 2), &[(0, 2048, "linear", "8:17 4096")]);
        let src = t.sources(vec![]);
        let c = [claim("3", "vbd", lv2, Mode::Write)];
        assert_eq!(
            decide(&src, &req("/dev/vg0/a", lv1, Mode::Write), &[], &[], &c),
            Ok(())
        );
    }

    #[test]
    fn two_dm_devices_mapping_the_same_sectors_meet() {
        let t = Tree::new();
        t.disk("sdb", (8, 16));
        let a = t.disk("dm-1", (253, 1));
        let b = t.disk("dm-2", (253, 2));
        t.write("class/block/dm-1/dm/name", "a\n");
        t.write("class/block/dm-2/dm/name", "b\n");
        t.stack("dm-1", "sdb");
        t.stack("dm-2", "sdb");
        t.table((253, 1), &[(0, 4096, "linear", "8:16 2048")]);
        // dm-2 reaches sector 6000 of sdb, inside dm-1's [2048, 6144).
        t.table(
            (253, 2),
            &[
                (0, 100, "linear", "8:16 100000"),
                (100, 16, "linear", "8:16 6000"),
            ],
        );
        let src = t.sources(vec![]);
        let c = [claim("3", "vbd", b, Mode::Write)];
        let m = decide(&src, &req("/dev/mapper/a", a, Mode::Write), &[], &[], &c).unwrap_err();
        assert!(
            m.starts_with(
                "/dev/mapper/a is built on /dev/sdb, which is also held by dm-2 (b), which \
                 domain 3 has read-write"
            ),
            "{m}"
        );
        // Read-only on both sides stays shared.
        let c = [claim("3", "vbd", b, Mode::Read)];
        assert_eq!(
            decide(&src, &req("/dev/mapper/a", a, Mode::Read), &[], &[], &c),
            Ok(())
        );
    }

    #[test]
    fn dm_targets_we_cannot_reason_about_cover_their_whole_device() {
        let t = Tree::new();
        t.disk("sdb", (8, 16));
        let a = t.disk("dm-1", (253, 1));
        let b = t.disk("dm-2", (253, 2));
        let c = t.disk("dm-3", (253, 3));
        for (n, d) in [("dm-1", "a"), ("dm-2", "b"), ("dm-3", "c")] {
            t.write(&format!("class/block/{n}/dm/name"), d);
            t.stack(n, "sdb");
        }
        t.table((253, 1), &[(0, 8, "linear", "8:16 0")]);
        // A mirror leg far away, and a device whose table is unreadable.
        t.table(
            (253, 2),
            &[(0, 8, "mirror", "core 1 1024 1 8:16 1000000 0")],
        );
        let src = t.sources(vec![]);
        for other in [b, c] {
            let claims = [claim("3", "vbd", other, Mode::Write)];
            let m = decide(
                &src,
                &req("/dev/mapper/a", a, Mode::Write),
                &[],
                &[],
                &claims,
            )
            .unwrap_err();
            assert!(m.contains("domain 3 has read-write"), "{m}");
        }
    }

    #[test]
    fn md_member_and_swap() {
        let t = Tree::new();
        let sdd = t.disk("sdd", (8, 48));
        t.disk("sde", (8, 64));
        let md = t.disk("md0", (9, 0));
        t.write("class/block/md0/md/level", "raid1\n");
        t.stack("md0", "sdd");
        t.stack("md0", "sde");
        let src = t.sources(vec![]);
        let m = decide(&src, &req("/dev/sdd", sdd, Mode::Write), &[], &[], &[]).unwrap_err();
        assert!(
            m.starts_with("/dev/sdd is held by /dev/md0 (raid1) in dom0"),
            "{m}"
        );
        let swaps = [Swap {
            key: md,
            name: "/dev/md0".into(),
        }];
        let m = decide(&src, &req("/dev/sdd", sdd, Mode::Read), &[], &swaps, &[]).unwrap_err();
        assert!(
            m.starts_with(
                "/dev/sdd is held by /dev/md0 (raid1), which is active swap in dom0; \
                 refusing to attach /dev/sdd read-only"
            ),
            "{m}"
        );
        let sdc = t.disk("sdc", (8, 32));
        let swaps = [Swap {
            key: sdc,
            name: "/dev/sdc".into(),
        }];
        let m = decide(&src, &req("/dev/sdc", sdc, Mode::Read), &[], &swaps, &[]).unwrap_err();
        assert!(m.starts_with("/dev/sdc is active swap in dom0;"), "{m}");
    }

    #[test]
    fn file_through_loop_partitions() {
        let t = Tree::new();
        let lo = t.disk("loop0", (7, 0));
        std::fs::create_dir_all(t.sys().join("class/block/loop0/loop")).unwrap();
        let p1 = t.part("loop0", "loop0p1", (259, 0), 2048, 100);
        let file = Key::File {
            dev: 0x801,
            ino: 77,
        };
        let src = t.sources(vec![(DevNum { major: 7, minor: 0 }, 0x801, 77)]);
        let c = [claim("5", "vbd", p1, Mode::Read)];
        let m = decide(&src, &req("/srv/a.img", file, Mode::Write), &[], &[], &c).unwrap_err();
        assert!(
            m.starts_with(
                "/srv/a.img is the backing file of /dev/loop0, which contains /dev/loop0p1, \
                 which domain 5 has read-only"
            ),
            "{m}"
        );
        // And from the partition down to the file, which QEMU serves.
        let c = [claim("5", "qdisk", file, Mode::Write)];
        let m = decide(&src, &req("/dev/loop0p1", p1, Mode::Read), &[], &[], &c).unwrap_err();
        assert!(
            m.starts_with(
                "/dev/loop0p1 is part of /dev/loop0, which is a loop device over inode 77 on \
                 device 8:1, which domain 5 uses read-write through QEMU \
                 (backend/qdisk/5/51712)"
            ),
            "{m}"
        );
        let _ = lo;
    }

    #[test]
    fn holder_loops_terminate() {
        let t = Tree::new();
        let a = t.disk("dm-0", (253, 0));
        t.disk("dm-1", (253, 1));
        t.stack("dm-0", "dm-1");
        t.stack("dm-1", "dm-0");
        let src = t.sources(vec![]);
        let (topo, o) = gather(&src, &[a], true);
        assert_eq!(o.nodes().len(), 2);
        assert!(topo.doubts.is_empty(), "{:?}", topo.doubts);
    }

    #[test]
    fn vanished_and_unreadable_entries_are_doubts() {
        let t = Tree::new();
        let sdb = t.disk("sdb", (8, 16));
        // A holder listed whose directory is gone (removed meanwhile).
        t.write("class/block/sdb/holders/dm-9", "");
        let src = t.sources(vec![]);
        let m = decide(&src, &req("/dev/sdb", sdb, Mode::Write), &[], &[], &[]).unwrap_err();
        assert!(
            m.starts_with("cannot tell what else uses the blocks of /dev/sdb"),
            "{m}"
        );
        assert!(m.contains("dm-9"), "{m}");
        assert_eq!(
            decide(&src, &req("/dev/sdb", sdb, Mode::Read), &[], &[], &[]),
            Ok(())
        );
        // A device that is not in sysfs at all.
        let ghost = Key::Dev(DevNum {
            major: 8,
            minor: 99,
        });
        let m = decide(&src, &req("/dev/ghost", ghost, Mode::Write), &[], &[], &[]).unwrap_err();
        assert!(m.contains("device 8:63: not in sysfs"), "{m}");
        // A partition whose extent reads garbage.
        let p = t.part("sdb", "sdb1", (8, 17), 0, 10);
        t.write("class/block/sdb/sdb1/start", "x\n");
        let m = decide(&src, &req("/dev/sdb1", p, Mode::Write), &[], &[], &[]).unwrap_err();
        assert!(m.contains("extent of partition"), "{m}");
        // No sysfs at all.
        let mut none = src.clone();
        none.sys = t.root.join("no-sys");
        let m = decide(&none, &req("/dev/sdb", sdb, Mode::Write), &[], &[], &[]).unwrap_err();
        assert!(m.contains("is sysfs mounted?"), "{m}");
        assert!(matches!(
            sharing::decide(
                &req("/dev/sdb", sdb, Mode::Write),
                &Facts {
                    topology: &gather(&none, &[sdb], true).0,
                    mounts: &[],
                    swaps: &[],
                    claims: &[],
                    locks: &[],
                }
            ),
            Err(Refusal::Doubt { .. })
        ));
    }

    #[test]
    fn hundreds_of_partitions_read_only_what_is_needed() {
        let t = Tree::new();
        let sdb = t.disk("sdb", (8, 16));
        let mut keys = Vec::new();
        for i in 0..400u32 {
            keys.push(t.part(
                "sdb",
                &format!("sdb{}", i + 1),
                (259, i),
                u64::from(i) * 100 + 2048,
                100,
            ));
        }
        let src = t.sources(vec![]);
        let c: Vec<Claim> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 17)
            .map(|(i, k)| claim(&format!("{}", i + 10), "vbd", *k, Mode::Write))
            .collect();
        assert_eq!(
            decide(
                &src,
                &req("/dev/sdb18", keys[17], Mode::Write),
                &[],
                &[],
                &c
            ),
            Ok(())
        );
        let (_, o) = gather(&src, &[keys[17]], true);
        assert_eq!(o.nodes(), &[keys[17], sdb]);
        let m = decide(&src, &req("/dev/sdb", sdb, Mode::Read), &[], &[], &c).unwrap_err();
        assert!(
            m.starts_with("/dev/sdb contains /dev/sdb1, which domain 10"),
            "{m}"
        );
    }

    #[test]
    fn swaps_file_parsing() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/sdc                                partition\t1048572\t\t0\t\t-2\n\
                    /swap\\040file                           file\t\t1024\t\t0\t\t-3\n\
                    /gone(deleted)                          file\t\t1024\t\t0\t\t-4\n";
        assert_eq!(parse_swaps(text), vec!["/dev/sdc", "/swap file", "/gone"]);
        assert!(parse_swaps("").is_empty());
        let t = Tree::new();
        let f = t.root.join("swap file");
        std::fs::write(&f, b"x").unwrap();
        std::fs::write(
            t.root.join("swaps"),
            format!(
                "Filename Type Size Used Priority\n{} file 4 0 -2\n/nonexistent file 4 0 -3\n",
                f.display().to_string().replace(' ', "\\040")
            ),
        )
        .unwrap();
        let (s, unknown) = ProcFiles::new(&t.sources(vec![])).swaps();
        let st = crate::sys::stat::stat(&f).unwrap();
        assert_eq!(
            s,
            vec![Swap {
                key: Key::File {
                    dev: st.dev,
                    ino: st.ino
                },
                name: f.display().to_string(),
            }]
        );
        assert_eq!(unknown.len(), 1, "{unknown:?}");
    }

    #[test]
    fn real_sysfs_has_no_block_device_1_3() {
        // The real sysfs: 1:3 is /dev/null, a character device, so it is no block
        // device there, and a read-write request on it would be refused.
        let src = Sources::system();
        let (topo, _) = gather(&src, &[Key::Dev(DevNum { major: 1, minor: 3 })], true);
        assert!(!topo.doubts.is_empty());
    }
}
