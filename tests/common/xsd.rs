//! Test helpers: run `xenblock-xenstored` on a private socket and talk raw
//! xs_wire to it.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use xenblock::store::wire::{Header, Message, MsgType, HEADER_LEN};

/// A running daemon; killed and cleaned up on drop.
pub struct Daemon {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

/// A fresh private directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "xenblock-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Daemon {
    /// Start the daemon and wait for its `ready` line.
    pub fn start() -> Daemon {
        let dir = temp_dir("xsd");
        let socket = dir.join("socket");
        Daemon::start_at(dir, socket)
    }

    pub fn start_at(dir: PathBuf, socket: PathBuf) -> Daemon {
        Daemon::start_with(dir, socket, &[])
    }

    /// Start with extra command-line arguments.
    pub fn start_with(dir: PathBuf, socket: PathBuf, extra: &[&str]) -> Daemon {
        let mut child = Command::new(exe("xenblock-xenstored"))
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start xenblock-xenstored");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "daemon did not report ready");
        assert!(socket.exists());
        Daemon { child, dir, socket }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait for the process to end by itself (after a signal).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal xs_wire client that keeps watch events aside.
pub struct Client {
    pub stream: UnixStream,
    req: u32,
    pub events: VecDeque<(String, String)>,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect to xenstored");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            stream,
            req: 0,
            events: VecDeque::new(),
        }
    }

    pub fn send(&mut self, ty: MsgType, tx: u32, payload: &[u8]) -> u32 {
        self.req += 1;
        let m = Message::new(ty, self.req, tx, payload.to_vec());
        self.stream.write_all(&m.encode().unwrap()).unwrap();
        self.req
    }

    /// Read one message; `None` on EOF.
    pub fn recv(&mut self) -> Option<Message> {
        let mut hb = [0u8; HEADER_LEN];
        if self.stream.read_exact(&mut hb).is_err() {
            return None;
        }
        let h = Header::decode(&hb);
        let mut payload = vec![0u8; h.len as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(Message {
            msg_type: h.msg_type,
            req_id: h.req_id,
            tx_id: h.tx_id,
            payload,
        })
    }

    /// Send a request and wait for its reply: `Ok(payload)` or
    /// `Err("ENOENT")`. Watch events that arrive meanwhile are kept.
    pub fn call(&mut self, ty: MsgType, tx: u32, payload: &[u8]) -> Result<Vec<u8>, String> {
        let req = self.send(ty, tx, payload);
        loop {
            let m = self
                .recv()
                .expect("connection closed while waiting for a reply");
            if m.msg_type == MsgType::WatchEvent as u32 {
                let s = split(&m.payload);
                assert_eq!(s.len(), 2, "watch event payload {:?}", m.payload);
                self.events.push_back((s[0].clone(), s[1].clone()));
                continue;
            }
            assert_eq!(m.req_id, req, "reply for another request");
            assert_eq!(m.tx_id, tx, "reply does not echo tx_id");
            if m.msg_type == MsgType::Error as u32 {
                return Err(split(&m.payload).concat());
            }
            assert_eq!(m.msg_type, ty as u32, "reply type");
            return Ok(m.payload);
        }
    }

    pub fn read(&mut self, tx: u32, path: &str) -> Result<String, String> {
        self.call(MsgType::Read, tx, &nul(path))
            .map(|v| String::from_utf8(v).unwrap())
    }

    pub fn write(&mut self, tx: u32, path: &str, value: &str) -> Result<(), String> {
        let mut p = nul(path);
        p.extend_from_slice(value.as_bytes());
        self.call(MsgType::Write, tx, &p)
            .map(|r| assert_eq!(r, b"OK\0"))
    }

    pub fn mkdir(&mut self, tx: u32, path: &str) -> Result<(), String> {
        self.call(MsgType::Mkdir, tx, &nul(path)).map(|_| ())
    }

    pub fn rm(&mut self, tx: u32, path: &str) -> Result<(), String> {
        self.call(MsgType::Rm, tx, &nul(path)).map(|_| ())
    }

    pub fn dir(&mut self, tx: u32, path: &str) -> Result<Vec<String>, String> {
        self.call(MsgType::Directory, tx, &nul(path))
            .map(|v| split(&v))
    }

    pub fn get_perms(&mut self, path: &str) -> Result<Vec<String>, String> {
        self.call(MsgType::GetPerms, 0, &nul(path))
            .map(|v| split(&v))
    }

    pub fn set_perms(&mut self, path: &str, perms: &[&str]) -> Result<(), String> {
        let mut p = nul(path);
        for x in perms {
            p.extend_from_slice(&nul(x));
        }
        self.call(MsgType::SetPerms, 0, &p).map(|_| ())
    }

    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut p = nul(path);
        p.extend_from_slice(&nul(token));
        self.call(MsgType::Watch, 0, &p).map(|_| ())
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut p = nul(path);
        p.extend_from_slice(&nul(token));
        self.call(MsgType::Unwatch, 0, &p).map(|_| ())
    }

    pub fn tx_start(&mut self) -> u32 {
        let r = self.call(MsgType::TransactionStart, 0, b"\0").unwrap();
        split(&r)[0].parse().unwrap()
    }

    pub fn tx_end(&mut self, tx: u32, commit: bool) -> Result<(), String> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.call(MsgType::TransactionEnd, tx, arg).map(|_| ())
    }

    /// Wait for the next watch event (already queued or arriving).
    pub fn next_event(&mut self) -> (String, String) {
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        let m = self
            .recv()
            .expect("connection closed while waiting for an event");
        assert_eq!(m.msg_type, MsgType::WatchEvent as u32, "expected an event");
        assert_eq!((m.req_id, m.tx_id), (0, 0));
        let s = split(&m.payload);
        (s[0].clone(), s[1].clone())
    }

    /// All events that arrive before a round trip completes.
    pub fn drain_events(&mut self) -> Vec<(String, String)> {
        self.call(MsgType::GetDomainPath, 0, b"0\0").unwrap();
        self.events.drain(..).collect()
    }
}

/// `s\0`.
pub fn nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// NUL-terminated strings of a payload.
pub fn split(p: &[u8]) -> Vec<String> {
    xenblock::store::wire::split_nul(p)
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A program of the workspace (`xenblock`, `xenblock-xenstored`): the
/// programs are crates of their own (crates/), so cargo gives the library's
/// tests no `CARGO_BIN_EXE_*`; they sit beside this test's `deps/` directory
/// once built (`cargo build --release --workspace`, as scripts/test-all.sh
/// does before `cargo test`).
pub fn exe(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("the test's own path");
    let dir = me
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/PROFILE/deps");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the programs first with `cargo build --release --workspace` \
         (scripts/test-all.sh does)",
        p.display()
    );
    p
}
