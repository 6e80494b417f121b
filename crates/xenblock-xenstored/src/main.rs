//! `xenblock-xenstored`: a small, real xenstore daemon speaking xs_wire
//! over a Unix socket, for machines without Xen (demos, tests, benchmarks).
//! Xen's own `libxenstore` and `xenstore-*` tools work against it when
//! `XENSTORED_PATH` names its socket.
//!
//! ```text
//! xenblock-xenstored --socket PATH [--ready-fd N] [--pidfile FILE]
//!                    [--max-queued-bytes N]
//! ```
//!
//! Runs in the foreground. Creates the socket (replacing a stale one),
//! then writes the pid file, writes `ready\n` to fd N (if given) and prints
//! `ready` on stdout. Serves until SIGTERM or SIGINT, then removes the socket
//! and the pid file. A client that lets more than `--max-queued-bytes`
//! (default 8 MiB) of replies and watch events pile up unread is
//! disconnected, so it cannot hold the daemon's memory or other clients.
//!
//! Modules: [`tree`] is the database (pure), [`server`] the connections,
//! watches and transactions. Not part of `libxenblock.so`.

mod server;
mod tree;

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

struct Args {
    socket: PathBuf,
    ready_fd: Option<u32>,
    pidfile: Option<PathBuf>,
    max_queued: usize,
}

const USAGE: &str = "usage: xenblock-xenstored --socket PATH [--ready-fd N] [--pidfile FILE] \
                     [--max-queued-bytes N]";

fn parse_args() -> Result<Args, String> {
    let mut socket = None;
    let mut ready_fd = None;
    let mut pidfile = None;
    let mut max_queued = server::OUTBOX_LIMIT;
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .map(|v| v.to_string_lossy().into_owned())
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match key.as_str() {
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--ready-fd" => {
                let v = value("--ready-fd")?;
                ready_fd = Some(v.parse().map_err(|_| format!("bad --ready-fd {v:?}"))?);
            }
            "--pidfile" => pidfile = Some(PathBuf::from(value("--pidfile")?)),
            "--max-queued-bytes" => {
                let v = value("--max-queued-bytes")?;
                max_queued = v
                    .parse()
                    .map_err(|_| format!("bad --max-queued-bytes {v:?}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        socket: socket.ok_or("--socket is required")?,
        ready_fd,
        pidfile,
        max_queued,
    })
}

/// Bind the socket, replacing a stale one; refuse if a server answers there.
fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket", path.display()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!("{} is in use by a running server", path.display()));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))
}

/// Tell whoever waits that we are ready.
fn announce_ready(args: &Args) -> Result<(), String> {
    if let Some(p) = &args.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", p.display()))?;
    }
    if let Some(fd) = args.ready_fd {
        // Opening /proc/self/fd/N gives a new description of the same pipe
        // or file without taking ownership of the raw descriptor.
        let path = format!("/proc/self/fd/{fd}");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open --ready-fd {fd}: {e}"))?;
        f.write_all(b"ready\n")
            .map_err(|e| format!("cannot write to --ready-fd {fd}: {e}"))?;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    Ok(())
}

fn run() -> Result<(), String> {
    let args = parse_args().map_err(|e| format!("{e}\n{USAGE}"))?;

    // Block the stop signals in every thread; one thread waits for them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop), None)
        .map_err(|e| format!("cannot block signals: {e}"))?;

    let listener = bind(&args.socket)?;
    let socket = args.socket.clone();
    let pidfile = args.pidfile.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = stop.wait();
            let _ = std::fs::remove_file(&socket);
            if let Some(p) = pidfile {
                let _ = std::fs::remove_file(p);
            }
            match sig {
                Ok(s) => eprintln!("xenblock-xenstored: stopping on {s}"),
                Err(e) => eprintln!("xenblock-xenstored: stopping (sigwait: {e})"),
            }
            std::process::exit(0);
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    announce_ready(&args)?;

    let daemon = Arc::new(server::Daemon::new(args.max_queued));
    let pool = Pool::new(daemon);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = pool.hand(stream) {
                    eprintln!("xenblock-xenstored: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("xenblock-xenstored: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

/// Connection threads, kept for the next connection when a client leaves.
///
/// A connection is served by two threads (its reader, which runs requests,
/// and its writer); starting both for every connection cost each short
/// client (a `xenblock` CLI call, an `xenstore-read`) about as much
/// daemon CPU as its requests, and some latency before its first reply.
/// Xen's xenstored has no such cost (one thread polls every connection), so
/// the daemon keeps finished threads parked instead: a pair waits for the
/// next connection, and pairs are started only when none is idle. At most
/// [`Pool::MAX_IDLE`] pairs stay parked.
struct Pool {
    daemon: Arc<server::Daemon>,
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Queue {
    parked: parking_lot::Mutex<Parked>,
    ready: parking_lot::Condvar,
}

/// Connections handed over and not yet taken, and the readers waiting for one.
#[derive(Default)]
struct Parked {
    streams: std::collections::VecDeque<UnixStream>,
    idle: usize,
}

impl Pool {
    const MAX_IDLE: usize = 16;

    fn new(daemon: Arc<server::Daemon>) -> Pool {
        Pool {
            daemon,
            queue: Arc::default(),
        }
    }

    /// Serve `stream` on a parked pair, or on a new one.
    fn hand(&self, stream: UnixStream) -> std::io::Result<()> {
        let mut q = self.queue.parked.lock();
        if q.idle > q.streams.len() {
            q.streams.push_back(stream);
            self.queue.ready.notify_one();
            return Ok(());
        }
        drop(q);
        let (d, queue) = (self.daemon.clone(), self.queue.clone());
        let (to_writer, writer_jobs) = std::sync::mpsc::channel::<Arc<server::Outbox>>();
        let (flushed, wait_flushed) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("xs-out".into())
            .stack_size(128 << 10)
            .spawn(move || {
                for out in writer_jobs {
                    out.run_writer();
                    let _ = flushed.send(());
                }
            })?;
        std::thread::Builder::new()
            .name("xs-conn".into())
            .stack_size(1 << 20)
            .spawn(move || {
                let mut next = Some(stream);
                while let Some(stream) = next.take() {
                    let mut handed = false;
                    let writer = |out| {
                        handed = true;
                        to_writer.send(out).map_err(|_| {
                            std::io::Error::other("the connection's writer thread is gone")
                        })
                    };
                    if let Err(e) = d.serve(stream, writer) {
                        eprintln!("xenblock-xenstored: connection failed: {e}");
                    }
                    // The writer is free once it has flushed and closed
                    // this connection (a client that never reads keeps it,
                    // and this thread, as before).
                    if handed && wait_flushed.recv().is_err() {
                        break;
                    }
                    // Park for the next connection (or end: too many parked).
                    let mut q = queue.parked.lock();
                    if q.idle >= Pool::MAX_IDLE {
                        break;
                    }
                    q.idle += 1;
                    while q.streams.is_empty() {
                        queue.ready.wait(&mut q);
                    }
                    q.idle -= 1;
                    next = q.streams.pop_front();
                }
            })?;
        Ok(())
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenblock-xenstored: {e}");
            ExitCode::FAILURE
        }
    }
}
