//! The built-in xenstore client against the embedded xenstored (the same
//! operations as Xen's tools), and against hostile fake servers: closed
//! connections, silence, oversized and malformed replies. Bounded, no hangs.
//! No root needed.

#[path = "common/xsd.rs"]
mod xsd;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};
use xenblock::store::client::XsClient;
use xenblock::store::wire::{Header, Message, MsgType};
use xenblock::store::{self, Store, NO_TX};
use xenblock::ErrorKind;
use xsd::Daemon;

fn client(d: &Daemon) -> XsClient {
    XsClient::connect(&d.socket, Duration::from_secs(5)).unwrap()
}

#[test]
fn basic_operations_and_relative_paths() {
    let d = Daemon::start();
    let c = client(&d);
    c.write(NO_TX, "foo/bar", b"baz").unwrap();
    assert_eq!(
        c.read(NO_TX, "/local/domain/0/foo/bar").unwrap().as_deref(),
        Some(&b"baz"[..])
    );
    assert_eq!(c.read(NO_TX, "foo/missing").unwrap(), None);
    c.write(NO_TX, "/t/a", b"1").unwrap();
    c.write(NO_TX, "/t/b", b"").unwrap();
    let mut dir = c.directory(NO_TX, "/t").unwrap().unwrap();
    dir.sort();
    assert_eq!(dir, vec!["a", "b"]);
    assert_eq!(c.directory(NO_TX, "/nope").unwrap(), None);
    c.mkdir(NO_TX, "/t/c").unwrap();
    c.set_perms(NO_TX, "/t/c", &["n0", "r5"]).unwrap();
    assert_eq!(c.get_perms(NO_TX, "/t/c").unwrap(), vec!["n0", "r5"]);
    c.remove(NO_TX, "/t").unwrap();
    c.remove(NO_TX, "/t").unwrap(); // removing what is gone is fine
    assert_eq!(c.read(NO_TX, "/t/a").unwrap(), None);
    assert_eq!(c.get_domain_path(7).unwrap(), "/local/domain/7");
    assert_eq!(c.home().unwrap(), "/local/domain/0");
    let many = c
        .read_many(NO_TX, &["foo/bar".into(), "foo/none".into()])
        .unwrap();
    assert_eq!(many, vec![Some(b"baz".to_vec()), None]);
}

#[test]
fn payload_limit_is_enforced_with_a_clear_error() {
    let d = Daemon::start();
    let c = client(&d);
    let e = c.write(NO_TX, "/big", &vec![b'x'; 5000]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("4096"), "{e}");
    c.write(NO_TX, "/ok", b"fine").unwrap(); // the connection is still good
}

#[test]
fn long_directories_are_listed_through_directory_part() {
    let d = Daemon::start();
    let c = client(&d);
    let names: Vec<String> = (0..1500)
        .map(|i| format!("entry-with-a-long-name-{i:05}"))
        .collect();
    for n in &names {
        c.write(NO_TX, &format!("/long/{n}"), b"").unwrap();
    }
    let mut got = c.directory(NO_TX, "/long").unwrap().unwrap();
    got.sort();
    assert_eq!(got, names);
    let got = c
        .directory_many(NO_TX, &["/long".into(), "/local".into()])
        .unwrap();
    assert_eq!(got[0].as_ref().unwrap().len(), 1500);
}

#[test]
fn transaction_conflict_gives_eagain_and_succeeds_on_retry() {
    let d = Daemon::start();
    let a = client(&d);
    let b = client(&d);
    a.write(NO_TX, "/counter", b"0").unwrap();
    let tx = a.transaction_start().unwrap();
    let v = a.read(tx, "/counter").unwrap().unwrap();
    b.write(NO_TX, "/counter", b"10").unwrap(); // someone else changes it
    a.write(tx, "/counter", &[v[0] + 1]).unwrap();
    assert!(
        !a.transaction_end(tx, true).unwrap(),
        "commit must answer EAGAIN"
    );
    assert_eq!(
        a.read(NO_TX, "/counter").unwrap().as_deref(),
        Some(&b"10"[..])
    );
    // The retry helper re-runs the closure; the first attempt is disturbed.
    let mut attempts = 0;
    store::with_transaction(&a, 5, |tx| {
        attempts += 1;
        let v: u32 = String::from_utf8(a.read(tx, "/counter")?.unwrap())
            .unwrap()
            .parse()
            .unwrap();
        if attempts == 1 {
            b.write(NO_TX, "/counter", b"20").unwrap();
        }
        a.write(tx, "/counter", (v + 1).to_string().as_bytes())
    })
    .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(
        a.read(NO_TX, "/counter").unwrap().as_deref(),
        Some(&b"21"[..])
    );
}

#[test]
fn watch_events_arrive() {
    let d = Daemon::start();
    let c = client(&d);
    let other = client(&d);
    c.watch("/w", "tok").unwrap();
    let first = c.read_watch(Duration::from_secs(2)).unwrap().unwrap();
    assert_eq!(
        (first.path.as_str(), first.token.as_str()),
        ("/w", "tok"),
        "initial event"
    );
    other.write(NO_TX, "/w/x", b"1").unwrap();
    let ev = c.read_watch(Duration::from_secs(2)).unwrap().unwrap();
    assert_eq!(ev.path, "/w/x");
    // Events arriving between replies are queued, not lost.
    other.write(NO_TX, "/w/y", b"1").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.read(NO_TX, "/w/x").unwrap();
    assert_eq!(
        c.read_watch(Duration::from_secs(2)).unwrap().unwrap().path,
        "/w/y"
    );
    c.unwatch("/w", "tok").unwrap();
    other.write(NO_TX, "/w/z", b"1").unwrap();
    assert_eq!(c.read_watch(Duration::from_millis(200)).unwrap(), None);
}

/// A fake xenstored that answers each request with `reply(request)`.
fn fake_server(
    dir: &Path,
    reply: impl Fn(&Message) -> Option<Vec<u8>> + Send + 'static,
) -> std::path::PathBuf {
    let sock = dir.join("fake.sock");
    let l = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = l.accept() {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                while let Ok(Some((m, used))) = Message::decode(&buf) {
                    buf.drain(..used);
                    match reply(&m) {
                        Some(bytes) if bytes.is_empty() => return, // close everything
                        Some(bytes) => {
                            let _ = s.write_all(&bytes);
                        }
                        None => {}
                    }
                }
            }
        }
    });
    sock
}

fn frame(ty: u32, req_id: u32, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Header {
        msg_type: ty,
        req_id,
        tx_id: 0,
        len,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

/// A scratch directory removed when dropped (with the fake server's socket).
struct Tmp(std::path::PathBuf);
impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(tag: &str) -> Tmp {
    Tmp(xsd::temp_dir(tag))
}

#[test]
fn a_server_that_closes_the_connection_gives_an_error_not_a_hang() {
    let dir = tmp("close");
    let sock = fake_server(&dir, |_| Some(Vec::new()));
    let c = XsClient::connect(&sock, Duration::from_secs(5)).unwrap();
    let t = Instant::now();
    let e = c.read(NO_TX, "/x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    assert!(e.to_string().contains("closed"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_silent_server_times_out() {
    let dir = tmp("silent");
    let sock = fake_server(&dir, |_| None);
    let c = XsClient::connect(&sock, Duration::from_millis(300)).unwrap();
    let t = Instant::now();
    let e = c.read(NO_TX, "/x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn oversized_and_mismatched_replies_are_refused() {
    let dir = tmp("big");
    let sock = fake_server(&dir, |m| {
        Some(frame(MsgType::Read as u32, m.req_id, 100_000, b""))
    });
    let c = XsClient::connect(&sock, Duration::from_secs(2)).unwrap();
    let e = c.read(NO_TX, "/x").unwrap_err();
    assert!(e.to_string().contains("exceeds"), "{e}");

    let dir = tmp("wrongid");
    let sock = fake_server(&dir, |m| {
        Some(frame(MsgType::Read as u32, m.req_id + 1000, 1, b"x"))
    });
    let c = XsClient::connect(&sock, Duration::from_secs(2)).unwrap();
    let e = c.read(NO_TX, "/x").unwrap_err();
    assert!(e.to_string().contains("request id"), "{e}");

    let dir = tmp("wrongtype");
    let sock = fake_server(&dir, |m| {
        Some(frame(MsgType::Write as u32, m.req_id, 3, b"OK\0"))
    });
    let c = XsClient::connect(&sock, Duration::from_secs(2)).unwrap();
    assert_eq!(c.read(NO_TX, "/x").unwrap_err().kind(), ErrorKind::Store);

    let dir = tmp("errname");
    let sock = fake_server(&dir, |m| {
        Some(frame(MsgType::Error as u32, m.req_id, 7, b"EWHAT?\0"))
    });
    let c = XsClient::connect(&sock, Duration::from_secs(2)).unwrap();
    let e = c.read(NO_TX, "/x").unwrap_err();
    assert!(e.to_string().contains("EWHAT?"), "{e}");
}

#[test]
fn connection_refused_or_missing_socket_is_a_clear_error() {
    let e = XsClient::connect(
        Path::new("/nonexistent/xenstored.sock"),
        Duration::from_secs(1),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("/nonexistent/xenstored.sock"), "{e}");
}

#[test]
fn thousands_of_connections_are_served() {
    let d = Daemon::start();
    let clients: Vec<XsClient> = (0..2000).map(|_| client(&d)).collect();
    for (i, c) in clients.iter().enumerate().step_by(97) {
        c.write(NO_TX, &format!("/many/{i}"), b"v").unwrap();
    }
    assert_eq!(
        clients[0].directory(NO_TX, "/many").unwrap().unwrap().len(),
        21
    );
}

/// A transaction started early (in the round trip of an earlier request)
/// is used for the outcome's writes; when the backend is removed between
/// its start and those writes, the writes must not bring the backend back:
/// the early attempt conflicts or sees it gone, and the fresh attempt sees
/// it gone. And when the early id means nothing to xenstored, a fresh
/// transaction does the work.
#[test]
fn an_early_transaction_never_brings_back_a_removed_backend() {
    let d = Daemon::start();
    let c = client(&d);
    let other = client(&d);
    let be = "/local/domain/0/backend/vbd/9/51712";
    let writes = vec![(format!("{be}/hotplug-status"), b"connected".to_vec())];
    let outcome = |tx| {
        store::with_transaction_from(&c, 3, tx, |t| {
            if c.write_if_present(t, be, &writes)? {
                Ok(())
            } else {
                Err(xenblock::Error::BadState(format!("{be} is gone")))
            }
        })
    };
    // Removed after the early start, before the writes.
    c.write(NO_TX, &format!("{be}/state"), b"2").unwrap();
    let tx = c
        .write_starting_tx("/tool/xenblock-sentinel", b"1")
        .unwrap();
    assert!(tx.is_some(), "no transaction started with the write");
    other.remove(NO_TX, be).unwrap();
    let e = outcome(tx).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadState, "{e}");
    assert_eq!(c.read(NO_TX, be).unwrap(), None, "the backend came back");
    // Present all along: the early transaction commits the writes.
    c.write(NO_TX, &format!("{be}/state"), b"2").unwrap();
    let (lists, tx) = c
        .directory_many_starting_tx(&["/local/domain/0/backend/vbd".to_string()])
        .unwrap();
    assert_eq!(lists, vec![Some(vec!["9".to_string()])]);
    outcome(tx).unwrap();
    assert_eq!(
        c.read(NO_TX, &format!("{be}/hotplug-status"))
            .unwrap()
            .as_deref(),
        Some(&b"connected"[..])
    );
    // An id xenstored does not know: a fresh transaction writes.
    other
        .remove(NO_TX, &format!("{be}/hotplug-status"))
        .unwrap();
    outcome(Some(987_654)).unwrap();
    assert_eq!(
        c.read(NO_TX, &format!("{be}/hotplug-status"))
            .unwrap()
            .as_deref(),
        Some(&b"connected"[..])
    );
}

/// A `read_each` whose connection breaks half-way is sent again on a fresh
/// connection (outside a transaction, reads are harmless to repeat): the
/// caller hears the values that came, then `Again`, then every value; a
/// missing node comes as `None`.
#[test]
fn read_each_starts_again_when_the_connection_breaks() {
    let dir = tmp("again");
    let sock = dir.join("again.sock");
    let l = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        // The first connection answers two requests and closes; the
        // second answers everything.
        for (n, answers) in [(1, 2usize), (2, usize::MAX)] {
            let Ok((mut s, _)) = l.accept() else { return };
            let (mut buf, mut chunk, mut answered) = (Vec::new(), [0u8; 4096], 0);
            'conn: loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
                while let Ok(Some((m, used))) = Message::decode(&buf) {
                    buf.drain(..used);
                    if answered == answers {
                        break 'conn;
                    }
                    let path = String::from_utf8_lossy(&m.payload)
                        .trim_end_matches('\0')
                        .to_string();
                    let reply = if path.ends_with("/3") {
                        frame(MsgType::Error as u32, m.req_id, 7, b"ENOENT\0")
                    } else {
                        let v = format!("{path}@{n}");
                        frame(MsgType::Read as u32, m.req_id, v.len() as u32, v.as_bytes())
                    };
                    s.write_all(&reply).unwrap();
                    answered += 1;
                }
            }
        }
    });
    let c = XsClient::connect(&sock, Duration::from_secs(5)).unwrap();
    let paths: Vec<String> = (0..5).map(|i| format!("/p/{i}")).collect();
    let mut heard = Vec::new();
    c.read_each(NO_TX, &paths, &mut |e| {
        heard.push(match e {
            store::Each::Value(i, v) => format!(
                "{i}={}",
                v.map_or("-".into(), |v| String::from_utf8_lossy(v).into_owned())
            ),
            store::Each::Again => "again".into(),
        })
    })
    .unwrap();
    assert_eq!(
        heard,
        ["0=/p/0@1", "1=/p/1@1", "again", "0=/p/0@2", "1=/p/1@2", "2=/p/2@2", "3=-", "4=/p/4@2"]
    );
}
