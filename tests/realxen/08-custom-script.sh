TITLE="a custom script (script=block-site) runs with the Linux contract under real libxl"
# The drop-in replaces only `block`: libxl runs block-site itself in both
# modes; the scenario pins down the contract an in-process mode must keep.
EXPECT_stock="add+remove; argv [block-site add|remove]; XENBUS_TYPE=vbd XENBUS_PATH=backend/vbd/D/51712 XENBUS_BASE_PATH=backend script=/etc/xen/scripts/block-site"
EXPECT_dropin="add+remove; argv [block-site add|remove]; XENBUS_TYPE=vbd XENBUS_PATH=backend/vbd/D/51712 XENBUS_BASE_PATH=backend script=/etc/xen/scripts/block-site"
scenario() {
    local img dev; img=$(image s08.img)
    dev=$(losetup -f --show "$img") || { outcome "cannot make a loop device"; return; }
    : >/tmp/site.log
    cat >/etc/xen/scripts/block-site <<'EOS'
#!/bin/sh
echo "$(basename "$0") $1|XENBUS_TYPE=$XENBUS_TYPE XENBUS_PATH=$XENBUS_PATH XENBUS_BASE_PATH=$XENBUS_BASE_PATH script=$script" >>/tmp/site.log
if [ "$1" = add ]; then
    p=$(xenstore-read "$XENBUS_PATH/params")
    xenstore-write "$XENBUS_PATH/physical-device" "$(stat -L -c %t:%T "$p")" "$XENBUS_PATH/hotplug-status" connected
fi
EOS
    chmod +x /etc/xen/scripts/block-site
    guest_cfg g1 'true' "format=raw,vdev=xvda,access=rw,script=block-site,target=$dev"
    xl create -p /tmp/g1.cfg || { losetup -d "$dev"; outcome "xl create failed"; return; }
    local d; d=$(domid g1)
    xl destroy g1
    losetup -d "$dev"
    sed 's/^/site: /' /tmp/site.log
    local adds removes env
    adds=$(grep -c '^block-site add|' /tmp/site.log); removes=$(grep -c '^block-site remove|' /tmp/site.log)
    env=$(head -n 1 /tmp/site.log | cut -d'|' -f2 | sed "s#/vbd/$d/#/vbd/D/#")
    [ "$adds" = 1 ] && [ "$removes" = 1 ] || { outcome "$adds add(s), $removes remove(s)"; return; }
    outcome "add+remove; argv [block-site add|remove]; $env"
}
