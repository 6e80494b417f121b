TITLE="device-mapper tables: two dm devices mapping the same sectors of one disk are not both rw; side by side both start"
# Known upstream bug, measured here: Xen's script compares device numbers
# only, so two dm devices whose tables map the same sectors of one disk are
# given read-write to two guests. xenblock reads the tables (DM_TABLE_STATUS)
# and compares the sectors (issue 25, item 7). Two dm devices side by side
# (two LVs of one VG) must still both start in every mode.
EXPECT_stock="overlapping: CREATED; side-by-side: CREATED"
EXPECT_dropin="overlapping: refused, naming domain <g1>; side-by-side: CREATED"
EXPECT_plugin="overlapping: refused, naming domain <g1>; side-by-side: CREATED"
scenario() {
    local res="" img dev n half q name=s27-$$ d1 rc
    command -v dmsetup >/dev/null || { outcome "missing tool dmsetup in dom0"; return; }
    modprobe dm-mod 2>/dev/null
    img=$(image s27.img 64M)
    dev=$(losetup -f --show "$img") || { outcome "cannot make a loop device"; return; }
    n=$(blockdev --getsz "$dev"); half=$((n / 2)); q=$((n / 4))

    # a: sectors [0, half), given to g1 first; then b: [q, q + half), which
    # meets a on [q, half), asked for by g2. (While b exists unused in dom0,
    # a is refused to any guest already: dom0 holds its sectors.)
    if dmsetup create "$name-a" --table "0 $half linear $dev 0" && dmsetup mknodes; then
        guest_cfg g1 'true' "format=raw,vdev=xvda,access=rw,target=/dev/mapper/$name-a"
        guest_cfg g2 'true' "format=raw,vdev=xvda,access=rw,target=/dev/mapper/$name-b"
        if xl create -p /tmp/g1.cfg; then
            d1=$(domid g1)
            if dmsetup create "$name-b" --table "0 $half linear $dev $q" && dmsetup mknodes; then
                xl create -p /tmp/g2.cfg >/tmp/g2.err 2>&1; rc=$?
                sed 's/^/xl: /' /tmp/g2.err
                if [ $rc -eq 0 ] && exists g2; then res="$res; overlapping: CREATED"
                elif grep -q "domain $d1\b" /tmp/g2.err; then res="$res; overlapping: refused, naming domain <g1>"
                else res="$res; overlapping: refused: $(xl_err /tmp/g2.err)"; fi
                xl destroy g2 2>/dev/null
            else
                res="$res; overlapping: dmsetup failed"
            fi
            xl destroy g1
        else
            res="$res; overlapping: first guest failed"
        fi
    else
        res="$res; overlapping: dmsetup failed"
    fi
    dmsetup remove "$name-a" 2>/dev/null; dmsetup remove "$name-b" 2>/dev/null

    # Side by side: a [0, half), b [half, n).
    if dmsetup create "$name-a" --table "0 $half linear $dev 0" &&
        dmsetup create "$name-b" --table "0 $((n - half)) linear $dev $half" && dmsetup mknodes; then
        guest_cfg g1 'true' "format=raw,vdev=xvda,access=rw,target=/dev/mapper/$name-a"
        guest_cfg g2 'true' "format=raw,vdev=xvda,access=rw,target=/dev/mapper/$name-b"
        if xl create -p /tmp/g1.cfg; then
            xl create -p /tmp/g2.cfg >/tmp/g2.err 2>&1; rc=$?
            sed 's/^/xl: /' /tmp/g2.err
            if [ $rc -eq 0 ] && exists g2; then res="$res; side-by-side: CREATED"
            else res="$res; side-by-side: refused: $(xl_err /tmp/g2.err)"; fi
            xl destroy g2 2>/dev/null; xl destroy g1
        else
            res="$res; side-by-side: first guest failed"
        fi
    else
        res="$res; side-by-side: dmsetup failed"
    fi
    dmsetup remove "$name-a" 2>/dev/null; dmsetup remove "$name-b" 2>/dev/null
    dmsetup mknodes 2>/dev/null
    losetup -d "$dev"
    outcome "${res#; }"
}
