#!/usr/bin/env bash
# inprocess-prep.sh   (on the host, with the VM of scripts/xenvm.sh up)
# Makes the real-Xen VM ready for the `inprocess` mode: builds Debian's
# libxenlight with integrations/libxl (scripts/build-libxl.sh; cached under
# ${XENBLOCK_CACHE:-~/.cache/xenblock}/libxl, which dom0 sees as
# /xenblock/cache/libxl), builds the fake libxenblock of the fault checks
# (tests/realxen/fake-xenblock.c) into .../realxen/fake-xenblock, and runs
# `tests/realxen/inprocess.sh install` in dom0 (the mode; every other mode
# then puts Debian's libxenlight back). Used by run-suite.sh and
# `scripts/xenvm.sh bench`. Exit status non-zero, with the reason, on any
# failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
CACHE=${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock}
export XENBLOCK_LIBXL_CACHE=${XENBLOCK_LIBXL_CACHE:-$CACHE/libxl}
die() { echo "inprocess-prep: $*" >&2; exit 1; }

tb=$SECONDS
mkdir -p "$CACHE/realxen"
blog=$CACHE/realxen/build-libxl.log
if ! out=$(nice -n 10 scripts/build-libxl.sh build 2>"$blog"); then
    tail -n 40 "$blog" >&2
    die "building the patched libxenlight failed (scripts/build-libxl.sh build; log: $blog)"
fi
case $out in "$CACHE"/*) ;; *) die "the libxl build is at $out, outside $CACHE (the cache dom0 sees)" ;; esac
echo "patched libxenlight: $out ($((SECONDS - tb)) s; log: $blog)"

fake=$CACHE/realxen/fake-xenblock
mkdir -p "$fake/full" "$fake/noplan"
for v in full noplan; do
    flags=(); [ $v = noplan ] && flags=(-DFAKE_NO_PLAN)
    cc -shared -fPIC -O2 -Wall -Werror -Iinclude -Wl,-soname,libxenblock.so.1 "${flags[@]}" \
        -o "$fake/$v/libxenblock.so.1" tests/realxen/fake-xenblock.c ||
        die "building the fake libxenblock ($v) failed"
done

scripts/xenvm.sh exec tests/realxen/inprocess.sh install || die "tests/realxen/inprocess.sh install failed in dom0"
