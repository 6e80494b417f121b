TITLE="overlap, device-mapper: the disk under a mounted dm device is refused; two dm devices on disjoint halves both start"
# Known upstream bug, measured here: Xen's script does not look at what is
# stacked on a device, so the disk under a device-mapper device mounted in
# dom0 (what LVM makes) is handed out read-write (CONFORMANCE.md, "Overlap
# rule"). Two dm devices over disjoint sectors (two LVs of one VG) share no
# block: both must start in every mode.
EXPECT_stock="disk-under-mounted-dm: CREATED; two-lvs: CREATED"
EXPECT_dropin="disk-under-mounted-dm: refused (held by, mounted); two-lvs: CREATED"
scenario() {
    local res="" r dev miss lv=s21-lv-$$ half
    miss=$(need_tools sfdisk dmsetup mkfs.ext4)
    [ -z "$miss" ] || { outcome "missing tool $miss in dom0"; return; }
    dev=$(partitioned_loop "$(image s21.img 64M)") || { outcome "no partitioned loop device"; return; }

    # A dm device over partition 2, mounted in dom0; the whole disk asked rw.
    # dom0 has no udev: `dmsetup mknodes` makes the /dev/mapper nodes.
    if dmsetup create "$lv" --table "0 $(blockdev --getsz "${dev}p2") linear ${dev}p2 0" &&
        dmsetup mknodes && mkfs.ext4 -q -F "/dev/mapper/$lv" && mkdir -p /scratch/s21-mnt &&
        mount "/dev/mapper/$lv" /scratch/s21-mnt; then
        r=$(overlap_try ovl2 "$dev" rw "held by dm-[0-9]+ \($lv\), mounted read-write on /scratch/s21-mnt in dom0" "held by, mounted")
    else
        r="dmsetup or mount failed"
    fi
    res="$res; disk-under-mounted-dm: $r"
    umount /scratch/s21-mnt 2>/dev/null; dmsetup remove "$lv" 2>/dev/null

    # Two dm devices on disjoint halves of partition 2, each rw to its own guest.
    half=$(($(blockdev --getsz "${dev}p2") / 2))
    if dmsetup create "$lv-a" --table "0 $half linear ${dev}p2 0" &&
        dmsetup create "$lv-b" --table "0 $half linear ${dev}p2 $half" &&
        dmsetup mknodes && overlap_hold ovl1 "/dev/mapper/$lv-a"; then
        r=$(overlap_try ovl2 "/dev/mapper/$lv-b" rw "-" "-")
        xl destroy ovl1
    else
        r="dmsetup or the first guest failed"
    fi
    res="$res; two-lvs: $r"
    dmsetup remove "$lv-a" 2>/dev/null; dmsetup remove "$lv-b" 2>/dev/null
    dmsetup mknodes 2>/dev/null

    losetup -d "$dev"
    outcome "${res#; }"
}
