//! The xenstore database: a copy-on-write tree of nodes.
//!
//! Each node has a value (bytes), permissions and an ordered list of
//! children (in creation order, as C xenstored keeps them). Nodes are shared
//! through `Arc`, and every change goes through `Arc::make_mut`, so cloning a
//! [`Tree`] is O(1) and the clone is a true snapshot: this is how a
//! transaction gets "a copy of the whole database" cheaply. Short child
//! names are stored in place ([`Name`]), not in allocations of their own:
//! on a busy host the tree is larger than the CPU caches, and a lookup's
//! cost is mostly its cache misses.
//!
//! A lookup does not always start at the root: each tree remembers the
//! nodes on the path of its last lookup ([`Walk`]) and resumes from the
//! longest prefix the next path shares with it. The walk holds `Arc`s of
//! the tree's own nodes, so every change empties it first; a clone (a
//! snapshot) starts with an empty one.
//!
//! Every change stamps the changed node (and, when its child list changes,
//! its parent) with a fresh generation number. Transactions record the
//! generation of every node they look at ([`Accessed`]); a commit fails with
//! EAGAIN if any of those nodes has since changed.
//!
//! Semantics follow Xen 4.17's C xenstored (`tools/xenstore/xenstored_core.c`)
//! and `docs/misc/xenstore.txt`. Errors are errno values (`libc::E*`).
//! Pure data structure: no I/O, no locking, no permission checks (every
//! client of the embedded daemon is the privileged dom0).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use xenblock::store::wire::PAYLOAD_MAX;

/// An errno value, sent to the client as its name.
pub type Errno = i32;
/// Result of a tree operation.
pub type XsResult<T> = Result<T, Errno>;

/// The implicit home of socket clients (they are dom0).
pub const DOM0_HOME: &str = "/local/domain/0";
/// Longest path below a domain's home (`XENSTORE_REL_PATH_MAX`, xenstored's
/// default `quota_max_path_len`).
pub const REL_PATH_MAX: usize = xenblock::store::wire::REL_PATH_MAX;

/// What a domain may do with a node (`XS_PERM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

/// One permission entry: an access right for a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    pub access: Access,
    pub domid: u32,
}

impl Perm {
    /// Parse `<letter><domid>` as `xs_strings_to_perms` does (the domid is
    /// read like `strtol(.., 0)`: decimal, `0x` hex or leading-zero octal).
    pub fn parse(s: &[u8]) -> XsResult<Perm> {
        let (&letter, rest) = s.split_first().ok_or(libc::EINVAL)?;
        let access = match letter {
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            b'n' => Access::None,
            _ => return Err(libc::EINVAL),
        };
        let domid = parse_c_long(rest).ok_or(libc::EINVAL)?;
        Ok(Perm {
            access,
            domid: domid as u32,
        })
    }

    /// The wire form, `xs_perm_to_string` (domid printed as a C `int`),
    /// appended to `out`.
    pub fn append_wire(self, out: &mut Vec<u8>) {
        use std::io::Write;
        let c = match self.access {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        };
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{c}{}", self.domid as i32);
    }
}

/// `strtol(s, &end, 0)` that must consume all of `s` (and `s` not empty).
fn parse_c_long(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    if t.is_empty() {
        return None;
    }
    let (neg, t) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (16, h)
    } else if t.len() > 1 && t.starts_with('0') {
        (8, &t[1..])
    } else {
        (10, t)
    };
    // Only one sign, before the prefix: `from_str_radix` would take another
    // (`--5`, `0x-5`), which strtol does not.
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    if neg {
        v.checked_neg()
    } else {
        Some(v)
    }
}

/// `atoi` as xenstored uses it for domids: optional leading blanks and
/// sign, then digits up to the first non-digit; garbage reads as 0.
pub fn atoi(s: &[u8]) -> i32 {
    let mut it = s
        .iter()
        .copied()
        .skip_while(|c| c.is_ascii_whitespace())
        .peekable();
    let mut neg = false;
    if let Some(&c) = it.peek() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            it.next();
        }
    }
    let mut v: i64 = 0;
    for c in it {
        if !c.is_ascii_digit() {
            break;
        }
        v = (v * 10 + i64::from(c - b'0')).min(i64::from(u32::MAX) + 1);
    }
    (if neg { -v } else { v }) as i32
}

/// Child count from which a node keeps a name index (below it a linear
/// scan is as fast; above, slower: with 64, scanning 10 000 backends of 16
/// nodes each missed the last-level cache 2.8 times as often).
const INDEX_FROM: usize = 16;

/// A node's children in creation order. Few children are a plain list;
/// from [`INDEX_FROM`] on (`/local/domain`, `backend/vbd` on a busy host)
/// they are kept in persistent maps (`imbl`: a hash map by name and an
/// ordered map by creation number), so that looking one up does not scan
/// every sibling *and* copying the node — which every change does to each
/// ancestor of a node it changes, in a transaction's snapshot and again at
/// commit — shares the maps instead of copying thousands of entries.
#[derive(Debug, Clone)]
pub enum Children {
    Few(Vec<(Name, Arc<Node>)>),
    Many {
        by_name: NameMap,
        order: imbl::OrdMap<u64, Name>,
        next: u64,
    },
}

/// Bytes of a [`Name`] kept in place.
const NAME_INLINE: usize = 22;

/// A child's name. Up to [`NAME_INLINE`] bytes (nearly every xenstore
/// name) it is stored in place — in the list entry or the map entry — so
/// a lookup compares names without a cache miss on each name's own
/// allocation; longer names are shared.
#[derive(Clone)]
pub enum Name {
    Inline(u8, [u8; NAME_INLINE]),
    Shared(Arc<str>),
}

impl Name {
    fn new(name: &str) -> Name {
        if name.len() <= NAME_INLINE {
            let mut b = [0; NAME_INLINE];
            b[..name.len()].copy_from_slice(name.as_bytes());
            Name::Inline(name.len() as u8, b)
        } else {
            Name::Shared(Arc::from(name))
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline(n, b) => &b[..usize::from(*n)],
            Name::Shared(s) => s.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        // The bytes are a copy of a `&str`: never invalid.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

/// As its bytes, so that maps find a name by `&[u8]`.
impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h)
    }
}

impl std::borrow::Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Children by name (with their creation number), hashed with Fx: names
/// are short, and this is a test daemon (no hash flooding to fear).
type NameMap = imbl::GenericHashMap<
    Name,
    (u64, Arc<Node>),
    rustc_hash::FxBuildHasher,
    imbl::shared_ptr::DefaultSharedPtr,
>;

impl Default for Children {
    fn default() -> Children {
        Children::Few(Vec::new())
    }
}

impl Children {
    pub fn get(&self, name: &str) -> Option<&Arc<Node>> {
        match self {
            Children::Few(list) => list
                .iter()
                .find(|(n, _)| n.as_bytes() == name.as_bytes())
                .map(|(_, c)| c),
            Children::Many { by_name, .. } => by_name.get(name.as_bytes()).map(|(_, c)| c),
        }
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Arc<Node>> {
        match self {
            Children::Few(list) => list
                .iter_mut()
                .find(|(n, _)| n.as_bytes() == name.as_bytes())
                .map(|(_, c)| c),
            Children::Many { by_name, .. } => by_name.get_mut(name.as_bytes()).map(|(_, c)| c),
        }
    }

    /// Append a child (the caller ensures the name is not present).
    pub fn push(&mut self, child: (Name, Arc<Node>)) {
        match self {
            Children::Few(list) => {
                list.push(child);
                if list.len() >= INDEX_FROM {
                    let mut by_name = NameMap::with_hasher(rustc_hash::FxBuildHasher);
                    let mut order = imbl::OrdMap::new();
                    for (i, (n, c)) in std::mem::take(list).into_iter().enumerate() {
                        order.insert(i as u64, n.clone());
                        by_name.insert(n, (i as u64, c));
                    }
                    let next = order.len() as u64;
                    *self = Children::Many {
                        by_name,
                        order,
                        next,
                    };
                }
            }
            Children::Many {
                by_name,
                order,
                next,
            } => {
                order.insert(*next, child.0.clone());
                by_name.insert(child.0, (*next, child.1));
                *next += 1;
            }
        }
    }

    /// Remove the child of that name, if present, keeping the order.
    pub fn remove(&mut self, name: &str) {
        match self {
            Children::Few(list) => list.retain(|(n, _)| n.as_bytes() != name.as_bytes()),
            Children::Many { by_name, order, .. } => {
                if let Some((seq, _)) = by_name.remove(name.as_bytes()) {
                    order.remove(&seq);
                }
            }
        }
    }

    /// `f` of each name, in creation order.
    pub fn each_name(&self, mut f: impl FnMut(&[u8])) {
        match self {
            Children::Few(list) => list.iter().for_each(|(n, _)| f(n.as_bytes())),
            Children::Many { order, .. } => order.values().for_each(|n| f(n.as_bytes())),
        }
    }

    /// The children, in creation order.
    pub fn iter(&self) -> Vec<(&str, &Arc<Node>)> {
        match self {
            Children::Few(list) => list.iter().map(|(n, c)| (n.as_str(), c)).collect(),
            Children::Many { by_name, order, .. } => order
                .values()
                .filter_map(|n| by_name.get(n.as_bytes()).map(|(_, c)| (n.as_str(), c)))
                .collect(),
        }
    }
}

/// A node of the tree. The fields are in this order (`repr(C)`) so that
/// what a lookup reads — the `Arc`'s counts, which the walk updates, then
/// the value or the children — tends to share a cache line.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct Node {
    pub value: Arc<[u8]>,
    /// Children in creation order.
    pub children: Children,
    /// Generation of the last change to this node (value, perms, child list).
    pub generation: u64,
    pub perms: Arc<[Perm]>,
}

impl Node {
    fn new(perms: Arc<[Perm]>, generation: u64) -> Node {
        Node {
            value: Arc::from(&b""[..]),
            perms,
            children: Children::default(),
            generation,
        }
    }

    fn child(&self, name: &str) -> Option<&Arc<Node>> {
        self.children.get(name)
    }

    fn child_mut(&mut self, name: &str) -> Option<&mut Arc<Node>> {
        self.children.get_mut(name)
    }

    /// The child list as xenstored stores it: each name NUL-terminated.
    pub fn children_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.children_into(&mut v);
        v
    }

    /// [`Node::children_bytes`], appended to `out`.
    fn children_into(&self, out: &mut Vec<u8>) {
        self.children.each_name(|n| {
            out.extend_from_slice(n);
            out.push(0);
        });
    }
}

/// Generation of each node a transaction looked at, as first seen
/// (`None`: the node did not exist).
pub type Accessed = HashMap<String, Option<u64>>;

/// A change that watches may see: `exact` events only match watches on
/// exactly that path (used for the descendants of a removed node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub path: String,
    pub exact: bool,
}

/// A modifying operation, kept in a transaction's log and replayed on commit.
#[derive(Debug, Clone)]
pub enum Op {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Vec<Perm>),
}

/// The database (or a transaction's private copy of it).
#[derive(Debug)]
pub struct Tree {
    root: Arc<Node>,
    next_gen: u64,
    /// The nodes on the path of the last lookup (see [`Walk`]).
    last: RefCell<Walk>,
}

/// A clone is a snapshot with an empty [`Walk`]: each tree's walk holds
/// only nodes of that tree.
impl Clone for Tree {
    fn clone(&self) -> Tree {
        Tree {
            root: self.root.clone(),
            next_gen: self.next_gen,
            last: RefCell::default(),
        }
    }
}

/// The nodes on the path of a tree's last lookup, so that the next lookup
/// resumes from the longest prefix the two paths share instead of walking
/// from the root (a client's pipelined reads of `<root>/<dom>/<dev>/<node>`
/// share all but the last one or two levels, and the levels they share
/// include the big `/local/domain` and `backend/vbd` maps).
///
/// The walk holds `Arc` clones of the tree's own nodes, so it is only valid
/// while the tree is unchanged; every change goes through [`Tree::get_mut`],
/// which empties it first (that also keeps `Arc::make_mut` from copying a
/// node only because the walk holds it).
#[derive(Debug, Default)]
struct Walk {
    /// The path last looked up (its tail may not exist).
    path: String,
    /// `(end, node)`: the node at `path[..end]`, for each component of
    /// `path` that was found, shallowest first (the root is not included).
    nodes: Vec<(usize, Arc<Node>)>,
}

impl Walk {
    fn clear(&mut self) {
        self.path.clear();
        self.nodes.clear();
    }
}

/// Where one operation records what it touched and what changed.
pub struct Ctx<'a> {
    /// Transactions record accessed nodes here; `None` outside transactions.
    pub accessed: Option<&'a mut Accessed>,
    /// Watch events produced by the operation.
    pub events: Vec<Event>,
}

impl<'a> Ctx<'a> {
    /// Outside any transaction.
    pub fn live() -> Ctx<'static> {
        Ctx {
            accessed: None,
            events: Vec::new(),
        }
    }

    /// Inside a transaction recording into `accessed`.
    pub fn tx(accessed: &'a mut Accessed) -> Ctx<'a> {
        Ctx {
            accessed: Some(accessed),
            events: Vec::new(),
        }
    }

    fn note(&mut self, path: &str, generation: Option<u64>) {
        if let Some(acc) = self.accessed.as_deref_mut() {
            if !acc.contains_key(path) {
                acc.insert(path.to_string(), generation);
            }
        }
    }

    fn event(&mut self, path: &str, exact: bool) {
        self.events.push(Event {
            path: path.to_string(),
            exact,
        });
    }
}

/// The components of an absolute, validated path (`/` has none).
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// Length of the longest common prefix of `a` and `b`, eight bytes at a
/// time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let word =
        |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("eight bytes"));
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let diff = word(a, i) ^ word(b, i);
        if diff != 0 {
            // Little-endian words: the first differing byte is the lowest.
            return i + diff.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// The parent of an absolute path other than `/`.
pub fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// `path/name`, minding the root.
fn join(path: &str, name: &str) -> String {
    if path == "/" {
        format!("/{name}")
    } else {
        format!("{path}/{name}")
    }
}

/// Turn a client's path into an absolute one: paths not starting with `/`
/// or `@` are relative to dom0's home (xenstored's `canonicalize`).
pub fn canonicalize(raw: &str) -> String {
    canonical(raw, &mut String::new()).to_string()
}

/// [`canonicalize`] without allocating: `raw` itself when it is absolute,
/// else its absolute form written into `scratch`.
pub fn canonical<'a>(raw: &'a str, scratch: &'a mut String) -> &'a str {
    if raw.starts_with('/') || raw.starts_with('@') {
        raw
    } else {
        scratch.clear();
        scratch.push_str(DOM0_HOME);
        scratch.push('/');
        scratch.push_str(raw);
        scratch
    }
}

/// xenstored's `is_valid_nodename`: absolute, no trailing or doubled `/`,
/// only `[A-Za-z0-9-/_@]`, and at most [`REL_PATH_MAX`] bytes below a
/// `/local/domain/<id>/` prefix (or in total otherwise).
pub fn is_valid_nodename(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    if path.len() > 1 && path.ends_with('/') {
        return false;
    }
    if path.contains("//") {
        return false;
    }
    if path.len() > local_prefix_len(path) + REL_PATH_MAX {
        return false;
    }
    path.bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@'))
}

/// Length of a leading `/local/domain/<up to 5 digits>/`, else 0.
fn local_prefix_len(path: &str) -> usize {
    const P: &str = "/local/domain/";
    let Some(rest) = path.strip_prefix(P) else {
        return 0;
    };
    let digits = rest.bytes().take(5).take_while(u8::is_ascii_digit).count();
    if digits > 0 && rest.as_bytes().get(digits) == Some(&b'/') {
        P.len() + digits + 1
    } else {
        0
    }
}

/// Does the event path `child` fall under the watched path `parent`?
/// (`/` watches everything, as in xenstored.)
pub fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return true;
    }
    match child.strip_prefix(parent) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// The tree to start with: what xenstored creates (`/` with perms `n0`,
    /// `/tool`, `/tool/xenstored`) plus dom0's home, which `xen-init-dom0`
    /// creates on a real host (`/local`, `/local/domain`, `/local/domain/0`).
    pub fn new() -> Tree {
        let perms: Arc<[Perm]> = Arc::from(vec![Perm {
            access: Access::None,
            domid: 0,
        }]);
        let mut t = Tree {
            root: Arc::new(Node::new(perms, 0)),
            next_gen: 1,
            last: RefCell::default(),
        };
        let mut ctx = Ctx::live();
        for p in ["/tool/xenstored", "/local/domain/0"] {
            t.mkdir(&mut ctx, p).expect("initial nodes");
        }
        t
    }

    fn bump(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// The node at an absolute path.
    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut cur = &*self.root;
        for c in components(path) {
            cur = cur.child(c)?;
        }
        Some(cur)
    }

    /// The node at an absolute path, to change it: the only way to change
    /// the tree (it empties the [`Walk`], which the change would outdate).
    fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.last.get_mut().clear();
        let mut cur = Arc::make_mut(&mut self.root);
        for c in components(path) {
            cur = Arc::make_mut(cur.child_mut(c)?);
        }
        Some(cur)
    }

    /// Generation of a node, if it exists.
    pub fn generation(&self, path: &str) -> Option<u64> {
        self.get(path).map(|n| n.generation)
    }

    /// `f` of the node at an absolute path, if it exists: the same as
    /// `f(self.get(path))`, but resuming from the last lookup's [`Walk`].
    fn with_node<R>(&self, path: &str, f: impl FnOnce(Option<&Node>) -> R) -> R {
        let Ok(mut walk) = self.last.try_borrow_mut() else {
            return f(self.get(path));
        };
        let walk = &mut *walk;
        // The cached nodes whose paths are also prefixes of `path`.
        let common = common_prefix(walk.path.as_bytes(), path.as_bytes());
        let keep = walk
            .nodes
            .iter()
            .take_while(|(end, _)| {
                *end <= common && (*end == path.len() || path.as_bytes()[*end] == b'/')
            })
            .count();
        walk.nodes.truncate(keep);
        walk.path.clear();
        walk.path.push_str(path);
        let mut pos = walk.nodes.last().map_or(0, |(end, _)| *end);
        let bytes = path.as_bytes();
        loop {
            while pos < bytes.len() && bytes[pos] == b'/' {
                pos += 1;
            }
            if pos == bytes.len() {
                break;
            }
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(bytes.len(), |i| pos + i);
            let cur = walk.nodes.last().map_or(&*self.root, |(_, n)| &**n);
            let Some(child) = cur.child(&path[pos..end]).cloned() else {
                return f(None);
            };
            walk.nodes.push((end, child));
            pos = end;
        }
        f(Some(walk.nodes.last().map_or(&*self.root, |(_, n)| &**n)))
    }

    /// `f` of a node, recording the access.
    fn lookup<R>(&self, ctx: &mut Ctx, path: &str, f: impl FnOnce(&Node) -> R) -> XsResult<R> {
        self.with_node(path, |node| {
            ctx.note(path, node.map(|n| n.generation));
            node.map(f).ok_or(libc::ENOENT)
        })
    }

    /// READ: the node's value, appended to `out`.
    pub fn read(&self, ctx: &mut Ctx, path: &str, out: &mut Vec<u8>) -> XsResult<()> {
        self.lookup(ctx, path, |n| out.extend_from_slice(&n.value))
    }

    /// DIRECTORY: the child list, each name NUL-terminated, appended to
    /// `out`.
    pub fn directory(&self, ctx: &mut Ctx, path: &str, out: &mut Vec<u8>) -> XsResult<()> {
        self.lookup(ctx, path, |n| n.children_into(out))
    }

    /// GET_PERMS.
    pub fn get_perms(&self, ctx: &mut Ctx, path: &str) -> XsResult<Arc<[Perm]>> {
        self.lookup(ctx, path, |n| n.perms.clone())
    }

    /// DIRECTORY_PART: `<generation>\0` then the child names starting at
    /// byte `offset` of the NUL-separated child list, as many as fit, with
    /// an extra empty string once the list is complete (port of
    /// xenstored's `send_directory_part`).
    pub fn directory_part(&self, ctx: &mut Ctx, path: &str, offset: usize) -> XsResult<Vec<u8>> {
        let (children, generation) =
            self.lookup(ctx, path, |n| (n.children_bytes(), n.generation))?;
        let mut out = generation.to_string().into_bytes();
        out.push(0);
        let genlen = out.len();
        if offset >= children.len() {
            out.push(0);
            return Ok(out);
        }
        let maxlen = PAYLOAD_MAX - genlen - 1;
        let mut len = 0;
        let mut child = offset;
        loop {
            let clen = children[child..].iter().position(|&b| b == 0).unwrap_or(0);
            if len + clen >= maxlen {
                break;
            }
            len += clen + 1;
            child += clen + 1;
            if offset + len == children.len() {
                break;
            }
        }
        out.extend_from_slice(&children[offset..offset + len]);
        if offset + len == children.len() {
            out.push(0);
        }
        Ok(out)
    }

    /// Create `path` and any missing parents (new nodes inherit the
    /// permissions of the nearest existing ancestor, which is the parent
    /// chain's, as in `construct_node`). `path` must not exist.
    fn create(&mut self, ctx: &mut Ctx, path: &str, value: &[u8]) -> XsResult<()> {
        // Walk up to the nearest existing ancestor, noting the missing ones.
        let mut missing = vec![path];
        let mut anc = parent_of(path);
        while self.get(anc).is_none() {
            ctx.note(anc, None);
            missing.push(anc);
            anc = parent_of(anc);
        }
        ctx.note(path, None);
        let anc_node = self.get(anc).ok_or(libc::ENOENT)?;
        ctx.note(anc, Some(anc_node.generation));
        let perms = anc_node.perms.clone();
        let generation = self.bump();
        // Build the missing chain bottom-up, then hang it under the ancestor.
        let mut built: Option<(Name, Arc<Node>)> = None;
        for (i, p) in missing.iter().enumerate() {
            let mut n = Node::new(perms.clone(), generation);
            if i == 0 {
                n.value = Arc::from(value);
            }
            if let Some(child) = built.take() {
                n.children.push(child);
            }
            let name = &p[p.rfind('/').map_or(0, |i| i + 1)..];
            built = Some((Name::new(name), Arc::new(n)));
        }
        let anc_mut = self.get_mut(anc).ok_or(libc::ENOENT)?;
        anc_mut.children.push(built.expect("at least one node"));
        anc_mut.generation = generation;
        Ok(())
    }

    /// WRITE: set a node's value, creating it and its parents if needed.
    pub fn write(&mut self, ctx: &mut Ctx, path: &str, value: &[u8]) -> XsResult<()> {
        if let Some(n) = self.get(path) {
            ctx.note(path, Some(n.generation));
            let generation = self.bump();
            let n = self.get_mut(path).ok_or(libc::ENOENT)?;
            n.value = Arc::from(value);
            n.generation = generation;
        } else {
            self.create(ctx, path, value)?;
        }
        ctx.event(path, false);
        Ok(())
    }

    /// MKDIR: make sure the node exists (no change, no event if it does).
    pub fn mkdir(&mut self, ctx: &mut Ctx, path: &str) -> XsResult<()> {
        if let Some(n) = self.get(path) {
            ctx.note(path, Some(n.generation));
            return Ok(());
        }
        self.create(ctx, path, b"")?;
        ctx.event(path, false);
        Ok(())
    }

    /// RM: remove a node and everything below it. Removing a missing node
    /// whose parent exists is fine; a missing parent is ENOENT; `/` is
    /// EINVAL. Events: every removed descendant (exact, deepest first),
    /// then the node itself.
    pub fn rm(&mut self, ctx: &mut Ctx, path: &str) -> XsResult<()> {
        let parent = parent_of(path);
        let Some(node) = self.get(path) else {
            ctx.note(path, None);
            return match self.get(parent) {
                Some(p) => {
                    ctx.note(parent, Some(p.generation));
                    Ok(())
                }
                None => {
                    ctx.note(parent, None);
                    Err(libc::ENOENT)
                }
            };
        };
        if path == "/" {
            return Err(libc::EINVAL);
        }
        // Post-order walk: note every node, fire exact events for descendants.
        let mut stack: Vec<(String, &Node, bool)> = vec![(path.to_string(), node, false)];
        while let Some((p, n, expanded)) = stack.pop() {
            if expanded {
                ctx.note(&p, Some(n.generation));
                if p != path {
                    ctx.event(&p, true);
                }
                continue;
            }
            stack.push((p.clone(), n, true));
            for (name, child) in n.children.iter().into_iter().rev() {
                stack.push((join(&p, name), child, false));
            }
        }
        ctx.event(path, false);
        let pgen = self.get(parent).map(|p| p.generation);
        ctx.note(parent, pgen);
        let generation = self.bump();
        let name = &path[path.rfind('/').map_or(0, |i| i + 1)..];
        let p = self.get_mut(parent).ok_or(libc::ENOENT)?;
        p.children.remove(name);
        p.generation = generation;
        Ok(())
    }

    /// SET_PERMS.
    pub fn set_perms(&mut self, ctx: &mut Ctx, path: &str, perms: &[Perm]) -> XsResult<()> {
        self.lookup(ctx, path, |_| ())?;
        let generation = self.bump();
        let n = self.get_mut(path).ok_or(libc::ENOENT)?;
        n.perms = Arc::from(perms);
        n.generation = generation;
        ctx.event(path, false);
        Ok(())
    }

    /// Apply a logged operation.
    pub fn apply(&mut self, ctx: &mut Ctx, op: &Op) -> XsResult<()> {
        match op {
            Op::Write(p, v) => self.write(ctx, p, v),
            Op::Mkdir(p) => self.mkdir(ctx, p),
            Op::Rm(p) => self.rm(ctx, p),
            Op::SetPerms(p, perms) => self.set_perms(ctx, p, perms),
        }
    }

    /// Have any of the recorded nodes changed (or appeared/vanished)?
    pub fn conflicts(&self, accessed: &Accessed) -> bool {
        accessed.iter().any(|(p, g)| self.generation(p) != *g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &Tree, p: &str) -> Vec<String> {
        let mut d = Vec::new();
        t.directory(&mut Ctx::live(), p, &mut d).unwrap();
        xenblock::store::wire::split_nul(&d)
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }

    fn read(t: &Tree, ctx: &mut Ctx, p: &str) -> XsResult<Vec<u8>> {
        let mut v = Vec::new();
        t.read(ctx, p, &mut v).map(|()| v)
    }

    #[test]
    fn initial_tree_and_write_creates_parents() {
        let mut t = Tree::new();
        assert_eq!(names(&t, "/"), ["tool", "local"]);
        assert_eq!(names(&t, "/tool"), ["xenstored"]);
        assert_eq!(names(&t, "/local/domain"), ["0"]);
        let mut ctx = Ctx::live();
        t.write(&mut ctx, "/a/b/c", b"v").unwrap();
        assert_eq!(read(&t, &mut ctx, "/a/b/c").unwrap(), b"v");
        assert_eq!(read(&t, &mut ctx, "/a/b").unwrap(), b"");
        assert_eq!(
            ctx.events,
            [Event {
                path: "/a/b/c".into(),
                exact: false
            }]
        );
    }

    #[test]
    fn rm_semantics_and_events() {
        let mut t = Tree::new();
        let mut ctx = Ctx::live();
        t.write(&mut ctx, "/a/b/c", b"").unwrap();
        t.write(&mut ctx, "/a/d", b"").unwrap();
        let mut ctx = Ctx::live();
        assert_eq!(t.rm(&mut ctx, "/x/y"), Err(libc::ENOENT));
        assert_eq!(t.rm(&mut ctx, "/a/zz"), Ok(()));
        assert_eq!(t.rm(&mut ctx, "/"), Err(libc::EINVAL));
        t.rm(&mut ctx, "/a").unwrap();
        let ev: Vec<_> = ctx
            .events
            .iter()
            .map(|e| (e.path.as_str(), e.exact))
            .collect();
        assert_eq!(
            ev,
            [
                ("/a/b/c", true),
                ("/a/b", true),
                ("/a/d", true),
                ("/a", false)
            ]
        );
        assert!(t.get("/a").is_none());
    }

    #[test]
    fn snapshots_are_isolated_and_conflicts_detected() {
        let mut live = Tree::new();
        live.write(&mut Ctx::live(), "/k", b"a").unwrap();
        let mut snap = live.clone();
        let mut acc = Accessed::new();
        assert_eq!(read(&snap, &mut Ctx::tx(&mut acc), "/k").unwrap(), b"a");
        live.write(&mut Ctx::live(), "/k", b"b").unwrap();
        assert_eq!(read(&snap, &mut Ctx::tx(&mut acc), "/k").unwrap(), b"a");
        snap.write(&mut Ctx::tx(&mut acc), "/k", b"c").unwrap();
        assert!(live.conflicts(&acc));
        let mut acc2 = Accessed::new();
        let snap2 = live.clone();
        read(&snap2, &mut Ctx::tx(&mut acc2), "/nope").unwrap_err();
        assert!(!live.conflicts(&acc2));
        live.write(&mut Ctx::live(), "/nope", b"").unwrap();
        assert!(live.conflicts(&acc2));
    }

    #[test]
    fn common_prefixes() {
        let cases: [(&str, &str, usize); 6] = [
            ("", "abc", 0),
            ("abc", "abd", 2),
            ("/local/domain/0/backend", "/local/domain/0/backend/vbd", 23),
            (
                "/local/domain/0/backend/vbd/7",
                "/local/domain/0/backend/vbd/8",
                28,
            ),
            ("0123456789abcdefX", "0123456789abcdefY", 16),
            ("01234567", "01234567", 8),
        ];
        for (a, b, n) in cases {
            assert_eq!(common_prefix(a.as_bytes(), b.as_bytes()), n, "{a} {b}");
            assert_eq!(common_prefix(b.as_bytes(), a.as_bytes()), n, "{b} {a}");
        }
    }

    #[test]
    fn path_rules() {
        assert!(is_valid_nodename("/"));
        assert!(is_valid_nodename("/local/domain/0/backend/vbd/1/51712"));
        assert!(!is_valid_nodename("/a/"));
        assert!(!is_valid_nodename("/a//b"));
        assert!(!is_valid_nodename("/a.b"));
        assert!(!is_valid_nodename("a"));
        let long = format!("/local/domain/0/{}", "a".repeat(REL_PATH_MAX));
        assert!(is_valid_nodename(&long));
        assert!(!is_valid_nodename(&format!("{long}a")));
        assert!(!is_valid_nodename(&format!(
            "/x{}",
            "a".repeat(REL_PATH_MAX)
        )));
        assert_eq!(canonicalize("foo"), "/local/domain/0/foo");
        assert!(is_child("/a/b", "/a") && is_child("/a", "/a") && !is_child("/ab", "/a"));
        assert!(is_child("@introduceDomain", "/"));
    }

    #[test]
    fn perms_and_numbers() {
        assert_eq!(
            Perm::parse(b"r5").unwrap(),
            Perm {
                access: Access::Read,
                domid: 5
            }
        );
        assert_eq!(Perm::parse(b"b0x10").unwrap().domid, 16);
        assert!(Perm::parse(b"x1").is_err());
        assert!(Perm::parse(b"r").is_err());
        assert!(Perm::parse(b"r1a").is_err());
        // Found while writing the wire_server fuzz target (confirmed by it on
        // a SET_PERMS request): a second sign overflowed the
        // negation (a panic in debug builds) or was accepted, unlike strtol.
        assert!(Perm::parse(b"r--9223372036854775808").is_err());
        assert!(Perm::parse(b"r--5").is_err());
        assert!(Perm::parse(b"r+-5").is_err());
        assert!(Perm::parse(b"r0x-5").is_err());
        assert!(Perm::parse(b"r0x+5").is_err());
        assert_eq!(Perm::parse(b"r-5").unwrap().domid, -5i32 as u32);
        let mut wire = Vec::new();
        Perm::parse(b"n0").unwrap().append_wire(&mut wire);
        Perm::parse(b"b-5").unwrap().append_wire(&mut wire);
        assert_eq!(wire, b"n0b-5");
        assert_eq!(atoi(b"12abc"), 12);
        assert_eq!(atoi(b"junk"), 0);
    }

    /// What a lookup sees of a node: value, generation, child names.
    fn seen(n: Option<&Node>) -> Option<(Vec<u8>, u64, Vec<u8>)> {
        n.map(|n| (n.value.to_vec(), n.generation, n.children_bytes()))
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write(String, u8),
        Rm(String),
        Look(String),
        /// Take a transaction-style snapshot of the live tree.
        Snapshot,
        SnapWrite(String, u8),
        SnapLook(String),
        /// Give a node enough children for a name map.
        Fill(String),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        // Paths from few names, so that lookups share prefixes and land on
        // nodes just changed (`Fill` makes some child lists maps); two
        // names too long to be kept in place, alike but for their end.
        let names = vec![
            "a",
            "b",
            "ab",
            "a-name-of-more-than-22-bytes-1",
            "a-name-of-more-than-22-bytes-2",
        ];
        let path = proptest::collection::vec(proptest::sample::select(names), 0..4)
            .prop_map(|c| format!("/{}", c.join("/")));
        prop_oneof![
            1 => (path.clone(), any::<u8>()).prop_map(|(p, v)| Step::Write(p, v)),
            1 => path.clone().prop_map(Step::Rm),
            4 => path.clone().prop_map(Step::Look),
            1 => Just(Step::Snapshot),
            1 => (path.clone(), any::<u8>()).prop_map(|(p, v)| Step::SnapWrite(p, v)),
            2 => path.clone().prop_map(Step::SnapLook),
            1 => path.prop_map(Step::Fill),
        ]
    }

    /// What a tree should hold: path -> (creation number, value).
    type Model = std::collections::BTreeMap<String, (u64, Vec<u8>)>;

    fn model_new() -> Model {
        let initial = ["/", "/tool", "/tool/xenstored", "/local", "/local/domain"];
        (initial.iter().chain(&["/local/domain/0"]))
            .enumerate()
            .map(|(i, p)| (p.to_string(), (i as u64, Vec::new())))
            .collect()
    }

    fn model_write(m: &mut Model, path: &str, v: &[u8]) {
        let mut missing = Vec::new();
        let mut p = path;
        while !m.contains_key(p) {
            missing.push(p);
            p = parent_of(p);
        }
        let next = m.values().map(|(c, _)| c + 1).max().unwrap_or(0);
        for (i, p) in missing.iter().rev().enumerate() {
            m.insert(p.to_string(), (next + i as u64, Vec::new()));
        }
        m.get_mut(path).expect("just made").1 = v.to_vec();
    }

    fn model_rm(m: &mut Model, path: &str) {
        if path != "/" {
            let below = format!("{path}/");
            m.retain(|p, _| p != path && !p.starts_with(&below));
        }
    }

    /// Value and child list (NUL-terminated names, creation order).
    fn model_seen(m: &Model, path: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let value = m.get(path)?.1.clone();
        let mut kids: Vec<(u64, &str)> = m
            .iter()
            .filter(|(p, _)| p.as_str() != "/" && parent_of(p) == path)
            .map(|(p, (c, _))| (*c, &p[p.rfind('/').map_or(0, |i| i + 1)..]))
            .collect();
        kids.sort();
        let mut names = Vec::new();
        for (_, k) in kids {
            names.extend_from_slice(k.as_bytes());
            names.push(0);
        }
        Some((value, names))
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(300))]
        /// A lookup resuming from the last one's walk finds exactly what a
        /// walk from the root finds and what a plain model of the tree
        /// holds, whatever changed in between, in the live tree and in
        /// snapshots of it.
        #[test]
        fn lookups_resuming_from_the_last_walk_see_what_a_full_walk_sees(
            steps in proptest::collection::vec(step(), 1..80)
        ) {
            let (mut live, mut live_model) = (Tree::new(), model_new());
            let (mut snap, mut snap_model) = (live.clone(), live_model.clone());
            let look = |t: &Tree, m: &Model, p: &str| {
                let cached = t.with_node(p, seen);
                proptest::prop_assert_eq!(&cached, &seen(t.get(p)), "lookup of {}", p);
                let want = model_seen(m, p);
                proptest::prop_assert_eq!(cached.clone().map(|(v, _, c)| (v, c)), want, "lookup of {}", p);
                // Twice: the second resumes from the whole path.
                proptest::prop_assert_eq!(cached, t.with_node(p, seen));
                Ok(())
            };
            for s in steps {
                match s {
                    Step::Write(p, v) => {
                        live.write(&mut Ctx::live(), &p, &[v]).unwrap();
                        model_write(&mut live_model, &p, &[v]);
                    }
                    Step::Rm(p) => {
                        let _ = live.rm(&mut Ctx::live(), &p);
                        model_rm(&mut live_model, &p);
                    }
                    Step::Look(p) => look(&live, &live_model, &p)?,
                    Step::Snapshot => {
                        snap = live.clone();
                        snap_model = live_model.clone();
                    }
                    Step::SnapWrite(p, v) => {
                        snap.write(&mut Ctx::live(), &p, &[v]).unwrap();
                        model_write(&mut snap_model, &p, &[v]);
                    }
                    Step::SnapLook(p) => look(&snap, &snap_model, &p)?,
                    Step::Fill(p) => {
                        for i in 0..INDEX_FROM {
                            let c = join(&p, &format!("f{i}"));
                            live.write(&mut Ctx::live(), &c, b"").unwrap();
                            model_write(&mut live_model, &c, b"");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn directory_part_pages_large_lists() {
        let mut t = Tree::new();
        let mut ctx = Ctx::live();
        for i in 0..800 {
            t.write(&mut ctx, &format!("/big/child-number-{i:04}"), b"")
                .unwrap();
        }
        let full = t.get("/big").unwrap().children_bytes();
        assert!(full.len() > PAYLOAD_MAX);
        let mut got = Vec::new();
        let mut off = 0;
        loop {
            let part = t.directory_part(&mut ctx, "/big", off).unwrap();
            assert!(part.len() <= PAYLOAD_MAX);
            let g = part.iter().position(|&b| b == 0).unwrap();
            let body = &part[g + 1..];
            got.extend_from_slice(body);
            off += body.len();
            if body.len() <= 1 || body[body.len() - 2] == 0 {
                break;
            }
        }
        got.pop();
        assert_eq!(got, full);
    }
}
