#!/bin/bash
# bench.sh BOOT_SECONDS   (in dom0, via `scripts/xenvm.sh bench`)
# Under TCG: `xl create -p` with 1 and 8 file disks, and `xl block-attach` of a
# file disk and of a phy disk (a loop device) to a running guest with N = 0,
# 100, 400 other backends held in the real xenstored (fake vbd backends
# written with xenstore-write), with Xen's block script (stock), the xenblock
# drop-in (dropin), and libxl calling xenblock's hotplug plugin (plugin: the
# patched libxenlight and xl of scripts/build-libxl.sh, installed by
# `tests/realxen/plugin.sh install`, which `scripts/xenvm.sh bench` runs
# first; its block script records any call and fails). Prints a Markdown
# table of medians of REPS samples (XENVM_BENCH_REPS, default 3; 1 for the
# stock script's phy attach at N=400, which libxl kills at its 40 s
# timeout); failed samples are left out and listed with their times, and
# every sample is printed to stderr.
#
# The host's load drifts (TCG: dom0's speed is the host's), so the modes are
# interleaved: each repetition runs every mode once, in a rotating order,
# before the next repetition. At the end the phy attach at N=400 is measured
# once more for the drop-in and in-process, each right after a stock sample (the
# order of the first real-Xen run, where the drop-in once took 36 s there),
# with the number of block scripts still running and whether Xen's hotplug
# lock is held at that moment.
source /xenblock/src/tests/realxen/lib.sh
REPS=${XENVM_BENCH_REPS:-3}
MODES=(stock dropin plugin)
now() { date +%s%N; }
ms() { echo $((($(now) - $1) / 1000000)); }
fmt() { printf '%d.%02d s' $(($1 / 1000)) $(($1 % 1000 / 10)); }
for m in "${MODES[@]}"; do
    [ -x /usr/local/lib/xenblock-mode/$m ] || { echo "bench: no mode $m (run tests/realxen/plugin.sh install first)" >&2; exit 1; }
done
calls() { cat /run/xenblock-block-calls 2>/dev/null | wc -l; }
calls0=$(calls)
# Running block scripts (a stock script orphaned by libxl's timeout).
scripts_running() {
    local p n=0
    for p in /proc/[0-9]*; do
        { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q '/etc/xen/scripts/block ' && n=$((n + 1))
    done
    echo $n
}
lock_state() { # Xen's hotplug lock (locking.sh): free or held, tried without waiting
    if [ ! -e /var/run/xen-hotplug/block ]; then echo "no lock file"
    elif flock -n -x /var/run/xen-hotplug/block true; then echo free
    else echo HELD; fi
}
rotation() { # rotation R: the modes, starting at R mod 3
    local r=$1 i
    for i in 0 1 2; do echo "${MODES[$(((r + i) % 3))]}"; done
}
declare -A OK BAD
# record KEY MODE MS OK?: one sample
record() {
    if [ "$4" = 1 ]; then OK[$1,$2]="${OK[$1,$2]:-} $3"; else BAD[$1,$2]="${BAD[$1,$2]:-} $(fmt "$3")"; fi
    echo "sample $1 $2: $(fmt "$3")$([ "$4" = 1 ] || echo ' FAILED')" >&2
}
cell() { # cell KEY MODE: median of the good samples, then the failed ones
    local k=$1 m=$2 v n
    v=$(printf '%s\n' ${OK[$k,$m]:-} | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}')
    n=$(printf '%s\n' ${OK[$k,$m]:-} | grep -c . || true)
    if [ -n "$v" ]; then v="$(fmt "$v")"; [ "$n" -gt 1 ] || v="$v (1 sample)"; else v="failed"; fi
    [ -n "${BAD[$k,$m]:-}" ] && v="$v; failed after${BAD[$k,$m]}"
    echo "$v"
}
echo "| measurement (TCG, 2 vCPUs) | stock \`block\` script | xenblock drop-in | xenblock plugin (libxl) |"
echo "|---|---|---|---|"
echo "| VM boot to a ready dom0 | ${1:-?} s | | |"

for nd in 1 8; do
    disks=()
    for i in $(seq 0 $((nd - 1))); do
        image "b$i.img" 16M >/dev/null
        disks+=("format=raw,vdev=xvd$(printf "\\x$(printf %x $((97 + i)))"),access=rw,target=$S/b$i.img")
    done
    guest_cfg bg$nd 'true' "${disks[@]}"
done
for r in $(seq "$REPS"); do
    for mode in $(rotation "$r"); do
        xenblock-mode $mode || exit 1
        for nd in 1 8; do
            t=$(now)
            if xl create -p /tmp/bg$nd.cfg >/tmp/bg.err 2>&1; then record create$nd $mode "$(ms "$t")" 1
            else record create$nd $mode "$(ms "$t")" 0; echo "create failed ($mode, $nd disks): $(xl_err /tmp/bg.err)" >&2; fi
            xl destroy bg$nd 2>/dev/null
        done
    done
done
for nd in 1 8; do
    echo "| \`xl create -p\`, $nd file disk$([ $nd = 1 ] || echo s) | $(cell create$nd stock) | $(cell create$nd dropin) | $(cell create$nd plugin) |"
done

# A running guest: detach needs the frontend to answer.
xenblock-mode stock
guest_cfg bt 'while :; do sleep 1; done'
xl create /tmp/bt.cfg >/dev/null 2>&1
wait_console bt 'xenvm-guest: start' 120 || echo "the bench guest did not start" >&2
image att.img 16M >/dev/null
image phy.img 16M >/dev/null
phydev=$(losetup -f --show "$S/phy.img")
fake() { # fake N: N other vbd backends, each a file disk on its own loop device number
    local args=() i p
    for i in $(seq 1 "$1"); do
        p=/local/domain/0/backend/vbd/$((20000 + i))/51712
        args+=("$p/params" "/scratch/fake$i.img" "$p/mode" w "$p/type" file \
               "$p/physical-device" "7:$(printf %x $((100 + i)))" "$p/node" "/dev/loop$((100 + i))" \
               "$p/frontend" "/local/domain/$((20000 + i))/device/vbd/51712" "$p/state" 4 \
               "$p/online" 1 "$p/hotplug-status" connected)
        if [ ${#args[@]} -ge 400 ]; then xenstore-write "${args[@]}"; args=(); fi
    done
    [ ${#args[@]} -gt 0 ] && xenstore-write "${args[@]}"
}
# attach MODE KIND N [KEY]: one block-attach + detach sample
attach() {
    local mode=$1 kind=$2 n=$3 key=${4:-att,$2,$3} target t el
    target=$S/att.img; [ $kind = phy ] && target=$phydev
    xenblock-mode $mode
    t=$(now)
    if xl block-attach bt "format=raw,vdev=xvdb,access=rw,target=$target" >/tmp/att.err 2>&1; then
        record "$key" $mode "$(ms "$t")" 1
    else
        record "$key" $mode "$(ms "$t")" 0
        echo "block-attach failed ($mode, $kind, N=$n): $(xl_err /tmp/att.err)" >&2
    fi
    xl block-detach bt xvdb >/tmp/det.err 2>&1 || echo "block-detach failed ($mode, $kind, N=$n): $(xl_err /tmp/det.err)" >&2
}
have=0
for n in 0 100 400; do
    if [ $n -gt $have ]; then
        fake "$n"; have=$n
    fi
    got=$(xenstore-list /local/domain/0/backend/vbd 2>/dev/null | grep -c '^2')
    [ "$got" = "$n" ] || echo "expected $n fake backends in xenstore, found $got" >&2
    for kind in file phy; do
        for r in $(seq "$REPS"); do
            for mode in $(rotation "$r"); do
                # libxl kills the stock script at 40 s here: one sample is enough.
                [ $n = 400 ] && [ $kind = phy ] && [ $mode = stock ] && [ "$r" -gt 1 ] && continue
                attach $mode $kind $n
            done
        done
        echo "| \`xl block-attach\` of a $kind disk, $n other backends | $(cell att,$kind,$n stock) | $(cell att,$kind,$n dropin) | $(cell att,$kind,$n plugin) |"
    done
done
# The first run's anomaly: the drop-in's phy attach at N=400 right after
# the stock script's sample on the same disk.
attach stock phy 400 after
echo "right after the stock sample: $(scripts_running) block script(s) running, Xen's hotplug lock $(lock_state)" >&2
attach dropin phy 400 after
attach stock phy 400 after
echo "right after the stock sample: $(scripts_running) block script(s) running, Xen's hotplug lock $(lock_state)" >&2
attach plugin phy 400 after
echo "| the same, phy, 400 others, each right after a stock sample killed at 40 s | $(cell after stock) | $(cell after dropin) | $(cell after plugin) |"
xl destroy bt
losetup -d "$phydev"
for i in $(seq 1 400); do echo /local/domain/0/backend/vbd/$((20000 + i)); done | xargs xenstore-rm
rm -f "$S"/*.img
xenblock-mode stock >/dev/null
n=$(($(calls) - calls0))
echo "block script calls in the plugin samples (must be 0): $n" >&2
[ "$n" = 0 ]
