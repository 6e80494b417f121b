//! The built-in xenstore client: xs_wire over the xenstored Unix socket or the
//! `/dev/xen/xenbus` device.
//!
//! One connection, shared by threads behind a mutex. Every request carries a
//! fresh request id, and the reply must echo it. Watch events that arrive
//! between replies are queued for [`XsClient::read_watch`]. Reads of many
//! nodes are pipelined ([`Store::read_many`]): all requests are written before
//! the first reply is read, so a scan of N nodes costs one round trip, not N.
//! Every wait is bounded by the configured timeout: on a socket, a reply is
//! awaited with a plain `read` bounded by `SO_RCVTIMEO` (one system call per
//! wait); watch events, and everything on the xenbus device, with `poll`.

use super::wire::{self, Message, MsgType, PAYLOAD_MAX};
use super::{Store, TxId, NO_TX};
use crate::error::{Error, Result, XsErrno};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the client looks for xenstored when `XENSTORED_PATH` is not set.
pub const DEFAULT_PATHS: &[&str] = &[
    "/run/xenstored/socket",
    "/var/run/xenstored/socket",
    "/dev/xen/xenbus",
];

/// Default bound on any single wait for xenstored.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many pipelined requests may be outstanding at once.
const PIPELINE_DEPTH: usize = 512;

/// How many watch events may wait unread; past it new events are dropped
/// and counted ([`XsClient::events_dropped`]), so a watcher that cannot
/// keep up learns it has lost events instead of the client growing without
/// bound.
pub const MAX_QUEUED_EVENTS: usize = 65_536;

enum Transport {
    Socket(UnixStream),
    Device(File),
}

impl Transport {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Socket(s) => s.as_fd(),
            Transport::Device(f) => f.as_fd(),
        }
    }
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Socket(s) => s.write_all(b),
            // Linux's xenbus device takes one message per write(): bytes of a
            // second message in the same write() are dropped. Requests stay
            // pipelined (several in flight), but are written one by one.
            Transport::Device(f) => {
                for m in frames(b) {
                    f.write_all(m)?;
                }
                Ok(())
            }
        }
    }
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Socket(s) => s.read(b),
            Transport::Device(f) => f.read(b),
        }
    }
    /// Whether a plain `read` waits at most the store timeout (a socket,
    /// whose `SO_RCVTIMEO` is set to it), so no `poll` need come first.
    fn read_is_bounded(&self) -> bool {
        matches!(self, Transport::Socket(_))
    }
}

/// Bytes asked of one `read` from xenstored: at first, and at most. The
/// buffer doubles whenever a read fills it, so a connection that only ever
/// gets short replies (a one-shot command) never touches the pages of a
/// large one: on a VM every first touch of a page is a dear page fault.
const READ_CHUNK_FIRST: usize = 4 << 10;
const READ_CHUNK: usize = 64 << 10;

struct Conn {
    transport: Transport,
    /// Bytes received and not yet decoded start at `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// What each `read` fills (not zeroed for every read; grows from
    /// [`READ_CHUNK_FIRST`] to [`READ_CHUNK`]).
    chunk: Vec<u8>,
    events: VecDeque<WatchEvent>,
    /// Events dropped because `events` was full.
    dropped: u64,
    broken: Option<String>,
}

impl Conn {
    fn queue_event(&mut self, ev: WatchEvent) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.dropped += 1;
        } else {
            self.events.push_back(ev);
        }
    }
}

/// A watch event: the path that changed and the token given to `watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

impl WatchEvent {
    /// The event in a `WATCH_EVENT` message's payload (path, token), if it
    /// has both.
    fn parse(payload: &[u8]) -> Option<WatchEvent> {
        let parts = wire::split_nul(payload);
        (parts.len() >= 2).then(|| WatchEvent {
            path: String::from_utf8_lossy(parts[0]).into_owned(),
            token: String::from_utf8_lossy(parts[1]).into_owned(),
        })
    }
}

/// A connection to xenstored.
pub struct XsClient {
    conn: Mutex<Conn>,
    endpoint: PathBuf,
    timeout: Duration,
    next_req: AtomicU32,
    home: Mutex<Option<String>>,
    /// Bumped on every reconnection: watches of an older connection are gone.
    generation: AtomicU64,
    /// The owner its descriptor is listed under for a forked child
    /// (`sys::fdreg`; 0: not listed).
    fd_owner: AtomicU32,
}

impl Drop for XsClient {
    fn drop(&mut self) {
        let owner = *self.fd_owner.get_mut();
        crate::sys::fdreg::unregister(owner, self.conn.get_mut().transport.fd().as_raw_fd());
    }
}

impl XsClient {
    /// Connect to `$XENSTORED_PATH`, else the first of [`DEFAULT_PATHS`] that exists.
    pub fn connect_default(timeout: Duration) -> Result<XsClient> {
        if let Some(p) = std::env::var_os("XENSTORED_PATH") {
            return XsClient::connect(Path::new(&p), timeout);
        }
        for p in DEFAULT_PATHS {
            if Path::new(p).exists() {
                return XsClient::connect(Path::new(p), timeout);
            }
        }
        Err(Error::NotFound(format!(
            "no xenstored found: XENSTORED_PATH is not set and none of {} exists; \
             is xenstored running (or set XENSTORED_PATH to its socket)?",
            DEFAULT_PATHS.join(", ")
        )))
    }

    /// Connect to a xenstored socket or a xenbus device node.
    pub fn connect(path: &Path, timeout: Duration) -> Result<XsClient> {
        let timeout = if timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            timeout
        };
        let transport = open_transport(path, timeout)?;
        Ok(XsClient {
            conn: Mutex::new(Conn {
                transport,
                buf: Vec::new(),
                pos: 0,
                chunk: vec![0; READ_CHUNK_FIRST],
                events: VecDeque::new(),
                dropped: 0,
                broken: None,
            }),
            endpoint: path.to_path_buf(),
            timeout,
            next_req: AtomicU32::new(1),
            home: Mutex::new(None),
            generation: AtomicU64::new(0),
            fd_owner: AtomicU32::new(0),
        })
    }

    /// List the connection's descriptor (and, after a reconnection, the new
    /// one's) under `owner`, so that a forked child freeing the context
    /// that owns this client closes it (`sys::fdreg`).
    pub fn set_fd_owner(&self, owner: u32) {
        let conn = self.conn.lock();
        let old = self.fd_owner.swap(owner, Ordering::SeqCst);
        let fd = conn.transport.fd().as_raw_fd();
        crate::sys::fdreg::unregister(old, fd);
        crate::sys::fdreg::register(owner, fd);
    }

    /// The socket or device this client talks to.
    pub fn endpoint(&self) -> &Path {
        &self.endpoint
    }

    /// How many times this client has reconnected. Watches registered
    /// under an older generation no longer exist.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// How many watch events were dropped because [`MAX_QUEUED_EVENTS`]
    /// were already waiting unread.
    pub fn events_dropped(&self) -> u64 {
        self.conn.lock().dropped
    }

    /// Take every watch event already received, without waiting.
    pub fn take_events(&self) -> Vec<WatchEvent> {
        // Taken whole, so a burst does not leave its capacity behind.
        Vec::from(std::mem::take(&mut self.conn.lock().events))
    }

    /// Take the watch events already received that `mine` accepts (by
    /// token, say), without waiting; the others stay queued for their own
    /// readers. Two watchers sharing this client each read their own
    /// events this way, so neither drains the other's.
    pub fn take_events_where(&self, mine: &dyn Fn(&WatchEvent) -> bool) -> Vec<WatchEvent> {
        let mut conn = self.conn.lock();
        let (taken, kept): (VecDeque<WatchEvent>, VecDeque<WatchEvent>) =
            std::mem::take(&mut conn.events)
                .into_iter()
                .partition(|e| mine(e));
        conn.events = kept;
        Vec::from(taken)
    }

    fn req_id(&self) -> u32 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    /// Send one request and wait for its reply; XS_ERROR replies become errors.
    pub fn request(&self, ty: MsgType, tx: TxId, payload: Vec<u8>, what: &str) -> Result<Vec<u8>> {
        let mut out = self.pipeline(ty, tx, vec![payload], what)?;
        out.pop().expect("one reply per request")
    }

    /// Send several requests of one type back to back, then collect their
    /// replies in order. The outer error is a connection failure; each inner
    /// result is that request's own answer.
    ///
    /// When the connection turns out to be broken (xenstored closed it, for
    /// instance because watch events piled up unread) and the requests are
    /// outside a transaction and harmless to repeat, they are sent once
    /// more on a fresh connection. A timeout is not retried (that would
    /// double the documented bound), nor is anything inside a transaction
    /// (it died with its connection).
    pub fn pipeline(
        &self,
        ty: MsgType,
        tx: TxId,
        payloads: Vec<Vec<u8>>,
        what: &str,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        let reqs: Vec<(MsgType, Vec<u8>)> = payloads.into_iter().map(|p| (ty, p)).collect();
        self.pipeline_mixed(tx, &reqs, what)
    }

    /// [`Self::pipeline`] for requests of different types (a transaction's
    /// read and writes in one round trip, for instance).
    pub fn pipeline_mixed(
        &self,
        tx: TxId,
        reqs: &[(MsgType, Vec<u8>)],
        what: &str,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        self.pipeline_batch(tx, reqs, what)
    }

    /// [`Self::pipeline_mixed`] for any [`Batch`].
    fn pipeline_batch<B: Batch + ?Sized>(
        &self,
        tx: TxId,
        reqs: &B,
        what: &str,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        let mut results = Collect((0..reqs.len()).map(|_| None).collect());
        self.pipeline_into(tx, reqs, what, &mut results)?;
        Ok(results
            .0
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect())
    }

    /// Send `reqs` and hand each answer to `answers` as it arrives; see
    /// [`Self::pipeline`] for when they are sent a second time.
    fn pipeline_into<B: Batch + ?Sized, A: Answers + ?Sized>(
        &self,
        tx: TxId,
        reqs: &B,
        what: &str,
        answers: &mut A,
    ) -> Result<()> {
        match self.pipeline_once(tx, reqs, what, answers) {
            Err(e)
                if tx == NO_TX
                    && (0..reqs.len()).all(|i| repeatable(reqs.msg_type(i)))
                    && e.kind() != crate::ErrorKind::Timeout
                    && self.conn.lock().broken.is_some() =>
            {
                answers.again();
                self.pipeline_once(tx, reqs, what, answers)
            }
            r => r,
        }
    }

    fn pipeline_once<B: Batch + ?Sized, A: Answers + ?Sized>(
        &self,
        tx: TxId,
        reqs: &B,
        what: &str,
        answers: &mut A,
    ) -> Result<()> {
        for i in 0..reqs.len() {
            let len = reqs.payload_len(i);
            if len > PAYLOAD_MAX {
                return Err(Error::InvalidArgument(format!(
                    "xenstore {} {}: request of {len} bytes exceeds the protocol limit of {PAYLOAD_MAX} bytes",
                    op_name(reqs.msg_type(i)),
                    super::truncate_for_message(what),
                )));
            }
        }
        let mut conn = self.conn.lock();
        if let Some(why) = &conn.broken {
            // Reconnect once; transactions of the old connection are gone.
            let why = why.clone();
            match open_transport(&self.endpoint, self.timeout) {
                Ok(t) => {
                    let owner = self.fd_owner.load(Ordering::SeqCst);
                    let new_fd = t.fd().as_raw_fd();
                    let old = std::mem::replace(&mut conn.transport, t);
                    crate::sys::fdreg::unregister(owner, old.fd().as_raw_fd());
                    drop(old);
                    crate::sys::fdreg::register(owner, new_fd);
                    conn.buf.clear();
                    conn.pos = 0;
                    conn.broken = None;
                    self.generation.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    return Err(Error::StoreProtocol(format!(
                    "connection to xenstored at {} was lost ({why}) and reconnecting failed: {e}",
                    self.endpoint.display()
                )))
                }
            }
        }
        let deadline = Instant::now() + self.timeout;
        let mut answered = vec![false; reqs.len()];
        // Request ids are handed out only under the connection lock, so the
        // ids of this pipeline are consecutive from `base`.
        let base = self.next_req.load(Ordering::Relaxed);
        let mut in_flight = 0usize;
        let mut next = 0;
        let mut done = 0;
        let r = (|| -> Result<()> {
            while done < reqs.len() {
                // Fill the pipe.
                let mut out = Vec::new();
                // Refill once half the window has been answered, so requests
                // go out in batches rather than one per reply read.
                while next < reqs.len()
                    && in_flight < PIPELINE_DEPTH
                    && (in_flight <= PIPELINE_DEPTH / 2 || !out.is_empty())
                {
                    let id = self.req_id();
                    // Lengths were checked above; encode straight into the batch.
                    let h = wire::Header {
                        msg_type: reqs.msg_type(next) as u32,
                        req_id: id,
                        tx_id: tx,
                        len: reqs.payload_len(next) as u32,
                    };
                    out.extend_from_slice(&h.encode());
                    reqs.put_payload(next, &mut out);
                    debug_assert_eq!(id, base.wrapping_add(next as u32));
                    in_flight += 1;
                    next += 1;
                }
                if !out.is_empty() {
                    conn.transport.write_all(&out).map_err(|e| {
                        Error::StoreProtocol(format!(
                            "writing to xenstored at {}: {e}",
                            self.endpoint.display()
                        ))
                    })?;
                }
                let (reply, at) = next_message(&mut conn, deadline, Wait::Reply, &self.endpoint)?;
                if reply.msg_type == MsgType::WatchEvent as u32 {
                    if let Some(ev) = WatchEvent::parse(&conn.buf[at]) {
                        conn.queue_event(ev);
                    }
                    continue;
                }
                let payload = &conn.buf[at];
                let idx = reply.req_id.wrapping_sub(base) as usize;
                if idx >= next || answered[idx] {
                    return Err(Error::StoreProtocol(format!(
                        "xenstored sent a reply with request id {} that matches no request in flight \
                         (type {}); the connection is out of step",
                        reply.req_id, reply.msg_type
                    )));
                }
                in_flight -= 1;
                let ty = reqs.msg_type(idx);
                let op = op_name(ty);
                if reply.msg_type == MsgType::Error as u32 {
                    let name = wire::split_nul(payload)
                        .first()
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .unwrap_or_else(|| "EINVAL".into());
                    let what_i = if reqs.len() == 1 {
                        what.to_string()
                    } else {
                        reqs.path(idx)
                    };
                    answers.answer(
                        idx,
                        Err(Error::store(op, &what_i, XsErrno::from_name(&name))),
                    );
                } else if reply.msg_type != ty as u32 {
                    return Err(Error::StoreProtocol(format!(
                        "xenstored answered a {op} request with message type {}",
                        reply.msg_type
                    )));
                } else {
                    answers.answer(idx, Ok(payload));
                }
                answered[idx] = true;
                done += 1;
            }
            Ok(())
        })();
        if let Err(e) = r {
            conn.broken = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Register a watch. xenstored sends an initial event at once.
    pub fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.request(MsgType::Watch, NO_TX, wire::join_nul(&[path, token]), path)
            .map(|_| ())
    }

    /// Remove a watch.
    pub fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.request(
            MsgType::Unwatch,
            NO_TX,
            wire::join_nul(&[path, token]),
            path,
        )
        .map(|_| ())
    }

    /// Wait up to `timeout` for a watch event.
    pub fn read_watch(&self, timeout: Duration) -> Result<Option<WatchEvent>> {
        self.read_watch_where(timeout, &|_| true)
    }

    /// Wait up to `timeout` for a watch event that `mine` accepts; the
    /// others received meanwhile are queued for their own readers (see
    /// [`XsClient::take_events_where`]).
    pub fn read_watch_where(
        &self,
        timeout: Duration,
        mine: &dyn Fn(&WatchEvent) -> bool,
    ) -> Result<Option<WatchEvent>> {
        let mut conn = self.conn.lock();
        let deadline = Instant::now() + timeout;
        if let Some(i) = conn.events.iter().position(mine) {
            return Ok(conn.events.remove(i));
        }
        loop {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            match next_message(&mut conn, deadline, Wait::Event, &self.endpoint) {
                Ok((h, at)) if h.msg_type == MsgType::WatchEvent as u32 => {
                    if let Some(ev) = WatchEvent::parse(&conn.buf[at]) {
                        if mine(&ev) {
                            return Ok(Some(ev));
                        }
                        conn.queue_event(ev);
                    }
                }
                Ok((h, _)) => {
                    let e = format!("xenstored sent an unsolicited reply (type {})", h.msg_type);
                    conn.broken = Some(e.clone());
                    return Err(Error::StoreProtocol(e));
                }
                Err(e) if e.kind() == crate::ErrorKind::Timeout => return Ok(None),
                Err(e) => {
                    conn.broken = Some(e.to_string());
                    return Err(e);
                }
            }
        }
    }

    /// `MKDIR`.
    pub fn mkdir(&self, tx: TxId, path: &str) -> Result<()> {
        super::validate_path(path)?;
        self.request(MsgType::Mkdir, tx, wire::join_nul(&[path]), path)
            .map(|_| ())
    }

    /// `GET_PERMS`: the permission strings (`n0`, `r5`, ...).
    pub fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<String>> {
        super::validate_path(path)?;
        let v = self.request(MsgType::GetPerms, tx, wire::join_nul(&[path]), path)?;
        Ok(wire::split_nul(&v)
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect())
    }

    /// `SET_PERMS`.
    pub fn set_perms(&self, tx: TxId, path: &str, perms: &[&str]) -> Result<()> {
        super::validate_path(path)?;
        let mut parts = vec![path];
        parts.extend_from_slice(perms);
        self.request(MsgType::SetPerms, tx, wire::join_nul(&parts), path)
            .map(|_| ())
    }

    /// `GET_DOMAIN_PATH`.
    pub fn get_domain_path(&self, domid: u32) -> Result<String> {
        let v = self.request(
            MsgType::GetDomainPath,
            NO_TX,
            wire::join_nul(&[domid.to_string()]),
            "",
        )?;
        Ok(String::from_utf8_lossy(strip_nul(&v)).into_owned())
    }
}

/// Each node's children (`None`: no such node).
type Listings = Vec<Option<Vec<String>>>;

impl XsClient {
    /// [`Store::write`] outside a transaction, with a transaction started in
    /// the same round trip (see [`Self::first_round_trip`]).
    pub fn write_starting_tx(&self, path: &str, value: &[u8]) -> Result<Option<TxId>> {
        let f = self.first_round_trip(&[], Some((path, value)), &[])?;
        let tx = f.tx;
        self.ending_tx_on_error(tx, f.write.unwrap_or(Ok(())))
            .map(|()| tx)
    }

    /// [`Store::directory_many`] outside a transaction, with a transaction
    /// started in the same round trip (see [`Self::first_round_trip`]).
    pub fn directory_many_starting_tx(&self, paths: &[String]) -> Result<(Listings, Option<TxId>)> {
        let f = self.first_round_trip(&[], None, paths)?;
        let tx = f.tx;
        self.ending_tx_on_error(tx, f.lists).map(|l| (l, tx))
    }

    /// `r`, after ending `tx` unused when `r` is an error.
    fn ending_tx_on_error<T>(&self, tx: Option<TxId>, r: Result<T>) -> Result<T> {
        if let (Err(_), Some(tx)) = (&r, tx) {
            let _ = self.transaction_end(tx, false);
        }
        r
    }
}

/// What [`XsClient::first_round_trip`] got back.
pub struct FirstRoundTrip {
    /// The values read, in order (`None`: no such node).
    pub reads: Vec<Option<Vec<u8>>>,
    /// The write's answer, if there was one.
    pub write: Option<Result<()>>,
    /// The child lists, in order, or the first listing's error.
    pub lists: Result<Listings>,
    /// The transaction started (`None` when xenstored would not start one;
    /// the caller then starts its transaction later, as usual).
    pub tx: Option<TxId>,
}

impl XsClient {
    /// In one round trip, outside any transaction: READs of `reads`, an
    /// optional WRITE, DIRECTORYs of `dirs`, and a `TRANSACTION_START`. A
    /// read that fails other than for a missing node fails the whole (and
    /// ends the transaction); the write's and the listings' failures are
    /// returned, for the caller to decide.
    pub fn first_round_trip(
        &self,
        reads: &[String],
        write: Option<(&str, &[u8])>,
        dirs: &[String],
    ) -> Result<FirstRoundTrip> {
        let mut requests = Vec::with_capacity(reads.len() + dirs.len() + 2);
        for p in reads {
            super::validate_path(p)?;
            requests.push((MsgType::Read, wire::join_nul(&[p])));
        }
        if let Some((p, v)) = write {
            super::validate_path(p)?;
            requests.push((MsgType::Write, write_payload(p, v)));
        }
        for p in dirs {
            super::validate_path(p)?;
            requests.push((MsgType::Directory, wire::join_nul(&[p])));
        }
        requests.push((MsgType::TransactionStart, vec![0]));
        let what = reads
            .first()
            .or(dirs.first())
            .map(String::as_str)
            .or(write.map(|(p, _)| p))
            .unwrap_or("");
        let mut answers = self.pipeline_mixed(NO_TX, &requests, what)?;
        let tx = answers
            .pop()
            .and_then(|a| a.ok())
            .and_then(|v| String::from_utf8_lossy(strip_nul(&v)).trim().parse().ok());
        let mut answers = answers.into_iter();
        let values: Result<Vec<_>> = answers
            .by_ref()
            .take(reads.len())
            .map(not_found_is_none)
            .collect();
        let values = self.ending_tx_on_error(tx, values)?;
        let write = write.and_then(|_| answers.next()).map(|a| a.map(|_| ()));
        let lists = answers
            .zip(dirs)
            .map(|(r, p)| self.directory_reply(NO_TX, p, r))
            .collect();
        Ok(FirstRoundTrip {
            reads: values,
            write,
            lists,
            tx,
        })
    }
}

impl XsClient {
    /// Turn a DIRECTORY answer into names; a list too long for one message
    /// (E2BIG) is fetched again in parts with DIRECTORY_PART.
    fn directory_reply(
        &self,
        tx: TxId,
        path: &str,
        r: Result<Vec<u8>>,
    ) -> Result<Option<Vec<String>>> {
        let bytes = match r {
            Err(e) if e.xs_errno() == Some(libc::E2BIG) => self.directory_part(tx, path)?,
            other => match not_found_is_none(other)? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        Ok(Some(
            wire::split_nul(&bytes)
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
        ))
    }

    /// Fetch a long child list with DIRECTORY_PART, restarting when the
    /// node's generation changes between parts.
    fn directory_part(&self, tx: TxId, path: &str) -> Result<Vec<u8>> {
        'restart: for _ in 0..8 {
            let mut list = Vec::new();
            let mut generation: Option<Vec<u8>> = None;
            loop {
                let off = list.len().to_string();
                let v = self.request(
                    MsgType::DirectoryPart,
                    tx,
                    wire::join_nul(&[path, &off]),
                    path,
                )?;
                let Some(nul) = v.iter().position(|b| *b == 0) else {
                    return Err(Error::StoreProtocol(format!(
                        "xenstored sent a malformed DIRECTORY_PART reply for {path}"
                    )));
                };
                let (gen, data) = (v[..nul].to_vec(), &v[nul + 1..]);
                match &generation {
                    Some(g) if *g != gen => continue 'restart,
                    None => generation = Some(gen),
                    _ => {}
                }
                if data.is_empty() || data == [0] {
                    return Ok(list);
                }
                if data.ends_with(&[0, 0]) {
                    list.extend_from_slice(&data[..data.len() - 1]);
                    return Ok(list);
                }
                list.extend_from_slice(data);
            }
        }
        Err(Error::StoreProtocol(format!(
            "the children of {path} kept changing while being listed"
        )))
    }
}

/// Open the socket or device; a socket's reads wait at most `timeout`.
fn open_transport(path: &Path, timeout: Duration) -> Result<Transport> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("cannot reach xenstored at {}", path.display()), e))?;
    if meta.file_type().is_socket() {
        let s = UnixStream::connect(path).map_err(|e| {
            Error::io(
                format!("cannot connect to xenstored socket {}", path.display()),
                e,
            )
        })?;
        s.set_read_timeout(Some(timeout)).map_err(|e| {
            Error::io(
                format!(
                    "cannot set a read timeout on xenstored socket {}",
                    path.display()
                ),
                e,
            )
        })?;
        Ok(Transport::Socket(s))
    } else if meta.file_type().is_char_device() {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Transport::Device)
            .map_err(|e| Error::io(format!("cannot open xenbus device {}", path.display()), e))
    } else {
        Err(Error::InvalidArgument(format!(
            "{} is neither a xenstored socket nor a xenbus device",
            path.display()
        )))
    }
}

/// What [`read_message`] waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A reply to a request in flight, within the store timeout: on a
    /// socket a plain `read` (bounded by `SO_RCVTIMEO`) waits, one system
    /// call per wait instead of a `poll` and a `read`.
    Reply,
    /// A watch event, within a deadline of the caller's: `poll` first.
    Event,
}

/// The next message's header and where its payload lies in `conn.buf`
/// (until the next call), reading from xenstored as needed.
fn next_message(
    conn: &mut Conn,
    deadline: Instant,
    wait: Wait,
    endpoint: &Path,
) -> Result<(wire::Header, std::ops::Range<usize>)> {
    if conn.pos > 0 && conn.pos == conn.buf.len() {
        conn.buf.clear();
        conn.pos = 0;
    }
    loop {
        match Message::frame(&conn.buf[conn.pos..]) {
            Ok(Some((h, used))) => {
                let start = conn.pos + wire::HEADER_LEN;
                conn.pos += used;
                return Ok((h, start..conn.pos));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Error::StoreProtocol(format!(
                    "malformed reply from xenstored at {}: {e}",
                    endpoint.display()
                )))
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout(format!(
                "xenstored at {} did not answer in time",
                endpoint.display()
            )));
        }
        if wait == Wait::Event || !conn.transport.read_is_bounded() {
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut fds = [nix::poll::PollFd::new(
                conn.transport.fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(
                &mut fds,
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
            ) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("waiting for xenstored", e)),
            }
        }
        let Conn {
            transport, chunk, ..
        } = &mut *conn;
        match transport.read(chunk) {
            Ok(0) => {
                return Err(Error::StoreProtocol(format!(
                    "xenstored at {} closed the connection",
                    endpoint.display()
                )))
            }
            Ok(n) => {
                if conn.pos > 0 {
                    conn.buf.drain(..conn.pos);
                    conn.pos = 0;
                }
                conn.buf.extend_from_slice(&conn.chunk[..n]);
                if n == conn.chunk.len() && n < READ_CHUNK {
                    conn.chunk.resize(2 * n, 0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // SO_RCVTIMEO passed: the deadline check above decides.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A peer that closes with our request unread resets instead of
            // ending the stream: the same event for the caller.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(Error::StoreProtocol(format!(
                    "xenstored at {} closed the connection ({e})",
                    endpoint.display()
                )))
            }
            Err(e) => {
                return Err(Error::StoreProtocol(format!(
                    "reading from xenstored at {}: {e}",
                    endpoint.display()
                )))
            }
        }
    }
}

/// Split a batch of encoded messages (as this client builds them) into the
/// single messages.
fn frames(mut b: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if b.len() < wire::HEADER_LEN {
            return None;
        }
        let len = u32::from_ne_bytes([b[12], b[13], b[14], b[15]]) as usize;
        let n = (wire::HEADER_LEN + len).min(b.len());
        let (m, rest) = b.split_at(n);
        b = rest;
        Some(m)
    })
}

/// Requests that may be sent again after a lost connection: reads, and
/// changes whose repetition leaves the same state.
fn repeatable(ty: MsgType) -> bool {
    matches!(
        ty,
        MsgType::Read
            | MsgType::Directory
            | MsgType::DirectoryPart
            | MsgType::GetPerms
            | MsgType::GetDomainPath
            | MsgType::Write
            | MsgType::Mkdir
            | MsgType::Rm
            | MsgType::SetPerms
            | MsgType::Watch
            | MsgType::Unwatch
            | MsgType::TransactionStart
    )
}

fn strip_nul(v: &[u8]) -> &[u8] {
    v.strip_suffix(&[0]).unwrap_or(v)
}

/// A WRITE's payload: the path, NUL, the value (not NUL-terminated).
fn write_payload(path: &str, value: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(path.len() + 1 + value.len());
    p.extend_from_slice(path.as_bytes());
    p.push(0);
    p.extend_from_slice(value);
    p
}

fn path_of(payload: &[u8]) -> String {
    String::from_utf8_lossy(wire::split_nul(payload).first().copied().unwrap_or(b"")).into_owned()
}

/// The requests of one pipeline: each one's type and payload, encoded
/// straight into the bytes sent, so a batch of thousands of reads (a scan)
/// builds no payload of its own per request.
trait Batch {
    fn len(&self) -> usize;
    fn msg_type(&self, i: usize) -> MsgType;
    fn payload_len(&self, i: usize) -> usize;
    /// Append request `i`'s payload to `out`.
    fn put_payload(&self, i: usize, out: &mut Vec<u8>);
    /// The path request `i` is about, for an error message.
    fn path(&self, i: usize) -> String;
}

impl Batch for [(MsgType, Vec<u8>)] {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }
    fn msg_type(&self, i: usize) -> MsgType {
        self[i].0
    }
    fn payload_len(&self, i: usize) -> usize {
        self[i].1.len()
    }
    fn put_payload(&self, i: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self[i].1);
    }
    fn path(&self, i: usize) -> String {
        path_of(&self[i].1)
    }
}

/// One request of type `ty` per path, whose payload is the path and a NUL
/// (a read, a directory listing).
struct OnePerPath<'a> {
    ty: MsgType,
    paths: &'a [String],
}

impl<'a> OnePerPath<'a> {
    /// The requests of type `ty` for `paths`, once every path is valid.
    fn checked(ty: MsgType, paths: &'a [String]) -> Result<OnePerPath<'a>> {
        for p in paths {
            super::validate_path(p)?;
        }
        Ok(OnePerPath { ty, paths })
    }
}

impl Batch for OnePerPath<'_> {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn msg_type(&self, _: usize) -> MsgType {
        self.ty
    }
    fn payload_len(&self, i: usize) -> usize {
        self.paths[i].len() + 1
    }
    fn put_payload(&self, i: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.paths[i].as_bytes());
        out.push(0);
    }
    fn path(&self, i: usize) -> String {
        self.paths[i].clone()
    }
}

/// Where a pipeline's answers go, each as it arrives.
trait Answers {
    /// Request `i` was answered: its reply's payload, or its error.
    fn answer(&mut self, i: usize, r: Result<&[u8]>);
    /// Every request is being sent again (the connection broke): answers
    /// given so far are void, and each request will be answered again.
    fn again(&mut self) {}
}

/// Answers kept, in request order.
struct Collect(Vec<Option<Result<Vec<u8>>>>);

impl Answers for Collect {
    fn answer(&mut self, i: usize, r: Result<&[u8]>) {
        self.0[i] = Some(r.map(<[u8]>::to_vec));
    }
}

/// Values of reads handed to the caller's function as they arrive (a
/// missing node as `None`); the first other error is kept.
struct EachValue<'f> {
    each: &'f mut dyn FnMut(super::Each<'_>),
    error: Option<Error>,
}

impl Answers for EachValue<'_> {
    fn answer(&mut self, i: usize, r: Result<&[u8]>) {
        match not_found_is_none(r) {
            Ok(v) => (self.each)(super::Each::Value(i, v)),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }
    fn again(&mut self) {
        self.error = None;
        (self.each)(super::Each::Again);
    }
}

fn op_name(ty: MsgType) -> &'static str {
    match ty {
        MsgType::Read => "read",
        MsgType::Write => "write",
        MsgType::Directory => "directory",
        MsgType::Rm => "rm",
        MsgType::Mkdir => "mkdir",
        MsgType::TransactionStart => "transaction-start",
        MsgType::TransactionEnd => "transaction-end",
        MsgType::Watch => "watch",
        MsgType::Unwatch => "unwatch",
        MsgType::GetPerms => "get-perms",
        MsgType::SetPerms => "set-perms",
        MsgType::GetDomainPath => "get-domain-path",
        _ => "request",
    }
}

fn not_found_is_none<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.xs_errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Store for XsClient {
    fn read(&self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>> {
        super::validate_path(path)?;
        not_found_is_none(self.request(MsgType::Read, tx, wire::join_nul(&[path]), path))
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        super::validate_path(path)?;
        self.request(MsgType::Write, tx, write_payload(path, value), path)
            .map(|_| ())
    }

    fn remove(&self, tx: TxId, path: &str) -> Result<()> {
        super::validate_path(path)?;
        not_found_is_none(self.request(MsgType::Rm, tx, wire::join_nul(&[path]), path)).map(|_| ())
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Option<Vec<String>>> {
        super::validate_path(path)?;
        let r = self.request(MsgType::Directory, tx, wire::join_nul(&[path]), path);
        self.directory_reply(tx, path, r)
    }

    fn transaction_start(&self) -> Result<TxId> {
        let v = self.request(MsgType::TransactionStart, NO_TX, vec![0], "")?;
        let s = String::from_utf8_lossy(strip_nul(&v)).into_owned();
        s.trim().parse().map_err(|_| {
            Error::StoreProtocol(format!(
                "xenstored answered transaction-start with {s:?}, not a number"
            ))
        })
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<bool> {
        let flag: &[u8] = if commit { b"T\0" } else { b"F\0" };
        match self.request(MsgType::TransactionEnd, tx, flag.to_vec(), "") {
            Ok(_) => Ok(true),
            Err(e) if e.is_again() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn write_if_present(
        &self,
        tx: TxId,
        check: &str,
        writes: &[(String, Vec<u8>)],
    ) -> Result<bool> {
        super::require_tx(tx, check)?;
        super::validate_path(check)?;
        let mut reqs = vec![(MsgType::Read, wire::join_nul(&[check]))];
        for (p, v) in writes {
            super::validate_path(p)?;
            reqs.push((MsgType::Write, write_payload(p, v)));
        }
        let mut replies = self.pipeline_mixed(tx, &reqs, check)?.into_iter();
        let present = not_found_is_none(replies.next().expect("one reply per request"))?.is_some();
        for r in replies {
            // Inside the transaction: when `check` is gone these writes are
            // never applied (the caller aborts), so their errors only count
            // when it is there.
            if present {
                r?;
            }
        }
        Ok(present)
    }

    fn read_many(&self, tx: TxId, paths: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let reqs = OnePerPath::checked(MsgType::Read, paths)?;
        self.pipeline_batch(tx, &reqs, "")?
            .into_iter()
            .map(not_found_is_none)
            .collect()
    }

    fn read_each(
        &self,
        tx: TxId,
        paths: &[String],
        each: &mut dyn FnMut(super::Each<'_>),
    ) -> Result<()> {
        let reqs = OnePerPath::checked(MsgType::Read, paths)?;
        let mut values = EachValue { each, error: None };
        self.pipeline_into(tx, &reqs, "", &mut values)?;
        values.error.map_or(Ok(()), Err)
    }

    fn directory_many(&self, tx: TxId, paths: &[String]) -> Result<Vec<Option<Vec<String>>>> {
        let reqs = OnePerPath::checked(MsgType::Directory, paths)?;
        self.pipeline_batch(tx, &reqs, "")?
            .into_iter()
            .zip(paths)
            .map(|(r, p)| self.directory_reply(tx, p, r))
            .collect()
    }

    fn xs_client(&self) -> Option<&XsClient> {
        Some(self)
    }

    fn home(&self) -> Result<String> {
        let mut h = self.home.lock();
        if let Some(h) = &*h {
            return Ok(h.clone());
        }
        let dom = self
            .read(NO_TX, "domid")?
            .and_then(|v| String::from_utf8_lossy(&v).trim().parse::<u32>().ok())
            .unwrap_or(0);
        let home = format!("/local/domain/{dom}");
        *h = Some(home.clone());
        Ok(home)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_single_messages_for_the_xenbus_device() {
        let a = Message::new(MsgType::Read, 1, 0, b"a/b\0".to_vec())
            .encode()
            .unwrap();
        let b = Message::new(MsgType::Read, 2, 0, Vec::new())
            .encode()
            .unwrap();
        let c = Message::new(MsgType::Write, 3, 5, vec![b'x'; 100])
            .encode()
            .unwrap();
        let batch = [a.clone(), b.clone(), c.clone()].concat();
        let got: Vec<&[u8]> = frames(&batch).collect();
        assert_eq!(got, vec![&a[..], &b[..], &c[..]]);
        assert_eq!(frames(&[]).count(), 0);
    }
}
