#!/usr/bin/env bash
# The real-Xen suite's summary, checked without a VM: run-suite.sh against a
# stub of scripts/xenvm.sh (XENVM_SH) whose dom0 answers are made up:
#   - all pass: exit 0, one row per scenario and mode with its time, the
#     per-mode times and the total;
#   - 20-overlap-partition fails in the drop-in mode and 21-overlap-dm's exec
#     times out there: exit 1; each failure gives the scenario, the mode,
#     expected vs actual, the tail of its log and of dom0's console; the last
#     line names both.
# Run by scripts/test-all.sh (host only, a few seconds). Prints PASS/FAIL per
# check; exits non-zero on any FAIL.
set -uo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
check() { # check DESCRIPTION FILE FIXED-STRING
    if grep -qF -- "$3" "$2"; then echo "PASS: $1"; else echo "FAIL: $1 (no '$3' in the output)"; fails=$((fails + 1)); fi
}

mkdir -p "$work/cache/vm/run/chan/logs"
printf 'Xen console line 1\n(XEN) dom0 console: blkback: the last line\n' >"$work/cache/vm/run/console.log"
echo 33 >"$work/cache/vm/run/boot-seconds"
cat >"$work/xenvm" <<'EOF'
#!/usr/bin/env bash
# A stub of scripts/xenvm.sh: `exec run-one.sh SCENARIO MODE` answers from
# $STUB_FAIL ("NAME.MODE=fail" or "NAME.MODE=timeout", space separated).
[ "$1" = exec ] || exit 0
[[ $2 == */run-one.sh ]] || exit 0
n=${3%.sh} m=$4 logs=$XENBLOCK_CACHE/vm/run/chan/logs
printf 'scenario %s started\nxl create -p /tmp/ovl2.cfg\n=> the outcome\n' "$n" >"$logs/$n.$m.log"
case " ${STUB_FAIL:-} " in
*" $n.$m=timeout "*)
    echo "xenvm: error: dom0 did not answer for 540s running tests/realxen/run-one.sh (XENVM_EXEC_TIMEOUT=480)" >&2
    exit 1 ;;
*" $n.$m=fail "*)
    printf 'RESULT\t%s\t%s\tFAIL\tpart-vs-disk: CREATED\tpart-vs-disk: refused (part of)\t12.3\n' "$n" "$m"
    exit 1 ;;
esac
printf 'RESULT\t%s\t%s\tPASS\tas expected\tas expected\t3.4\n' "$n" "$m"
EOF
chmod +x "$work/xenvm"
run() {
    XENBLOCK_CACHE=$work/cache XENVM_SH=$work/xenvm XENVM_MODES="stock dropin" \
        XENVM_SCENARIOS="01 20 21" tests/realxen/run-suite.sh >"$work/out" 2>&1
}

STUB_FAIL="" run; rc=$?
[ $rc = 0 ] && echo "PASS: all pass: exit 0" || { echo "FAIL: all pass: exit $rc"; fails=$((fails + 1)); }
check "all pass: a row per scenario and mode, with its time" "$work/out" "01-file-rw               dropin         3s  PASS  as expected"
check "all pass: the time per mode and the total" "$work/out" "time per mode: stock 10 s; dropin 10 s; all runs 20 s"
check "all pass: the last line" "$work/out" "real-Xen suite: all 6 runs passed"

STUB_FAIL="20-overlap-partition.dropin=fail 21-overlap-dm.dropin=timeout" run; rc=$?
[ $rc = 1 ] && echo "PASS: failures: exit 1" || { echo "FAIL: failures: exit $rc"; fails=$((fails + 1)); }
check "failure: the table gives expected" "$work/out" "20-overlap-partition     dropin        12s  FAIL  expected: part-vs-disk: refused (part of)"
check "failure: the table gives actual" "$work/out" "actual:   part-vs-disk: CREATED"
check "failure: a section per failure" "$work/out" "== FAILED: 20-overlap-partition [dropin] (12.3 s)"
check "failure: the tail of the scenario's log" "$work/out" "   | scenario 20-overlap-partition started"
check "failure: the tail of dom0's console" "$work/out" "   | (XEN) dom0 console: blkback: the last line"
check "timeout: a section of its own" "$work/out" "== FAILED: 21-overlap-dm [dropin]"
check "timeout: why there is no result" "$work/out" "actual:   no result: the VM step ended with exit 1 (dom0 did not answer for 540s"
check "timeout: the expected outcome" "$work/out" "expected: disk-under-mounted-dm: refused (held by, mounted); two-lvs: CREATED"
check "timeout: the tail of its log as dom0 wrote it" "$work/out" "   | scenario 21-overlap-dm started"
check "failures: the last line names each" "$work/out" "real-Xen suite: FAILED: 2 of 6 runs: 20-overlap-partition [dropin], 21-overlap-dm [dropin]"
if [ "$fails" != 0 ]; then
    echo "---- run-suite.sh's output of the last run:"
    cat "$work/out"
fi
exit "$fails"
