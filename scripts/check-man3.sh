#!/usr/bin/env bash
# Check that xenblock(3) (docs/xenblock.3.scd) documents every function and
# status code that include/xenblock.h declares, and nothing the header lacks.
# Run by the package build (debian/rules) and scripts/build-debs.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
h=include/xenblock.h
m=docs/xenblock.3.scd
fail=0
header_fns=$(sed -n 's/^[a-z].*[ *]\(xenblock_[a-z_]*\)(.*/\1/p' "$h" | sort -u)
man_fns=$(grep -o '\*[a-z].*[ *]xenblock_[a-z_]*(' "$m" | sed 's/.*[ *]\(xenblock_[a-z_]*\)($/\1/' | sort -u)
for f in $header_fns; do
    grep -q "^\*.*[ *]$f(" "$m" || { echo "check-man3: $f is in $h but not in the SYNOPSIS of $m" >&2; fail=1; }
done
for f in $man_fns; do
    echo "$header_fns" | grep -qx "$f" || { echo "check-man3: $m's SYNOPSIS has $f, which $h does not declare" >&2; fail=1; }
done
for s in $(sed -n 's/^ *\(XENBLOCK_[A-Z_]*\) = [0-9]*,$/\1/p' "$h" | grep -v -e ACTION -e FLAVOUR -e LOG_ -e IMAGE_LOCKS_); do
    grep -q "^|  $s\$" "$m" || { echo "check-man3: status $s is not in the RETURN VALUE table of $m" >&2; fail=1; }
done
# Every field of struct xenblock_config is in the CONTEXTS table (abi_size is
# described in the text above it; log_fn and log_data share a row), and every
# image_locks value is named.
fields=$(sed -n '/^typedef struct xenblock_config {/,/^} xenblock_config;/p' "$h" |
    sed -n 's/^  [a-z_][a-z_0-9 ]*[ *]\([a-z_0-9]*\);$/\1/p')
[ -n "$fields" ] || { echo "check-man3: no fields of struct xenblock_config found in $h" >&2; fail=1; }
for f in $fields; do
    case $f in abi_size) continue ;; esac
    grep -qE "^\|  ($f|$f,.*|.*, $f)\$" "$m" || { echo "check-man3: xenblock_config.$f is not in the field table of $m" >&2; fail=1; }
done
for s in $(sed -n 's/^ *\(XENBLOCK_IMAGE_LOCKS_[A-Z_]*\) = [0-9]*,$/\1/p' "$h"); do
    grep -q "\*$s\*" "$m" || { echo "check-man3: $s is not named in $m" >&2; fail=1; }
done
[ "$fail" = 0 ] && echo "check-man3: xenblock(3) matches $h ($(echo "$header_fns" | wc -l) functions)"
exit "$fail"
