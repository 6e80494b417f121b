#!/usr/bin/env bash
# Fetch Debian 12's Xen 4.17 user-space packages (tools, libraries, headers)
# with `apt-get download` and unpack each with `dpkg -x` into a cache
# directory. Nothing is installed system-wide. Idempotent: packages already
# unpacked (marked by a stamp file per .deb) are not fetched again.
#
# Usage: scripts/xen-debs.sh            -> prints the unpacked root directory
# Env:   XENBLOCK_DEBS_DIR   cache dir (default $HOME/.cache/xenblock/debs)
#
# What is really needed: test-xenstore (xen-utils-4.17) and the xenstore-*
# tools (xenstore-utils) link only libxenstore.so.4 (libxenstore4) and
# libxentoolcore.so.1 (libxentoolcore1); libxen-dev adds xenstore.h and the
# other libraries' headers and .so links for compiling against them. The
# rest of the list is what xen-utils-4.17's own programs link, so the whole
# unpacked tree is usable.
#
# Use the result as:
#   ROOT=$(scripts/xen-debs.sh)
#   LD_LIBRARY_PATH=$ROOT/usr/lib/x86_64-linux-gnu   (the host's multiarch dir;
#                                                     nothing else is needed)
#   $ROOT/usr/lib/xen-4.17/bin/test-xenstore, $ROOT/usr/bin/xenstore-read, ...
#   XENSTORED_PATH=<socket> makes libxenstore use that Unix socket
#   compile: cc -I$ROOT/usr/include x.c -L$LIB -Wl,-rpath-link,$LIB -lxenstore
#            (LIB=$ROOT/usr/lib/x86_64-linux-gnu; rpath-link finds
#            libxentoolcore.so.1, which libxenstore.so needs)
set -euo pipefail

DIR="${XENBLOCK_DEBS_DIR:-${HOME:-/root}/.cache/xenblock/debs}"
ROOT="$DIR/root"
DEBS="$DIR/debs"
# Debian 12 ships libxenctrl, libxenguest, libxenlight and libxenstat inside
# libxenmisc4.17 (there are no separate packages for them).
PKGS=(
    xen-utils-4.17 xen-utils-common xenstore-utils
    libxenstore4 libxenmisc4.17 libxentoolcore1 libxentoollog1
    libxenevtchn1 libxengnttab1 libxenforeignmemory1 libxencall1
    libxendevicemodel1 libxenhypfs1 libxen-dev
)

mkdir -p "$ROOT" "$DEBS"

# Serialise concurrent runs (parallel test binaries, several checkouts).
exec 9>"$DIR/.lock"
flock 9

missing=()
for p in "${PKGS[@]}"; do
    [ -e "$DIR/.done-$p" ] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    cd "$DEBS"
    # apt-get download needs package lists; refresh them once if it fails.
    if ! apt-get -o DPkg::Lock::Timeout=900 download "${missing[@]}" >&2; then
        echo "xen-debs: apt-get download failed; running apt-get update once" >&2
        apt-get -o DPkg::Lock::Timeout=900 update >&2
        apt-get -o DPkg::Lock::Timeout=900 download "${missing[@]}" >&2
    fi
    for p in "${missing[@]}"; do
        deb=$(ls -t "$DEBS"/"${p}"_*.deb 2>/dev/null | head -n1 || true)
        if [ -z "$deb" ]; then
            echo "xen-debs: no .deb found for $p after download" >&2
            exit 1
        fi
        dpkg -x "$deb" "$ROOT"
        touch "$DIR/.done-$p"
    done
fi

for f in usr/lib/xen-4.17/bin/test-xenstore usr/bin/xenstore-read; do
    if [ ! -e "$ROOT/$f" ]; then
        echo "xen-debs: $ROOT/$f missing after unpacking" >&2
        exit 1
    fi
done

echo "$ROOT"
