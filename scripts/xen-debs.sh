#!/usr/bin/env bash
# Fetch Debian 12's Xen 4.17 user-space packages (tools, libraries, headers)
# with `apt-get download` and unpack each with `dpkg -x` into a cache
# directory. Nothing is installed system-wide. Idempotent: packages already
# unpacked (marked by a stamp file per .deb) are not fetched again.
#
# Usage: scripts/xen-debs.sh            -> prints the unpacked root directory
# Env:   XENBLOCK_DEBS_DIR   cache dir (default $HOME/.cache/xenblock/debs)
#
# Use the result as:
#   ROOT=$(scripts/xen-debs.sh)
#   LD_LIBRARY_PATH=$ROOT/usr/lib/x86_64-linux-gnu  (multiarch dir of the host)
#   $ROOT/usr/lib/xen-4.17/bin/test-xenstore, $ROOT/usr/bin/xenstore-read, ...
#   headers: $ROOT/usr/include/xenstore.h (from libxen-dev)
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

missing=()
for p in "${PKGS[@]}"; do
    [ -e "$DIR/.done-$p" ] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    cd "$DEBS"
    # apt-get download needs package lists; refresh them once if it fails.
    if ! apt-get download "${missing[@]}" >&2; then
        echo "xen-debs: apt-get download failed; running apt-get update once" >&2
        apt-get update >&2
        apt-get download "${missing[@]}" >&2
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
