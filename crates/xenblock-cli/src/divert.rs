//! `xenblock enable` / `disable` / `status`: switch /etc/xen/scripts/block
//! between Xen's script and xenblock with dpkg-divert, so that upgrades of
//! Xen's package keep its script (under the diverted name) and do not undo
//! the switch. Every refusal changes nothing.

use crate::cli::exit;
use crate::Failure;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The script libxl runs for `script=block` (the default).
const SCRIPT: &str = "/etc/xen/scripts/block";
/// Where Xen's script lives while xenblock is enabled.
const DIVERTED: &str = "/etc/xen/scripts/block.xen-orig";
/// The package name the diversion is registered under (its maintainer
/// scripts undo it when the package is removed).
const PACKAGE: &str = "xenblock";

fn root() -> PathBuf {
    // Tests and staging may point everything at a scratch root.
    std::env::var_os("XENBLOCK_DIVERT_ROOT")
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn need_root() -> Result<(), Failure> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Failure::new(
            exit::PERMISSION,
            "switching /etc/xen/scripts/block needs root (dpkg-divert and /etc); run this as root. Nothing was changed.",
        ))
    }
}

fn dpkg_divert(args: &[&str]) -> Result<String, Failure> {
    let mut cmd = Command::new("dpkg-divert");
    let r = root();
    if r != Path::new("/") {
        cmd.arg("--root").arg(&r);
    }
    let out = cmd.args(args).output().map_err(|e| {
        Failure::new(
            exit::FAILED,
            format!(
                "cannot run dpkg-divert ({e}). enable/disable need Debian's dpkg; elsewhere \
                 link by hand, keeping a script in place: ln {SCRIPT} {DIVERTED} && \
                 ln -s /usr/sbin/xenblock {SCRIPT}.new && mv -T {SCRIPT}.new {SCRIPT}"
            ),
        )
    })?;
    if !out.status.success() {
        return Err(Failure::new(
            exit::FAILED,
            format!(
                "dpkg-divert {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Who diverts the script: None, Some("xenblock"), Some("LOCAL") or another package.
fn diverted_by() -> Result<Option<String>, Failure> {
    let who = dpkg_divert(&["--listpackage", SCRIPT])?;
    Ok((!who.is_empty()).then_some(who))
}

fn under_root(p: &str) -> PathBuf {
    root().join(p.trim_start_matches('/'))
}

/// Where the script path's symlink points, if it is a symlink.
fn link_target(p: &Path) -> Option<PathBuf> {
    std::fs::read_link(p).ok()
}

fn is_xenblock_link(p: &Path) -> bool {
    link_target(p).is_some_and(|t| t.file_name().is_some_and(|n| n == "xenblock"))
}

/// Whether `a` and `b` are one file under two names (a hard link): the
/// state in which Xen's script is both at its path and kept as the
/// diverted copy, which every step below passes through.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.symlink_metadata(), b.symlink_metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Put the file `from` at `script` too (a hard link), replacing what is
/// there in one rename: `script` never goes missing.
fn put_back(from: &Path, script: &Path) -> Result<(), Failure> {
    let tmp = script.with_file_name(".block.xenblock-new");
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(from, &tmp)
        .and_then(|()| std::fs::rename(&tmp, script))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::new(
                exit::FAILED,
                format!(
                    "cannot put {} back at {}: {e}",
                    from.display(),
                    script.display()
                ),
            )
        })
}

pub fn enable(target: Option<&Path>) -> Result<(), Failure> {
    need_root()?;
    let target = match target {
        Some(t) => t.to_path_buf(),
        None => std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .map_err(|e| {
                Failure::new(
                    exit::FAILED,
                    format!("cannot tell where this program is ({e}); pass --target PATH"),
                )
            })?,
    };
    // `disable` and `status` know the link as xenblock's by its target's
    // name: a link to any other name could not be taken back.
    if target.file_name().is_none_or(|n| n != "xenblock") {
        return Err(Failure::new(
            exit::FAILED,
            format!(
                "--target {}: the program must be named xenblock (disable and status \
                 recognise the link by that name). Give the path of a file or symlink \
                 named xenblock, e.g. /usr/local/sbin/xenblock linked to it. Nothing was \
                 changed.",
                target.display()
            ),
        ));
    }
    if !target.is_absolute() || !under_root(&target.to_string_lossy()).is_file() {
        return Err(Failure::new(
            exit::FAILED,
            format!(
                "{} is not an installed xenblock program (give an absolute path with --target). \
                 Nothing was changed.",
                target.display()
            ),
        ));
    }
    let script = under_root(SCRIPT);
    match diverted_by()?.as_deref() {
        Some(PACKAGE) => {
            if link_target(&script).as_deref() == Some(target.as_path()) {
                println!(
                    "already enabled: {SCRIPT} runs {} (Xen's script is {DIVERTED}); nothing changed",
                    target.display()
                );
                return Ok(());
            }
            let diverted = under_root(DIVERTED);
            if script.symlink_metadata().is_ok()
                && !is_xenblock_link(&script)
                && !same_file(&script, &diverted)
            {
                return Err(Failure::new(
                    exit::FAILED,
                    format!(
                        "{SCRIPT} is diverted for xenblock but something else now sits there \
                         (not a link to xenblock); move it away and run `xenblock enable` again, \
                         or `xenblock disable` after removing it. Nothing was changed."
                    ),
                ));
            }
            link(&target, &script)?;
            println!(
                "enabled (link repaired): {SCRIPT} runs {}; Xen's script is {DIVERTED}",
                target.display()
            );
            return Ok(());
        }
        Some(other) => {
            let who = if other == "LOCAL" {
                "a local diversion (dpkg-divert --local)".to_string()
            } else {
                format!("package {other}")
            };
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{SCRIPT} is already diverted by {who}; xenblock does not stack \
                     diversions. Undo that one first (dpkg-divert --list {SCRIPT}). \
                     Nothing was changed."
                ),
            ));
        }
        None => {}
    }
    match script.symlink_metadata() {
        Err(_) => {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{SCRIPT} does not exist: Xen's tools are not installed here (Debian: \
                     apt install xen-utils-common), so there is nothing to switch. \
                     Nothing was changed."
                ),
            ))
        }
        Ok(_) if is_xenblock_link(&script) => {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{SCRIPT} already links to xenblock but no diversion is registered (it \
                     was linked by hand). Put Xen's script back first (it is a conffile \
                     of xen-utils-common, and disk hotplugs fail until it is back): rm \
                     {SCRIPT} && apt-get install --reinstall -o \
                     Dpkg::Options::=--force-confmiss xen-utils-common; then run `xenblock \
                     enable`. Nothing was changed."
                ),
            ))
        }
        Ok(_) => {}
    }
    // Xen's script stays at its path throughout: it is first kept under
    // the diverted name too (a hard link), the diversion is registered
    // without moving anything, and only then does the link to xenblock
    // replace it, in one rename. A failure at any step leaves a state
    // that `enable` and `disable` both pick up again.
    let diverted = under_root(DIVERTED);
    let made_copy = match diverted.symlink_metadata() {
        Err(_) => {
            std::fs::hard_link(&script, &diverted).map_err(|e| {
                Failure::new(
                    exit::FAILED,
                    format!("cannot keep Xen's script as {DIVERTED}: {e}. Nothing was changed."),
                )
            })?;
            true
        }
        Ok(_) if same_file(&script, &diverted) => false,
        Ok(_) => {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{DIVERTED} exists already and is not Xen's script at {SCRIPT}; move it \
                     away and run `xenblock enable` again. Nothing was changed."
                ),
            ))
        }
    };
    if let Err(f) = dpkg_divert(&[
        "--package",
        PACKAGE,
        "--no-rename",
        "--divert",
        DIVERTED,
        "--add",
        SCRIPT,
    ]) {
        if made_copy {
            let _ = std::fs::remove_file(&diverted);
        }
        return Err(Failure::new(
            f.code,
            format!(
                "{}; {SCRIPT} is still Xen's script. Run `xenblock enable` again once \
                 dpkg-divert works.",
                f.message
            ),
        ));
    }
    if let Err(f) = link(&target, &script) {
        return Err(Failure::new(
            f.code,
            format!(
                "{}; {SCRIPT} is still Xen's script (the diversion is registered). Run \
                 `xenblock enable` again to finish, or `xenblock disable` to undo.",
                f.message
            ),
        ));
    }
    println!(
        "enabled: {SCRIPT} now runs {}; Xen's script is kept as {DIVERTED}. \
         `xenblock disable` switches back.",
        target.display()
    );
    Ok(())
}

/// Create (or replace) the symlink atomically: link beside it, rename over.
fn link(target: &Path, script: &Path) -> Result<(), Failure> {
    let tmp = script.with_file_name(".block.xenblock-new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, script))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::new(
                exit::FAILED,
                format!(
                    "cannot link {} to {}: {e}",
                    script.display(),
                    target.display()
                ),
            )
        })
}

pub fn disable() -> Result<(), Failure> {
    need_root()?;
    let script = under_root(SCRIPT);
    match diverted_by()?.as_deref() {
        None => {
            if is_xenblock_link(&script) {
                return Err(Failure::new(
                    exit::FAILED,
                    format!(
                        "{SCRIPT} links to xenblock but no diversion is registered (it was \
                         linked by hand), so Xen's script is not kept anywhere. Restore it \
                         (a conffile of xen-utils-common; disk hotplugs fail until it is \
                         back) with: rm {SCRIPT} && apt-get install --reinstall -o \
                         Dpkg::Options::=--force-confmiss xen-utils-common. Nothing was \
                         changed."
                    ),
                ));
            }
            let diverted = under_root(DIVERTED);
            if same_file(&script, &diverted) {
                // The extra name a failed `enable` could not take back.
                let _ = std::fs::remove_file(&diverted);
            }
            if script.symlink_metadata().is_ok() {
                println!("not enabled: {SCRIPT} is Xen's own script; nothing changed");
            } else {
                println!(
                    "not enabled: {SCRIPT} does not exist (Xen's tools not installed); \
                     nothing changed"
                );
            }
            Ok(())
        }
        Some(PACKAGE) => {
            // Xen's script goes back first (a hard link of the diverted
            // copy, renamed over the link: the path never goes missing),
            // then the diversion is dropped without moving anything, then
            // the extra name is removed. A failure at any step leaves a
            // state that `disable` and `enable` both pick up again.
            let diverted = under_root(DIVERTED);
            let have_xen = diverted.symlink_metadata().is_ok();
            let present = script.symlink_metadata().is_ok();
            if present && !is_xenblock_link(&script) && !same_file(&script, &diverted) {
                return Err(Failure::new(
                    exit::FAILED,
                    format!(
                        "{SCRIPT} is not the link to xenblock that `enable` made \
                         (something replaced it); move it away and run `xenblock \
                         disable` again. Nothing was changed."
                    ),
                ));
            }
            if have_xen && !same_file(&script, &diverted) {
                put_back(&diverted, &script)?;
            }
            dpkg_divert(&["--package", PACKAGE, "--no-rename", "--remove", SCRIPT]).map_err(
                |f| {
                    let now = if have_xen {
                        "Xen's script is back in place"
                    } else {
                        "nothing else was changed"
                    };
                    Failure::new(
                        f.code,
                        format!(
                            "{}; {now}, but the diversion is still registered. Run `xenblock \
                         disable` again once dpkg-divert works.",
                            f.message
                        ),
                    )
                },
            )?;
            if have_xen {
                // Only the extra name of the same file.
                if same_file(&script, &diverted) {
                    let _ = std::fs::remove_file(&diverted);
                }
                println!("disabled: {SCRIPT} is Xen's own script again");
            } else {
                if is_xenblock_link(&script) {
                    let _ = std::fs::remove_file(&script);
                }
                println!(
                    "disabled: the diversion is gone; {SCRIPT} is absent because Xen's \
                     script was not installed (it returns with xen-utils-common)"
                );
            }
            Ok(())
        }
        Some(other) => Err(Failure::new(
            exit::FAILED,
            format!(
                "{SCRIPT} is diverted by {other}, not by xenblock; leaving it alone. \
                 Nothing was changed."
            ),
        )),
    }
}

pub fn status() -> Result<(), Failure> {
    let script = under_root(SCRIPT);
    let who = diverted_by()?;
    match (who.as_deref(), is_xenblock_link(&script)) {
        (Some(PACKAGE), true) => println!(
            "enabled: {SCRIPT} runs {} (Xen's script is {DIVERTED})",
            link_target(&script).unwrap_or_default().display()
        ),
        (Some(PACKAGE), false) if same_file(&script, &under_root(DIVERTED)) => println!(
            "half-switched: {SCRIPT} is Xen's script but the diversion for xenblock is still \
             registered; run `xenblock enable` or `xenblock disable` to finish"
        ),
        (Some(PACKAGE), false) => println!(
            "half-enabled: {SCRIPT} is diverted for xenblock but is not a link to it; \
             run `xenblock enable` to repair or `xenblock disable` to undo"
        ),
        (Some(other), _) => println!("not enabled: {SCRIPT} is diverted by {other}"),
        (None, true) => println!(
            "linked by hand: {SCRIPT} links to xenblock without a diversion (see `xenblock disable`)"
        ),
        (None, false) if script.exists() => {
            println!("not enabled: {SCRIPT} is Xen's own script")
        }
        (None, false) => println!("not enabled: {SCRIPT} does not exist (Xen's tools not installed)"),
    }
    let locks = crate::image_locks().map_err(|m| Failure::new(exit::USAGE, m))?;
    let from = match std::env::var_os(crate::IMAGE_LOCKS_ENV) {
        Some(v) if !v.is_empty() => crate::IMAGE_LOCKS_ENV,
        _ => "default",
    };
    println!(
        "image locks: {locks} ({from}, in this shell's environment; hotplugs use the \
         toolstack's: xendomains, libvirtd, xl; see docs/image-locks.md)"
    );
    Ok(())
}
