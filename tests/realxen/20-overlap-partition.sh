TITLE="overlap, partitions: a partition vs its whole disk (both ways), dom0's active swap, the CLI against dom0's xenstore"
# Known upstream bug, measured here: Xen's script compares exact device
# numbers among backend/vbd entries and dom0's /proc/mounts only, so a
# partition of a disk another guest has read-write (or the reverse), and
# dom0's active swap, are all handed out: a second writer (CONFORMANCE.md,
# "Overlap rule"). The CLI case does not go through Xen's script: it is
# xenblock's answer in every mode.
EXPECT_stock="part-vs-disk: CREATED; disk-vs-part: CREATED; swap: CREATED; cli: refused (part of)"
EXPECT_dropin="part-vs-disk: refused (part of); disk-vs-part: refused (contains); swap: refused (active swap); cli: refused (part of)"
scenario() {
    local res="" r dev miss
    miss=$(need_tools sfdisk mkswap swapon)
    [ -z "$miss" ] || { outcome "missing tool $miss in dom0"; return; }
    dev=$(partitioned_loop "$(image s20.img 64M)") || { outcome "no partitioned loop device"; return; }

    # A partition while another guest has the whole disk, and the reverse.
    overlap_hold ovl1 "$dev" || { losetup -d "$dev"; outcome "holder failed"; return; }
    r=$(overlap_try ovl2 "${dev}p1" rw "is part of $dev, which domain" "part of"); res="$res; part-vs-disk: $r"
    xl destroy ovl1
    overlap_hold ovl1 "${dev}p1" || { losetup -d "$dev"; outcome "holder failed"; return; }
    r=$(overlap_try ovl2 "$dev" rw "$dev contains ${dev}p1, which domain" "contains"); res="$res; disk-vs-part: $r"
    xl destroy ovl1

    # dom0's active swap, asked read-only.
    if mkswap -q "${dev}p1" && swapon "${dev}p1"; then
        r=$(overlap_try ovl2 "${dev}p1" ro "${dev}p1 is active swap in dom0" "active swap")
        swapoff "${dev}p1"
    else
        r="swapon failed"
    fi
    res="$res; swap: $r"

    # The CLI against dom0's xenstore: a backend for partition 1 while another
    # (not running) domain's backend has the whole disk read-write.
    local c be1=/local/domain/0/backend/vbd/901/51712 be2=/local/domain/0/backend/vbd/900/51712
    c=$(stat -L -c '%t:%T' "$dev")
    xenstore-write /local/domain/901/vm /vm/s-a /local/domain/900/vm /vm/s-b \
        $be1/params "$dev" $be1/mode w $be1/frontend-id 901 $be1/state 4 $be1/physical-device "$c" \
        $be2/params "${dev}p1" $be2/mode w $be2/frontend-id 900 $be2/state 2 $be2/type phy
    if xenblock prepare backend/vbd/900/51712 >/tmp/s20-cli.out 2>&1; then
        r="CONNECTED"
    elif grep -q "is part of $dev, which domain 901 has read-write (backend/vbd/901/51712)" /tmp/s20-cli.out &&
        [ "$(xenstore-read $be2/hotplug-status)" = busy ]; then
        r="refused (part of)"
    else
        r="refused (other: $(head -c 200 /tmp/s20-cli.out))"
    fi
    sed 's/^/  cli: /' /tmp/s20-cli.out
    res="$res; cli: $r"
    xenstore-rm /local/domain/0/backend/vbd/900 /local/domain/0/backend/vbd/901 /local/domain/900 /local/domain/901 2>/dev/null
    rm -f /tmp/s20-cli.out

    losetup -d "$dev"
    outcome "${res#; }"
}
