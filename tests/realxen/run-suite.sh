#!/usr/bin/env bash
# The real-Xen suite: every tests/realxen/NN-*.sh scenario, each under Xen's
# stock block script, the xenblock drop-in, and libxl calling the library
# in-process (XENVM_MODES="stock dropin inprocess", the default), in the VM
# of scripts/xenvm.sh (which must be up; `scripts/xenvm.sh test` does up,
# this, down). Prints each scenario's outcome per mode side by side; exits
# non-zero if any scenario fails in any mode, or none ran.
# XENVM_SCENARIOS="01 05" runs only the scenarios whose names start so.
#
# With the `inprocess` mode it first runs tests/realxen/inprocess-prep.sh
# (builds, cached, Debian's libxenlight with integrations/libxl and a fake
# libxenblock for the fault checks; adds the mode in dom0), and after the
# scenarios runs
# inprocess.sh's own checks (XENVM_INPROCESS_STEPS, default below): the
# environment switch, fallback and faults, the slow neighbour, the
# comparison with the drop-in, a vanished backend directory.
set -uo pipefail
cd "$(dirname "$0")/../.."
read -r -a modes <<<"${XENVM_MODES:-stock dropin inprocess}"
results=$(mktemp); trap 'rm -f "$results"' EXIT
t0=$SECONDS
ran=0 failed=0

# One exec runs a scenario in every mode, each bounded by run-one.sh's
# XENVM_SCENARIO_TIMEOUT (420 s): the exec's bound is their sum plus slack.
exec_t=${XENVM_EXEC_TIMEOUT:-$((${#modes[@]} * (${XENVM_SCENARIO_TIMEOUT:-420} + 60)))}
inprocess=0
for m in "${modes[@]}"; do [ "$m" = inprocess ] && inprocess=1; done
if [ $inprocess = 1 ]; then
    printf '\n== in-process mode: tests/realxen/inprocess-prep.sh (patched libxenlight, fake library, install in dom0)\n'
    tests/realxen/inprocess-prep.sh 2>&1 | sed 's/^/   /'
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "real-Xen suite: preparing the in-process mode FAILED" >&2; exit 1; }
fi
for f in tests/realxen/[0-9][0-9]-*.sh; do
    name=$(basename "$f" .sh)
    if [ -n "${XENVM_SCENARIOS:-}" ]; then
        keep=0; for p in $XENVM_SCENARIOS; do [[ $name == "$p"* ]] && keep=1; done
        [ $keep = 1 ] || continue
    fi
    title=$(sed -n 's/^TITLE="\(.*\)"$/\1/p' "$f")
    printf '\n== %s: %s\n' "$name" "$title"
    ts=$SECONDS
    out=$(XENVM_EXEC_TIMEOUT=$exec_t scripts/xenvm.sh exec tests/realxen/run-one.sh "$name.sh" "${modes[@]}" 2>&1)
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

if [ $inprocess = 1 ]; then
    steps=${XENVM_INPROCESS_STEPS:-env compare fallback faults gone slow}
    printf '\n== in-process checks: tests/realxen/inprocess.sh %s (in dom0)\n' "$steps"
    ts=$SECONDS
    # shellcheck disable=SC2086 # one word per step
    out=$(scripts/xenvm.sh exec tests/realxen/inprocess.sh $steps 2>&1)
    rc=$?
    echo "$out" | sed 's/^/   /'
    np=$(echo "$out" | grep -c '^PASS: ' || true)
    nf=$(echo "$out" | grep -c '^FAIL: ' || true)
    echo "   ($((SECONDS - ts)) s)"
    if [ "$rc" = 0 ] && [ "$nf" = 0 ] && [ "$np" -gt 0 ]; then
        printf 'RESULT\t%s\t%s\tPASS\t%s\t-\n' "inprocess.sh checks" inprocess "$np checks passed" >>"$results"
    else
        printf 'RESULT\t%s\t%s\tFAIL\t%s\t%s\n' "inprocess.sh checks" inprocess "$np passed, $nf failed (exit $rc)" "all pass" >>"$results"
        failed=$((failed + 1))
    fi
fi

printf '\n== real-Xen suite: outcome per mode (%s s)\n' "$((SECONDS - t0))"
awk -F'\t' '{
    key=$2; if (!(key in seen)) { seen[key]=1; order[n++]=key }
    cell[key, $3] = $4 ": " $5; if ($4 == "FAIL") cell[key, $3] = cell[key, $3] "  [expected: " $6 "]"
    if (!($3 in isMode)) { isMode[$3]=1; modes[nm++]=$3 }
} END {
    for (i = 0; i < n; i++) {
        printf "%s\n", order[i]
        for (j = 0; j < nm; j++) if ((order[i], modes[j]) in cell) printf "    %-9s %s\n", modes[j], cell[order[i], modes[j]]
    }
}' "$results"
nfail=$(awk -F'\t' '$4 == "FAIL"' "$results" | wc -l)
if [ "$ran" = 0 ]; then echo "no scenario ran" >&2; exit 1; fi
if [ "$failed" != 0 ] || [ "$nfail" != 0 ]; then
    echo "real-Xen suite: FAILED ($nfail failing scenario/mode pairs of $ran scenarios)" >&2
    exit 1
fi
echo "real-Xen suite: all $ran scenarios passed in modes: ${modes[*]}"
