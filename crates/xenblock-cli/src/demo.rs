//! `xenblock demo`: a guided run on an embedded xenstored, showing what
//! xenblock does for a toolstack: a file attached read-write, a second guest
//! refused, read-only sharing, a block device, then release and cleanup.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenblock::store::client::XsClient;
use xenblock::store::{Store, NO_TX};
use xenblock::{Config, Context};

struct Cleanup {
    server: Option<Child>,
    dir: PathBuf,
    extra_loop: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(l) = &self.extra_loop {
            let _ = xenblock::sys::loopdev::detach(l);
        }
        if let Some(mut c) = self.server.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Bold headings, only on a terminal and only when NO_COLOR is not set.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn step(n: u32, what: &str) {
    if colour() {
        println!("\n\x1b[1m{n}. {what}\x1b[0m");
    } else {
        println!("\n{n}. {what}");
    }
}

/// Write a backend directory as libxl does for a disk, then move it to InitWait.
fn write_backend(
    s: &dyn Store,
    domid: u32,
    devid: u32,
    target: &str,
    mode: &str,
) -> Result<String, String> {
    let be = format!("backend/vbd/{domid}/{devid}");
    let fe = format!("/local/domain/{domid}");
    let e = |e: xenblock::Error| e.to_string();
    s.write(
        NO_TX,
        &format!("{fe}/vm"),
        format!("/vm/demo-guest-{domid}").as_bytes(),
    )
    .map_err(e)?;
    for (k, v) in [
        ("frontend", format!("{fe}/device/vbd/{devid}")),
        ("params", target.to_string()),
        ("script", "/etc/xen/scripts/block".to_string()),
        ("frontend-id", domid.to_string()),
        ("online", "1".into()),
        ("removable", "0".into()),
        ("bootable", "1".into()),
        ("state", "1".into()),
        ("dev", "xvda".into()),
        ("type", "phy".into()),
        ("mode", mode.to_string()),
        ("device-type", "disk".into()),
        ("discard-enable", "0".into()),
        ("state", "2".into()),
    ] {
        s.write(NO_TX, &format!("{be}/{k}"), v.as_bytes())
            .map_err(e)?;
    }
    Ok(be)
}

fn show(s: &dyn Store, be: &str) {
    for k in [
        "hotplug-status",
        "physical-device",
        "physical-device-path",
        "node",
        "hotplug-error",
    ] {
        if let Ok(Some(v)) = s.read(NO_TX, &format!("{be}/{k}")) {
            println!("     {be}/{k} = {}", String::from_utf8_lossy(&v));
        }
    }
}

fn attempt(ctx: &Context, s: &dyn Store, be: &str) {
    let t = Instant::now();
    let r = ctx.prepare(be);
    let took = t.elapsed();
    match r {
        Ok(p) => println!("   prepare {be}: {p} (in {})", human(took)),
        Err(e) => println!("   prepare {be}: {}: {e} (in {})", e.kind(), human(took)),
    }
    show(s, be);
}

pub fn run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the demo attaches real loop devices, which needs root \
             (CAP_SYS_ADMIN and /dev/loop-control). Run it as root, e.g. \
             `./target/release/xenblock demo` in a root shell. Nothing was changed."
            .into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let server_bin = exe.with_file_name("xenblock-xenstored");
    if !server_bin.exists() {
        return Err(format!(
            "{} is missing; build both binaries first: cargo build --release --bins",
            server_bin.display()
        ));
    }
    let dir = std::env::temp_dir().join(format!("xenblock-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cleanup = Cleanup {
        server: None,
        dir: dir.clone(),
        extra_loop: None,
    };
    let sock = dir.join("xenstored.sock");

    step(
        1,
        "Start the embedded xenstored (stands in for xenstored on a machine without Xen)",
    );
    let child = Command::new(&server_bin)
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server_bin.display()))?;
    cleanup.server = Some(child);
    wait_for(&sock)?;
    println!("   listening on {}", sock.display());
    let store: Arc<dyn Store> =
        Arc::new(XsClient::connect(&sock, Duration::from_secs(10)).map_err(|e| e.to_string())?);
    let ctx = Context::new(Config {
        store: Some(store.clone()),
        lock_dir: dir.join("lock"),
        ..Config::default()
    })
    .map_err(|e| e.to_string())?;
    let s = &*store;

    step(2, "Create two 64 MiB disk images");
    let shared = make_image(&dir, "guest-disk.img")?;
    let base = make_image(&dir, "base-ro.img")?;
    println!("   {}\n   {}", shared.display(), base.display());

    step(
        3,
        "Guest 1 gets guest-disk.img read-write (a loop device is attached)",
    );
    let b1 = write_backend(s, 1, 51712, &shared.display().to_string(), "w")?;
    attempt(&ctx, s, &b1);

    step(
        4,
        "Guest 2 asks for the same image read-write: refused, with the reason",
    );
    let b2 = write_backend(s, 2, 51712, &shared.display().to_string(), "w")?;
    attempt(&ctx, s, &b2);

    step(5, "Guests 1 and 2 share base-ro.img read-only: allowed");
    let b3 = write_backend(s, 1, 51728, &base.display().to_string(), "r")?;
    let b4 = write_backend(s, 2, 51728, &base.display().to_string(), "r")?;
    attempt(&ctx, s, &b3);
    attempt(&ctx, s, &b4);

    step(
        6,
        "Guest 3 gets a block device (phy: no loop device of ours, just its number)",
    );
    let img = make_image(&dir, "blockdev.img")?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .map_err(|e| e.to_string())?;
    let lo =
        xenblock::sys::loopdev::attach(&f, false, b"xenblock-demo").map_err(|e| e.to_string())?;
    cleanup.extra_loop = Some(lo.path.clone());
    println!(
        "   (the demo made {} to stand for a disk)",
        lo.path.display()
    );
    let b5 = write_backend(s, 3, 51712, &lo.path.display().to_string(), "w")?;
    attempt(&ctx, s, &b5);

    step(7, "Release everything, as `xl destroy` would");
    for be in [&b1, &b2, &b3, &b4, &b5] {
        let r = ctx.release(be).map_err(|e| e.to_string())?;
        println!("   release {be}: {r}");
        s.remove(NO_TX, be).map_err(|e| e.to_string())?;
    }
    drop(f);
    let mut left = Vec::new();
    for image in [&shared, &base] {
        let st = xenblock::sys::stat::stat(image).map_err(|e| e.to_string())?;
        for l in xenblock::sys::loopdev::backed_by(st.dev, st.ino).map_err(|e| e.to_string())? {
            left.push(l.path.display().to_string());
        }
    }
    drop(cleanup);
    println!(
        "\nDone. Loop devices left over the guests' images: {}",
        if left.is_empty() {
            "none".to_string()
        } else {
            left.join(", ")
        }
    );
    if !left.is_empty() {
        return Err(format!(
            "release left loop devices attached: {}",
            left.join(", ")
        ));
    }
    Ok(())
}

/// A duration as people write it: 850 µs, 1.2 ms, 0.53 s.
fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn make_image(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    f.set_len(64 << 20).map_err(|e| e.to_string())?;
    Ok(p)
}

fn wait_for(sock: &Path) -> Result<(), String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "the embedded xenstored did not start listening on {}",
        sock.display()
    ))
}
