TITLE="file disk rw: the guest writes a pattern, the file holds it, no loop device left"
EXPECT_stock="pattern in the file; no loop device left"
EXPECT_dropin="pattern in the file; no loop device left"
scenario() {
    local img; img=$(image s01.img)
    guest_cfg g1 'echo XENBLOCK-PATTERN-01 | dd of=/dev/xvda bs=512 conv=sync 2>/dev/null; sync; echo written' \
        "format=raw,vdev=xvda,access=rw,target=$img"
    xl create /tmp/g1.cfg || { outcome "xl create failed"; return; }
    wait_gone g1 || { outcome "guest did not finish"; return; }
    sed 's/^/guest: /' "$(console_log g1)"
    local got; got=$(head -c 19 "$img")
    [ "$got" = XENBLOCK-PATTERN-01 ] || { outcome "file holds '$got', not the pattern"; return; }
    local n; n=$(nloops_of "$img")
    [ "$n" = 0 ] || { outcome "pattern in the file; $n loop device(s) left"; return; }
    outcome "pattern in the file; no loop device left"
}
