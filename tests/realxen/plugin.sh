#!/bin/bash
# libxl's hotplug plugins under real Xen: run IN DOM0 as root, e.g. from the
# host with
#
#     scripts/xenvm.sh exec tests/realxen/plugin.sh [STEP...]
#
# It installs the libxenlight and xl of the hotplug-plugin series and
# xenblock's plugin (scripts/build-libxl.sh, from the shared cache,
# /xenblock/cache/libxl/current) with dpkg-divert, and proves that libxl
# prepares and releases disks through the plugin: in the `plugin` mode Xen's
# /etc/xen/scripts/block is replaced by a recorder that logs every call and
# fails, so any script call is both visible and fatal.
#
# Steps (default: all of them, in this order):
#   install    install the patched libxenlight, xl and plugin; add the `plugin`
#              xenblock-mode (those files, /etc/xen/hotplug-plugin naming
#              xenblock, the recording block script; every other mode
#              removes /etc/xen/hotplug-plugin and puts Debian's libxenlight
#              and xl back)
#   smoke      xl create -p with two file disks through the plugin: nodes,
#              the backend's hotplug-plugin record, the guest reads both
#              disks, xl destroy leaves no loop device; block-attach; a disk
#              given read-write to a second guest is refused with xenblock's
#              reason in ONE `script:` line
#   compare    the same guests in dropin and plugin modes: the same exit
#              codes, backend nodes (but the record), hotplug-status,
#              physical-device naming the node, the same refusal
#   faults     a plugin libxl must decline (missing, interface version 99,
#              ctx_new failing): one warning, then Xen's own script does the
#              add and the remove exactly as before; a plugin whose add
#              fails: the create fails with its reason, no script runs; a
#              remove whose op_start fails: xl block-detach logs it once and
#              removes the backend all the same
#   fresh      the remove goes to the plugin that did the add, whichever
#              process runs it: a fresh `xl destroy` with the host default
#              switched off; and with the plugin gone, the remove is refused
#              (no script in its place) and `xenblock reconcile` cleans up
#   gone       the backend directory of a plugin disk is removed before xl
#              destroy: `xenblock reconcile` detaches its loop device and
#              nothing else
#   slow       a slow neighbour holds the hotplug lock: a plugin block-attach
#              ends within its bound with xenblock's message
#   crash      in the middle of an add: a plugin that crashes (SIGABRT in
#              op_start, SIGSEGV on its thread), xl create ended by SIGINT or
#              SIGTERM, xenblock's plugin SIGKILLed while it waits for the
#              hotplug lock (and a loop device its add left unrecorded):
#              what is left, then a fresh xl destroy runs the recorded
#              plugin's remove and leaves no domain, backend, loop device or
#              held lock, and reconcile has nothing to do; an add that never
#              finishes fails after libxl's 40 s in one line, its op freed
#              and the domain destroyed (the fake-fault plugin of
#              fake-plugin.c; its guests run at once, ~1.5-3 min)
#   coming     libxl announces each plugin disk's add (the optional add_coming)
#              once it has written the backend (domain creation also before
#              it builds the domain): on xl create with two disks and on xl
#              block-attach, through a fake plugin that records its calls,
#              add_coming comes twice and once per backend, first before that
#              backend's op_start, in the xl process that runs op_start; a
#              plugin without add_coming (NULL) still attaches and detaches;
#              xenblock's plugin builds its claims index ahead of the add's
#              decision (its debug line comes before the prepare's)
#   uninstall  undo install (Debian's files back, stock mode)
# Every check prints PASS/FAIL; the exit code is the number of FAILs
# (capped at 100). The script cleans up its domains, loop devices and files
# on exit, and puts the stock block script back.
set -uo pipefail

CACHE=${XENBLOCK_CACHE_DIR:-/xenblock/cache}
OUT=${XENBLOCK_LIBXL_OUT:-${XENVM_LIBXL_OUT:-$CACHE/libxl/current}}
# The fake plugins are built with the header of the series at $OUT, into
# its cache's fake-plugin/ (tests/realxen/plugin-prep.sh).
FAKE=${XENBLOCK_FAKE_DIR:-$(dirname "$(dirname "$(readlink -f "$OUT")")")/fake-plugin}
KERNEL=${XENVM_GUEST_KERNEL:-/xenblock/guest/vmlinuz}
RAMDISK=${XENVM_GUEST_RAMDISK:-/xenblock/guest/initrd.gz}
SCRATCH=${XENVM_SCRATCH:-/scratch}
GUEST_TIMEOUT=${XENVM_GUEST_TIMEOUT:-180}
W=$SCRATCH/plugin
CALLS=/run/xenblock-block-calls
LOGS=${XENVM_LOG_DIR:-/xenblock/chan/logs}
MODES=/usr/local/lib/xenblock-mode
BE=/local/domain/0/backend/vbd
PDIR=/usr/lib/xen-4.17/lib/x86_64-linux-gnu/hotplug-plugins
DEFAULT=/etc/xen/hotplug-plugin
FAILS=0
DOMS=()

say() { echo "plugin: $*"; }
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
# the actions of the block script calls since line $1 of $CALLS, e.g. "add remove "
calls_since() { tail -n +$(($1 + 1)) "$CALLS" 2>/dev/null | awk '{print $3}' | tr '\n' ' '; }
our_loops() { losetup -n -O BACK-FILE 2>/dev/null | grep -cF "$W/" || true; }

cleanup() {
    local d
    for d in "${DOMS[@]}"; do xl destroy "$d" >/dev/null 2>&1 || true; done
    [ -n "${HOLDER:-}" ] && kill "$HOLDER" 2>/dev/null
    [ -e "$PDIR/xenblock.so.hidden" ] && mv -f "$PDIR/xenblock.so.hidden" "$PDIR/xenblock.so"
    rm -f "$PDIR"/fake-*.so /run/xenblock-fake-plugin.seq
    losetup -a 2>/dev/null | grep -F "$W/" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null
    # Keep xl's logs where the host can read them (the suite's log directory).
    if ls "$W"/*.log >/dev/null 2>&1; then
        mkdir -p "$LOGS/plugin" && cp "$W"/*.log "$LOGS/plugin/" 2>/dev/null
    fi
    rm -rf "$W"
    xenblock-mode stock >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- install
step_install() {
    [ -e "$OUT/libxenlight.so.4.17.0" ] && [ -e "$OUT/xenblock.so" ] || {
        fail "no patched libxenlight or plugin in $OUT (run scripts/build-libxl.sh on the host)"
        return
    }
    check "patched libxenlight, xl and the plugin installed (dpkg-divert)" \
        "$OUT/build-libxl.sh" install "$OUT"
    check "Debian's libxenlight is diverted, not overwritten" \
        sh -c 'dpkg-divert --list /usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0 | grep -q xenblock-diverted &&
               [ -e /usr/lib/xenblock-diverted/libxenlight.so.4.17.0 ]'
    check "the loaded libxenlight is ours" \
        sh -c "cmp -s /usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0 '$OUT/libxenlight.so.4.17.0'"
    check "the plugin is in libxl's plugin directory" cmp -s "$PDIR/xenblock.so" "$OUT/xenblock.so"
    { echo '#!/bin/sh'; echo "OUT='$OUT'"; cat <<'EOF2'; } >"$MODES/plugin"
# libxl's hotplug plugin (integrations/libxl): the patched libxenlight and xl,
# xenblock's plugin as the host default (/etc/xen/hotplug-plugin), and Xen's
# block script replaced by one that records every call and fails, so that a
# call is visible and fatal.
set -e
cmp -s /usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0 "$OUT/libxenlight.so.4.17.0" &&
    cmp -s /usr/lib/xen-4.17/bin/xl "$OUT/xl" &&
    cmp -s /usr/lib/xen-4.17/lib/x86_64-linux-gnu/hotplug-plugins/xenblock.so "$OUT/xenblock.so" ||
    "$OUT/build-libxl.sh" install "$OUT" >/dev/null 2>&1 ||
    { echo "plugin mode: installing the patched libxenlight from $OUT failed" >&2; exit 1; }
cat >/etc/xen/scripts/block.new <<'EOS'
#!/bin/sh
echo "$(date +%s.%N) block $* XENBUS_PATH=$XENBUS_PATH" >>/run/xenblock-block-calls
[ -n "$XENBUS_PATH" ] && xenstore-write "$XENBUS_PATH/hotplug-error" \
    "the recording block script was called in plugin mode" \
    "$XENBUS_PATH/hotplug-status" error
exit 1
EOS
chmod 0755 /etc/xen/scripts/block.new
mv -f /etc/xen/scripts/block.new /etc/xen/scripts/block
echo xenblock >/etc/xen/hotplug-plugin
EOF2
    chmod 0755 "$MODES/plugin"
    # Every other mode removes the host default and puts Debian's
    # libxenlight and xl back (this dom0 only; its root is rebuilt at each
    # boot).
    local m
    for m in "$MODES"/*; do
        [ "$(basename "$m")" = plugin ] && continue
        grep -q 'xenblock-plugin-off' "$m" && continue
        { echo "# xenblock-plugin-off: added by tests/realxen/plugin.sh install"
          echo "rc=\$?; OUT='$OUT'"; cat <<'EOF2'; } >>"$m"
rm -f /etc/xen/hotplug-plugin
if dpkg-divert --list | grep -q xenblock-diverted; then
    "$OUT/build-libxl.sh" uninstall >/dev/null 2>&1 ||
        { echo "putting Debian's libxenlight and xl back failed" >&2; rc=1; }
fi
exit $rc
EOF2
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
    cat >"$f" <<EOF2
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
EOF2
    echo "$f"
}

domid_of() { xl domid "$1" 2>/dev/null; }

be_read() { xenstore-read "$BE/$1/$2/$3" 2>/dev/null; }

mode() { xenblock-mode "$1" >/dev/null || { fail "switch to the $1 mode"; return 1; }; }

# ---------------------------------------------------------------- smoke
step_smoke() {
    local name=pl-smoke cfg log dom c0 rc d out
    mode plugin || return
    mkdir -p "$W"
    mkimg "$name-a.img" 16
    mkimg "$name-b.img" 16
    cfg=$(guest_cfg "$name" 'for d in xvda xvdb; do head -c 64 /dev/$d | tr -d "\000"; echo; done' \
        "format=raw,vdev=xvda,access=rw,target=$W/$name-a.img" \
        "format=raw,vdev=xvdb,access=ro,target=$W/$name-b.img")
    c0=$(calls)
    log=$W/$name.create.log
    xl -vvv create -p "$cfg" >"$log" 2>&1
    rc=$?
    DOMS+=("$name")
    check "xl create -p with two file disks succeeds (rc=$rc)" [ "$rc" = 0 ]
    dom=$(domid_of "$name")
    check "both disks went to the plugin (libxl log)" \
        [ "$(grep -c 'hotplug plugin xenblock: add of' "$log")" = 2 ]
    check "the block script was never called" [ "$(calls)" = "$c0" ]
    for d in 51712 51728; do
        check "vbd $d: the backend records its handler (hotplug-plugin = xenblock)" \
            [ "$(be_read "$dom" $d hotplug-plugin)" = xenblock ]
        check "vbd $d: hotplug-status connected" [ "$(be_read "$dom" $d hotplug-status)" = connected ]
        check "vbd $d: node is a loop device backed by the image" \
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
        check "the guest read both disks" \
            sh -c "grep -q 'xenblock-$name-a' '$out' && grep -q 'xenblock-$name-b' '$out'"
    fi
    xl destroy "$name" >/dev/null 2>&1
    sleep 1
    check "xl destroy (or the guest's poweroff, by xl's monitoring child) left no loop device" [ "$(our_loops)" = 0 ]
    check "xl destroy: the block script was never called" [ "$(calls)" = "$c0" ]

    # block-attach and the sharing rule
    local a=pl-attach other=pl-other
    mkimg "$a-sys.img" 8
    mkimg shared.img 8
    xl create -p "$(guest_cfg $a true "format=raw,vdev=xvda,access=rw,target=$W/$a-sys.img")" >/dev/null 2>&1
    DOMS+=("$a")
    xl -vvv create -p "$(guest_cfg $other true "format=raw,vdev=xvda,access=rw,target=$W/$a-sys.img")" \
        >"$W/other.log" 2>&1
    rc=$?
    DOMS+=("$other")
    check "a second guest given the same file read-write is refused (rc=$rc)" [ "$rc" != 0 ]
    grep 'script: ' "$W/other.log" | sed 's/^/  log: /' | cut -c1-250
    check "  ... with xenblock's reason in exactly one 'script:' line" \
        [ "$(grep -c 'script: .*refusing to attach' "$W/other.log")" = 1 ]
    c0=$(calls)
    xl -vvv block-attach "$a" "format=raw,vdev=xvdb,access=rw,target=$W/shared.img" >"$W/attach.log" 2>&1
    rc=$?
    dom=$(domid_of "$a")
    check "xl block-attach through the plugin (rc=$rc)" \
        sh -c "[ $rc = 0 ] && [ '$(be_read "$dom" 51728 hotplug-status)' = connected ] && grep -q 'hotplug plugin xenblock: add of' '$W/attach.log'"
    xl -vvv destroy "$a" >"$W/destroy.log" 2>&1
    check "  ... xl destroy released both disks through the plugin" \
        [ "$(grep -c 'hotplug plugin xenblock: remove of' "$W/destroy.log")" = 2 ]
    check "  ... no loop device is left on its images" \
        sh -c "! losetup -n -O BACK-FILE | grep -qF '$W/shared.img' && ! losetup -n -O BACK-FILE | grep -qF '$W/$a-sys.img'"
    check "block-attach/destroy: the block script was never called" [ "$(calls)" = "$c0" ]
    xl destroy "$other" >/dev/null 2>&1
}

# ---------------------------------------------------------------- compare
# compare_run MODE -> writes $W/cmp-MODE.txt: what a libxl user can observe
compare_run() {
    local mode=$1 a=cmp-$1-a b=cmp-$1-b rc dom d pd node k f=$W/cmp-$1.txt
    mode "$mode" || return 1
    mkimg "$a-w.img" 8
    mkimg "$a-r.img" 8
    xl create -p "$(guest_cfg $a true "format=raw,vdev=xvda,access=rw,target=$W/$a-w.img" \
        "format=raw,vdev=xvdb,access=ro,target=$W/$a-r.img")" >"$W/$a.log" 2>&1
    rc=$?
    DOMS+=("$a")
    echo "create rc=$rc" >"$f"
    dom=$(domid_of "$a")
    for d in 51712 51728; do
        # (the plugin's record, hotplug-plugin, is the one node the drop-in has not)
        echo "vbd $d nodes: $(xenstore-list "$BE/$dom/$d" 2>/dev/null | grep -vx hotplug-plugin | sort | tr '\n' ' ')" >>"$f"
        echo "vbd $d hotplug-status=$(be_read "$dom" $d hotplug-status)" >>"$f"
        pd=$(be_read "$dom" $d physical-device)
        node=$(be_read "$dom" $d node)
        k=$(stat -L -c '%t:%T' "$node" 2>/dev/null)
        echo "vbd $d physical-device names node: $([ -n "$pd" ] && [ "$pd" = "$k" ] && echo yes || echo "no ($pd vs $node=$k)")" >>"$f"
    done
    xl create -p "$(guest_cfg $b true "format=raw,vdev=xvda,access=rw,target=$W/$a-w.img")" >"$W/$b.log" 2>&1
    echo "second rw user rc=$?" >>"$f"
    DOMS+=("$b")
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
    compare_run plugin || fail "compare: plugin mode"
    sed 's/^/  dropin: /' "$W/cmp-dropin.txt"
    sed 's/^/  plugin: /' "$W/cmp-plugin.txt"
    check "compare: dropin and plugin are observably the same" \
        cmp -s "$W/cmp-dropin.txt" "$W/cmp-plugin.txt"
}

# ---------------------------------------------------------------- faults
# fault_run FAULT PLUGIN WARNING-REGEX: the host default names PLUGIN, which
# libxl must decline with one warning; the block script records each call
# and runs Xen's own script, which must do the add and the remove as before.
# (One disk: with two, Xen's script serialises them on its lock and, under
# TCG on a loaded host, the second can pass libxl's 40 s bound.)
fault_run() {
    local f=$1 plugin=$2 want=$3 name=pl-fault-$1 cfg log rc dom c0 n
    echo "$plugin" >"$DEFAULT"
    mkimg "$name-a.img" 8
    cfg=$(guest_cfg "$name" true "format=raw,vdev=xvda,access=rw,target=$W/$name-a.img")
    c0=$(calls)
    log=$W/$name.create.log
    xl -vvv create -p "$cfg" >"$log" 2>&1
    rc=$?
    DOMS+=("$name")
    dom=$(domid_of "$name")
    n=$(grep -c 'hotplug plugin .* cannot be used' "$log")
    check "[fault $f] xl create: exactly one warning ($n)" [ "$n" = 1 ]
    grep 'hotplug plugin .* cannot be used' "$log" | sed 's/^/  log: /' | cut -c1-250
    check "[fault $f]   ... saying why: /$want/" grep -q "hotplug plugin .*$want" "$log"
    check "[fault $f]   ... Xen's script ran the add, and the create succeeded (rc=$rc)" \
        sh -c "[ '$(calls_since "$c0")' = 'add ' ] && [ $rc = 0 ] && [ '$(be_read "$dom" 51712 hotplug-status)' = connected ]"
    check "[fault $f]   ... the backend records no plugin" [ -z "$(be_read "$dom" 51712 hotplug-plugin)" ]
    log=$W/$name.destroy.log
    xl -vvv destroy "$name" >"$log" 2>&1
    check "[fault $f] xl destroy: no plugin involved, Xen's script ran the remove" \
        sh -c "! grep -q 'hotplug plugin' '$log' && [ '$(calls_since "$c0")' = 'add remove ' ]"
    check "[fault $f]   ... no loop device left" sh -c "! losetup -n -O BACK-FILE | grep -qF '$W/$name-'"
}

step_faults() {
    mode plugin || return
    mkdir -p "$W"
    # One warning per xl command, not per disk: two disks, the plugin
    # missing; the (recording, failing) script is called for both.
    local two=pl-fault-two c0 n adds
    echo nosuch >"$DEFAULT"
    mkimg "$two-a.img" 8
    mkimg "$two-b.img" 8
    c0=$(calls)
    xl -vvv create -p "$(guest_cfg $two true "format=raw,vdev=xvda,access=rw,target=$W/$two-a.img" \
        "format=raw,vdev=xvdb,access=rw,target=$W/$two-b.img")" >"$W/$two.create.log" 2>&1
    DOMS+=("$two")
    n=$(grep -c 'hotplug plugin nosuch cannot be used' "$W/$two.create.log")
    adds=$(calls_since "$c0" | grep -o add | wc -l)
    check "[fault missing, two disks] one warning for the xl command ($n), the script called for both disks ($adds adds)" \
        sh -c "[ $n = 1 ] && [ $adds = 2 ]"
    xl destroy "$two" >/dev/null 2>&1
    cat >/etc/xen/scripts/block.new <<'EOS'
#!/bin/sh
echo "$(date +%s.%N) block $* XENBUS_PATH=$XENBUS_PATH" >>/run/xenblock-block-calls
exec /etc/xen/scripts/block.xen-stock "$@"
EOS
    chmod 0755 /etc/xen/scripts/block.new
    mv -f /etc/xen/scripts/block.new /etc/xen/scripts/block
    local v
    for v in abi ctxfail opfail rmfail; do
        [ -e "$FAKE/fake-$v.so" ] || { fail "no fake plugin $FAKE/fake-$v.so (tests/realxen/plugin-prep.sh builds it)"; return; }
        cp "$FAKE/fake-$v.so" "$PDIR/fake-$v.so"
    done
    fault_run missing nosuch 'nosuch.so: cannot open shared object file'
    fault_run abi fake-abi 'built for interface version 99'
    fault_run ctxfail fake-ctxfail 'failed to start: fake plugin: cannot start'

    # A plugin whose add fails: the create fails with its reason, in one
    # line; the script runs neither in its place nor for the remove.
    local name=pl-fault-opfail log rc c0 n
    echo fake-opfail >"$DEFAULT"
    mkimg "$name.img" 8
    c0=$(calls)
    log=$W/$name.create.log
    xl -vvv create -p "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name.img")" >"$log" 2>&1
    rc=$?
    DOMS+=("$name")
    n=$(grep -c 'fake plugin refuses the add of' "$log")
    grep 'fake plugin refuses' "$log" | sed 's/^/  log: /' | cut -c1-250
    check "[fault opfail] the add fails, and the create with it (rc=$rc)" [ "$rc" != 0 ]
    check "[fault opfail]   ... with the plugin's reason in exactly one line, a 'script:' line ($n)" \
        sh -c "[ $n = 1 ] && grep -q 'script: fake plugin refuses the add of' '$log'"
    check "[fault opfail]   ... and the block script never ran (calls: '$(calls_since "$c0")')" [ "$(calls)" = "$c0" ]
    xl destroy "$name" >/dev/null 2>&1
    rm -f "$DEFAULT"
    mode plugin || return

    # A remove whose op_start fails (the backend's record names a plugin
    # that refuses it): xl block-detach on a running guest logs it in one
    # line and removes the backend all the same, as for a failed script.
    local rmf=pl-fault-rmfail t=0 dom
    mkimg "$rmf-a.img" 8
    mkimg "$rmf-b.img" 8
    xl create "$(guest_cfg $rmf 'echo rmfail-up; while :; do sleep 1; done' \
        "format=raw,vdev=xvda,access=rw,target=$W/$rmf-a.img")" >/dev/null 2>&1
    DOMS+=("$rmf")
    while [ $t -lt "$GUEST_TIMEOUT" ] && ! grep -q rmfail-up "/var/log/xen/console/guest-$rmf.log" 2>/dev/null; do
        sleep 1
        t=$((t + 1))
    done
    xl block-attach "$rmf" "format=raw,vdev=xvdb,access=rw,target=$W/$rmf-b.img" >/dev/null 2>&1
    dom=$(domid_of "$rmf")
    xenstore-write "$BE/$dom/51728/hotplug-plugin" fake-rmfail
    log=$W/$rmf.detach.log
    xl -vvv block-detach "$rmf" xvdb >"$log" 2>&1
    rc=$?
    n=$(grep -c 'fake plugin cannot start the remove' "$log")
    grep 'fake plugin cannot start' "$log" | sed 's/^/  log: /' | cut -c1-250
    check "[fault rmfail] block-detach, the remove's op_start failing: one 'script:' line ($n), rc=$rc, backend gone" \
        sh -c "[ $n = 1 ] && grep -q 'script: fake plugin cannot start the remove' '$log' &&
               [ $rc = 0 ] && ! xenstore-exists '$BE/$dom/51728'"
    xl destroy "$rmf" >/dev/null 2>&1
    xenblock reconcile "$BE/" >/dev/null 2>&1
    check "[fault rmfail]   ... xenblock reconcile then detaches the loop device left on it" \
        sh -c "! losetup -n -O BACK-FILE | grep -qF '$W/$rmf-'"
}

# ---------------------------------------------------------------- fresh
# The remove goes to the handler the backend records, whichever process
# runs it.
step_fresh() {
    local name=pl-fresh dom log rc c0 node
    mode plugin || return
    mkdir -p "$W"
    mkimg "$name.img" 8
    c0=$(calls)
    xl create -p "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name.img")" >/dev/null 2>&1
    DOMS+=("$name")
    dom=$(domid_of "$name")
    check "fresh: the disk is prepared by the plugin" [ "$(be_read "$dom" 51712 hotplug-plugin)" = xenblock ]
    # The host default off: a fresh xl would now use the script for new disks.
    rm -f "$DEFAULT"
    log=$W/fresh.destroy.log
    xl -vvv destroy "$name" >"$log" 2>&1
    rc=$?
    check "fresh: a fresh 'xl destroy' (host default off) removes it through the plugin (rc=$rc)" \
        sh -c "[ $rc = 0 ] && grep -q 'hotplug plugin xenblock: remove of' '$log'"
    check "fresh:   ... no loop device left, and the block script never ran" \
        sh -c "! losetup -n -O BACK-FILE | grep -qF '$W/$name.img' && [ $(calls) = $c0 ]"

    # The plugin gone between add and remove: no script in its place.
    mode plugin || return
    xl create -p "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name.img")" >/dev/null 2>&1
    dom=$(domid_of "$name")
    node=$(be_read "$dom" 51712 node)
    mv "$PDIR/xenblock.so" "$PDIR/xenblock.so.hidden"
    log=$W/fresh.gone.log
    xl -vvv destroy "$name" >"$log" 2>&1
    rc=$?
    mv "$PDIR/xenblock.so.hidden" "$PDIR/xenblock.so"
    grep 'hotplug plugin' "$log" | sed 's/^/  log: /' | cut -c1-250
    check "plugin gone: xl destroy says the plugin chosen for it cannot be used, once" \
        [ "$(grep -c 'script: hotplug plugin xenblock was chosen for .* but cannot be used' "$log")" = 1 ]
    check "plugin gone:   ... the block script is NOT run in its place, the domain is gone (rc=$rc)" \
        sh -c "[ $(calls) = $c0 ] && ! xl list $name >/dev/null 2>&1"
    check "plugin gone:   ... its loop device $node stays, tagged; xenblock reconcile detaches it" \
        sh -c "losetup -n -O BACK-FILE '$node' | grep -qF '$W/$name.img' &&
               xenblock reconcile '$BE/' >/dev/null 2>&1 && ! losetup -n -O BACK-FILE | grep -qF '$W/$name.img'"
}

# ---------------------------------------------------------------- gone
step_gone() {
    local name=pl-gone keep=pl-keep dom log rc node bystander other c0
    mode plugin || return
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
    check "gone: the guest's disk is prepared by the plugin (rc=$rc, node $node)" \
        sh -c "[ $rc = 0 ] && [ -b '$node' ]"
    xenstore-rm "$BE/$dom/51712"
    timeout 120 xl -vvv destroy "$name" >"$W/gone.destroy.log" 2>&1
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

# ---------------------------------------------------------------- slow
# A slow neighbour holds Xen's hotplug lock (as a slow custom script does,
# through locking.sh's claim_lock) longer than the plugin waits (30 s).
step_slow() {
    local name=pl-slow rc t0 ms log
    mode plugin || return
    mkdir -p "$W"
    mkimg "$name-sys.img" 8
    mkimg "$name-b.img" 8
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
    grep 'script: ' "$log" | tail -n 2 | sed 's/^/  log: /' | cut -c1-250
    check "slow neighbour: the plugin attach fails rather than hangs (rc=$rc)" [ "$rc" != 0 ]
    check "slow neighbour: it ends within its bound ($ms ms <= 45000)" [ "$ms" -le 45000 ]
    check "slow neighbour: one 'script:' line says why" [ "$(grep -c 'script: ' "$log")" = 1 ]
    xl destroy "$name" >/dev/null 2>&1
}

# ---------------------------------------------------------------- crash
# A plugin that crashes, a caller that goes away, and libxl's timeout, in
# the middle of an add: what is left, and that a fresh `xl destroy` then
# cleans up through the plugin the backend records. The fake plugin
# (fake-fault, tests/realxen/fake-plugin.c) misbehaves by the disk's
# device id, so its guests are created at once (this dom0 has dom0_mem,
# so xl takes no lock around a create).
FLOG=/run/xenblock-fake-plugin.log
HLOCK=/var/run/xen-hotplug/block

lock_free() { [ ! -e "$HLOCK" ] || flock -n -x "$HLOCK" true; }
nloops() { losetup -n -O NAME -j "$1" | wc -l; }

# left_after NAME DOMID DEVID IMAGE: one line, what a fault left
left_after() {
    local dom=$2 dev=$3 be="gone"
    if [ -n "$dom" ] && xenstore-list "$BE/$dom/$dev" >/dev/null 2>&1; then
        be="present, hotplug-plugin=$(be_read "$dom" "$dev" hotplug-plugin)"
        be="$be hotplug-status=$(be_read "$dom" "$dev" hotplug-status || true)"
        be="$be node=$(be_read "$dom" "$dev" node || true)"
        be="$be physical-device=$(be_read "$dom" "$dev" physical-device || true)"
    fi
    echo "domain: $(xl list "$1" >/dev/null 2>&1 && echo present || echo gone);" \
        "backend: $be; loop devices on its image: $(nloops "$4");" \
        "hotplug lock: $(lock_free && echo free || echo held)"
}

# crash_destroy TAG NAME DOMID DEVID IMAGE PLUGIN C0: after the fault, a
# fresh `xl destroy` (with the host default switched off) cleans up through
# PLUGIN, the one the backend records; nothing is left.
crash_destroy() {
    local tag=$1 name=$2 dom=$3 dev=$4 img=$5 plugin=$6 c0=$7 log rc ms t0 rec
    log=$W/$name.destroy.log
    t0=$(now)
    xl -vvv destroy "$name" >"$log" 2>&1
    rc=$?
    ms=$(ms_since "$t0")
    say "$tag: xl destroy rc=$rc in $ms ms; then: $(left_after "$name" "$dom" "$dev" "$img")"
    check "[$tag] a fresh xl destroy succeeds (rc=$rc) and runs the remove through $plugin, the recorded plugin" \
        sh -c "[ $rc = 0 ] && grep -q 'hotplug plugin $plugin: remove of $BE/$dom/$dev' '$log'"
    check "[$tag]   ... the domain and its backend directory are gone" \
        sh -c "! xl list '$name' >/dev/null 2>&1 && ! xenstore-list '$BE/$dom' >/dev/null 2>&1"
    check "[$tag]   ... no loop device on its image, the hotplug lock is free" \
        sh -c "[ $(nloops "$img") = 0 ] && { [ ! -e '$HLOCK' ] || flock -n -x '$HLOCK' true; }"
    check "[$tag]   ... the block script never ran (calls: '$(calls_since "$c0")')" [ "$(calls)" = "$c0" ]
    rec=$(xenblock reconcile --json "$BE/" 2>&1)
    check "[$tag]   ... and xenblock reconcile finds nothing to do ($rec)" \
        sh -c "echo '$rec' | grep -q '\"detached\":\[\]'"
}

step_crash() {
    local c v pid rc dom t=0 c0 img log n ms lo xb=pl-crash-xb T0
    local -A DEV PID SIG WANT WHAT
    mode plugin || return
    mkdir -p "$W"
    [ -e "$FAKE/fake-fault.so" ] || { fail "no fake plugin $FAKE/fake-fault.so (tests/realxen/plugin-prep.sh builds it)"; return; }
    cp "$FAKE/fake-fault.so" "$PDIR/fake-fault.so"
    : >"$FLOG"
    c0=$(calls)
    DEV=([abort]=xvda [segv]=xvdb [int]=xvdc [term]=xvdc [timeout]=xvdc [xb]=xvda)
    SIG=([int]=INT [term]=TERM)
    WANT=([abort]=134 [segv]=139 [int]=130 [term]=143)
    WHAT=([abort]="SIGABRT in op_start" [segv]="SIGSEGV on the plugin's thread after op_start returned"
        [int]="SIGINT (Ctrl-C) while the add is pending" [term]="SIGTERM while the add is pending")
    for c in abort segv int term timeout xb; do
        mkimg "pl-crash-$c.img" 8
        guest_cfg "pl-crash-$c" true "format=raw,vdev=${DEV[$c]},access=rw,target=$W/pl-crash-$c.img" >/dev/null
        DOMS+=("pl-crash-$c")
    done
    # A neighbour holds Xen's hotplug lock (as in `slow`), for xenblock's add.
    rm -f "$W/held"
    bash -c '. /etc/xen/scripts/locking.sh; claim_lock block; echo held >'"$W"'/held; exec sleep 600' &
    HOLDER=$!
    while [ ! -e "$W/held" ] && [ $t -lt 100 ]; do sleep 0.1; t=$((t + 1)); done

    T0=$(now)
    # Five guests of the fake plugin at once. (A background job of a
    # script ignores SIGINT: put it back, as a terminal's Ctrl-C finds it.
    # No core files.)
    echo fake-fault >"$DEFAULT"
    for c in abort segv int term; do
        (ulimit -c 0; exec perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV or die' \
            xl -vvv create -p "$W/pl-crash-$c.cfg") >"$W/pl-crash-$c.create.log" 2>&1 &
        PID[$c]=$!
    done
    (t0=$(now); xl -vvv create -p "$W/pl-crash-timeout.cfg" >"$W/pl-crash-timeout.create.log" 2>&1
        echo "$? $(ms_since "$t0")" >"$W/timeout.rc") &
    PID[timeout]=$!
    # Once every add has read the host default, xenblock's guest.
    t=0
    while [ "$(grep -c "^op_start add $BE/[0-9]*/517[0-9]* pending" "$FLOG")" -lt 5 ] && [ $t -lt 1800 ]; do
        sleep 0.1
        t=$((t + 1))
    done
    say "crash: the five adds are pending after $(ms_since "$T0") ms"
    echo xenblock >"$DEFAULT"
    xl -vvv create -p "$W/$xb.cfg" >"$W/$xb.create.log" 2>&1 &
    PID[xb]=$!
    # The callers go away while their adds are pending.
    sleep 0.5
    for c in int term; do kill -"${SIG[$c]}" "${PID[$c]}"; done
    # xenblock's add waits for the lock: xl is SIGKILLed.
    t=0
    while [ $t -lt 1800 ] && ! grep -q 'hotplug plugin xenblock: add of' "$W/$xb.create.log"; do sleep 0.1; t=$((t + 1)); done
    say "crash: xenblock's add waits for the lock after $(ms_since "$T0") ms"
    # Every destroy below runs with the host default off: the record decides.
    echo none >"$DEFAULT"
    sleep 1
    kill -9 "${PID[xb]}"
    wait "${PID[xb]}" 2>/dev/null
    rc=$?
    dom=$(domid_of "$xb")
    img=$W/$xb.img
    say "crash xenblock: xl create SIGKILLed (rc=$rc) while its add waited for the lock; left: $(left_after "$xb" "$dom" 51712 "$img")"
    check "[crash xenblock] xl create killed (rc=$rc) while the add waited: left the domain, its backend recording xenblock, no hotplug-status, no node, no loop device" \
        sh -c "[ $rc = 137 ] && [ -n '$dom' ] && xl list '$xb' >/dev/null 2>&1 && [ '$(be_read "$dom" 51712 hotplug-plugin)' = xenblock ] &&
               [ -z '$(be_read "$dom" 51712 hotplug-status)$(be_read "$dom" 51712 node)' ] && [ $(nloops "$img") = 0 ]"
    check "[crash xenblock]   ... the lock is the neighbour's alone: still held" sh -c "! flock -n -x '$HLOCK' true"
    kill "$HOLDER" 2>/dev/null
    wait "$HOLDER" 2>/dev/null
    HOLDER=

    for c in abort segv int term; do
        t=0
        while kill -0 "${PID[$c]}" 2>/dev/null && [ $t -lt 1800 ]; do sleep 0.1; t=$((t + 1)); done
        wait "${PID[$c]}" 2>/dev/null
        rc=$?
        v=51712
        [ "${DEV[$c]}" = xvdb ] && v=51728
        [ "${DEV[$c]}" = xvdc ] && v=51744
        dom=$(domid_of "pl-crash-$c")
        img=$W/pl-crash-$c.img
        say "crash $c: xl create ended with rc=$rc (${WHAT[$c]}); left: $(left_after "pl-crash-$c" "$dom" $v "$img")"
        grep "$BE/$dom/$v" "$FLOG" | sed 's/^/  plugin: /'
        check "[crash $c] xl create dies of it (${WHAT[$c]}: rc=$rc, want ${WANT[$c]}) with its add pending" \
            sh -c "[ $rc = ${WANT[$c]} ] && [ -n '$dom' ] && grep -q '^op_start add $BE/$dom/$v pending' '$FLOG' &&
                   ! grep -q '^op_free add $BE/$dom/' '$FLOG'"
        check "[crash $c]   ... left: the domain, its backend recording fake-fault, no hotplug-status" \
            sh -c "xl list 'pl-crash-$c' >/dev/null 2>&1 && [ '$(be_read "$dom" $v hotplug-plugin)' = fake-fault ] &&
                   [ -z '$(be_read "$dom" $v hotplug-status)' ]"
        crash_destroy "crash $c" "pl-crash-$c" "$dom" $v "$img" fake-fault "$c0"
    done

    # xenblock's plugin, SIGKILLed while its add waited for the lock.
    dom=$(domid_of "$xb")
    img=$W/$xb.img
    # A kill a little later, between the loop device's attach and the
    # record of its node (tests/crash.rs kills there), leaves the device,
    # tagged for this backend: make one as it would be.
    lo=$(losetup -f --show "$img")
    check "[crash xenblock] $lo attached and tagged xenblock:$BE/$dom/51712, as an add cut off before recording its node leaves it" \
        perl -e 'open(my $f, "+<", $ARGV[0]) or die "$ARGV[0]: $!\n"; my $b = "\0" x 232;
                 ioctl($f, 0x4C05, $b) or die "LOOP_GET_STATUS64: $!\n";
                 substr($b, 56, 64) = pack("a64", $ARGV[1]);
                 ioctl($f, 0x4C04, $b) or die "LOOP_SET_STATUS64: $!\n";
                 ioctl($f, 0x4C05, $b) or die "LOOP_GET_STATUS64: $!\n";
                 exit(unpack("Z64", substr($b, 56, 64)) eq $ARGV[1] ? 0 : 1)' "$lo" "xenblock:$BE/$dom/51712"
    crash_destroy "crash xenblock" "$xb" "$dom" 51712 "$img" xenblock "$c0"
    check "[crash xenblock]   ... the remove detached $lo, the device its add left unrecorded" \
        grep -q "detached $lo, attached by an add of this backend" "$W/$xb.destroy.log"

    # libxl's timeout: the add never finishes; libxl's bound
    # (LIBXL_HOTPLUG_TIMEOUT, 40 s, fixed at build time) fails it.
    wait "${PID[timeout]}"
    read -r rc ms <"$W/timeout.rc"
    log=$W/pl-crash-timeout.create.log
    img=$W/pl-crash-timeout.img
    dom=$(sed -n "s#^op_start add $BE/\([0-9]*\)/51744 pending\$#\1#p" "$FLOG" | while read -r d; do
        grep -q "op_free add $BE/$d/51744 pending" "$FLOG" && echo "$d"; done | head -n 1)
    say "timeout: xl create ended after $ms ms with rc=$rc; left: $(left_after pl-crash-timeout "$dom" 51744 "$img")"
    grep 'script: ' "$log" | sed 's/^/  log: /' | cut -c1-250
    grep "$BE/$dom/51744" "$FLOG" | sed 's/^/  plugin: /'
    n=$(grep -c 'script: ' "$log")
    check "timeout: the add fails after libxl's 40 s, xl exits with a failure status (rc=$rc), not a signal ($ms ms in 40000..180000)" \
        sh -c "[ $rc -ge 1 ] && [ $rc -lt 128 ] && [ $ms -ge 40000 ] && [ $ms -le 180000 ]"
    check "timeout:   ... in one line: 'script: hotplug plugin fake-fault: add of ... not done after 40 s' ($n script: lines)" \
        sh -c "[ $n = 1 ] && grep -q 'script: hotplug plugin fake-fault: add of $BE/$dom/51744 not done after 40 s' '$log'"
    check "timeout:   ... the op was freed unfinished, and the failed create's remove ran through the plugin" \
        sh -c "[ -n '$dom' ] && grep -q '^op_free add $BE/$dom/51744 pending' '$FLOG' &&
               grep -q '^op_free remove $BE/$dom/51744\$' '$FLOG'"
    check "timeout:   ... and destroyed the domain: no domain, no backend, no loop device, the block script never ran" \
        sh -c "! xl list pl-crash-timeout >/dev/null 2>&1 && ! xenstore-list '$BE/$dom' >/dev/null 2>&1 &&
               [ $(nloops "$img") = 0 ] && [ $(calls) = $c0 ]"
    rm -f "$PDIR/fake-fault.so"
    echo xenblock >"$DEFAULT"
    say "crash: $(ms_since "$T0") ms in all"
}

# ---------------------------------------------------------------- coming
SEQ=/run/xenblock-fake-plugin.seq

# line_of PATTERN FILE: the number of FILE's first line matching PATTERN
# (grep's), or nothing
line_of() { grep -n -- "$1" "$2" | head -n 1 | cut -d: -f1; }

# coming_ok TAG BACKEND N: add_coming came N times for BACKEND (domain
# creation announces a disk before it builds the domain and again when it
# writes the backend; block-attach once), first before its one op_start
# add, in the same process (lines "PID add_coming BE" and "PID op_start
# add BE" of $SEQ)
coming_ok() {
    local tag=$1 be=$2 n=$3 nc ns lc ls pc ps
    nc=$(grep -c " add_coming $be\$" "$SEQ")
    ns=$(grep -c " op_start add $be\$" "$SEQ")
    lc=$(line_of " add_coming $be\$" "$SEQ")
    ls=$(line_of " op_start add $be\$" "$SEQ")
    pc=$(grep " add_coming $be\$" "$SEQ" | head -n 1 | cut -d' ' -f1)
    ps=$(grep " op_start add $be\$" "$SEQ" | head -n 1 | cut -d' ' -f1)
    check "[$tag] $be: add_coming $n time(s) ($nc), the first before its op_start add ($ns; lines $lc < $ls), in the same xl process (pid $pc = $ps)" \
        sh -c "[ '$nc' = '$n' ] && [ '$ns' = 1 ] && [ -n '$lc' ] && [ -n '$ls' ] && [ '$lc' -lt '$ls' ] &&
               [ -n '$pc' ] && [ '$pc' = '$ps' ]"
}

step_coming() {
    local name=pl-coming run=pl-coming-run dom log rc c0 v d t=0
    mode plugin || return
    mkdir -p "$W"
    for v in ok nocoming; do
        [ -e "$FAKE/fake-$v.so" ] || { fail "no fake plugin $FAKE/fake-$v.so (tests/realxen/plugin-prep.sh builds it)"; return; }
        cp "$FAKE/fake-$v.so" "$PDIR/fake-$v.so"
    done
    for d in a b c d e; do mkimg "$name-$d.img" 8; done
    c0=$(calls)
    : >"$SEQ"
    echo fake-ok >"$DEFAULT"
    log=$W/$name.create.log
    xl -vvv create -p "$(guest_cfg $name true "format=raw,vdev=xvda,access=rw,target=$W/$name-a.img" \
        "format=raw,vdev=xvdb,access=rw,target=$W/$name-b.img")" >"$log" 2>&1
    rc=$?
    DOMS+=("$name")
    dom=$(domid_of "$name")
    sed 's/^/  plugin: /' "$SEQ"
    check "[coming create] xl create -p with two disks through fake-ok (rc=$rc)" \
        sh -c "[ $rc = 0 ] && [ -n '$dom' ]"
    check "[coming create]   ... libxl announced both adds twice (log: 'announcing the add of', $(grep -c 'hotplug plugin fake-ok: announcing the add of' "$log"))" \
        [ "$(grep -c 'hotplug plugin fake-ok: announcing the add of' "$log")" = 4 ]
    local la lr
    la=$(line_of 'hotplug plugin fake-ok: announcing the add of' "$log")
    lr=$(line_of 'running bootloader' "$log")
    check "[coming create]   ... first before the domain is built (log line ${la:-none} < 'running bootloader' at ${lr:-none})" \
        sh -c "[ -n '$la' ] && [ -n '$lr' ] && [ '${la:-0}' -lt '${lr:-0}' ]"
    for v in 51712 51728; do coming_ok "coming create" "$BE/$dom/$v" 2; done
    xl destroy "$name" >/dev/null 2>&1

    # block-attach and block-detach on a running guest (a detach waits for
    # the frontend to close; the fake plugin prepares nothing, so the guest
    # has no disk at boot, where its kernel would wait for it).
    echo xenblock >"$DEFAULT"
    xl create "$(guest_cfg $run 'echo coming-up; while :; do sleep 1; done')" >/dev/null 2>&1
    DOMS+=("$run")
    while [ $t -lt "$GUEST_TIMEOUT" ] && ! grep -q coming-up "/var/log/xen/console/guest-$run.log" 2>/dev/null; do
        sleep 1
        t=$((t + 1))
    done
    name=$run
    dom=$(domid_of "$name")
    : >"$SEQ"
    echo fake-ok >"$DEFAULT"
    log=$W/$name.attach.log
    xl -vvv block-attach "$name" "format=raw,vdev=xvdc,access=rw,target=$W/pl-coming-c.img" >"$log" 2>&1
    rc=$?
    sed 's/^/  plugin: /' "$SEQ"
    check "[coming block-attach] xl block-attach through fake-ok (rc=$rc), the backend records it" \
        sh -c "[ $rc = 0 ] && [ '$(be_read "$dom" 51744 hotplug-plugin)' = fake-ok ]"
    coming_ok "coming block-attach" "$BE/$dom/51744" 1
    check "[coming block-attach]   ... and only for that backend ($(wc -l <"$SEQ") lines)" [ "$(wc -l <"$SEQ")" = 2 ]
    xl -vvv block-detach "$name" xvdc >"$W/$name.detach.log" 2>&1
    rc=$?
    check "[coming block-attach] xl block-detach (rc=$rc) removes the backend through fake-ok" \
        sh -c "[ $rc = 0 ] && ! xenstore-exists '$BE/$dom/51744' && grep -q '^[0-9]* op_start remove $BE/$dom/51744\$' '$SEQ'"

    # A plugin without add_coming (NULL): nothing announced, the add and
    # the remove as before.
    : >"$SEQ"
    echo fake-nocoming >"$DEFAULT"
    log=$W/$name.nocoming.log
    xl -vvv block-attach "$name" "format=raw,vdev=xvdd,access=rw,target=$W/pl-coming-d.img" >"$log" 2>&1
    rc=$?
    check "[coming NULL] xl block-attach through fake-nocoming (rc=$rc): its op_start add ran, nothing was announced" \
        sh -c "[ $rc = 0 ] && [ '$(be_read "$dom" 51760 hotplug-plugin)' = fake-nocoming ] &&
               grep -q '^[0-9]* op_start add $BE/$dom/51760\$' '$SEQ' && ! grep -q add_coming '$SEQ' &&
               ! grep -q 'announcing the add of' '$log'"
    xl -vvv block-detach "$name" xvdd >"$W/$name.nocoming-detach.log" 2>&1
    rc=$?
    check "[coming NULL] xl block-detach (rc=$rc) removes the backend through fake-nocoming" \
        sh -c "[ $rc = 0 ] && ! xenstore-exists '$BE/$dom/51760' && grep -q '^[0-9]* op_start remove $BE/$dom/51760\$' '$SEQ'"
    # xenblock's plugin: add_coming warms libxenblock's context
    # (xenblock_ctx_warm), whose claims index is built before the add's
    # decision, which it then serves (its debug lines, in that order).
    echo xenblock >"$DEFAULT"
    log=$W/$name.xenblock.log
    xl -vvv block-attach "$name" "format=raw,vdev=xvde,access=rw,target=$W/pl-coming-e.img" >"$log" 2>&1
    rc=$?
    local lb lp
    lb=$(line_of 'claims index: built ahead of the first decision' "$log")
    lp=$(line_of 'hotplug plugin xenblock: .*/51776: prepared' "$log")
    check "[coming xenblock] xl block-attach through xenblock (rc=$rc): announced, the index built ahead (log line ${lb:-none}) before the prepare (line ${lp:-none})" \
        sh -c "[ $rc = 0 ] && grep -q 'hotplug plugin xenblock: announcing the add of' '$log' &&
               [ -n '$lb' ] && [ -n '$lp' ] && [ '${lb:-0}' -lt '${lp:-0}' ]"
    xl -vvv block-detach "$name" xvde >"$W/$name.xenblock-detach.log" 2>&1
    rc=$?
    check "[coming xenblock] xl block-detach (rc=$rc): the backend and its loop device are gone" \
        sh -c "[ $rc = 0 ] && ! xenstore-exists '$BE/$dom/51776' && [ -z \"\$(losetup -j '$W/pl-coming-e.img')\" ]"
    xl destroy "$name" >/dev/null 2>&1
    check "[coming] the domain is gone and the block script never ran (calls: '$(calls_since "$c0")')" \
        sh -c "! xl list $name >/dev/null 2>&1 && [ $(calls) = $c0 ]"
    rm -f "$PDIR/fake-ok.so" "$PDIR/fake-nocoming.so"
    echo xenblock >"$DEFAULT"
}

step_uninstall() {
    xenblock-mode stock >/dev/null 2>&1
    rm -f "$MODES/plugin"
    check "Debian's libxenlight and xl restored, the plugin removed" "$OUT/build-libxl.sh" uninstall
    check "  ... and no diversion is left" \
        sh -c '! dpkg-divert --list | grep -q xenblock-diverted'
}

trap cleanup EXIT
: >"$CALLS"
mkdir -p "$W"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(install smoke coming compare faults fresh gone slow crash uninstall)
for s in "${steps[@]}"; do
    say "--- $s"
    "step_$s"
done
say "$FAILS failure(s)"
[ "$FAILS" -le 100 ] || FAILS=100
exit "$FAILS"
