#!/bin/bash
# run-one.sh SCENARIO [MODE...]   (in dom0, via scripts/xenvm.sh exec)
# Runs one scenario of tests/realxen under each mode (default: stock dropin),
# checks after each that no domain, loop device, backend or lock is left,
# cleans up, and prints one line per mode:
#   RESULT<TAB>scenario<TAB>mode<TAB>PASS|FAIL<TAB>outcome<TAB>expected<TAB>seconds
# Exit status: the number of failed modes. The suite (run-suite.sh) calls it
# once per scenario and mode; it switches the mode only when dom0 is in
# another one, and leaves dom0 in the last mode it ran.
#
# Each run's output is also written, as it goes, to
# $XENVM_LOG_DIR/SCENARIO.MODE.log (default /xenblock/chan/logs, the host's
# ~/.cache/xenblock/vm/run/chan/logs), so that the host can show its tail
# even when the run is killed at its timeout (dom0's kernel messages are on
# the VM's console, whose tail the host shows next to it).
#
# A scenario (tests/realxen/NN-name.sh) is sourced with lib.sh and defines
#   TITLE="..."                 one line
#   EXPECT_<mode>="..."         the exact expected outcome per mode; where Xen's
#                               script is known wrong, EXPECT_stock says so in
#                               a comment (never skipped). A mode without its
#                               own EXPECT (e.g. `plugin`) is held to
#                               EXPECT_dropin.
#   MODES="..."                 (optional) the only modes it applies to, e.g.
#                               the package lifecycle (90-debs), which starts
#                               from Xen's stock script; run-suite.sh reads it
#   host_prep()                 (optional) run ON THE HOST by run-suite.sh
#                               before the VM steps; its last output line
#                               reaches the scenario as $XENVM_PREP
#   scenario()                  runs under $MODE, destroys its own guests,
#                               prints `=> OUTCOME` (lib.sh: outcome) last.
#
# In the `plugin` mode (added by tests/realxen/plugin.sh install: the
# libxenlight and xl of the libxl hotplug-plugin series, xenblock's plugin
# named in /etc/xen/hotplug-plugin, and a block script that records each call
# in /run/xenblock-block-calls and fails) a scenario also FAILS when the
# patched libxenlight or the plugin is not the one installed, or when the
# block script was called at all during it: its outcome must come from libxl
# calling the plugin.
set -u
D=/xenblock/src/tests/realxen
sc=$1; shift
modes=("$@"); [ ${#modes[@]} -gt 0 ] || modes=(stock dropin)
name=$(basename "$sc" .sh)
# The bound of one scenario in one mode: the scenario's own TIMEOUT=N line
# (one that does much more than the others, e.g. 30-libvirt), else
# XENVM_SCENARIO_TIMEOUT, else 420 s.
SCEN_TIMEOUT=$(sed -n 's/^TIMEOUT=\([0-9][0-9]*\)$/\1/p' "$D/$sc" | tail -n 1)
SCEN_TIMEOUT=${SCEN_TIMEOUT:-${XENVM_SCENARIO_TIMEOUT:-420}}
LOGS=${XENVM_LOG_DIR:-/xenblock/chan/logs}
mkdir -p "$LOGS"

others() { xl list 2>/dev/null | awk 'NR>2 {print $1}'; }
cleanup() {
    local d
    for d in $(others); do xl destroy "$d" >/dev/null 2>&1; done
    for l in $(losetup -n -O NAME | sed 's/ //g'); do
        grep -qx "$l" /tmp/loops.baseline || losetup -d "$l" 2>/dev/null
    done
    xenstore-rm /local/domain/0/backend/vbd >/dev/null 2>&1
    rm -rf /scratch/s* /etc/xen/scripts/block-site /tmp/*.cfg /tmp/site.log
    rm -f /var/log/xen/console/guest-*.log
    local p; p=$(cat /run/libvirtd.pid 2>/dev/null) && [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    rm -f /run/libvirtd.pid
}
leaks() {
    local l out=""
    [ -n "$(others)" ] && out="$out domains left: $(others | tr '\n' ' ');"
    local p; p=$(cat /run/libvirtd.pid 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
        out="$out libvirtd left running (pid $p);"
    for l in $(losetup -n -O NAME | sed 's/ //g'); do
        grep -qx "$l" /tmp/loops.baseline || out="$out loop left: $l ($(losetup -n -O BACK-FILE "$l" | sed 's/ *$//'));"
    done
    if xenstore-list /local/domain/0/backend/vbd >/dev/null 2>&1 &&
        [ -n "$(xenstore-list /local/domain/0/backend/vbd 2>/dev/null)" ]; then
        out="$out backends left: $(xenstore-list /local/domain/0/backend/vbd | tr '\n' ' ');"
    fi
    echo "$out"
}

# Anything at all left over from an earlier run (before the baseline is taken)?
leaks_quick() {
    [ -n "$(others)" ] && echo domains
    [ -n "$(losetup -n -O NAME)" ] && echo loops
    xenstore-list /local/domain/0/backend/vbd >/dev/null 2>&1 && echo backends
}

failed=0
[ -n "$(leaks_quick)" ] && cleanup
rm -rf /scratch/s* /tmp/*.cfg /var/log/xen/console/guest-*.log
losetup -n -O NAME | sed 's/ //g' >/tmp/loops.baseline
for mode in "${modes[@]}"; do
    log=$LOGS/$name.$mode.log
    : >"$log"
    if [ "$(xenblock-mode)" != "$mode" ] && ! xenblock-mode "$mode" >>"$log" 2>&1; then
        printf 'RESULT\t%s\t%s\tFAIL\t%s\t%s\t0\n' "$name" "$mode" "cannot switch dom0 to mode $mode: $(tail -n 1 "$log")" "-"
        failed=$((failed + 1)); continue
    fi
    echo "---- $name [$mode]"
    calls0=$(cat /run/xenblock-block-calls 2>/dev/null | wc -l)
    t0=$(date +%s%N)
    timeout -k 5 "$SCEN_TIMEOUT" bash -c '
        set -u
        source "$1/lib.sh"; source "$2"
        export MODE=$3
        scenario' _ "$D" "$D/$sc" "$mode" >"$log" 2>&1
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    sed 's/^/    /' "$log"
    got=$(sed -n 's/^=> //p' "$log" | tail -n 1)
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && got="TIMEOUT after ${SCEN_TIMEOUT}s (${got:-no outcome})"
    [ -n "$got" ] || got="no outcome (scenario exit $rc)"
    exp=$(bash -c 'source "$1"; v=EXPECT_$2; echo "${!v:-${EXPECT_dropin:-?}}"' _ "$D/$sc" "$mode")
    lk=$(leaks)
    verdict=PASS
    [ "$got" = "$exp" ] || verdict=FAIL
    if [ "$mode" = plugin ]; then
        calls=$(($(cat /run/xenblock-block-calls 2>/dev/null | wc -l) - calls0))
        echo "    block script calls: $calls"
        if [ "$calls" != 0 ]; then
            verdict=FAIL
            got="$got; BLOCK SCRIPT CALLED $calls time(s): $(tail -n "$calls" /run/xenblock-block-calls | cut -d' ' -f2-4 | tr '\n' ';')"
        fi
        if ! dpkg-divert --list /usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0 | grep -q xenblock-diverted; then
            verdict=FAIL
            got="$got; the patched libxenlight was NOT installed"
        fi
        if [ ! -e /usr/lib/xen-4.17/lib/x86_64-linux-gnu/hotplug-plugins/xenblock.so ] ||
            [ "$(cat /etc/xen/hotplug-plugin 2>/dev/null)" != xenblock ]; then
            verdict=FAIL
            got="$got; the plugin was NOT installed and the host default"
        fi
    fi
    [ -n "$lk" ] && { verdict=FAIL; got="$got; LEAK:$lk"; }
    [ "$verdict" = FAIL ] && failed=$((failed + 1))
    echo "    ($((ms / 1000)).$((ms % 1000 / 100)) s)"
    printf 'RESULT\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$verdict" "$got" "$exp" "$((ms / 1000)).$((ms % 1000 / 100))"
    [ -n "$lk" ] && cleanup
    rm -rf /scratch/s* /tmp/*.cfg /tmp/site.log /etc/xen/scripts/block-site /var/log/xen/console/guest-*.log
done
exit $failed
