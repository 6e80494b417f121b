//! Hostile xenstored: arbitrary bytes as the server side of the built-in
//! client's connection (replies, watch events, errors, garbage framing).
//!
//! Every input is also fed straight to `Message::decode`.
//!
//! Input layout (decoded by hand, so seeds are easy to write):
//!
//! ```text
//! byte 0   mode: bit 7 clear = raw stream, bit 7 set = responsive server
//! byte 1   number of client operations (1..=4, taken mod 4 + 1)
//! bytes    one op code per operation (see `Op`)
//! rest     raw mode: the server's whole output stream, written up front,
//!          then the server stops writing (EOF for the client);
//!          responsive mode: chunks `[ctl][len lo][len hi][bytes]` that a
//!          fake server thread sends in answer to the client's requests
//!          (see `serve`).
//! ```
//!
//! The client must answer every operation with `Ok` or `Err`: no panic, no
//! hang (all waits are bounded by `TIMEOUT`, and the server always ends its
//! stream, so a correct client never waits that long).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xenblock::store::client::XsClient;
use xenblock::store::wire::{Header, Message, MsgType, HEADER_LEN, PAYLOAD_MAX};
use xenblock::store::{Store, NO_TX};

/// Bound on every client wait. The fake server always closes its side, so
/// reaching it means the client waited for something that cannot come.
const TIMEOUT: Duration = Duration::from_secs(2);

fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("xenblock-fuzz-client-{}.sock", std::process::id()))
}

/// Frame `buf` with `Message::decode` until it runs out; check the framing.
fn decode_all(mut buf: &[u8]) {
    loop {
        match Message::decode(buf) {
            Ok(Some((m, used))) => {
                assert_eq!(used, HEADER_LEN + m.payload.len());
                assert!(used <= buf.len());
                assert!(m.payload.len() <= PAYLOAD_MAX);
                // Encoding gives back exactly the bytes consumed.
                assert_eq!(
                    m.encode().expect("decoded message re-encodes"),
                    &buf[..used]
                );
                let _ = m.kind();
                let _ = xenblock::store::wire::split_nul(&m.payload);
                buf = &buf[used..];
            }
            Ok(None) => {
                if buf.len() >= HEADER_LEN {
                    let mut hb = [0u8; HEADER_LEN];
                    hb.copy_from_slice(&buf[..HEADER_LEN]);
                    let h = Header::decode(&hb);
                    assert!(HEADER_LEN + h.len as usize > buf.len());
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// The client operations the fuzzer can string together.
fn run_op(c: &XsClient, op: u8) {
    let paths = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("backend/vbd/{i}/51712/params"))
            .collect()
    };
    match op % 12 {
        0 => drop(c.read(NO_TX, "backend/vbd/1/51712/params")),
        1 => drop(c.directory(NO_TX, "/local/domain/0/backend/vbd")),
        2 => drop(c.read_many(NO_TX, &paths(3))),
        3 => drop(c.transaction_start()),
        4 => drop(c.read_watch(Duration::from_millis(5))),
        5 => drop(c.directory_many(NO_TX, &["backend/vbd".into(), "/local".into()])),
        6 => drop(c.transaction_end(7, true)),
        7 => drop(c.home()),
        8 => drop(c.write(3, "backend/vbd/1/51712/hotplug-status", b"connected")),
        9 => drop(c.watch("backend/vbd", "tok")),
        10 => drop(c.get_perms(NO_TX, "/local/domain/0")),
        _ => drop(c.remove(NO_TX, "backend/vbd/1/51712")),
    }
}

/// How long the responsive server waits for the client's next request
/// before deciding the client is waiting for it instead.
const REQUEST_WAIT: Duration = Duration::from_millis(10);

/// Read whatever requests arrive within `REQUEST_WAIT` into `queue`.
/// `false` once the client has hung up.
fn read_requests(s: &mut UnixStream, inbuf: &mut Vec<u8>, queue: &mut VecDeque<Message>) -> bool {
    let _ = s.set_read_timeout(Some(REQUEST_WAIT));
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk) {
        Ok(0) => return false,
        Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(_) => return false,
    }
    while let Ok(Some((m, used))) = Message::decode(inbuf) {
        inbuf.drain(..used);
        queue.push_back(m);
    }
    true
}

/// Responsive server: answer the client's requests, in order, with the
/// chunks of `script`. `ctl`:
/// - bits 0-1: 0 a reply (the request's type and req_id), 1 an XS_ERROR
///   reply, 2 a watch event, 3 the chunk's bytes raw, no header;
/// - bit 2: use req_id + 1 (a reply matching nothing);
/// - bit 3: use type `ctl >> 4` instead of the request's.
///
/// Only a well-addressed reply or error (ctl 0 or 1) moves on to the next
/// request. The server never blocks for long: when no request is pending
/// and none comes within `REQUEST_WAIT`, the client is waiting for more from
/// us (or has given up), and the next chunk goes out anyway, for the last
/// request. When the chunks run out, the server stops writing (EOF).
fn serve(mut s: UnixStream, script: Vec<u8>) {
    let mut rest = &script[..];
    let mut inbuf: Vec<u8> = Vec::new();
    let mut queue: VecDeque<Message> = VecDeque::new();
    let mut last = Message::new(MsgType::Read, 1, 0, Vec::new());
    let mut listening = true;
    // Wait for a request only where the client may send one: at the start
    // and after a reply that completes a request; and stop waiting after two
    // fruitless waits in a row (the client is done or broken).
    let mut may_send = true;
    let mut idle = 0;
    while rest.len() >= 3 {
        if queue.is_empty() && listening && may_send && idle < 2 {
            listening = read_requests(&mut s, &mut inbuf, &mut queue);
            idle = if queue.is_empty() { idle + 1 } else { 0 };
        }
        let req = queue.front().cloned().unwrap_or_else(|| last.clone());
        let ctl = rest[0];
        let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let wire = match ctl & 3 {
            3 => bytes.to_vec(),
            kind => {
                let mut out = Message {
                    msg_type: req.msg_type,
                    req_id: req.req_id,
                    tx_id: req.tx_id,
                    payload: bytes[..len.min(PAYLOAD_MAX)].to_vec(),
                };
                if kind == 1 {
                    out.msg_type = MsgType::Error as u32;
                } else if kind == 2 {
                    out.msg_type = MsgType::WatchEvent as u32;
                    out.req_id = 0;
                }
                if ctl & 4 != 0 {
                    out.req_id = out.req_id.wrapping_add(1);
                }
                if ctl & 8 != 0 {
                    out.msg_type = u32::from(ctl >> 4);
                }
                out.encode().expect("payload within the limit")
            }
        };
        if s.write_all(&wire).is_err() {
            break;
        }
        may_send = ctl & 3 < 2 && ctl & 12 == 0;
        if may_send {
            if let Some(r) = queue.pop_front() {
                last = r;
            }
        }
    }
    // Stop writing (the client sees EOF), but keep reading until the client
    // hangs up so that its writes never hit a closed socket (SIGPIPE).
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(None);
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

fuzz_target!(|data: &[u8]| {
    decode_all(data);
    if data.len() < 2 {
        return;
    }
    let responsive = data[0] & 0x80 != 0;
    let nops = (data[1] % 4 + 1) as usize;
    if data.len() < 2 + nops {
        return;
    }
    let ops = &data[2..2 + nops];
    let stream = &data[2 + nops..];

    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind the fake xenstored socket");
    let client = XsClient::connect(&path, TIMEOUT).expect("connect to the fake xenstored");
    let (server, _) = listener.accept().expect("accept the client");
    // No second connection: a reconnect after a broken stream must fail fast.
    drop(listener);
    let _ = std::fs::remove_file(&path);

    let started = Instant::now();
    if responsive {
        let script = stream.to_vec();
        let t = std::thread::spawn(move || serve(server, script));
        for &op in ops {
            run_op(&client, op);
        }
        drop(client);
        t.join().expect("fake server thread");
    } else {
        let mut server = server;
        server
            .write_all(stream)
            .expect("stream fits the socket buffer");
        server.shutdown(Shutdown::Write).expect("shutdown");
        for &op in ops {
            run_op(&client, op);
        }
        drop(client);
        drop(server);
    }
    // Every stream ends with EOF, so waiting for the timeout is a hang.
    assert!(
        started.elapsed() < TIMEOUT,
        "client waited {:?} on a stream that had ended",
        started.elapsed()
    );
});
