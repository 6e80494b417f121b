//! Connections, request dispatch, watches and transactions.
//!
//! Threads: one reader per connection (reads a request, runs it, sends or
//! queues the reply) and one writer per connection (drains that connection's
//! [`Outbox`]). A message for a connection with nothing queued or being
//! written is sent at once with a non-blocking `send` (no thread hand-off:
//! one wake-up per round trip instead of two); whatever does not fit in the
//! socket is queued for the writer. Nobody ever blocks writing to another
//! connection, so a client that stops reading cannot hold anyone up: when
//! its queue passes [`OUTBOX_LIMIT`] bytes the connection is shut down.
//!
//! One mutex guards the live tree, the watch list and the introduced
//! domains. Transactions belong to their connection: each holds an O(1)
//! snapshot of the tree ([`Tree`] is copy-on-write), the generations of the
//! nodes it touched, and a log of its changes. Commit checks those
//! generations against the live tree (EAGAIN on any change) and replays the
//! log, firing the watch events then.
//!
//! Every socket client is dom0, so no permission is ever refused; stored
//! permissions are still kept and reported faithfully.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno as SysErrno;
use nix::sys::socket::{send, MsgFlags};
use parking_lot::{Condvar, Mutex};
use xenblock::store::wire::{
    errno_name, Header, Message, MsgType, HEADER_LEN, PAYLOAD_MAX, REL_PATH_MAX,
};

use crate::tree::{
    atoi, canonical, canonicalize, is_child, is_valid_nodename, Accessed, Ctx, Errno, Event, Op,
    Perm, Tree, XsResult, DOM0_HOME,
};

/// Default for the bytes of unsent replies and events a connection may have
/// queued before it is considered stuck and disconnected.
pub const OUTBOX_LIMIT: usize = 8 << 20;
/// Size of each connection's request read buffer.
const READ_BUFFER: usize = 64 << 10;
/// Bytes of replies held back for one batch before they are queued anyway.
const HELD_MAX: usize = 256 << 10;
/// `DOMID_FIRST_RESERVED` / `DOMID_SELF` from xen.h.
const DOMID_FIRST_RESERVED: u32 = 0x7FF0;
const DOMID_SELF: u32 = 0x7FF0;
/// Special watch paths with settable permissions.
const SPECIAL_PATHS: [&str; 2] = ["@introduceDomain", "@releaseDomain"];

/// The outgoing queue of one connection.
pub struct Outbox {
    queue: Mutex<OutQueue>,
    ready: Condvar,
    stream: UnixStream,
    limit: usize,
    /// Send at once when nothing is queued (a writer thread runs for the
    /// rest); off for outboxes drained by [`Outbox::take_queued`].
    direct: bool,
}

#[derive(Default)]
struct OutQueue {
    msgs: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Send what is queued, then close.
    closing: bool,
    /// Broken or stuck: drop everything.
    dead: bool,
    /// The writer has taken a batch and is writing it: nothing may be sent
    /// around it.
    writing: bool,
}

impl Outbox {
    /// The queue of a connection whose writer (if any) writes to `stream`;
    /// a client leaving more than `limit` bytes unread is disconnected.
    pub fn new(stream: UnixStream, limit: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(OutQueue::default()),
            ready: Condvar::new(),
            stream,
            limit,
            direct: false,
        }
    }

    /// The same, for a connection served with a writer thread: messages
    /// are sent straight away when nothing is queued ahead of them.
    fn with_writer(stream: UnixStream, limit: usize) -> Outbox {
        Outbox {
            direct: true,
            ..Outbox::new(stream, limit)
        }
    }

    /// Queue a message (dropped if the connection is closing or broken).
    fn push(&self, msg: &Message) {
        let Ok(mut bytes) = msg.encode() else { return };
        self.push_encoded(&mut bytes);
    }

    /// Queue encoded messages, back to back in `buf`, with one wake-up of
    /// the writer; `buf` is left empty (with its capacity when it could be
    /// sent at once, for the caller to fill again). A client whose unsent
    /// bytes would pass the limit is disconnected.
    fn push_encoded(&self, buf: &mut Vec<u8>) {
        let mut q = self.queue.lock();
        if q.dead || q.closing {
            buf.clear();
            return;
        }
        if q.bytes + buf.len() > self.limit {
            eprintln!("xenblock-xenstored: client not reading its replies; disconnecting it");
            q.dead = true;
            buf.clear();
            let _ = self.stream.shutdown(Shutdown::Both);
            self.ready.notify_all();
            return;
        }
        if self.direct && q.msgs.is_empty() && !q.writing {
            // Nothing ahead of these bytes: try to send them now, without
            // blocking, and queue only what the socket did not take.
            let mut sent = 0;
            while sent < buf.len() {
                match send(
                    self.stream.as_raw_fd(),
                    &buf[sent..],
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(n) => sent += n,
                    Err(SysErrno::EINTR) => continue,
                    Err(SysErrno::EAGAIN) => break,
                    Err(_) => {
                        q.dead = true;
                        q.msgs.clear();
                        buf.clear();
                        let _ = self.stream.shutdown(Shutdown::Both);
                        self.ready.notify_all();
                        return;
                    }
                }
            }
            if sent == buf.len() {
                buf.clear();
                return;
            }
            buf.drain(..sent);
        }
        q.bytes += buf.len();
        q.msgs.push_back(std::mem::take(buf));
        self.ready.notify_all();
    }

    /// Take everything queued so far, without a writer thread (tests and
    /// fuzzing drive [`Daemon::read_loop`] directly). `None` when the
    /// connection was given up as stuck.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn take_queued(&self) -> Option<Vec<Vec<u8>>> {
        let mut q = self.queue.lock();
        if q.dead {
            return None;
        }
        q.bytes = 0;
        Some(q.msgs.drain(..).collect())
    }

    /// Send what is queued, then close the connection.
    fn close_after_flush(&self) {
        self.queue.lock().closing = true;
        self.ready.notify_all();
    }

    /// The writer's loop, until the connection is closed and flushed.
    pub fn run_writer(&self) {
        let mut stream = &self.stream;
        loop {
            let batch: Vec<Vec<u8>> = {
                let mut q = self.queue.lock();
                while q.msgs.is_empty() && !q.closing && !q.dead {
                    self.ready.wait(&mut q);
                }
                if q.dead || q.msgs.is_empty() {
                    break;
                }
                q.bytes = 0;
                q.writing = true;
                q.msgs.drain(..).collect()
            };
            let mut buf = Vec::with_capacity(batch.iter().map(Vec::len).sum());
            for m in &batch {
                buf.extend_from_slice(m);
            }
            let failed = stream.write_all(&buf).is_err();
            let mut q = self.queue.lock();
            q.writing = false;
            if failed {
                q.dead = true;
                q.msgs.clear();
                break;
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Whether `buf` starts with a complete request (header and payload), so
/// reading it will not wait for the client.
fn next_request_buffered(buf: &[u8]) -> bool {
    let Some(hb) = buf.get(..HEADER_LEN) else {
        return false;
    };
    let h = Header::decode(hb.try_into().expect("HEADER_LEN bytes"));
    (h.len as usize) > PAYLOAD_MAX || buf.len() >= HEADER_LEN + h.len as usize
}

/// A registered watch.
struct Watch {
    conn: u64,
    out: Arc<Outbox>,
    /// Absolute path, or a `@special` name.
    node: String,
    token: Vec<u8>,
    /// Registered with a relative path: events are reported relative too.
    relative: bool,
}

impl Watch {
    /// The path to report for an event on `path` (`get_watch_path`).
    fn report_path<'p>(&self, path: &'p str) -> &'p str {
        if self.relative {
            let rest = path.strip_prefix(DOM0_HOME).unwrap_or(path);
            rest.strip_prefix('/').unwrap_or(rest)
        } else {
            path
        }
    }

    fn send(&self, path: &str) {
        let mut payload = self.report_path(path).as_bytes().to_vec();
        payload.push(0);
        payload.extend_from_slice(&self.token);
        payload.push(0);
        if payload.len() <= PAYLOAD_MAX {
            self.out
                .push(&Message::new(MsgType::WatchEvent, 0, 0, payload));
        }
    }
}

/// State shared by all connections.
struct Shared {
    tree: Tree,
    watches: Vec<Watch>,
    introduced: BTreeSet<u32>,
    special_perms: HashMap<String, Vec<Perm>>,
}

impl Shared {
    fn fire(&self, events: &[Event]) {
        for ev in events {
            for w in &self.watches {
                let hit = if ev.exact {
                    ev.path == w.node
                } else {
                    is_child(&ev.path, &w.node)
                };
                if hit {
                    w.send(&ev.path);
                }
            }
        }
    }
}

/// The daemon: the store plus a connection counter.
pub struct Daemon {
    shared: Mutex<Shared>,
    next_conn: AtomicU64,
    outbox_limit: usize,
}

/// An open transaction.
struct Transaction {
    tree: Tree,
    accessed: Accessed,
    log: Vec<Op>,
}

/// Per-connection state, owned by the connection's reader thread.
pub struct Conn {
    id: u64,
    out: Arc<Outbox>,
    txs: HashMap<u32, Transaction>,
    next_tx: u32,
}

/// What a handler produced.
enum Reply {
    /// Send this payload with the request's type.
    Payload(Vec<u8>),
    /// The same, already appended to the outgoing batch.
    Appended,
    /// The handler queued everything itself.
    Sent,
}

fn ok() -> XsResult<Reply> {
    Ok(Reply::Payload(b"OK\0".to_vec()))
}

/// The NUL-terminated strings of a payload (a trailing unterminated piece is
/// not a string, as in xenstored's `get_strings`).
fn strings(payload: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = payload.split(|&b| b == 0).collect();
    v.pop();
    v
}

/// xenstored's `onearg`: exactly one string, NUL-terminated at the end.
fn onearg(payload: &[u8]) -> XsResult<&[u8]> {
    match payload.iter().position(|&b| b == 0) {
        Some(i) if i + 1 == payload.len() => Ok(&payload[..i]),
        _ => Err(libc::EINVAL),
    }
}

fn utf8(b: &[u8]) -> XsResult<&str> {
    std::str::from_utf8(b).map_err(|_| libc::EINVAL)
}

/// A client path made absolute (in `scratch` if it was relative) and
/// checked (`get_node_canonicalized`).
fn node_path<'a>(raw: &'a [u8], scratch: &'a mut String) -> XsResult<&'a str> {
    let p = canonical(utf8(raw)?, scratch);
    if is_valid_nodename(p) {
        Ok(p)
    } else {
        Err(libc::EINVAL)
    }
}

fn with_nul(mut v: Vec<u8>) -> Vec<u8> {
    v.push(0);
    v
}

impl Daemon {
    /// A daemon with the initial tree; `outbox_limit` bounds each
    /// connection's queue of unsent bytes (see [`OUTBOX_LIMIT`]).
    pub fn new(outbox_limit: usize) -> Daemon {
        Daemon {
            shared: Mutex::new(Shared {
                tree: Tree::new(),
                watches: Vec::new(),
                introduced: BTreeSet::new(),
                special_perms: HashMap::new(),
            }),
            next_conn: AtomicU64::new(1),
            outbox_limit,
        }
    }

    /// Serve one client until it disconnects or breaks the protocol.
    /// `writer` runs the connection's writer ([`Outbox::run_writer`]) on
    /// another thread (the caller's pool keeps those threads).
    pub fn serve(
        self: &Arc<Self>,
        stream: UnixStream,
        writer: impl FnOnce(Arc<Outbox>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let out = Arc::new(Outbox::with_writer(stream.try_clone()?, self.outbox_limit));
        writer(out.clone())?;
        let mut conn = self.open_with_id(id, out);
        self.read_loop(&mut conn, stream);
        self.close(conn);
        Ok(())
    }

    /// A new connection whose replies and watch events are queued on `out`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn open(&self, out: Arc<Outbox>) -> Conn {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.open_with_id(id, out)
    }

    fn open_with_id(&self, id: u64, out: Arc<Outbox>) -> Conn {
        Conn {
            id,
            out,
            txs: HashMap::new(),
            next_tx: 1,
        }
    }

    /// Forget a connection: drop its watches and transactions, flush and
    /// close its outbox.
    pub fn close(&self, conn: Conn) {
        self.shared.lock().watches.retain(|w| w.conn != conn.id);
        conn.out.close_after_flush();
    }

    /// Read requests, run them, queue their replies. Requests are read
    /// through a buffer; the replies to *read-only* requests that a client
    /// pipelined are handed to the writer together (one wake-up, one
    /// `write`) once no further complete request is already buffered. Any
    /// other request first flushes what is held and has its reply queued at
    /// once, so replies and watch events reach the outbox in the same order
    /// as when each reply is queued on its own.
    pub fn read_loop(&self, conn: &mut Conn, stream: impl Read) {
        let mut stream = BufReader::with_capacity(READ_BUFFER, stream);
        // Replies held back for one batch, encoded back to back.
        let mut held: Vec<u8> = Vec::new();
        // The absolute form of a relative request path.
        let mut scratch = String::new();
        let mut msg = Message::new(MsgType::Error, 0, 0, Vec::new());
        let out = conn.out.clone();
        let flush = |held: &mut Vec<u8>| {
            if !held.is_empty() {
                out.push_encoded(held);
            }
        };
        loop {
            let mut hb = [0u8; HEADER_LEN];
            if stream.read_exact(&mut hb).is_err() {
                flush(&mut held);
                return;
            }
            let h = Header::decode(&hb);
            if h.len as usize > PAYLOAD_MAX {
                // xenstored drops such a client; tell it why first.
                flush(&mut held);
                out.push(&error_msg(h.req_id, h.tx_id, libc::E2BIG));
                return;
            }
            msg.payload.clear();
            msg.payload.resize(h.len as usize, 0);
            if stream.read_exact(&mut msg.payload).is_err() {
                flush(&mut held);
                return;
            }
            (msg.msg_type, msg.req_id, msg.tx_id) = (h.msg_type, h.req_id, h.tx_id);
            let read_only = matches!(
                msg.kind(),
                Some(
                    MsgType::Read | MsgType::Directory | MsgType::DirectoryPart | MsgType::GetPerms
                )
            );
            if !read_only {
                flush(&mut held);
            }
            // The reply is encoded straight into the batch: its header's
            // place first, then the payload, then the header.
            let start = held.len();
            held.resize(start + HEADER_LEN, 0);
            let reply = match self.dispatch(conn, &msg, &mut held, &mut scratch) {
                Ok(Reply::Payload(p)) => {
                    held.extend_from_slice(&p);
                    Ok(true)
                }
                Ok(Reply::Appended) => Ok(true),
                Ok(Reply::Sent) => Ok(false),
                Err(e) => Err(e),
            };
            let len = held.len() - start - HEADER_LEN;
            // E2BIG when it would not fit in one message.
            let reply = match reply {
                Ok(true) if len > PAYLOAD_MAX => Err(libc::E2BIG),
                r => r,
            };
            match reply {
                Ok(true) => {
                    let h = Header {
                        msg_type: msg.msg_type,
                        req_id: msg.req_id,
                        tx_id: msg.tx_id,
                        len: len as u32,
                    };
                    held[start..start + HEADER_LEN].copy_from_slice(&h.encode());
                }
                Ok(false) => held.truncate(start),
                Err(e) => {
                    held.truncate(start);
                    if let Ok(b) = error_msg(msg.req_id, msg.tx_id, e).encode() {
                        held.extend_from_slice(&b);
                    }
                }
            }
            if !read_only || held.len() >= HELD_MAX || !next_request_buffered(stream.buffer()) {
                flush(&mut held);
            }
        }
    }

    /// Run a request. Its reply's payload is returned, or appended to
    /// `held` (read-only requests; `held` may hold anything on error: the
    /// caller drops what was appended).
    fn dispatch(
        &self,
        conn: &mut Conn,
        msg: &Message,
        held: &mut Vec<u8>,
        scratch: &mut String,
    ) -> XsResult<Reply> {
        use MsgType::*;
        // Unknown and unsupported types: ENOSYS, as xenstored 4.17 answers.
        let kind = match msg.kind() {
            Some(WatchEvent | Error | GetFeature | SetFeature | GetQuota | SetQuota) | None => {
                return Err(libc::ENOSYS)
            }
            Some(k) => k,
        };
        let tx = msg.tx_id;
        if !matches!(kind, Watch | Unwatch) && tx != 0 && !conn.txs.contains_key(&tx) {
            return Err(libc::ENOENT);
        }
        let p = &msg.payload[..];
        match kind {
            Read => {
                let path = node_path(onearg(p)?, scratch)?;
                self.view(conn, tx, |t, c| t.read(c, path, held))?;
                Ok(Reply::Appended)
            }
            Directory => {
                let path = node_path(onearg(p)?, scratch)?;
                self.view(conn, tx, |t, c| t.directory(c, path, held))?;
                Ok(Reply::Appended)
            }
            DirectoryPart => {
                let s = strings(p);
                if s.len() != 2 || p.iter().filter(|&&b| b == 0).count() != 2 {
                    return Err(libc::EINVAL);
                }
                let path = node_path(s[0], scratch)?;
                let off = atoi(s[1]) as u32 as usize;
                Ok(Reply::Payload(
                    self.view(conn, tx, |t, c| t.directory_part(c, path, off))?,
                ))
            }
            GetPerms => {
                let path = node_path(onearg(p)?, scratch)?;
                let perms = self.view(conn, tx, |t, c| t.get_perms(c, path))?;
                for perm in perms.iter() {
                    perm.append_wire(held);
                    held.push(0);
                }
                Ok(Reply::Appended)
            }
            Write => {
                let s = strings(p);
                let Some(raw) = s.first() else {
                    return Err(libc::EINVAL);
                };
                let value = p[raw.len() + 1..].to_vec();
                let path = node_path(raw, scratch)?.to_string();
                self.change(conn, tx, Op::Write(path, value))?;
                ok()
            }
            Mkdir => {
                let path = node_path(onearg(p)?, scratch)?.to_string();
                self.change(conn, tx, Op::Mkdir(path))?;
                ok()
            }
            Rm => {
                let path = node_path(onearg(p)?, scratch)?.to_string();
                self.change(conn, tx, Op::Rm(path))?;
                ok()
            }
            SetPerms => self.set_perms(conn, tx, p, scratch),
            Watch => self.watch(conn, msg),
            Unwatch => {
                let s = strings(p);
                if s.len() != 2 {
                    return Err(libc::EINVAL);
                }
                let node = canonicalize(utf8(s[0])?);
                let mut sh = self.shared.lock();
                let pos = sh
                    .watches
                    .iter()
                    .position(|w| w.conn == conn.id && w.node == node && w.token == s[1])
                    .ok_or(libc::ENOENT)?;
                sh.watches.remove(pos);
                ok()
            }
            ResetWatches => {
                self.shared.lock().watches.retain(|w| w.conn != conn.id);
                conn.txs.clear();
                ok()
            }
            TransactionStart => {
                if tx != 0 {
                    return Err(libc::EBUSY);
                }
                let tree = self.shared.lock().tree.clone();
                let mut id = conn.next_tx;
                while id == 0 || conn.txs.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                conn.next_tx = id.wrapping_add(1);
                conn.txs.insert(
                    id,
                    Transaction {
                        tree,
                        accessed: Accessed::new(),
                        log: Vec::new(),
                    },
                );
                Ok(Reply::Payload(with_nul(id.to_string().into_bytes())))
            }
            TransactionEnd => {
                let commit = match onearg(p)? {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err(libc::EINVAL),
                };
                let t = conn.txs.remove(&tx).ok_or(libc::ENOENT)?;
                if commit {
                    self.commit(t)?;
                }
                ok()
            }
            GetDomainPath => {
                let domid = atoi(onearg(p)?) as u32;
                Ok(Reply::Payload(with_nul(
                    format!("/local/domain/{domid}").into_bytes(),
                )))
            }
            IsDomainIntroduced => {
                let domid = atoi(onearg(p)?) as u32;
                let yes = domid == 0
                    || domid == DOMID_SELF
                    || self.shared.lock().introduced.contains(&domid);
                Ok(Reply::Payload(if yes { b"T\0" } else { b"F\0" }.to_vec()))
            }
            Introduce => {
                let s = strings(p);
                if s.len() < 3 {
                    return Err(libc::EINVAL);
                }
                let domid = atoi(s[0]) as u32;
                if domid == 0 || domid >= DOMID_FIRST_RESERVED {
                    return Err(libc::EINVAL);
                }
                let mut sh = self.shared.lock();
                if sh.introduced.insert(domid) {
                    sh.fire(&[special("@introduceDomain")]);
                }
                ok()
            }
            Release => {
                let domid = atoi(onearg(p)?) as u32;
                let mut sh = self.shared.lock();
                if !sh.introduced.remove(&domid) {
                    return Err(libc::ENOENT);
                }
                sh.fire(&[special("@releaseDomain")]);
                ok()
            }
            Resume => {
                let domid = atoi(onearg(p)?) as u32;
                if self.shared.lock().introduced.contains(&domid) {
                    ok()
                } else {
                    Err(libc::ENOENT)
                }
            }
            SetTarget => {
                let s = strings(p);
                if s.len() != 2 {
                    return Err(libc::EINVAL);
                }
                let sh = self.shared.lock();
                for d in [atoi(s[0]) as u32, atoi(s[1]) as u32] {
                    if !sh.introduced.contains(&d) {
                        return Err(libc::ENOENT);
                    }
                }
                ok()
            }
            Control => control(p),
            WatchEvent | Error | GetFeature | SetFeature | GetQuota | SetQuota => Err(libc::ENOSYS),
        }
    }

    /// Run a read-only operation on the live tree or a transaction's copy.
    fn view<R>(
        &self,
        conn: &mut Conn,
        tx: u32,
        f: impl FnOnce(&Tree, &mut Ctx) -> XsResult<R>,
    ) -> XsResult<R> {
        if tx == 0 {
            let sh = self.shared.lock();
            f(&sh.tree, &mut Ctx::live())
        } else {
            let t = conn.txs.get_mut(&tx).ok_or(libc::ENOENT)?;
            f(&t.tree, &mut Ctx::tx(&mut t.accessed))
        }
    }

    /// Apply a change: live (firing watches) or inside a transaction (logged).
    fn change(&self, conn: &mut Conn, tx: u32, op: Op) -> XsResult<()> {
        if tx == 0 {
            let mut sh = self.shared.lock();
            let mut ctx = Ctx::live();
            sh.tree.apply(&mut ctx, &op)?;
            sh.fire(&ctx.events);
        } else {
            let t = conn.txs.get_mut(&tx).ok_or(libc::ENOENT)?;
            t.tree.apply(&mut Ctx::tx(&mut t.accessed), &op)?;
            t.log.push(op);
        }
        Ok(())
    }

    /// Commit: EAGAIN if anything the transaction looked at has changed,
    /// otherwise replay its changes on the live tree and fire their events.
    fn commit(&self, t: Transaction) -> XsResult<()> {
        let mut sh = self.shared.lock();
        if sh.tree.conflicts(&t.accessed) {
            return Err(libc::EAGAIN);
        }
        if t.log.is_empty() {
            return Ok(());
        }
        let mut next = sh.tree.clone();
        let mut ctx = Ctx::live();
        for op in &t.log {
            // Cannot fail when nothing conflicted; if it does, apply nothing.
            next.apply(&mut ctx, op).map_err(|_| libc::EAGAIN)?;
        }
        sh.tree = next;
        sh.fire(&ctx.events);
        Ok(())
    }

    fn set_perms(
        &self,
        conn: &mut Conn,
        tx: u32,
        p: &[u8],
        scratch: &mut String,
    ) -> XsResult<Reply> {
        let s = strings(p);
        if s.len() < 2 {
            return Err(libc::EINVAL);
        }
        let perms = s[1..]
            .iter()
            .map(|x| Perm::parse(x))
            .collect::<XsResult<Vec<_>>>()?;
        let raw = utf8(s[0])?;
        if raw.starts_with('@') {
            if !SPECIAL_PATHS.contains(&raw) {
                return Err(libc::EINVAL);
            }
            self.shared
                .lock()
                .special_perms
                .insert(raw.to_string(), perms);
            return ok();
        }
        let path = node_path(s[0], scratch)?.to_string();
        self.change(conn, tx, Op::SetPerms(path, perms))?;
        ok()
    }

    fn watch(&self, conn: &mut Conn, msg: &Message) -> XsResult<Reply> {
        let s = strings(&msg.payload);
        if s.len() != 2 {
            return Err(libc::EINVAL);
        }
        let raw = utf8(s[0])?;
        let (node, relative) = if raw.starts_with('@') {
            if raw.len() > REL_PATH_MAX {
                return Err(libc::EINVAL);
            }
            (raw.to_string(), false)
        } else {
            let node = canonicalize(raw);
            if !is_valid_nodename(&node) {
                return Err(libc::EINVAL);
            }
            (node, !raw.starts_with('/'))
        };
        let token = s[1].to_vec();
        let mut sh = self.shared.lock();
        if sh
            .watches
            .iter()
            .any(|w| w.conn == conn.id && w.node == node && w.token == token)
        {
            return Err(libc::EEXIST);
        }
        let w = Watch {
            conn: conn.id,
            out: conn.out.clone(),
            node,
            token,
            relative,
        };
        // Acknowledge, then fire once straight away (with the path as given).
        conn.out.push(&Message {
            msg_type: msg.msg_type,
            req_id: msg.req_id,
            tx_id: msg.tx_id,
            payload: b"OK\0".to_vec(),
        });
        w.send(&w.node);
        sh.watches.push(w);
        Ok(Reply::Sent)
    }
}

fn special(name: &str) -> Event {
    Event {
        path: name.to_string(),
        exact: false,
    }
}

/// CONTROL (alias DEBUG): the few commands that make sense here.
fn control(p: &[u8]) -> XsResult<Reply> {
    let s = strings(p);
    let Some(cmd) = s.first() else {
        return Err(libc::EINVAL);
    };
    match *cmd {
        b"check" => Ok(Reply::Payload(b"OK\0".to_vec())),
        b"print" => {
            // A client's bytes reach our stderr: escape control characters
            // so they cannot drive the terminal of whoever reads the log.
            let text: Vec<String> = s[1..]
                .iter()
                .map(|x| String::from_utf8_lossy(x).escape_debug().to_string())
                .collect();
            eprintln!("xenblock-xenstored: {}", text.join(" "));
            Ok(Reply::Payload(b"OK\0".to_vec()))
        }
        b"help" => Ok(Reply::Payload(
            b"check \nprint <string>\nhelp \n\0".to_vec(),
        )),
        _ => Err(libc::EINVAL),
    }
}

fn error_msg(req_id: u32, tx_id: u32, errno: Errno) -> Message {
    let name = errno_name(errno).unwrap_or("EINVAL");
    Message::new(
        MsgType::Error,
        req_id,
        tx_id,
        with_nul(name.as_bytes().to_vec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `requests` through one connection's read loop; the replies.
    fn exchange(d: &Daemon, requests: &[Message]) -> Vec<Message> {
        let (a, _b) = UnixStream::pair().unwrap();
        let out = Arc::new(Outbox::new(a, OUTBOX_LIMIT));
        let mut conn = d.open(out.clone());
        let bytes: Vec<u8> = requests.iter().flat_map(|m| m.encode().unwrap()).collect();
        d.read_loop(&mut conn, &bytes[..]);
        let replies = out
            .take_queued()
            .unwrap()
            .iter()
            .map(|b| Message::decode(b).unwrap().unwrap().0)
            .collect();
        d.close(conn);
        replies
    }

    #[test]
    fn set_perms_with_a_doubled_sign_is_einval_and_the_connection_lives_on() {
        // Found while fuzzing (fuzz/fuzz_targets/wire_server.rs): the domid
        // "--9223372036854775808" overflowed a negation (a panic, killing
        // the connection's thread, in debug builds).
        let d = Daemon::new(OUTBOX_LIMIT);
        let replies = exchange(
            &d,
            &[
                Message::new(MsgType::Mkdir, 1, 0, b"/a\0".to_vec()),
                Message::new(
                    MsgType::SetPerms,
                    2,
                    0,
                    b"/a\0r--9223372036854775808\0".to_vec(),
                ),
                Message::new(MsgType::GetPerms, 3, 0, b"/a\0".to_vec()),
            ],
        );
        let got: Vec<_> = replies
            .iter()
            .map(|m| (m.req_id, m.msg_type, m.payload.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (1, MsgType::Mkdir as u32, &b"OK\0"[..]),
                (2, MsgType::Error as u32, &b"EINVAL\0"[..]),
                (3, MsgType::GetPerms as u32, &b"n0\0"[..]),
            ]
        );
    }
}
