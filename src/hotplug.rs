//! Spawning custom hotplug scripts (block-iscsi, block-drbd-probe, site
//! scripts) with each OS's invocation contract, as libxl does.
//!
//! The contracts (from libxl's `libxl_linux.c`, `libxl_freebsd.c` and
//! `libxl_netbsd.c`, `libxl__get_hotplug_script_info`):
//!
//! | flavour | argv                                 | added environment |
//! |---------|--------------------------------------|-------------------|
//! | Linux   | `script add\|remove`                 | `script`, `XENBUS_TYPE=vbd`, `XENBUS_PATH`, `XENBUS_BASE_PATH=backend` |
//! | FreeBSD | `script <backend path> add\|remove`  | none |
//! | NetBSD  | `script <backend path> 2\|6`         | none (2 = InitWait on add, 6 = Closed on remove) |
//!
//! [`run`] executes the script directly (never through a shell) in its own
//! process group, with stdin on `/dev/null`, captures the tail of stdout and
//! stderr, and enforces a timeout by killing the whole group. The script is
//! done when it exits: whatever it left running in its process group is
//! killed then too.
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::sys::child::Child;

/// At most this many bytes of each of stdout and stderr are kept (the tail).
///
/// cbindgen:ignore
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long a script gets between SIGTERM and SIGKILL after its timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long output is still read after the script exited (a grandchild may
/// hold the pipes open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);
/// How often the child is checked for exit while no output arrives.
const POLL_TICK: Duration = Duration::from_millis(20);
/// A line longer than this is passed to the log callback in pieces.
const MAX_LOG_LINE: usize = 4096;
/// At most this many bytes of stderr end up in [`failure_message`].
const MESSAGE_TAIL: usize = 500;

/// The invocation contract of a hotplug script, per operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScriptFlavour {
    /// `[script, add|remove]` with `script`, `XENBUS_TYPE`, `XENBUS_PATH`,
    /// `XENBUS_BASE_PATH` in the environment.
    Linux,
    /// `[script, backend_path, add|remove]`, no added environment.
    FreeBsd,
    /// `[script, backend_path, 2|6]` (XenbusState InitWait / Closed), no added
    /// environment.
    NetBsd,
}

/// Everything needed to start one hotplug script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The executable (the resolved script path).
    pub program: PathBuf,
    /// The full argument vector; `argv[0]` is the program path.
    pub argv: Vec<OsString>,
    /// Only the variables added to the caller's environment.
    pub env: Vec<(OsString, OsString)>,
}

/// What a finished script left behind. A non-zero exit is not an error of
/// [`run`]; the caller decides (see [`failure_message`]).
#[derive(Debug, Clone)]
pub struct ScriptOutput {
    /// How the script ended; `None` when the host process reaped it first
    /// (`SIGCHLD` ignored, or its own `waitpid(-1)`), so that its status is
    /// lost (the caller then judges by what the script wrote to xenstore).
    pub status: Option<ExitStatus>,
    /// The last (at most [`OUTPUT_LIMIT`]) bytes of its standard output.
    pub stdout: Vec<u8>,
    /// The last (at most [`OUTPUT_LIMIT`]) bytes of its standard error.
    pub stderr: Vec<u8>,
    /// True when either stream produced more than [`OUTPUT_LIMIT`] bytes and
    /// its beginning was dropped.
    pub truncated: bool,
}

/// Validate a script name and find the script.
///
/// Relative names resolve under `script_dir` and may not contain `..`;
/// absolute names are used as given. The result exists, is a regular file
/// (after following symlinks) and has at least one execute bit.
pub fn resolve_script(script_dir: &Path, script: &str) -> Result<PathBuf> {
    if script.is_empty() {
        return Err(Error::InvalidArgument(
            "the hotplug script name is empty".to_string(),
        ));
    }
    if script.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "the hotplug script name {:?} contains a NUL byte",
            script
        )));
    }
    if script.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "the hotplug script name {:?} contains control characters (newline, tab...); \
             give a plain file name or path",
            script
        )));
    }
    let name = Path::new(script);
    let path = if name.is_absolute() {
        name.to_path_buf()
    } else {
        if name.components().any(|c| c == Component::ParentDir) {
            return Err(Error::InvalidArgument(format!(
                "the hotplug script name {:?} contains a \"..\" component; relative names \
                 must stay inside the script directory {}",
                script,
                script_dir.display()
            )));
        }
        if script_dir.as_os_str().as_bytes().contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "the hotplug script directory {:?} contains a NUL byte",
                script_dir
            )));
        }
        // An empty directory means the current one; never let a bare name
        // reach a PATH search.
        let dir = if script_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            script_dir
        };
        dir.join(name)
    };
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Err(Error::NotFound(format!(
                "hotplug script {} does not exist",
                path.display()
            )));
        }
        Err(e) => {
            return Err(Error::io(
                format!("cannot examine hotplug script {}", path.display()),
                e,
            ))
        }
    };
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "hotplug script {} is not a regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(Error::InvalidArgument(format!(
            "hotplug script {} is not executable (mode {:04o}); chmod +x it",
            path.display(),
            mode
        )));
    }
    Ok(path)
}

/// Build the invocation of `script` for `flavour`: resolve it (see
/// [`resolve_script`]) and lay out argv and environment the way libxl does on
/// that operating system. `backend_path` is passed exactly as given.
pub fn invocation(
    flavour: ScriptFlavour,
    script_dir: &Path,
    script: &str,
    backend_path: &str,
    add: bool,
) -> Result<Invocation> {
    if backend_path.is_empty() {
        return Err(Error::InvalidArgument(
            "the backend path for the hotplug script is empty".to_string(),
        ));
    }
    if backend_path.contains('\0') || backend_path.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "the backend path {:?} contains NUL or control characters",
            backend_path
        )));
    }
    let program = resolve_script(script_dir, script)?;
    let prog = program.clone().into_os_string();
    let action = if add { "add" } else { "remove" };
    let (argv, env): (Vec<OsString>, Vec<(OsString, OsString)>) = match flavour {
        ScriptFlavour::Linux => (
            vec![prog.clone(), action.into()],
            vec![
                ("script".into(), prog),
                ("XENBUS_TYPE".into(), "vbd".into()),
                ("XENBUS_PATH".into(), backend_path.into()),
                ("XENBUS_BASE_PATH".into(), "backend".into()),
            ],
        ),
        ScriptFlavour::FreeBsd => (vec![prog, backend_path.into(), action.into()], Vec::new()),
        ScriptFlavour::NetBsd => {
            // XenbusStateInitWait = 2, XenbusStateClosed = 6.
            let state = if add { "2" } else { "6" };
            (vec![prog, backend_path.into(), state.into()], Vec::new())
        }
    };
    Ok(Invocation { program, argv, env })
}

/// "add"/"remove" for messages, from the last argument of an invocation.
fn action_label(argv: &[OsString]) -> String {
    match argv.last().map(|a| a.to_string_lossy().into_owned()) {
        Some(a) if a == "add" || a == "2" => "add".to_string(),
        Some(a) if a == "remove" || a == "6" => "remove".to_string(),
        Some(a) if argv.len() > 1 => a,
        _ => "no action".to_string(),
    }
}

/// Format a duration the way people write it: `40s`, `1.5s`, `500ms`.
fn human_duration(d: Duration) -> String {
    format!("{:?}", d)
}

/// One captured stream: the tail buffer and the partial line for the log.
struct Capture {
    is_stderr: bool,
    tail: Vec<u8>,
    truncated: bool,
    line: Vec<u8>,
}

impl Capture {
    fn new(is_stderr: bool) -> Capture {
        Capture {
            is_stderr,
            tail: Vec::new(),
            truncated: false,
            line: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8], log: &dyn Fn(bool, &str)) {
        self.tail.extend_from_slice(data);
        // Compact lazily so that keeping the tail costs O(1) per byte.
        if self.tail.len() > 2 * OUTPUT_LIMIT {
            self.compact();
        }
        for &b in data {
            if b == b'\n' {
                self.emit_line(log);
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LOG_LINE {
                    self.emit_line(log);
                }
            }
        }
    }

    fn emit_line(&mut self, log: &dyn Fn(bool, &str)) {
        let mut l = &self.line[..];
        if let Some(stripped) = l.strip_suffix(b"\r") {
            l = stripped;
        }
        log(self.is_stderr, &String::from_utf8_lossy(l));
        self.line.clear();
    }

    fn compact(&mut self) {
        if self.tail.len() > OUTPUT_LIMIT {
            let excess = self.tail.len() - OUTPUT_LIMIT;
            self.tail.drain(..excess);
            self.truncated = true;
        }
    }

    fn finish(&mut self, log: &dyn Fn(bool, &str)) {
        if !self.line.is_empty() {
            self.emit_line(log);
        }
        self.compact();
    }
}

/// The pipes of a running script and what has been read from them.
struct Streams {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out: Capture,
    err: Capture,
    buf: Vec<u8>,
}

impl Streams {
    fn open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    /// Wait at most `wait` for output and read what is available. Without
    /// open pipes, just sleeps for `wait`.
    fn pump(&mut self, wait: Duration, log: &dyn Fn(bool, &str)) {
        if !self.open() {
            std::thread::sleep(wait);
            return;
        }
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let (ready_out, ready_err) = {
            let mut fds = Vec::with_capacity(2);
            if let Some(s) = &self.stdout {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            if let Some(s) = &self.stderr {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, ms) {
                Ok(_) => {}
                Err(Errno::EINTR) => return,
                Err(_) => {
                    // Should not happen with valid descriptors; avoid a busy loop.
                    std::thread::sleep(wait);
                    return;
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let mut it = fds.iter();
            let o = if self.stdout.is_some() {
                it.next().is_some_and(ready)
            } else {
                false
            };
            let e = if self.stderr.is_some() {
                it.next().is_some_and(ready)
            } else {
                false
            };
            (o, e)
        };
        if ready_out {
            if let Some(mut s) = self.stdout.take() {
                if read_once(&mut s, &mut self.buf, &mut self.out, log) {
                    self.stdout = Some(s);
                }
            }
        }
        if ready_err {
            if let Some(mut s) = self.stderr.take() {
                if read_once(&mut s, &mut self.buf, &mut self.err, log) {
                    self.stderr = Some(s);
                }
            }
        }
    }
}

/// One read from a pipe that poll reported ready. Returns false at end of
/// file or on a read error (the pipe is then closed).
fn read_once(
    pipe: &mut impl Read,
    buf: &mut [u8],
    cap: &mut Capture,
    log: &dyn Fn(bool, &str),
) -> bool {
    loop {
        match pipe.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                cap.push(&buf[..n], log);
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Start the child, retrying briefly on ETXTBSY (another thread of this
/// process may have forked while it held the script open for writing).
fn spawn(inv: &Invocation) -> io::Result<std::process::Child> {
    let mut cmd = Command::new(&inv.program);
    cmd.arg0(&inv.argv[0])
        .args(&inv.argv[1..])
        .envs(inv.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 10 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

fn check_invocation(inv: &Invocation) -> Result<()> {
    if inv.argv.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the invocation of hotplug script {} has no argv[0]",
            inv.program.display()
        )));
    }
    let has_nul = |s: &OsStr| s.as_bytes().contains(&0);
    if has_nul(inv.program.as_os_str()) || inv.argv.iter().any(|a| has_nul(a)) {
        return Err(Error::InvalidArgument(format!(
            "the invocation of hotplug script {} contains a NUL byte",
            inv.program.display()
        )));
    }
    for (k, v) in &inv.env {
        if k.is_empty() || has_nul(k) || k.as_bytes().contains(&b'=') || has_nul(v) {
            return Err(Error::InvalidArgument(format!(
                "the environment variable {:?} for hotplug script {} is malformed",
                k,
                inv.program.display()
            )));
        }
    }
    Ok(())
}

/// Run a hotplug script and wait for it, at most `timeout`.
///
/// The script runs directly (no shell) in its own process group with the
/// caller's environment plus `inv.env`, stdin on `/dev/null`, and stdout and
/// stderr captured (tail of [`OUTPUT_LIMIT`] bytes each); every line is also
/// passed to `log(is_stderr, line)`.
///
/// When the script exits, output still buffered is read for a short moment
/// and then whatever is left of its process group is killed. On timeout the
/// group gets SIGTERM, a short grace, then SIGKILL, and the result is
/// [`Error::Timeout`]. The script is reaped here unless the host process
/// reaped it first (`SIGCHLD` ignored, or its own `waitpid(-1)`): its exit
/// is seen either way (a pidfd on Linux), its status is then unknown
/// ([`ScriptOutput::status`] is `None`), and its process group is signalled
/// only while the group id is provably still its own.
pub fn run(inv: &Invocation, timeout: Duration, log: &dyn Fn(bool, &str)) -> Result<ScriptOutput> {
    check_invocation(inv)?;
    let what = format!(
        "hotplug script {} ({})",
        inv.program.display(),
        action_label(&inv.argv)
    );
    let start = Instant::now();
    let child = spawn(inv).map_err(|e| Error::Script(format!("could not start {what}: {e}")))?;
    let mut child =
        Child::new(child).map_err(|e| Error::io(format!("cannot watch {what} (pidfd_open)"), e))?;
    let mut streams = Streams {
        stdout: child.std().stdout.take(),
        stderr: child.std().stderr.take(),
        out: Capture::new(false),
        err: Capture::new(true),
        buf: vec![0u8; 64 * 1024],
    };
    let deadline = start + timeout;

    let exited = loop {
        match child.exited() {
            Ok(true) => break true,
            Ok(false) => {}
            Err(e) => {
                // Cannot tell whether it runs: make sure it does not.
                child.signal_group(Signal::SIGKILL);
                let _ = child.reap();
                return Err(Error::io(format!("waiting for {what}"), e));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        streams.pump(POLL_TICK.min(deadline - now), log);
    };

    if !exited {
        child.signal_group(Signal::SIGTERM);
        let grace_end = Instant::now() + KILL_GRACE.min(timeout.max(POLL_TICK));
        loop {
            if !matches!(child.exited(), Ok(false)) {
                break;
            }
            let now = Instant::now();
            if now >= grace_end {
                break;
            }
            streams.pump(POLL_TICK.min(grace_end - now), log);
        }
        child.signal_group(Signal::SIGKILL);
        let _ = child.reap();
        return Err(Error::Timeout(format!(
            "{what} did not finish within {}; killed it and its process group",
            human_duration(timeout)
        )));
    }

    // The script is done; read what is already in the pipes (a grandchild
    // may keep them open for ever), then clear out its process group (only
    // while its zombie leader keeps the group id ours).
    let drain_end = Instant::now() + DRAIN_AFTER_EXIT;
    loop {
        let now = Instant::now();
        if !streams.open() || now >= drain_end {
            break;
        }
        streams.pump(drain_end - now, log);
    }
    child.signal_group(Signal::SIGKILL);
    let status = child
        .reap()
        .map_err(|e| Error::io(format!("reaping {what}"), e))?;
    // Dropping the pipes closes them; a straggler outside the group gets
    // EPIPE rather than blocking us.
    let Streams {
        mut out, mut err, ..
    } = streams;
    out.finish(log);
    err.finish(log);
    Ok(ScriptOutput {
        status,
        truncated: out.truncated || err.truncated,
        stdout: out.tail,
        stderr: err.tail,
    })
}

/// Describe how a process ended: "exited with status 1", "killed by signal 9 (SIGKILL)".
pub fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        }
    } else {
        format!("ended with wait status {}", status.into_raw())
    }
}

/// Replace control characters (newlines, escapes) by spaces and trim.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The last non-empty lines of `bytes`, at most [`MESSAGE_TAIL`] bytes,
/// joined with "; ". None when there is no non-blank line.
fn output_tail(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut picked: Vec<String> = Vec::new();
    let mut total = 0;
    for line in text.lines().rev() {
        let line = one_line(line);
        if line.is_empty() {
            continue;
        }
        let extra = line.len() + if picked.is_empty() { 0 } else { 2 };
        if total + extra > MESSAGE_TAIL {
            if picked.is_empty() {
                // A single over-long line: keep its end.
                let mut cut = line.len() - (MESSAGE_TAIL - 3);
                while !line.is_char_boundary(cut) {
                    cut += 1;
                }
                picked.push(format!("...{}", &line[cut..]));
            }
            break;
        }
        total += extra;
        picked.push(line);
    }
    if picked.is_empty() {
        None
    } else {
        picked.reverse();
        Some(picked.join("; "))
    }
}

/// A sentence saying why a script failed, for people.
///
/// Prefers the script's own `hotplug-error` (read from xenstore by the
/// caller), then the tail of its stderr (then of its stdout, which libxl
/// sends to stderr too), then how it ended.
pub fn failure_message(
    script: &Path,
    add: bool,
    out: &ScriptOutput,
    hotplug_error: Option<&str>,
) -> String {
    let prefix = format!(
        "hotplug script {} ({}) failed",
        script.display(),
        if add { "add" } else { "remove" }
    );
    let status = match &out.status {
        Some(s) => describe_status(s),
        None => "exit status unknown: the host process reaped it".to_string(),
    };
    if let Some(msg) = hotplug_error.map(one_line).filter(|m| !m.is_empty()) {
        return format!("{prefix} ({status}): {msg}");
    }
    if let Some(tail) = output_tail(&out.stderr).or_else(|| output_tail(&out.stdout)) {
        return format!("{prefix} ({status}): {tail}");
    }
    format!("{prefix}: {status}")
}
