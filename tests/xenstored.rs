//! The embedded xenstored against a raw xs_wire client: the protocol
//! semantics of Xen's xenstored (docs/misc/xenstore.txt), robustness against
//! bad clients, and many concurrent connections.

#[path = "common/xsd.rs"]
mod xsd;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use xenblock::store::wire::{Header, Message, MsgType, HEADER_LEN, PAYLOAD_MAX};
use xsd::{nul, split, Client, Daemon};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn initial_tree() {
    let d = Daemon::start();
    let mut c = d.client();
    assert_eq!(c.dir(0, "/").unwrap(), s(&["tool", "local"]));
    assert_eq!(c.dir(0, "/local/domain").unwrap(), s(&["0"]));
    assert_eq!(c.read(0, "/local/domain/0").unwrap(), "");
    assert_eq!(c.get_perms("/").unwrap(), s(&["n0"]));
}

#[test]
fn read_write_mkdir_rm_directory() {
    let d = Daemon::start();
    let mut c = d.client();
    c.write(0, "/a/b/c", "hello").unwrap();
    assert_eq!(c.read(0, "/a/b/c").unwrap(), "hello");
    assert_eq!(c.read(0, "/a/b").unwrap(), "", "parents are created empty");
    // Values are binary and may contain NULs.
    let mut p = nul("/bin");
    p.extend_from_slice(b"x\0y");
    c.call(MsgType::Write, 0, &p).unwrap();
    assert_eq!(c.call(MsgType::Read, 0, &nul("/bin")).unwrap(), b"x\0y");

    c.mkdir(0, "/a/b/d").unwrap();
    c.mkdir(0, "/a/b/c").unwrap();
    assert_eq!(c.read(0, "/a/b/c").unwrap(), "hello", "mkdir keeps values");
    assert_eq!(c.dir(0, "/a/b").unwrap(), s(&["c", "d"]));
    assert_eq!(c.dir(0, "/a/b/c").unwrap(), Vec::<String>::new());

    assert_eq!(c.read(0, "/nope").unwrap_err(), "ENOENT");
    assert_eq!(c.dir(0, "/nope").unwrap_err(), "ENOENT");
    // RM as xenstored: missing node with existing parent is fine,
    // missing parent is ENOENT, the root is EINVAL.
    c.rm(0, "/a/b/zzz").unwrap();
    assert_eq!(c.rm(0, "/x/y").unwrap_err(), "ENOENT");
    assert_eq!(c.rm(0, "/").unwrap_err(), "EINVAL");
    c.rm(0, "/a/b").unwrap();
    assert_eq!(c.dir(0, "/a").unwrap(), Vec::<String>::new());
    assert_eq!(c.read(0, "/a/b/c").unwrap_err(), "ENOENT");

    // Relative paths are under dom0's home.
    c.write(0, "foo/bar", "baz").unwrap();
    assert_eq!(c.read(0, "/local/domain/0/foo/bar").unwrap(), "baz");
    assert_eq!(c.read(0, "foo/bar").unwrap(), "baz");
}

#[test]
fn path_validation() {
    let d = Daemon::start();
    let mut c = d.client();
    for bad in ["/a/", "/a//b", "/a b", "/a.b", "", "/é"] {
        assert_eq!(c.write(0, bad, "x").unwrap_err(), "EINVAL", "{bad:?}");
        assert_eq!(c.read(0, bad).unwrap_err(), "EINVAL", "{bad:?}");
    }
    c.write(0, "/ok-_@Z9", "x").unwrap();
    let long = format!("/local/domain/0/{}", "a".repeat(2048));
    c.write(0, &long, "").unwrap();
    assert_eq!(c.write(0, &format!("{long}b"), "").unwrap_err(), "EINVAL");
    // A request whose argument is not one NUL-terminated string.
    assert_eq!(c.call(MsgType::Read, 0, b"/a").unwrap_err(), "EINVAL");
    assert_eq!(c.call(MsgType::Read, 0, b"/a\0b\0").unwrap_err(), "EINVAL");
}

#[test]
fn permissions_are_stored_and_inherited() {
    let d = Daemon::start();
    let mut c = d.client();
    c.write(0, "/p", "").unwrap();
    assert_eq!(c.get_perms("/p").unwrap(), s(&["n0"]));
    c.set_perms("/p", &["b5", "r0"]).unwrap();
    assert_eq!(c.get_perms("/p").unwrap(), s(&["b5", "r0"]));
    c.write(0, "/p/q/r", "").unwrap();
    assert_eq!(c.get_perms("/p/q/r").unwrap(), s(&["b5", "r0"]));
    assert_eq!(c.set_perms("/p", &["x5"]).unwrap_err(), "EINVAL");
    assert_eq!(c.set_perms("/nope", &["n0"]).unwrap_err(), "ENOENT");
    assert_eq!(
        c.call(MsgType::SetPerms, 0, &nul("/p")).unwrap_err(),
        "EINVAL"
    );
    c.set_perms("@releaseDomain", &["n0", "r3"]).unwrap();
}

#[test]
fn domains_and_misc_requests() {
    let d = Daemon::start();
    let mut c = d.client();
    assert_eq!(
        c.call(MsgType::GetDomainPath, 0, b"7\0").unwrap(),
        b"/local/domain/7\0"
    );
    assert_eq!(
        c.call(MsgType::IsDomainIntroduced, 0, b"0\0").unwrap(),
        b"T\0"
    );
    assert_eq!(
        c.call(MsgType::IsDomainIntroduced, 0, b"3\0").unwrap(),
        b"F\0"
    );
    assert_eq!(c.call(MsgType::Control, 0, b"check\0").unwrap(), b"OK\0");
    // Unsupported or unknown types: ENOSYS, as xenstored 4.17.
    assert_eq!(c.call(MsgType::GetFeature, 0, b"").unwrap_err(), "ENOSYS");
    c.req_raw(20, b"");
    // Unknown transaction id.
    assert_eq!(c.read(99, "/").unwrap_err(), "ENOENT");
    assert_eq!(c.tx_end(0, true).unwrap_err(), "ENOENT");
}

trait Raw {
    fn req_raw(&mut self, ty: u32, payload: &[u8]);
}

impl Raw for Client {
    /// Send a request of a raw type number and expect ENOSYS.
    fn req_raw(&mut self, ty: u32, payload: &[u8]) {
        let m = Message {
            msg_type: ty,
            req_id: 4242,
            tx_id: 0,
            payload: payload.to_vec(),
        };
        self.stream.write_all(&m.encode().unwrap()).unwrap();
        let r = self.recv().unwrap();
        assert_eq!(r.msg_type, MsgType::Error as u32);
        assert_eq!(r.req_id, 4242);
        assert_eq!(r.payload, b"ENOSYS\0");
    }
}

#[test]
fn watches_fire_with_initial_event() {
    let d = Daemon::start();
    let mut w = d.client();
    let mut c = d.client();
    w.watch("/w", "tok").unwrap();
    assert_eq!(w.next_event(), ("/w".into(), "tok".into()), "initial event");
    assert_eq!(w.watch("/w", "tok").unwrap_err(), "EEXIST");

    c.write(0, "/w/x/y", "1").unwrap();
    assert_eq!(w.next_event(), ("/w/x/y".into(), "tok".into()));
    c.write(0, "/other", "1").unwrap();
    c.mkdir(0, "/w/m").unwrap();
    assert_eq!(w.next_event(), ("/w/m".into(), "tok".into()));
    c.mkdir(0, "/w/m").unwrap(); // exists: no event
    c.set_perms("/w", &["n0", "r1"]).unwrap();
    assert_eq!(w.next_event(), ("/w".into(), "tok".into()));
    assert!(w.drain_events().is_empty());

    // A watch below a removed node fires too, with its own path; as in
    // xenstored, removed descendants only match watches on exactly them.
    w.watch("/w/x/y", "deep").unwrap();
    assert_eq!(w.next_event(), ("/w/x/y".into(), "deep".into()));
    c.rm(0, "/w").unwrap();
    assert_eq!(w.next_event(), ("/w/x/y".into(), "deep".into()));
    assert_eq!(w.next_event(), ("/w".into(), "tok".into()));
    assert!(w.drain_events().is_empty());

    // Relative watches report relative paths.
    w.watch("rel", "r").unwrap();
    assert_eq!(w.next_event(), ("rel".into(), "r".into()));
    c.write(0, "/local/domain/0/rel/k", "v").unwrap();
    assert_eq!(w.next_event(), ("rel/k".into(), "r".into()));

    // Unwatch stops events; unknown watch is ENOENT.
    w.unwatch("rel", "r").unwrap();
    assert_eq!(w.unwatch("rel", "r").unwrap_err(), "ENOENT");
    c.write(0, "rel/k", "v2").unwrap();
    assert!(w.drain_events().is_empty());

    // Special watches are accepted and fire initially.
    w.watch("@releaseDomain", "rd").unwrap();
    assert_eq!(w.next_event(), ("@releaseDomain".into(), "rd".into()));
    w.watch("@introduceDomain", "id").unwrap();
    assert_eq!(w.next_event(), ("@introduceDomain".into(), "id".into()));
    c.call(MsgType::Introduce, 0, b"5\x00123\x004\x00").unwrap();
    assert_eq!(w.next_event(), ("@introduceDomain".into(), "id".into()));
    assert_eq!(
        c.call(MsgType::IsDomainIntroduced, 0, b"5\0").unwrap(),
        b"T\0"
    );
    c.call(MsgType::Release, 0, b"5\0").unwrap();
    assert_eq!(w.next_event(), ("@releaseDomain".into(), "rd".into()));

    // RESET_WATCHES drops them all.
    w.watch("/z", "z").unwrap();
    assert_eq!(w.next_event(), ("/z".into(), "z".into()));
    w.call(MsgType::ResetWatches, 0, b"").unwrap();
    c.write(0, "/z", "1").unwrap();
    assert!(w.drain_events().is_empty());
}

#[test]
fn transaction_isolation_conflict_and_retry() {
    let d = Daemon::start();
    let mut c = d.client();
    let mut other = d.client();
    c.write(0, "/t/k", "a").unwrap();
    let mut w = d.client();
    w.watch("/t", "t").unwrap();
    w.next_event();

    let tx = c.tx_start();
    assert_ne!(tx, 0);
    assert_eq!(c.read(tx, "/t/k").unwrap(), "a");
    other.write(0, "/t/k", "b").unwrap();
    assert_eq!(w.next_event(), ("/t/k".into(), "t".into()));
    assert_eq!(c.read(tx, "/t/k").unwrap(), "a", "snapshot isolation");
    c.write(tx, "/t/k", "c").unwrap();
    c.write(tx, "/t/new", "n").unwrap();
    assert_eq!(c.read(tx, "/t/k").unwrap(), "c");
    assert_eq!(c.read(0, "/t/k").unwrap(), "b");
    assert_eq!(c.read(0, "/t/new").unwrap_err(), "ENOENT");
    assert_eq!(c.tx_end(tx, true).unwrap_err(), "EAGAIN");
    assert_eq!(
        c.read(0, "/t/k").unwrap(),
        "b",
        "failed commit applies nothing"
    );
    assert_eq!(c.read(0, "/t/new").unwrap_err(), "ENOENT");
    assert_eq!(c.tx_end(tx, true).unwrap_err(), "ENOENT", "tx is gone");
    assert!(w.drain_events().is_empty());

    // Retry succeeds; events fire on commit only.
    let tx = c.tx_start();
    assert_eq!(c.read(tx, "/t/k").unwrap(), "b");
    c.write(tx, "/t/k", "c").unwrap();
    c.rm(tx, "/t/gone").unwrap();
    assert!(w.drain_events().is_empty());
    c.tx_end(tx, true).unwrap();
    assert_eq!(c.read(0, "/t/k").unwrap(), "c");
    assert_eq!(w.next_event(), ("/t/k".into(), "t".into()));

    // Unrelated changes do not conflict.
    let tx = c.tx_start();
    c.write(tx, "/t/k", "d").unwrap();
    other.write(0, "/elsewhere", "x").unwrap();
    c.tx_end(tx, true).unwrap();
    assert_eq!(c.read(0, "/t/k").unwrap(), "d");

    // A listed directory that gains a child conflicts.
    let tx = c.tx_start();
    c.dir(tx, "/t").unwrap();
    c.write(tx, "/t/k", "e").unwrap();
    other.write(0, "/t/sibling", "x").unwrap();
    assert_eq!(c.tx_end(tx, true).unwrap_err(), "EAGAIN");

    // Nested start is refused.
    let tx = c.tx_start();
    assert_eq!(
        c.call(MsgType::TransactionStart, tx, b"\0").unwrap_err(),
        "EBUSY"
    );
    assert_eq!(
        c.call(MsgType::TransactionEnd, tx, b"X\0").unwrap_err(),
        "EINVAL"
    );
    c.tx_end(tx, false).unwrap();
}

#[test]
fn transaction_abort_discards() {
    let d = Daemon::start();
    let mut c = d.client();
    c.write(0, "/ab/k", "a").unwrap();
    let tx = c.tx_start();
    c.write(tx, "/ab/k", "z").unwrap();
    c.write(tx, "/ab/n/m", "z").unwrap();
    c.rm(tx, "/ab").unwrap();
    assert_eq!(c.read(tx, "/ab/k").unwrap_err(), "ENOENT");
    c.tx_end(tx, false).unwrap();
    assert_eq!(c.read(0, "/ab/k").unwrap(), "a");
    assert_eq!(c.dir(0, "/ab").unwrap(), s(&["k"]));
}

#[test]
fn directory_part_pages_big_directories() {
    let d = Daemon::start();
    let mut c = d.client();
    let names: Vec<String> = (0..600).map(|i| format!("entry-number-{i:05}")).collect();
    let tx = c.tx_start();
    for n in &names {
        c.write(tx, &format!("/big/{n}"), "").unwrap();
    }
    c.tx_end(tx, true).unwrap();
    assert_eq!(c.dir(0, "/big").unwrap_err(), "E2BIG");
    let mut all = Vec::new();
    let mut off = 0usize;
    let mut generation = None;
    loop {
        let mut p = nul("/big");
        p.extend_from_slice(&nul(&off.to_string()));
        let r = c.call(MsgType::DirectoryPart, 0, &p).unwrap();
        assert!(r.len() <= PAYLOAD_MAX);
        let g = r.iter().position(|&b| b == 0).unwrap();
        let gen = String::from_utf8(r[..g].to_vec()).unwrap();
        assert_eq!(*generation.get_or_insert(gen.clone()), gen);
        let body = &r[g + 1..];
        all.extend_from_slice(body);
        off += body.len();
        if body.len() <= 1 || body[body.len() - 2] == 0 {
            break;
        }
    }
    all.pop();
    assert_eq!(split(&all), names);
}

#[test]
fn oversized_message_is_rejected_and_connection_closed() {
    let d = Daemon::start();
    let mut c = d.client();
    let h = Header {
        msg_type: MsgType::Write as u32,
        req_id: 77,
        tx_id: 0,
        len: (PAYLOAD_MAX + 1) as u32,
    };
    c.stream.write_all(&h.encode()).unwrap();
    let _ = c.stream.write_all(&vec![b'a'; PAYLOAD_MAX + 1]);
    let r = c.recv().expect("an error reply");
    assert_eq!(r.msg_type, MsgType::Error as u32);
    assert_eq!(r.req_id, 77);
    assert_eq!(r.payload, b"E2BIG\0");
    assert!(c.recv().is_none(), "connection must be closed");
    // The daemon itself is fine.
    assert_eq!(d.client().read(0, "/local/domain/0").unwrap(), "");
}

#[test]
fn bad_clients_do_not_disturb_good_ones() {
    let d = Daemon::start();
    // Garbage bytes, a half header, a half payload, a client that never
    // reads its replies, and one that vanishes mid-message.
    let mut garbage = UnixStream::connect(&d.socket).unwrap();
    garbage.write_all(&[0xff; 37]).unwrap();
    let mut half_header = UnixStream::connect(&d.socket).unwrap();
    half_header.write_all(&[1, 0, 0]).unwrap();
    let mut half_payload = UnixStream::connect(&d.socket).unwrap();
    let h = Header {
        msg_type: MsgType::Write as u32,
        req_id: 1,
        tx_id: 0,
        len: 100,
    };
    half_payload.write_all(&h.encode()).unwrap();
    half_payload.write_all(b"/stalled\0").unwrap();
    let mut deaf = d.client();
    deaf.watch("/", "all").unwrap();
    {
        let mut gone = UnixStream::connect(&d.socket).unwrap();
        gone.write_all(&h.encode()[..10]).unwrap();
    }

    let mut good = d.client();
    let start = Instant::now();
    for i in 0..2000 {
        good.write(0, &format!("/good/{}", i % 50), &i.to_string())
            .unwrap();
    }
    assert_eq!(good.read(0, "/good/49").unwrap(), "1999");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(good.read(0, "/stalled").unwrap_err(), "ENOENT");

    // The garbage client got ENOSYS / error replies or was dropped; it must
    // not have changed anything, and reading it must not hang forever.
    garbage
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; HEADER_LEN];
    let _ = garbage.read(&mut buf);
    drop((garbage, half_header, half_payload, deaf));
    assert_eq!(good.read(0, "/good/0").unwrap(), "1950");
}

#[test]
fn five_hundred_concurrent_connections() {
    let d = Daemon::start();
    let clients: Vec<Client> = (0..500).map(|_| d.client()).collect();
    // All 500 are open at once; drive them from a few threads.
    let mut groups: Vec<Vec<(usize, Client)>> = (0..10).map(|_| Vec::new()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        groups[i % 10].push((i, c));
    }
    let handles: Vec<_> = groups
        .into_iter()
        .map(|group| {
            std::thread::spawn(move || {
                let mut group = group;
                for round in 0..3 {
                    for (i, c) in group.iter_mut() {
                        c.write(0, &format!("/many/c{i}"), &format!("{round}"))
                            .unwrap();
                    }
                    for (i, c) in group.iter_mut() {
                        assert_eq!(
                            c.read(0, &format!("/many/c{i}")).unwrap(),
                            round.to_string()
                        );
                    }
                }
                // Each also commits a transaction, retrying on EAGAIN.
                for (i, c) in group.iter_mut() {
                    loop {
                        let tx = c.tx_start();
                        let n: u32 = c.read(tx, "/counter").map_or(0, |v| v.parse().unwrap());
                        c.write(tx, "/counter", &(n + 1).to_string()).unwrap();
                        c.write(tx, &format!("/many/c{i}"), "done").unwrap();
                        match c.tx_end(tx, true) {
                            Ok(()) => break,
                            Err(e) => assert_eq!(e, "EAGAIN"),
                        }
                    }
                }
                group
            })
        })
        .collect();
    let groups: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut c = d.client();
    assert_eq!(c.read(0, "/counter").unwrap(), "500", "no lost update");
    assert_eq!(c.dir(0, "/many").unwrap().len(), 500);
    drop(groups);
}

/// The daemon keeps a finished connection's threads for the next one: a
/// connection served on them starts clean (no watch, no transaction of the
/// one before), and the parked threads stay bounded.
#[test]
fn connections_one_after_another_start_clean_and_threads_stay_bounded() {
    let d = Daemon::start();
    let threads = || -> usize {
        let st = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        st.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let mut writer = d.client();
    for i in 0..200 {
        let mut c = d.client();
        // A transaction left open and a watch left registered by the
        // connection before must not be visible here.
        let tx = c.tx_start();
        assert!(
            c.read(tx, "/pool/left-by-previous").is_err(),
            "connection {i} sees a write of an earlier connection's transaction"
        );
        c.write(tx, "/pool/left-by-previous", "x").unwrap();
        c.watch(&format!("/pool/c{i}"), "mine").unwrap();
        writer.write(0, &format!("/pool/c{i}"), "v").unwrap();
        writer.write(0, &format!("/pool/c{}", i + 1), "v").unwrap();
        // Its own watch fired (initial event + the write); no one else's.
        c.read(0, "/").unwrap();
        let paths: Vec<String> = c.events.drain(..).map(|(p, _)| p).collect();
        assert!(
            paths.iter().all(|p| *p == format!("/pool/c{i}")),
            "connection {i} got events of other paths: {paths:?}"
        );
        assert!(
            !paths.is_empty(),
            "connection {i} got no event for its watch"
        );
    }
    assert!(
        writer.read(0, "/pool/left-by-previous").is_err(),
        "a transaction never ended was committed"
    );
    // Many at once, then all gone: at most the parked pairs remain.
    let many: Vec<Client> = (0..60).map(|_| d.client()).collect();
    for mut c in many {
        c.read(0, "/").unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let n = threads();
    assert!(
        n <= 2 + 2 * 16 + 2,
        "{n} threads left after 60 connections closed"
    );
}

#[test]
fn sigterm_removes_socket_and_stale_socket_is_replaced() {
    let dir = xsd::temp_dir("stale");
    let socket = dir.join("sock");
    drop(UnixListener::bind(&socket).unwrap()); // leaves a stale socket file
    assert!(socket.exists());
    let mut d = Daemon::start_at(dir, socket.clone());
    assert_eq!(d.client().read(0, "/").unwrap(), "");
    // A second daemon on a live socket refuses to start.
    let st = std::process::Command::new(xsd::exe("xenblock-xenstored"))
        .arg("--socket")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(d.wait().success());
    assert!(!socket.exists(), "socket removed on SIGTERM");
}

#[test]
fn a_client_that_never_reads_is_disconnected_not_waited_for() {
    let dir = xsd::temp_dir("deaf");
    let socket = dir.join("sock");
    let d = Daemon::start_with(dir, socket, &["--max-queued-bytes", "65536"]);
    let mut deaf = d.client();
    deaf.watch("/", "all").unwrap();
    let mut good = d.client();
    let start = Instant::now();
    // Each write queues an event of ~40 bytes for the deaf client: far more
    // than the socket buffer plus 64 KiB.
    for i in 0..20_000 {
        good.write(0, &format!("/flood/n{}", i % 100), "some value")
            .unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    // The deaf client finds its connection closed after what was sent.
    deaf.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut n = 0;
    while deaf.recv().is_some() {
        n += 1;
    }
    assert!(n < 20_000, "the deaf client was not cut off ({n} messages)");
    assert_eq!(good.read(0, "/flood/n99").unwrap(), "some value");
}

#[test]
fn ready_fd_and_pidfile() {
    let dir = xsd::temp_dir("ready");
    let socket = dir.join("sock");
    let pidfile = dir.join("pid");
    let mut child = std::process::Command::new(xsd::exe("xenblock-xenstored"))
        .arg("--socket")
        .arg(&socket)
        .args(["--ready-fd", "1", "--pidfile"])
        .arg(&pidfile)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = String::new();
    for _ in 0..2 {
        std::io::BufRead::read_line(&mut out, &mut lines).unwrap();
    }
    assert_eq!(lines, "ready\nready\n", "--ready-fd 1 and the stdout line");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert_eq!(pid.trim(), child.id().to_string());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists() && !pidfile.exists());
    let _ = std::fs::remove_dir_all(dir);
}
