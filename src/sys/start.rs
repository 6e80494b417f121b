//! What a program needs before its first line when it skips Rust's own
//! start-up (`#![no_main]`), as the `xenblock` command does.
//!
//! Xen runs a hotplug helper once per disk and per event, so its start-up
//! is part of every attach. Rust's runtime start-up, on top of the C
//! library's, reads `/proc/self/maps` to find the main thread's stack guard
//! and maps an alternate signal stack for its stack-overflow message: about
//! 20 system calls and a dozen page faults, ≈ 80 µs on the benchmark VM
//! (BENCHMARKS.md). Of what it does, only two things change how a command
//! behaves, and [`init`] keeps them:
//!
//! - standard descriptors that were closed are opened on `/dev/null`, so
//!   that no file the program opens (a lock file) becomes its stdout;
//! - `SIGPIPE` is ignored, so that a write to a closed pipe is an error the
//!   program reports rather than a silent death.
//!
//! What is given up is the "has overflowed its stack" message (the process
//! still dies of `SIGSEGV` on its guard page). A program using this must
//! flush `stdout` itself before it returns from `main`.

use std::os::fd::IntoRawFd;

/// Prepare the process as Rust's runtime would (see the module doc).
/// Call it first thing in a `#![no_main]` program's `main`.
pub fn init() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd for the call; a zero
    // timeout returns at once, reporting a closed descriptor as POLLNVAL
    // (a raw poll, because a closed descriptor cannot be borrowed).
    if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) } >= 0 {
        for p in fds {
            if p.revents & libc::POLLNVAL != 0 {
                // The lowest free descriptor is this one: the earlier ones
                // are open (or were just opened) by now.
                let null = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null");
                // Without /dev/null there is nothing sound to run on.
                if null.map(|f| f.into_raw_fd()).ok() != Some(p.fd) {
                    std::process::abort();
                }
            }
        }
    }
    // SAFETY: SIG_IGN installs no handler, so nothing runs in signal
    // context; this is the single-threaded start of the program.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
}
