#!/usr/bin/env bash
# Make the build tree usable by C programs without installing:
#   cargo build --release --lib && eval "$(scripts/devenv.sh)"
# creates target/release/libxenblock.so.1 (the SONAME the loader looks for;
# cargo only writes libxenblock.so) and target/release/pkgconfig/xenblock.pc
# (pointing at include/ and target/release), and prints the exports of
# LD_LIBRARY_PATH and PKG_CONFIG_PATH for the current shell.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
rel="${CARGO_TARGET_DIR:-$top/target}/release"
case "$rel" in /*) ;; *) rel="$top/$rel" ;; esac
if [ ! -f "$rel/libxenblock.so" ]; then
    echo "devenv.sh: $rel/libxenblock.so not found; run 'cargo build --release --lib' first" >&2
    exit 1
fi
major=$(sed -n 's/^#define XENBLOCK_ABI_MAJOR \([0-9]*\)$/\1/p' include/xenblock.h)
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
ln -sfn libxenblock.so "$rel/libxenblock.so.$major"
mkdir -p "$rel/pkgconfig"
sed -e "s|@PREFIX@|$top|g" -e "s|@LIBDIR@|$rel|g" -e "s|@VERSION@|$version|g" \
    xenblock.pc.in >"$rel/pkgconfig/xenblock.pc"
printf 'export LD_LIBRARY_PATH=%q${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n' "$rel"
printf 'export PKG_CONFIG_PATH=%q${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}\n' "$rel/pkgconfig"
