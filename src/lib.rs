//! xenblock: prepare and release Xen guest disks in-process.
//!
//! A toolstack (libxl, xenopsd, ...) calls [`Context::prepare`] where it would
//! have forked Xen's `block` hotplug script, and [`Context::release`] where it
//! would have run `block remove`. Everything is read from and written to
//! xenstore under the backend directory; see `docs/contract.md` for the contract.
//!
//! ```no_run
//! let ctx = xenblock::Context::new(xenblock::Config::default())?;
//! ctx.prepare("backend/vbd/7/51712")?;
//! ctx.release("backend/vbd/7/51712")?;
//! # Ok::<(), xenblock::Error>(())
//! ```

pub mod attach;
pub mod audit;
pub mod context;
mod describe;
pub mod devkey;
pub mod dmtable;
pub mod error;
pub mod ffi;
pub mod hotplug;
pub mod imagelock;
pub mod index;
pub mod lock;
pub mod sharing;
pub mod spec;
pub mod store;
pub mod sys;
#[cfg(test)]
mod test_rng;
pub mod topology;
pub mod worker;

pub use attach::{Plan, Prepared, Reconciled, Released};
pub use audit::{Audit, Finding};
pub use context::{Config, Context, Flavour, LogLevel, Logger};
pub use error::{Error, ErrorKind, Result};
pub use worker::{Action, Op, Outcome};
