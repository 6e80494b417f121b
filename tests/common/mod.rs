//! Shared test support: an embedded xenstored per test, backends written as
//! libxl writes them, disk images, and guards that detach every loop device
//! a test made (and only those).
#![allow(dead_code)]

pub mod xsd;
#[allow(unused_imports)] // not every test runs a program
pub use xsd::exe;

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;
use xenblock::store::client::XsClient;
use xenblock::store::{Store, NO_TX};
use xenblock::{Config, Context};

/// The `conflict: ` lines of `xenblock audit`'s output.
pub fn audit_conflicts(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.starts_with("conflict: "))
        .collect()
}

/// Fail (never skip) when not root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (loop devices, mounts); run the suite as root"
    );
}

/// Remove what a prepare writes (and a failure's `hotplug-error`) from
/// backend `be`, as if the toolstack had made the backend again.
pub fn unprepare(store: &dyn Store, be: &str) {
    for n in [
        "physical-device",
        "physical-device-path",
        "node",
        "diskseq",
        "hotplug-status",
        "hotplug-error",
    ] {
        store.remove(NO_TX, &format!("{be}/{n}")).unwrap();
    }
}

/// An embedded xenstored on a private socket, plus a scratch directory.
pub struct Env {
    pub dir: PathBuf,
    pub sock: PathBuf,
    server: xsd::Daemon,
    pub store: Arc<XsClient>,
    images: Vec<PathBuf>,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Env {
    pub fn new() -> Env {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("xenblock-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = xsd::Daemon::start_at(dir.clone(), dir.join("xs.sock"));
        let sock = server.socket.clone();
        let store = Arc::new(XsClient::connect(&sock, Duration::from_secs(10)).unwrap());
        Env {
            dir,
            sock,
            server,
            store,
            images: Vec::new(),
        }
    }

    pub fn config(&self) -> Config {
        Config {
            store: Some(self.store.clone()),
            lock_dir: self.dir.join("lock"),
            ..Config::default()
        }
    }

    pub fn ctx(&self) -> Context {
        Context::new(self.config()).unwrap()
    }

    pub fn ctx_with(&self, store: Arc<dyn Store>) -> Context {
        Context::new(Config {
            store: Some(store),
            ..self.config()
        })
        .unwrap()
    }

    /// A sparse image file, tracked for loop cleanup.
    pub fn image(&mut self, name: &str, size: u64) -> PathBuf {
        let p = self.dir.join(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        self.images.push(p.clone());
        p
    }

    /// Track a file for loop cleanup.
    pub fn track(&mut self, p: &Path) {
        self.images.push(p.to_path_buf());
    }

    /// A loop device made by the test itself to stand for a block device.
    pub fn block_device(&mut self, name: &str) -> PathBuf {
        let img = self.image(name, 8 << 20);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        xenblock::sys::loopdev::attach(&f, false, b"xenblock-test-blockdev")
            .unwrap()
            .path
    }

    pub fn read(&self, p: &str) -> Option<String> {
        self.store
            .read(NO_TX, p)
            .unwrap()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    pub fn write(&self, p: &str, v: &str) {
        self.store.write(NO_TX, p, v.as_bytes()).unwrap();
    }

    /// [`unprepare`] in this environment's store.
    pub fn unprepare(&self, be: &str) {
        unprepare(&*self.store, be);
    }

    /// A guest domain with its `vm` node.
    pub fn domain(&self, domid: u32, vm: &str) {
        self.write(&format!("/local/domain/{domid}/vm"), vm);
        self.write(
            &format!("/local/domain/{domid}/name"),
            &format!("guest{domid}"),
        );
    }

    /// A backend written as libxl's device_disk_add does, moved to state 2.
    pub fn backend(&self, domid: u32, devid: u32, params: &str, mode: &str) -> String {
        let be = format!("backend/vbd/{domid}/{devid}");
        let fe = format!("/local/domain/{domid}/device/vbd/{devid}");
        for (k, v) in [
            ("frontend", fe.as_str()),
            ("params", params),
            ("script", "/etc/xen/scripts/block"),
            ("frontend-id", &domid.to_string()),
            ("online", "1"),
            ("removable", "0"),
            ("bootable", "1"),
            ("state", "1"),
            ("dev", "xvda"),
            ("type", "phy"),
            ("mode", mode),
            ("device-type", "disk"),
            ("discard-enable", "0"),
        ] {
            self.write(&format!("{be}/{k}"), v);
        }
        self.write(&format!("{be}/state"), "2");
        be
    }

    /// Loop devices currently backed by a file.
    pub fn loops_of(&self, file: &Path) -> Vec<xenblock::sys::loopdev::LoopInfo> {
        let st = xenblock::sys::stat::stat(file).unwrap();
        xenblock::sys::loopdev::backed_by(st.dev, st.ino).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for img in &self.images {
            if let Ok(st) = xenblock::sys::stat::stat(img) {
                if let Ok(loops) = xenblock::sys::loopdev::backed_by(st.dev, st.ino) {
                    for l in loops {
                        let _ = xenblock::sys::loopdev::detach(&l.path);
                    }
                }
            }
        }
        // Then `server` drops: the daemon is stopped and `dir` removed.
    }
}
