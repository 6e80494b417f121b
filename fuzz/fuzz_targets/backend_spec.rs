//! Hostile backend directories: arbitrary `params`, `mode`, `script`,
//! `type`, `frontend-id`, `state` (and the other backends a sharing scan
//! reads) in an in-memory store, through `spec` and, with the FreeBSD or
//! NetBSD flavour, `Context::prepare`/`release`.
//!
//! Why prepare is safe here: those flavours attach nothing. They resolve the
//! target (canonicalize + stat), stat the other backends'
//! `physical-device-path`, read `/proc/self/mountinfo`, take the hotplug
//! lock in a private temporary directory and write nodes into the fake
//! store. No target is ever opened. Custom scripts are never reached: the
//! target only calls prepare/release when `spec::handler` says InProcess
//! (today a custom script is refused anyway, but that may change).
//!
//! Checked contracts (docs/contract.md): normalise_path is idempotent and
//! gives valid paths; Backend::read returns what the store holds; target()
//! only accepts non-empty, NUL-free, PATH_MAX-bounded params; prepare with
//! `physical-device` present changes nothing; a connected prepare writes
//! `hotplug-status connected` and never points into /proc or /sys; a
//! refusal writes `busy`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use xenblock::attach::Prepared;
use xenblock::sharing::Mode;
use xenblock::spec::{self, Backend, Handler};
use xenblock::store::{self, Store, TxId, NO_TX};
use xenblock::{Config, Context, ErrorKind, Flavour};

/// An in-memory xenstore: absolute paths to values; a node with children
/// but no value of its own exists with an empty value (as xenstored's
/// implicitly created parents). Transactions are no-ops that always commit.
#[derive(Default)]
struct FakeStore {
    nodes: Mutex<BTreeMap<String, Vec<u8>>>,
}

const HOME: &str = "/local/domain/0";

fn abs(path: &str) -> xenblock::Result<String> {
    store::validate_path(path)?;
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{HOME}/{path}")
    })
}

impl FakeStore {
    /// Seed a node; paths a real store would refuse are skipped.
    fn put(&self, path: &str, value: &[u8]) {
        if let Ok(p) = abs(path) {
            self.nodes.lock().insert(p, value.to_vec());
        }
    }
    fn get(&self, path: &str) -> Option<Vec<u8>> {
        self.read(NO_TX, path).ok().flatten()
    }
    fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.nodes.lock().clone()
    }
}

impl Store for FakeStore {
    fn read(&self, _tx: TxId, path: &str) -> xenblock::Result<Option<Vec<u8>>> {
        let p = abs(path)?;
        let nodes = self.nodes.lock();
        if let Some(v) = nodes.get(&p) {
            return Ok(Some(v.clone()));
        }
        let prefix = if p == "/" { p.clone() } else { format!("{p}/") };
        let has_children = nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix));
        Ok(has_children.then(Vec::new))
    }

    fn write(&self, _tx: TxId, path: &str, value: &[u8]) -> xenblock::Result<()> {
        let p = abs(path)?;
        self.nodes.lock().insert(p, value.to_vec());
        Ok(())
    }

    fn remove(&self, _tx: TxId, path: &str) -> xenblock::Result<()> {
        let p = abs(path)?;
        let prefix = format!("{p}/");
        self.nodes
            .lock()
            .retain(|k, _| *k != p && !k.starts_with(&prefix));
        Ok(())
    }

    fn directory(&self, _tx: TxId, path: &str) -> xenblock::Result<Option<Vec<String>>> {
        let p = abs(path)?;
        let prefix = if p == "/" { p.clone() } else { format!("{p}/") };
        let nodes = self.nodes.lock();
        let mut names: Vec<String> = Vec::new();
        for (k, _) in nodes.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            let name = rest.split('/').next().unwrap_or("").to_string();
            if names.last() != Some(&name) {
                names.push(name);
            }
        }
        if names.is_empty() && !nodes.contains_key(&p) {
            return Ok(None);
        }
        Ok(Some(names))
    }

    fn transaction_start(&self) -> xenblock::Result<TxId> {
        Ok(1)
    }

    fn transaction_end(&self, _tx: TxId, _commit: bool) -> xenblock::Result<bool> {
        Ok(true)
    }
}

/// Real files for targets to name: created once per process in a private
/// temporary directory.
struct Fixtures {
    dir: PathBuf,
    lock_dir: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("xenblock-fuzz-spec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        std::fs::write(dir.join("disk.img"), b"disk").expect("disk.img");
        std::fs::write(dir.join("ro.img"), b"ro").expect("ro.img");
        let mut perm = std::fs::metadata(dir.join("ro.img")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
        std::fs::set_permissions(dir.join("ro.img"), perm).expect("chmod");
        std::os::unix::fs::symlink(dir.join("disk.img"), dir.join("link.img")).expect("symlink");
        std::os::unix::fs::symlink(dir.join("gone.img"), dir.join("dangling")).expect("dangling");
        std::os::unix::fs::symlink("/proc/self/status", dir.join("to-proc")).expect("to-proc");
        std::fs::create_dir(dir.join("subdir")).expect("subdir");
        let _ = nix::unistd::mkfifo(
            &dir.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        );
        let lock_dir = dir.join("lock");
        Fixtures { dir, lock_dir }
    })
}

/// Names the fuzzer can pick instead of raw bytes: fixture files, devices,
/// relative device names, escapes and kernel pseudo files.
fn known_target(i: u8) -> Vec<u8> {
    let d = &fixtures().dir;
    let s: String = match i % 20 {
        0 => d.join("disk.img").display().to_string(),
        1 => d.join("link.img").display().to_string(),
        2 => d.join("ro.img").display().to_string(),
        3 => d.join("dangling").display().to_string(),
        4 => d.join("to-proc").display().to_string(),
        5 => d.join("subdir").display().to_string(),
        6 => d.join("fifo").display().to_string(),
        7 => format!(
            "{}/../{}/disk.img",
            d.display(),
            d.file_name().unwrap().to_string_lossy()
        ),
        8 => "/dev/loop0".into(),
        9 => "loop1".into(),
        10 => "/dev/vda".into(),
        11 => "/dev/null".into(),
        12 => "../etc/passwd".into(),
        13 => "/proc/kcore".into(),
        14 => "/sys/kernel/notes".into(),
        15 => "/proc/self/fd/0".into(),
        16 => "./loop0".into(),
        17 => "/".into(),
        18 => "/dev/zram0".into(),
        _ => "no-such-device-xyz".into(),
    };
    s.into_bytes()
}

/// A node value from the input: `0xFE` alone means "absent", `0xFD n`
/// means `known_target(n)`, anything else is the value verbatim.
fn value(field: &[u8]) -> Option<Vec<u8>> {
    match field {
        [0xFE] => None,
        [0xFD, n, ..] => Some(known_target(*n)),
        v => Some(v.to_vec()),
    }
}

/// The decoded input. Fields are separated by `0xFF` (so values can hold
/// any other byte: NUL, non-UTF-8, 4 KiB of text):
///
/// ```text
/// flags 0xFF path 0xFF params 0xFF mode 0xFF script 0xFF type 0xFF
/// frontend-id 0xFF state 0xFF physical-device 0xFF physical-device-path
/// 0xFF node (0xFF store-path 0xFF value)*
/// ```
///
/// flags: bit 0 run prepare/release, bit 1 NetBSD (else FreeBSD). An empty
/// path means `backend/vbd/<frontend-id>/51712`. Missing trailing fields
/// are absent nodes. The trailing pairs are extra store nodes: other
/// backends for the sharing scan, `/local/domain/<d>/vm`, `.../target`.
struct Input {
    prepare: bool,
    netbsd: bool,
    path: Option<String>,
    /// params, mode, script, type, frontend-id, state, physical-device,
    /// physical-device-path, node.
    nodes: Vec<Option<Vec<u8>>>,
    extra: Vec<(String, Option<Vec<u8>>)>,
}

const NODES: [&str; 9] = [
    "params",
    "mode",
    "script",
    "type",
    "frontend-id",
    "state",
    "physical-device",
    "physical-device-path",
    "node",
];

impl Input {
    fn decode(data: &[u8]) -> Input {
        let mut f = data.split(|&b| b == 0xFF);
        let flags = f.next().and_then(|v| v.first().copied()).unwrap_or(0);
        let path = f
            .next()
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let nodes = (0..NODES.len()).map(|_| f.next().and_then(value)).collect();
        let mut extra = Vec::new();
        while let (Some(p), Some(v)) = (f.next(), f.next()) {
            extra.push((String::from_utf8_lossy(p).into_owned(), value(v)));
        }
        Input {
            prepare: flags & 1 != 0,
            netbsd: flags & 2 != 0,
            path,
            nodes,
            extra,
        }
    }
}

fn check_spec(path: &str, fake: &FakeStore) -> Option<Backend> {
    // Normalising: valid, idempotent, no dot components.
    let norm = match spec::normalise_path(path) {
        Ok(n) => n,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            return None;
        }
    };
    assert!(store::validate_path(&norm).is_ok(), "{norm:?}");
    assert!(!norm.split('/').any(|c| c == "." || c == ".."), "{norm:?}");
    assert_eq!(spec::normalise_path(&norm).ok().as_deref(), Some(&*norm));
    if let Ok(root) = spec::backend_root(&norm) {
        assert!(!root.is_empty());
        assert!(norm.starts_with(root) && norm[root.len()..].starts_with('/'));
    }

    let b = match Backend::read(fake, NO_TX, &norm) {
        Ok(b) => b,
        // A path so long that `<path>/physical-device-path` is over the limit.
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            return None;
        }
    };
    // What the store holds comes back: params verbatim, text lossily.
    let stored = |n: &str| fake.get(&format!("{norm}/{n}"));
    assert_eq!(b.params, stored("params"));
    let lossy = |n: &str| stored(n).map(|v| String::from_utf8_lossy(&v).into_owned());
    assert_eq!(b.mode_raw, lossy("mode"));
    assert_eq!(b.script, lossy("script"));
    assert_eq!(b.frontend_id, lossy("frontend-id"));
    assert_eq!(b.state, lossy("state"));

    match b.target() {
        Ok(t) => {
            let raw = std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str());
            assert_eq!(Some(raw), b.params.as_deref());
            assert!(!raw.is_empty() && !raw.contains(&0));
            assert!(raw.len() <= libc::PATH_MAX as usize);
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}"),
    }

    let mode = b.mode();
    let raw_mode = b.mode_raw.clone().unwrap_or_default();
    match mode {
        Mode::Read => assert!(!raw_mode.contains('w')),
        Mode::Write => assert!(raw_mode.contains('w') && !raw_mode.contains('!')),
        Mode::Force => assert!(raw_mode.contains('w') && raw_mode.contains('!')),
    }

    match b.frontend_domid() {
        Ok(d) => assert_eq!(
            b.frontend_id.as_deref().map(|s| s.trim().parse()),
            Some(Ok(d))
        ),
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}"),
    }

    match spec::handler(b.script.as_deref(), Path::new(SCRIPT_DIR), None) {
        Handler::InProcess => {
            let s = b.script.as_deref().map(str::trim).unwrap_or("");
            assert!(
                s.is_empty() || Path::new(s).file_name() == Some(std::ffi::OsStr::new("block")),
                "{s:?}"
            );
        }
        Handler::Script(s) => {
            assert!(!s.is_empty());
            assert_eq!(Some(s.as_str()), b.script.as_deref().map(str::trim));
        }
    }
    Some(b)
}

/// The scripts directory of the contexts made here (`Config`'s default).
const SCRIPT_DIR: &str = "/etc/xen/scripts";

fn run_prepare(path: &str, norm: &str, b: &Backend, fake: &Arc<FakeStore>, netbsd: bool) {
    if spec::handler(b.script.as_deref(), Path::new(SCRIPT_DIR), None) != Handler::InProcess {
        // Never let fuzzed input choose a program to run.
        return;
    }
    let f = fixtures();
    let ctx = Context::new(Config {
        store: Some(fake.clone() as Arc<dyn Store>),
        lock_dir: f.lock_dir.clone(),
        flavour: if netbsd {
            Flavour::NetBsd
        } else {
            Flavour::FreeBsd
        },
        ..Config::default()
    })
    .expect("context over the fake store");

    let before = fake.snapshot();
    let status = || {
        fake.get(&format!("{norm}/hotplug-status"))
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    match ctx.prepare(path) {
        Ok(Prepared::AlreadyPrepared) => {
            assert!(b.physical_device.is_some());
            assert_eq!(
                fake.snapshot(),
                before,
                "an already prepared backend was changed"
            );
        }
        Ok(Prepared::Connected {
            physical_device_path,
            ..
        }) => {
            assert!(b.physical_device.is_none());
            assert_eq!(status().as_deref(), Some("connected"));
            let p = Path::new(&physical_device_path);
            assert!(p.is_absolute(), "{p:?}");
            assert!(!p.starts_with("/proc") && !p.starts_with("/sys"), "{p:?}");
            assert_eq!(
                fake.get(&format!("{norm}/physical-device-path")),
                Some(physical_device_path.into_bytes())
            );
        }
        Ok(Prepared::Script) => panic!("a script ran for an in-process backend"),
        Err(e) => {
            assert!(b.physical_device.is_none());
            let st = status();
            if e.kind() == ErrorKind::Busy {
                assert_eq!(st.as_deref(), Some("busy"), "{e}");
            } else {
                assert_ne!(st.as_deref(), Some("connected"), "{e}");
            }
        }
    }
    let _ = ctx.release(path);
}

fuzz_target!(|data: &[u8]| {
    let inp = Input::decode(data);
    let fake = Arc::new(FakeStore::default());
    let front = inp.nodes[4]
        .as_deref()
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && s.len() < 6)
        .unwrap_or_else(|| "7".into());
    let path = inp
        .path
        .clone()
        .unwrap_or_else(|| format!("backend/vbd/{front}/51712"));

    // Seed the backend directory (nodes a store would refuse are skipped),
    // then the extra nodes, which may overwrite it.
    if let Ok(norm) = spec::normalise_path(&path) {
        for (name, v) in NODES.iter().zip(&inp.nodes) {
            if let Some(v) = v {
                fake.put(&format!("{norm}/{name}"), v);
            }
        }
    }
    for (p, v) in inp.extra.iter().take(32) {
        if let Some(v) = v {
            fake.put(p, v);
        }
    }

    let Some(b) = check_spec(&path, &fake) else {
        return;
    };
    if inp.prepare {
        let norm = b.path.clone();
        run_prepare(&path, &norm, &b, &fake, inp.netbsd);
    }
});
