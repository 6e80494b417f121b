//! The only place for system calls, ioctls and `stat`: loop devices,
//! mountinfo, device numbers. Everything here is a small, typed, safe
//! wrapper; `unsafe` blocks carry a `// SAFETY:` line.
#[cfg(target_os = "linux")]
pub mod blockdev;
pub mod child;
#[cfg(target_os = "linux")]
pub mod diskseq;
#[cfg(target_os = "linux")]
pub mod dm;
pub mod fdreg;
pub mod fork;
#[cfg(target_os = "linux")]
pub mod loopdev;
pub mod mountinfo;
pub mod notify;
#[cfg(target_os = "linux")]
pub mod ofdlock;
#[cfg(target_os = "linux")]
pub mod procfile;
pub mod start;
pub mod stat;
