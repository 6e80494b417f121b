TITLE="overlap: partition vs whole disk, dm over a mounted disk, md member, swap; xl create and the CLI"
# A scenario of the real-Xen suite (sourced in dom0 after lib.sh, which
# gives guest_cfg, domid, exists, image, outcome; $MODE is stock or dropin).
# Needs losetup -P, sfdisk, dmsetup, mdadm, mkswap/swapon, mkfs.ext4.
#
# Xen's own script compares exact device numbers among backend/vbd entries
# and dom0's /proc/mounts: every case below is a double writer there. The
# drop-in (xenblock) decides on overlap and refuses each one, naming the
# other user.
EXPECT_stock="part-vs-disk: CREATED; disk-vs-part: CREATED; disk-under-mounted-dm: CREATED; two-lvs: CREATED; md-member: CREATED; swap: CREATED; cli: refused (part of)"
EXPECT_dropin="part-vs-disk: refused (part of); disk-vs-part: refused (contains); disk-under-mounted-dm: refused (held by, mounted); two-lvs: CREATED; md-member: refused (held by md); swap: refused (active swap); cli: refused (part of)"

# try NAME TARGET MODE WANT: xl create -p a guest with TARGET; prints
# "CREATED" or "refused (WANT)" when xl's error says WANT, else
# "refused (other: <first error line>)". Destroys the guest.
try() {
    local name=$1 target=$2 access=$3 want=$4
    guest_cfg "$name" 'true' "format=raw,vdev=xvdb,access=$access,target=$target"
    xl create -p "/tmp/$name.cfg" >"/tmp/$name.err" 2>&1
    local rc=$?
    sed "s/^/  $name: /" "/tmp/$name.err" >&2
    if [ $rc -eq 0 ] && exists "$name"; then
        xl destroy "$name" >/dev/null 2>&1
        echo "CREATED"
        return
    fi
    exists "$name" && xl destroy "$name" >/dev/null 2>&1
    # libxl logs the hotplug-error of the failed backend.
    if grep -qE "$want" "/tmp/$name.err"; then
        echo "refused (${5:-$want})"
    else
        echo "refused (other: $(xl_err "/tmp/$name.err"))"
    fi
}

# holder NAME TARGET: a first guest that holds TARGET read-write (paused).
holder() {
    guest_cfg "$1" 'true' "format=raw,vdev=xvda,access=rw,target=$2"
    xl create -p "/tmp/$1.cfg" >"/tmp/$1.err" 2>&1 || { echo "holder $1 on $2 failed: $(xl_err "/tmp/$1.err")" >&2; return 1; }
}

scenario() {
    local res="" r img dev lv md a b c mnt
    for tool in sfdisk dmsetup mdadm mkswap swapon mkfs.ext4; do
        command -v $tool >/dev/null || { outcome "missing tool $tool in dom0"; return; }
    done
    img=$(image s-stack.img 64M)
    printf 'label: dos\n,24M\n,24M\n' | sfdisk -q "$img" || { outcome "sfdisk failed"; return; }
    dev=$(losetup -P -f --show "$img") || { outcome "losetup -P failed"; return; }
    for i in 1 2 3 4 5 6 7 8 9 10; do [ -b "${dev}p2" ] && break; sleep 0.2; done
    [ -b "${dev}p1" ] && [ -b "${dev}p2" ] || { losetup -d "$dev"; outcome "no partitions on $dev"; return; }

    # 1. a partition while another guest has the whole disk, and the reverse.
    holder ovl1 "$dev" || { losetup -d "$dev"; outcome "holder failed"; return; }
    r=$(try ovl2 "${dev}p1" rw "is part of $dev, which domain" "part of"); res="$res; part-vs-disk: $r"
    xl destroy ovl1
    holder ovl1 "${dev}p1" || { losetup -d "$dev"; outcome "holder failed"; return; }
    r=$(try ovl2 "$dev" rw "$dev contains ${dev}p1, which domain" "contains"); res="$res; disk-vs-part: $r"
    xl destroy ovl1

    # 2. a device-mapper device (what LVM makes) over partition 2, mounted in
    #    dom0; the whole disk asked read-write.
    lv=s-lv-$$
    # dom0 has no udev: `dmsetup mknodes` makes the /dev/mapper nodes.
    dmsetup create "$lv" --table "0 $(blockdev --getsz "${dev}p2") linear ${dev}p2 0" &&
        dmsetup mknodes && mkfs.ext4 -q -F "/dev/mapper/$lv" && mkdir -p /scratch/s-mnt && mount "/dev/mapper/$lv" /scratch/s-mnt
    r=$(try ovl2 "$dev" rw "held by dm-[0-9]+ \($lv\), mounted read-write on /scratch/s-mnt in dom0" "held by, mounted")
    res="$res; disk-under-mounted-dm: $r"
    umount /scratch/s-mnt 2>/dev/null; dmsetup remove "$lv" 2>/dev/null

    # 2b. two dm devices on disjoint halves of partition 2 (two LVs of one
    #     VG), each read-write to its own guest: both must start.
    local half; half=$(($(blockdev --getsz "${dev}p2") / 2))
    if dmsetup create "$lv-a" --table "0 $half linear ${dev}p2 0" &&
        dmsetup create "$lv-b" --table "0 $half linear ${dev}p2 $half" &&
        dmsetup mknodes && holder ovl1 "/dev/mapper/$lv-a"; then
        r=$(try ovl2 "/dev/mapper/$lv-b" rw "-" "-")
        xl destroy ovl1
    else
        r="dmsetup or the first guest failed"
    fi
    res="$res; two-lvs: $r"
    dmsetup remove "$lv-a" 2>/dev/null; dmsetup remove "$lv-b" 2>/dev/null

    # 3. an md RAID1 member.
    a=$(losetup -f --show "$(image s-md-a.img 32M)")
    b=$(losetup -f --show "$(image s-md-b.img 32M)")
    md=/dev/md/s-md-$$
    if mdadm --create "$md" --run --quiet --level=1 --raid-devices=2 --metadata=1.2 "$a" "$b" 2>/dev/null; then
        r=$(try ovl2 "$a" rw "held by /dev/md[0-9]+ \(raid1\)" "held by md")
        mdadm --stop "$md" >/dev/null 2>&1
    else
        r="mdadm --create failed"
    fi
    res="$res; md-member: $r"
    losetup -d "$a" "$b"

    # 4. dom0's active swap, asked read-only.
    if mkswap -q "${dev}p1" && swapon "${dev}p1"; then
        r=$(try ovl2 "${dev}p1" ro "${dev}p1 is active swap in dom0" "active swap")
        swapoff "${dev}p1"
    else
        r="swapon failed"
    fi
    res="$res; swap: $r"

    # 5. the CLI against dom0's xenstore: a backend for partition 1 while
    #    another (not running) domain's backend has the whole disk rw.
    c=$(stat -L -c '%t:%T' "$dev")
    local be1=/local/domain/0/backend/vbd/901/51712 be2=/local/domain/0/backend/vbd/900/51712
    xenstore-write /local/domain/901/vm /vm/s-a /local/domain/900/vm /vm/s-b \
        $be1/params "$dev" $be1/mode w $be1/frontend-id 901 $be1/state 4 $be1/physical-device "$c" \
        $be2/params "${dev}p1" $be2/mode w $be2/frontend-id 900 $be2/state 2 $be2/type phy
    if xenblock prepare backend/vbd/900/51712 >/tmp/s-cli.out 2>&1; then
        r="CONNECTED"
    elif grep -q "is part of $dev, which domain 901 has read-write (backend/vbd/901/51712)" /tmp/s-cli.out &&
        [ "$(xenstore-read $be2/hotplug-status)" = busy ]; then
        r="refused (part of)"
    else
        r="refused (other: $(head -c 200 /tmp/s-cli.out))"
    fi
    sed 's/^/  cli: /' /tmp/s-cli.out >&2
    res="$res; cli: $r"
    xenstore-rm /local/domain/0/backend/vbd/900 /local/domain/0/backend/vbd/901 /local/domain/900 /local/domain/901 2>/dev/null

    losetup -d "$dev"
    outcome "${res#; }"
}
