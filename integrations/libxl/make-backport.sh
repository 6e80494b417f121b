#!/usr/bin/env bash
# Generate the Debian 12 (Xen 4.17) backport of the libxl hotplug-plugin
# series from the master copy, integrations/libxl/upstream/ (made against
# xen-project/xen master), into integrations/libxl/debian-4.17/.
#
#   integrations/libxl/make-backport.sh           regenerate debian-4.17/
#   integrations/libxl/make-backport.sh --check   regenerate into a temporary
#       directory and fail unless (1) it is byte-identical to debian-4.17/,
#       (2) every backport patch changes exactly the lines its upstream patch
#       changes (the +/- lines, file by file; context and offsets may differ)
#       but for the allowed differences below, and (3) the plugin's copy of
#       the header, integrations/libxl/plugin/libxl_hotplug_plugin.h, is the
#       header the series adds. Run by scripts/test-all.sh.
#
# How: the upstream patches are applied one by one with `patch -p1
# --fuzz=2` to Debian's 4.17 source (scripts/build-libxl.sh base: the
# `dpkg-source -x` tree, cached), each committed with its upstream author,
# date and message, and exported with `git format-patch --zero-commit
# --no-signature` (so the output depends on nothing but the inputs).
#
# The allowed differences (nothing else may differ):
#   - OMIT_PATCHES: "libxl, xl: choose the hotplug plugin per disk" is left
#     out. It adds the field hotplug_plugin to libxl_device_disk (the IDL)
#     and xl's disk.default.hotplug_plugin key that sets it. Any change to
#     the size or layout of an IDL struct breaks the 4.17 ABI: Debian's
#     prebuilt libvirt (libvirt-daemon-driver-xen) links libxenlight.so.4.17
#     and allocates libxl_device_disk and libxl_domain_config arrays with the
#     unpatched sizes. Upstream may add the field (each release bumps the
#     soname); in 4.17 the host default, XEN_CONFIG_DIR/hotplug-plugin, is
#     the only selection.
#   - OMIT_FILES: CHANGELOG.md: the entry is for the upstream release being
#     developed; Debian's 4.17 changelog lists 4.17 point releases.
set -euo pipefail
TOPDIR=$(cd "$(dirname "$0")/../.." && pwd)
UP=$TOPDIR/integrations/libxl/upstream
BP=$TOPDIR/integrations/libxl/debian-4.17
HEADER=$TOPDIR/integrations/libxl/plugin/libxl_hotplug_plugin.h
OMIT_PATCHES=("libxl, xl: choose the hotplug plugin per disk")
OMIT_FILES=(CHANGELOG.md)

say() { echo "make-backport: $*" >&2; }
die() {
    say "$*"
    exit 1
}

check=0
case "${1:-}" in
--check) check=1 ;;
"") ;;
*) die "usage: $0 [--check]" ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

base=$("$TOPDIR/scripts/build-libxl.sh" base) || die "no Debian 4.17 source (scripts/build-libxl.sh base failed)"
[ -d "$base" ] || die "scripts/build-libxl.sh base gave '$base', not a directory"

# subject PATCH: the patch's subject without the [PATCH n/m] prefix
subject() {
    awk '/^Subject: /{s=$0; getline; while ($0 ~ /^[ \t]/) {s=s $0; getline}
                      sub(/^Subject: (\[[^]]*\] )?/, "", s); print s; exit}' "$1"
}
omitted() {
    local s p
    s=$(subject "$1")
    for p in "${OMIT_PATCHES[@]}"; do [ "$s" = "$p" ] && return 0; done
    return 1
}
# drop_files PATCH: the patch without the diffs of OMIT_FILES
drop_files() {
    python3 - "$1" "${OMIT_FILES[@]}" <<'PY'
import sys, re
path, omit = sys.argv[1], set(sys.argv[2:])
text = open(path).read()
head, sep, rest = text.partition("\ndiff --git ")
if not sep:
    sys.stdout.write(text); sys.exit()
parts = ("diff --git " + rest).split("\ndiff --git ")
out = [head + "\n"]
for i, part in enumerate(parts):
    if i: part = "diff --git " + part
    m = re.match(r"diff --git a/(\S+) b/", part)
    if m and m.group(1) in omit:
        # keep the mail's trailer if this was the last diff
        tail = re.search(r"\n-- \n.*\Z", part, re.S)
        if tail and i == len(parts) - 1: out.append(tail.group(0)[1:])
        continue
    out.append(part if part.endswith("\n") else part + "\n")
sys.stdout.write("".join(out))
PY
}
# changes PATCH: per file, the added and removed lines (no context)
changes() {
    awk '/^diff --git /{f=$3; sub(/^a\//,"",f)} /^(\+\+\+|---) /{next}
         /^[+-]/{ if (f != "") print f "\t" $0 }
         /^-- $/{f=""}' "$1"
}

mkdir -p "$work/tree"
cp -a "$base/." "$work/tree/"
git -C "$work/tree" init -q
git -C "$work/tree" add -A >/dev/null
git -C "$work/tree" -c user.name=base -c user.email=base@invalid commit -qm base
n=0
for p in "$UP"/[0-9][0-9][0-9][0-9]-*.patch; do
    case $(basename "$p") in 0000-*) continue ;; esac
    if omitted "$p"; then
        say "omitting $(basename "$p") (see OMIT_PATCHES)"
        continue
    fi
    n=$((n + 1))
    drop_files "$p" >"$work/p.patch"
    patch -d "$work/tree" -p1 --fuzz=2 --batch --forward --no-backup-if-mismatch -s \
        <"$work/p.patch" >"$work/patch.log" 2>&1 ||
        { cat "$work/patch.log" >&2; die "$(basename "$p") does not apply to Debian's 4.17 source"; }
    git -C "$work/tree" mailinfo "$work/msg" "$work/diff" <"$p" >"$work/info"
    an=$(sed -n 's/^Author: //p' "$work/info")
    ae=$(sed -n 's/^Email: //p' "$work/info")
    ad=$(sed -n 's/^Date: //p' "$work/info")
    { subject "$p"; echo; cat "$work/msg"; } >"$work/commitmsg"
    git -C "$work/tree" add -A >/dev/null
    GIT_AUTHOR_NAME=$an GIT_AUTHOR_EMAIL=$ae GIT_AUTHOR_DATE=$ad \
        GIT_COMMITTER_NAME=$an GIT_COMMITTER_EMAIL=$ae GIT_COMMITTER_DATE=$ad \
        git -C "$work/tree" commit -q --cleanup=verbatim -F "$work/commitmsg"
done
[ "$n" -gt 0 ] || die "no upstream patches in $UP"
mkdir -p "$work/out"
git -C "$work/tree" format-patch -q --zero-commit --no-signature -o "$work/out" HEAD~"$n"

fails=0
# The header the series adds, as the plugin's copy must be.
git -C "$work/tree" show HEAD:tools/include/libxl_hotplug_plugin.h >"$work/header.h" ||
    die "the series adds no tools/include/libxl_hotplug_plugin.h"
if ! cmp -s "$work/header.h" "$HEADER"; then
    say "integrations/libxl/plugin/libxl_hotplug_plugin.h differs from the series' header:"
    diff -u "$HEADER" "$work/header.h" >&2 || true
    fails=$((fails + 1))
fi
# Substance: each generated patch against its upstream patch.
for g in "$work/out"/*.patch; do
    s=$(subject "$g")
    u=""
    for f in "$UP"/[0-9]*.patch; do
        if [ "$(subject "$f")" = "$s" ]; then
            u=$f
            break
        fi
    done
    [ -n "$u" ] || { say "no upstream patch with the subject '$s'"; fails=$((fails + 1)); continue; }
    drop_files "$u" >"$work/u.patch"
    if ! diff <(changes "$work/u.patch") <(changes "$g") >"$work/sub.diff"; then
        say "$(basename "$g") changes other lines than $(basename "$u"):"
        cat "$work/sub.diff" >&2
        fails=$((fails + 1))
    fi
done

if [ "$check" = 1 ]; then
    if ! diff -r "$work/out" "$BP" >"$work/bp.diff"; then
        say "integrations/libxl/debian-4.17/ is not what make-backport.sh generates from upstream/:"
        head -n 60 "$work/bp.diff" >&2
        fails=$((fails + 1))
    fi
    [ "$fails" = 0 ] || die "FAILED ($fails problem(s))"
    say "ok: debian-4.17/ is generated from upstream/ ($n patches, ${#OMIT_PATCHES[@]} omitted); the plugin's header is the series'"
    exit 0
fi
[ "$fails" = 0 ] || die "FAILED ($fails problem(s)); debian-4.17/ left as it was"
rm -f "$BP"/*.patch
cp "$work/out"/*.patch "$BP/"
say "wrote $n patches to integrations/libxl/debian-4.17/"
