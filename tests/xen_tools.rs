//! Xen's own tools against the embedded xenstored: `test-xenstore` and the
//! `xenstore-*` utilities from Debian 12's packages, through the real
//! `libxenstore`. The packages are fetched and unpacked (never installed)
//! by `scripts/xen-debs.sh`; the tools find our socket via `XENSTORED_PATH`.

#[path = "common/xsd.rs"]
mod xsd;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use xsd::Daemon;

/// The unpacked Debian root (fetched once per test binary).
fn debs_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/xen-debs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}); it needs `apt-get download` to reach Debian's \
             package archive. See its output above.",
            script.display(),
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let root = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
        assert!(
            root.join("usr/lib/xen-4.17/bin/test-xenstore").exists(),
            "{} printed {root:?}, which has no usr/lib/xen-4.17/bin/test-xenstore",
            script.display()
        );
        root
    })
}

/// The directory holding the unpacked `libxenstore.so.4` (the host's
/// multiarch dir, e.g. `usr/lib/x86_64-linux-gnu`).
fn lib_dir(root: &Path) -> PathBuf {
    std::fs::read_dir(root.join("usr/lib"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("libxenstore.so.4").exists())
        .expect("libxenstore.so.4 in the unpacked packages")
}

/// A Xen tool, set up to use our daemon and the unpacked libraries.
fn tool(d: &Daemon, rel: &str) -> Command {
    let root = debs_root();
    let mut c = Command::new(root.join(rel));
    c.env("XENSTORED_PATH", &d.socket)
        .env("LD_LIBRARY_PATH", lib_dir(root))
        .stdin(Stdio::null());
    c
}

fn xs(d: &Daemon, name: &str, args: &[&str]) -> Output {
    tool(d, &format!("usr/bin/xenstore-{name}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run xenstore-{name}: {e}"))
}

/// Run a `xenstore-*` tool that must succeed; its stdout.
fn xs_ok(d: &Daemon, name: &str, args: &[&str]) -> String {
    let o = xs(d, name, args);
    assert!(
        o.status.success(),
        "xenstore-{name} {args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn xen_test_xenstore_passes() {
    let d = Daemon::start();
    let list = tool(&d, "usr/lib/xen-4.17/bin/test-xenstore")
        .arg("--list-tests")
        .output()
        .unwrap();
    let n_tests = String::from_utf8_lossy(&list.stdout).lines().count();
    assert!(n_tests >= 12, "test-xenstore lists {n_tests} tests");

    for args in [&[][..], &["--iterations", "20"][..]] {
        let o = tool(&d, "usr/lib/xen-4.17/bin/test-xenstore")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && !stdout.contains("failed"),
            "test-xenstore {args:?}: {}\n{stdout}\n{stderr}",
            o.status
        );
        assert_eq!(
            stdout.lines().filter(|l| l.contains(" ns")).count(),
            n_tests
        );
        assert!(
            !stdout.contains("Exhaustive transaction retries"),
            "{stdout}"
        );
    }
    // It cleans up after itself.
    let mut c = d.client();
    assert_eq!(c.read(0, "xenstore-test").unwrap_err(), "ENOENT");
}

#[test]
fn xenstore_utilities_work() {
    let d = Daemon::start();
    xs_ok(&d, "write", &["/vm/a", "one", "/vm/b/c", "two words"]);
    assert_eq!(xs_ok(&d, "read", &["/vm/a", "/vm/b/c"]), "one\ntwo words\n");

    // Relative paths are under /local/domain/0.
    xs_ok(&d, "write", &["foo/bar", "baz"]);
    assert_eq!(xs_ok(&d, "read", &["/local/domain/0/foo/bar"]), "baz\n");
    let mut c = d.client();
    assert_eq!(c.read(0, "/local/domain/0/foo/bar").unwrap(), "baz");

    assert_eq!(xs_ok(&d, "list", &["/vm"]), "a\nb\n");
    let ls = xs_ok(&d, "ls", &["/vm"]);
    assert!(ls.contains("a = \"one\""), "{ls}");
    assert!(ls.contains(" c = \"two words\""), "{ls}");
    let full = xs_ok(&d, "ls", &["/"]);
    for want in [
        "tool = ",
        "local = ",
        " domain = ",
        "  0 = ",
        "    bar = \"baz\"",
    ] {
        assert!(full.contains(want), "missing {want:?} in\n{full}");
    }

    xs_ok(&d, "chmod", &["/vm/a", "r5", "b7"]);
    let perms = xs_ok(&d, "ls", &["-p", "/vm"]);
    assert!(perms.contains("(r5,b7)"), "{perms}");

    assert!(xs(&d, "exists", &["/vm/b/c"]).status.success());
    xs_ok(&d, "rm", &["/vm/b"]);
    assert!(!xs(&d, "exists", &["/vm/b/c"]).status.success());
    assert!(!xs(&d, "read", &["/vm/b/c"]).status.success());
    assert_eq!(xs_ok(&d, "list", &["/vm"]), "a\n");
    assert!(!xs(&d, "read", &["/bad path"]).status.success());

    // A directory too big for one reply goes through DIRECTORY_PART.
    let names: Vec<String> = (0..500)
        .map(|i| format!("a-long-child-name-{i:04}"))
        .collect();
    let tx = c.tx_start();
    for n in &names {
        c.write(tx, &format!("/big/{n}"), "").unwrap();
    }
    c.tx_end(tx, true).unwrap();
    assert_eq!(c.dir(0, "/big").unwrap_err(), "E2BIG");
    let listed = xs_ok(&d, "list", &["/big"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), names);
}

/// Ends a helper process when the test ends, passing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn xenstore_watch_sees_events() {
    let d = Daemon::start();
    let mut child = KillOnDrop(
        tool(&d, "usr/bin/xenstore-watch")
            .args(["-n", "2", "/watched"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The initial event, then ours.
    assert_eq!(lines.next().unwrap().unwrap(), "/watched");
    let mut c = d.client();
    c.write(0, "/watched/x", "1").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "/watched/x");
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "xenstore-watch hangs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
