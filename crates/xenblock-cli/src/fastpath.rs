//! The two per-disk commands, `prepare` and `release`, parsed without clap.
//!
//! A toolstack that forks a helper runs one of them for every disk event,
//! and building clap's parser costs each run ≈ 115 µs and 32 page faults on
//! the bench machine (BENCHMARKS.md, "What a one-shot start costs"), a tenth of the whole
//! command. [`per_disk`] understands only the plain form,
//! `[COMMON OPTIONS] prepare|release [--json] BACKEND_PATH` with the common
//! options anywhere, each at most once as `--name value`; for anything else
//! (help, `--name=value`, an unknown, repeated or empty option, a value
//! that starts with `-`, a second operand, non-UTF-8) it answers `None` and
//! clap parses the command line as before, errors and help included. The
//! property test below checks that whenever it answers, clap gives the same
//! result.

use crate::cli::{self, Cli, Command, Common};
use std::ffi::OsString;

/// Sets one common option of a [`Common`] from its value; an invalid value
/// is a sentence saying why.
pub type SetOption = fn(&mut Common, &str) -> Result<(), String>;

/// The setter of the common option `name` (long form, `--flavor`
/// included), or `None` when `name` is not a common option.
pub fn common_option(name: &str) -> Option<SetOption> {
    let set: SetOption = match name {
        "--flavour" | "--flavor" => |c, v| cli::flavour(v).map(|f| c.flavour = Some(f)),
        "--lock-dir" => |c, v| {
            c.lock_dir = Some(v.into());
            Ok(())
        },
        "--script-dir" => |c, v| {
            c.script_dir = Some(v.into());
            Ok(())
        },
        "--script-timeout" => |c, v| cli::seconds(v).map(|s| c.script_timeout = Some(s)),
        "--store-timeout" => |c, v| cli::seconds(v).map(|s| c.store_timeout = Some(s)),
        "--lock-timeout" => |c, v| cli::seconds(v).map(|s| c.lock_timeout = Some(s)),
        _ => return None,
    };
    Some(set)
}

/// `args` (without the program name) as clap would parse them, when they
/// are the plain form of `prepare` or `release`; `None` otherwise.
pub fn per_disk(args: &[OsString]) -> Option<Cli> {
    let mut common = Common::default();
    let mut seen: Vec<&str> = Vec::new();
    let (mut release, mut command_seen) = (false, false);
    let (mut path, mut json) = (None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_str()?;
        if a == "--json" && command_seen && !json {
            json = true;
        } else if a.starts_with('-') {
            let name = if a == "--flavor" { "--flavour" } else { a };
            let set = common_option(name)?;
            let value = it.next()?.to_str()?;
            if seen.contains(&name) || value.is_empty() || value.starts_with('-') {
                return None;
            }
            set(&mut common, value).ok()?;
            seen.push(name);
        } else if !command_seen {
            release = match a {
                "prepare" => false,
                "release" => true,
                _ => return None,
            };
            command_seen = true;
        } else if path.is_none() && !a.is_empty() {
            path = Some(a.to_string());
        } else {
            return None;
        }
    }
    let path = path?;
    let command = if release {
        Command::Release { path, json }
    } else {
        Command::Prepare { path, json }
    };
    Some(Cli { common, command })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn clap(args: &[OsString]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once(OsString::from("xenblock")).chain(args.to_vec()))
    }

    #[test]
    fn plain_forms_are_parsed() {
        for args in [
            &["prepare", "backend/vbd/5/51712"][..],
            &[
                "--lock-dir",
                "/tmp/l",
                "release",
                "--json",
                "backend/vbd/5/51712",
            ],
            &[
                "prepare",
                "/local/domain/0/backend/vbd/5/768",
                "--flavor",
                "netbsd",
            ],
            &[
                "release",
                "--store-timeout",
                "0.5",
                "b",
                "--lock-timeout",
                "3",
            ],
        ] {
            let args = os(args);
            let fast = per_disk(&args).expect("the plain form is understood");
            assert_eq!(format!("{fast:?}"), format!("{:?}", clap(&args).unwrap()));
        }
    }

    #[test]
    fn everything_else_is_left_to_clap() {
        for args in [
            &[][..],
            &["prepare"],
            &["prepare", "--help"],
            &["prepare", "-h"],
            &["--version"],
            &["prepare", "a", "b"],
            &["prepare", ""],
            &["prepare", "--lock-dir=/x", "b"],
            &["prepare", "--lock-dir", "", "b"],
            &["prepare", "--lock-dir", "/x", "--lock-dir", "/y", "b"],
            &["prepare", "--flavour", "linux", "--flavor", "linux", "b"],
            &["prepare", "--json", "--json", "b"],
            &["--json", "prepare", "b"],
            &["prepare", "--store-timeout", "0", "b"],
            &["prepare", "--flavour", "hurd", "b"],
            &["prepare", "--", "b"],
            &["prepare", "--lock-dir", "-x", "b"],
            &["plan", "b", "add"],
            &["reconcile"],
            &["hotplug", "add"],
        ] {
            assert!(per_disk(&os(args)).is_none(), "{args:?}");
        }
        // Not UTF-8.
        use std::os::unix::ffi::OsStringExt;
        let bad = vec![
            OsString::from("prepare"),
            OsString::from_vec(vec![0x62, 0xff]),
        ];
        assert!(per_disk(&bad).is_none());
    }

    const TOKENS: &[&str] = &[
        "prepare",
        "release",
        "plan",
        "reconcile",
        "add",
        "--json",
        "--lock-dir",
        "--script-dir",
        "--flavour",
        "--flavor",
        "--script-timeout",
        "--store-timeout",
        "--lock-timeout",
        "--lock-dir=/x",
        "--bogus",
        "-h",
        "--help",
        "-V",
        "--",
        "-",
        "-x",
        "",
        "backend/vbd/1/51712",
        "/local/domain/0/backend/vbd/2/768",
        "a b",
        "0",
        "10",
        "0.5",
        "1e9",
        "linux",
        "freebsd",
        "bsd",
        "/tmp/l",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// Whenever the fast path answers, clap parses the same arguments to
        /// the same result.
        #[test]
        fn the_fast_path_agrees_with_clap(
            args in proptest::collection::vec(proptest::sample::select(TOKENS), 0..8)
        ) {
            let args = os(&args);
            if let Some(fast) = per_disk(&args) {
                match clap(&args) {
                    Ok(c) => prop_assert_eq!(format!("{fast:?}"), format!("{c:?}")),
                    Err(e) => prop_assert!(false, "clap refused {:?}: {}", args, e),
                }
            }
        }

        /// The same near the plain form: options (valid, invalid and
        /// repeated values) and `--json` put in anywhere, so that most cases
        /// are ones the fast path answers.
        #[test]
        fn the_fast_path_agrees_with_clap_near_the_plain_form(
            release in any::<bool>(),
            path in proptest::sample::select(&["backend/vbd/1/51712", "/local/domain/0/backend/vbd/2/768", "a b", "-b", ""][..]),
            options in proptest::collection::vec((
                proptest::sample::select(&["--lock-dir", "--script-dir", "--flavour", "--flavor", "--script-timeout", "--store-timeout", "--lock-timeout", "--json", "--bogus"][..]),
                proptest::sample::select(&["/tmp/l", "linux", "netbsd", "bsd", "0", "0.5", "86400", "86401", "nan", "", "-1"][..]),
                0usize..8,
            ), 0..4),
        ) {
            let mut args = vec![if release { "release" } else { "prepare" }, path];
            for (name, value, at) in options {
                let at = at % (args.len() + 1);
                if name == "--json" {
                    args.insert(at, name);
                } else {
                    args.insert(at, value);
                    args.insert(at, name);
                }
            }
            let args = os(&args);
            if let Some(fast) = per_disk(&args) {
                match clap(&args) {
                    Ok(c) => prop_assert_eq!(format!("{fast:?}"), format!("{c:?}")),
                    Err(e) => prop_assert!(false, "clap refused {:?}: {}", args, e),
                }
            }
        }
    }
}
