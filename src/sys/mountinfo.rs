//! Mounted filesystems from `/proc/self/mountinfo` (Linux), which carries the
//! device number of each mount directly, so no path resolution is needed.
//!
//! Line format (proc(5)):
//! `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
//! — mount id, parent id, `major:minor` (decimal), root, mount point, mount
//! options, optional fields, `-`, filesystem type, source, superblock options.
use crate::error::{Error, Result};
use crate::sharing::{DevNum, Mount};

/// Decode the octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash) the kernel uses in mountinfo fields. A backslash not
/// followed by three octal digits is kept as is.
pub(crate) fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |j: usize| b.get(j).is_some_and(|c| (b'0'..=b'7').contains(c));
        if b[i] == b'\\' && octal(i + 1) && octal(i + 2) && octal(i + 3) {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when the comma-separated option list contains exactly `ro`.
fn has_ro(options: &str) -> bool {
    options.split(',').any(|o| o == "ro")
}

/// Parse one mountinfo line; `None` when it is malformed.
fn parse_line(line: &str) -> Option<Mount> {
    // Split on single spaces: an empty source field must keep its place.
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let dev = DevNum::parse_decimal(fields[2])?;
    let mount_point = fields[4];
    if !mount_point.starts_with('/') {
        return None;
    }
    // After the separator: filesystem type, source, superblock options.
    let super_options = fields.get(sep + 3)?;
    Some(Mount {
        dev,
        mount_point: unescape(mount_point),
        read_only: has_ro(fields[5]) || has_ro(super_options),
    })
}

/// A mount with what [`parse`] leaves out: the filesystem type, the source
/// and the superblock options (unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    pub mount: Mount,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

/// Every well-formed line of a mountinfo text, in full.
pub fn parse_full(text: &str) -> Vec<Full> {
    text.lines()
        .filter_map(|line| {
            let mount = parse_line(line)?;
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(Full {
                mount,
                fstype: unescape(fields.get(sep + 1)?),
                source: unescape(fields.get(sep + 2)?),
                super_options: unescape(fields.get(sep + 3)?),
            })
        })
        .collect()
}

/// The mounts whose device number is anonymous (major 0: btrfs, which
/// lists a number of its own, not its devices') but whose source names a
/// path: the candidates for [`parse`]'s caller to identify by that source,
/// as Xen's script does.
pub fn named_sources(text: &str) -> Vec<Full> {
    text.lines()
        .filter(|l| l.split(' ').nth(2).is_some_and(|d| d.starts_with("0:")))
        .flat_map(parse_full)
        .filter(|f| f.source.starts_with('/'))
        .collect()
}

/// Every well-formed line of a mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// The mounts visible to this process, from `/proc/self/mountinfo`.
pub fn read_self() -> Result<Vec<Mount>> {
    const PATH: &str = "/proc/self/mountinfo";
    // std opens with O_CLOEXEC.
    let text = std::fs::read_to_string(PATH).map_err(|e| {
        Error::io(
            format!("cannot read {PATH} to check which devices are mounted (is /proc mounted?)"),
            e,
        )
    })?;
    Ok(parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 7:3 / /mnt/my\\040disk\\011x\\134y ro,relatime - ext4 /dev/loop3 ro
41 22 259:65536 / /srv rw,relatime shared:5 master:2 - xfs /dev/nvme0n1p1 ro,attr2
42 22 0:50 / /empty-src rw,relatime - tmpfs  rw,size=10k
43 22 8:1 / /rofs rw,robust - ext4 /dev/sda1 rw,noro
garbage line
44 22 8:x / /bad rw - ext4 /dev/sda2 rw
45 22 8:2 / /nosep rw shared:1 ext4 /dev/sda2 rw
46 22 8:3 / /short rw - ext4
47 22 8:4 / relative rw - ext4 /dev/sda4 rw

";

    #[test]
    fn parses_sample() {
        let m = parse(SAMPLE);
        let d = |a, b| DevNum { major: a, minor: b };
        let got: Vec<(DevNum, &str, bool)> = m
            .iter()
            .map(|m| (m.dev, m.mount_point.as_str(), m.read_only))
            .collect();
        assert_eq!(
            got,
            vec![
                (d(254, 1), "/", false),
                (d(0, 21), "/proc", false),
                (d(7, 3), "/mnt/my disk\tx\\y", true),
                (d(259, 65536), "/srv", true),
                (d(0, 50), "/empty-src", false),
                (d(8, 1), "/rofs", false),
            ]
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\012b"), "a\nb");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\9zz"), "\\9zz");
        assert_eq!(unescape("\\777"), "\\777");
        assert_eq!(unescape("\\"), "\\");
    }

    #[test]
    fn empty_and_garbage() {
        assert!(parse("").is_empty());
        assert!(parse("- - - - - - - -\n\n1\n").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_mounts() {
        let mounts = read_self().unwrap();
        assert!(mounts.iter().any(|m| m.mount_point == "/"), "{mounts:?}");
    }
}
