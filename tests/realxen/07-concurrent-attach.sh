TITLE="two concurrent xl block-attach of one file rw to two guests: exactly one succeeds"
# Known upstream bug (as in 02-second-rw): Xen's script never finds the file
# in use, so both attaches succeed, each on its own loop device.
EXPECT_stock="2 attaches succeeded; 2 loop devices"
EXPECT_dropin="exactly one attach succeeded; 1 loop device"
scenario() {
    local img; img=$(image s07.img)
    guest_cfg g1 'true'; guest_cfg g2 'true'
    xl create -p /tmp/g1.cfg && xl create -p /tmp/g2.cfg || { outcome "xl create failed"; return; }
    xl block-attach g1 "format=raw,vdev=xvdb,access=rw,target=$img" >/tmp/a1.err 2>&1 & local p1=$!
    xl block-attach g2 "format=raw,vdev=xvdb,access=rw,target=$img" >/tmp/a2.err 2>&1 & local p2=$!
    local ok=0
    wait $p1 && ok=$((ok + 1))
    wait $p2 && ok=$((ok + 1))
    sed 's/^/g1: /' /tmp/a1.err; sed 's/^/g2: /' /tmp/a2.err
    local n; n=$(nloops_of "$img")
    xl destroy g1; xl destroy g2
    if [ $ok = 1 ]; then outcome "exactly one attach succeeded; $n loop device$([ "$n" = 1 ] || echo s)"
    else outcome "$ok attaches succeeded; $n loop devices"; fi
}
