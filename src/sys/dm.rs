//! A device-mapper device's live table, from the kernel: `DM_TABLE_STATUS`
//! with `DM_STATUS_TABLE_FLAG` on `/dev/mapper/control`, the device named by
//! its number (what `dmsetup table` prints). The layout is the kernel's
//! `struct dm_ioctl` (312 bytes, then the result area) and
//! `struct dm_target_spec` (40 bytes, then the NUL-terminated parameters,
//! the next spec 8-byte aligned at `next` from the start of the area).
use crate::dmtable::Target;
use crate::sharing::DevNum;
use std::io;
use std::os::fd::AsRawFd;

const CONTROL: &str = "/dev/mapper/control";
const HEADER: usize = 312;
const SPEC: usize = 40;
const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
/// `DM_TABLE_STATUS` = `_IOWR(0xfd, 12, struct dm_ioctl)`.
const DM_TABLE_STATUS: nix::sys::ioctl::ioctl_num_type =
    nix::request_code_readwrite!(0xfd, 12, HEADER);
/// The result area grows up to this.
const MAX_BUFFER: usize = 4 << 20;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// The live table of device-mapper device `dev`.
pub fn table(dev: DevNum) -> io::Result<Vec<Target>> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(CONTROL)?;
    let mut size = 16 << 10;
    loop {
        // u64 words: the header's u64 field and the specs are 8-aligned.
        let mut buf = vec![0u64; size / 8];
        {
            // SAFETY: `buf` is `size` initialised bytes, and u8 has no
            // alignment or validity requirements.
            let b = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), size) };
            b[0..4].copy_from_slice(&4u32.to_ne_bytes()); // interface version 4.0.0
            b[12..16].copy_from_slice(&(size as u32).to_ne_bytes()); // data_size
            b[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes()); // data_start
            b[28..32].copy_from_slice(&DM_STATUS_TABLE_FLAG.to_ne_bytes()); // flags
            b[40..48].copy_from_slice(&dev.to_dev_t().to_ne_bytes()); // dev; no name, no uuid
        }
        // SAFETY: `control` is open for the call; the kernel reads and
        // writes at most `data_size` (= `size`) bytes of `buf`, which is
        // that long and 8-aligned.
        let r = unsafe { libc::ioctl(control.as_raw_fd(), DM_TABLE_STATUS, buf.as_mut_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let b = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), size) };
        if u32_at(b, 28) & DM_BUFFER_FULL_FLAG != 0 {
            if size >= MAX_BUFFER {
                return Err(io::Error::other("the table is larger than 4 MiB"));
            }
            size *= 4;
            continue;
        }
        return parse(b);
    }
}

/// The targets in a `DM_TABLE_STATUS` reply.
fn parse(b: &[u8]) -> io::Result<Vec<Target>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let start = u32_at(b, 16) as usize;
    let end = (u32_at(b, 12) as usize).min(b.len());
    let count = u32_at(b, 20);
    let area = b
        .get(start..end)
        .ok_or_else(|| bad("result area out of range"))?;
    let mut out = Vec::new();
    let mut at = 0usize;
    for _ in 0..count {
        let spec = area
            .get(at..at + SPEC)
            .ok_or_else(|| bad("target out of range"))?;
        let kind = &spec[24..40];
        let kind = &kind[..kind.iter().position(|&c| c == 0).unwrap_or(16)];
        let params = &area[at + SPEC..];
        let params = &params[..params
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| bad("unterminated parameters"))?];
        out.push(Target {
            start: u64_at(spec, 0),
            length: u64_at(spec, 8),
            kind: String::from_utf8_lossy(kind).into_owned(),
            params: String::from_utf8_lossy(params).into_owned(),
        });
        let next = u32_at(spec, 20) as usize;
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as the kernel lays it out.
    fn reply(targets: &[(u64, u64, &str, &str)]) -> Vec<u8> {
        let mut area = Vec::new();
        for (start, len, kind, params) in targets {
            let at = area.len();
            area.extend_from_slice(&start.to_ne_bytes());
            area.extend_from_slice(&len.to_ne_bytes());
            area.extend_from_slice(&0i32.to_ne_bytes());
            area.extend_from_slice(&0u32.to_ne_bytes()); // next, below
            let mut k = [0u8; 16];
            k[..kind.len()].copy_from_slice(kind.as_bytes());
            area.extend_from_slice(&k);
            area.extend_from_slice(params.as_bytes());
            area.push(0);
            while area.len() % 8 != 0 {
                area.push(0);
            }
            let next = area.len() as u32;
            area[at + 20..at + 24].copy_from_slice(&next.to_ne_bytes());
        }
        let mut b = vec![0u8; HEADER];
        b[12..16].copy_from_slice(&((HEADER + area.len()) as u32).to_ne_bytes());
        b[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes());
        b[20..24].copy_from_slice(&(targets.len() as u32).to_ne_bytes());
        b.extend_from_slice(&area);
        b
    }

    #[test]
    fn reply_layout() {
        let b = reply(&[(0, 2048, "linear", "8:16 2048"), (2048, 8, "zero", "")]);
        let t = parse(&b).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (
                t[0].start,
                t[0].length,
                t[0].kind.as_str(),
                t[0].params.as_str()
            ),
            (0, 2048, "linear", "8:16 2048")
        );
        assert_eq!(
            (t[1].start, t[1].kind.as_str(), t[1].params.as_str()),
            (2048, "zero", "")
        );
        // Cut short: an error, not a panic.
        assert!(parse(&b[..HEADER + 30]).is_err());
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "x86"))]
    fn request_code_is_the_kernels() {
        // _IOWR(0xfd, 12, 312 bytes), as in <linux/dm-ioctl.h> on x86 and arm.
        assert_eq!(DM_TABLE_STATUS, 0xc138_fd0c);
    }
}
