//! Running Xen's own Linux `block` hotplug script (Debian 12's Xen 4.17
//! `xen-utils-common`, unpacked by `scripts/xen-debs.sh`) against a test's
//! embedded xenstored, the way libxl runs it.
//!
//! The scripts directory is copied per test and only two lines are adapted,
//! neither touching the scripts' logic:
//! - `locking.sh`: `LOCK_BASEDIR=` points at the test's lock directory, which
//!   is also xenblock's `Config::lock_dir` in that test, so the script and
//!   xenblock take the very same `block` lock (and tests never touch the
//!   host's `/var/run/xen-hotplug`);
//! - `xen-hotplug-common.sh`: `exec 2>>/var/log/xen/xen-hotplug.log` writes
//!   to the test directory instead, so a failing test can show the log.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one script run may take before the test fails.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The unpacked Debian root: `$XENBLOCK_DEBS_ROOT`, or what
/// `scripts/xen-debs.sh` prints (it downloads once into a cache).
pub fn debs_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(r) = std::env::var_os("XENBLOCK_DEBS_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/xen-debs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/xen-debs.sh");
        assert!(
            out.status.success(),
            "scripts/xen-debs.sh failed ({}); it fetches Debian's Xen 4.17 packages, which the \
             conformance tests run",
            out.status
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// The multiarch library directory holding `libxenstore.so.4`.
pub fn lib_dir(root: &Path) -> PathBuf {
    let base = root.join("usr/lib");
    for e in std::fs::read_dir(&base).expect("usr/lib in the unpacked debs") {
        let d = e.unwrap().path();
        if d.join("libxenstore.so.4").exists() {
            return d;
        }
    }
    panic!("libxenstore.so.4 not found under {}", base.display());
}

/// A private copy of `/etc/xen/scripts` wired to one test's xenstored and lock.
pub struct Scripts {
    pub dir: PathBuf,
    pub log: PathBuf,
    sock: PathBuf,
    lock_dir: PathBuf,
    cwd: PathBuf,
    path_var: String,
    ld_library_path: String,
}

impl Scripts {
    /// Copy the scripts into `<test_dir>/scripts`; `lock_dir` is the lock
    /// directory xenblock uses in this test.
    pub fn install(test_dir: &Path, sock: &Path, lock_dir: &Path) -> Scripts {
        let root = debs_root();
        let src = root.join("etc/xen/scripts");
        let dir = test_dir.join("scripts");
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                // fs::copy keeps the permission bits (the scripts are executable).
                std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
        let log = test_dir.join("xen-hotplug.log");
        edit_line(
            &dir.join("locking.sh"),
            |l| l.starts_with("LOCK_BASEDIR="),
            &format!("LOCK_BASEDIR={}", lock_dir.display()),
        );
        edit_line(
            &dir.join("xen-hotplug-common.sh"),
            |l| l.trim() == "exec 2>>/var/log/xen/xen-hotplug.log",
            &format!("exec 2>>{}", log.display()),
        );
        let bin = root.join("usr/bin");
        assert!(
            bin.join("xenstore-read").exists(),
            "xenstore-utils missing in {}",
            root.display()
        );
        let path_var = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        Scripts {
            dir,
            log,
            sock: sock.to_path_buf(),
            lock_dir: lock_dir.to_path_buf(),
            cwd: test_dir.to_path_buf(),
            path_var,
            ld_library_path: lib_dir(root).display().to_string(),
        }
    }

    /// `block add|remove` for `xenbus_path` (relative, as libxl passes it),
    /// with libxl's argv and environment; not waited for.
    pub fn spawn_block(&self, command: &str, xenbus_path: &str) -> Child {
        self.spawn_script(&self.dir.join("block"), command, xenbus_path)
    }

    /// Any hotplug script (e.g. xenblock installed as `block`) run the same
    /// way, with `XENBLOCK_LOCK_DIR` naming this test's lock directory.
    pub fn spawn_script(&self, script: &Path, command: &str, xenbus_path: &str) -> Child {
        Command::new(script)
            .arg(command)
            .env_clear()
            .env("script", script)
            .env("XENBUS_TYPE", "vbd")
            .env("XENBUS_PATH", xenbus_path)
            .env("XENBUS_BASE_PATH", "backend")
            .env("PATH", &self.path_var)
            .env("LD_LIBRARY_PATH", &self.ld_library_path)
            .env("XENSTORED_PATH", &self.sock)
            .env("XENBLOCK_LOCK_DIR", &self.lock_dir)
            // The test directory: a relative `params` (`loop3`) resolves
            // against it in the script's `[ -b "$p" ]`, and it holds no such name.
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the upstream block script")
    }

    /// A bash that sources `locking.sh`, runs `claim_lock block`, creates
    /// `held`, waits until `go` exists, then `release_lock block`.
    pub fn spawn_lock_holder(&self, held: &Path, go: &Path) -> Child {
        Command::new("bash")
            .arg("-c")
            .arg(
                r#". "$1/locking.sh"; claim_lock block; : > "$2"
                   while [ ! -e "$3" ]; do sleep 0.02; done; release_lock block"#,
            )
            .arg("lock-holder")
            .arg(&self.dir)
            .arg(held)
            .arg(go)
            .env("PATH", &self.path_var)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn a bash holding the block lock")
    }

    /// The script's log (its stderr), for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Wait for a script, killing it after [`SCRIPT_TIMEOUT`]. Returns the exit
/// code (None when killed by a signal) and its stdout+stderr.
pub fn finish(mut child: Child) -> (Option<i32>, String) {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the upstream script ran longer than {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// Replace exactly one line matching `pick` with `with`.
fn edit_line(file: &Path, pick: impl Fn(&str) -> bool, with: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut hits = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if pick(l) {
                hits += 1;
                with.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(
        hits,
        1,
        "{}: expected exactly one line to adapt",
        file.display()
    );
    std::fs::write(file, out.join("\n") + "\n").unwrap();
}
