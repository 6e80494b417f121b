//! The library's own threads: ops that prepare or release a backend away
//! from the caller's thread, each signalled done on a descriptor.
//!
//! [`Context::start`] checks its arguments and queues the op; it never
//! waits for xenstore, the hotplug lock, a script, a disk or the loop
//! driver. A pool of at most [`Config::workers`](crate::Config::workers)
//! threads, started on demand, runs the ops with the very calls of the
//! synchronous API ([`Context::prepare`], [`Context::release`]): one code
//! path. Ops on one backend run in the order they were started, one at a
//! time (a lane per backend); ops on different backends run in parallel.
//! The synchronous calls take their turn in the same lane, on the caller's
//! thread, so a release called while an op adds the same backend waits for
//! that op.
//!
//! A context that is dropped (`xenblock_ctx_free`) cancels the ops still
//! queued and wakes those waiting for the hotplug lock (they finish with
//! [`ErrorKind::Cancelled`], nothing done), waits for the ops past the lock,
//! and joins its threads. In a child forked while
//! ops ran, the parent's pool is left alone (its threads do not exist
//! there, and its mutex may be held): the pool records the fork generation
//! (`sys::fork`) it belongs to, which a pid cannot tell across PID
//! namespaces.

use crate::attach::{Prepared, Released};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::notify::DoneFlag;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::{Condvar as StdCondvar, Mutex as StdMutex, MutexGuard as StdGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Default number of worker threads of a context.
pub const DEFAULT_WORKERS: usize = 4;

/// What an op does to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Prepare the disk (`block add`).
    Add,
    /// Release it (`block remove`).
    Remove,
}

thread_local! {
    /// Set while a worker runs an op's work.
    static IN_OP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as running an op's work until dropped.
struct OpScope;

impl OpScope {
    fn enter() -> OpScope {
        IN_OP.with(|c| c.set(true));
        OpScope
    }
}

impl Drop for OpScope {
    fn drop(&mut self) {
        IN_OP.with(|c| c.set(false));
    }
}

/// Whether a failure found now is an op's outcome: the op's caller gets its
/// message ([`Op::finish`], `xenblock_op_error`) and reports it, as libxl
/// reports a hotplug script's `hotplug-error`, so the library logs that
/// failure only at debug level (one line per failure in the caller's log).
pub(crate) fn failure_is_returned() -> bool {
    IN_OP.with(|c| c.get())
}

/// What a finished op did.
#[derive(Debug)]
pub enum Outcome {
    Prepared(Prepared),
    Released(Released),
}

/// The part of an op the worker and the caller share.
struct Shared {
    done: DoneFlag,
    result: Mutex<Slot>,
}

enum Slot {
    Running,
    Done(Result<Outcome>),
    /// The outcome was returned; its kind (`None`: success).
    Taken(Option<ErrorKind>),
}

impl Shared {
    fn complete(&self, r: Result<Outcome>) {
        *self.result.lock() = Slot::Done(r);
        self.done.set();
    }
}

/// An op started by [`Context::start`]. Dropping it before it is done is
/// fine: the op still runs to its end, and its effects stay.
pub struct Op {
    shared: Arc<Shared>,
    backend: String,
    action: Action,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("backend", &self.backend)
            .field("action", &self.action)
            .field("done", &self.is_done())
            .finish()
    }
}

impl Op {
    /// A descriptor that polls readable once the op is done and stays so
    /// until the op is dropped. Never read or close it.
    pub fn fd(&self) -> RawFd {
        self.shared.done.fd()
    }

    /// Whether the op is done (its outcome may have been taken already).
    pub fn is_done(&self) -> bool {
        !matches!(*self.shared.result.lock(), Slot::Running)
    }

    /// The backend path the op was started with.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The op's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The outcome, once: [`ErrorKind::WouldBlock`] while the op runs,
    /// [`ErrorKind::InvalidArgument`] when the outcome was taken before.
    pub fn finish(&mut self) -> Result<Outcome> {
        self.try_finish().unwrap_or_else(|| {
            Err(Error::WouldBlock(format!(
                "the op {} on {} is still running; wait for its descriptor to poll readable",
                self.verb(),
                self.backend
            )))
        })
    }

    /// The outcome, once, or `None` while the op runs. The check and the
    /// take are one critical section: an op completing meanwhile is seen
    /// by the next call, never lost.
    pub fn try_finish(&mut self) -> Option<Result<Outcome>> {
        let mut slot = self.shared.result.lock();
        Some(match &*slot {
            Slot::Running => return None,
            Slot::Taken(kind) => Err(Error::InvalidArgument(format!(
                "the outcome of the op {} on {} was already returned ({}); an op is \
                 finished once",
                self.verb(),
                self.backend,
                kind.map_or("ok".to_string(), |k| k.to_string())
            ))),
            Slot::Done(r) => {
                let kind = r.as_ref().err().map(Error::kind);
                match std::mem::replace(&mut *slot, Slot::Taken(kind)) {
                    Slot::Done(r) => r,
                    _ => Err(Error::Internal("an op's outcome vanished".into())),
                }
            }
        })
    }

    /// Wait (blocking this thread) until the op is done, then [`Op::finish`].
    pub fn wait(&mut self) -> Result<Outcome> {
        self.shared.done.wait(None);
        self.finish()
    }

    /// Wait at most `timeout`; true once done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.shared.done.wait(Some(timeout))
    }

    fn verb(&self) -> &'static str {
        match self.action {
            Action::Add => "add",
            Action::Remove => "remove",
        }
    }
}

type Work = Box<dyn FnOnce() -> Result<Outcome> + Send>;

enum Job {
    Op {
        op: Arc<Shared>,
        work: Work,
    },
    /// Work nobody waits for ([`Context::warm`]); dropped unrun at shutdown.
    Background(Box<dyn FnOnce() + Send>),
    /// A synchronous call waiting for its turn on its caller's thread.
    Inline(u64),
}

#[derive(Default)]
struct Lane {
    running: bool,
    queue: VecDeque<Job>,
}

#[derive(Default)]
struct State {
    lanes: HashMap<String, Lane>,
    /// Lanes whose first job is an op, none running: for the workers.
    ready: VecDeque<String>,
    threads: Vec<JoinHandle<()>>,
    idle: usize,
    /// Idle workers notified and not yet awake (0 or 1): while one is on
    /// its way, a start does not wake another; the woken worker wakes the
    /// next if more lanes are ready ([`claim_wake`]).
    waking: usize,
    closing: bool,
    next_ticket: u64,
    /// Op descriptors made ahead by the workers, so that a start takes one
    /// instead of making an eventfd on the caller's thread.
    spare: Vec<DoneFlag>,
}

/// A worker about to wait for work first tops the spare descriptors up to
/// this many (when fewer than half are left).
const SPARE_FLAGS: usize = 16;

/// std's mutex and condition variables, not parking_lot's: those park
/// their waiters in one table global to the process, whose bucket locks a
/// thread of the parent may hold at a `fork`; a child that then makes a
/// context of its own (as a libxl user's child does) could wait on such a
/// lock forever. std's are futexes on the objects themselves.
struct PoolShared {
    state: StdMutex<State>,
    /// The owner the descriptors are listed under (`sys::fdreg`).
    fd_owner: u32,
    work: StdCondvar,
    turn: StdCondvar,
}

impl PoolShared {
    /// The state (a panic never leaves it inconsistent: every critical
    /// section is plain bookkeeping).
    fn lock(&self) -> StdGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The worker threads and the per-backend lanes of one context.
pub(crate) struct Pool {
    shared: Arc<PoolShared>,
    max: usize,
    /// The fork generation it was made in (`sys::fork`).
    generation: u64,
}

/// The lane of a backend path: `backend/vbd/7/51712` and
/// `/local/domain/0/backend/vbd/7/51712` are one backend.
fn lane_key(path: &str) -> String {
    let p = path.trim_end_matches('/');
    if let Some(rest) = p.strip_prefix("/local/domain/") {
        if let Some(i) = rest.find('/') {
            return rest[i + 1..].to_string();
        }
    }
    p.to_string()
}

impl Pool {
    pub(crate) fn new(max: usize, fd_owner: u32) -> Pool {
        Pool {
            shared: Arc::new(PoolShared {
                state: StdMutex::new(State::default()),
                fd_owner,
                work: StdCondvar::new(),
                turn: StdCondvar::new(),
            }),
            max: max.max(1),
            generation: {
                crate::sys::fork::install();
                crate::sys::fork::generation()
            },
        }
    }

    /// A descriptor for a new op: a spare one made by a worker, else a new
    /// eventfd (the first starts, and past a burst of [`SPARE_FLAGS`]).
    fn take_flag(&self) -> std::io::Result<DoneFlag> {
        if let Some(f) = self.shared.lock().spare.pop() {
            return Ok(f);
        }
        DoneFlag::new(self.shared.fd_owner)
    }

    /// Queue `work` on the lane of `key`; a worker is started if none is
    /// idle and the pool is not full.
    fn submit(&self, key: String, job: Job) -> Result<()> {
        let mut st = self.shared.lock();
        if st.closing {
            return Err(Error::BadState(
                "the context is being freed; no op can be started on it".into(),
            ));
        }
        let lane = st.lanes.entry(key.clone()).or_default();
        let first = !lane.running && lane.queue.is_empty();
        lane.queue.push_back(job);
        if !first {
            // Its turn comes when the lane's earlier job ends.
            return Ok(());
        }
        st.ready.push_back(key.clone());
        // Lanes ready beyond the idle workers get a new worker, up to max.
        // (An idle worker takes a ready lane in the same critical section
        // in which it stops counting as idle, so the comparison is exact.)
        if st.ready.len() > st.idle && st.threads.len() < self.max {
            let shared = self.shared.clone();
            let spawned = spawn_worker(shared);
            match spawned {
                Ok(h) => st.threads.push(h),
                Err(e) if st.threads.is_empty() => {
                    // Nobody could run it: take it back, report.
                    st.ready.pop_back();
                    if let Some(lane) = st.lanes.get_mut(&key) {
                        lane.queue.pop_back();
                        if lane.queue.is_empty() && !lane.running {
                            st.lanes.remove(&key);
                        }
                    }
                    return Err(Error::io("cannot start a xenblock worker thread", e));
                }
                // The workers there are will take it.
                Err(_) => {}
            }
        }
        // Woken after the mutex is let go, so that the worker does not
        // find it taken (and the caller is not held up by the switch).
        let wake = claim_wake(&mut st);
        drop(st);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Run `f` on this thread in the lane of `key`, after the ops started
    /// on that backend before it.
    /// With `nowait`, a lane in use gives [`ErrorKind::WouldBlock`] at once.
    pub(crate) fn inline<T>(
        &self,
        path: &str,
        nowait: bool,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let key = lane_key(path);
        {
            let mut st = self.shared.lock();
            let lane = st.lanes.entry(key.clone()).or_default();
            if lane.running || !lane.queue.is_empty() {
                if nowait {
                    return Err(Error::WouldBlock(format!(
                        "an op on {path} started before this call is still running; try again \
                         later"
                    )));
                }
                let ticket = st.next_ticket;
                st.next_ticket += 1;
                st.lanes
                    .get_mut(&key)
                    .expect("lane made above")
                    .queue
                    .push_back(Job::Inline(ticket));
                loop {
                    let lane = st.lanes.get_mut(&key).expect("a lane with a job stays");
                    if !lane.running
                        && matches!(lane.queue.front(), Some(Job::Inline(t)) if *t == ticket)
                    {
                        lane.queue.pop_front();
                        break;
                    }
                    st = self
                        .shared
                        .turn
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            st.lanes.get_mut(&key).expect("lane made above").running = true;
        }
        struct Turn<'a>(&'a PoolShared, String);
        impl Drop for Turn<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                end_turn(self.0, &mut st, &self.1);
            }
        }
        let _turn = Turn(&self.shared, key);
        f()
    }

    /// Cancel the queued ops, wait for the running ones, join the threads.
    /// In a forked child, nothing (the parent's threads are not there).
    pub(crate) fn shutdown(&self) {
        if !self.is_own() {
            return;
        }
        let spares;
        let threads = {
            let mut st = self.shared.lock();
            st.closing = true;
            let mut cancelled = Vec::new();
            for lane in st.lanes.values_mut() {
                lane.queue.retain_mut(|j| match j {
                    Job::Op { op, .. } => {
                        cancelled.push(op.clone());
                        false
                    }
                    Job::Background(_) => false,
                    Job::Inline(_) => true,
                });
            }
            st.ready.clear();
            for op in cancelled {
                op.complete(Err(Error::Cancelled(
                    "the context was freed before this op started; nothing was done".into(),
                )));
            }
            self.shared.work.notify_all();
            self.shared.turn.notify_all();
            spares = std::mem::take(&mut st.spare);
            std::mem::take(&mut st.threads)
        };
        drop(spares);
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    /// Whether this pool was made in this process (not inherited by fork).
    pub(crate) fn is_own(&self) -> bool {
        crate::sys::fork::generation() == self.generation
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The lane of `key` is free again: hand it to its next job.
fn end_turn(p: &PoolShared, st: &mut State, key: &str) {
    let Some(lane) = st.lanes.get_mut(key) else {
        return;
    };
    lane.running = false;
    match lane.queue.front() {
        None => {
            st.lanes.remove(key);
        }
        Some(Job::Op { .. } | Job::Background(_)) => {
            st.ready.push_back(key.to_string());
            if claim_wake(st) {
                p.work.notify_one();
            }
        }
        Some(Job::Inline(_)) => {
            p.turn.notify_all();
        }
    }
}

/// Whether to wake an idle worker for a lane just made ready: yes when one
/// is idle and none was woken already. A wake costs a futex call and, on a
/// virtual machine, an inter-processor interrupt (several µs): a burst of
/// starts pays it once, on its first start, and each worker woken wakes
/// the next while lanes are ready and workers idle (`worker`), off the
/// caller's thread.
fn claim_wake(st: &mut State) -> bool {
    if st.waking == 0 && st.idle > 0 {
        st.waking = 1;
        true
    } else {
        false
    }
}

/// The asynchronous signals: all but those a fault raises on its thread.
fn async_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::all();
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGABRT,
        Signal::SIGTRAP,
    ] {
        set.remove(s);
    }
    set
}

/// Start a worker with the asynchronous signals blocked from its first
/// instruction, so that the host's handlers run on the host's own threads
/// (children get a clean mask at exec). A thread inherits its creator's
/// mask, so the creating (host's) thread blocks them for the spawn and then
/// restores its own mask, and a signal sent meanwhile waits for the host's
/// thread instead of running the host's handler on a worker before it
/// could block it. Should that blocking fail, the worker blocks them first
/// thing.
fn spawn_worker(shared: Arc<PoolShared>) -> std::io::Result<JoinHandle<()>> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut old = SigSet::empty();
    let masked = pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&async_signals()),
        Some(&mut old),
    )
    .is_ok();
    let r = std::thread::Builder::new()
        .name("xenblock-op".into())
        .spawn(move || {
            if !masked {
                let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&async_signals()), None);
            }
            worker(shared)
        });
    if masked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    r
}

/// Wait, idle, until woken (by [`claim_wake`]'s caller, or at shutdown).
fn idle_wait<'a>(p: &PoolShared, mut st: StdGuard<'a, State>) -> StdGuard<'a, State> {
    st.idle += 1;
    let mut st = p.work.wait(st).unwrap_or_else(PoisonError::into_inner);
    st.idle -= 1;
    st.waking = st.waking.saturating_sub(1);
    st
}

/// Run an op's work; a panic in it is its outcome, an internal error.
fn run_op(work: Work) -> Result<Outcome> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|e| {
        let what = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Internal(format!(
            "internal error in xenblock (please report): {what}"
        )))
    })
}

fn worker(p: Arc<PoolShared>) {
    let mut st = p.lock();
    loop {
        if let Some(key) = st.ready.pop_front() {
            // A ready lane has an op first and none running; check anyway,
            // and never take a synchronous caller's place.
            let job = st.lanes.get_mut(&key).and_then(|lane| {
                if lane.running || matches!(lane.queue.front(), None | Some(Job::Inline(_))) {
                    return None;
                }
                lane.running = true;
                lane.queue.pop_front()
            });
            let Some(job @ (Job::Op { .. } | Job::Background(_))) = job else {
                continue;
            };
            // More lanes ready and workers idle: wake the next one.
            let chain = !st.ready.is_empty() && claim_wake(&mut st);
            drop(st);
            if chain {
                p.work.notify_one();
            }
            match job {
                Job::Op { op, work } => op.complete(run_op(work)),
                // Nobody waits for it: it logs its own failures and panics;
                // this only keeps the worker alive.
                Job::Background(f) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                }
                Job::Inline(_) => {} // never taken above
            }
            st = p.lock();
            end_turn(&p, &mut st, &key);
        } else if st.closing {
            return;
        } else if st.spare.len() < SPARE_FLAGS / 2 {
            // Made here, off the callers' threads; listed under the
            // context's owner like every op descriptor.
            let want = SPARE_FLAGS - st.spare.len();
            drop(st);
            let made: Vec<DoneFlag> = (0..want)
                .map_while(|_| DoneFlag::new(p.fd_owner).ok())
                .collect();
            let short = made.len() < want;
            st = p.lock();
            if !st.closing {
                st.spare.extend(made);
            }
            if short {
                // Out of descriptors: starts make their own (and fail
                // clearly); wait for work rather than try again now.
                st = idle_wait(&p, st);
            }
        } else {
            st = idle_wait(&p, st);
        }
    }
}

impl Context {
    /// Start preparing (`Action::Add`) or releasing (`Action::Remove`) the
    /// backend at `backend_path` on the context's worker threads. Returns at
    /// once: the path's shape is checked here, everything else happens in
    /// the op ([`Op::fd`], [`Op::finish`]). The op holds the context until
    /// it is done.
    pub fn start(self: &Arc<Self>, backend_path: &str, action: Action) -> Result<Op> {
        let path = crate::spec::normalise_path(backend_path)?;
        crate::spec::check_backend_shape(&path)?;
        let shared = Arc::new(Shared {
            done: self
                .pool
                .take_flag()
                .map_err(|e| Error::io("cannot make the op's descriptor (eventfd)", e))?,
            result: Mutex::new(Slot::Running),
        });
        let ctx = self.clone();
        let p = path.clone();
        let work: Work = Box::new(move || {
            let _scope = OpScope::enter();
            match action {
                Action::Add => ctx.prepare(&p).map(Outcome::Prepared),
                Action::Remove => ctx.release(&p).map(Outcome::Released),
            }
        });
        self.pool.submit(
            lane_key(&path),
            Job::Op {
                op: shared.clone(),
                work,
            },
        )?;
        Ok(Op {
            shared,
            backend: path,
            action,
        })
    }

    /// Get ready, on a worker thread, for the decisions about backends like
    /// `backend_path` (one that the caller is about to have prepared):
    /// the claims index is built now (watches registered, every other
    /// backend under the same `.../backend` read) instead of at the second
    /// decision, so that the first prepare only proves it current. Returns
    /// at once; the work is not an op and nobody waits for it (a prepare
    /// that comes before it ends waits for it in its decision, holding the
    /// hotplug lock; one that comes before it starts scans). For hosts
    /// that make a context shortly before their first attach, like `xl`
    /// (a new process per command), where the reads then overlap the
    /// backend's setup. Nothing happens without an index
    /// ([`Config::claims_index`](crate::Config::claims_index)), with a
    /// store that cannot watch, or once the index is built. Freeing the
    /// context waits for a warm-up under way (a scan's worth of reads).
    pub fn warm(self: &Arc<Self>, backend_path: &str) -> Result<()> {
        let path = crate::spec::normalise_path(backend_path)?;
        crate::spec::check_backend_shape(&path)?;
        let Some(parent) = crate::index::parent_of(&path) else {
            return Ok(());
        };
        // No index without a store that can watch (ClaimsIndex::new).
        if self.index.is_none() {
            return Ok(());
        }
        let ctx = self.clone();
        let parent = parent.to_string();
        let work = Box::new(move || {
            let warmed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some(ix) = &ctx.index {
                    ix.warm(&parent, &|level, m| ctx.log(level, m));
                }
            }));
            if warmed.is_err() {
                ctx.log(
                    crate::LogLevel::Error,
                    "internal error in xenblock (please report): the claims index's warm-up \
                     failed; the decisions will read every backend instead",
                );
            }
        });
        // A lane of its own, which no backend path can name.
        self.pool
            .submit("\0claims-index".into(), Job::Background(work))
    }

    /// Stop the worker threads: the queued ops are cancelled, the running
    /// ones waited for. Also done when the context is dropped.
    pub fn shutdown_workers(&self) {
        // Ops waiting for the hotplug lock end at once (Cancelled), so the
        // join below waits only for ops past the lock.
        if self.pool.is_own() {
            self.lock.close();
        }
        self.pool.shutdown();
    }

    /// In a child forked while this context existed (not
    /// [`Context::is_own_process`]): close the descriptors it and its ops
    /// had open at the fork (the xenstore connection, the eventfds, the
    /// lock's directory watch and lock file, the `/proc` files), taking no
    /// lock. The context must not be used afterwards, nor dropped (forget
    /// it: its mutexes may be held by threads that are not in the child).
    /// Returns how many were closed. Nothing in the process it was made in.
    pub fn close_inherited_fds(&self) -> usize {
        if self.is_own_process() {
            return 0;
        }
        crate::sys::fdreg::close_inherited(self.fd_owner)
    }

    /// Whether the context was made in this process (not inherited by
    /// `fork`): an inherited one must not be used or freed.
    pub fn is_own_process(&self) -> bool {
        self.pool.is_own()
    }

    /// [`Context::prepare`] in the backend's turn (after the ops started
    /// on it before), on this thread.
    /// Inside [`crate::lock::no_wait`], an op still running on the backend
    /// gives [`ErrorKind::WouldBlock`] at once.
    pub fn prepare_ordered(&self, backend_path: &str) -> Result<Prepared> {
        let nowait = crate::lock::is_no_wait();
        self.pool
            .inline(backend_path, nowait, || self.prepare(backend_path))
    }

    /// [`Context::release`] in the backend's turn, on this thread.
    pub fn release_ordered(&self, backend_path: &str) -> Result<Released> {
        let nowait = crate::lock::is_no_wait();
        self.pool
            .inline(backend_path, nowait, || self.release(backend_path))
    }
}

#[cfg(test)]
mod tests {
    use super::lane_key;

    #[test]
    fn one_lane_per_backend_whatever_the_spelling() {
        assert_eq!(lane_key("backend/vbd/7/51712"), "backend/vbd/7/51712");
        assert_eq!(
            lane_key("/local/domain/0/backend/vbd/7/51712/"),
            "backend/vbd/7/51712"
        );
    }
}
