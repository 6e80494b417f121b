#!/usr/bin/env bash
# The Debian packages in a real dom0 (run there as root, e.g.
#   scripts/build-debs.sh ~/.cache/xenblock/xenblock-debs
#   scripts/xenvm.sh exec tests/realxen/debs.sh
# ): install them with apt, `xenblock enable`, `xl create` a guest with a
# file disk that it writes through xenblock, reinstall Xen's
# xen-utils-common while enabled (the diversion holds), `xenblock disable`
# (Xen's script back byte-identical), enable again and purge (no diversion,
# no link, no file of ours left). Fails at the first broken step.
#
# DEBDIR (default /xenblock/cache/xenblock-debs, the host's
# ~/.cache/xenblock/xenblock-debs) holds the packages.
set -euo pipefail

DEBS=${1:-/xenblock/cache/xenblock-debs}
SCRIPT=/etc/xen/scripts/block
ORIG=/etc/xen/scripts/block.xen-orig
here=$(cd "$(dirname "$0")" && pwd)
for lib in "$here/lib.sh" /xenblock/src/tests/realxen/lib.sh; do
    [ -f "$lib" ] && { . "$lib"; break; }
done
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
divert_of() { dpkg-divert --listpackage "$SCRIPT"; }

[ "$(id -u)" = 0 ] || fail "run as root in dom0"
command -v xl >/dev/null || fail "no xl: this runs in a Xen dom0"
declare -F guest_cfg >/dev/null || fail "tests/realxen/lib.sh (guest helpers) not found"
ls "$DEBS"/xenblock_*.deb "$DEBS"/libxenblock1_*.deb >/dev/null || fail "no packages in $DEBS (scripts/build-debs.sh)"
# The upgrade step reinstalls dom0's own xen-utils-common (same version: its
# dependencies are met offline): from dom0's apt cache, the VM's root
# file system cache on the host, or Xen's packages cached by xen-debs.sh.
xv=$(dpkg-query -W -f='${Version}' xen-utils-common) || fail "xen-utils-common is not installed in dom0"
xen_deb=""
for d in /var/cache/apt/archives /xenblock/cache/vm/rootfs-base/var/cache/apt/archives /xenblock/cache/debs/debs; do
    f="$d/xen-utils-common_${xv}_$(dpkg --print-architecture).deb"
    [ -f "$f" ] && { xen_deb=$f; break; }
done
[ -n "$xen_deb" ] || fail "no xen-utils-common_${xv} .deb found for the upgrade step"

# Start from Xen's own script, whatever mode the VM booted in.
command -v xenblock-mode >/dev/null && xenblock-mode stock
[ -z "$(divert_of)" ] || fail "$SCRIPT already diverted by $(divert_of)"
[ ! -L "$SCRIPT" ] || fail "$SCRIPT is a link; expected Xen's script"
xen_sum=$(sha256sum <"$SCRIPT")

step "apt install the packages"
apt-get install -y -q "$DEBS"/libxenblock1_*.deb "$DEBS"/libxenblock-dev_*.deb "$DEBS"/xenblock_*.deb
/usr/sbin/xenblock --version

step "xenblock enable"
/usr/sbin/xenblock enable
[ "$(divert_of)" = xenblock ] && [ "$(readlink "$SCRIPT")" = /usr/sbin/xenblock ] || fail "not enabled"
[ "$(sha256sum <"$ORIG")" = "$xen_sum" ] || fail "Xen's script not kept at $ORIG"

step "xl create a guest with a file disk; it writes through blkback"
img=$(image debs.img)
guest_cfg gdebs 'echo XENBLOCK-DEBS-OK | dd of=/dev/xvda bs=512 conv=sync 2>/dev/null; sync; echo written' \
    "format=raw,vdev=xvda,access=rw,target=$img"
xl create /tmp/gdebs.cfg || fail "xl create failed with xenblock enabled"
wait_gone gdebs || fail "guest did not finish"
[ "$(head -c 16 "$img")" = XENBLOCK-DEBS-OK ] || fail "the guest's write is not in the image"
[ "$(nloops_of "$img")" = 0 ] || fail "loop device left over the image after the guest went"

step "reinstall Xen's xen-utils-common while enabled: the diversion holds"
dpkg -i "$xen_deb"
[ "$(divert_of)" = xenblock ] && [ "$(readlink "$SCRIPT")" = /usr/sbin/xenblock ] || fail "the upgrade undid enable"
[ "$(sha256sum <"$ORIG")" = "$xen_sum" ] || fail "the upgrade did not land on $ORIG"

step "xenblock disable: Xen's script is back, byte-identical"
/usr/sbin/xenblock disable
[ -z "$(divert_of)" ] && [ ! -L "$SCRIPT" ] && [ "$(sha256sum <"$SCRIPT")" = "$xen_sum" ] || fail "not restored"

step "enable again, then purge: nothing of ours left"
/usr/sbin/xenblock enable
apt-get purge -y -q xenblock libxenblock-dev libxenblock1
[ -z "$(divert_of)" ] || fail "diversion left after purge"
[ ! -L "$SCRIPT" ] && [ "$(sha256sum <"$SCRIPT")" = "$xen_sum" ] || fail "$SCRIPT broken after purge"
! dpkg-divert --list | grep -q xenblock || fail "a xenblock diversion is listed"
[ ! -e /usr/sbin/xenblock ] || fail "/usr/sbin/xenblock left"

echo
echo "PASS: real dom0: installed, enabled, guest disk through xenblock, Xen upgraded under it, disabled, purged"
