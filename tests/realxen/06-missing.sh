TITLE="a missing target: xl create fails clearly, no domain and no loop device left"
EXPECT_stock="refused: the error names the missing file"
EXPECT_dropin="refused: the error names the missing file"
scenario() {
    guest_cfg g1 'true' "format=raw,vdev=xvda,access=rw,target=$S/s06-missing.img"
    xl create -p /tmp/g1.cfg >/tmp/g1.err 2>&1; local rc=$?
    sed 's/^/xl: /' /tmp/g1.err
    [ $rc -ne 0 ] || { outcome "xl create SUCCEEDED"; return; }
    exists g1 && { outcome "refused, but the domain is left"; return; }
    if grep -q "s06-missing.img" /tmp/g1.err; then outcome "refused: the error names the missing file"
    else outcome "refused: the error does not name the file"; fi
}
