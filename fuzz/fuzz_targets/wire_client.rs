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
//!          responsive mode: chunks `[ctl][len lo][len hi][bytes]`, one per
//!          request the client sends (see `serve`).
//! ```
//!
//! The client must answer every operation with `Ok` or `Err`: no panic, no
//! hang (all waits are bounded by `TIMEOUT`, and the server always ends its
//! stream, so a correct client never waits that long).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
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

/// Responsive server: for each request the client sends, take the next
/// chunk and answer with it. `ctl`:
/// - bits 0-1: 0 reply (request's type, its req_id), 1 XS_ERROR reply,
///   2 a watch event first (then the next chunk answers the same request),
///   3 the chunk's bytes raw, no header;
/// - bit 2: use req_id + 1 (a reply matching nothing);
/// - bit 3: use type `ctl >> 4` instead of the request's.
fn serve(mut s: UnixStream, script: Vec<u8>) {
    let mut rest = &script[..];
    let mut inbuf: Vec<u8> = Vec::new();
    'requests: loop {
        // Read one whole request.
        let req = loop {
            match Message::decode(&inbuf) {
                Ok(Some((m, used))) => {
                    inbuf.drain(..used);
                    break m;
                }
                Ok(None) => {}
                Err(_) => break 'requests,
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break 'requests,
                Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
            }
        };
        loop {
            if rest.len() < 3 {
                break 'requests;
            }
            let ctl = rest[0];
            let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
            let bytes = &rest[3..3 + len];
            rest = &rest[3 + len..];
            let mut out = Message {
                msg_type: req.msg_type,
                req_id: req.req_id,
                tx_id: req.tx_id,
                payload: bytes.to_vec(),
            };
            let mut again = false;
            match ctl & 3 {
                0 => {}
                1 => out.msg_type = MsgType::Error as u32,
                2 => {
                    out.msg_type = MsgType::WatchEvent as u32;
                    out.req_id = 0;
                    again = true;
                }
                _ => {
                    if s.write_all(bytes).is_err() {
                        break 'requests;
                    }
                    continue 'requests;
                }
            }
            if ctl & 4 != 0 {
                out.req_id = out.req_id.wrapping_add(1);
            }
            if ctl & 8 != 0 {
                out.msg_type = u32::from(ctl >> 4);
            }
            out.payload.truncate(PAYLOAD_MAX);
            let wire = out.encode().expect("payload within the limit");
            if s.write_all(&wire).is_err() {
                break 'requests;
            }
            if !again {
                continue 'requests;
            }
        }
    }
    // Stop writing (the client sees EOF), but keep reading until the client
    // hangs up so that its writes never hit a closed socket (SIGPIPE).
    let _ = s.shutdown(Shutdown::Write);
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
