#!/usr/bin/env bash
# The life of the packages on a Debian host, as root: install, enable,
# enable again, disable (Xen's script back byte-identical), disable again,
# upgrade Xen's package while enabled (the diversion holds), remove and purge
# while enabled (no diversion, no broken /etc/xen/scripts/block), and the
# refusals (no Xen script; not root). Exits non-zero at the first failure and
# leaves the host as it found it (our packages purged).
#
# Usage: tests/debs/lifecycle.sh DEBDIR [--fake-xen]
#   DEBDIR      holds libxenblock1_*.deb, libxenblock-dev_*.deb, xenblock_*.deb
#   --fake-xen  no xen-utils-common here: build and use a stand-in package
#               (xenblock-test-xen-script) that owns /etc/xen/scripts/block,
#               version 1 then 2 for the upgrade step; purged at the end.
#               Without it, xen-utils-common must be installed and is
#               reinstalled (same version) for the upgrade step.
set -euo pipefail

DEBS=$(cd "${1:?usage: $0 DEBDIR [--fake-xen]}" && pwd)
FAKE=${2:-}
SCRIPT=/etc/xen/scripts/block
ORIG=/etc/xen/scripts/block.xen-orig
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_rc() { # expect_rc RC CMD...: run, show output, check the exit code
    local want=$1; shift
    set +e; "$@"; local rc=$?; set -e
    [ "$rc" = "$want" ] || fail "'$*' exited $rc, expected $want"
}
divert_of() { dpkg-divert --listpackage "$SCRIPT"; }

[ "$(id -u)" = 0 ] || fail "run as root (installs packages)"
work=$(mktemp -d)
cleanup() {
    set +e
    dpkg -s xenblock >/dev/null 2>&1 && apt-get purge -y -q xenblock libxenblock-dev libxenblock1 >/dev/null
    [ -n "$FAKE" ] && dpkg -s xenblock-test-xen-script >/dev/null 2>&1 && dpkg --purge xenblock-test-xen-script >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

fake_pkg() { # fake_pkg VERSION: a package owning /etc/xen/scripts/block
    local v=$1 d="$work/fake-$1"
    mkdir -p "$d/DEBIAN" "$d/etc/xen/scripts"
    printf '#!/bin/sh\n# stand-in for Xen'"'"'s block script, version %s\nexit 0\n' "$v" >"$d/etc/xen/scripts/block"
    chmod 755 "$d/etc/xen/scripts/block"
    cat >"$d/DEBIAN/control" <<CTL
Package: xenblock-test-xen-script
Version: $v
Architecture: all
Maintainer: xenblock tests <xenblock@lists.example.org>
Description: test stand-in owning /etc/xen/scripts/block
CTL
    dpkg-deb -q --build "$d" "$work/fake_$v.deb" >/dev/null
    echo "$work/fake_$v.deb"
}

if [ -n "$FAKE" ]; then
    dpkg -s xen-utils-common >/dev/null 2>&1 && fail "--fake-xen on a host with xen-utils-common"
    [ -e "$SCRIPT" ] && fail "$SCRIPT exists but is no package's; refusing to touch it"
else
    dpkg -s xen-utils-common >/dev/null 2>&1 || fail "xen-utils-common is not installed (use --fake-xen)"
fi
[ -z "$(divert_of)" ] || fail "$SCRIPT is already diverted by $(divert_of)"

step "install the packages"
apt-get install -y -q "$DEBS"/libxenblock1_*.deb "$DEBS"/libxenblock-dev_*.deb "$DEBS"/xenblock_*.deb >/dev/null
xenblock --version
man -w xenblock xenblock-enable 3 xenblock >/dev/null || fail "man pages not installed"
pkg-config --modversion xenblock
systemctl cat xenblock-reconcile.service >/dev/null 2>&1 || [ ! -d /run/systemd/system ] || fail "unit not installed"
test -f /lib/systemd/system/xenblock-reconcile.service || fail "no unit file"
cat >"$work/t.c" <<'C'
#include <xenblock.h>
#include <stdio.h>
int main(void) { printf("libxenblock %s\n", xenblock_version()); return xenblock_abi_version() >> 16 != XENBLOCK_ABI_MAJOR; }
C
cc "$work/t.c" -o "$work/t" $(pkg-config --cflags --libs xenblock) && "$work/t" || fail "linking with pkg-config"

if [ -n "$FAKE" ]; then
    step "enable on a host without Xen's script: refused, nothing changed"
    expect_rc 1 xenblock enable
    [ -z "$(divert_of)" ] && [ ! -e "$SCRIPT" ] || fail "a refused enable changed something"
    dpkg -i "$(fake_pkg 1)" >/dev/null
fi
sha_xen=$(sha256sum <"$SCRIPT")
cp "$SCRIPT" "$work/xen-script"

step "enable as a user: refused"
if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null; then
    expect_rc 7 setpriv --reuid=nobody --regid=nogroup --clear-groups xenblock enable
fi

step "enable"
expect_rc 0 xenblock enable
[ "$(divert_of)" = xenblock ] || fail "no diversion by xenblock"
[ "$(readlink "$SCRIPT")" = /usr/sbin/xenblock ] || fail "$SCRIPT is not a link to /usr/sbin/xenblock"
cmp "$ORIG" "$work/xen-script" || fail "Xen's script was not kept byte-identical at $ORIG"
xenblock status
step "the drop-in answers as Xen's script does (usage error: exit 1)"
expect_rc 1 env -u XENBUS_PATH "$SCRIPT" add

step "enable twice: nothing changes, exit 0"
expect_rc 0 xenblock enable

step "upgrade Xen's package while enabled: the diversion holds"
if [ -n "$FAKE" ]; then
    dpkg -i "$(fake_pkg 2)" >/dev/null
    grep -q "version 2" "$ORIG" || fail "the upgrade did not land on $ORIG"
    cp "$ORIG" "$work/xen-script"
else
    apt-get install -y -q --reinstall xen-utils-common >/dev/null
fi
[ "$(readlink "$SCRIPT")" = /usr/sbin/xenblock ] || fail "the upgrade replaced the link"
[ "$(divert_of)" = xenblock ] || fail "the upgrade dropped the diversion"

step "upgrade xenblock itself (reinstall) while enabled: still enabled"
apt-get install -y -q --reinstall "$DEBS"/xenblock_*.deb >/dev/null
[ "$(readlink "$SCRIPT")" = /usr/sbin/xenblock ] && [ "$(divert_of)" = xenblock ] || fail "reinstall disabled it"

step "disable: Xen's script is back, byte-identical"
expect_rc 0 xenblock disable
[ -z "$(divert_of)" ] || fail "diversion left after disable"
[ ! -L "$SCRIPT" ] && cmp "$SCRIPT" "$work/xen-script" || fail "$SCRIPT is not Xen's script after disable"
[ ! -e "$ORIG" ] || fail "$ORIG left behind"

step "disable when not enabled: nothing to do, exit 0"
expect_rc 0 xenblock disable

step "remove the package while enabled: the maintainer scripts undo it"
expect_rc 0 xenblock enable
apt-get remove -y -q xenblock >/dev/null
[ -z "$(divert_of)" ] || fail "diversion left after remove"
[ ! -L "$SCRIPT" ] && cmp "$SCRIPT" "$work/xen-script" || fail "$SCRIPT broken after remove"

step "purge while enabled: nothing of ours left"
apt-get install -y -q "$DEBS"/xenblock_*.deb >/dev/null
expect_rc 0 xenblock enable
apt-get purge -y -q xenblock libxenblock-dev libxenblock1 >/dev/null
[ -z "$(divert_of)" ] || fail "diversion left after purge"
[ ! -L "$SCRIPT" ] && cmp "$SCRIPT" "$work/xen-script" || fail "$SCRIPT broken after purge"
left=$(dpkg -l 'libxenblock*' xenblock 2>/dev/null | awk '/^[a-z][a-z] /{print $1, $2}' | grep -v '^un ' || true)
[ -z "$left" ] || fail "packages left: $left"
[ ! -e /usr/sbin/xenblock ] && [ ! -e /lib/systemd/system/xenblock-reconcile.service ] || fail "files left"
dpkg-divert --list | grep -q xenblock && fail "a xenblock diversion is listed"

if [ -n "$FAKE" ]; then
    step "Xen's package removed while enabled, then xenblock purged: no dangling link"
    apt-get install -y -q "$DEBS"/libxenblock1_*.deb "$DEBS"/xenblock_*.deb >/dev/null
    expect_rc 0 xenblock enable
    dpkg --purge xenblock-test-xen-script >/dev/null
    apt-get purge -y -q xenblock libxenblock1 >/dev/null
    [ -z "$(divert_of)" ] && [ ! -e "$SCRIPT" ] && [ ! -L "$SCRIPT" ] || fail "left a diversion or a link"
fi

echo
echo "PASS: packages installed, enabled, upgraded under, disabled, removed and purged cleanly"
