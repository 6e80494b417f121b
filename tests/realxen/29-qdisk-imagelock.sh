TITLE="a qdisk guest (QEMU) and a blkback guest on one image, both rw: who refuses whom, in both orders"
# dom0 has Debian's qemu-system-xen; libxl 4.17 spawns it
# (/usr/libexec/xen-qemu-system-i386 -machine xenpv) for a PV guest whose
# disk has backendtype=qdisk, and that QEMU serves backend/qdisk/D/N.
#
# Known limit, measured here (docs/image-locks.md, "Xen's qdisk backend"):
# QEMU's Xen disk backend opens the image with locking=off (hw/block/
# xen-block.c, so that an emulated disk of the same HVM guest can open it
# too). It takes no image locks and tests none, and libxl runs no hotplug
# script for a qdisk disk. So with a blkback guest first, nothing refuses
# the qdisk guest, in any mode: the expected outcome records that wrong
# answer, and that `xenblock audit` then reports the pair (exit 3).
# With the qdisk guest first, xenblock refuses the blkback guest by the
# sharing rule (it reads backend/qdisk), naming QEMU and its pid; Xen's
# script (stock) looks only at loop devices and gives the image read-write
# to the second guest: its known wrong answer.
#
# Every mode but stock puts xenblock in the hotplug path (drop-in,
# in-process, plugin): those without an EXPECT of their own are held to
# EXPECT_dropin (run-one.sh).
#
# One QEMU start per mode (each costs ~25 s under TCG): blkback b1, then
# qdisk q1 beside it; then b1 goes and blkback b2 asks while q1 holds it.
EXPECT_stock="blkback first: qdisk guest CREATED (QEMU took no image lock), audit exit 3; qdisk first: blkback guest CREATED"
EXPECT_dropin="blkback first: qdisk guest CREATED (QEMU took no image lock), audit exit 3; qdisk first: blkback guest refused, naming QEMU and its pid"
# step WHAT: a timestamped line in the log (where the time goes under TCG).
step() { echo "[$((SECONDS - t0)) s] $*"; }
# nlocks FILE: how many byte-range locks /proc/locks lists on FILE.
nlocks() { grep -cE " [0-9a-f]+:[0-9a-f]+:$(stat -c %i "$1") " /proc/locks || true; }
scenario() {
    local img res rc dq qpid i t0=$SECONDS
    img=$(image s29.img)
    guest_cfg b1 'true' "format=raw,vdev=xvda,access=rw,target=$img"
    guest_cfg q1 'true' "format=raw,vdev=xvda,access=rw,backendtype=qdisk,target=$img"
    guest_cfg b2 'true' "format=raw,vdev=xvda,access=rw,target=$img"
    [ -x /usr/libexec/xen-qemu-system-i386 ] ||
        { outcome "no /usr/libexec/xen-qemu-system-i386 in dom0 (qemu-system-xen)"; return; }
    xl create -p /tmp/b1.cfg >/tmp/b1.err 2>&1 ||
        { sed 's/^/xl b1: /' /tmp/b1.err; outcome "first blkback guest refused"; return; }

    step "blkback guest b1 created"
    # 1. blkback first, then the qdisk guest.
    local before after; before=$(nlocks "$img")
    xl create -p /tmp/q1.cfg >/tmp/q1.err 2>&1; rc=$?
    sed 's/^/xl q1: /' /tmp/q1.err
    step "qdisk guest q1 asked for (xl exit $rc)"
    if [ $rc -eq 0 ] && exists q1; then
        dq=$(domid q1)
        qpid=$(xenstore-read "/local/domain/$dq/image/device-model-pid" 2>/dev/null)
        echo "QEMU of q1: pid ${qpid:-?}; its descriptors on the image:"
        ls -l "/proc/$qpid/fd" 2>/dev/null | grep -F "$img" || echo "  (none)"
        echo "/proc/locks:"; cat /proc/locks
        after=$(nlocks "$img")
        xenblock audit >/tmp/audit.out 2>&1; rc=$?
        sed 's/^/audit: /' /tmp/audit.out
        if [ "$after" = "$before" ]; then
            res="blkback first: qdisk guest CREATED (QEMU took no image lock), audit exit $rc"
        else
            res="blkback first: qdisk guest CREATED (QEMU took $((after - before)) image locks), audit exit $rc"
        fi
    elif grep -q 'Failed to get "write" lock' /var/log/xen/qemu-dm-q1.log 2>/dev/null; then
        res="blkback first: qdisk guest refused by QEMU (Failed to get \"write\" lock)"
    else
        res="blkback first: qdisk guest refused ($(xl_err /tmp/q1.err))"
    fi
    xl destroy b1
    step "b1 destroyed"

    # 2. The qdisk guest holds the image; a blkback guest asks.
    if ! exists q1; then
        xl create -p /tmp/q1.cfg >/tmp/q1.err 2>&1 ||
            { sed 's/^/xl q1: /' /tmp/q1.err; outcome "$res; qdisk guest alone refused"; return; }
        dq=$(domid q1)
        qpid=$(xenstore-read "/local/domain/$dq/image/device-model-pid" 2>/dev/null)
    fi
    xl create -p /tmp/b2.cfg >/tmp/b2.err 2>&1; rc=$?
    sed 's/^/xl b2: /' /tmp/b2.err
    step "blkback guest b2 asked for (xl exit $rc)"
    if [ $rc -eq 0 ] && exists b2; then
        res="$res; qdisk first: blkback guest CREATED"
    elif grep -q "through QEMU" /tmp/b2.err && [ -n "$qpid" ] && grep -q "through QEMU (pid $qpid," /tmp/b2.err; then
        res="$res; qdisk first: blkback guest refused, naming QEMU and its pid"
    elif grep -q "through QEMU" /tmp/b2.err; then
        res="$res; qdisk first: blkback guest refused, naming QEMU but not its pid ${qpid:-?}"
    else
        res="$res; qdisk first: blkback guest refused ($(xl_err /tmp/b2.err))"
    fi
    xl destroy b2 2>/dev/null
    xl destroy q1
    step "q1 destroyed"
    # Nothing of QEMU may stay: its process and its backend directory.
    for i in $(seq 50); do pgrep -f xen-qemu-system-i386 >/dev/null || break; sleep 0.2; done
    pgrep -f xen-qemu-system-i386 >/dev/null && res="$res; LEAK: QEMU still running"
    [ -n "$(xenstore-list /local/domain/0/backend/qdisk 2>/dev/null)" ] && res="$res; LEAK: backend/qdisk left"
    outcome "$res"
}
