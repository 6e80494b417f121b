TITLE="phy: a block device rw to a guest, by its path and through a symlink"
EXPECT_stock="by path: physical-device right; by symlink: physical-device right"
EXPECT_dropin="by path: physical-device right; by symlink: physical-device right"
scenario() {
    local img dev res="" how target
    img=$(image s04.img)
    dev=$(losetup -f --show "$img") || { outcome "cannot make a loop device"; return; }
    ln -sfn "$dev" "$S/s04-link"
    local want; want=$(stat -L -c '%t:%T' "$dev")
    for how in path symlink; do
        target=$dev; [ $how = symlink ] && target=$S/s04-link
        guest_cfg g1 'true' "format=raw,vdev=xvda,access=rw,target=$target"
        if ! xl create -p /tmp/g1.cfg; then res="$res; by $how: xl create failed"; continue; fi
        local got; got=$(xenstore-read "$(be "$(domid g1)")/physical-device" 2>/dev/null)
        echo "$how: physical-device=$got (device is $want hex)"
        if [ "$got" = "$want" ]; then res="$res; by $how: physical-device right"
        else res="$res; by $how: physical-device '$got' (want $want)"; fi
        xl destroy g1
    done
    losetup -d "$dev"
    outcome "${res#; }"
}
