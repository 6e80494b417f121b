//! `xenblock`: the command-line face of the library.
//!
//! ```text
//! xenblock prepare [OPTIONS] BACKEND_PATH
//! xenblock release [OPTIONS] BACKEND_PATH
//! xenblock hotplug ...          drop-in for /etc/xen/scripts/block (see --help)
//! xenblock demo                 a guided run on an embedded xenstored
//! ```
//! Arguments are parsed by hand: the grammar is tiny, and a CLI that stands
//! in for a hotplug script should start as fast as possible.

use std::process::ExitCode;
use std::time::Duration;
use xenblock::{Config, Context, Flavour};

#[cfg(target_os = "linux")]
mod demo;

#[cfg(not(target_os = "linux"))]
mod demo {
    pub fn run() -> Result<(), String> {
        Err("the demo uses Linux loop devices; run it on Linux".into())
    }
}

const USAGE: &str = "\
usage: xenblock prepare [OPTIONS] BACKEND_PATH
       xenblock release [OPTIONS] BACKEND_PATH
       xenblock hotplug [OPTIONS] add|remove          (Linux: XENBUS_PATH in the environment)
       xenblock hotplug [OPTIONS] BACKEND_PATH add|remove   (FreeBSD)
       xenblock hotplug [OPTIONS] BACKEND_PATH 2|6          (NetBSD)
       xenblock reconcile [OPTIONS] [BACKEND_PREFIX]
       xenblock demo

Prepare or release the disk of a Xen block backend, as Xen's block hotplug
script does, talking to xenstored at $XENSTORED_PATH (or the usual socket).

options:
  --flavour linux|freebsd|netbsd   OS contract to follow (default: this OS)
  --lock-dir DIR                   hotplug lock directory (default /var/run/xen-hotplug)
  --script-dir DIR                 where relative custom scripts live (default /etc/xen/scripts)
  --script-timeout SECS            custom script timeout (default 40)
  --store-timeout SECS             bound on each wait for xenstored (default 30)

Installed as /etc/xen/scripts/block (a symlink named `block`), it behaves as
`xenblock hotplug`. XENBLOCK_LOCK_DIR and XENBLOCK_SCRIPT_DIR in the
environment set the defaults of --lock-dir and --script-dir.";

fn main() -> ExitCode {
    let mut args: Vec<String> = Vec::new();
    for a in std::env::args_os() {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("xenblock: argument {a:?} is not valid UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    let invoked_as_block = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "block");
    let rest: Vec<String> = if invoked_as_block {
        std::iter::once("hotplug".to_string())
            .chain(args.into_iter().skip(1))
            .collect()
    } else {
        args.into_iter().skip(1).collect()
    };
    let as_hotplug = rest.first().is_some_and(|c| c == "hotplug");
    match run(rest) {
        Ok(()) => ExitCode::SUCCESS,
        // The script it replaces exits 1 on any error, usage included.
        Err(CliError::Usage(m)) if as_hotplug => {
            eprintln!("xenblock hotplug: {m}");
            ExitCode::from(1)
        }
        Err(CliError::Usage(m)) => {
            eprintln!("xenblock: {m}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(m)) => {
            eprintln!("xenblock: {m}");
            ExitCode::from(1)
        }
    }
}

enum CliError {
    Usage(String),
    Failed(String),
}

impl From<xenblock::Error> for CliError {
    fn from(e: xenblock::Error) -> CliError {
        CliError::Failed(e.to_string())
    }
}

struct Options {
    config: Config,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, CliError> {
    let mut config = Config::default();
    // Installed as /etc/xen/scripts/block there are no options to pass:
    // the environment may set the directories instead.
    if let Some(d) = std::env::var_os("XENBLOCK_LOCK_DIR").filter(|d| !d.is_empty()) {
        config.lock_dir = d.into();
    }
    if let Some(d) = std::env::var_os("XENBLOCK_SCRIPT_DIR").filter(|d| !d.is_empty()) {
        config.script_dir = d.into();
    }
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| CliError::Usage(format!("{name} needs a value")))
        };
        let secs = |name: &str, v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{name} takes seconds between 0 and 86400, not {v:?}"
                    ))
                })
        };
        match a.as_str() {
            "--flavour" | "--flavor" => {
                config.flavour =
                    Flavour::parse(&value(a)?).map_err(|e| CliError::Usage(e.to_string()))?
            }
            "--lock-dir" => config.lock_dir = value(a)?.into(),
            "--script-dir" => config.script_dir = value(a)?.into(),
            "--script-timeout" => config.script_timeout = secs(a, value(a)?)?,
            "--store-timeout" => config.store_timeout = secs(a, value(a)?)?,
            "-h" | "--help" => return Err(CliError::Usage("help".into())),
            s if s.starts_with("--") => return Err(CliError::Usage(format!("unknown option {s}"))),
            s => positional.push(s.to_string()),
        }
    }
    Ok(Options { config, positional })
}

fn run(args: Vec<String>) -> Result<(), CliError> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(CliError::Usage("no command given".into()));
    };
    match cmd.as_str() {
        "prepare" | "release" => {
            let o = parse(rest)?;
            let [path] = o.positional.as_slice() else {
                return Err(CliError::Usage(format!("{cmd} takes one BACKEND_PATH")));
            };
            let ctx = Context::new(o.config)?;
            if cmd == "prepare" {
                let r = ctx.prepare(path)?;
                println!("{}", describe_prepared(&r));
            } else {
                let r = ctx.release(path)?;
                println!("{r:?}");
            }
            Ok(())
        }
        "hotplug" => hotplug(rest),
        "reconcile" => reconcile(rest),
        "demo" => demo::run().map_err(CliError::Failed),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(CliError::Usage(format!("unknown command {other:?}"))),
    }
}

fn describe_prepared(p: &xenblock::Prepared) -> String {
    match p {
        xenblock::Prepared::Connected {
            physical_device,
            physical_device_path,
            node,
        } => format!(
            "connected: physical-device={} physical-device-path={physical_device_path}{}",
            physical_device.as_deref().unwrap_or("-"),
            node.as_ref()
                .map(|n| format!(" node={n}"))
                .unwrap_or_default()
        ),
        other => format!("{other:?}"),
    }
}

/// Detach xenblock's loop devices that no backend references any more.
fn reconcile(args: &[String]) -> Result<(), CliError> {
    let o = parse(args)?;
    if o.positional.len() > 1 {
        return Err(CliError::Usage(
            "reconcile takes at most one BACKEND_PREFIX".into(),
        ));
    }
    let ctx = Context::new(o.config)?;
    #[cfg(target_os = "linux")]
    {
        let r = ctx.reconcile(o.positional.first().map(String::as_str))?;
        for d in &r.detached {
            println!("detached {d}");
        }
        println!(
            "{} detached, {} still in use",
            r.detached.len(),
            r.kept.len()
        );
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ctx;
        Err(CliError::Failed(
            "reconcile concerns Linux loop devices only".into(),
        ))
    }
}

/// The hotplug-script calling conventions of each OS.
fn hotplug(args: &[String]) -> Result<(), CliError> {
    let o = parse(args)?;
    // Upstream's findCommand: the first argument without '=' is the command.
    let pos: Vec<&String> = o.positional.iter().filter(|a| !a.contains('=')).collect();
    let (path, add) = match o.config.flavour {
        Flavour::Linux => {
            let cmd = pos
                .first()
                .ok_or_else(|| CliError::Usage("hotplug needs add or remove".into()))?;
            let add = match cmd.as_str() {
                "add" => true,
                "remove" => false,
                c => {
                    return Err(CliError::Usage(format!(
                        "invalid command {c:?}: expected add or remove"
                    )))
                }
            };
            let path = std::env::var("XENBUS_PATH").map_err(|_| {
                CliError::Usage(
                    "XENBUS_PATH is not set; the toolstack sets it to the backend path".into(),
                )
            })?;
            (path, add)
        }
        f => {
            let [path, action] = pos.as_slice() else {
                return Err(CliError::Usage(
                    "hotplug takes BACKEND_PATH and an action".into(),
                ));
            };
            let add = match (f, action.as_str()) {
                (Flavour::FreeBsd, "add") | (Flavour::NetBsd, "2") => true,
                (Flavour::FreeBsd, "remove") | (Flavour::NetBsd, "6") => false,
                (_, a) => {
                    return Err(CliError::Usage(format!(
                    "invalid action {a:?} for the {f:?} flavour (FreeBSD: add|remove, NetBSD: 2|6)"
                )))
                }
            };
            (path.to_string(), add)
        }
    };
    let ctx = Context::new(o.config)?;
    if add {
        ctx.prepare(&path)?;
    } else {
        ctx.release(&path)?;
    }
    Ok(())
}
