//! xenblock: prepare and release Xen guest disks in-process.
//!
//! A toolstack (libxl, xenopsd, ...) calls [`Context::prepare`] where it would
//! have forked Xen's `block` hotplug script, and [`Context::release`] where it
//! would have run `block remove`. Everything is read from and written to
//! xenstore under the backend directory; see `DESIGN.md` §2 for the contract.

pub mod error;
pub mod ffi;
pub mod hotplug;
pub mod sharing;
pub mod store;
pub mod sys;

pub use error::{Error, ErrorKind, Result};
