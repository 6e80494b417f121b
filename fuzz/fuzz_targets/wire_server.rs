//! Hostile client: arbitrary bytes as requests to the embedded xenstored.
//!
//! The server is a binary, not part of the library, so its modules are
//! compiled into this target by path and driven through
//! `Daemon::read_loop` (the same framing + dispatch + reply path that
//! `Daemon::serve` runs on a socket) with the bytes as the stream and no
//! writer thread: replies stay queued in the connection's outbox, where
//! they are checked.
//!
//! Input layout:
//!
//! ```text
//! byte 0 bit 7 clear: bytes 1.. are one connection's whole request stream.
//! byte 0 bit 7 set:   bytes 1.. are segments `[conn][len lo][len hi][bytes]`
//!                     for up to 3 connections (conn % 3) of one daemon,
//!                     each segment read by `read_loop` in turn, so
//!                     watches fire across connections and transactions
//!                     race; conn & 0x80 closes that connection afterwards.
//! ```
//!
//! Checked: no panic; every reply is well framed and within PAYLOAD_MAX;
//! each complete request gets exactly one reply (type = request type or
//! XS_ERROR, same req_id and tx_id), apart from watch events.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/xenblock-xenstored/src/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../../crates/xenblock-xenstored/src/tree.rs"]
mod tree;

use libfuzzer_sys::fuzz_target;
use server::{Conn, Daemon, Outbox};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use xenblock::store::wire::{Header, Message, MsgType, HEADER_LEN, PAYLOAD_MAX};

/// The requests `read_loop` will answer in `bytes`: whole frames up to the
/// first incomplete or oversized one (an oversized header is answered with
/// E2BIG and ends the connection).
fn expected_requests(mut bytes: &[u8]) -> (Vec<Header>, bool) {
    let mut out = Vec::new();
    while bytes.len() >= HEADER_LEN {
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&bytes[..HEADER_LEN]);
        let h = Header::decode(&hb);
        if h.len as usize > PAYLOAD_MAX {
            out.push(h);
            return (out, true);
        }
        let total = HEADER_LEN + h.len as usize;
        if bytes.len() < total {
            break;
        }
        out.push(h);
        bytes = &bytes[total..];
    }
    (out, false)
}

struct Client {
    conn: Conn,
    out: Arc<Outbox>,
    /// Kept so the outbox's stream stays valid.
    _peer: UnixStream,
}

fn client(d: &Daemon) -> Client {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let out = Arc::new(Outbox::new(a, server::OUTBOX_LIMIT));
    Client {
        conn: d.open(out.clone()),
        out,
        _peer: b,
    }
}

/// Split everything queued on every connection: replies to `me` are
/// checked against `reqs`; watch events anywhere just have to be sane.
fn check_replies(clients: &[Client], me: usize, reqs: &[Header]) {
    for (i, c) in clients.iter().enumerate() {
        let Some(queued) = c.out.take_queued() else {
            // Given up as stuck (too many queued events): nothing to check.
            continue;
        };
        let mut replies = Vec::new();
        // A queued buffer is a batch: whole messages back to back, nothing
        // left over.
        let mut msgs = Vec::new();
        for bytes in queued {
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (m, used) = Message::decode(rest)
                    .expect("reply within the size limit")
                    .expect("a batch holds whole messages only");
                rest = &rest[used..];
                msgs.push(m);
            }
        }
        for m in msgs {
            if m.msg_type == MsgType::WatchEvent as u32 {
                let parts = xenblock::store::wire::split_nul(&m.payload);
                assert_eq!(parts.len(), 2, "watch event is path + token");
                assert_eq!(m.payload.last(), Some(&0));
                continue;
            }
            assert_eq!(i, me, "a reply was queued on another connection");
            replies.push(m);
        }
        if i != me {
            continue;
        }
        assert_eq!(
            replies.len(),
            reqs.len(),
            "one reply per request: {reqs:?} got {replies:?}"
        );
        for (h, r) in reqs.iter().zip(&replies) {
            assert_eq!(r.req_id, h.req_id);
            assert_eq!(r.tx_id, h.tx_id);
            assert!(
                r.msg_type == h.msg_type || r.msg_type == MsgType::Error as u32,
                "reply type {} to request type {}",
                r.msg_type,
                h.msg_type
            );
            if r.msg_type == MsgType::Error as u32 {
                let name = r.payload.strip_suffix(&[0]).expect("NUL-terminated error");
                let name = std::str::from_utf8(name).expect("ASCII error name");
                assert!(
                    xenblock::store::wire::errno_from_name(name).is_some(),
                    "unknown error name {name:?}"
                );
            }
        }
    }
}

/// One segment of requests on connection `me`; `hang_up` (or an oversized
/// frame, which ends a connection as `serve` does) closes it and puts a new
/// connection in its place.
fn feed(d: &Daemon, clients: &mut [Client], me: usize, bytes: &[u8], hang_up: bool) {
    let (reqs, ends) = expected_requests(bytes);
    d.read_loop(&mut clients[me].conn, bytes);
    check_replies(clients, me, &reqs);
    if ends || hang_up {
        let old = std::mem::replace(&mut clients[me], client(d));
        d.close(old.conn);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let d = Daemon::new(server::OUTBOX_LIMIT);
    let mut clients: Vec<Client> = Vec::new();
    if mode & 0x80 == 0 {
        clients.push(client(&d));
        feed(&d, &mut clients, 0, rest, false);
    } else {
        clients.extend((0..3).map(|_| client(&d)));
        while rest.len() >= 3 {
            let sel = rest[0];
            let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
            let seg = &rest[3..3 + len];
            rest = &rest[3 + len..];
            feed(
                &d,
                &mut clients,
                usize::from(sel & 0x7f) % 3,
                seg,
                sel & 0x80 != 0,
            );
        }
    }
    for c in clients {
        d.close(c.conn);
    }
});
