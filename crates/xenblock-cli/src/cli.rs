//! The command-line grammar of `xenblock`, shared by the program and by the
//! generator of its man page and shell completions (`examples/xenblock-docs.rs`),
//! so `--help`, xenblock(1) and the completions cannot disagree.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

/// Exit codes, as printed in `--help` and xenblock(1).
pub const EXIT_CODES: &str = "\
Exit status:
  0  success (also: nothing to do, e.g. enable when already enabled)
  1  the operation failed; stderr says why and what to do
     (`xenblock hotplug` and `block` exit 1 on every error, as Xen's script)
  2  usage error: unknown option, missing or malformed argument
  3  refused by the sharing rule (the backend gets hotplug-status busy)
  4  not found: the backend or the disk it names does not exist
  5  timed out: xenstored, the hotplug lock or a custom script
  6  xenstored cannot be reached, or answered with an error
  7  permission denied: run as root";

/// Exit codes as numbers (see [`EXIT_CODES`]).
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const BUSY: u8 = 3;
    pub const NOT_FOUND: u8 = 4;
    pub const TIMEOUT: u8 = 5;
    pub const STORE: u8 = 6;
    pub const PERMISSION: u8 = 7;
}

/// What `xenblock audit` checks, and its exit status.
pub const AUDIT_HELP: &str = "\
Checks every backend under backend/vbd, vbd3 and qdisk that names a disk,
as if it asked for its disk now: the same rule as prepare, against every
other backend (a pair of writers on one disk shows from both sides) and
dom0's mounts and swap. A loop device counts as the file it serves. Writes
nothing and takes no lock. For hosts switching from Xen's script, which may
already have given one image read-write to two guests.

An image file is also tested for QEMU-compatible image locks held by
others (a QEMU guest, qemu-img, qemu-nbd) that prepare would refuse today.
Known gap: a loop device xenblock attached without locks (image locks off,
or before the upgrade that added them) can hide one such holder.

Exit status:
  0  no conflict found
  3  conflicts found (each listed, with what holds the disk)
  1  the audit could not tell for some backends (listed), or failed
  2  usage error (a bad option or directory)
  6  xenstored cannot be reached or does not answer
  7  not root, or permission denied: nothing was checked";

pub const AFTER_HELP: &str = "\
Environment:
  XENSTORED_PATH       xenstored socket or xenbus device (default: the usual ones)
  XENBLOCK_LOCK_DIR    default of --lock-dir
  XENBLOCK_SCRIPT_DIR  default of --script-dir
  XENBLOCK_IMAGE_LOCKS required, best-effort (default) or off: QEMU-compatible
                       locks on image files (docs/image-locks.md)
  NO_COLOR             when set, the demo prints no colours

Installed as /etc/xen/scripts/block (`xenblock enable`), xenblock is run as
`block add|remove` and behaves as `xenblock hotplug`.";

/// Prepare and release the disks of Xen block backends, as Xen's block
/// hotplug script does, talking to xenstored.
#[derive(Parser, Debug)]
#[command(
    name = "xenblock",
    version,
    propagate_version = true,
    subcommand_required = true,
    disable_help_subcommand = true,
    arg_required_else_help = true,
    after_help = format!("{AFTER_HELP}\n\n{EXIT_CODES}"),
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand that talks to xenstored accepts.
#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// OS calling convention to follow: linux, freebsd or netbsd [default: this OS]
    #[arg(long, visible_alias = "flavor", value_name = "OS", value_parser = flavour, global = true)]
    pub flavour: Option<FlavourArg>,
    /// Hotplug lock directory, shared with Xen's scripts [default: /var/run/xen-hotplug]
    #[arg(long, value_name = "DIR", global = true)]
    pub lock_dir: Option<PathBuf>,
    /// Where relative custom script names resolve [default: /etc/xen/scripts]
    #[arg(long, value_name = "DIR", global = true)]
    pub script_dir: Option<PathBuf>,
    /// How long a custom hotplug script may run [default: 40]
    #[arg(long, value_name = "SECS", value_parser = seconds, global = true)]
    pub script_timeout: Option<f64>,
    /// Bound on each wait for xenstored [default: 30]
    #[arg(long, value_name = "SECS", value_parser = seconds, global = true)]
    pub store_timeout: Option<f64>,
    /// How long to wait for the hotplug lock [default: 10; 30 in the drop-in hotplug mode]
    #[arg(long, value_name = "SECS", value_parser = seconds, global = true)]
    pub lock_timeout: Option<f64>,
}

/// Seconds: a number greater than 0 and at most a day.
pub fn seconds(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .ok_or_else(|| format!("expected a number of seconds greater than 0 and at most 86400 (e.g. 10 or 0.5), not '{v}'"))
}

/// linux, freebsd or netbsd.
pub fn flavour(v: &str) -> Result<FlavourArg, String> {
    match v {
        "linux" => Ok(FlavourArg::Linux),
        "freebsd" => Ok(FlavourArg::Freebsd),
        "netbsd" => Ok(FlavourArg::Netbsd),
        _ => Err(format!(
            "unknown flavour '{v}'; expected linux, freebsd or netbsd"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlavourArg {
    Linux,
    Freebsd,
    Netbsd,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionArg {
    Add,
    Remove,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Prepare the disk of a backend (what `block add` does)
    #[command(after_help = EXIT_CODES)]
    Prepare {
        /// The backend directory, e.g. backend/vbd/7/51712 or /local/domain/0/backend/vbd/7/51712
        #[arg(value_name = "BACKEND_PATH")]
        path: String,
        /// Print the result as one JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Release the disk of a backend (what `block remove` does)
    #[command(after_help = EXIT_CODES)]
    Release {
        /// The backend directory
        #[arg(value_name = "BACKEND_PATH")]
        path: String,
        /// Print the result as one JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Detach xenblock's loop devices that no backend names any more (after a crash)
    #[command(after_help = EXIT_CODES)]
    Reconcile {
        /// Only look at loop devices of backends under this path
        #[arg(value_name = "BACKEND_PREFIX")]
        prefix: Option<String>,
        /// Print the result as one JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Report every current conflict: disks given to two VMs with a writer, or held by dom0 (read-only)
    #[command(after_help = AUDIT_HELP)]
    Audit {
        /// Print the result as one JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Say whether a backend is prepared in-process or by a custom script (and its argv)
    #[command(after_help = EXIT_CODES)]
    Plan {
        /// The backend directory
        #[arg(value_name = "BACKEND_PATH")]
        path: String,
        /// For which action
        #[arg(value_enum)]
        action: ActionArg,
        /// Print the result as one JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Drop-in for /etc/xen/scripts/block, with the calling convention of each OS
    #[command(
        override_usage = "xenblock hotplug [OPTIONS] add|remove              (Linux: XENBUS_PATH in the environment)\n       \
                          xenblock hotplug [OPTIONS] BACKEND_PATH add|remove (FreeBSD)\n       \
                          xenblock hotplug [OPTIONS] BACKEND_PATH 2|6        (NetBSD)",
        after_help = "Writes the same xenstore nodes as Xen's block script and, like it, \
                      exits 0 on success and 1 on any error (usage errors included). \
                      Arguments containing '=' are ignored, as the script does."
    )]
    Hotplug {
        /// The script's arguments
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Make /etc/xen/scripts/block run xenblock (dpkg-divert keeps Xen's script)
    #[command(
        after_help = "Diverts Xen's script to /etc/xen/scripts/block.xen-orig with \
                            dpkg-divert (so upgrades of Xen's packages keep working and \
                            do not undo it) and links /etc/xen/scripts/block to this \
                            program. Running it again changes nothing. Exit status: 0 \
                            enabled (or already enabled), 1 not possible (stderr says \
                            why; nothing was changed), 7 not root."
    )]
    Enable {
        /// The program the link points to [default: this program]
        #[arg(long, value_name = "PATH")]
        target: Option<PathBuf>,
    },
    /// Give /etc/xen/scripts/block back to Xen's script, byte-identical
    #[command(
        after_help = "Exit status: 0 disabled (or was not enabled), 1 not possible \
                            (stderr says why; nothing was changed), 7 not root."
    )]
    Disable,
    /// Say whether /etc/xen/scripts/block runs xenblock or Xen's script
    Status,
    /// A guided run on an embedded xenstored with real loop devices (needs root)
    Demo,
}
