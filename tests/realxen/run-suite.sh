#!/usr/bin/env bash
# The real-Xen suite: every tests/realxen/NN-*.sh scenario, each under Xen's
# stock block script and the xenblock drop-in (XENVM_MODES="stock dropin"),
# in the VM of scripts/xenvm.sh (which must be up; `scripts/xenvm.sh test`
# does up, this, down). Prints each scenario's outcome per mode side by side;
# exits non-zero if any scenario fails in any mode, or none ran.
# XENVM_SCENARIOS="01 05" runs only the scenarios whose names start so.
set -uo pipefail
cd "$(dirname "$0")/../.."
read -r -a modes <<<"${XENVM_MODES:-stock dropin}"
results=$(mktemp); trap 'rm -f "$results"' EXIT
t0=$SECONDS
ran=0 failed=0
for f in tests/realxen/[0-9][0-9]-*.sh; do
    name=$(basename "$f" .sh)
    if [ -n "${XENVM_SCENARIOS:-}" ]; then
        keep=0; for p in $XENVM_SCENARIOS; do [[ $name == "$p"* ]] && keep=1; done
        [ $keep = 1 ] || continue
    fi
    title=$(sed -n 's/^TITLE="\(.*\)"$/\1/p' "$f")
    printf '\n== %s: %s\n' "$name" "$title"
    ts=$SECONDS
    out=$(scripts/xenvm.sh exec tests/realxen/run-one.sh "$name.sh" "${modes[@]}" 2>&1)
    rc=$?
    echo "$out" | grep -v '^RESULT	'
    echo "$out" | grep '^RESULT	' >>"$results"
    nres=$(echo "$out" | grep -c '^RESULT	' || true)
    if [ "$rc" != 0 ] || [ "$nres" != "${#modes[@]}" ]; then
        failed=$((failed + 1))
        [ "$nres" = "${#modes[@]}" ] || printf 'RESULT\t%s\t%s\tFAIL\t%s\t-\n' "$name" "all" "run-one exit $rc, $nres of ${#modes[@]} modes reported" >>"$results"
    fi
    ran=$((ran + 1))
    echo "   ($((SECONDS - ts)) s)"
done

printf '\n== real-Xen suite: outcome per mode (%s s)\n' "$((SECONDS - t0))"
awk -F'\t' '{
    key=$2; if (!(key in seen)) { seen[key]=1; order[n++]=key }
    cell[key, $3] = $4 ": " $5; if ($4 == "FAIL") cell[key, $3] = cell[key, $3] "  [expected: " $6 "]"
    if (!($3 in isMode)) { isMode[$3]=1; modes[nm++]=$3 }
} END {
    for (i = 0; i < n; i++) {
        printf "%s\n", order[i]
        for (j = 0; j < nm; j++) if ((order[i], modes[j]) in cell) printf "    %-7s %s\n", modes[j], cell[order[i], modes[j]]
    }
}' "$results"
nfail=$(awk -F'\t' '$4 == "FAIL"' "$results" | wc -l)
if [ "$ran" = 0 ]; then echo "no scenario ran" >&2; exit 1; fi
if [ "$failed" != 0 ] || [ "$nfail" != 0 ]; then
    echo "real-Xen suite: FAILED ($nfail failing scenario/mode pairs of $ran scenarios)" >&2
    exit 1
fi
echo "real-Xen suite: all $ran scenarios passed in modes: ${modes[*]}"
