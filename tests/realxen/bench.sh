#!/bin/bash
# bench.sh BOOT_SECONDS   (in dom0, via `scripts/xenvm.sh bench`)
# Wall time of `xl create -p` with 1 and 8 file disks (beside N = 0 and 400
# other backends), and of `xl block-attach`
# of a file disk and of a phy disk (a loop device) to a running guest with
# N = 0, 100, 400 other backends in the real xenstored (fake vbd backends
# written with xenstore-write), in four columns:
#   stock   Xen's /etc/xen/scripts/block (Debian's libxenlight)
#   dropin  the xenblock drop-in as that script (Debian's libxenlight)
#   plugin  libxl's hotplug plugin, xenblock's (the libxenlight and xl of
#           scripts/build-libxl.sh, installed by `tests/realxen/plugin.sh
#           install`, which `scripts/xenvm.sh bench` runs first; its block
#           script records any call and fails)
#   noop    libxl's floor for a hotplug script: the same disks with
#           `script=` a 3-line sh (no lock, no lookup, no loop attach) that
#           only writes the physical-device of a loop device made before
#           the sample and hotplug-status (Debian's libxenlight). What is
#           left is libxl's own work plus one fork+exec of a trivial script.
# The plugin's phy attach is the in-process floor (xenblock's work there is
# a few xenstore round trips, no loop attach).
#
# For each block-attach sample it also times the hotplug step alone, in
# dom0's xenstore: from blkback's InitWait (the backend's state 2, which
# libxl waits for before it starts the hotplug step) to the backend's
# hotplug-status (what libxl waits for after it), seen by a xenstore-watch
# started before the sample. That is where the modes differ (Xen's script,
# a fork+exec of the drop-in, the plugin in xl's own process, the no-op
# script), without the rest of xl's run around it.
#
# Prints a Markdown table: per cell the median of REPS samples
# (XENVM_BENCH_REPS, default 5) and their range; failed samples are left out
# and listed with their times; every sample goes to stderr. The stock
# script's phy attach at N=400 is sampled once (libxl kills it at its 40 s
# timeout). The host's load drifts (TCG: dom0's speed is the host's), so the
# modes are interleaved: each repetition runs every mode once, in a rotating
# order, before the next repetition.
# Knobs: XENVM_BENCH_REPS; XENVM_BENCH_DISKS="1 8" (the create rows);
# XENVM_BENCH_CREATE_NS="0 400" (the other backends beside the creates);
# XENVM_BENCH_NS="0 100 400" (the attach rows).
source /xenblock/src/tests/realxen/lib.sh
REPS=${XENVM_BENCH_REPS:-5}
read -r -a NDS <<<"${XENVM_BENCH_DISKS:-1 8}"
read -r -a NS <<<"${XENVM_BENCH_NS:-0 100 400}"
read -r -a CNS <<<"${XENVM_BENCH_CREATE_NS:-0 400}"
MODES=(stock dropin plugin noop)
now() { date +%s%N; }
ms() { echo $((($(now) - $1) / 1000000)); }
fmt() { printf '%d.%02d s' $(($1 / 1000)) $(($1 % 1000 / 10)); }
for m in stock dropin plugin; do
    [ -x /usr/local/lib/xenblock-mode/$m ] || { echo "bench: no mode $m (run tests/realxen/plugin.sh install first)" >&2; exit 1; }
done
calls() { cat /run/xenblock-block-calls 2>/dev/null | wc -l; }
calls0=$(calls)
rotation() { # rotation R: the modes, starting at R mod 4
    local r=$1 i
    for i in 0 1 2 3; do echo "${MODES[$(((r + i) % 4))]}"; done
}
# use MODE: the xenblock-mode a column runs under (noop: stock's libxenlight)
use() { if [ "$1" = noop ]; then xenblock-mode stock; else xenblock-mode "$1"; fi >/dev/null || exit 1; }
declare -A OK BAD
# record KEY MODE MS OK?: one sample
record() {
    if [ "$4" = 1 ]; then OK[$1,$2]="${OK[$1,$2]:-} $3"; else BAD[$1,$2]="${BAD[$1,$2]:-} $(fmt "$3")"; fi
    echo "sample $1 $2: $(fmt "$3")$([ "$4" = 1 ] || echo ' FAILED')" >&2
}
fmt_ms() { echo "$1 ms"; }
FMT=fmt
cell() { # cell KEY MODE: median (min-max) of the good samples, then the failed ones
    local k=$1 m=$2 v n lo hi fmt=$FMT
    read -r v n lo hi < <(printf '%s\n' ${OK[$k,$m]:-} | grep . | sort -n |
        awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)], NR, a[1], a[NR]}')
    if [ -n "$v" ]; then
        v="$($fmt "$v")"
        if [ "$n" -gt 1 ]; then v="$v ($($fmt "$lo" | sed 's/ m*s$//')–$($fmt "$hi"))"; else v="$v (1 sample)"; fi
    else v="failed"; fi
    [ -n "${BAD[$k,$m]:-}" ] && v="$v; failed after${BAD[$k,$m]}"
    echo "$v"
}
row() { # row LABEL KEY
    echo "| $1 | $(cell "$2" stock) | $(cell "$2" dropin) | $(cell "$2" plugin) | $(cell "$2" noop) |"
}

# The no-op script: DEVID -> the physical-device of a loop device made here.
NOOP=/etc/xen/scripts/block-bench-noop
declare -A NOOPDEV   # vdev number -> "maj:min" (hex, as blkback reads it)
noop_loops=()
write_noop() {
    { echo '#!/bin/sh'
      echo '# tests/realxen/bench.sh: a hotplug script that does nothing but what libxl waits for.'
      echo '[ "$1" = add ] || exit 0'
      echo 'case ${XENBUS_PATH##*/} in'
      local k; for k in "${!NOOPDEV[@]}"; do echo "$k) d=${NOOPDEV[$k]} ;;"; done
      echo 'esac'
      echo 'exec xenstore-write "$XENBUS_PATH/physical-device" "$d" "$XENBUS_PATH/hotplug-status" connected'
    } >"$NOOP"
    chmod 0755 "$NOOP"
}
# noop_dev VDEV-NUMBER FILE: a loop device on FILE for the no-op script
noop_dev() {
    local l; l=$(losetup -f --show "$2") || exit 1
    noop_loops+=("$l"); NOOPDEV[$1]=$(stat -L -c '%t:%T' "$l")
}
vdevnum() { echo $((202 * 256 + 16 * $1)); }   # xvd<a+i>

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
unfake() { # remove the fake backends
    [ "${1:-0}" -gt 0 ] && for i in $(seq 1 "$1"); do echo /local/domain/0/backend/vbd/$((20000 + i)); done | xargs xenstore-rm
}

echo "| measurement (TCG, 2 vCPUs) | stock \`block\` script | xenblock drop-in | xenblock plugin (libxl) | floor: no-op script |"
echo "|---|---|---|---|---|"
echo "| VM boot to a ready dom0 | ${1:-?} s | | | |"

# ---- xl create -p, 1 and 8 file disks
for nd in 1 8; do
    disks=() ndisks=()
    for i in $(seq 0 $((nd - 1))); do
        image "b$nd-$i.img" 16M >/dev/null
        v="vdev=xvd$(printf "\\x$(printf %x $((97 + i)))")"
        disks+=("format=raw,$v,access=rw,target=$S/b$nd-$i.img")
        ndisks+=("format=raw,$v,access=rw,script=$NOOP,target=$S/b8-$i.img")
    done
    guest_cfg bg$nd 'true' "${disks[@]}"
    guest_cfg bgn$nd 'true' "${ndisks[@]}"
done
for i in $(seq 0 7); do noop_dev "$(vdevnum "$i")" "$S/b8-$i.img"; done
write_noop
for cn in "${CNS[@]}"; do
    fake "$cn"
    for r in $(seq "$REPS"); do
        for mode in $(rotation "$r"); do
            use $mode
            for nd in "${NDS[@]}"; do
                cfg=/tmp/bg$nd.cfg; [ $mode = noop ] && cfg=/tmp/bgn$nd.cfg
                t=$(now)
                if xl create -p "$cfg" >/tmp/bg.err 2>&1; then record create$nd,$cn $mode "$(ms "$t")" 1
                else record create$nd,$cn $mode "$(ms "$t")" 0; echo "create failed ($mode, $nd disks, N=$cn): $(xl_err /tmp/bg.err)" >&2; fi
                xl destroy bg$nd 2>/dev/null; xl destroy bgn$nd 2>/dev/null
            done
        done
    done
    unfake "$cn"
    for nd in "${NDS[@]}"; do
        row "\`xl create -p\`, $nd file disk$([ "$nd" = 1 ] || echo s), $cn other backends" "create$nd,$cn"
    done
done
for l in "${noop_loops[@]}"; do losetup -d "$l"; done
noop_loops=(); NOOPDEV=()

# ---- xl block-attach to a running guest (detach needs the frontend)
use stock
guest_cfg bt 'while :; do sleep 1; done'
xl create /tmp/bt.cfg >/dev/null 2>&1
wait_console bt 'xenvm-guest: start' 120 || echo "the bench guest did not start" >&2
image att.img 16M >/dev/null
image phy.img 16M >/dev/null
phydev=$(losetup -f --show "$S/phy.img")
noop_dev "$(vdevnum 1)" "$S/att.img"; attloop=${noop_loops[0]}
write_noop
# attach MODE KIND N: one block-attach + detach sample
attach() {
    local mode=$1 kind=$2 n=$3 key=att,$2,$3 target spec t
    target=$S/att.img; [ $kind = phy ] && target=$phydev
    spec="format=raw,vdev=xvdb,access=rw,target=$target"
    if [ $mode = noop ]; then
        spec="format=raw,vdev=xvdb,access=rw,script=$NOOP,target=$target"
        # the no-op script names a ready loop device: the file's, or the phy disk itself
        NOOPDEV[$(vdevnum 1)]=$(stat -L -c '%t:%T' "$([ $kind = phy ] && echo "$phydev" || echo "$attloop")")
        write_noop
    fi
    use $mode
    # The hotplug step, from the backend's own nodes: "s TIME" when its state
    # is 2 (InitWait), "h TIME" when hotplug-status is written (µs).
    local bep w i ok=0 s0 h0
    bep=$(be "$(domid bt)" "$(vdevnum 1)")
    rm -f /tmp/att.watch
    ( xenstore-watch "$bep" | while read -r p; do
        t=${EPOCHREALTIME/[.,]/}
        case $p in
        */state) [ "$(xenstore-read "$p" 2>/dev/null)" = 2 ] && echo "s $t" ;;
        */hotplug-status) echo "h $t" ;;
        esac
    done >/tmp/att.watch ) &
    w=$!
    sleep 0.3 # the watch is registered (its first event is the path itself)
    t=$(now)
    if xl block-attach bt "$spec" >/tmp/att.err 2>&1; then
        record "$key" $mode "$(ms "$t")" 1; ok=1
    else
        record "$key" $mode "$(ms "$t")" 0
        echo "block-attach failed ($mode, $kind, N=$n): $(xl_err /tmp/att.err)" >&2
    fi
    i=0; while ! grep -q '^h ' /tmp/att.watch && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
    { pkill -P $w; kill $w; wait $w; } 2>/dev/null
    s0=$(awk '$1 == "s" { print $2; exit }' /tmp/att.watch)
    h0=$(awk '$1 == "h" { print $2; exit }' /tmp/att.watch)
    if [ $ok = 1 ] && [ -n "$s0" ] && [ -n "$h0" ] && [ "$h0" -ge "$s0" ]; then
        OK[step,$kind,$n,$mode]="${OK[step,$kind,$n,$mode]:-} $(((h0 - s0) / 1000))"
        echo "sample step,$kind,$n $mode: $(((h0 - s0) / 1000)) ms" >&2
    elif [ $ok = 1 ]; then
        echo "hotplug step not seen ($mode, $kind, N=$n): $(tr '\n' ' ' </tmp/att.watch)" >&2
    fi
    xl block-detach bt xvdb >/tmp/det.err 2>&1 || echo "block-detach failed ($mode, $kind, N=$n): $(xl_err /tmp/det.err)" >&2
}
have=0
for n in "${NS[@]}"; do
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
        row "\`xl block-attach\` of a $kind disk, $n other backends" "att,$kind,$n"
    done
done
# The hotplug steps of those samples (InitWait -> hotplug-status), in ms.
FMT=fmt_ms
for n in "${NS[@]}"; do
    for kind in file phy; do
        row "hotplug step alone (InitWait → hotplug-status), $kind, $n other backends" "step,$kind,$n"
    done
done
FMT=fmt
xl destroy bt
losetup -d "$phydev"
for l in "${noop_loops[@]}"; do losetup -d "$l"; done
unfake "$have"
rm -f "$S"/*.img "$NOOP"
xenblock-mode stock >/dev/null
n=$(($(calls) - calls0))
echo "block script calls in the plugin samples (must be 0): $n" >&2
[ "$n" = 0 ]
