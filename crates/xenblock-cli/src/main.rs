//! `xenblock`: the command-line face of the library.
//!
//! The grammar lives in `cli.rs` (clap), shared with the generator of the
//! man page and completions. The drop-in `hotplug` mode (and the program run
//! as `block`) bypasses clap: it keeps the exact argv and exit contract of
//! Xen's script and starts as fast as possible.
//!
//! The program skips Rust's runtime start-up (`#![no_main]`): Xen runs a
//! hotplug helper for every disk event, and that start-up costs ≈ 80 µs
//! here for a stack-overflow message; `xenblock::sys::start` keeps the two
//! parts of it that change behaviour, and [`main`] flushes stdout and turns
//! a panic into exit status 101, as Rust's runtime would.

// The unit tests of this program run under libtest's own `main`.
#![cfg_attr(not(test), no_main)]

use clap::{CommandFactory, Parser};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use xenblock::imagelock::ImageLocks;
use xenblock::{Config, Context, ErrorKind, Flavour};

mod cli;
#[cfg(target_os = "linux")]
mod demo;
mod divert;
mod fastpath;
mod json;

use cli::{exit, Cli, Command, Common, FlavourArg};

#[cfg(not(target_os = "linux"))]
mod demo {
    pub fn run() -> Result<(), String> {
        Err("the demo uses Linux loop devices; run it on Linux".into())
    }
}

/// A failure and the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<xenblock::Error> for Failure {
    fn from(e: xenblock::Error) -> Failure {
        let code = match e.kind() {
            ErrorKind::Busy => exit::BUSY,
            ErrorKind::NotFound => exit::NOT_FOUND,
            ErrorKind::Timeout => exit::TIMEOUT,
            ErrorKind::Store => exit::STORE,
            ErrorKind::Permission => exit::PERMISSION,
            ErrorKind::InvalidArgument => exit::USAGE,
            _ => exit::FAILED,
        };
        Failure::new(code, e.to_string())
    }
}

/// The C entry point (see the module doc).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    xenblock::sys::start::init();
    let code = std::panic::catch_unwind(real_main).unwrap_or(101);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code.into()
}

#[cfg_attr(test, allow(dead_code))]
fn real_main() -> u8 {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    let invoked_as_block = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "block");
    if invoked_as_block {
        // Run by its path (libxl execs the absolute `script` it wrote): a
        // backend naming that path is this drop-in's, wherever it lives.
        let me = Some(PathBuf::from(&argv0)).filter(|p| p.is_absolute());
        return hotplug_main(&rest, None, me);
    }
    if rest.first().is_some_and(|a| a == "hotplug") {
        return hotplug_main(&rest[1..], None, None);
    }
    let parsed = match fastpath::per_disk(&rest) {
        Some(c) => Ok(c),
        None => Cli::try_parse_from(std::iter::once(OsString::from("xenblock")).chain(rest)),
    };
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return if e.use_stderr() { exit::USAGE } else { 0 };
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("xenblock: {}", f.message);
            }
            f.code
        }
    }
}

/// The environment variable that sets `image_locks` (docs/image-locks.md).
pub const IMAGE_LOCKS_ENV: &str = "XENBLOCK_IMAGE_LOCKS";

/// `image_locks` from the environment (default best-effort).
pub fn image_locks() -> Result<ImageLocks, String> {
    match std::env::var(IMAGE_LOCKS_ENV) {
        Ok(v) if !v.is_empty() => ImageLocks::parse(&v).map_err(|_| {
            format!(
                "{IMAGE_LOCKS_ENV} is '{v}'; expected required, best-effort or off \
                     (or unset, for best-effort)"
            )
        }),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(ImageLocks::default()),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "{IMAGE_LOCKS_ENV} is not valid UTF-8; expected required, best-effort or off"
        )),
    }
}

/// The library's warnings about image locks go to stderr (its other
/// messages are the CLI's own sentences already).
fn image_lock_logger() -> xenblock::Logger {
    std::sync::Arc::new(|level, msg: &str| {
        if level >= xenblock::LogLevel::Warn {
            if let Some(m) = msg.strip_prefix(xenblock::imagelock::LOG_PREFIX) {
                eprintln!("xenblock: warning: {m}");
            }
        }
    })
}

/// The configuration from the environment and the common options.
fn config(c: &Common) -> Result<Config, String> {
    let mut config = Config {
        image_locks: image_locks()?,
        logger: Some(image_lock_logger()),
        ..Config::default()
    };
    // Installed as /etc/xen/scripts/block there are no options to pass:
    // the environment may set the directories instead.
    if let Some(d) = std::env::var_os("XENBLOCK_LOCK_DIR").filter(|d| !d.is_empty()) {
        config.lock_dir = d.into();
    }
    if let Some(d) = std::env::var_os("XENBLOCK_SCRIPT_DIR").filter(|d| !d.is_empty()) {
        config.script_dir = d.into();
    }
    if let Some(f) = c.flavour {
        config.flavour = match f {
            FlavourArg::Linux => Flavour::Linux,
            FlavourArg::Freebsd => Flavour::FreeBsd,
            FlavourArg::Netbsd => Flavour::NetBsd,
        };
    }
    if let Some(d) = &c.lock_dir {
        config.lock_dir = d.clone();
    }
    if let Some(d) = &c.script_dir {
        config.script_dir = d.clone();
    }
    if let Some(s) = c.script_timeout {
        config.script_timeout = Duration::from_secs_f64(s);
    }
    if let Some(s) = c.store_timeout {
        config.store_timeout = Duration::from_secs_f64(s);
    }
    if let Some(s) = c.lock_timeout {
        config.lock_timeout = Duration::from_secs_f64(s);
    }
    Ok(config)
}

/// Connect; a failure here is about reaching xenstored (or a bad directory option).
fn context(c: &Common) -> Result<Context, Failure> {
    let config = config(c).map_err(|m| Failure::new(exit::USAGE, m))?;
    Context::new(config).map_err(|e| {
        let code = match e.kind() {
            ErrorKind::InvalidArgument => exit::USAGE,
            ErrorKind::Permission => exit::PERMISSION,
            _ => exit::STORE,
        };
        Failure::new(code, e.to_string())
    })
}

/// Report a result: a sentence on stdout, or one JSON object with `--json`.
/// With `--json` a failure is also a JSON object on stdout (and a sentence on stderr).
fn report<T>(
    json: bool,
    r: Result<T, Failure>,
    text: impl FnOnce(&T) -> String,
    as_json: impl FnOnce(&T) -> json::Object,
) -> Result<(), Failure> {
    match r {
        Ok(v) => {
            if json {
                println!("{}", as_json(&v).field("ok", true).finish());
            } else {
                println!("{}", text(&v));
            }
            Ok(())
        }
        Err(f) => {
            if json {
                println!(
                    "{}",
                    json::Object::new()
                        .field("ok", false)
                        .field("exit_code", f.code as u64)
                        .field("error", f.message.as_str())
                        .finish()
                );
            }
            Err(f)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let common = &cli.common;
    match cli.command {
        Command::Prepare { path, json } => {
            let r = context(common).and_then(|ctx| Ok(ctx.prepare(&path)?));
            report(
                json,
                r,
                |p| format!("{path}: {p}"),
                |p| {
                    let o = json::Object::new().field("backend", path.as_str());
                    match p {
                        xenblock::Prepared::Connected {
                            physical_device,
                            physical_device_path,
                            node,
                        } => o
                            .field("result", "connected")
                            .field("physical_device", physical_device.as_deref())
                            .field("physical_device_path", physical_device_path.as_str())
                            .field("node", node.as_deref()),
                        xenblock::Prepared::AlreadyPrepared => {
                            o.field("result", "already-prepared")
                        }
                        xenblock::Prepared::Script => o.field("result", "script"),
                    }
                },
            )
        }
        Command::Release { path, json } => {
            let r = context(common).and_then(|ctx| Ok(ctx.release(&path)?));
            report(
                json,
                r,
                |p| format!("{path}: {p}"),
                |p| {
                    let o = json::Object::new().field("backend", path.as_str());
                    match p {
                        xenblock::Released::Detached(d) => {
                            o.field("result", "detached").field("device", d.as_str())
                        }
                        xenblock::Released::Nothing => o.field("result", "nothing"),
                        xenblock::Released::LeftAlone(d) => {
                            o.field("result", "left-alone").field("device", d.as_str())
                        }
                        xenblock::Released::Script => o.field("result", "script"),
                    }
                },
            )
        }
        Command::Reconcile { prefix, json } => {
            let r = context(common).and_then(|ctx| reconcile(&ctx, prefix.as_deref()));
            report(
                json,
                r,
                |r| {
                    let mut s = String::new();
                    for d in &r.detached {
                        s.push_str(&format!("detached {d}\n"));
                    }
                    s.push_str(&r.to_string());
                    s
                },
                |r| {
                    json::Object::new()
                        .field("detached", r.detached.as_slice())
                        .field("kept", r.kept.as_slice())
                },
            )
        }
        Command::Audit { json } => audit(common, json),
        Command::Plan { path, action, json } => {
            let add = action == cli::ActionArg::Add;
            let r = context(common).and_then(|ctx| Ok(ctx.plan(&path, add)?));
            report(
                json,
                r,
                |p| match p {
                    xenblock::Plan::InProcess => {
                        format!("{path}: in-process (xenblock prepare/release does the work)")
                    }
                    xenblock::Plan::Script(inv) => {
                        let argv: Vec<String> = inv
                            .argv
                            .iter()
                            .map(|a| a.to_string_lossy().into_owned())
                            .collect();
                        let env: Vec<String> = inv
                            .env
                            .iter()
                            .map(|(k, v)| {
                                format!("{}={}", k.to_string_lossy(), v.to_string_lossy())
                            })
                            .collect();
                        format!(
                            "{path}: run the custom script: {} {}",
                            env.join(" "),
                            argv.join(" ")
                        )
                    }
                },
                |p| {
                    let o = json::Object::new().field("backend", path.as_str());
                    match p {
                        xenblock::Plan::InProcess => o.field("in_process", true),
                        xenblock::Plan::Script(inv) => {
                            let argv: Vec<String> = inv
                                .argv
                                .iter()
                                .map(|a| a.to_string_lossy().into_owned())
                                .collect();
                            let mut env = json::Object::new();
                            for (k, v) in &inv.env {
                                env = env.field(&k.to_string_lossy(), v.to_string_lossy());
                            }
                            o.field("in_process", false)
                                .field("argv", argv.as_slice())
                                .object("env", env)
                        }
                    }
                },
            )
        }
        Command::Hotplug { args } => {
            let code = hotplug_main(&args, Some(common), None);
            if code == 0 {
                Ok(())
            } else {
                Err(Failure::new(exit::FAILED, ""))
            }
        }
        Command::Enable { target } => divert::enable(target.as_deref()),
        Command::Disable => divert::disable(),
        Command::Status => divert::status(),
        Command::Demo => demo::run().map_err(|m| Failure::new(exit::FAILED, m)),
    }
}

/// An error of the audit itself mapped onto the exit codes cli::AUDIT_HELP
/// lists: xenstored (6), permission (7), anything else (1) — never the
/// not-found (4), timed-out (5) or usage (2) of the other subcommands.
fn audit_failure(e: xenblock::Error) -> Failure {
    let code = match e.kind() {
        ErrorKind::Store => exit::STORE,
        ErrorKind::Permission => exit::PERMISSION,
        _ => exit::FAILED,
    };
    Failure::new(code, e.to_string())
}

/// `xenblock audit`: the report on stdout (text or one JSON object),
/// whatever it found; the exit status says what (cli::AUDIT_HELP).
fn audit(common: &Common, json: bool) -> Result<(), Failure> {
    if !nix::unistd::geteuid().is_root() {
        let f = Failure::new(
            exit::PERMISSION,
            "audit needs root to identify loop devices and block devices; run it as root. \
             Nothing was checked.",
        );
        return report(
            json,
            Err::<(), _>(f),
            |_| String::new(),
            |_| json::Object::new(),
        );
    }
    // Read-only: no claims index (it writes a sentinel node).
    let r = config(common)
        .map_err(|m| Failure::new(exit::USAGE, m))
        .and_then(|mut config| {
            config.claims_index = false;
            // As for every subcommand: failing to connect is exit 6.
            Context::new(config).map_err(|e| {
                let code = match e.kind() {
                    ErrorKind::InvalidArgument => exit::USAGE,
                    ErrorKind::Permission => exit::PERMISSION,
                    _ => exit::STORE,
                };
                Failure::new(code, e.to_string())
            })
        })
        .and_then(|ctx| ctx.audit().map_err(audit_failure));
    let a = match r {
        Ok(a) => a,
        Err(f) => {
            return report(
                json,
                Err::<(), _>(f),
                |_| String::new(),
                |_| json::Object::new(),
            )
        }
    };
    let code = if !a.conflicts.is_empty() {
        exit::BUSY
    } else if !a.unsure.is_empty() {
        exit::FAILED
    } else {
        0
    };
    let finding = |f: &xenblock::Finding| {
        json::Object::new()
            .field("backend", f.backend.as_str())
            .field("domid", f.domid.as_str())
            .field("mode", f.mode.describe())
            .field("message", f.message.as_str())
            .value()
    };
    if json {
        let list = |v: &[xenblock::Finding]| v.iter().map(finding).collect::<Vec<_>>();
        println!(
            "{}",
            json::Object::new()
                .field("checked", a.checked as u64)
                .field("conflicts", list(&a.conflicts))
                .field("unsure", list(&a.unsure))
                .field("skipped", a.skipped.as_slice())
                .field("ok", code == 0)
                .field("exit_code", code as u64)
                .finish()
        );
    } else {
        for f in &a.conflicts {
            println!(
                "conflict: {} (domain {}, {}): {}",
                f.backend,
                f.domid,
                f.mode.describe(),
                f.message
            );
        }
        for f in &a.unsure {
            println!(
                "cannot tell: {} (domain {}, {}): {}",
                f.backend,
                f.domid,
                f.mode.describe(),
                f.message
            );
        }
        for s in &a.skipped {
            println!("skipped: {s}");
        }
        let n = a.checked;
        let disks = if n == 1 { "disk" } else { "disks" };
        if code == 0 {
            println!("no conflict found among {n} {disks} handed out");
        } else {
            println!(
                "{} of {n} {disks} handed out in conflict, {} undecided",
                a.conflicts.len(),
                a.unsure.len()
            );
        }
    }
    if code == 0 {
        Ok(())
    } else {
        Err(Failure::new(code, ""))
    }
}

#[cfg(target_os = "linux")]
fn reconcile(ctx: &Context, prefix: Option<&str>) -> Result<xenblock::Reconciled, Failure> {
    Ok(ctx.reconcile(prefix)?)
}

#[cfg(not(target_os = "linux"))]
fn reconcile(_: &Context, _: Option<&str>) -> Result<xenblock::Reconciled, Failure> {
    Err(Failure::new(
        exit::FAILED,
        "reconcile concerns Linux loop devices only",
    ))
}

/// The drop-in: Xen's `block` script contract. Every error, usage included,
/// exits 1, as the script does.
fn hotplug_main(args: &[OsString], common: Option<&Common>, drop_in: Option<PathBuf>) -> u8 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        let mut cmd = Cli::command();
        if let Some(h) = cmd.find_subcommand_mut("hotplug") {
            let _ = h.print_help();
        }
        return 0;
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("xenblock {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    match hotplug(args, common, drop_in) {
        Ok(()) => 0,
        Err(m) => {
            eprintln!("xenblock hotplug: {m}");
            1
        }
    }
}

/// Default lock wait of the drop-in (`hotplug`, or run as `block`), in seconds.
const HOTPLUG_LOCK_TIMEOUT_SECS: f64 = 30.0;

fn hotplug(
    args: &[OsString],
    common: Option<&Common>,
    drop_in: Option<PathBuf>,
) -> Result<(), String> {
    let mut args_s = Vec::with_capacity(args.len());
    for a in args {
        match a.to_str() {
            Some(s) => args_s.push(s.to_string()),
            None => {
                return Err(format!(
                    "argument {} is not valid UTF-8",
                    a.to_string_lossy()
                ))
            }
        }
    }
    let mut c = common.cloned().unwrap_or_default();
    let mut positional = Vec::new();
    let mut it = args_s.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            s if s.starts_with("--") => {
                let Some(set) = fastpath::common_option(s) else {
                    return Err(format!("unknown option {s} (see xenblock hotplug --help)"));
                };
                set(&mut c, &value(s)?)?
            }
            s => positional.push(s.to_string()),
        }
    }
    // Xen's script waits for the lock until libxl kills it (40 s); the
    // drop-in waits a little less than that by default, so under a queue of
    // scripts it still ends with its own clear message instead of a kill.
    if c.lock_timeout.is_none() {
        c.lock_timeout = Some(HOTPLUG_LOCK_TIMEOUT_SECS);
    }
    let mut config = config(&c)?;
    config.drop_in = drop_in;
    // Upstream's findCommand: the first argument without '=' is the command.
    let pos: Vec<&String> = positional.iter().filter(|a| !a.contains('=')).collect();
    let (path, add) = match config.flavour {
        Flavour::Linux => {
            let cmd = pos
                .first()
                .ok_or_else(|| "hotplug needs add or remove".to_string())?;
            let add = match cmd.as_str() {
                "add" => true,
                "remove" => false,
                c => return Err(format!("invalid command '{c}': expected add or remove")),
            };
            let path = std::env::var("XENBUS_PATH").map_err(|_| {
                "XENBUS_PATH is not set; the toolstack sets it to the backend path".to_string()
            })?;
            (path, add)
        }
        f => {
            let [path, action] = pos.as_slice() else {
                return Err("hotplug takes BACKEND_PATH and an action".into());
            };
            let add = match (f, action.as_str()) {
                (Flavour::FreeBsd, "add") | (Flavour::NetBsd, "2") => true,
                (Flavour::FreeBsd, "remove") | (Flavour::NetBsd, "6") => false,
                (Flavour::FreeBsd, a) => {
                    return Err(format!(
                        "invalid action '{a}' for the FreeBSD convention: expected add or remove"
                    ))
                }
                (_, a) => {
                    return Err(format!(
                        "invalid action '{a}' for the NetBSD convention: expected 2 (add) or 6 (remove)"
                    ))
                }
            };
            (path.to_string(), add)
        }
    };
    let ctx = Context::new(config).map_err(|e| e.to_string())?;
    if add {
        ctx.prepare(&path).map_err(|e| e.to_string())?;
    } else {
        ctx.release(&path).map_err(|e| e.to_string())?;
    }
    Ok(())
}
