//! Which sectors of its lower devices a device-mapper device maps, from its
//! live table (what `dmsetup table` prints; read by `sys::dm` with
//! `DM_TABLE_STATUS`). Pure, so it is tested without device-mapper.
//!
//! Targets whose parameters say where they map:
//! - `linear <dev> <offset>`: `length` sectors from `offset`;
//! - `striped <n> <chunk> <dev> <offset>...`: on each of the `n` devices,
//!   `length / n` sectors (rounded up) from its offset;
//! - `crypt <cipher> <key> <iv_offset> <dev> <offset> ...`, `flakey <dev>
//!   <offset> ...`: `length` sectors from `offset`;
//! - `delay <dev> <offset> <delay> [<dev> <offset> <delay> ...]`: each
//!   device, `length` sectors from its offset;
//! - `zero`, `error`: no device.
//!
//! Targets whose blocks the kernel keeps apart from their neighbours' on
//! the same lower device ([`Extent::Arbitrated`]): `thin` (each thin device
//! of a pool has blocks of its own; shared snapshot blocks are copied on
//! write) and `snapshot`, `snapshot-origin`, `snapshot-merge` (an LVM
//! snapshot and its origin over the origin's `-real` device: writes to the
//! origin copy the old blocks to the snapshot's store first). Two LVs of one
//! thin pool, or an LV and its snapshot, are side by side.
//!
//! Every other target (mirror, raid, cache, integrity,
//! multipath, verity...), and a known one whose parameters do not parse,
//! covers the whole of every device it names (`major:minor`).
use crate::sharing::DevNum;

/// One target of a table, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// First sector of the device it serves.
    pub start: u64,
    /// Sectors.
    pub length: u64,
    /// `linear`, `striped`, ...
    pub kind: String,
    /// Its table parameters.
    pub params: String,
}

/// Sectors of a lower device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// `size` sectors from `start`.
    Range { start: u64, size: u64 },
    /// All of it: a target we cannot reason about.
    Whole,
    /// Blocks the kernel keeps apart from every other such device on the
    /// same lower device (thin, snapshot): extent unknown, but disjoint.
    Arbitrated,
}

/// Every (lower device, extent) a table maps onto, in table order.
pub fn lower_extents(targets: &[Target]) -> Vec<(DevNum, Extent)> {
    let mut out = Vec::new();
    for t in targets {
        match known(t) {
            Some(v) => out.extend(v),
            None => out.extend(
                t.params
                    .split_whitespace()
                    .filter_map(DevNum::parse_decimal)
                    .map(|d| (d, Extent::Whole)),
            ),
        }
    }
    out
}

/// The extents of a target whose parameters we can reason about; `None`
/// for any other (or parameters that do not parse).
fn known(t: &Target) -> Option<Vec<(DevNum, Extent)>> {
    let a: Vec<&str> = t.params.split_whitespace().collect();
    let dev = |i: usize| a.get(i).and_then(|s| DevNum::parse_decimal(s));
    let num = |i: usize| a.get(i).and_then(|s| s.parse::<u64>().ok());
    let range = |start: u64, size: u64| Extent::Range { start, size };
    match t.kind.as_str() {
        "zero" | "error" => Some(Vec::new()),
        "thin" | "snapshot" | "snapshot-origin" | "snapshot-merge" => {
            let v: Vec<_> = a
                .iter()
                .filter_map(|s| DevNum::parse_decimal(s))
                .map(|d| (d, Extent::Arbitrated))
                .collect();
            (!v.is_empty()).then_some(v)
        }
        "linear" | "flakey" => Some(vec![(dev(0)?, range(num(1)?, t.length))]),
        "crypt" => Some(vec![(dev(3)?, range(num(4)?, t.length))]),
        "striped" => {
            let n = num(0)?;
            if n == 0 || a.len() < 2 + 2 * usize::try_from(n).ok()? {
                return None;
            }
            let per = t.length.div_ceil(n);
            (0..usize::try_from(n).ok()?)
                .map(|i| Some((dev(2 + 2 * i)?, range(num(3 + 2 * i)?, per))))
                .collect()
        }
        "delay" => {
            if a.is_empty() || !a.len().is_multiple_of(3) {
                return None;
            }
            (0..a.len() / 3)
                .map(|i| Some((dev(3 * i)?, range(num(3 * i + 1)?, t.length))))
                .collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(start: u64, length: u64, kind: &str, params: &str) -> Target {
        Target {
            start,
            length,
            kind: kind.into(),
            params: params.into(),
        }
    }
    fn d(major: u32, minor: u32) -> DevNum {
        DevNum { major, minor }
    }
    fn r(start: u64, size: u64) -> Extent {
        Extent::Range { start, size }
    }

    #[test]
    fn linear_segments_of_an_lv() {
        // An LV of two segments on one PV, and one on another.
        let tab = [
            t(0, 2048, "linear", "8:16 2048"),
            t(2048, 1024, "linear", "8:16 100000"),
            t(3072, 512, "linear", "8:32 2048"),
        ];
        assert_eq!(
            lower_extents(&tab),
            vec![
                (d(8, 16), r(2048, 2048)),
                (d(8, 16), r(100000, 1024)),
                (d(8, 32), r(2048, 512)),
            ]
        );
    }

    #[test]
    fn striped_crypt_delay_flakey() {
        assert_eq!(
            lower_extents(&[t(0, 3000, "striped", "2 128 8:16 2048 8:32 4096")]),
            vec![(d(8, 16), r(2048, 1500)), (d(8, 32), r(4096, 1500))]
        );
        // Rounded up: a stripe holds at least its share.
        assert_eq!(
            lower_extents(&[t(0, 7, "striped", "2 1 8:16 0 8:32 0")]),
            vec![(d(8, 16), r(0, 4)), (d(8, 32), r(0, 4))]
        );
        assert_eq!(
            lower_extents(&[t(
                0,
                409600,
                "crypt",
                "aes-xts-plain64 :64:logon:cryptsetup:abc 0 8:17 32768 1 allow_discards"
            )]),
            vec![(d(8, 17), r(32768, 409600))]
        );
        assert_eq!(
            lower_extents(&[t(0, 100, "delay", "8:16 10 0 8:32 20 5")]),
            vec![(d(8, 16), r(10, 100)), (d(8, 32), r(20, 100))]
        );
        assert_eq!(
            lower_extents(&[t(0, 100, "flakey", "8:16 7 1 0")]),
            vec![(d(8, 16), r(7, 100))]
        );
        assert!(lower_extents(&[t(0, 100, "zero", ""), t(100, 5, "error", "")]).is_empty());
    }

    #[test]
    fn thin_and_snapshot_targets_are_arbitrated_by_the_kernel() {
        assert_eq!(
            lower_extents(&[t(0, 100, "thin", "253:2 7")]),
            vec![(d(253, 2), Extent::Arbitrated)]
        );
        assert_eq!(
            lower_extents(&[t(0, 100, "snapshot-origin", "253:1")]),
            vec![(d(253, 1), Extent::Arbitrated)]
        );
        assert_eq!(
            lower_extents(&[t(0, 100, "snapshot", "253:1 253:3 P 8")]),
            vec![
                (d(253, 1), Extent::Arbitrated),
                (d(253, 3), Extent::Arbitrated)
            ]
        );
        // No device named: as any target that does not parse.
        assert_eq!(lower_extents(&[t(0, 100, "thin", "x 7")]), vec![]);
    }

    #[test]
    fn other_targets_cover_the_whole_of_their_devices() {
        assert_eq!(
            lower_extents(&[t(
                0,
                100,
                "mirror",
                "core 1 1024 2 8:16 0 8:32 0 1 handle_errors"
            )]),
            vec![(d(8, 16), Extent::Whole), (d(8, 32), Extent::Whole)]
        );
        assert_eq!(
            lower_extents(&[t(0, 100, "thin-pool", "253:1 253:2 128 0 0")]),
            vec![(d(253, 1), Extent::Whole), (d(253, 2), Extent::Whole)]
        );
        // Known targets with parameters that do not parse: the same.
        for (kind, params) in [
            ("linear", "8:16"),
            ("linear", "8:16 x"),
            ("striped", "3 128 8:16 0 8:32 0"),
            ("striped", "0 128 8:16 0"),
            ("crypt", "aes 8:16"),
            ("delay", "8:16 0"),
        ] {
            let got = lower_extents(&[t(0, 100, kind, params)]);
            assert!(
                got.iter().all(|(_, e)| *e == Extent::Whole),
                "{kind} {params}: {got:?}"
            );
            assert!(got.contains(&(d(8, 16), Extent::Whole)), "{kind} {params}");
        }
    }
}
