TITLE="xenblock audit: a double writer left by Xen's script is found; a clean host reports none"
# Xen's script gives one file read-write to two guests (its hex/decimal
# loop-device lookup, CONFORMANCE.md divergence 1): the conflict an admin
# switching to xenblock may already have. `xenblock audit` (read-only) must
# report it with exit 3 and both backends, and report nothing (exit 0) once
# one guest is gone. Stock mode only: the other modes refuse the second
# guest, so there is nothing to find.
MODES="stock"
EXPECT_stock="two writers: audit exit 3 naming both backends; one writer: audit exit 0"
scenario() {
    local img d1 d2 rc res
    img=$(image s11.img)
    guest_cfg g1 'true' "format=raw,vdev=xvda,access=rw,target=$img"
    guest_cfg g2 'true' "format=raw,vdev=xvda,access=rw,target=$img"
    xl create -p /tmp/g1.cfg || { outcome "first guest refused"; return; }
    d1=$(domid g1)
    if ! xl create -p /tmp/g2.cfg >/tmp/g2.err 2>&1; then
        sed 's/^/xl: /' /tmp/g2.err
        xl destroy g1
        outcome "second guest refused under Xen's script: no conflict to audit"
        return
    fi
    d2=$(domid g2)
    xenblock audit >/tmp/audit.out 2>&1; rc=$?
    sed 's/^/audit: /' /tmp/audit.out
    if [ $rc -eq 3 ] && grep -q "vbd/$d1/51712" /tmp/audit.out && grep -q "vbd/$d2/51712" /tmp/audit.out; then
        res="two writers: audit exit 3 naming both backends"
    else
        res="two writers: audit exit $rc"
    fi
    xl destroy g2
    xenblock audit >/tmp/audit.out 2>&1; rc=$?
    sed 's/^/audit (one guest): /' /tmp/audit.out
    res="$res; one writer: audit exit $rc"
    xl destroy g1
    outcome "$res"
}
