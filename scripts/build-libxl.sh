#!/usr/bin/env bash
# Build Debian 12's libxenlight (Xen 4.17.5+72-g01140da4e8-1) with the libxl
# hotplug-plugin series (integrations/libxl/debian-4.17/, generated from
# integrations/libxl/upstream/ by integrations/libxl/make-backport.sh) and
# xenblock's plugin (integrations/libxl/plugin/), and install them into a Xen
# dom0 without overwriting any packaged file.
#
# Usage:
#   scripts/build-libxl.sh [build]          fetch, patch, build (cached); prints
#                                           the output directory
#   scripts/build-libxl.sh outdir           prints the output directory of the
#                                           current patch series (no build)
#   scripts/build-libxl.sh install [DIR]    (in a dom0, as root) divert Debian's
#                                           libxenlight.so.4.17.0 and xl with
#                                           dpkg-divert --rename and install the
#                                           patched ones from DIR (default:
#                                           the output directory); hold
#                                           libxenmisc4.17 and xen-utils-4.17;
#                                           install the plugin as
#                                           $PLUGIN_DIR/xenblock.so unless the
#                                           xenblock-libxl-plugin package owns it
#                                           (nothing is enabled: that is
#                                           /etc/xen/hotplug-plugin)
#   scripts/build-libxl.sh uninstall        undo `install`: remove ours, put
#                                           Debian's files back, release the
#                                           holds install set
#   scripts/build-libxl.sh deps             (as root) only install the build
#                                           dependencies (scripts/test-all.sh)
#   scripts/build-libxl.sh base             fetch and prepare Debian's source
#                                           (cached); prints its directory
#                                           (integrations/libxl/make-backport.sh)
#
# Cache: ${XENBLOCK_LIBXL_CACHE:-${XENBLOCK_CACHE:-~/.cache/xenblock}/libxl}
#   (the real-Xen VM's dom0 sees ${XENBLOCK_CACHE:-~/.cache/xenblock} as
#   /xenblock/cache, so a build for the VM is at /xenblock/cache/libxl/current)
#   apt/        private deb-src apt state (no system source list is touched)
#   src/        the downloaded .dsc and tarballs
#   base/       the unpacked Debian source (Debian's patches applied),
#               autogen'd and configured once
#   build-KEY/  a copy of base/ with our series applied and built; KEY is a
#               hash of the series and of RECIPE, so a changed patch builds
#               afresh and an unchanged one is not rebuilt
#   build-KEY/out/  libxenlight.so.4.17.0, xl, xenblock.so (the plugin),
#               SHA256SUMS, series and a copy of this script (its
#               install/uninstall modes work from there)
#   current     -> build-KEY/out of the last build
#
# Build dependencies are installed with apt-get when missing (root only).
set -euo pipefail

XEN_VERSION=4.17.5+72-g01140da4e8-1
# Bump when the fetch/configure/build steps below change: builds are cached
# by this and the patches' contents.
RECIPE=3
XEN_UPSTREAM=${XEN_VERSION%-*}
TOPDIR=$(cd "$(dirname "$0")/.." && pwd)
SERIES_DIR=$TOPDIR/integrations/libxl/debian-4.17
PLUGIN_SRC=$TOPDIR/integrations/libxl/plugin
CACHE=${XENBLOCK_LIBXL_CACHE:-${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock}/libxl}
MULTIARCH=x86_64-linux-gnu
LIB_NAME=libxenlight.so.4.17.0
LIB_DIR=/usr/lib/$MULTIARCH
XL_PATH=/usr/lib/xen-4.17/bin/xl
# libxl's hotplug plugin directory: $(LIBEXEC_LIB)/hotplug-plugins as the
# configure below sets LIBEXEC_LIB.
PLUGIN_DIR=/usr/lib/xen-4.17/lib/$MULTIARCH/hotplug-plugins
# Diverted files go to a directory ldconfig does not scan, so the renamed
# Debian library can never be picked for the libxenlight.so.4.17 link.
DIVERT_DIR=/usr/lib/xenblock-diverted
BUILD_DEPS=(autoconf automake bison flex libyajl-dev libzstd-dev acpica-tools
    libext2fs-dev libaio-dev uuid-dev zlib1g-dev liblzma-dev libncurses-dev
    python3-dev pkg-config dpkg-dev gcc make patch)

say() { echo "build-libxl: $*" >&2; }
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
    ls "$SERIES_DIR"/[0-9][0-9][0-9][0-9]-*.patch 2>/dev/null | sort
}

build_key() {
    {
        echo "recipe $RECIPE"
        echo "$XEN_VERSION"
        for p in $(series_files) "$PLUGIN_SRC"/*.c "$PLUGIN_SRC"/*.h "$PLUGIN_SRC"/Makefile; do
            sha256sum <"$p"
        done
    } | sha256sum | cut -c1-16
}

outdir() { echo "$CACHE/build-$(build_key)/out"; }



# Unpack (Debian's patches applied by dpkg-source), autogen, configure: once.
prepare_base() {
    [ -e "$CACHE/base/.done" ] && return 0
    rm -rf "$CACHE/base"
    mkdir -p "$CACHE/base"
    say "unpacking and configuring the Debian source"
    dpkg-source -x "$CACHE/src/xen_${XEN_VERSION}.dsc" "$CACHE/base/xen" >&2
    (
        cd "$CACHE/base/xen"
        # Debian drops the generated configure scripts and the autotools aux
        # files; its rules copy config.sub/config.guess from automake too.
        cp "$(automake --print-libdir)"/config.sub "$(automake --print-libdir)"/config.guess .
        ./autogen.sh >&2
        ./configure --prefix=/usr --libdir=$LIB_DIR --with-libexec-libdir-suffix=/$MULTIARCH \
            --sysconfdir=/etc --localstatedir=/var --with-libexec-leaf-dir=xen-4.17 \
            --disable-stubdom --disable-docs --disable-qemu-traditional --disable-rombios \
            --disable-ipxe --disable-pvshim --disable-ocamltools --disable-golang \
            --disable-xsmpolicy --with-system-qemu=/usr/libexec/xen-qemu-system-i386 \
            --with-system-seabios=/usr/share/seabios/bios-256k.bin \
            --with-system-ovmf=/usr/share/ovmf/OVMF.fd >&2
    )
    touch "$CACHE/base/.done"
}

do_build() {
    local key dir out p
    key=$(build_key)
    dir="$CACHE/build-$key"
    out="$dir/out"
    if [ -e "$out/.done" ]; then
        # The install modes may have changed since the build.
        cmp -s "$0" "$out/build-libxl.sh" || cp "$0" "$out/build-libxl.sh"
        cmp -s "$(dirname "$0")/debsrc.sh" "$out/debsrc.sh" || cp "$(dirname "$0")/debsrc.sh" "$out/"
        ln -sfn "build-$key/out" "$CACHE/current"
        echo "$out"
        return 0
    fi
    [ -n "$(series_files)" ] || die "no patches in $SERIES_DIR"
    install_build_deps "${BUILD_DEPS[@]}"
    fetch_debian_source "$CACHE" xen "$XEN_VERSION"
    prepare_base
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -a "$CACHE/base/xen" "$dir/xen"
    for p in $(series_files); do
        say "applying $(basename "$p")"
        patch -d "$dir/xen" -p1 --forward --batch <"$p" >&2 ||
            die "$(basename "$p") does not apply to Xen $XEN_VERSION"
    done
    say "building tools/include, tools/libs, tools/xl"
    (
        cd "$dir/xen"
        nice -n 10 make -j2 -C tools/include >&2
        nice -n 10 make -j2 -C tools/libs >&2
        nice -n 10 make -j2 -C tools/xl >&2
        # The stub the BSDs link instead of the loader is not built on
        # Linux: compile it with libxl's flags (-Werror), as if it were
        # one of its objects, and check that it defines the loader's
        # functions, no more and no fewer.
        nice -n 10 make -C tools/libs/light libxl_no_hotplug_plugin.o \
            OBJS-y=libxl_no_hotplug_plugin.o >&2
        defined() { nm --defined-only "tools/libs/light/$1" | awk '$2 == "T" { print $3 }' | sort; }
        [ "$(defined libxl_no_hotplug_plugin.o)" = "$(defined libxl_hotplug_plugin.o)" ] || {
            diff <(defined libxl_hotplug_plugin.o) <(defined libxl_no_hotplug_plugin.o) >&2
            die "libxl_no_hotplug_plugin.c does not define the functions libxl_hotplug_plugin.c does"
        }
    )
    # The plugin links libxenblock.so.1 (ABI 1.2 or later): this checkout's.
    if [ ! -e "$TOPDIR/target/release/libxenblock.so" ]; then
        say "building libxenblock (cargo build --release -p xenblock --lib)"
        (cd "$TOPDIR" && nice -n 10 cargo build --release -p xenblock --lib >&2)
    fi
    say "building the plugin (integrations/libxl/plugin)"
    mkdir -p "$dir/plugin"
    cp "$PLUGIN_SRC"/* "$dir/plugin/"
    make -C "$dir/plugin" XENBLOCK_INCDIR="$TOPDIR/include" \
        XENBLOCK_LIBDIR="$TOPDIR/target/release" >&2
    mkdir -p "$out"
    cp "$dir/xen/tools/libs/light/$LIB_NAME" "$out/"
    cp "$dir/xen/tools/xl/xl" "$out/"
    cp "$dir/plugin/xenblock.so" "$out/"
    series_files | xargs -n1 basename >"$out/series"
    (cd "$out" && sha256sum "$LIB_NAME" xl xenblock.so >SHA256SUMS)
    # The install modes travel with the build (a dom0 sees the cache, not
    # necessarily this checkout).
    cp "$0" "$out/build-libxl.sh"
    cp "$(dirname "$0")/debsrc.sh" "$out/"
    touch "$out/.done"
    ln -sfn "build-$key/out" "$CACHE/current"
    # Older builds are only disk, but another checkout sharing this cache
    # (a VM of its own) may be using one: remove those unused for a day.
    for p in "$CACHE"/build-*; do
        [ "$p" = "$dir" ] && continue
        [ -n "$(find "$p" -maxdepth 0 -mmin +1440 2>/dev/null)" ] && rm -rf "$p"
    done
    echo "$out"
}

# dpkg-divert --rename moves Debian's file aside; a package upgrade then
# writes to the diverted name too, so ours is never overwritten silently and
# theirs is never lost.
divert_one() {
    local path=$1 from=$2 name
    name=$(basename "$path")
    mkdir -p "$DIVERT_DIR"
    if ! dpkg-divert --list "$path" | grep -q xenblock-diverted; then
        dpkg-divert --local --rename --divert "$DIVERT_DIR/$name" --add "$path" >&2
    fi
    install -m 0755 "$from" "$path.xenblock-new"
    mv -f "$path.xenblock-new" "$path"
}

undivert_one() {
    local path=$1
    dpkg-divert --list "$path" | grep -q xenblock-diverted || return 0
    rm -f "$path"
    dpkg-divert --local --rename --remove "$path" >&2
}

do_install() {
    local from=${1:-}
    [ "$(id -u)" = 0 ] || die "install must run as root in the dom0"
    [ -n "$from" ] || from=$(cd "$(dirname "$0")" && pwd)
    [ -e "$from/$LIB_NAME" ] || from=$(outdir)
    [ -e "$from/$LIB_NAME" ] || die "no $LIB_NAME in $from; run '$0 build' first"
    [ -e "$LIB_DIR/$LIB_NAME" ] || die "$LIB_DIR/$LIB_NAME is not there: is Debian's libxenmisc4.17 installed?"
    local have
    have=$(dpkg-query -W -f='${Version}' libxenmisc4.17 2>/dev/null || true)
    [ "$have" = "$XEN_VERSION" ] ||
        die "libxenmisc4.17 is '$have', this build is for $XEN_VERSION: pin that version first"
    divert_one "$LIB_DIR/$LIB_NAME" "$from/$LIB_NAME"
    if [ -e "$from/xl" ] && [ -e "$XL_PATH" ]; then
        divert_one "$XL_PATH" "$from/xl"
    fi
    if [ -e "$from/xenblock.so" ] && ! dpkg-query -S "$PLUGIN_DIR/xenblock.so" >/dev/null 2>&1; then
        install -D -m 0644 "$from/xenblock.so" "$PLUGIN_DIR/xenblock.so.xenblock-new"
        mv -f "$PLUGIN_DIR/xenblock.so.xenblock-new" "$PLUGIN_DIR/xenblock.so"
        mkdir -p "$DIVERT_DIR"
        touch "$DIVERT_DIR/.plugin"
    fi
    ldconfig
    # An upgrade would put a newer Debian library under the diverted name
    # and leave ours, built for this version, in use: hold the packages
    # while ours is installed (and only release a hold we set).
    local p
    for p in libxenmisc4.17 xen-utils-4.17; do
        dpkg-query -W "$p" >/dev/null 2>&1 || continue
        if ! apt-mark showhold | grep -qx "$p"; then
            apt-mark hold "$p" >/dev/null && echo "$p" >>"$DIVERT_DIR/.held"
        fi
    done
    say "installed the patched libxenlight$([ -e "$from/xl" ] && echo ' and xl') and the plugin from $from"
}

do_uninstall() {
    [ "$(id -u)" = 0 ] || die "uninstall must run as root in the dom0"
    undivert_one "$LIB_DIR/$LIB_NAME"
    undivert_one "$XL_PATH"
    if [ -e "$DIVERT_DIR/.plugin" ]; then
        rm -f "$PLUGIN_DIR/xenblock.so" "$DIVERT_DIR/.plugin"
        rmdir "$PLUGIN_DIR" 2>/dev/null || true
    fi
    if [ -e "$DIVERT_DIR/.held" ]; then
        xargs -r apt-mark unhold <"$DIVERT_DIR/.held" >/dev/null
        rm -f "$DIVERT_DIR/.held"
    fi
    rmdir "$DIVERT_DIR" 2>/dev/null || true
    ldconfig
    say "Debian's libxenlight and xl are back"
}

case "${1:-build}" in
build) do_build ;;
outdir) outdir ;;
install) do_install "${2:-}" ;;
uninstall) do_uninstall ;;
deps) install_build_deps "${BUILD_DEPS[@]}" ;;
base)
    install_build_deps "${BUILD_DEPS[@]}"
    fetch_debian_source "$CACHE" xen "$XEN_VERSION"
    prepare_base
    echo "$CACHE/base/xen"
    ;;
*) die "usage: $0 [build|outdir|install [DIR]|uninstall|deps|base]" ;;
esac
