#!/usr/bin/env bash
# Build libvirt's libxl connection driver (libvirt_driver_libxl.so) of
# Debian 12's libvirt 9.0.0 with the series in integrations/libvirt/upstream/
# (virsh's errors carry the reason libxl logged), and install it into a Xen
# dom0 over Debian's module without overwriting any packaged file.
#
# Only the driver is built: its nine sources, with meson/ninja, linked against
# the installed libvirt.so.0 (Debian's libvirt0, whose private symbols the
# driver uses) instead of building libvirt itself.
#
# Usage:
#   scripts/build-libvirt.sh [build]        fetch, patch, build (cached); prints
#                                           the output directory
#   scripts/build-libvirt.sh outdir         prints the output directory of the
#                                           current series (no build)
#   scripts/build-libvirt.sh install [DIR]  (in a dom0, as root) divert Debian's
#                                           libvirt_driver_libxl.so with
#                                           dpkg-divert --rename, install the
#                                           patched one from DIR (default: the
#                                           output directory), hold
#                                           libvirt-daemon-driver-xen and
#                                           libvirt0; restart libvirtd after
#   scripts/build-libvirt.sh uninstall      undo `install`
#   scripts/build-libvirt.sh deps           (as root) only install the build
#                                           dependencies (scripts/test-all.sh)
#
# Cache: ${XENBLOCK_LIBVIRT_CACHE:-${XENBLOCK_CACHE:-~/.cache/xenblock}/libvirt}
#   (the real-Xen VM's dom0 sees ${XENBLOCK_CACHE:-~/.cache/xenblock} as
#   /xenblock/cache)
#   apt/        private deb-src apt state (no system source list is touched)
#   src/        the downloaded .dsc and tarballs
#   base/       the unpacked Debian source (Debian's patches applied)
#   build-KEY/  a copy of base/ with the series applied, configured and the
#               driver built; KEY is a hash of the series and of RECIPE, so a
#               changed patch builds afresh and an unchanged one is not rebuilt
#   build-KEY/out/  libvirt_driver_libxl.so, SHA256SUMS, series and a copy
#               of this script (its install/uninstall modes work from there)
#   current     -> build-KEY/out of the last build
#
# Build dependencies are installed with apt-get when missing (root only).
set -euo pipefail

LIBVIRT_VERSION=9.0.0-4+deb12u2
# Bump when the fetch/configure/build steps below change.
RECIPE=1
TOPDIR=$(cd "$(dirname "$0")/.." && pwd)
SERIES_DIR=$TOPDIR/integrations/libvirt/upstream
CACHE=${XENBLOCK_LIBVIRT_CACHE:-${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock}/libvirt}
MULTIARCH=x86_64-linux-gnu
MODULE=libvirt_driver_libxl.so
MODULE_DIR=/usr/lib/$MULTIARCH/libvirt/connection-driver
LIBVIRT_SO=/usr/lib/$MULTIARCH/libvirt.so.0
# Outside any directory libvirtd loads modules from.
DIVERT_DIR=/usr/lib/xenblock-diverted/libvirt
BUILD_DEPS=(meson ninja-build gcc pkg-config libxen-dev libglib2.0-dev libxml2-dev
    libxml2-utils libgnutls28-dev libtirpc-dev libyajl-dev xsltproc python3-docutils
    dpkg-dev patch libvirt0)

say() { echo "build-libvirt: $*" >&2; }
die() {
    say "$*"
    exit 1
}
# (Copied beside this script into each build's output, which dom0 runs;
# install and uninstall need none of it, so a copy of the script alone
# still does those.)
if [ -e "$(dirname "$0")/debsrc.sh" ]; then
    # shellcheck source=scripts/debsrc.sh
    source "$(dirname "$0")/debsrc.sh"
fi

series_files() {
    ls "$SERIES_DIR"/[0-9][0-9][0-9][0-9]-*.patch 2>/dev/null | grep -v '/0000-' | sort
}

build_key() {
    {
        echo "recipe $RECIPE"
        echo "$LIBVIRT_VERSION"
        for p in $(series_files); do sha256sum <"$p"; done
    } | sha256sum | cut -c1-16
}

outdir() { echo "$CACHE/build-$(build_key)/out"; }



prepare_base() {
    [ -e "$CACHE/base/.done" ] && return 0
    rm -rf "$CACHE/base"
    mkdir -p "$CACHE/base"
    say "unpacking the Debian source"
    dpkg-source -x "$CACHE/src/libvirt_${LIBVIRT_VERSION}.dsc" "$CACHE/base/libvirt" >&2
    touch "$CACHE/base/.done"
}

do_build() {
    local key dir out p b link
    key=$(build_key)
    dir="$CACHE/build-$key"
    out="$dir/out"
    if [ -e "$out/.done" ]; then
        cmp -s "$0" "$out/build-libvirt.sh" || cp "$0" "$out/build-libvirt.sh"
        cmp -s "$(dirname "$0")/debsrc.sh" "$out/debsrc.sh" || cp "$(dirname "$0")/debsrc.sh" "$out/"
        ln -sfn "build-$key/out" "$CACHE/current"
        echo "$out"
        return 0
    fi
    [ -n "$(series_files)" ] || die "no patches in $SERIES_DIR"
    install_build_deps "${BUILD_DEPS[@]}"
    fetch_debian_source "$CACHE" libvirt "$LIBVIRT_VERSION"
    prepare_base
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -a "$CACHE/base/libvirt" "$dir/libvirt"
    for p in $(series_files); do
        say "applying $(basename "$p")"
        patch -d "$dir/libvirt" -p1 --forward --batch <"$p" >&2 ||
            die "$(basename "$p") does not apply to libvirt $LIBVIRT_VERSION"
    done
    b=$dir/build
    say "configuring (meson: the libxl driver and what it needs, nothing optional)"
    nice -n 19 meson setup "$b" "$dir/libvirt" --auto-features=disabled \
        -Ddriver_libxl=enabled -Ddriver_libvirtd=enabled -Ddriver_remote=enabled \
        -Dyajl=enabled -Ddocs=disabled -Dtests=disabled -Dnls=disabled -Drpath=disabled \
        -Dinit_script=none -Dno_git=true \
        --prefix=/usr --libdir="lib/$MULTIARCH" --sysconfdir=/etc --localstatedir=/var \
        -Drunstatedir=/run >&2
    say "building the libxl driver"
    nice -n 19 ninja -C "$b" -j2 src/libxl/libvirt_driver_libxl_impl.a >&2
    # Link the module as meson would, against the system's libvirt.so.0
    # instead of the tree's (which is not built).
    link=$(ninja -C "$b" -t commands "src/$MODULE" | tail -n 1)
    case $link in *" -o src/$MODULE "*) ;; *) die "unexpected link command for $MODULE: $link" ;; esac
    [ -e "$LIBVIRT_SO" ] || die "$LIBVIRT_SO is missing (Debian's libvirt0)"
    link=$(echo "$link" | sed -E "s# src/libvirt\.so\.[0-9.]+ # $LIBVIRT_SO #; s# '-Wl,-rpath,[^']*'##; s# -Wl,-rpath-link,[^ ]*##")
    case $link in *" $LIBVIRT_SO "*) ;; *) die "could not point the link at $LIBVIRT_SO: $link" ;; esac
    (cd "$b" && nice -n 19 bash -c "$link") >&2
    mkdir -p "$out"
    cp "$b/src/$MODULE" "$out/"
    series_files | xargs -n1 basename >"$out/series"
    (cd "$out" && sha256sum "$MODULE" >SHA256SUMS)
    cp "$0" "$out/build-libvirt.sh"
    cp "$(dirname "$0")/debsrc.sh" "$out/"
    touch "$out/.done"
    ln -sfn "build-$key/out" "$CACHE/current"
    for p in "$CACHE"/build-*; do
        [ "$p" = "$dir" ] && continue
        [ -n "$(find "$p" -maxdepth 0 -mmin +1440 2>/dev/null)" ] && rm -rf "$p"
    done
    echo "$out"
}

do_install() {
    local from=${1:-} path=$MODULE_DIR/$MODULE have p
    [ "$(id -u)" = 0 ] || die "install must run as root in the dom0"
    [ -n "$from" ] || from=$(cd "$(dirname "$0")" && pwd)
    [ -e "$from/$MODULE" ] || from=$(outdir)
    [ -e "$from/$MODULE" ] || die "no $MODULE in $from; run '$0 build' first"
    [ -e "$path" ] || die "$path is not there: is Debian's libvirt-daemon-driver-xen installed?"
    have=$(dpkg-query -W -f='${Version}' libvirt0 2>/dev/null || true)
    # The driver uses libvirt.so.0's private symbols, versioned per release.
    [ "${have%%-*}" = "${LIBVIRT_VERSION%%-*}" ] ||
        die "libvirt0 is '$have', this build is for ${LIBVIRT_VERSION%%-*}"
    mkdir -p "$DIVERT_DIR"
    if ! dpkg-divert --list "$path" | grep -q "$DIVERT_DIR"; then
        dpkg-divert --local --rename --divert "$DIVERT_DIR/$MODULE" --add "$path" >&2
    fi
    install -m 0644 "$from/$MODULE" "$path.xenblock-new"
    mv -f "$path.xenblock-new" "$path"
    # An upgrade would bring a libvirt0 whose private symbols this build
    # does not match: hold the packages while ours is installed (and only
    # release a hold we set).
    for p in libvirt0 libvirt-daemon-driver-xen; do
        dpkg-query -W "$p" >/dev/null 2>&1 || continue
        if ! apt-mark showhold | grep -qx "$p"; then
            apt-mark hold "$p" >/dev/null && echo "$p" >>"$DIVERT_DIR/.held"
        fi
    done
    say "installed the patched $MODULE from $from (restart libvirtd to load it)"
}

do_uninstall() {
    local path=$MODULE_DIR/$MODULE
    [ "$(id -u)" = 0 ] || die "uninstall must run as root in the dom0"
    if dpkg-divert --list "$path" | grep -q "$DIVERT_DIR"; then
        rm -f "$path"
        dpkg-divert --local --rename --remove "$path" >&2
    fi
    if [ -e "$DIVERT_DIR/.held" ]; then
        xargs -r apt-mark unhold <"$DIVERT_DIR/.held" >/dev/null
        rm -f "$DIVERT_DIR/.held"
    fi
    rmdir "$DIVERT_DIR" 2>/dev/null || true
    say "Debian's $MODULE is back (restart libvirtd to load it)"
}

case "${1:-build}" in
build) do_build ;;
outdir) outdir ;;
install) do_install "${2:-}" ;;
uninstall) do_uninstall ;;
deps) install_build_deps "${BUILD_DEPS[@]}" ;;
*) die "usage: $0 [build|outdir|install [DIR]|uninstall|deps]" ;;
esac
