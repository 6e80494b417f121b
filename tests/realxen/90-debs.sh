TITLE="the Debian packages in dom0: apt install, enable, a guest disk through xenblock, Xen's package reinstalled under it, disable byte-identical, purge"
# A step of its own after the scenarios (90+: it installs and purges
# packages, so it runs alone and once): it starts from Xen's stock script.
MODES="stock"
EXPECT_stock="installed; enabled; guest disk written through xenblock; diversion held over Xen's reinstall; disabled byte-identical; purged clean"

# On the host (run-suite.sh, before the VM steps): the packages of this
# checkout, built once per source by scripts/build-debs.sh (from a copy of
# the tracked files; its cargo target directory is a cache) into
# ~/.cache/xenblock/xenblock-debs/<hash of the tracked files>, which dom0
# sees under /xenblock/cache. Prints that directory as dom0 sees it.
host_prep() {
    local cache=${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock} key dir log
    key=$(git ls-files -z | xargs -0 sha256sum | sha256sum | cut -c1-16) ||
        { echo "90-debs: cannot hash the tracked files (git ls-files)" >&2; return 1; }
    dir=$cache/xenblock-debs/$key
    log=$cache/xenblock-debs/build-$key.log
    if ! ls "$dir"/xenblock_*.deb "$dir"/libxenblock1_*.deb "$dir"/libxenblock-dev_*.deb >/dev/null 2>&1; then
        mkdir -p "$cache/xenblock-debs"
        rm -rf "$dir.tmp"
        echo "90-debs: building the packages of this checkout (scripts/build-debs.sh; log $log)" >&2
        if ! nice -n 10 scripts/build-debs.sh "$dir.tmp" >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            echo "90-debs: scripts/build-debs.sh failed (log $log)" >&2
            return 1
        fi
        mv "$dir.tmp" "$dir"
        # Keep the three newest builds (and their logs).
        ls -dt "$cache"/xenblock-debs/*/ | tail -n +4 | while read -r old; do
            old=${old%/}
            rm -rf "$old" "$cache/xenblock-debs/build-${old##*/}.log"
        done
    fi
    echo "/xenblock/cache/xenblock-debs/$key"
}

debs_divert_of() { dpkg-divert --listpackage /etc/xen/scripts/block; }

# Whatever step failed: no package, diversion or guest of ours left.
debs_undo() {
    exists gdebs && xl destroy gdebs
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q xenblock libxenblock-dev libxenblock1 >/dev/null 2>&1
    if [ -n "$(debs_divert_of)" ]; then
        [ -L /etc/xen/scripts/block ] && rm -f /etc/xen/scripts/block
        dpkg-divert --package "$(debs_divert_of)" --rename --remove /etc/xen/scripts/block
    fi
    xenblock-mode stock
}

scenario() {
    local debs=${XENVM_PREP:-} script=/etc/xen/scripts/block orig=/etc/xen/scripts/block.xen-orig
    local xv xen_deb="" d f xen_sum img
    # fail STEP REASON: the outcome names the step that broke.
    fail() { echo "FAILED: $1: $2"; debs_undo; outcome "FAILED at $1: $2"; }
    ls "$debs"/xenblock_*.deb "$debs"/libxenblock1_*.deb >/dev/null ||
        { outcome "no packages in '$debs' (the host's host_prep did not run?)"; return; }
    # The reinstall step reinstalls dom0's own xen-utils-common (same version:
    # its dependencies are met offline), from the cache of dom0's debootstrap
    # on the host or Xen's packages cached by scripts/xen-debs.sh.
    xv=$(dpkg-query -W -f='${Version}' xen-utils-common) || { outcome "xen-utils-common is not installed in dom0"; return; }
    for d in /var/cache/apt/archives /xenblock/cache/vm/rootfs-base/var/cache/apt/archives /xenblock/cache/debs/debs; do
        f="$d/xen-utils-common_${xv}_$(dpkg --print-architecture).deb"
        [ -f "$f" ] && { xen_deb=$f; break; }
    done
    [ -n "$xen_deb" ] || { outcome "no xen-utils-common_${xv} .deb found for the reinstall step"; return; }

    [ -z "$(debs_divert_of)" ] || { outcome "$script already diverted by $(debs_divert_of)"; return; }
    [ ! -L "$script" ] || { outcome "$script is a link; expected Xen's script"; return; }
    xen_sum=$(sha256sum <"$script")

    echo "== apt install the packages ($debs)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$debs"/libxenblock1_*.deb "$debs"/libxenblock-dev_*.deb "$debs"/xenblock_*.deb ||
        { fail install "apt-get install failed"; return; }
    /usr/sbin/xenblock --version || { fail install "/usr/sbin/xenblock does not run"; return; }

    echo "== xenblock enable"
    /usr/sbin/xenblock enable || { fail enable "xenblock enable failed"; return; }
    [ "$(debs_divert_of)" = xenblock ] && [ "$(readlink "$script")" = /usr/sbin/xenblock ] ||
        { fail enable "no xenblock diversion and link after enable (diverted by '$(debs_divert_of)', link '$(readlink "$script")')"; return; }
    [ "$(sha256sum <"$orig")" = "$xen_sum" ] || { fail enable "Xen's script not kept at $orig"; return; }

    echo "== xl create a guest with a file disk; it writes through blkback"
    img=$(image s90.img)
    guest_cfg gdebs 'echo XENBLOCK-DEBS-OK | dd of=/dev/xvda bs=512 conv=sync 2>/dev/null; sync; echo written' \
        "format=raw,vdev=xvda,access=rw,target=$img"
    xl create /tmp/gdebs.cfg || { fail guest "xl create failed with xenblock enabled"; return; }
    wait_gone gdebs || { fail guest "the guest did not finish"; return; }
    [ "$(head -c 16 "$img")" = XENBLOCK-DEBS-OK ] || { fail guest "the guest's write is not in the image"; return; }
    [ "$(nloops_of "$img")" = 0 ] || { fail guest "a loop device is left over the image after the guest went"; return; }

    echo "== reinstall Xen's xen-utils-common ($xen_deb) while enabled"
    DEBIAN_FRONTEND=noninteractive dpkg -i "$xen_deb" || { fail reinstall "dpkg -i $xen_deb failed"; return; }
    [ "$(debs_divert_of)" = xenblock ] && [ "$(readlink "$script")" = /usr/sbin/xenblock ] ||
        { fail reinstall "the reinstall undid enable"; return; }
    [ "$(sha256sum <"$orig")" = "$xen_sum" ] || { fail reinstall "Xen's script did not land on $orig"; return; }

    echo "== xenblock disable"
    /usr/sbin/xenblock disable || { fail disable "xenblock disable failed"; return; }
    [ -z "$(debs_divert_of)" ] && [ ! -L "$script" ] && [ "$(sha256sum <"$script")" = "$xen_sum" ] ||
        { fail disable "Xen's script is not back byte-identical"; return; }

    echo "== enable again, then purge"
    /usr/sbin/xenblock enable || { fail purge "xenblock enable (again) failed"; return; }
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q xenblock libxenblock-dev libxenblock1 || { fail purge "apt-get purge failed"; return; }
    [ -z "$(debs_divert_of)" ] || { fail purge "the diversion by '$(debs_divert_of)' is left after purge"; return; }
    [ ! -L "$script" ] && [ "$(sha256sum <"$script")" = "$xen_sum" ] ||
        { fail purge "$script is not Xen's script after purge"; return; }
    ! dpkg-divert --list | grep -q xenblock || { fail purge "a xenblock diversion is listed: $(dpkg-divert --list | grep xenblock)"; return; }
    [ ! -e /usr/sbin/xenblock ] || { fail purge "/usr/sbin/xenblock is left"; return; }
    xenblock-mode stock
    outcome "installed; enabled; guest disk written through xenblock; diversion held over Xen's reinstall; disabled byte-identical; purged clean"
}
