//! Integration tests of `xenblock::hotplug`: invocation contracts, name
//! checks, timeouts, process-group handling and output capture.
use std::cell::RefCell;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use xenblock::hotplug::{
    failure_message, invocation, resolve_script, run, Invocation, ScriptFlavour, ScriptOutput,
    OUTPUT_LIMIT,
};
use xenblock::ErrorKind;

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "xenblock-hotplug-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn quiet(_: bool, _: &str) {}

/// A script that records its arguments, the Xen variables, stdin and
/// whether the caller's environment was kept, one per line.
fn recorder(dir: &Path) -> PathBuf {
    let out = dir.join("record");
    let body = r#"out='@OUT@'
: > "$out"
for a in "$0" "$@"; do printf 'arg=%s\n' "$a" >> "$out"; done
printf 'env script=%s\n' "${script-UNSET}" >> "$out"
printf 'env XENBUS_TYPE=%s\n' "${XENBUS_TYPE-UNSET}" >> "$out"
printf 'env XENBUS_PATH=%s\n' "${XENBUS_PATH-UNSET}" >> "$out"
printf 'env XENBUS_BASE_PATH=%s\n' "${XENBUS_BASE_PATH-UNSET}" >> "$out"
if read x; then echo stdin=data >> "$out"; else echo stdin=eof >> "$out"; fi
echo "PATH_KEPT=${PATH:+yes}" >> "$out"
"#;
    write_script(
        dir,
        "rec",
        &body.replace("@OUT@", &out.display().to_string()),
        0o755,
    );
    out
}

fn record_lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

#[test]
fn linux_invocation_contract() {
    let d = TempDir::new("linux");
    let rec = recorder(d.path());
    let be = "/local/domain/0/backend/vbd/5/51712";
    let inv = invocation(ScriptFlavour::Linux, d.path(), "rec", be, true).unwrap();
    let prog = d.path().join("rec");
    assert_eq!(
        inv,
        Invocation {
            program: prog.clone(),
            argv: vec![prog.clone().into(), "add".into()],
            env: vec![
                ("script".into(), prog.clone().into()),
                ("XENBUS_TYPE".into(), "vbd".into()),
                ("XENBUS_PATH".into(), be.into()),
                ("XENBUS_BASE_PATH".into(), "backend".into()),
            ],
        }
    );
    let out = run(&inv, Duration::from_secs(10), &quiet).unwrap();
    assert!(out.status.is_some_and(|s| s.success()), "{out:?}");
    let lines = record_lines(&rec);
    let p = prog.display();
    assert_eq!(
        lines,
        vec![
            format!("arg={p}"),
            "arg=add".to_string(),
            format!("env script={p}"),
            "env XENBUS_TYPE=vbd".to_string(),
            format!("env XENBUS_PATH={be}"),
            "env XENBUS_BASE_PATH=backend".to_string(),
            "stdin=eof".to_string(),
            "PATH_KEPT=yes".to_string(),
        ]
    );

    let inv = invocation(
        ScriptFlavour::Linux,
        d.path(),
        "rec",
        "backend/vbd/5/51712",
        false,
    )
    .unwrap();
    assert_eq!(inv.argv[1], "remove");
    assert!(inv
        .env
        .contains(&("XENBUS_PATH".into(), "backend/vbd/5/51712".into())));
}

#[test]
fn freebsd_invocation_contract() {
    let d = TempDir::new("freebsd");
    let rec = recorder(d.path());
    let be = "/local/domain/0/backend/vbd/5/51712";
    let prog = d.path().join("rec");
    let p = prog.display().to_string();
    for (add, action) in [(true, "add"), (false, "remove")] {
        let inv = invocation(ScriptFlavour::FreeBsd, d.path(), "rec", be, add).unwrap();
        assert_eq!(inv.program, prog);
        assert_eq!(inv.argv, os(&[&p, be, action]));
        assert!(inv.env.is_empty());
        let out = run(&inv, Duration::from_secs(10), &quiet).unwrap();
        assert!(out.status.is_some_and(|s| s.success()));
        let lines = record_lines(&rec);
        assert_eq!(
            lines,
            vec![
                format!("arg={p}"),
                format!("arg={be}"),
                format!("arg={action}"),
                "env script=UNSET".to_string(),
                "env XENBUS_TYPE=UNSET".to_string(),
                "env XENBUS_PATH=UNSET".to_string(),
                "env XENBUS_BASE_PATH=UNSET".to_string(),
                "stdin=eof".to_string(),
                "PATH_KEPT=yes".to_string(),
            ]
        );
    }
}

#[test]
fn netbsd_invocation_contract() {
    let d = TempDir::new("netbsd");
    let rec = recorder(d.path());
    let be = "/local/domain/0/backend/vbd/5/51712";
    let prog = d.path().join("rec");
    let p = prog.display().to_string();
    for (add, state) in [(true, "2"), (false, "6")] {
        let inv = invocation(ScriptFlavour::NetBsd, d.path(), "rec", be, add).unwrap();
        assert_eq!(inv.argv, os(&[&p, be, state]));
        assert!(inv.env.is_empty());
        let out = run(&inv, Duration::from_secs(10), &quiet).unwrap();
        assert!(out.status.is_some_and(|s| s.success()));
        let lines = record_lines(&rec);
        assert_eq!(
            &lines[..3],
            &[
                format!("arg={p}"),
                format!("arg={be}"),
                format!("arg={state}")
            ]
        );
        assert_eq!(lines[3], "env script=UNSET");
        assert_eq!(lines[6], "env XENBUS_BASE_PATH=UNSET");
    }
}

#[test]
fn relative_and_absolute_resolution() {
    let d = TempDir::new("resolve");
    fs::create_dir(d.path().join("sub")).unwrap();
    let s = write_script(&d.path().join("sub"), "block-x", "exit 0\n", 0o755);
    assert_eq!(resolve_script(d.path(), "sub/block-x").unwrap(), s);
    assert_eq!(resolve_script(&d.path().join("sub"), "block-x").unwrap(), s);
    assert_eq!(
        resolve_script(d.path(), "./sub/block-x").unwrap(),
        d.path().join("./sub/block-x")
    );
    // Absolute names are used as given, whatever the script directory.
    assert_eq!(
        resolve_script(Path::new("/nonexistent"), s.to_str().unwrap()).unwrap(),
        s
    );
    // A symlink to an executable file is fine.
    std::os::unix::fs::symlink(&s, d.path().join("link")).unwrap();
    assert_eq!(
        resolve_script(d.path(), "link").unwrap(),
        d.path().join("link")
    );

    for bad in ["../sub/block-x", "sub/../sub/block-x", ".."] {
        let e = resolve_script(&d.path().join("sub"), bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
        assert!(e.to_string().contains(".."), "{e}");
    }
}

#[test]
fn bad_names_refused_before_running() {
    let d = TempDir::new("refuse");
    let marker = d.path().join("ran");
    let body = format!("touch '{}'\n", marker.display());
    write_script(d.path(), "good", &body, 0o755);
    write_script(d.path(), "noexec", &body, 0o644);
    fs::create_dir(d.path().join("adir")).unwrap();
    let be = "backend/vbd/1/768";
    let cases: &[(&str, ErrorKind, &str)] = &[
        ("", ErrorKind::InvalidArgument, "empty"),
        ("go\0od", ErrorKind::InvalidArgument, "NUL"),
        ("good\n", ErrorKind::InvalidArgument, "control"),
        ("go\nod", ErrorKind::InvalidArgument, "control"),
        ("good\t", ErrorKind::InvalidArgument, "control"),
        ("missing", ErrorKind::NotFound, "does not exist"),
        ("noexec", ErrorKind::InvalidArgument, "chmod +x"),
        ("adir", ErrorKind::InvalidArgument, "not a regular file"),
        ("../good", ErrorKind::InvalidArgument, ".."),
    ];
    for flavour in [
        ScriptFlavour::Linux,
        ScriptFlavour::FreeBsd,
        ScriptFlavour::NetBsd,
    ] {
        for (name, kind, needle) in cases {
            let e = invocation(flavour, d.path(), name, be, true).unwrap_err();
            assert_eq!(e.kind(), *kind, "{name:?}: {e}");
            assert!(e.to_string().contains(needle), "{name:?}: {e}");
        }
    }
    let e = resolve_script(d.path(), "noexec").unwrap_err();
    assert!(e.to_string().contains("mode 0644"), "{e}");
    let e = resolve_script(d.path(), "missing").unwrap_err();
    assert!(
        e.to_string()
            .contains(&d.path().join("missing").display().to_string()),
        "{e}"
    );
    assert!(!marker.exists(), "a refused script ran");
    // The good one does run (the marker check above is meaningful).
    let inv = invocation(ScriptFlavour::Linux, d.path(), "good", be, true).unwrap();
    run(&inv, Duration::from_secs(10), &quiet).unwrap();
    assert!(marker.exists());
}

fn pid_from(p: &Path) -> Pid {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok(s) = fs::read_to_string(p) {
            if let Ok(n) = s.trim().parse::<i32>() {
                return Pid::from_raw(n);
            }
        }
        assert!(Instant::now() < deadline, "no pid in {}", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True once `pid` no longer runs. A killed grandchild is reparented to
/// init, which may leave it a zombie for a moment (or for ever in a
/// container without a reaping init): a zombie counts as gone.
fn gone(pid: Pid) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match kill(pid, None) {
            Err(Errno::ESRCH) => return true,
            _ => {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                if state.starts_with('Z') || stat.is_empty() {
                    return true;
                }
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn timeout_kills_script_that_ignores_sigterm() {
    let d = TempDir::new("timeout");
    let pidf = d.path().join("pid");
    write_script(
        d.path(),
        "stubborn",
        &format!(
            "trap '' TERM\necho $$ > '{}'\necho started\nsleep 30\n",
            pidf.display()
        ),
        0o755,
    );
    let inv = invocation(
        ScriptFlavour::Linux,
        d.path(),
        "stubborn",
        "backend/vbd/1/768",
        true,
    )
    .unwrap();
    let t0 = Instant::now();
    let e = run(&inv, Duration::from_secs(1), &quiet).unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("stubborn"), "{msg}");
    assert!(msg.contains("(add)"), "{msg}");
    assert!(msg.contains("within 1s"), "{msg}");
    assert!(msg.contains("process group"), "{msg}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(took >= Duration::from_secs(1), "took {took:?}");
    // The script was reaped by run: its pid is gone entirely (not a zombie).
    let pid = pid_from(&pidf);
    assert_eq!(kill(pid, None), Err(Errno::ESRCH));
}

#[test]
fn timeout_message_for_netbsd_remove() {
    let d = TempDir::new("timeout-nb");
    write_script(d.path(), "slow", "exec sleep 30\n", 0o755);
    let inv = invocation(
        ScriptFlavour::NetBsd,
        d.path(),
        "slow",
        "/local/domain/0/backend/vbd/1/768",
        false,
    )
    .unwrap();
    let e = run(&inv, Duration::from_millis(300), &quiet).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.to_string().contains("(remove)"), "{e}");
    assert!(e.to_string().contains("300ms"), "{e}");
}

#[test]
fn grandchild_holding_stdout_does_not_block() {
    let d = TempDir::new("grandchild");
    let pidf = d.path().join("gcpid");
    write_script(
        d.path(),
        "bg",
        &format!(
            "sleep 60 &\necho $! > '{}'\necho done\nexit 0\n",
            pidf.display()
        ),
        0o755,
    );
    let inv = invocation(
        ScriptFlavour::FreeBsd,
        d.path(),
        "bg",
        "/local/domain/0/backend/vbd/1/768",
        true,
    )
    .unwrap();
    let t0 = Instant::now();
    let out = run(&inv, Duration::from_secs(20), &quiet).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(out.status.is_some_and(|s| s.success()), "{out:?}");
    assert_eq!(out.stdout, b"done\n");
    let gc = pid_from(&pidf);
    assert!(gone(gc), "grandchild {gc} still runs");
}

#[test]
fn output_capture_keeps_tail_and_logs_lines() {
    let d = TempDir::new("capture");
    // 1 MiB of "x" to stderr in 64-byte lines, then a last line; a little
    // to stdout, its last line without a newline.
    write_script(
        d.path(),
        "noisy",
        "echo out-1\n\
         printf 'out-2'\n\
         { head -c 1048576 /dev/zero | tr '\\0' x | fold -w 64; echo; } >&2\n\
         echo last-line >&2\n\
         exit 3\n",
        0o755,
    );
    let inv = invocation(
        ScriptFlavour::Linux,
        d.path(),
        "noisy",
        "backend/vbd/1/768",
        true,
    )
    .unwrap();
    let lines: RefCell<(Vec<String>, usize)> = RefCell::new((Vec::new(), 0));
    let log = |is_err: bool, l: &str| {
        let mut g = lines.borrow_mut();
        if is_err {
            g.1 += 1;
            assert!(!l.contains('\n'));
        } else {
            g.0.push(l.to_string());
        }
    };
    let out = run(&inv, Duration::from_secs(15), &log).unwrap();
    assert_eq!(out.status.and_then(|s| s.code()), Some(3));
    assert!(out.truncated);
    assert!(out.stderr.len() <= OUTPUT_LIMIT);
    assert!(out.stderr.len() > OUTPUT_LIMIT - 100);
    assert!(out.stderr.ends_with(b"x\nlast-line\n"), "tail kept");
    assert_eq!(out.stdout, b"out-1\nout-2");
    let g = lines.borrow();
    assert_eq!(g.0, vec!["out-1".to_string(), "out-2".to_string()]);
    assert!(g.1 > 16_000, "{} stderr lines logged", g.1);
    let msg = failure_message(&inv.program, true, &out, None);
    assert!(msg.ends_with("last-line"), "{msg}");
    assert!(msg.contains("exited with status 3"), "{msg}");
    assert!(msg.len() < 800, "{msg}");
}

#[test]
fn small_output_not_truncated_and_nonzero_exit_is_ok() {
    let d = TempDir::new("small");
    write_script(
        d.path(),
        "fail",
        "echo 'oops: no such LUN' >&2\nexit 1\n",
        0o755,
    );
    let inv = invocation(
        ScriptFlavour::Linux,
        d.path(),
        "fail",
        "backend/vbd/1/768",
        false,
    )
    .unwrap();
    let out = run(&inv, Duration::from_secs(10), &quiet).unwrap();
    assert!(!out.truncated);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1));
    assert_eq!(out.stderr, b"oops: no such LUN\n");
}

#[test]
fn spawn_failure_is_script_error() {
    let d = TempDir::new("spawn");
    // Executable, but not something the kernel can run.
    let p = d.path().join("garbage");
    fs::write(&p, b"\x7fELF not really").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    let inv = invocation(
        ScriptFlavour::Linux,
        d.path(),
        "garbage",
        "backend/vbd/1/768",
        true,
    )
    .unwrap();
    let e = run(&inv, Duration::from_secs(5), &quiet).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Script, "{e}");
    assert!(e.to_string().contains("could not start"), "{e}");
    assert!(e.to_string().contains("garbage"), "{e}");
}

fn output(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> ScriptOutput {
    ScriptOutput {
        status: Some(status),
        stdout: stdout.to_vec(),
        stderr: stderr.to_vec(),
        truncated: false,
    }
}

#[test]
fn failure_message_preference_order() {
    let script = Path::new("/etc/xen/scripts/block-iscsi");
    let exit2 = ExitStatus::from_raw(2 << 8);
    let killed = ExitStatus::from_raw(9);
    let out = output(exit2, b"stdout words\n", b"first\n\nsecond error line\n\n");

    // 1. hotplug-error wins.
    let m = failure_message(script, true, &out, Some("iSCSI login failed\n"));
    assert_eq!(
        m,
        "hotplug script /etc/xen/scripts/block-iscsi (add) failed (exited with status 2): \
         iSCSI login failed"
    );
    // A blank hotplug-error does not count.
    let m = failure_message(script, true, &out, Some("  "));
    assert!(m.ends_with("first; second error line"), "{m}");

    // 2. stderr tail: the last non-empty lines.
    let m = failure_message(script, false, &out, None);
    assert_eq!(
        m,
        "hotplug script /etc/xen/scripts/block-iscsi (remove) failed (exited with status 2): \
         first; second error line"
    );
    // Bounded to 500 bytes, keeping the end.
    let long: Vec<u8> = (0..40)
        .flat_map(|i| format!("line {i:02} {}\n", "y".repeat(40)).into_bytes())
        .collect();
    let m = failure_message(script, true, &output(exit2, b"", &long), None);
    let detail = m.split_once("): ").unwrap().1;
    assert!(detail.len() <= 500, "{}", detail.len());
    assert!(
        detail.ends_with(&format!("line 39 {}", "y".repeat(40))),
        "{detail}"
    );
    assert!(!detail.contains("line 00"));
    let one_long = "z".repeat(2000);
    let m = failure_message(script, true, &output(exit2, b"", one_long.as_bytes()), None);
    let detail = m.split_once("): ").unwrap().1;
    assert!(detail.len() <= 500 && detail.ends_with("zzz"), "{detail}");

    // 3. then stdout (libxl merges it into stderr), then the status.
    let m = failure_message(
        script,
        true,
        &output(exit2, b"from stdout\n", b"\n \n"),
        None,
    );
    assert!(m.ends_with("(exited with status 2): from stdout"), "{m}");
    let m = failure_message(script, true, &output(exit2, b"", b""), None);
    assert_eq!(
        m,
        "hotplug script /etc/xen/scripts/block-iscsi (add) failed: exited with status 2"
    );
    let m = failure_message(script, true, &output(killed, b"", b""), None);
    assert_eq!(
        m,
        "hotplug script /etc/xen/scripts/block-iscsi (add) failed: killed by signal 9 (SIGKILL)"
    );
}
