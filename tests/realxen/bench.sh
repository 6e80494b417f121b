#!/bin/bash
# bench.sh BOOT_SECONDS   (in dom0, via `scripts/xenvm.sh bench`)
# Under TCG: `xl create -p` with 1 and 8 file disks, and `xl block-attach` of a
# file disk and of a phy disk (a loop device) to a running guest with N = 0,
# 100, 400 other backends held in the real xenstored (fake vbd backends
# written with xenstore-write), with Xen's block script (stock), the xenblock
# drop-in (dropin), and libxl calling the library in-process (inprocess: the
# patched libxenlight and xl of scripts/build-libxl.sh, installed by
# `tests/realxen/inprocess.sh install`, which `scripts/xenvm.sh bench` runs
# first; its block script records any call and fails). Prints a Markdown
# table. Means of REPS samples (XENVM_BENCH_REPS, default 2; 1 at N=400 with
# the stock script); a failed sample is left out of the mean and reported.
#
# Order per row: drop-in, in-process, then stock (a stock script killed at
# libxl's timeout must not leave anything in the way of the others). At
# N=400 the phy row is measured a second time for the drop-in and in-process
# right after the stock script's sample (the order of the first real-Xen
# run, where the drop-in once took 36 s there).
source /xenblock/src/tests/realxen/lib.sh
REPS=${XENVM_BENCH_REPS:-2}
MODES=(stock dropin inprocess)
now() { date +%s%N; }
ms() { echo $((($(now) - $1) / 1000000)); }
fmt() { printf '%d.%02d s' $(($1 / 1000)) $(($1 % 1000 / 10)); }
for m in "${MODES[@]}"; do
    [ -x /usr/local/lib/xenblock-mode/$m ] || { echo "bench: no mode $m (run tests/realxen/inprocess.sh install first)" >&2; exit 1; }
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
echo "| measurement (TCG, 2 vCPUs) | stock \`block\` script | xenblock drop-in | xenblock in-process (libxl) |"
echo "|---|---|---|---|"
echo "| VM boot to a ready dom0 | ${1:-?} s | | |"

declare -A R
for mode in "${MODES[@]}"; do
    xenblock-mode $mode || exit 1
    for nd in 1 8; do
        disks=()
        for i in $(seq 0 $((nd - 1))); do
            image "b$i.img" 16M >/dev/null
            disks+=("format=raw,vdev=xvd$(printf "\\x$(printf %x $((97 + i)))"),access=rw,target=$S/b$i.img")
        done
        guest_cfg bg 'true' "${disks[@]}"
        tot=0 ok=0
        for r in $(seq "$REPS"); do
            t=$(now)
            if xl create -p /tmp/bg.cfg >/tmp/bg.err 2>&1; then
                tot=$((tot + $(ms "$t"))); ok=$((ok + 1))
            else
                echo "create failed ($mode, $nd disks): $(xl_err /tmp/bg.err)" >&2
            fi
            xl destroy bg 2>/dev/null
        done
        if [ $ok -gt 0 ]; then R[create$nd,$mode]=$(fmt $((tot / ok))); else R[create$nd,$mode]=failed; fi
        [ $ok = "$REPS" ] || R[create$nd,$mode]="${R[create$nd,$mode]} ($((REPS - ok)) of $REPS failed)"
    done
done
for nd in 1 8; do
    echo "| \`xl create -p\`, $nd file disk$([ $nd = 1 ] || echo s) | ${R[create$nd,stock]} | ${R[create$nd,dropin]} | ${R[create$nd,inprocess]} |"
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
# sample MODE KIND N REPS -> R[att,N,KIND,MODE]
sample() {
    local mode=$1 kind=$2 n=$3 reps=$4 target tot=0 ok=0 r t el bad=""
    target=$S/att.img; [ $kind = phy ] && target=$phydev
    xenblock-mode $mode
    for r in $(seq "$reps"); do
        t=$(now)
        if xl block-attach bt "format=raw,vdev=xvdb,access=rw,target=$target" >/tmp/att.err 2>&1; then
            el=$(ms "$t")
            tot=$((tot + el)); ok=$((ok + 1))
        else
            el=$(ms "$t")
            bad="$bad $(fmt "$el")"
            echo "block-attach failed after $(fmt "$el") ($mode, $kind, N=$n): $(xl_err /tmp/att.err)" >&2
        fi
        xl block-detach bt xvdb >/tmp/det.err 2>&1 || echo "block-detach failed ($mode, $kind, N=$n): $(xl_err /tmp/det.err)" >&2
    done
    local v="failed"
    [ $ok -gt 0 ] && v=$(fmt $((tot / ok)))
    [ -n "$bad" ] && v="$v; failed:$bad"
    R[att,$n,$kind,$mode]=$v
}
have=0
for n in 0 100 400; do
    if [ $n -gt $have ]; then
        fake "$n"; have=$n
    fi
    got=$(xenstore-list /local/domain/0/backend/vbd 2>/dev/null | grep -c '^2')
    [ "$got" = "$n" ] || echo "expected $n fake backends in xenstore, found $got" >&2
    for kind in file phy; do
        reps=$REPS
        sample dropin $kind $n "$reps"
        sample inprocess $kind $n "$reps"
        [ $n = 400 ] && reps=1
        sample stock $kind $n "$reps"
        echo "| \`xl block-attach\` of a $kind disk, $n other backends | ${R[att,$n,$kind,stock]} | ${R[att,$n,$kind,dropin]} | ${R[att,$n,$kind,inprocess]} |"
    done
done
# The first run's anomaly: the drop-in's phy attach at N=400 right after
# the stock script's sample on the same disk.
echo "block scripts still running right after the stock phy sample at N=400: $(scripts_running)" >&2
sample dropin phy 400 "$REPS"
sample inprocess phy 400 "$REPS"
echo "| the same, phy, 400 others, right after the stock sample | | ${R[att,400,phy,dropin]} | ${R[att,400,phy,inprocess]} |"
xl destroy bt
losetup -d "$phydev"
for i in $(seq 1 400); do echo /local/domain/0/backend/vbd/$((20000 + i)); done | xargs xenstore-rm
rm -f "$S"/*.img
xenblock-mode stock >/dev/null
n=$(($(calls) - calls0))
echo "block script calls in the inprocess samples (must be 0): $n" >&2
[ "$n" = 0 ]
