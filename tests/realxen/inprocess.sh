#!/bin/bash
# libxl's in-process path under real Xen: run IN DOM0 as root, e.g. from the
# host with
#
#     scripts/xenvm.sh exec tests/realxen/inprocess.sh [STEP...]
#
# It installs the patched libxenlight and xl built by scripts/build-libxl.sh
# (from the shared cache, /xenblock/cache/libxl/current) with dpkg-divert,
# and proves that `xl` prepares and releases file disks in-process: Xen's
# /etc/xen/scripts/block is replaced by a recorder that logs every call and
# fails, so any script call is both visible and fatal.
#
# Steps (default: all of them, in this order):
#   install    dpkg-divert Debian's libxenlight and xl, install ours; add the
#              `inprocess` xenblock-mode (our libxenlight and xl, a recording
#              block script, xl.conf xenblock=1; every other mode puts
#              Debian's libxenlight and xl back)
#   smoke      xl create -p with two file disks (w and r) in-process: nodes,
#              tagged loop devices, the "done in-process" log lines; the
#              guest reads both disks; xl destroy leaves no loop device;
#              block-attach/detach on a paused guest; a disk given
#              read-write to a second guest is refused with libxl's error
#   env        the same with LIBXL_XENBLOCK=1 and no xl.conf key (libvirt's way)
#   fallback   LIBXL_XENBLOCK=1 but no libxenblock.so.1: one warning, then
#              the (recording) script runs exactly as before
#   slow       a slow neighbour holds the hotplug lock: an in-process
#              block-attach ends within its bound with a clear error
#   compare    the same guests in dropin and inprocess modes: the same exit
#              codes, the same backend nodes (names; hotplug-status;
#              physical-device naming the node), the same refusal message
#   faults     a library libxl must decline (missing, ABI 2.0, lacking
#              xenblock_plan_new, a context that fails, an unknown status):
#              one warning line per xl command, and Xen's own script does
#              the add and the remove exactly as before
#   gone       the backend directory of an in-process disk is removed before
#              xl destroy: the loop device it leaves is xenblock-tagged, and
#              `xenblock reconcile` detaches it and nothing else
#   uninstall  undo install (Debian's files back, stock mode)
#   abi        print the ABI of the installed libxenblock.so.1 (from libxl's log)
# XENBLOCK_LIB=FILE (or a first argument lib=FILE) installs FILE as /usr/local/lib/libxenblock.so.1 first
# (e.g. a library of another ABI minor); the VM's own install is put back
# on exit.
# Every check prints PASS/FAIL; the exit code is the number of FAILs
# (capped at 100). The script cleans up its domains, loop devices and files
# on exit, and restores the stock block script and xl.conf.
set -uo pipefail

CACHE=${XENBLOCK_CACHE_DIR:-/xenblock/cache}
OUT=${XENBLOCK_LIBXL_OUT:-$CACHE/libxl/current}
KERNEL=${XENVM_GUEST_KERNEL:-/xenblock/guest/vmlinuz}
RAMDISK=${XENVM_GUEST_RAMDISK:-/xenblock/guest/initrd.gz}
SCRATCH=${XENVM_SCRATCH:-/scratch}
GUEST_TIMEOUT=${XENVM_GUEST_TIMEOUT:-180}
W=$SCRATCH/inprocess
CALLS=/run/xenblock-block-calls
MODES=/usr/local/lib/xenblock-mode
BE=/local/domain/0/backend/vbd
FAILS=0
DOMS=()

say() { echo "inprocess: $*"; }
pass() { echo "PASS: $*"; }
fail() {
    echo "FAIL: $*"
    FAILS=$((FAILS + 1))
}
check() { # check DESCRIPTION COMMAND...
    local d=$1
    shift
    if "$@"; then pass "$d"; else fail "$d"; fi
}
now() { date +%s.%N; }
ms_since() { echo "$1 $(now)" | awk '{ printf "%.0f", ($2 - $1) * 1000 }'; }

calls() { [ -s "$CALLS" ] && wc -l <"$CALLS" || echo 0; }
# Loop devices backed by our images (losetup shows the real backing file,
# not xenblock's tag in lo_file_name).
our_loops() { losetup -n -O BACK-FILE 2>/dev/null | grep -cF "$W/" || true; }

cleanup() {
    local d
    for d in "${DOMS[@]}"; do xl destroy "$d" >/dev/null 2>&1 || true; done
    [ -n "${HOLDER:-}" ] && kill "$HOLDER" 2>/dev/null
    if [ -n "${HIDDEN_LIB:-}" ] && [ -e /run/libxenblock.so.1.hidden ]; then
        mv /run/libxenblock.so.1.hidden "$HIDDEN_LIB" && ldconfig
    fi
    # Only the loop devices of our own images.
    losetup -a 2>/dev/null | grep -F "$W/" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null
    rm -rf "$W"
    sed -i '/^xenblock=/d' /etc/xen/xl.conf 2>/dev/null
    xenblock-mode stock >/dev/null 2>&1 || true
    if [ -e /run/libxenblock.so.1.vm ]; then
        mv -f /run/libxenblock.so.1.vm /usr/local/lib/libxenblock.so.1 && ldconfig
    fi
}

step_abi() {
    local name=ip-abi log
    xenblock-mode inprocess >/dev/null
    mkdir -p "$W"
    mkimg "$name.img" 8
    log=$W/$name.log
    xl -vvv create -p "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name.img")" >"$log" 2>&1
    DOMS+=("$name")
    say "$(grep -o 'xenblock: using .*' "$log" | head -n1)"
    xl destroy "$name" >/dev/null 2>&1
}

# ---------------------------------------------------------------- install
step_install() {
    [ -e "$OUT/libxenlight.so.4.17.0" ] || {
        fail "no patched libxenlight in $OUT (run scripts/build-libxl.sh on the host)"
        return
    }
    check "patched libxenlight and xl installed with dpkg-divert" \
        "$OUT/build-libxl.sh" install "$OUT"
    check "Debian's libxenlight is diverted, not overwritten" \
        sh -c 'dpkg-divert --list /usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0 | grep -q xenblock-diverted &&
               [ -e /usr/lib/xenblock-diverted/libxenlight.so.4.17.0 ]'
    check "the loaded libxenlight is ours" \
        sh -c "cmp -s /usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0 '$OUT/libxenlight.so.4.17.0'"
    if [ -n "${XENBLOCK_LIB:-}" ]; then
        cp /usr/local/lib/libxenblock.so.1 /run/libxenblock.so.1.vm
        check "installed $XENBLOCK_LIB as libxenblock.so.1" \
            install -m 0755 "$XENBLOCK_LIB" /usr/local/lib/libxenblock.so.1
        ldconfig
    fi
    check "libxenblock.so.1 is known to the dynamic loader" \
        sh -c 'ldconfig -p | grep -q "libxenblock.so.1 "'
    # The mode installs the patched libxenlight and xl (unless in place) and
    # every other mode puts Debian's back, so `stock` and `dropin` run
    # Debian's unmodified libxl.
    { echo '#!/bin/sh'; echo "OUT='$OUT'"; cat <<'EOF'; } >"$MODES/inprocess"
# libxl's in-process path (integrations/libxl): the patched libxenlight and
# xl, xl.conf xenblock=1, and Xen's block script replaced by one that
# records every call and fails, so that a call is visible and fatal.
set -e
cmp -s /usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0 "$OUT/libxenlight.so.4.17.0" &&
    cmp -s /usr/lib/xen-4.17/bin/xl "$OUT/xl" ||
    "$OUT/build-libxl.sh" install "$OUT" >/dev/null 2>&1 ||
    { echo "inprocess mode: installing the patched libxenlight from $OUT failed" >&2; exit 1; }
cat >/etc/xen/scripts/block.new <<'EOS'
#!/bin/sh
echo "$(date +%s.%N) block $* XENBUS_PATH=$XENBUS_PATH" >>/run/xenblock-block-calls
[ -n "$XENBUS_PATH" ] && xenstore-write "$XENBUS_PATH/hotplug-error" \
    "the recording block script was called in in-process mode" \
    "$XENBUS_PATH/hotplug-status" error
exit 1
EOS
chmod 0755 /etc/xen/scripts/block.new
mv -f /etc/xen/scripts/block.new /etc/xen/scripts/block
sed -i '/^xenblock=/d' /etc/xen/xl.conf
echo 'xenblock=1' >>/etc/xen/xl.conf
EOF
    chmod 0755 "$MODES/inprocess"
    # Every other mode turns the xl.conf key off again and puts Debian's
    # libxenlight and xl back (this dom0 only; its root is rebuilt at each
    # boot).
    local m
    for m in "$MODES"/*; do
        [ "$(basename "$m")" = inprocess ] && continue
        grep -q 'xenblock-inprocess-off' "$m" && continue
        { echo "# xenblock-inprocess-off: added by tests/realxen/inprocess.sh install"
          echo "rc=\$?; OUT='$OUT'"; cat <<'EOF'; } >>"$m"
sed -i '/^xenblock=/d' /etc/xen/xl.conf
if dpkg-divert --list | grep -q xenblock-diverted; then
    "$OUT/build-libxl.sh" uninstall >/dev/null 2>&1 ||
        { echo "putting Debian's libxenlight and xl back failed" >&2; rc=1; }
fi
exit $rc
EOF
    done
}

# ---------------------------------------------------------------- helpers
mkimg() { # mkimg NAME MB
    dd if=/dev/zero of="$W/$1" bs=1M count=0 seek="$2" status=none
    # A recognisable first sector: the guest reads it back.
    printf 'xenblock-%s' "$1" | dd of="$W/$1" conv=notrunc status=none
}

# guest_cfg NAME CMD DISK... -> path of the config
guest_cfg() {
    local name=$1 cmd=$2 f=$W/$1.cfg d list=""
    shift 2
    for d in "$@"; do list="$list'$d',"; done
    cat >"$f" <<EOF
name = "$name"
type = "pv"
kernel = "$KERNEL"
ramdisk = "$RAMDISK"
memory = 128
vcpus = 1
extra = "console=hvc0 xenvm_cmd64=$(printf '%s' "$cmd" | base64 -w0)"
disk = [ ${list%,} ]
on_poweroff = "destroy"
on_crash = "destroy"
EOF
    echo "$f"
}

domid_of() { xl domid "$1" 2>/dev/null; }

be_read() { xenstore-read "$BE/$1/$2/$3" 2>/dev/null; }

# ---------------------------------------------------------------- smoke
# smoke LABEL ENVSPEC: ENVSPEC is "conf" (xl.conf key) or "env" (LIBXL_XENBLOCK=1)
smoke() {
    local how=$1 name=ip-$1 cfg log dom c0 rc d out
    local envp=()
    [ "$how" = env ] && envp=(env LIBXL_XENBLOCK=1)
    xenblock-mode inprocess >/dev/null || {
        fail "switch to the inprocess mode"
        return
    }
    [ "$how" = env ] && sed -i '/^xenblock=/d' /etc/xen/xl.conf
    mkdir -p "$W"
    mkimg "$name-a.img" 16
    mkimg "$name-b.img" 16
    cfg=$(guest_cfg "$name" 'for d in xvda xvdb; do head -c 64 /dev/$d | tr -d "\000"; echo; done' \
        "format=raw,vdev=xvda,access=rw,target=$W/$name-a.img" \
        "format=raw,vdev=xvdb,access=ro,target=$W/$name-b.img")
    c0=$(calls)
    log=$W/$name.create.log
    "${envp[@]}" xl -vvv create -p "$cfg" >"$log" 2>&1
    rc=$?
    DOMS+=("$name")
    check "[$how] xl create -p with two file disks succeeds (rc=$rc)" [ "$rc" = 0 ]
    dom=$(domid_of "$name")
    check "[$how] both disks were prepared in-process (libxl log)" \
        [ "$(grep -c 'xenblock: add of .* done in-process' "$log")" = 2 ]
    check "[$how] the block script was never called" [ "$(calls)" = "$c0" ]
    for d in 51712 51728; do
        check "[$how] vbd $d: hotplug-status connected" [ "$(be_read "$dom" $d hotplug-status)" = connected ]
        check "[$how] vbd $d: physical-device and node written" \
            sh -c "[ -n '$(be_read "$dom" $d physical-device)' ] && [ -b '$(be_read "$dom" $d node)' ]"
        check "[$how] vbd $d: node is a loop device backed by the image" \
            sh -c "losetup -n -O BACK-FILE '$(be_read "$dom" $d node)' | grep -qF '$W/$name-'"
    done
    if [ "$rc" = 0 ]; then
        xl unpause "$name"
        out=/var/log/xen/console/guest-$name.log
        local t=0
        while [ $t -lt "$GUEST_TIMEOUT" ] && ! grep -q 'xenvm-guest: exit' "$out" 2>/dev/null; do
            sleep 1
            t=$((t + 1))
        done
        check "[$how] the guest read both disks" \
            sh -c "grep -q 'xenblock-$name-a' '$out' && grep -q 'xenblock-$name-b' '$out'"
    fi
    # The switch is per process: with only the environment variable, an
    # `xl destroy` without it would run the script, so it gets it too. (The
    # guest's own poweroff races this destroy: xl's monitoring child, which
    # inherited the variable from `xl create`, destroys it as well.)
    "${envp[@]}" xl destroy "$name" >/dev/null 2>&1
    sleep 1
    check "[$how] xl destroy left no loop device on our images" [ "$(our_loops)" = 0 ]
    check "[$how] xl destroy: the block script was never called" [ "$(calls)" = "$c0" ]
}

step_smoke() {
    smoke conf
    # block-attach / detach on a paused guest, and the sharing rule.
    local name=ip-attach other=ip-other c0 rc log dom
    mkimg "$name-sys.img" 8
    mkimg shared.img 8
    xl create -p "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name-sys.img")" >/dev/null 2>&1
    DOMS+=("$name")
    xl create -p "$(guest_cfg $other true "format=raw,vdev=xvda,access=rw,target=$W/$name-sys.img")" \
        >"$W/other.log" 2>&1
    rc=$?
    DOMS+=("$other")
    check "a second guest given the same file read-write is refused (rc=$rc)" [ "$rc" != 0 ]
    check "  ... with the sharing rule's message in libxl's log" \
        grep -q 'xenblock: add of .*: busy' "$W/other.log"
    c0=$(calls)
    log=$W/attach.log
    xl -vvv block-attach "$name" "format=raw,vdev=xvdb,access=rw,target=$W/shared.img" >"$log" 2>&1
    rc=$?
    dom=$(domid_of "$name")
    check "xl block-attach in-process (rc=$rc)" [ "$rc" = 0 ]
    check "  ... hotplug-status connected" [ "$(be_read "$dom" 51728 hotplug-status)" = connected ]
    # (block-detach of a paused PV guest fails before any hotplug step in
    # every mode: its backend cannot close without a running frontend. The
    # remove path is the destroy below.)
    xl -vvv destroy "$name" >"$W/destroy.log" 2>&1
    check "  ... xl destroy released it in-process" \
        [ "$(grep -c 'xenblock: remove of .* done in-process' "$W/destroy.log")" = 2 ]
    check "  ... its loop device is gone" sh -c "! losetup -n -O BACK-FILE | grep -qF '$W/shared.img'"
    check "block-attach/destroy: the block script was never called" [ "$(calls)" = "$c0" ]
    xl destroy "$other" >/dev/null 2>&1
}

step_env() { smoke env; }

# ---------------------------------------------------------------- compare
# compare_run MODE -> writes $W/cmp-MODE.txt: what a libxl user can observe
compare_run() {
    local mode=$1 a=cmp-$1-a b=cmp-$1-b rc dom d k pd node f=$W/cmp-$1.txt
    xenblock-mode "$mode" >/dev/null || return 1
    [ "$mode" = inprocess ] || sed -i '/^xenblock=/d' /etc/xen/xl.conf
    mkimg "$a-w.img" 8
    mkimg "$a-r.img" 8
    xl create -p "$(guest_cfg $a true "format=raw,vdev=xvda,access=rw,target=$W/$a-w.img" \
        "format=raw,vdev=xvdb,access=ro,target=$W/$a-r.img")" >"$W/$a.log" 2>&1
    rc=$?
    DOMS+=("$a")
    echo "create rc=$rc" >"$f"
    dom=$(domid_of "$a")
    for d in 51712 51728; do
        echo "vbd $d nodes: $(xenstore-list "$BE/$dom/$d" 2>/dev/null | sort | tr '\n' ' ')" >>"$f"
        echo "vbd $d hotplug-status=$(be_read "$dom" $d hotplug-status)" >>"$f"
        pd=$(be_read "$dom" $d physical-device)
        node=$(be_read "$dom" $d node)
        k=$(stat -L -c '%t:%T' "$node" 2>/dev/null)
        echo "vbd $d physical-device names node: $([ -n "$pd" ] && [ "$pd" = "$k" ] && echo yes || echo "no ($pd vs $node=$k)")" >>"$f"
    done
    # The same file read-write to a second guest, and read-only to a third.
    xl create -p "$(guest_cfg $b true "format=raw,vdev=xvda,access=rw,target=$W/$a-w.img")" >"$W/$b.log" 2>&1
    echo "second rw user rc=$?" >>"$f"
    DOMS+=("$b")
    # The refusal as libxl logs it last, with this run's names and numbers
    # made neutral (the drop-in names the backend relatively, libxl absolutely).
    echo "second rw user message: $(grep -o '[^ ]* is the backing file of .*refusing to attach [^ ]* [a-z-]* to [^ ]*' "$W/$b.log" |
        tail -n 1 | sed -e "s#cmp-$mode-#cmp-MODE-#g" -e 's#/local/domain/0/##g' -e 's/[0-9][0-9]*/N/g')" >>"$f"
    xl destroy "$b" >/dev/null 2>&1
    xl create -p "$(guest_cfg $b true "format=raw,vdev=xvda,access=ro,target=$W/$a-r.img")" >"$W/$b.log" 2>&1
    echo "second ro user of a ro disk rc=$?" >>"$f"
    xl destroy "$b" >/dev/null 2>&1
    xl destroy "$a" >/dev/null 2>&1
    sleep 1
    echo "loop devices left: $(losetup -a | grep -cF "$W/")" >>"$f"
}

step_compare() {
    mkdir -p "$W"
    compare_run dropin || fail "compare: dropin mode"
    compare_run inprocess || fail "compare: inprocess mode"
    sed 's/^/  dropin:    /' "$W/cmp-dropin.txt"
    sed 's/^/  inprocess: /' "$W/cmp-inprocess.txt"
    check "compare: dropin and inprocess are observably the same" \
        cmp -s "$W/cmp-dropin.txt" "$W/cmp-inprocess.txt"
}

# ---------------------------------------------------------------- fallback
step_fallback() {
    local lib rc log name=ip-fallback c0
    lib=$(ldconfig -p | sed -n 's/.*libxenblock.so.1 .*=> //p' | head -n1)
    [ -n "$lib" ] || {
        fail "fallback: libxenblock.so.1 is not installed to hide"
        return
    }
    xenblock-mode inprocess >/dev/null
    # Hidden outside every directory ldconfig scans.
    HIDDEN_LIB=$lib
    mv "$lib" /run/libxenblock.so.1.hidden && ldconfig
    mkdir -p "$W"
    mkimg "$name.img" 8
    c0=$(calls)
    log=$W/$name.log
    LIBXL_XENBLOCK=1 xl -vvv create -p \
        "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name.img")" >"$log" 2>&1
    rc=$?
    DOMS+=("$name")
    mv /run/libxenblock.so.1.hidden "$lib" && ldconfig
    check "fallback: one warning naming the missing library" \
        [ "$(grep -c 'libxenblock.so.1 cannot be loaded' "$log")" = 1 ]
    # As before the patch: the failed add, then libxl's remove of the device.
    check "fallback: the block script ran as before (add, then remove)" \
        sh -c "tail -n +$((c0 + 1)) '$CALLS' | awk '{print \$3}' | tr '\n' ' ' | grep -qx 'add remove '"
    tail -n +$((c0 + 1)) "$CALLS" | sed 's/^/  call: /'
    check "fallback: its failure fails the create, as before (rc=$rc)" [ "$rc" != 0 ]
    xl destroy "$name" >/dev/null 2>&1
}

# ---------------------------------------------------------------- slow
# A slow neighbour: a process holding Xen's hotplug lock (as a slow custom
# script does, through locking.sh's claim_lock) for longer than the bound.
step_slow() {
    local name=ip-slow rc t0 ms log
    xenblock-mode inprocess >/dev/null
    mkdir -p "$W"
    mkimg "$name-sys.img" 8
    mkimg "$name-b.img" 8
    # Prepared while the lock is free.
    xl create -p "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name-sys.img")" >/dev/null 2>&1
    DOMS+=("$name")
    bash -c '. /etc/xen/scripts/locking.sh; claim_lock block; echo held >'"$W"'/held; exec sleep 120' &
    HOLDER=$!
    local i=0
    while [ ! -e "$W/held" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    log=$W/slow.log
    t0=$(now)
    xl -vvv block-attach "$name" "format=raw,vdev=xvdb,access=rw,target=$W/$name-b.img" >"$log" 2>&1
    rc=$?
    ms=$(ms_since "$t0")
    kill "$HOLDER" 2>/dev/null
    wait "$HOLDER" 2>/dev/null
    HOLDER=
    say "slow neighbour: block-attach ended after $ms ms with rc=$rc"
    grep -E 'xenblock|hotplug lock|timed out|TIMEDOUT' "$log" | tail -n 4 | sed 's/^/  log: /'
    check "slow neighbour: the in-process attach fails rather than hangs (rc=$rc)" [ "$rc" != 0 ]
    # 10 s with an ABI 1.0 library (blocking), 40 s with ABI 1.1 (retried
    # from a libxl timer), plus the attach's own work under TCG.
    local bound=25000
    grep -q 'ABI 1.0' "$log" || bound=55000
    check "slow neighbour: it ends within its bound ($ms ms <= $bound)" [ "$ms" -le "$bound" ]
    check "slow neighbour: libxl's log says why" \
        grep -qE 'hotplug lock|xenblock: add of .*: timed out' "$log"
    xl destroy "$name" >/dev/null 2>&1
}

# ---------------------------------------------------------------- faults
# A library libxl must decline: one warning line, then Xen's own script runs
# exactly as before. For these checks the block script records each call and
# then runs Xen's script (so "as before" is seen to work: the create
# succeeds, the script's nodes and loop device are there). The fake library
# (tests/realxen/fake-xenblock.c, built by run-suite.sh) is found through
# LD_LIBRARY_PATH; "missing" hides the real library instead.
FAKE=${XENBLOCK_FAKE_DIR:-$CACHE/realxen/fake-xenblock}

fault_run() { # fault_run FAULT WARNING-REGEX
    local f=$1 want=$2 name=ip-fault-$1 cfg log rc dom c0 n envp=() lib="" dir=$FAKE/full
    case $f in
    missing) lib=$(ldconfig -p | sed -n 's/.*libxenblock.so.1 .*=> //p' | head -n1) ;;
    noplan) dir=$FAKE/noplan envp=(env LD_LIBRARY_PATH="$dir") ;;
    *) envp=(env LD_LIBRARY_PATH="$dir" XENBLOCK_FAKE="$f") ;;
    esac
    if [ "$f" = missing ]; then
        [ -n "$lib" ] || {
            fail "[fault $f] libxenblock.so.1 is not installed to hide"
            return
        }
        HIDDEN_LIB=$lib
        mv "$lib" /run/libxenblock.so.1.hidden && ldconfig
    elif [ ! -e "$dir/libxenblock.so.1" ]; then
        fail "[fault $f] no fake library $dir/libxenblock.so.1 (tests/realxen/run-suite.sh builds it)"
        return
    fi
    mkimg "$name.img" 8
    cfg=$(guest_cfg "$name" true "format=raw,vdev=xvda,access=rw,target=$W/$name.img")
    c0=$(calls)
    log=$W/$name.create.log
    "${envp[@]}" xl -vvv create -p "$cfg" >"$log" 2>&1
    rc=$?
    DOMS+=("$name")
    dom=$(domid_of "$name")
    n=$(grep -c 'xenblock: .*running \(the \)\?hotplug script' "$log")
    check "[fault $f] xl create: exactly one warning line ($n)" [ "$n" = 1 ]
    check "[fault $f]   ... saying why: /$want/" grep -q "xenblock: .*$want" "$log"
    grep 'xenblock: .*running \(the \)\?hotplug script' "$log" | sed 's/^/  log: /' | cut -c1-220
    check "[fault $f]   ... nothing done in-process" sh -c "! grep -q 'done in-process' '$log'"
    check "[fault $f]   ... Xen's script ran the add, once" \
        sh -c "tail -n +$((c0 + 1)) '$CALLS' | awk '{print \$3}' | tr '\n' ' ' | grep -qx 'add '"
    check "[fault $f]   ... and it succeeded as before (rc=$rc, hotplug-status $(be_read "$dom" 51712 hotplug-status))" \
        sh -c "[ $rc = 0 ] && [ '$(be_read "$dom" 51712 hotplug-status)' = connected ]"
    check "[fault $f]   ... its loop device on the image (physical-device $(be_read "$dom" 51712 physical-device))" \
        sh -c "losetup -n -O BACK-FILE | grep -qF '$W/$name.img'"
    log=$W/$name.destroy.log
    "${envp[@]}" xl -vvv destroy "$name" >"$log" 2>&1
    n=$(grep -c 'xenblock: .*running \(the \)\?hotplug script' "$log")
    check "[fault $f] xl destroy: exactly one warning line ($n), Xen's script ran the remove" \
        sh -c "[ $n = 1 ] && tail -n +$((c0 + 1)) '$CALLS' | awk '{print \$3}' | tr '\n' ' ' | grep -qx 'add remove '"
    check "[fault $f]   ... no loop device left on the image" sh -c "! losetup -n -O BACK-FILE | grep -qF '$W/$name.img'"
    if [ "$f" = missing ]; then
        mv /run/libxenblock.so.1.hidden "$lib" && ldconfig
        HIDDEN_LIB=
    fi
}

step_faults() {
    xenblock-mode inprocess >/dev/null || {
        fail "switch to the inprocess mode"
        return
    }
    cat >/etc/xen/scripts/block.new <<'EOS'
#!/bin/sh
echo "$(date +%s.%N) block $* XENBUS_PATH=$XENBUS_PATH" >>/run/xenblock-block-calls
exec /etc/xen/scripts/block.xen-stock "$@"
EOS
    chmod 0755 /etc/xen/scripts/block.new
    mv -f /etc/xen/scripts/block.new /etc/xen/scripts/block
    mkdir -p "$W"
    fault_run missing 'libxenblock.so.1 cannot be loaded'
    fault_run abi2 'libxenblock.so.1 has ABI 2.0, libxl needs 1.x'
    fault_run noplan 'libxenblock.so.1 lacks xenblock_plan_new'
    fault_run ctxfail 'cannot make a context'
    fault_run unknown 'unknown status 99 from add of'
    grep -q 'unknown status 99 from remove of' "$W/ip-fault-unknown.destroy.log" &&
        pass "[fault unknown] the remove's warning names status 99 too" ||
        fail "[fault unknown] the remove's warning names status 99 too"
    # Back to the recording-and-failing script.
    xenblock-mode inprocess >/dev/null
}

# ---------------------------------------------------------------- gone
# The backend directory of an in-process file disk vanishes (a crashed
# toolstack, a stray xenstore-rm) before the remove: libxl cannot read the
# backend and runs no hotplug step for it, so its loop device stays; it
# carries xenblock's tag, and `xenblock reconcile` detaches it and nothing
# else.
step_gone() {
    local name=ip-gone keep=ip-keep dom log rc node bystander other c0
    xenblock-mode inprocess >/dev/null || {
        fail "switch to the inprocess mode"
        return
    }
    mkdir -p "$W"
    mkimg "$name.img" 8
    mkimg "$keep.img" 8
    mkimg foreign.img 8
    c0=$(calls)
    xl create -p "$(guest_cfg $keep true "format=raw,vdev=xvda,access=rw,target=$W/$keep.img")" >/dev/null 2>&1
    DOMS+=("$keep")
    xl create -p "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name.img")" >/dev/null 2>&1
    rc=$?
    DOMS+=("$name")
    dom=$(domid_of "$name")
    node=$(be_read "$dom" 51712 node)
    bystander=$(be_read "$(domid_of $keep)" 51712 node)
    other=$(losetup -f --show "$W/foreign.img") # not xenblock's: must stay
    check "gone: the guest's disk is prepared in-process (rc=$rc, node $node)" \
        sh -c "[ $rc = 0 ] && [ -b '$node' ]"
    xenstore-rm "$BE/$dom/51712"
    log=$W/gone.destroy.log
    timeout 120 xl -vvv destroy "$name" >"$log" 2>&1
    rc=$?
    say "gone: xl destroy with the backend directory removed: rc=$rc"
    grep -E 'xenblock|hotplug|51712' "$log" | grep -v '^libxl: debug: libxl_event' | tail -n 4 | sed 's/^/  log: /' | cut -c1-200
    # As documented (integrations/libxl/README.md): libxl runs no hotplug
    # step for a backend it cannot read, so the device is still there.
    check "gone: xl destroy ran no hotplug step; the loop device $node is still attached" \
        sh -c "losetup -n -O BACK-FILE '$node' 2>/dev/null | grep -qF '$W/$name.img'"
    xenblock reconcile "$BE/" 2>&1 | sed 's/^/  reconcile: /'
    check "gone: after reconcile no loop device is left on the image" \
        sh -c "! losetup -n -O BACK-FILE | grep -qF '$W/$name.img'"
    check "gone: the running guest's loop device ($bystander) is untouched" \
        sh -c "losetup -n -O BACK-FILE '$bystander' | grep -qF '$W/$keep.img'"
    check "gone: a loop device xenblock did not make ($other) is untouched" \
        sh -c "losetup -n -O BACK-FILE '$other' | grep -qF '$W/foreign.img'"
    check "gone: the block script was never called" [ "$(calls)" = "$c0" ]
    losetup -d "$other"
    xl destroy "$keep" >/dev/null 2>&1
}

step_uninstall() {
    xenblock-mode stock >/dev/null 2>&1
    rm -f "$MODES/inprocess"
    check "Debian's libxenlight and xl restored" "$OUT/build-libxl.sh" uninstall
    check "  ... and no diversion is left" \
        sh -c '! dpkg-divert --list | grep -q xenblock-diverted'
}

trap cleanup EXIT
: >"$CALLS"
mkdir -p "$W"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(install smoke env compare fallback faults gone slow uninstall)
for s in "${steps[@]}"; do
    case $s in lib=*)
        XENBLOCK_LIB=${s#lib=}
        continue
        ;;
    esac
    say "--- $s"
    "step_$s"
done
say "$FAILS failure(s)"
[ "$FAILS" -le 100 ] || FAILS=100
exit "$FAILS"
