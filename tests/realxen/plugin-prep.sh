#!/usr/bin/env bash
# plugin-prep.sh   (on the host, with the VM of scripts/xenvm.sh up)
# Makes the real-Xen VM ready for the `plugin` mode: builds Debian's
# libxenlight with the libxl hotplug-plugin series and xenblock's plugin
# (scripts/build-libxl.sh; cached under ${XENBLOCK_CACHE:-~/.cache/xenblock}/libxl,
# or XENBLOCK_LIBXL_CACHE, which dom0 sees under /xenblock/cache), builds the
# fake plugins of the checks (tests/realxen/fake-plugin.c, with that series'
# header) into that cache's fake-plugin/ (plugin.sh finds them beside the
# build it installs),
# and runs `tests/realxen/plugin.sh install` in dom0 (the mode; every other
# mode then puts Debian's libxenlight back). Used by run-suite.sh and
# `scripts/xenvm.sh bench`. Exit status non-zero, with the reason, on any
# failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
CACHE=${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock}
export XENBLOCK_LIBXL_CACHE=${XENBLOCK_LIBXL_CACHE:-$CACHE/libxl}
die() { echo "plugin-prep: $*" >&2; exit 1; }

tb=$SECONDS
mkdir -p "$CACHE/realxen"
blog=$XENBLOCK_LIBXL_CACHE/build-libxl.log
if ! out=$(nice -n 10 scripts/build-libxl.sh build 2>"$blog"); then
    tail -n 40 "$blog" >&2
    die "building the patched libxenlight and the plugin failed (scripts/build-libxl.sh build; log: $blog)"
fi
case $out in "$CACHE"/*) ;; *) die "the libxl build is at $out, outside $CACHE (the cache dom0 sees)" ;; esac
echo "patched libxenlight and plugin: $out ($((SECONDS - tb)) s; log: $blog)"

fake=$XENBLOCK_LIBXL_CACHE/fake-plugin
mkdir -p "$fake"
for v in "ok" "nocoming -DFAKE_NO_COMING" "abi -DFAKE_ABI=99" "ctxfail -DFAKE_CTXFAIL" "opfail -DFAKE_OPFAIL" "rmfail -DFAKE_RMFAIL" \
    "fault -DFAKE_FAULT -pthread"; do
    set -- $v
    cc -shared -fPIC -O2 -Wall -Werror -fvisibility=hidden -Iintegrations/libxl/plugin "${@:2}" \
        -o "$fake/fake-$1.so" tests/realxen/fake-plugin.c || die "building the fake plugin ($1) failed"
done

scripts/xenvm.sh exec tests/realxen/plugin.sh install || die "tests/realxen/plugin.sh install failed in dom0"
