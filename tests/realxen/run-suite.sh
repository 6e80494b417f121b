#!/usr/bin/env bash
# The real-Xen suite, in the VM of scripts/xenvm.sh (which must be up;
# `scripts/xenvm.sh test` does up, this, down):
#   1. every scenario tests/realxen/NN-*.sh with NN < 90, under each mode of
#      XENVM_MODES (default "stock dropin": Xen's stock block script, the
#      xenblock drop-in; add "plugin" for libxl calling xenblock's hotplug
#      plugin),
#      mode by mode, one `xenvm.sh exec` of run-one.sh per scenario and mode;
#   2. with the `plugin` mode, tests/realxen/plugin.sh's own checks
#      (XENVM_PLUGIN_STEPS, default below);
#   3. the steps tests/realxen/9N-*.sh (e.g. 90-debs, the package lifecycle),
#      alone and once each, after everything else: they change dom0 for good.
# Then a summary: each scenario's mode, time, expected vs actual outcome, and
# the total; for each failure the scenario, its mode, expected vs actual, the
# tail of its log and of dom0's console (also when a VM step timed out).
# Exits non-zero if anything failed, or nothing ran.
#
#   run-suite.sh          the suite (the VM is up)
#   run-suite.sh --prep   only the scenarios' host_prep (run-one.sh), e.g. the
#                         packages' build, so that it runs before the VM boots
#
# tests/realxen/selftest-summary.sh checks the summary against a stub VM.
# Knobs: XENVM_SCENARIOS="01 20" runs only the scenarios (and steps) whose
# names start so; XENVM_MODES; XENVM_ATTACH_CYCLES (default here 5: the
# bench, not the suite, measures long runs); XENVM_SCENARIO_TIMEOUT (420 s,
# run-one.sh's bound of one scenario in one mode, unless the scenario has a
# line TIMEOUT=N of its own).
#
# Scenarios run one at a time: Xen's hotplug scripts serialise on one lock in
# dom0 anyway, the mode is global, and run-one.sh's leak check counts loop
# devices, domains and backends dom0-wide.
set -uo pipefail
cd "$(dirname "$0")/../.."
CACHE=${XENBLOCK_CACHE:-${HOME:-/root}/.cache/xenblock}
# The VM's run state, as scripts/xenvm.sh names it (XENVM_DIR, XENVM_INSTANCE).
VMRUN=${XENVM_DIR:-$CACHE/vm}/run${XENVM_INSTANCE:+-$XENVM_INSTANCE}
LIVE=$VMRUN/chan/logs   # run-one.sh writes here (dom0: /xenblock/chan/logs)
KEEP=$CACHE/realxen/last-run${XENVM_INSTANCE:+-$XENVM_INSTANCE}   # kept after the VM goes: every log of the last run
read -r -a modes <<<"${XENVM_MODES:-stock dropin plugin}"
export XENVM_ATTACH_CYCLES=${XENVM_ATTACH_CYCLES:-5}
SCEN_T=${XENVM_SCENARIO_TIMEOUT:-420}
# The VM's command (tests/realxen/selftest-summary.sh puts a stub here).
VMSH=${XENVM_SH:-scripts/xenvm.sh}

# A scenario with a line OPTIN=1 runs only when XENVM_SCENARIOS names it
# (none has one today: for a scenario too slow or too heavy for every run).
selected() {
    local name=$1 p
    if [ -z "${XENVM_SCENARIOS:-}" ]; then
        grep -qx 'OPTIN=1' "tests/realxen/$name.sh" && return 1
        return 0
    fi
    for p in $XENVM_SCENARIOS; do [[ $name == "$p"* ]] && return 0; done
    return 1
}
scenarios=() steps=()
for f in tests/realxen/[0-9][0-9]-*.sh; do
    name=$(basename "$f" .sh)
    selected "$name" || continue
    if [[ $name == 9[0-9]-* ]]; then steps+=("$name"); else scenarios+=("$name"); fi
done

# host_prep of every selected scenario that has one; its last output line
# is in $prep_dir/NAME (or the reason it failed, in NAME.failed).
prep_dir=$(mktemp -d); results=$(mktemp)
trap 'rm -rf "$prep_dir" "$results"' EXIT
do_prep() {
    local name out
    for name in "${scenarios[@]}" "${steps[@]}"; do
        grep -q '^host_prep()' "tests/realxen/$name.sh" || continue
        if out=$(bash -c 'set -uo pipefail; source "$1"; host_prep' _ "tests/realxen/$name.sh"); then
            echo "$out" | tail -n 1 >"$prep_dir/$name"
            echo "host_prep of $name: $(cat "$prep_dir/$name")"
        else
            echo "host_prep of $name FAILED" | tee "$prep_dir/$name.failed" >&2
        fi
    done
}
if [ "${1:-}" = --prep ]; then
    do_prep
    exit 0
fi

rm -rf "$KEEP"; mkdir -p "$KEEP"
t0=$SECONDS
# record NAME MODE VERDICT ACTUAL EXPECTED SECONDS LOG
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }
vm_gone=""

# run_case NAME MODE: run-one.sh in dom0; one RESULT line, or a FAIL saying
# why there is none (the exec timed out, the VM died).
run_case() {
    local name=$1 mode=$2 ts=$SECONDS out rc res log=$KEEP/$1.$2.log prep=""
    printf '\n== %s [%s]: %s\n' "$name" "$mode" "$(sed -n 's/^TITLE="\(.*\)"$/\1/p' "tests/realxen/$name.sh")"
    if [ -n "$vm_gone" ]; then
        record "$name" "$mode" FAIL "not run: $vm_gone" "-" 0 "-"
        return
    fi
    if [ -e "$prep_dir/$name.failed" ]; then
        record "$name" "$mode" FAIL "its host_prep failed (see above)" "-" 0 "-"
        return
    fi
    [ -e "$prep_dir/$name" ] && prep=$(cat "$prep_dir/$name")
    local bound; bound=$(sed -n 's/^TIMEOUT=\([0-9][0-9]*\)$/\1/p' "tests/realxen/$name.sh" | tail -n 1)
    out=$(XENVM_PREP=$prep XENVM_EXEC_TIMEOUT=$((${bound:-$SCEN_T} + 120)) \
        "$VMSH" exec tests/realxen/run-one.sh "$name.sh" "$mode" 2>&1)
    rc=$?
    echo "$out" | grep -v '^RESULT	' | sed 's/^/   /'
    # The scenario's own log as dom0 wrote it (also when the exec was cut off).
    cp "$LIVE/$name.$mode.log" "$log" 2>/dev/null || echo "$out" >"$log"
    res=$(echo "$out" | grep '^RESULT	' | tail -n 1)
    if [ -n "$res" ]; then
        printf '%s\t%s\n' "$res" "$log" | cut -f2- >>"$results"
    else
        local why
        why=$(echo "$out" | sed -n 's/^xenvm: error: //p' | tail -n 1)
        record "$name" "$mode" FAIL "no result: the VM step ended with exit $rc${why:+ ($why)}" \
            "$(bash -c 'source "$1"; v=EXPECT_$2; echo "${!v:-${EXPECT_dropin:-?}}"' _ "tests/realxen/$name.sh" "$mode" 2>/dev/null)" \
            "$((SECONDS - ts))" "$log"
        if ! XENVM_EXEC_TIMEOUT=20 "$VMSH" exec /bin/true >/dev/null 2>&1; then
            vm_gone="the VM stopped answering during $name [$mode]"
        fi
    fi
    echo "   ($((SECONDS - ts)) s)"
}

modes_of() { sed -n 's/^MODES="\(.*\)"$/\1/p' "tests/realxen/$1.sh"; }

printf '== host preparations\n'
do_prep 2>&1 | sed 's/^/   /'
plugin=0
for m in "${modes[@]}"; do [ "$m" = plugin ] && plugin=1; done
if [ $plugin = 1 ]; then
    printf '\n== plugin mode: tests/realxen/plugin-prep.sh (patched libxenlight, xenblock plugin, fake plugins, install in dom0)\n'
    tests/realxen/plugin-prep.sh 2>&1 | sed 's/^/   /'
    if [ "${PIPESTATUS[0]}" != 0 ]; then
        record "plugin-prep" plugin FAIL "preparing the plugin mode failed (see above)" "prepared" 0 "-"
        modes=("${modes[@]/plugin/}"); plugin=0
    fi
fi

for mode in "${modes[@]}"; do
    [ -n "$mode" ] || continue
    for name in "${scenarios[@]}"; do
        only=$(modes_of "$name")
        if [ -n "$only" ] && [[ " $only " != *" $mode "* ]]; then continue; fi
        run_case "$name" "$mode"
    done
done

# (Only with the whole suite, or when XENVM_PLUGIN_STEPS names steps.)
if [ $plugin = 1 ] && { [ -z "${XENVM_SCENARIOS:-}" ] || [ -n "${XENVM_PLUGIN_STEPS:-}" ]; }; then
    {
        steps_pl=${XENVM_PLUGIN_STEPS:-smoke coming compare faults fresh gone slow crash}
        printf '\n== plugin checks: tests/realxen/plugin.sh %s (in dom0)\n' "$steps_pl"
        ts=$SECONDS log=$KEEP/plugin-checks.log
        # shellcheck disable=SC2086 # one word per step
        out=$(XENVM_EXEC_TIMEOUT=1800 "$VMSH" exec tests/realxen/plugin.sh $steps_pl 2>&1)
        rc=$?
        echo "$out" >"$log"
        echo "$out" | sed 's/^/   /'
        np=$(echo "$out" | grep -c '^PASS: ' || true)
        nf=$(echo "$out" | grep -c '^FAIL: ' || true)
        echo "   ($((SECONDS - ts)) s)"
        if [ "$rc" = 0 ] && [ "$nf" = 0 ] && [ "$np" -gt 0 ]; then
            record "plugin.sh checks" plugin PASS "$np checks passed" "all pass" "$((SECONDS - ts))" "$log"
        else
            record "plugin.sh checks" plugin FAIL "$np passed, $nf failed (exit $rc): $(echo "$out" | grep '^FAIL: ' | head -n 3 | tr '\n' ' ')" "all pass" "$((SECONDS - ts))" "$log"
        fi
    }
fi

for name in "${steps[@]}"; do
    for mode in $(modes_of "$name"); do run_case "$name" "$mode"; done
done
cp "$VMRUN/console.log" "$KEEP/console.log" 2>/dev/null

# ---------------------------------------------------------------- summary
total=$((SECONDS - t0))
boot=$(cat "$VMRUN/boot-seconds" 2>/dev/null || echo "?")
printf '\n== real-Xen suite: summary (%s s here, dom0 booted in %s s; logs in %s)\n' "$total" "$boot" "$KEEP"
awk -F'\t' '
{ if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 }
  if (!($2 in ism)) { ism[$2] = 1; modes[nm++] = $2 }
  v[$1, $2] = $3; got[$1, $2] = $4; ex[$1, $2] = $5; secs[$1, $2] = $6
  permode[$2] += $6; tot += $6 }
END {
  printf "%-24s %-9s %7s  %-4s  %s\n", "scenario", "mode", "time", "", "outcome"
  for (i = 0; i < n; i++) for (j = 0; j < nm; j++) {
    k = order[i] SUBSEP modes[j]; if (!(k in v)) continue
    if (v[k] == "PASS")
      printf "%-24s %-9s %6.0fs  PASS  %s\n", order[i], modes[j], secs[k], got[k]
    else {
      printf "%-24s %-9s %6.0fs  FAIL  expected: %s\n", order[i], modes[j], secs[k], ex[k]
      printf "%-24s %-9s %7s        actual:   %s\n", "", "", "", got[k]
    }
  }
  printf "time per mode:"
  for (j = 0; j < nm; j++) printf " %s %.0f s;", modes[j], permode[modes[j]]
  printf " all runs %.0f s\n", tot
}' "$results"

nfail=$(awk -F'\t' '$3 != "PASS"' "$results" | wc -l)
nrun=$(wc -l <"$results")
if [ "$nfail" != 0 ]; then
    while IFS=$'\t' read -r name mode verdict got exp secs log; do
        [ "$verdict" = PASS ] && continue
        printf '\n== FAILED: %s [%s] (%s s)\n' "$name" "$mode" "$secs"
        printf '   expected: %s\n   actual:   %s\n' "$exp" "$got"
        if [ -s "$log" ]; then
            printf -- '   ---- last 30 lines of its log (%s)\n' "$log"
            tail -n 30 "$log" | sed 's/^/   | /'
        fi
        printf -- "   ---- last 25 lines of dom0's console (Xen's serial console, %s)\n" "$KEEP/console.log"
        tail -n 25 "$KEEP/console.log" 2>/dev/null | tr -d '\r' | sed 's/^/   | /'
    done <"$results"
    printf '\nreal-Xen suite: FAILED: %s of %s runs: %s (%s s)\n' "$nfail" "$nrun" \
        "$(awk -F'\t' '$3 != "PASS" { printf "%s%s [%s]", sep, $1, $2; sep = ", " }' "$results")" "$total" >&2
    exit 1
fi
if [ "$nrun" = 0 ]; then echo "real-Xen suite: nothing ran" >&2; exit 1; fi
echo "real-Xen suite: all $nrun runs passed (${#scenarios[@]} scenarios in modes ${modes[*]}, ${#steps[@]} steps) in $total s"
