//! Writes xenblock(1), one page per subcommand (xenblock-prepare(1)...) and
//! the bash/zsh/fish completions from the same clap definition as the
//! program's `--help`. The package build runs it:
//!
//!     cargo run --release -p xenblock-cli --example xenblock-docs -- OUTDIR
//!
//! OUTDIR/man/*.1, OUTDIR/completions/{xenblock.bash,_xenblock,xenblock.fish}.

#[path = "../src/cli.rs"]
#[allow(dead_code)]
mod cli;

use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A roff section from text blocks of the form "  KEY  explanation",
/// continuation lines indented further (EXIT_CODES, the environment list).
fn tagged_section(title: &str, text: &str) -> String {
    let mut s = format!(".SH \"{title}\"\n");
    for line in text.lines().skip(1) {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if indent <= 2 {
            let (key, rest) = t.split_once("  ").unwrap_or((t, ""));
            s.push_str(&format!(".TP\n.B {}\n{}\n", esc(key), esc(rest.trim())));
        } else {
            s.push_str(&format!("{}\n", esc(t)));
        }
    }
    s
}

/// Escape text for roff: backslashes, and a leading dot or quote.
fn esc(t: &str) -> String {
    let t = t.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

fn page(cmd: &clap::Command, path: &Path, extra: &str) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if cmd.get_subcommands().next().is_some() {
        man.render_subcommands_section(&mut out)?;
    }
    out.write_all(extra.as_bytes())?;
    man.render_version_section(&mut out)?;
    std::fs::write(path, out)
}

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args_os().nth(1).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "usage: xenblock-docs OUTDIR",
        )
    })?);
    let mandir = out.join("man");
    let comp = out.join("completions");
    std::fs::create_dir_all(&mandir)?;
    std::fs::create_dir_all(&comp)?;
    let mut cmd = cli::Cli::command();
    cmd.build();
    let exit_status = tagged_section("EXIT STATUS", cli::EXIT_CODES);
    let env = tagged_section(
        "ENVIRONMENT",
        cli::AFTER_HELP.split("\n\n").next().unwrap_or_default(),
    );
    let files = ".SH FILES\n\
        .TP\n.B /etc/xen/scripts/block\nthe hotplug script libxl runs for disks; \
        \\fBxenblock enable\\fR makes it a link to xenblock\n\
        .TP\n.B /etc/xen/scripts/block.xen\\-orig\nXen's own script while xenblock is enabled \
        (a dpkg diversion)\n\
        .TP\n.B /var/run/xen\\-hotplug/block\nthe hotplug lock, shared with Xen's scripts\n";
    let see_also = ".SH \"SEE ALSO\"\n\\fBxenblock\\fR(3), \\fBxl\\fR(1), \
        \\fBxl\\-disk\\-configuration\\fR(5), \\fBdpkg\\-divert\\fR(1)\n";
    let main_extra = format!("{env}{exit_status}{files}{see_also}");
    let main = cmd.clone().long_about(
        "xenblock does in-process what Xen's block hotplug script does for a disk: it \
         resolves the file or block device a backend names, attaches a loop device for \
         files, applies the sharing rule (a disk given read-write to one guest is given \
         to no other), and writes physical-device, physical-device-path, node and \
         hotplug-status under the backend in xenstore. A toolstack can link libxenblock \
         (xenblock(3)) to do the same without forking. Installed as \
         /etc/xen/scripts/block (xenblock enable) it is run as `block add|remove` and \
         behaves as `xenblock hotplug`.",
    );
    page(&main, &mandir.join("xenblock.1"), &main_extra)?;
    for sub in cmd.get_subcommands() {
        // The generator runs once; leaking the few names is simpler than
        // turning on clap's `string` feature for the program.
        let name: &'static str = Box::leak(format!("xenblock-{}", sub.get_name()).into_boxed_str());
        let bin: &'static str = Box::leak(format!("xenblock {}", sub.get_name()).into_boxed_str());
        let sub = sub.clone().name(name).bin_name(bin);
        let after = sub
            .get_after_help()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let extra = if after == cli::EXIT_CODES {
            exit_status.clone()
        } else if after == cli::AUDIT_HELP {
            // What it checks, then its own exit status list.
            let (what, codes) = after.split_once("\n\n").unwrap_or((&after, ""));
            format!(
                ".SH NOTES\n{}\n{}",
                esc(what),
                tagged_section("EXIT STATUS", codes)
            )
        } else if after.is_empty() {
            String::new()
        } else {
            format!(".SH NOTES\n{}\n", esc(&after))
        };
        page(
            &sub,
            &mandir.join(format!("{name}.1")),
            &format!("{extra}.SH \"SEE ALSO\"\n\\fBxenblock\\fR(1)\n"),
        )?;
    }
    for (shell, name) in [
        (clap_complete::Shell::Bash, "xenblock.bash"),
        (clap_complete::Shell::Zsh, "_xenblock"),
        (clap_complete::Shell::Fish, "xenblock.fish"),
    ] {
        let mut f = std::fs::File::create(comp.join(name))?;
        clap_complete::generate(shell, &mut cmd.clone(), "xenblock", &mut f);
    }
    println!("wrote {} and {}", mandir.display(), comp.display());
    Ok(())
}
