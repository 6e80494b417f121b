//! Sentences for people: how the results of prepare, release and reconcile
//! print (the CLI, the demo and logs use these instead of Debug forms).

use crate::attach::{Prepared, Reconciled, Released};
use std::fmt;

impl fmt::Display for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prepared::Connected {
                physical_device,
                physical_device_path,
                node,
            } => {
                write!(f, "connected to {physical_device_path}")?;
                if let Some(pd) = physical_device {
                    write!(f, " (device {pd})")?;
                }
                if node.is_some() {
                    write!(f, ", a loop device attached over the file")?;
                }
                Ok(())
            }
            Prepared::AlreadyPrepared => {
                write!(
                    f,
                    "already prepared (physical-device is set); nothing changed"
                )
            }
            Prepared::Script => write!(f, "the custom hotplug script ran and succeeded"),
        }
    }
}

impl fmt::Display for Released {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Released::Detached(d) => write!(f, "detached loop device {d}"),
            Released::Nothing => write!(
                f,
                "nothing to undo (a block device, never prepared, or already released)"
            ),
            Released::LeftAlone(d) => write!(
                f,
                "left loop device {d} attached: it now serves another file, not this backend's"
            ),
            Released::Script => write!(f, "the custom hotplug script ran and succeeded"),
        }
    }
}

impl fmt::Display for Reconciled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |k: usize| {
            if k == 1 {
                "loop device"
            } else {
                "loop devices"
            }
        };
        write!(
            f,
            "{} orphaned {} detached, {} in use left alone",
            self.detached.len(),
            n(self.detached.len()),
            self.kept.len()
        )
    }
}

impl fmt::Display for crate::error::ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::error::ErrorKind::*;
        f.write_str(match self {
            InvalidArgument => "invalid argument",
            NotFound => "not found",
            Busy => "refused by the sharing rule",
            Store => "xenstore error",
            Script => "custom script failed",
            Timeout => "timed out",
            BadState => "backend in the wrong state",
            Permission => "permission denied",
            Io => "system error",
            Unsupported => "not supported",
            Internal => "internal error",
            WouldBlock => "the hotplug lock is taken; try again",
            Cancelled => "cancelled before it started",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_print_as_sentences() {
        let p = Prepared::Connected {
            physical_device: Some("7:3".into()),
            physical_device_path: "/dev/loop3".into(),
            node: Some("/dev/loop3".into()),
        };
        assert_eq!(
            p.to_string(),
            "connected to /dev/loop3 (device 7:3), a loop device attached over the file"
        );
        assert_eq!(
            Released::Detached("/dev/loop0".into()).to_string(),
            "detached loop device /dev/loop0"
        );
        assert!(!Released::LeftAlone("/dev/loop1".into())
            .to_string()
            .contains("LeftAlone"));
        let r = Reconciled {
            detached: vec!["/dev/loop1".into()],
            kept: vec![],
        };
        assert_eq!(
            r.to_string(),
            "1 orphaned loop device detached, 0 in use left alone"
        );
    }
}
