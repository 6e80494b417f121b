#!/usr/bin/env bash
# Install the built library, header and pkg-config file under PREFIX.
#
# Usage: cargo build --release --lib && scripts/install.sh PREFIX
# Env:   DESTDIR       staging root for packagers (files land in $DESTDIR$PREFIX)
#        LIBDIR        library directory (default PREFIX/lib), e.g.
#                      PREFIX/lib/x86_64-linux-gnu
#        CARGO_TARGET_DIR  where cargo built (default ./target)
#
# Installs
#   LIBDIR/libxenblock.so.<major>.<minor>.0   (the file; SONAME libxenblock.so.<major>)
#   LIBDIR/libxenblock.so.<major> -> that     (what the loader looks for)
#   LIBDIR/libxenblock.so -> .so.<major>      (what -lxenblock links against)
#   PREFIX/include/xenblock.h
#   LIBDIR/pkgconfig/xenblock.pc              (xenblock.pc.in, Version from Cargo.toml)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 PREFIX" >&2
    exit 2
fi
PREFIX=$1
case "$PREFIX" in
/*) ;;
*) PREFIX="$PWD/$PREFIX" ;;
esac
PREFIX=${PREFIX%/}
LIBDIR=${LIBDIR:-$PREFIX/lib}
DESTDIR=${DESTDIR:-}
TARGET=${CARGO_TARGET_DIR:-target}
SO="$TARGET/release/libxenblock.so"

if [ ! -f "$SO" ]; then
    echo "install.sh: $SO not found; run 'cargo build --release --lib' first" >&2
    exit 1
fi
major=$(sed -n 's/^#define XENBLOCK_ABI_MAJOR \([0-9]*\)$/\1/p' include/xenblock.h)
minor=$(sed -n 's/^#define XENBLOCK_ABI_MINOR \([0-9]*\)$/\1/p' include/xenblock.h)
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
if [ -z "$major" ] || [ -z "$minor" ] || [ -z "$version" ]; then
    echo "install.sh: cannot read the ABI version (include/xenblock.h) or the version (Cargo.toml)" >&2
    exit 1
fi
if command -v readelf >/dev/null 2>&1; then
    soname=$(readelf -d "$SO" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
    if [ "$soname" != "libxenblock.so.$major" ]; then
        echo "install.sh: $SO has SONAME '$soname', expected libxenblock.so.$major" >&2
        exit 1
    fi
fi

real="libxenblock.so.$major.$minor.0"
install -d "$DESTDIR$LIBDIR/pkgconfig" "$DESTDIR$PREFIX/include"
install -m 0755 "$SO" "$DESTDIR$LIBDIR/$real"
ln -sfn "$real" "$DESTDIR$LIBDIR/libxenblock.so.$major"
ln -sfn "libxenblock.so.$major" "$DESTDIR$LIBDIR/libxenblock.so"
install -m 0644 include/xenblock.h "$DESTDIR$PREFIX/include/xenblock.h"
sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@LIBDIR@|$LIBDIR|g" -e "s|@VERSION@|$version|g" \
    xenblock.pc.in >"$DESTDIR$LIBDIR/pkgconfig/xenblock.pc"
chmod 0644 "$DESTDIR$LIBDIR/pkgconfig/xenblock.pc"
echo "installed xenblock $version (ABI $major.$minor) under $DESTDIR$PREFIX"
