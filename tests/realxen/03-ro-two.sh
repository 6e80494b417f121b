TITLE="the same file ro in two guests: both run, every loop device read-only"
# Both attach one read-only loop device per guest.
EXPECT_stock="2 of 2 guests read the disk; 2 loop device(s), 2 read-only"
EXPECT_dropin="2 of 2 guests read the disk; 2 loop device(s), 2 read-only"
scenario() {
    local img; img=$(image s03.img)
    echo XENBLOCK-RO-03 | dd of="$img" conv=notrunc 2>/dev/null
    local g
    for g in g1 g2; do
        guest_cfg $g 'echo "read: $(head -c 14 /dev/xvda)"' "format=raw,vdev=xvda,access=ro,target=$img"
        xl create -p /tmp/$g.cfg || { outcome "xl create of $g failed"; return; }
    done
    local loops ro=0 n=0 l
    loops=$(loops_of "$img")
    for l in $loops; do
        n=$((n + 1)); [ "$(cat /sys/block/${l#/dev/}/ro)" = 1 ] && ro=$((ro + 1))
    done
    echo "loop devices: $(echo $loops) ($ro of $n read-only)"
    xl unpause g1; xl unpause g2
    wait_gone g1 && wait_gone g2 || { outcome "guests did not finish"; return; }
    local ok=0
    for g in g1 g2; do
        sed "s/^/$g: /" "$(console_log $g)"
        grep -q 'read: XENBLOCK-RO-03' "$(console_log $g)" && ok=$((ok + 1))
    done
    outcome "$ok of 2 guests read the disk; $n loop device(s), $ro read-only"
}
