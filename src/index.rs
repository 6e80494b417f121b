//! The claims index: what every other disk backend names, kept current by
//! xenstore watches, so that a long-lived context decides in time that does
//! not grow with the number of disks on the host.
//!
//! The full scan ([`Context::gather_claims`](crate::Context)) lists every
//! backend under `<parent>/vbd`, `<parent>/vbd3` and `<parent>/qdisk` and
//! reads the nodes that name its storage on every decision. The index reads
//! them once, then watches the three roots and re-reads only the backends an
//! event names. Before each decision it proves it has seen every change made
//! so far: it writes a sentinel node of its own (which it also watches) and
//! processes events until the sentinel's event arrives. xenstored queues a
//! connection's events in the order the changes happened, so every change
//! committed before the sentinel write has been applied to the index by
//! then. (A round trip alone would not do: Linux's `/dev/xen/xenbus`
//! delivers replies and watch events on different paths, so a reply may
//! overtake an event; the sentinel's own event cannot.)
//!
//! The index answers "which backends could hold these keys": the backends
//! whose `physical-device` is one of the overlapping device numbers (a hash
//! lookup), plus every backend that names its storage by path (`params` of
//! vbd3/qdisk, FreeBSD's `physical-device-path`), whose path is stat'ed at
//! each decision as the scan does, because a path can come to name another
//! file without any xenstore change. The caller then re-reads those
//! candidates exactly as the scan reads a backend, so a claim is never built
//! from the index's copy.
//!
//! Whenever currency cannot be proven the decision falls back to the full
//! scan and the index is rebuilt on the next decision: the connection was
//! reset (watches are gone), the client dropped events (its queue was full),
//! the sentinel's event did not come within [`SYNC_TIMEOUT`], or any request
//! failed. Only the built-in client can watch ([`Store::xs_client`]); other
//! stores (the C callback store) always scan.
//!
//! The first decision of a context scans; the index is built on the second,
//! so a one-shot caller (the CLI) never pays for watches it will not use.

use crate::sharing::{DevNum, Key};
use crate::store::client::{WatchEvent, XsClient};
use crate::store::{Store, TxId, NO_TX};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for the sentinel's watch event; past it the decision scans.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest gap between two decisions over which the index trusts that no
/// event was lost. xenstored may discard watch events a connection leaves
/// unread (C xenstored since XSA-326: after 20 s by default), and this
/// client reads the socket only when it makes a request; after a longer
/// gap the index re-reads every backend (a scan's worth of reads) under
/// its existing watches instead of trusting its copy.
pub const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// The roots the index covers, in the scan's order for a request under
/// `<parent>/vbd`. The index serves only such requests.
pub(crate) const ROOTS: [&str; 3] = ["vbd", "vbd3", "qdisk"];

/// Where sentinel nodes live, under the connection's home (a domain may
/// write below its own `data`): one per index, removed when it is dropped;
/// a process that dies leaves its one small node behind.
const SENTINEL_DIR: &str = "data/xenblock";

/// After this many failures in a row without a decision served, the index
/// is given up for the context's lifetime (the scan is used, and no more
/// watches are tried): a setup it cannot work in (say, no permission to
/// write the sentinel) must not cost every decision a failed attempt.
const GIVE_UP_AFTER: u32 = 3;

/// Counters for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Decisions whose candidates came from the index.
    pub served: u64,
    /// Decisions that used the full scan (first decision, other roots,
    /// or currency not proven).
    pub scanned: u64,
    /// Times the index was built (watches registered, everything read).
    pub builds: u64,
    /// Times a built index was found not current and dropped.
    pub invalidations: u64,
    /// Times every backend was re-read after more than [`IDLE_LIMIT`]
    /// without a decision.
    pub reloads: u64,
}

pub(crate) struct ClaimsIndex {
    store: Arc<dyn Store>,
    /// FreeBSD: `vbd` backends name their storage by `physical-device-path`.
    by_path: bool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    decisions: u64,
    /// Failures (setup or currency) since the last served decision.
    failures: u32,
    live: Option<Live>,
    /// Watches of a dropped index, to unregister if their connection lives.
    stale: Vec<Stale>,
    stats: IndexStats,
}

/// What a dropped index leaves to clean up: its connection generation,
/// its watches (path, token) and its sentinel node.
type Stale = (u64, Vec<(String, String)>, String);

/// A built index.
struct Live {
    parent: String,
    token: String,
    sync_token: String,
    sentinel: String,
    generation: u64,
    dropped: u64,
    /// Sentinel events still to come (the watch's initial one, then one per write).
    pending: u64,
    seq: u64,
    /// The sentinel of the decision under way went out with the backend's
    /// read ([`ClaimsIndex::presync`]): its sync only waits for the event.
    presynced: bool,
    /// When the index last finished reading xenstore (its sentinel's events
    /// and the re-reads they called for): from then on, events wait unread
    /// in xenstored until the next decision.
    last_sync: Option<Instant>,
    /// Backend path -> the storage nodes it has, with their values.
    backends: HashMap<String, Vec<(&'static str, String)>>,
    by_dev: HashMap<DevNum, HashSet<String>>,
    /// Backends with a path-valued node (stat'ed at each decision).
    path_named: HashSet<String>,
    dirty: HashSet<String>,
    dirty_doms: HashSet<String>,
    dirty_all: bool,
}

impl ClaimsIndex {
    /// An index for `store`, if it can watch; `None` means always scan.
    pub(crate) fn new(store: &Arc<dyn Store>, by_path: bool) -> Option<ClaimsIndex> {
        store.xs_client()?;
        Some(ClaimsIndex {
            store: store.clone(),
            by_path,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub(crate) fn stats(&self) -> IndexStats {
        self.inner.lock().stats
    }

    /// The nodes that name a backend's storage under root `kind`.
    fn nodes(&self, kind: &str) -> &'static [&'static str] {
        match (kind, self.by_path) {
            ("vbd", false) => &["physical-device"],
            ("vbd", true) => &["physical-device-path"],
            _ => &["params", "physical-device"],
        }
    }

    /// Under the hotplug lock, before the decision for `own`: the sentinel
    /// write that will prove the index current (path, value), for the caller
    /// to send in its own round trip (the backend's read), so that the
    /// decision's sync only waits for its event. `None` when the index is
    /// not live for `own`'s root or a sentinel is still outstanding: the
    /// decision then syncs as usual. Say what became of the write with
    /// [`Self::presynced`].
    pub(crate) fn presync(&self, own: &str) -> Option<(String, Vec<u8>)> {
        let xs = self.store.xs_client()?;
        let parent = parent_of(own)?;
        let mut inner = self.inner.lock();
        let live = inner.live.as_mut()?;
        if live.parent != parent || live.pending != 0 || live.presynced || live.current(xs).is_err()
        {
            return None;
        }
        live.seq += 1;
        Some((live.sentinel.clone(), live.seq.to_string().into_bytes()))
    }

    /// Whether the write [`Self::presync`] gave was made (xenstored
    /// answered it). Its event is then awaited by the decision's sync.
    pub(crate) fn presynced(&self, sent: bool) {
        if let Some(live) = self.inner.lock().live.as_mut() {
            if sent {
                live.pending += 1;
                live.presynced = true;
            }
        }
    }

    /// The prepare that sent a sentinel made no decision (a custom script,
    /// a backend already prepared, an error before the sharing rule): the
    /// next decision must not take that older sentinel for its own.
    pub(crate) fn presync_unused(&self) {
        if let Some(live) = self.inner.lock().live.as_mut() {
            live.presynced = false;
        }
    }

    /// The backends that may hold a key `wanted` accepts (`devs`: the device
    /// numbers among the wanted keys), when the index is current; `None`
    /// means "scan". `key_of` turns a node's value into a key (stat'ing
    /// paths). `own` is never among them. Call with the hotplug lock held.
    pub(crate) fn candidates(
        &self,
        own: &str,
        devs: &mut dyn Iterator<Item = DevNum>,
        wanted: &dyn Fn(&Key) -> bool,
        key_of: &dyn Fn(&str, &str) -> Option<Key>,
        log: &dyn Fn(&str),
        early_tx: Option<&mut Option<TxId>>,
    ) -> Option<Vec<String>> {
        let xs = self.store.xs_client()?;
        let mut inner = self.inner.lock();
        inner.decisions += 1;
        let parent = match parent_of(own) {
            Some(p) => p,
            None => {
                inner.stats.scanned += 1;
                return None;
            }
        };
        if inner.live.as_ref().is_some_and(|l| l.parent != parent) {
            inner.stats.scanned += 1;
            return None;
        }
        if inner.live.is_none() {
            if inner.decisions < 2 || inner.failures >= GIVE_UP_AFTER {
                inner.stats.scanned += 1;
                return None;
            }
            if let Err(e) = self.set_up(&mut inner, xs, parent, false) {
                log(&format!(
                    "claims index: could not be set up ({e}); using the full scan{}",
                    give_up_note(inner.failures)
                ));
                inner.stats.scanned += 1;
                return None;
            }
        }
        let live = inner.live.as_mut().expect("built above");
        let idle = live.last_sync.is_some_and(|t| t.elapsed() > IDLE_LIMIT);
        if idle {
            live.dirty_all = true;
        }
        let r = live
            .sync(xs, early_tx)
            .and_then(|()| live.refresh(xs, self, own));
        // Idleness counts from here, not from the sentinel: a reload that
        // itself takes longer than IDLE_LIMIT (10 000 disks on a slow
        // xenstored) must not make every following decision reload again.
        live.last_sync = Some(Instant::now());
        if idle && r.is_ok() {
            inner.stats.reloads += 1;
        }
        let live = inner.live.as_mut().expect("built above");
        if let Err(e) = r {
            inner.failures += 1;
            log(&format!(
                "claims index: not provably current ({e}); using the full scan{}",
                give_up_note(inner.failures)
            ));
            let live = inner.live.take().expect("present");
            inner
                .stale
                .push((live.generation, watches_of(&live), live.sentinel.clone()));
            inner.stats.invalidations += 1;
            inner.stats.scanned += 1;
            return None;
        }
        let mut out: HashSet<&String> = HashSet::new();
        for d in devs {
            if let Some(set) = live.by_dev.get(&d) {
                out.extend(set.iter());
            }
        }
        for b in &live.path_named {
            if out.contains(b) {
                continue;
            }
            let hit = live.backends[b]
                .iter()
                .filter(|(n, _)| *n != "physical-device")
                .any(|(n, v)| key_of(n, v).is_some_and(|k| wanted(&k)));
            if hit {
                out.insert(b);
            }
        }
        let r = out
            .into_iter()
            .filter(|b| b.as_str() != own)
            .cloned()
            .collect();
        inner.stats.served += 1;
        inner.failures = 0;
        Some(r)
    }

    /// Build the index for the backends under `parent` (`/local/domain/D/
    /// backend`) now, ahead of the decisions: register the watches and read
    /// every backend, so that the first decision (not only the second)
    /// only proves the index current and re-reads what changed since. For
    /// a host that makes a context shortly before its first attach (`xl`,
    /// a new process per command: [`crate::Context::warm`]), so that the
    /// reads overlap the backend's setup instead of delaying the decision.
    /// Takes no hotplug lock (the decision proves currency under it). Does
    /// nothing when the index is already built or has been given up; a
    /// failed warm-up counts towards giving up ([`GIVE_UP_AFTER`]), as a
    /// failed build does, so that a setup the index cannot work in is not
    /// retried for every disk announced. Returns whether it is built when
    /// it returns.
    pub(crate) fn warm(&self, parent: &str, log: &dyn Fn(crate::LogLevel, &str)) -> bool {
        let Some(xs) = self.store.xs_client() else {
            return false;
        };
        let mut inner = self.inner.lock();
        if let Some(l) = &inner.live {
            return l.parent == parent;
        }
        if inner.failures >= GIVE_UP_AFTER {
            return false;
        }
        match self.set_up(&mut inner, xs, parent, true) {
            Ok(()) => {
                log(
                    crate::LogLevel::Debug,
                    &format!(
                        "claims index: built ahead of the first decision ({} backends under \
                         {parent} read)",
                        inner.live.as_ref().map_or(0, |l| l.backends.len())
                    ),
                );
                true
            }
            Err(e) => {
                log(
                    crate::LogLevel::Warn,
                    &format!(
                        "claims index: could not be set up ahead of the first decision ({e}); \
                         using the full scan{}",
                        give_up_note(inner.failures)
                    ),
                );
                false
            }
        }
    }

    /// Build the index and make it live, counting the build or the failure
    /// (towards [`GIVE_UP_AFTER`]); the caller says what failed. With
    /// `read_now` (a warm-up), every backend is read here too: the changes
    /// from the watches' registration on are queued for the next
    /// decision's sync, and this reads what was there before.
    fn set_up(
        &self,
        inner: &mut Inner,
        xs: &XsClient,
        parent: &str,
        read_now: bool,
    ) -> Result<(), String> {
        let r = self.build(inner, xs, parent).and_then(|mut l| {
            if read_now {
                if let Err(e) = l.refresh(xs, self, "") {
                    inner
                        .stale
                        .push((l.generation, watches_of(&l), l.sentinel.clone()));
                    return Err(e);
                }
                l.last_sync = Some(Instant::now());
            }
            Ok(l)
        });
        match r {
            Ok(l) => {
                inner.stats.builds += 1;
                inner.live = Some(l);
                Ok(())
            }
            Err(e) => {
                inner.failures += 1;
                Err(e)
            }
        }
    }

    /// Register the watches (roots first, then the sentinel) and mark
    /// everything for reading; the first sync and refresh load it.
    fn build(&self, inner: &mut Inner, xs: &XsClient, parent: &str) -> Result<Live, String> {
        // Unregister the watches of this index's dropped generations whose
        // connection lives, and discard their events (the requests read any
        // backlog in before their replies). Other watchers' events on a
        // shared client (another context's index, the caller's own) are
        // left queued for them.
        for (generation, watches, sentinel) in std::mem::take(&mut inner.stale) {
            if generation == xs.generation() {
                for (p, t) in &watches {
                    let _ = xs.unwatch(p, t);
                }
            }
            let _ = xs.remove(NO_TX, &sentinel);
            drop(xs.take_events_where(&|ev| watches.iter().any(|(_, t)| *t == ev.token)));
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let mut live = Live {
            parent: parent.to_string(),
            token: format!("xenblock-index-{id}"),
            sync_token: format!("xenblock-index-sync-{id}"),
            sentinel: format!(
                "{}/{SENTINEL_DIR}/sync-{id}",
                xs.home().map_err(|e| e.to_string())?
            ),
            generation: xs.generation(),
            dropped: xs.events_dropped(),
            pending: 0,
            seq: 0,
            presynced: false,
            last_sync: None,
            backends: HashMap::new(),
            by_dev: HashMap::new(),
            path_named: HashSet::new(),
            dirty: HashSet::new(),
            dirty_doms: HashSet::new(),
            dirty_all: true,
        };
        let registered = |live: &Live| -> Result<(), String> {
            for (p, t) in watches_of(live) {
                xs.watch(&p, &t).map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        if let Err(e) = registered(&live) {
            inner
                .stale
                .push((live.generation, watches_of(&live), live.sentinel.clone()));
            return Err(e);
        }
        live.pending = 1; // the sentinel watch's initial event
        if let Err(e) = live.wait_sentinel(xs) {
            inner
                .stale
                .push((live.generation, watches_of(&live), live.sentinel.clone()));
            return Err(e);
        }
        Ok(live)
    }
}

impl Drop for ClaimsIndex {
    fn drop(&mut self) {
        let Some(xs) = self.store.xs_client() else {
            return;
        };
        let inner = self.inner.get_mut();
        let mut all = std::mem::take(&mut inner.stale);
        if let Some(l) = inner.live.take() {
            all.push((l.generation, watches_of(&l), l.sentinel.clone()));
        }
        for (generation, watches, sentinel) in all {
            if generation == xs.generation() {
                for (p, t) in &watches {
                    let _ = xs.unwatch(p, t);
                }
            }
            let _ = xs.remove(NO_TX, &sentinel);
            drop(xs.take_events_where(&|ev| watches.iter().any(|(_, t)| *t == ev.token)));
        }
    }
}

fn give_up_note(failures: u32) -> &'static str {
    if failures >= GIVE_UP_AFTER {
        "; given up after repeated failures, this context scans from now on"
    } else {
        " and rebuilding the index at the next decision"
    }
}

/// `<parent>` of a request under `<parent>/vbd/<dom>/<dev>`.
pub(crate) fn parent_of(own: &str) -> Option<&str> {
    let mut it = own.rsplitn(4, '/');
    let (_dev, _dom, kind, parent) = (it.next()?, it.next()?, it.next()?, it.next()?);
    (kind == "vbd" && !parent.is_empty()).then_some(parent)
}

fn watches_of(l: &Live) -> Vec<(String, String)> {
    let mut w: Vec<(String, String)> = ROOTS
        .iter()
        .map(|k| (format!("{}/{k}", l.parent), l.token.clone()))
        .collect();
    w.push((l.sentinel.clone(), l.sync_token.clone()));
    w
}

impl Live {
    fn current(&self, xs: &XsClient) -> Result<(), String> {
        if xs.generation() != self.generation {
            return Err("the connection to xenstored was reset, so its watches are gone".into());
        }
        if xs.events_dropped() != self.dropped {
            return Err("watch events were dropped (the client's queue was full)".into());
        }
        Ok(())
    }

    /// Write the sentinel and apply every event up to its own. With
    /// `early_tx`, a transaction is started in the sentinel write's round
    /// trip, for the caller's outcome (see `Context::wants_early_tx`).
    fn sync(&mut self, xs: &XsClient, early_tx: Option<&mut Option<TxId>>) -> Result<(), String> {
        self.current(xs)?;
        if !std::mem::take(&mut self.presynced) {
            // A sentinel sent for a prepare that made no decision: its
            // event first (xenstored may drop an event identical to one
            // still queued, so no second write while one is pending).
            if self.pending > 0 {
                self.wait_sentinel(xs)?;
            }
            self.seq += 1;
            let value = self.seq.to_string();
            match early_tx {
                Some(tx) => {
                    *tx = xs
                        .write_starting_tx(&self.sentinel, value.as_bytes())
                        .map_err(|e| e.to_string())?
                }
                None => xs
                    .write(NO_TX, &self.sentinel, value.as_bytes())
                    .map_err(|e| e.to_string())?,
            }
            self.pending += 1;
        }
        self.current(xs)?;
        self.wait_sentinel(xs)?;
        self.current(xs)?;
        Ok(())
    }

    /// Apply events until every sentinel event expected has come, within
    /// [`SYNC_TIMEOUT`]. (No sentinel write is made while one is pending:
    /// C xenstored drops an event identical to one still queued.)
    fn wait_sentinel(&mut self, xs: &XsClient) -> Result<(), String> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        // Only this index's own events: another index (or the caller) on
        // the same client reads its own.
        let (token, sync) = (self.token.clone(), self.sync_token.clone());
        let mine = move |ev: &WatchEvent| ev.token == token || ev.token == sync;
        loop {
            for ev in xs.take_events_where(&mine) {
                self.note(ev);
            }
            if self.pending == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "the sentinel's watch event did not arrive within {} ms",
                    SYNC_TIMEOUT.as_millis()
                ));
            }
            match xs.read_watch_where(deadline - now, &mine) {
                Ok(Some(ev)) => self.note(ev),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Apply one event: mark what it names for re-reading.
    fn note(&mut self, ev: WatchEvent) {
        if ev.token == self.sync_token {
            self.pending = self.pending.saturating_sub(1);
            return;
        }
        if ev.token != self.token {
            return;
        }
        let Some(rest) = ev
            .path
            .strip_prefix(self.parent.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            self.dirty_all = true;
            return;
        };
        let mut it = rest.split('/');
        let kind = it.next().unwrap_or("");
        if !ROOTS.contains(&kind) {
            self.dirty_all = true;
            return;
        }
        match (it.next(), it.next(), it.next()) {
            (None, _, _) => self.dirty_all = true,
            (Some(dom), None, _) => {
                self.dirty_doms
                    .insert(format!("{}/{kind}/{dom}", self.parent));
            }
            (Some(dom), Some(dev), node) => {
                let relevant = match node {
                    None => true,
                    Some(n) => {
                        it.next().is_none()
                            && matches!(n, "params" | "physical-device" | "physical-device-path")
                    }
                };
                if relevant {
                    self.dirty
                        .insert(format!("{}/{kind}/{dom}/{dev}", self.parent));
                }
            }
        }
    }

    /// Re-read what events marked, except `own`: the deciding backend is
    /// never its own candidate, so its entry stays marked (and stale) until
    /// a decision for another backend needs it. That saves the round trip
    /// a toolstack would otherwise pay on every attach for the nodes its
    /// previous attach of that backend wrote.
    fn refresh(&mut self, xs: &XsClient, ix: &ClaimsIndex, own: &str) -> Result<(), String> {
        let e = |e: crate::Error| e.to_string();
        if self.dirty_all {
            self.backends.clear();
            self.by_dev.clear();
            self.path_named.clear();
            self.dirty.clear();
            self.dirty_doms.clear();
            let roots: Vec<String> = ROOTS
                .iter()
                .map(|k| format!("{}/{k}", self.parent))
                .collect();
            let doms = xs.directory_many(NO_TX, &roots).map_err(e)?;
            for (root, list) in roots.iter().zip(doms) {
                for d in list.unwrap_or_default() {
                    self.dirty_doms.insert(format!("{root}/{d}"));
                }
            }
            self.dirty_all = false;
        }
        if !self.dirty_doms.is_empty() {
            let doms: Vec<String> = self.dirty_doms.drain().collect();
            let lists = xs.directory_many(NO_TX, &doms).map_err(e)?;
            for (dom, list) in doms.iter().zip(lists) {
                let list = list.unwrap_or_default();
                let prefix = format!("{dom}/");
                // Backends gone with their directory.
                let gone: Vec<String> = self
                    .backends
                    .keys()
                    .filter(|b| {
                        b.strip_prefix(prefix.as_str())
                            .is_some_and(|dev| !list.iter().any(|d| d == dev))
                    })
                    .cloned()
                    .collect();
                for b in gone {
                    self.forget(&b);
                }
                for dev in list {
                    self.dirty.insert(format!("{dom}/{dev}"));
                }
            }
        }
        let own_dirty = self.dirty.remove(own);
        if own_dirty {
            // Out of the index until re-read: no candidate list may be
            // built from what it named before.
            self.forget(own);
        }
        let dirty: Vec<String> = self.dirty.drain().collect();
        if own_dirty {
            self.dirty.insert(own.to_string());
        }
        if dirty.is_empty() {
            return Ok(());
        }
        let mut reads = Vec::new();
        let mut who: Vec<(usize, &'static str)> = Vec::new();
        for (i, b) in dirty.iter().enumerate() {
            let kind = b[self.parent.len() + 1..].split('/').next().unwrap_or("");
            for n in ix.nodes(kind) {
                reads.push(format!("{b}/{n}"));
                who.push((i, n));
            }
        }
        let values = xs.read_many(NO_TX, &reads).map_err(e)?;
        let mut fresh: Vec<Vec<(&'static str, String)>> = vec![Vec::new(); dirty.len()];
        for ((i, n), v) in who.into_iter().zip(values) {
            if let Some(v) = v {
                fresh[i].push((n, String::from_utf8_lossy(&v).into_owned()));
            }
        }
        for (b, nodes) in dirty.into_iter().zip(fresh) {
            self.forget(&b);
            if nodes.is_empty() {
                continue;
            }
            for (n, v) in &nodes {
                if *n == "physical-device" {
                    if let Some(d) = DevNum::parse_hex(v) {
                        self.by_dev.entry(d).or_default().insert(b.clone());
                    }
                } else {
                    self.path_named.insert(b.clone());
                }
            }
            self.backends.insert(b, nodes);
        }
        Ok(())
    }

    fn forget(&mut self, b: &str) {
        let Some(nodes) = self.backends.remove(b) else {
            return;
        };
        self.path_named.remove(b);
        for (n, v) in nodes {
            if n == "physical-device" {
                if let Some(d) = DevNum::parse_hex(&v) {
                    if let Some(set) = self.by_dev.get_mut(&d) {
                        set.remove(b);
                        if set.is_empty() {
                            self.by_dev.remove(&d);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_vbd_requests_only() {
        assert_eq!(parent_of("backend/vbd/7/51712"), Some("backend"));
        assert_eq!(
            parent_of("/local/domain/0/backend/vbd/7/51712"),
            Some("/local/domain/0/backend")
        );
        assert_eq!(parent_of("backend/qdisk/7/51712"), None);
        assert_eq!(parent_of("vbd/7/51712"), None);
    }
}
