#!/bin/bash
# bench.sh BOOT_SECONDS   (in dom0, via `scripts/xenvm.sh bench`)
# Under TCG: `xl create -p` with 1 and 8 file disks, and `xl block-attach` of a
# file disk and of a phy disk (a loop device) to a running guest with N = 0,
# 100, 400 other backends held in the real xenstored (fake vbd backends
# written with xenstore-write), with Xen's block script and the xenblock
# drop-in. Prints a Markdown table. Means of REPS samples
# (XENVM_BENCH_REPS, default 2; 1 at N=400 with the stock script).
source /xenblock/src/tests/realxen/lib.sh
REPS=${XENVM_BENCH_REPS:-2}
now() { date +%s%N; }
ms() { echo $((($(now) - $1) / 1000000)); }
fmt() { printf '%d.%02d s' $(($1 / 1000)) $(($1 % 1000 / 10)); }
echo "| measurement (TCG, 2 vCPUs) | stock \`block\` script | xenblock drop-in |"
echo "|---|---|---|"
echo "| VM boot to a ready dom0 | ${1:-?} s | |"

declare -A R
for mode in stock dropin; do
    xenblock-mode $mode
    for nd in 1 8; do
        disks=()
        for i in $(seq 0 $((nd - 1))); do
            image "b$i.img" 16M >/dev/null
            disks+=("format=raw,vdev=xvd$(printf "\\x$(printf %x $((97 + i)))"),access=rw,target=$S/b$i.img")
        done
        guest_cfg bg 'true' "${disks[@]}"
        tot=0
        for r in $(seq "$REPS"); do
            t=$(now); xl create -p /tmp/bg.cfg >/dev/null 2>&1 || echo "create failed ($mode, $nd disks)" >&2
            tot=$((tot + $(ms "$t"))); xl destroy bg
        done
        R[create$nd,$mode]=$((tot / REPS))
    done
done
echo "| \`xl create -p\`, 1 file disk | $(fmt ${R[create1,stock]}) | $(fmt ${R[create1,dropin]}) |"
echo "| \`xl create -p\`, 8 file disks | $(fmt ${R[create8,stock]}) | $(fmt ${R[create8,dropin]}) |"

# A running guest: detach needs the frontend to answer.
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
have=0
for n in 0 100 400; do
    if [ $n -gt $have ]; then
        fake "$n"; have=$n
    fi
    got=$(xenstore-list /local/domain/0/backend/vbd 2>/dev/null | grep -c '^2')
    [ "$got" = "$n" ] || echo "expected $n fake backends in xenstore, found $got" >&2
    for kind in file phy; do
    target=$S/att.img; [ $kind = phy ] && target=$phydev
    # The drop-in first: a stock script killed at libxl's timeout must not
    # leave anything in the way of the drop-in's samples.
    for mode in dropin stock; do
        xenblock-mode $mode
        reps=$REPS; [ $n = 400 ] && [ $mode = stock ] && reps=1
        tot=0 ok=0
        for r in $(seq "$reps"); do
            t=$(now)
            if xl block-attach bt "format=raw,vdev=xvdb,access=rw,target=$target" >/tmp/att.err 2>&1; then
                tot=$((tot + $(ms "$t"))); ok=$((ok + 1))
            else echo "block-attach failed ($mode, $kind, N=$n): $(grep -v '^Parsing' /tmp/att.err | head -n 2)" >&2; fi
            xl block-detach bt xvdb >/tmp/det.err 2>&1 || echo "block-detach failed ($mode, $kind, N=$n): $(head -n 2 /tmp/det.err)" >&2
        done
        if [ $ok -gt 0 ]; then R[att$n,$mode]=$(fmt $((tot / ok))); else R[att$n,$mode]="failed"; fi
    done
    echo "| \`xl block-attach\` of a $kind disk, $n other backends | ${R[att$n,stock]} | ${R[att$n,dropin]} |"
    done
done
xl destroy bt
losetup -d "$phydev"
for i in $(seq 1 400); do echo /local/domain/0/backend/vbd/$((20000 + i)); done | xargs xenstore-rm
rm -f "$S"/*.img
xenblock-mode stock >/dev/null
