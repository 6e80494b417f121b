#!/usr/bin/env bash
# Build the Debian packages (libxenblock1, libxenblock-dev, xenblock,
# xenblock-libxl-plugin) and the
# source package into OUTDIR, then run lintian on them (fails on errors).
#
# Usage: scripts/build-debs.sh OUTDIR        (as root on Debian 12, or with
#                                             the build dependencies installed)
#
# Installs its build dependencies with apt-get when missing (debhelper,
# dpkg-dev, scdoc, lintian, git). The Rust toolchain is rustup's `cargo` on
# PATH (Debian 12's rustc is too old for the crates used); crates come from
# crates.io into $CARGO_HOME (default ~/.cargo: the same cache as other
# builds), and the build reuses the target directory
# ~/.cache/xenblock/deb-target between runs. The build runs on a copy of the
# tracked files of the working tree, so the checkout stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

need=()
for p in debhelper dpkg-dev scdoc lintian git; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "build-debs: missing ${need[*]}; run as root to install them, or install them" >&2
        exit 1
    fi
    echo "build-debs: installing ${need[*]}"
    apt-get -o DPkg::Lock::Timeout=900 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${need[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
    echo "build-debs: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
}

export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/xenblock/deb-target}
version=$(dpkg-parsechangelog -S Version)
work=$(mktemp -d "${TMPDIR:-/tmp}/xenblock-debs.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/xenblock-$version"
mkdir -p "$src"
# Tracked files as they are in the working tree (uncommitted edits included).
git ls-files -z | xargs -0 cp --parents -t "$src"
# Keep the package's sources reproducible: no stale generated files.
rm -rf "$src/debian/generated"

start=$(date +%s)
(cd "$src" && dpkg-buildpackage -us -uc --build=full)
echo "build-debs: built in $(($(date +%s) - start)) s"

files=$(cd "$work" && ls ./*.deb ./*.dsc ./*.tar.* ./*.buildinfo ./*.changes)
(cd "$work" && cp $files "$OUT/")
changes=$(ls "$OUT"/xenblock_"$version"_*.changes | head -n1)
echo "build-debs: lintian (errors fail the build)"
lintian --fail-on error "$changes"
echo "build-debs: packages in $OUT:"
(cd "$OUT" && ls -1 ./*.deb)
