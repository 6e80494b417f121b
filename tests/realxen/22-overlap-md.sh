TITLE="overlap, md: a member of a running RAID1 array asked read-write is refused, naming the array"
# Known upstream bug, measured here: Xen's script does not look at what holds
# a device, so a member of dom0's running md array is handed out read-write
# (CONFORMANCE.md, "Overlap rule").
EXPECT_stock="md-member: CREATED"
EXPECT_dropin="md-member: refused (held by md)"
scenario() {
    local r a b md=/dev/md/s22-md-$$ miss
    miss=$(need_tools mdadm)
    [ -z "$miss" ] || { outcome "missing tool $miss in dom0"; return; }
    a=$(losetup -f --show "$(image s22-a.img 32M)") || { outcome "losetup failed"; return; }
    b=$(losetup -f --show "$(image s22-b.img 32M)") || { losetup -d "$a"; outcome "losetup failed"; return; }
    if mdadm --create "$md" --run --quiet --level=1 --raid-devices=2 --metadata=1.2 "$a" "$b"; then
        r=$(overlap_try ovl2 "$a" rw "held by /dev/md[0-9]+ \(raid1\)" "held by md")
        mdadm --stop "$md" >/dev/null 2>&1
    else
        r="mdadm --create failed"
    fi
    losetup -d "$a" "$b"
    outcome "md-member: $r"
}
